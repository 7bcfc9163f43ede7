//! The report: the paper's tables and figures, drawn from the evaluated runs, rendered through
//! tera templates as a self-contained HTML page, a LaTeX document (booktabs tables, pgfplots
//! figures) and, when `pdflatex` is present, its PDF; plus one SVG per figure.
//!
//! Flow: [`runs`] reads `metrics.json` / `train.json` → [`tables`], [`figures`], [`findings`]
//! turn them into plain data (with [`published`] values side by side; [`figures`] lays its
//! panels out through [`plot`]) → the templates in `templates/` (built-in copies compiled in;
//! a workspace's own files override them) render that data, formatting numbers and escaping
//! LaTeX through [`filters`] → [`output`] writes every file atomically. Nothing reads the
//! clock, so equal inputs give equal bytes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use tera::Tera;

pub mod claims;
pub mod figures;
pub mod filters;
pub mod findings;
pub mod mathtext;
pub mod names;
pub mod numerics;
pub mod openset;
pub mod output;
pub mod plot;
pub mod provenance;
pub mod published;
pub mod reproducibility;
pub mod runs;
pub mod tables;
pub mod timeline;

/// Whether to produce the PDF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PdfMode {
    /// When `pdflatex` is on the PATH.
    #[default]
    Auto,
    /// Fail when `pdflatex` is missing.
    Always,
    Never,
}

/// Everything a report is made from.
pub struct Options {
    /// Workspace root; relative paths below are relative to it.
    pub workspace: PathBuf,
    /// Run directories or glob patterns (`runs/**/metrics.json`).
    pub runs: Vec<String>,
    /// Published values directory; `None`: `stages/published` if present, else built-in.
    pub published: Option<PathBuf>,
    /// Template directory overriding the built-in templates; `None`: `templates` if present.
    pub templates: Option<PathBuf>,
    pub title: String,
    /// `repro.lock` to hash; `None`: `repro.lock` if present.
    pub lock: Option<PathBuf>,
    /// Git revision to print; `None`: `git rev-parse HEAD` in the workspace.
    pub revision: Option<String>,
    pub figures: figures::Choice,
    /// Claims file; `None`: `stages/claims.yaml` if present, else the built-in copy.
    pub claims: Option<PathBuf>,
    /// `repro verify --write` results for the Reproducibility section; `None`: the section
    /// says nothing was verified.
    pub verified: Option<PathBuf>,
}

/// The built-in templates; files of the same name in the template directory replace them.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("report.html", include_str!("../../templates/report.html")),
    ("report.tex", include_str!("../../templates/report.tex")),
    ("figure.svg", include_str!("../../templates/figure.svg")),
    ("figure.tex", include_str!("../../templates/figure.tex")),
    ("summary.md", include_str!("../../templates/summary.md")),
];

/// A rendered report, not yet written.
pub struct Rendered {
    pub html: String,
    pub tex: String,
    /// `figures/<id>.svg` contents, by id.
    pub svgs: Vec<(String, String)>,
    pub runs: usize,
    /// `summary.md`: the main tables, the γ sweep and the claims with their verdicts.
    pub summary: String,
    /// `summary-runs.json`: the compact copy of the runs the summary is drawn from.
    pub snapshot: String,
}

#[derive(Serialize)]
struct FigureOut {
    #[serde(flatten)]
    fig: plot::Figure,
    svg: String,
    tex: String,
}

fn load_templates(dir: Option<&Path>) -> Result<Tera> {
    let mut tera = Tera::default();
    tera.autoescape_on(vec![".html", ".svg"]);
    filters::register(&mut tera);
    let mut list: Vec<(String, String)> = TEMPLATES
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    if let Some(dir) = dir {
        for (name, text) in list.iter_mut() {
            let p = dir.join(&*name);
            if p.is_file() {
                *text = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading template {}", p.display()))?;
            }
        }
    }
    for (name, text) in &list {
        tera.add_raw_template(name, text)
            .map_err(|e| anyhow::anyhow!("template {name}: {}", tera_chain(&e)))?;
    }
    Ok(tera)
}

