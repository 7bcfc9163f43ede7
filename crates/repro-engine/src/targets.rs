//! Which stages a command's TARGETS mean.
//!
//! A target is a stage name (`train@cnn,bce-nu`), a base name (`train`: every expansion), a
//! glob (`train@*`), or a path: an output (`runs/x/model.safetensors` means the stage that
//! produces it), a file inside an output directory, or a directory holding outputs (every stage
//! that writes under it). `--downstream` adds everything after the targets. The selection is
//! always closed over upstream, since a stage cannot be brought up to date without its inputs;
//! upstream stages that are fresh cost nothing.

use std::path::Path;

use globset::Glob;

use crate::graph::Dag;
use crate::spec::Pipeline;

/// Stage indices selected by `targets` (all stages when empty), in topological order.
pub(crate) fn select(
    p: &Pipeline,
    dag: &Dag,
    targets: &[String],
    downstream: bool,
) -> anyhow::Result<Vec<usize>> {
    let order = dag.topo_order();
    if targets.is_empty() {
        return Ok(order);
    }
    let mut wanted = wanted(p, targets)?;
    if downstream {
        close(&mut wanted, |i| dag.downstream(i));
    }
    close(&mut wanted, |i| dag.upstream(i));
    Ok(order.into_iter().filter(|&i| wanted[i]).collect())
}

/// The stages `targets` name themselves (all when empty), in topological order, without
/// their upstream: `repro verify` reruns exactly these, from their recorded inputs.
pub(crate) fn matched(p: &Pipeline, dag: &Dag, targets: &[String]) -> anyhow::Result<Vec<usize>> {
    let order = dag.topo_order();
    if targets.is_empty() {
        return Ok(order);
    }
    let wanted = wanted(p, targets)?;
    Ok(order.into_iter().filter(|&i| wanted[i]).collect())
}

/// Which stages the targets name (by stage index); an error for a target naming none.
fn wanted(p: &Pipeline, targets: &[String]) -> anyhow::Result<Vec<bool>> {
    let mut wanted = vec![false; p.stages.len()];
    for t in targets {
        let mut hits = by_name(p, t)?;
        if hits.is_empty() {
            hits = by_path(p, t);
        }
        if hits.is_empty() {
            let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
            let hint = crate::spec::error::suggest(t, &names)
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            anyhow::bail!(
                "no stage matches target '{t}', and no stage produces a path there{hint}"
            );
        }
        for i in hits {
            wanted[i] = true;
        }
    }
    Ok(wanted)
}

/// Add to `wanted` everything reachable through `next`.
fn close(wanted: &mut [bool], next: impl Fn(usize) -> Vec<usize>) {
    let mut stack: Vec<usize> = (0..wanted.len()).filter(|&i| wanted[i]).collect();
    while let Some(i) = stack.pop() {
        for j in next(i) {
            if !wanted[j] {
                wanted[j] = true;
                stack.push(j);
            }
        }
    }
}

fn by_name(p: &Pipeline, t: &str) -> anyhow::Result<Vec<usize>> {
    let matcher = Glob::new(t)
        .map_err(|e| anyhow::anyhow!("invalid target pattern '{t}': {e}"))?
        .compile_matcher();
    Ok(p.stages
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.name == t || matcher.is_match(&s.name) || s.name.split('@').next() == Some(t)
        })
        .map(|(i, _)| i)
        .collect())
}

/// Stages whose outputs are at, contain, or lie under the path `t` (relative to the current
/// directory, or to the workspace).
fn by_path(p: &Pipeline, t: &str) -> Vec<usize> {
    let candidates = workspace_relative(&p.root, t);
    p.stages
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.outs.iter().any(|o| {
                candidates.iter().any(|c| {
                    o.path == *c
                        || c.starts_with(&format!("{}/", o.path))
                        || o.path.starts_with(&format!("{c}/"))
                })
            })
        })
        .map(|(i, _)| i)
        .collect()
}

/// `t` as a workspace-relative path: as written, and as seen from the current directory when
/// that differs (`repro run -f ../pipeline.yaml model.bin` from a subdirectory).
fn workspace_relative(root: &Path, t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let from_cwd = std::env::current_dir().map(|d| d.join(t)).ok();
    if let Some(rel) = from_cwd
        .as_deref()
        .and_then(|full| lexical_strip(full, root))
    {
        out.push(rel);
    }
    if let Ok(rel) = crate::spec::normalise(t, false)
        && !out.contains(&rel)
    {
        out.push(rel);
    }
    out
}

/// `full` relative to `root`, with `.` and `..` resolved lexically; `None` outside `root`.
fn lexical_strip(full: &Path, root: &Path) -> Option<String> {
    let rel = full.strip_prefix(root).ok()?;
    crate::spec::normalise(rel.to_str()?, false).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(dir: &Path) -> (Pipeline, Dag) {
        std::fs::write(
            dir.join("pipeline.yaml"),
            "stages:\n  a:\n    cmd: x\n    outs: [data/a.txt]\n  b:\n    foreach: [1, 2]\n    cmd: x\n    deps: [data/a.txt]\n    outs: [\"runs/b${item}\"]\n  c:\n    cmd: x\n    deps: [runs]\n    outs: [c.txt]\n  d:\n    cmd: x\n    outs: [d.txt]\n",
        )
        .unwrap();
        let p = crate::spec::load(&dir.join("pipeline.yaml"), &Default::default()).unwrap();
        let dag = crate::graph::build(&p).unwrap();
        (p, dag)
    }

    fn names(p: &Pipeline, v: Vec<usize>) -> Vec<&str> {
        v.into_iter().map(|i| p.stages[i].name.as_str()).collect()
    }

    #[test]
    fn paths_select_their_producers_and_downstream_adds_what_follows() {
        let d = tempfile::tempdir().unwrap();
        let (p, dag) = pipeline(d.path());
        let sel = |t: &[&str], down| {
            let t: Vec<String> = t.iter().map(|s| s.to_string()).collect();
            names(&p, select(&p, &dag, &t, down).unwrap())
        };
        assert_eq!(sel(&["data/a.txt"], false), ["a"]);
        assert_eq!(sel(&["./runs/b2/model.bin"], false), ["a", "b@2"]);
        assert_eq!(sel(&["runs"], false), ["a", "b@1", "b@2"]);
        assert_eq!(sel(&["a"], true), ["a", "b@1", "b@2", "c"]);
        // c also needs b@2, so it comes along (it is skipped when fresh).
        assert_eq!(sel(&["b@1"], true), ["a", "b@1", "b@2", "c"]);
        let t = vec!["nothing/here".to_string()];
        let e = select(&p, &dag, &t, false).unwrap_err().to_string();
        assert!(e.contains("no stage produces"), "{e}");
    }
}
