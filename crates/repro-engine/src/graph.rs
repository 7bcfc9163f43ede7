//! The stage DAG: which stage produces what another consumes.
//!
//! A dep depends on the stage whose output is the same path, contains it (a file inside an
//! output directory), or lies inside it (a directory dep over several stages' outputs).
//! Building the graph also checks what needs every stage at once: outputs declared twice or
//! nested, deps nobody produces and that do not exist, and cycles (reported as the full path).

use std::collections::{BTreeMap, HashMap, VecDeque};

use petgraph::Direction;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::spec::{Pipeline, SpecError, SpecErrors};

/// Stage indices (into `Pipeline::stages`) connected producer → consumer.
pub struct Dag {
    /// The graph; node weights are stage indices.
    pub graph: DiGraph<usize, ()>,
    /// The stat of every dep that no stage produces, taken (in parallel) while checking that
    /// it exists; the hasher starts from these instead of stat-ing each path a second time.
    pub source_stats: crate::state::hashing::PathMap<std::fs::Metadata>,
    /// Deps that no stage produces, as (stage, dep index).
    sources: Vec<(usize, usize)>,
}

/// What a DAG is made of that depends on the pipeline alone, not on the file system: its
/// edges and the deps no stage produces. Kept with a cached plan (`crate::state::plan_cache`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    /// producer → consumer.
    pub edges: Vec<(u32, u32)>,
    /// (stage, dep index) of every dep no stage produces.
    pub sources: Vec<(u32, u32)>,
}

impl Dag {
    /// The part of this DAG that a cached plan keeps.
    pub fn shape(&self) -> Shape {
        Shape {
            edges: self
                .graph
                .raw_edges()
                .iter()
                .map(|e| (e.source().index() as u32, e.target().index() as u32))
                .collect(),
            sources: self
                .sources
                .iter()
                .map(|&(i, k)| (i as u32, k as u32))
                .collect(),
        }
    }

    fn node(&self, stage: usize) -> NodeIndex {
        NodeIndex::new(stage)
    }