/// Tera hides the useful part of its errors in the source chain.
pub fn tera_chain(e: &tera::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn render_one(tera: &Tera, name: &str, ctx: &tera::Context) -> Result<String> {
    tera.render(name, ctx)
        .map_err(|e| anyhow::anyhow!("rendering template {name}: {}", tera_chain(&e)))
}

/// Read the runs and render every output in memory.
pub fn render(opts: &Options) -> Result<Rendered> {
    let ws = &opts.workspace;
    let runs = runs::load(ws, &opts.runs)?;
    let published = match &opts.published {
        Some(p) => published::Published::load_dir(&ws.join(p), &p.display().to_string())?,
        None if ws.join("stages/published").is_dir() => {
            published::Published::load_dir(&ws.join("stages/published"), "stages/published")?
        }
        None => published::Published::builtin()?,
    };
    let tdir = match &opts.templates {
        Some(t) => {
            let d = ws.join(t);
            anyhow::ensure!(
                d.is_dir(),
                "templates: directory {} does not exist",
                d.display()
            );
            Some(d)
        }
        None => Some(ws.join("templates")).filter(|d| d.is_dir()),
    };
    let tera = load_templates(tdir.as_deref())?;
    let (lock_path, lock_hash) = match &opts.lock {
        Some(p) => (
            Some(p.display().to_string()),
            provenance::lock_hash(&ws.join(p), true)?,
        ),
        None => {
            let h = provenance::lock_hash(&ws.join("repro.lock"), false)?;
            (h.as_ref().map(|_| "repro.lock".to_string()), h)
        }
    };
    let revision = opts
        .revision
        .clone()
        .unwrap_or_else(|| provenance::git_revision(ws));
    let prov = provenance::collect(
        &runs,
        revision,
        lock_path,
        lock_hash,
        published.source.clone(),
    );

    let mut figs = figures::gamma_figures(&runs, &published);
    figs.extend(figures::distribution_figures(&runs, &opts.figures));
    figs.extend(figures::bias_figures(&runs, &opts.figures));
    let mut fig_out = Vec::new();
    let mut svgs = Vec::new();
    for f in figs {
        let mut ctx = tera::Context::new();
        ctx.insert("fig", &f);
        let svg = render_one(&tera, "figure.svg", &ctx)?;
        let tex = render_one(&tera, "figure.tex", &ctx)?;
        svgs.push((f.id.clone(), svg.clone()));
        fig_out.push(FigureOut { fig: f, svg, tex });
    }

    let mut display = std::collections::BTreeMap::new();
    for r in &runs {
        if let Some(d) = &r.dataset {
            display.insert(d.clone(), names::dataset_display(d));
        }
        if let Some(m) = &r.model {
            display.insert(m.clone(), names::model_display(m));
        }
    }
    for n in names::DATASETS {
        display.insert(n.to_string(), names::dataset_display(n));
    }
    for n in names::MODELS {
        display.insert(n.to_string(), names::model_display(n));
    }
    display.insert(
        tables::UNSPECIFIED.to_string(),
        tables::UNSPECIFIED.to_string(),
    );

    let mut ctx = tera::Context::new();
    ctx.insert("title", &opts.title);
    ctx.insert("display", &display);
    ctx.insert("table_i", &names::table_i());
    ctx.insert(
        "accuracy_tables",
        &tables::accuracy_tables(&runs, &published, false),
    );
    ctx.insert(
        "softmax_tables",
        &tables::accuracy_tables(&runs, &published, true),
    );
    ctx.insert("gamma_tables", &tables::gamma_tables(&runs, &published));
    ctx.insert("bias_tables", &tables::bias_tables(&runs, &published));
    let claim_specs = claims::load(ws, opts.claims.as_deref())?;
    let claim_results = claims::evaluate(&claim_specs, &published, &runs);
    ctx.insert("claims", &claim_results);
    ctx.insert("sanity", &claims::ordering_sanity(&runs));
    ctx.insert("openset", &openset_out(&runs));
    ctx.insert("numerics", &numerics::reading(&runs));
    ctx.insert("figures", &fig_out);
    ctx.insert("provenance", &prov);
    let verified = match &opts.verified {
        Some(p) => Some((p.display().to_string(), reproducibility::load(ws, p)?)),
        None => None,
    };
    ctx.insert(
        "reproducibility",
        &reproducibility::section(&runs, verified.as_ref().map(|(p, w)| (p.as_str(), w))),
    );
    ctx.insert("timeline", &timeline::load(ws)?);
    ctx.insert("run_count", &runs.len());
    let html = render_one(&tera, "report.html", &ctx)?;
    let tex = render_one(&tera, "report.tex", &ctx)?;
    let summary = render_summary(&tera, &runs, &published, &claim_specs)?;
    let snapshot = serde_json::to_string_pretty(&runs::snapshot(ws, &runs)?)? + "\n";
    Ok(Rendered {
        html,
        tex,
        svgs,
        runs: runs.len(),
        summary,
        snapshot,
    })
}

#[derive(Serialize)]
struct OpenSetOut {
    table: openset::Table,
    reading: Vec<String>,
}

fn openset_out(runs: &[runs::Run]) -> serde_json::Value {
    let tables: Vec<OpenSetOut> = openset::tables(runs)
        .into_iter()
        .map(|t| OpenSetOut {
            reading: openset::reading(&t),
            table: t,
        })
        .collect();
    serde_json::json!({"columns": openset::COLUMNS, "tables": tables})
}

/// The Markdown summary (the README's generated block) of these runs.
pub fn render_summary(
    tera: &Tera,
    runs: &[runs::Run],
    published: &published::Published,
    claim_specs: &[claims::ClaimSpec],
) -> Result<String> {
    let mut display = std::collections::BTreeMap::new();
    for r in runs {
        if let Some(d) = &r.dataset {
            display.insert(d.clone(), names::dataset_display(d));
        }
        if let Some(m) = &r.model {
            display.insert(m.clone(), names::model_display(m));
        }
    }
    let mut ctx = tera::Context::new();
    ctx.insert("display", &display);
    ctx.insert(
        "accuracy_tables",
        &tables::accuracy_tables(runs, published, false),
    );
    ctx.insert("gamma_tables", &tables::gamma_tables(runs, published));
    ctx.insert("claims", &claims::evaluate(claim_specs, published, runs));
    ctx.insert("sanity", &claims::ordering_sanity(runs));
    ctx.insert("openset", &openset_out(runs));
    ctx.insert("machines", &provenance::machines(runs));
    ctx.insert("numerics", &numerics::reading(runs));
    ctx.insert(
        "run_count",
        &runs.iter().filter(|r| r.metrics.is_some()).count(),
    );
    render_one(tera, "summary.md", &ctx)
}

/// The summary re-rendered from a snapshot (`summary-runs.json`) with the built-in templates,
/// published values and claims file given — what the README test compares against.
pub fn summary_from_snapshot(
    snapshot_json: &str,
    name: &str,
    claim_specs: &[claims::ClaimSpec],
) -> Result<String> {
    let snap: Vec<runs::Snapshot> = serde_json::from_str(snapshot_json)
        .with_context(|| format!("{name}: not a runs snapshot (summary-runs.json)"))?;
    summary_of_runs(&runs::from_snapshot(&snap, name)?, claim_specs)
}

/// The summary of these runs with the built-in templates and published values.
pub fn summary_of_runs(runs: &[runs::Run], claim_specs: &[claims::ClaimSpec]) -> Result<String> {
    let tera = load_templates(None)?;
    render_summary(&tera, runs, &published::Published::builtin()?, claim_specs)
}
