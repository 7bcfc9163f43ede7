//! The `report` stage kind: renders the paper's tables and figures from the evaluated runs
//! (see `crate::report`) into `out/report.html`, `out/report.tex`, `out/report.pdf` (when
//! `pdflatex` is present, or always/never per `pdf:`) and `out/figures/*.svg`.

use std::path::PathBuf;

use anyhow::Result;
use serde::Deserialize;

use crate::report::{self, PdfMode, figures::Choice};
use repro_engine::kinds::{Kind, Run, StageContext, ensure_param, progress};

/// `with:` parameters of a `report` stage.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Run directories, or glob patterns such as `runs/**/metrics.json`.
    pub runs: Vec<String>,
    /// Published-values directory (default `stages/published`, else the built-in copy).
    #[serde(default)]
    pub published: Option<PathBuf>,
    /// Template directory overriding the built-in templates (default `templates` if present).
    #[serde(default)]
    pub templates: Option<PathBuf>,
    /// Claims file (default `stages/claims.yaml`, else the built-in copy).
    #[serde(default)]
    pub claims: Option<PathBuf>,
    /// Output directory.
    pub out: PathBuf,
    #[serde(default = "default_title")]
    pub title: String,
    /// `repro.lock` to hash for provenance (default `repro.lock` if present).
    #[serde(default)]
    pub lock: Option<PathBuf>,
    #[serde(default)]
    pub pdf: PdfMode,
    /// Dataset and model of Figs. 2 and 3 (default: the first with matching runs).
    #[serde(default)]
    pub figure_dataset: Option<String>,
    #[serde(default)]
    pub figure_model: Option<String>,
    /// Bias initialisation modes shown in Fig. 3 (default 3 and 7, as in the paper).
    #[serde(default = "default_modes")]
    pub figure_modes: Vec<u32>,
    /// A `repro verify --write` file for the Reproducibility section (declare it as a dep).
    #[serde(default)]
    pub verified: Option<PathBuf>,
}

fn default_title() -> String {
    "Rediscovering BCE Loss for Uniform Classification: reproduction report".to_string()
}

fn default_modes() -> Vec<u32> {
    vec![3, 7]
}

pub struct Report;

impl Kind for Report {
    type Params = Params;

    fn name(&self) -> &'static str {
        "report"
    }

    fn version(&self) -> u32 {
        // 2: claims from stages/claims.yaml judged on the paper and on our runs; summary.md.
        2
    }

    fn written_paths(&self, p: &Params) -> Vec<(&'static str, PathBuf)> {
        vec![("out", p.out.clone())]
    }

    fn check(&self, p: &Params) -> Result<()> {
        ensure_param!(
            !p.runs.is_empty(),
            "runs",
            "report: `runs` is empty; list run directories or a pattern such as runs/**/metrics.json"
        );
        ensure_param!(
            !p.out.as_os_str().is_empty(),
            "out",
            "report: `out` is empty; give the output directory"
        );
        Ok(())
    }
}

impl Run for Report {
    fn run(&self, p: Params, ctx: &StageContext) -> Result<()> {
        progress::report("reading runs", Some(0.0));
        let opts = report::Options {
            workspace: ctx.workspace.clone(),
            runs: p.runs,
            published: p.published,
            templates: p.templates,
            title: p.title,
            lock: p.lock,
            revision: None,
            claims: p.claims,
            verified: p.verified,
            figures: Choice {
                dataset: p.figure_dataset,
                model: p.figure_model,
                modes: p.figure_modes,
            },
        };
        let rendered = report::render(&opts)?;
        progress::report(
            &format!("rendered {} runs; writing", rendered.runs),
            Some(0.5),
        );
        let w = report::output::write(&rendered, &ctx.path(&p.out), p.pdf)?;
        progress::report(
            &format!(
                "wrote {} ({} figures{})",
                p.out.display(),
                w.svgs.len(),
                if w.pdf.is_some() { ", PDF" } else { "" }
            ),
            Some(1.0),
        );
        Ok(())
    }
}
