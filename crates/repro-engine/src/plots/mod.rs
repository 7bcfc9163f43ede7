//! Plots: a stage's `plots:` outputs (a series in CSV, TSV or JSON with x/y columns, or an
//! image) drawn as inline SVG into one offline HTML page (`repro plots show|diff`).
//!
//! A chart is one declaration of one stage *base* name: the expanded stages of a `foreach` or
//! `matrix` (`train@0.1`, `train@0.5`) and the sources a diff compares (`workspace`, `lock`, a
//! git revision, a run-cache id) each add their lines to the same chart, so configurations are
//! compared on the same axes. The page needs nothing but itself: no script, no network, images
//! embedded as `data:` URIs.
//!
//! Series files: CSV/TSV with a header row (one data row per point); JSON as a list of
//! objects, or a mapping holding one such list (`{"train": [{"step": 1, "loss": 0.5}]}`). `x:`
//! names the x column (default: the row number, `step`); `y:` one column or a list (default:
//! every numeric column but x). Cells that are not numbers leave a gap.

mod html;
mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value as Json;

use crate::compare::{Records, Source};

// Declared in spec (which parses `plots:`) so that the pipeline names nothing of the plots
// command; the names here keep working.
pub(crate) use crate::spec::plot_decl::{PlotDecl, PlotKind};

/// One line of a chart.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// What the legend says: the stage (and source, in a diff), and the column when a chart
    /// has several.
    pub label: String,
    pub source: String,
    pub stage: String,
    pub file: String,
    pub y: String,
    pub points: Vec<[f64; 2]>,
}

/// One image of a chart.
#[derive(Debug, Clone, Serialize)]
pub struct Image {
    pub label: String,
    pub source: String,
    pub stage: String,
    pub file: String,
    #[serde(skip)]
    pub data_uri: String,
}

/// One declaration of one stage base name, across configurations and sources.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub title: String,
    /// The base stage name (`train` for `train@0.1`).
    pub stage: String,
    pub x: String,
    pub lines: Vec<Line>,
    pub images: Vec<Image>,
}

/// A page's content: the charts, and the plot files not there to draw.
#[derive(Debug, Clone, Serialize)]
pub struct Plots {
    pub sources: Vec<String>,
    pub charts: Vec<Chart>,
    /// `SOURCE STAGE FILE` of each declared plot file that is not produced (or not cached).
    pub missing: Vec<String>,
    /// The experiments table the page ends with (`exp show`'s rows; `exp show --json` is its
    /// JSON), or why it could not be read.
    #[serde(skip)]
    pub experiments: std::result::Result<Vec<crate::experiments::Row>, String>,
}

/// Where a page's plots come from: what [`Records::source`] names (workspace, lock, a git
/// revision, a run-cache entry), or an experiment (`repro exp show`'s ids and names).
#[derive(Debug, Clone)]
pub(crate) enum PlotSource {
    Records(Source),
    /// An experiment: its label (name, else id) and its stages' keys.
    Experiment {
        label: String,
        stages: BTreeMap<String, String>,
    },
}

impl PlotSource {
    pub(crate) fn label(&self) -> String {
        match self {
            PlotSource::Records(s) => s.label(),
            PlotSource::Experiment { label, .. } => label.clone(),
        }
    }

    /// The source a command-line word names: an experiment first (its id is what `exp show`
    /// prints first), else a source of [`Records::source`].
    pub(crate) fn named(cx: &Records, name: &str) -> Result<PlotSource> {
        if !matches!(name, "workspace" | "ws" | "lock")
            && let Ok(all) = crate::experiments::list(&cx.p.root.join("cache"))
            && let Ok(e) = crate::experiments::resolve(&all, name)
        {
            return Ok(PlotSource::Experiment {
                label: e.name.clone().unwrap_or_else(|| e.id.clone()),
                stages: e.stages.clone(),
            });
        }
        cx.source(name).map(PlotSource::Records)
    }
}