    /// Direct upstream stages of `stage`.
    pub fn upstream(&self, stage: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(self.node(stage), Direction::Incoming)
            .map(|n| n.index())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Direct downstream stages of `stage`.
    pub fn downstream(&self, stage: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(self.node(stage), Direction::Outgoing)
            .map(|n| n.index())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// All stages in a topological order (stable: ties in file order).
    pub fn topo_order(&self) -> Vec<usize> {
        let n = self.graph.node_count();
        let mut indeg: Vec<usize> = (0..n).map(|i| self.upstream(i).len()).collect();
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
            .filter(|&i| indeg[i] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut order = Vec::with_capacity(n);
        while let Some(std::cmp::Reverse(i)) = ready.pop() {
            order.push(i);
            for d in self.downstream(i) {
                indeg[d] -= 1;
                if indeg[d] == 0 {
                    ready.push(std::cmp::Reverse(d));
                }
            }
        }
        order
    }
}

/// Build and check the DAG of a pipeline.
pub(crate) fn build(p: &Pipeline) -> Result<Dag, SpecErrors> {
    let mut errors = Vec::new();
    let mut graph = DiGraph::with_capacity(p.stages.len(), p.stages.len());
    for i in 0..p.stages.len() {
        graph.add_node(i);
    }

    // Every output, by path.
    let mut producers: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in p.stages.iter().enumerate() {
        for o in &s.outs {
            if let Some(&j) = producers.get(o.path.as_str()) {
                let other = &p.stages[j];
                let at = other
                    .outs
                    .iter()
                    .find(|x| x.path == o.path)
                    .map(|x| x.mark.line)
                    .unwrap_or(0);
                errors.push(
                    SpecError::at(
                        &o.mark,
                        format!(
                            "output '{}' is declared by two stages: '{}' and '{}'",
                            o.path, other.name, s.name
                        ),
                    )
                    .in_stage(&s.name)
                    .note(format!("'{}' declares it at line {at}", other.name)),
                );
            } else {
                producers.insert(&o.path, i);
            }
        }
    }
    // Nested outputs: an output inside another output.
    for (path, &i) in &producers {
        for anc in ancestors(path) {
            if let Some(&j) = producers.get(anc) {
                let s = &p.stages[i];
                let mark = &s
                    .outs
                    .iter()
                    .find(|o| o.path == *path)
                    .expect("own output")
                    .mark;
                errors.push(
                    SpecError::at(
                        mark,
                        format!(
                            "output '{path}' is inside output '{anc}' of stage '{}'",
                            p.stages[j].name
                        ),
                    )
                    .in_stage(&s.name)
                    .note(
                        "outputs may not be nested: declare the directory or the files, not both",
                    ),
                );
            }
        }
    }

    // Deps that no stage produces must exist: collected here, stat-ed together below.
    let mut sources: Vec<(usize, usize)> = Vec::new();
    for (i, s) in p.stages.iter().enumerate() {
        for (k, d) in s.deps.iter().enumerate() {
            let mut found = false;
            // The dep is an output, or inside one.
            for cand in std::iter::once(d.path.as_str()).chain(ancestors(&d.path)) {
                if let Some(&j) = producers.get(cand) {
                    graph.update_edge(NodeIndex::new(j), NodeIndex::new(i), ());
                    found = true;
                }
            }
            // The dep is a directory holding outputs.
            let prefix = format!("{}/", d.path);
            for (_, &j) in producers
                .range::<str, _>((
                    std::ops::Bound::Excluded(prefix.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.starts_with(&prefix))
            {
                graph.update_edge(NodeIndex::new(j), NodeIndex::new(i), ());
                found = true;
            }
            if !found {
                sources.push((i, k));
            }
        }
    }
    let source_stats = check_sources(p, &sources, &mut errors);
    let dag = Dag {
        graph,
        source_stats,
        sources,
    };
    for scc in tarjan_scc(&dag.graph) {
        let self_loop = scc.len() == 1 && dag.graph.contains_edge(scc[0], scc[0]);
        if scc.len() > 1 || self_loop {
            let cycle = cycle_path(&dag, &scc);
            let names: Vec<&str> = cycle.iter().map(|&i| p.stages[i].name.as_str()).collect();
            let first = &p.stages[cycle[0]];
            errors.push(
                SpecError::at(
                    &first.mark,
                    format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
                )
                .in_stage(&first.name)
                .note("each stage in the cycle consumes an output of the one before it"),
            );
        }
    }

    if errors.is_empty() {
        Ok(dag)
    } else {
        Err(SpecErrors(errors))
    }
}

/// Rebuild the DAG of a pipeline from the [`Shape`] kept with its cached plan: only what
/// depends on the file system is checked again (the sources exist and are files or
/// directories); the rest was checked when the shape was made.
pub(crate) fn rebuild(p: &Pipeline, shape: &Shape) -> Result<Dag, SpecErrors> {
    let n = p.stages.len();
    let bad = |&(a, b): &(u32, u32)| a as usize >= n || b as usize >= n;
    let bad_source = |&(i, k): &(u32, u32)| {
        p.stages
            .get(i as usize)
            .is_none_or(|s| k as usize >= s.deps.len())
    };
    if shape.edges.iter().any(bad) || shape.sources.iter().any(bad_source) {
        return Err(SpecErrors(vec![SpecError::plain(
            "the cached plan does not fit its pipeline",
        )]));
    }
    let mut graph = DiGraph::with_capacity(n, shape.edges.len());
    for i in 0..n {
        graph.add_node(i);
    }
    for &(a, b) in &shape.edges {
        graph.add_edge(NodeIndex::new(a as usize), NodeIndex::new(b as usize), ());
    }
    let sources: Vec<(usize, usize)> = shape
        .sources
        .iter()
        .map(|&(i, k)| (i as usize, k as usize))
        .collect();
    let mut errors = Vec::new();
    let source_stats = check_sources(p, &sources, &mut errors);
    if errors.is_empty() {
        Ok(Dag {
            graph,
            source_stats,
            sources,
        })
    } else {
        Err(SpecErrors(errors))
    }
}

/// Stat the sources and check that each exists and has content that can be hashed.
fn check_sources(
    p: &Pipeline,
    sources: &[(usize, usize)],
    errors: &mut Vec<SpecError>,
) -> crate::state::hashing::PathMap<std::fs::Metadata> {
    let source_stats = stat_sources(p, sources);
    for &(i, k) in sources {
        let (s, d) = (&p.stages[i], &p.stages[i].deps[k]);
        match source_stats.get(&d.path) {
            None => errors.push(
                SpecError::at(
                    &d.mark,
                    format!(
                        "dependency '{}' does not exist and no stage produces it",
                        d.path
                    ),
                )
                .in_stage(&s.name),
            ),
            // A device or pipe has no content to hash (`/dev/zero` would never end).
            Some(meta) => {
                if let Some(kind) = crate::state::hashing::special_kind(meta) {
                    errors.push(
                        SpecError::at(
                            &d.mark,
                            format!("dependency '{}' is {kind}, not a file or directory", d.path),
                        )
                        .in_stage(&s.name)
                        .note("a dependency must have content that can be hashed"),
                    );
                }
            }
        }
    }
    source_stats
}

/// Stat every distinct source dep (following symlinks), in parallel: at thousands of deps the
/// stats are most of a no-op run's time. Missing paths are left out.
fn stat_sources(
    p: &Pipeline,
    sources: &[(usize, usize)],
) -> crate::state::hashing::PathMap<std::fs::Metadata> {
    use rayon::prelude::*;
    let mut paths: Vec<&str> = sources
        .iter()
        .map(|&(i, k)| p.stages[i].deps[k].path.as_str())
        .collect();
    paths.sort_unstable();
    paths.dedup();
    let stat = |path: &&str| {
        std::fs::metadata(p.root.join(path))
            .ok()
            .map(|m| (path.to_string(), m))
    };
    if paths.len() < 256 {
        paths.iter().filter_map(stat).collect()
    } else {
        paths.par_iter().with_min_len(64).filter_map(stat).collect()
    }
}

/// `a/b/c` → `a/b`, `a`.
pub(crate) fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut cur = path;
    std::iter::from_fn(move || {
        let i = cur.rfind('/')?;
        cur = &cur[..i];
        Some(cur)
    })
}

/// One concrete cycle through a strongly connected component, in dependency order.
fn cycle_path(dag: &Dag, scc: &[NodeIndex]) -> Vec<usize> {
    let start = *scc.iter().min().expect("non-empty scc");
    let inside: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for e in dag.graph.edges(n) {
            let t = e.target();
            if t == start {
                let mut path = vec![n.index()];
                let mut cur = n;
                while cur != start {
                    cur = parent[&cur];
                    path.push(cur.index());
                }
                path.reverse();
                return path;
            }
            if inside.contains(&t) && !parent.contains_key(&t) {
                parent.insert(t, n);
                queue.push_back(t);
            }
        }
    }
    vec![start.index()]
}

/// Render the DAG as text, Graphviz dot, or Mermaid.
pub fn render(p: &Pipeline, dag: &Dag, format: &str) -> anyhow::Result<String> {
    let order = dag.topo_order();
    let mut out = String::new();
    let quote = |s: &str| s.replace('"', "\\\"");
    match format {
        "text" => {
            for &i in &order {
                let up: Vec<&str> = dag
                    .upstream(i)
                    .iter()
                    .map(|&u| p.stages[u].name.as_str())
                    .collect();
                if up.is_empty() {
                    out.push_str(&format!("{}\n", p.stages[i].name));
                } else {
                    out.push_str(&format!("{}  <- {}\n", p.stages[i].name, up.join(", ")));
                }
            }
        }
        "dot" => {
            out.push_str("digraph pipeline {\n  rankdir=LR;\n  node [shape=box];\n");
            for &i in &order {
                out.push_str(&format!("  \"{}\";\n", quote(&p.stages[i].name)));
            }
            for e in dag.graph.edge_references() {
                out.push_str(&format!(
                    "  \"{}\" -> \"{}\";\n",
                    quote(&p.stages[e.source().index()].name),
                    quote(&p.stages[e.target().index()].name)
                ));
            }
            out.push_str("}\n");
        }
        "mermaid" => {
            out.push_str("flowchart LR\n");
            for &i in &order {
                out.push_str(&format!(
                    "  s{i}[\"{}\"]\n",
                    p.stages[i].name.replace('"', "#quot;")
                ));
            }
            for e in dag.graph.edge_references() {
                out.push_str(&format!(
                    "  s{} --> s{}\n",
                    e.source().index(),
                    e.target().index()
                ));
            }
        }
        "json" => {
            // The plan as data: every stage in topological order, with what it would run.
            let stages: Vec<serde_json::Value> = order
                .iter()
                .map(|&i| {
                    let s = &p.stages[i];
                    let mut o = serde_json::Map::new();
                    o.insert("name".into(), s.name.clone().into());
                    match s.action.command() {
                        Some(c) => {
                            o.insert("cmd".into(), c.into());
                        }
                        None => {
                            o.insert("kind".into(), s.action.kind.clone().into());
                            o.insert("with".into(), s.action.with.clone());
                        }
                    }
                    let paths = |v: &[crate::spec::PathRef]| -> Vec<serde_json::Value> {
                        v.iter().map(|d| d.path.clone().into()).collect()
                    };
                    o.insert("deps".into(), paths(&s.deps).into());
                    o.insert("outs".into(), paths(&s.outs).into());
                    let up: Vec<serde_json::Value> = dag
                        .upstream(i)
                        .iter()
                        .map(|&u| p.stages[u].name.clone().into())
                        .collect();
                    o.insert("upstream".into(), up.into());
                    if !s.params.is_empty() {
                        o.insert("params".into(), serde_json::to_value(&s.params)?);
                    }
                    Ok(serde_json::Value::Object(o))
                })
                .collect::<anyhow::Result<_>>()?;
            out.push_str(&serde_json::to_string_pretty(&stages)?);
            out.push('\n');
        }
        other => anyhow::bail!("unknown format '{other}' (use text, dot, mermaid or json)"),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::spec::{LoadOptions, load};

    fn pipeline(dir: &Path, text: &str) -> Pipeline {
        std::fs::write(dir.join("pipeline.yaml"), text).unwrap();
        load(&dir.join("pipeline.yaml"), &LoadOptions::default()).unwrap()
    }

    #[test]
    fn cycle_is_reported_as_full_path() {
        let d = tempfile::tempdir().unwrap();
        let p = pipeline(
            d.path(),
            "stages:\n  a:\n    cmd: x\n    deps: [c.txt]\n    outs: [a.txt]\n  b:\n    cmd: x\n    deps: [a.txt]\n    outs: [b.txt]\n  c:\n    cmd: x\n    deps: [b.txt]\n    outs: [c.txt]\n",
        );
        let e = build(&p).err().unwrap().to_string();
        assert!(e.contains("dependency cycle: a -> b -> c -> a"), "{e}");
    }

    #[test]
    fn duplicate_nested_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let p = pipeline(
            d.path(),
            "stages:\n  a:\n    cmd: x\n    outs: [o]\n  b:\n    cmd: x\n    outs: [o]\n  c:\n    cmd: x\n    outs: [o/inner]\n  e:\n    cmd: x\n    deps: [missing.txt]\n",
        );
        let e = build(&p).err().unwrap().to_string();
        assert!(
            e.contains("output 'o' is declared by two stages: 'a' and 'b'"),
            "{e}"
        );
        assert!(e.contains("output 'o/inner' is inside output 'o'"), "{e}");
        assert!(
            e.contains("dependency 'missing.txt' does not exist and no stage produces it"),
            "{e}"
        );
    }

    #[test]
    fn directory_deps_link_to_producers_inside() {
        let d = tempfile::tempdir().unwrap();
        let p = pipeline(
            d.path(),
            "stages:\n  a:\n    cmd: x\n    outs: [runs/a]\n  b:\n    cmd: x\n    outs: [runs/b]\n  r:\n    cmd: x\n    deps: [runs]\n  f:\n    cmd: x\n    deps: [runs/a/file.txt]\n",
        );
        let dag = build(&p).unwrap();
        assert_eq!(dag.upstream(2), vec![0, 1]);
        assert_eq!(dag.upstream(3), vec![0]);
        assert!(render(&p, &dag, "mermaid").unwrap().contains("s0 --> s2"));
    }
}