/// The plots of `sources`, for the stages `targets` select (names, base names, globs, or
/// plot file paths; all when empty). An unreadable or malformed plot file is an error naming
/// it and its stage.
pub(crate) fn collect(cx: &Records, sources: &[PlotSource], targets: &[String]) -> Result<Plots> {
    let select = Selector::new(targets)?;
    let mut charts: BTreeMap<(String, usize), Chart> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut matched = false;
    for src in sources {
        for (stage, decls, bytes_of) in stage_files(cx, src)? {
            for (i, d) in decls.iter().enumerate() {
                if !select.matches(&stage, &d.path) {
                    continue;
                }
                matched = true;
                let base = stage.split('@').next().unwrap_or(&stage).to_string();
                let chart = charts.entry((base.clone(), i)).or_insert_with(|| Chart {
                    title: d.title.clone().unwrap_or_else(|| {
                        // The file name without the configuration's part of the path.
                        let file = d.path.rsplit('/').next().unwrap_or(&d.path);
                        format!("{base}: {file}")
                    }),
                    stage: base.clone(),
                    x: d.x.clone().unwrap_or_else(|| "step".into()),
                    lines: Vec::new(),
                    images: Vec::new(),
                });
                let bytes = match bytes_of(&d.path) {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        missing.push(format!("{} {stage} {}", src.label(), d.path));
                        continue;
                    }
                    Err(why) => bail!(
                        "cannot read plot file {} of stage '{stage}' ({}): {why}",
                        d.path,
                        src.label()
                    ),
                };
                let who = if sources.len() > 1 {
                    format!("{} {stage}", src.label())
                } else {
                    stage.clone()
                };
                match PlotKind::of(&d.path).map_err(anyhow::Error::msg)? {
                    PlotKind::Image(mime) => chart.images.push(Image {
                        label: who,
                        source: src.label(),
                        stage: stage.clone(),
                        file: d.path.clone(),
                        data_uri: format!("data:{mime};base64,{}", base64(&bytes)),
                    }),
                    kind => {
                        let text = String::from_utf8_lossy(&bytes);
                        let series = series(&text, kind, d).map_err(|why| {
                            anyhow::anyhow!(
                                "plot file {} of stage '{stage}' ({}): {why}",
                                d.path,
                                src.label()
                            )
                        })?;
                        let several = series.len() > 1;
                        for (y, points) in series {
                            chart.lines.push(Line {
                                label: if several {
                                    format!("{who} · {y}")
                                } else {
                                    who.clone()
                                },
                                source: src.label(),
                                stage: stage.clone(),
                                file: d.path.clone(),
                                y,
                                points,
                            });
                        }
                    }
                }
            }
        }
    }
    if !matched && !targets.is_empty() {
        bail!("no stage matching {} declares plots", targets.join(", "));
    }
    Ok(Plots {
        sources: sources.iter().map(PlotSource::label).collect(),
        charts: charts
            .into_values()
            .filter(|c| !c.lines.is_empty() || !c.images.is_empty())
            .collect(),
        missing,
        experiments: Ok(Vec::new()),
    })
}

/// Reads one plot file of a stage in a source: `Ok(None)` when it is not there.
type Reader<'a> = Box<dyn Fn(&str) -> Result<Option<Vec<u8>>, String> + 'a>;

/// Each stage of a source that declares plots, with its declarations (as the pipeline has
/// them now) and how to read its files there.
fn stage_files<'a>(
    cx: &'a Records,
    src: &PlotSource,
) -> Result<Vec<(String, Vec<PlotDecl>, Reader<'a>)>> {
    let decls = |stage: &str| -> Option<Vec<PlotDecl>> {
        cx.p.stages
            .iter()
            .find(|s| s.name == stage)
            .filter(|s| !s.plots.is_empty())
            .map(|s| s.plots.clone())
    };
    let object = move |hashes: BTreeMap<String, String>| -> Reader<'a> {
        Box::new(move |path: &str| match hashes.get(path) {
            None => Ok(None),
            Some(h) => match std::fs::read(cx.ws.objects.object_path(h)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.to_string()),
            },
        })
    };
    let mut out = Vec::new();
    let src = match src {
        PlotSource::Records(s) => s,
        PlotSource::Experiment { stages, .. } => {
            for (name, key) in stages {
                if let Some(d) = decls(name) {
                    // An entry gc removed: its plots are missing, not an error.
                    let outs = cx.run(key).map(|r| r.outs.clone()).unwrap_or_default();
                    out.push((name.clone(), d, object(outs)));
                }
            }
            return Ok(out);
        }
    };
    match src {
        Source::Workspace => {
            for s in cx.p.stages.iter().filter(|s| !s.plots.is_empty()) {
                let root = cx.p.root.clone();
                let read: Reader<'a> =
                    Box::new(move |path: &str| crate::metrics_file::read_bytes(&root.join(path)));
                out.push((s.name.clone(), s.plots.clone(), read));
            }
        }
        Source::Lock | Source::Git(_) => {
            let lock = match src {
                Source::Git(rev) => crate::compare::git_lock(&cx.p.root, rev)?,
                _ => cx.lock.clone(),
            };
            for (name, e) in lock.stages {
                if let Some(d) = decls(&name) {
                    out.push((name, d, object(e.out_hashes)));
                }
            }
        }
        Source::Run(key) => {
            let rec = cx
                .run(key)
                .ok_or_else(|| anyhow::anyhow!("run-cache entry vanished"))?;
            match decls(&rec.stage) {
                Some(d) => out.push((rec.stage.clone(), d, object(rec.outs.clone()))),
                None => bail!(
                    "stage '{}' of {} declares no plots in the pipeline now",
                    rec.stage,
                    src.label()
                ),
            }
        }
    }
    Ok(out)
}

/// Which stages and plot files the command line selects.
struct Selector(Vec<(String, globset::GlobMatcher)>);

impl Selector {
    fn new(targets: &[String]) -> Result<Selector> {
        let m = targets
            .iter()
            .map(|t| {
                let g = globset::Glob::new(t)
                    .map_err(|e| anyhow::anyhow!("invalid pattern '{t}': {e}"))?;
                Ok((t.clone(), g.compile_matcher()))
            })
            .collect::<Result<_>>()?;
        Ok(Selector(m))
    }

    fn matches(&self, stage: &str, file: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|(t, g)| {
                stage == t
                    || file == t
                    || g.is_match(stage)
                    || stage.split('@').next() == Some(t.as_str())
            })
    }
}

/// One y column of a series file and its `[x, y]` points.
pub(crate) type Series = (String, Vec<[f64; 2]>);

/// The lines of a series file: `(y column, points)` for each y the declaration asks for.
pub(crate) fn series(text: &str, kind: PlotKind, d: &PlotDecl) -> Result<Vec<Series>, String> {
    let (columns, rows) = match kind {
        PlotKind::Csv => cells(crate::metrics_file::table(text, ',')?),
        PlotKind::Tsv => cells(crate::metrics_file::table(text, '\t')?),
        PlotKind::Json => json_rows(text)?,
        PlotKind::Image(_) => return Err("an image is not a series".into()),
    };
    let col = |name: &str| {
        columns.iter().position(|c| c == name).ok_or_else(|| {
            format!(
                "it has no column '{name}' (columns: {})",
                columns.join(", ")
            )
        })
    };
    let x = d.x.as_deref().map(col).transpose()?;
    let ys: Vec<usize> = if d.y.is_empty() {
        (0..columns.len())
            .filter(|&i| Some(i) != x && rows.iter().any(|r| r.get(i).copied().flatten().is_some()))
            .collect()
    } else {
        d.y.iter().map(|y| col(y)).collect::<Result<_, _>>()?
    };
    if ys.is_empty() {
        return Err("it has no numeric column to plot".into());
    }
    Ok(ys
        .into_iter()
        .map(|y| {
            let points = rows
                .iter()
                .enumerate()
                .filter_map(|(n, r)| {
                    let xv = match x {
                        Some(i) => r.get(i).copied().flatten()?,
                        None => n as f64,
                    };
                    Some([xv, r.get(y).copied().flatten()?])
                })
                .filter(|[a, b]| a.is_finite() && b.is_finite())
                .collect();
            (columns[y].clone(), points)
        })
        .collect())
}

type Rows = (Vec<String>, Vec<Vec<Option<f64>>>);

fn cells((header, rows): (Vec<String>, Vec<Vec<String>>)) -> Rows {
    let header = header.into_iter().map(|h| h.trim().to_string()).collect();
    let rows = rows
        .iter()
        .map(|r| r.iter().map(|c| crate::metrics_file::number(c)).collect())
        .collect();
    (header, rows)
}

/// A JSON series: a list of objects, or a mapping with exactly one such list.
fn json_rows(text: &str) -> Result<Rows, String> {
    let doc: Json = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let list = match &doc {
        Json::Array(a) => a,
        Json::Object(m) => {
            let lists: Vec<&Vec<Json>> = m.values().filter_map(Json::as_array).collect();
            match lists.as_slice() {
                [one] => *one,
                _ => {
                    return Err(
                        "a JSON series is a list of objects, or a mapping with one such list"
                            .into(),
                    );
                }
            }
        }
        _ => return Err("a JSON series is a list of objects".into()),
    };
    let mut columns: Vec<String> = Vec::new();
    for item in list {
        let Some(m) = item.as_object() else {
            return Err("a JSON series is a list of objects (one per point)".into());
        };
        for k in m.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let rows = list
        .iter()
        .filter_map(Json::as_object)
        .map(|m| {
            columns
                .iter()
                .map(|c| m.get(c).and_then(Json::as_f64))
                .collect()
        })
        .collect();
    Ok((columns, rows))
}

/// Standard base64 with padding (for `data:` URIs).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(A[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `repro plots show` (no `sources`: the workspace) and `repro plots diff A [B…]` (one
/// source is compared with the workspace): collect the plots, write the page to `out`
/// (default `cache/plots/show.html` or `diff.html` in the workspace) and return its path.
pub fn command(
    file: &Path,
    opts: &crate::spec::LoadOptions,
    sources: &[String],
    targets: &[String],
    out: Option<&Path>,
) -> Result<(PathBuf, Plots)> {
    let cx = Records::load(file, opts)?;
    let diff = !sources.is_empty();
    let mut names: Vec<&str> = sources.iter().map(String::as_str).collect();
    // `show` draws the workspace; a diff of one source compares it with the workspace.
    if names.len() <= 1 {
        names.push("workspace");
    }
    let srcs = names
        .iter()
        .map(|n| PlotSource::named(&cx, n))
        .collect::<Result<Vec<_>>>()?;
    let mut plots = collect(&cx, &srcs, targets)?;
    let root = cx.p.root.clone();
    // The page also says which experiments there are (an unreadable metrics file leaves a
    // note in its place rather than no page); the records let go of the state database first.
    drop(srcs);
    drop(cx);
    plots.experiments = crate::experiments::rows(&root).map_err(|e| format!("{e:#}"));
    let title = if diff {
        format!("repro plots: {}", plots.sources.join(" vs "))
    } else {
        "repro plots".to_string()
    };
    let default = root
        .join("cache/plots")
        .join(if diff { "diff.html" } else { "show.html" });
    let path = write_page(&plots, &title, out.unwrap_or(&default))?;
    Ok((path, plots))
}

/// Write the page to `out` (its directory created) and return the path written.
pub(crate) fn write_page(plots: &Plots, title: &str, out: &Path) -> Result<PathBuf> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let page = html::page(plots, title);
    crate::fsutil::write_atomic(out, page.as_bytes())?;
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::Mark;

    fn mark() -> Mark {
        Mark {
            source: std::sync::Arc::new(crate::spec::yaml::Source {
                path: "pipeline.yaml".into(),
                text: String::new(),
            }),
            line: 1,
            col: 1,
        }
    }

    fn decl(path: &str, x: Option<&str>, y: &[&str]) -> PlotDecl {
        PlotDecl {
            path: path.into(),
            x: x.map(String::from),
            y: y.iter().map(|s| s.to_string()).collect(),
            title: None,
            mark: mark(),
        }
    }

    #[test]
    fn csv_tsv_and_json_series_by_column() {
        let d = decl("l.csv", Some("epoch"), &["loss"]);
        let s = series(
            "epoch,loss,acc\n1,0.9,0.1\n2,0.5,x\n3,,0.3\n",
            PlotKind::Csv,
            &d,
        )
        .unwrap();
        assert_eq!(s, [("loss".to_string(), vec![[1.0, 0.9], [2.0, 0.5]])]);
        // Default y: every numeric column but x; default x: the row number.
        let all = series(
            "a\tb\n1\t2\n3\t4\n",
            PlotKind::Tsv,
            &decl("l.tsv", None, &[]),
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], ("b".to_string(), vec![[0.0, 2.0], [1.0, 4.0]]));
        let j = r#"{"train": [{"step": 1, "loss": 2}, {"step": 2, "loss": 1.5}], "name": "x"}"#;
        let s = series(j, PlotKind::Json, &decl("l.json", Some("step"), &[])).unwrap();
        assert_eq!(s, [("loss".to_string(), vec![[1.0, 2.0], [2.0, 1.5]])]);
    }

    #[test]
    fn series_errors_name_the_column_or_shape() {
        let e = series(
            "a,b\n1,2\n",
            PlotKind::Csv,
            &decl("l.csv", Some("epoch"), &[]),
        );
        assert_eq!(e.unwrap_err(), "it has no column 'epoch' (columns: a, b)");
        let e = series("[1, 2]", PlotKind::Json, &decl("l.json", None, &[]));
        assert!(e.unwrap_err().contains("list of objects"));
        let e = series("a\nx\n", PlotKind::Csv, &decl("l.csv", None, &[]));
        assert!(e.unwrap_err().contains("no numeric column"));
    }

    #[test]
    fn declarations_are_checked() {
        let m = mark();
        let d = PlotDecl::from_json(
            &serde_json::json!({"path": "a.csv", "x": "e", "y": "l"}),
            &m,
        )
        .unwrap();
        assert_eq!(
            (d.x.as_deref(), d.y.as_slice()),
            (Some("e"), &["l".to_string()][..])
        );
        assert!(PlotDecl::from_json(&serde_json::json!("p.png"), &m).is_ok());
        let err = |v| PlotDecl::from_json(&v, &m).unwrap_err();
        assert!(err(serde_json::json!("a.txt")).contains("not a plot file"));
        assert!(err(serde_json::json!({"path": "a.png", "y": "l"})).contains("is an image"));
        assert!(err(serde_json::json!({"path": "a.csv", "z": 1})).contains("unknown key `z`"));
        assert!(err(serde_json::json!({"x": "a"})).contains("needs a `path:`"));
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
