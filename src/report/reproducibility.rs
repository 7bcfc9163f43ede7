//! The report's "Reproducibility" section: for each table, which of its runs were rerun by
//! `repro verify` and found identical, within tolerance or different, and in which
//! environment.
//!
//! The engine knows nothing of the report: `repro verify --write FILE` writes its latest
//! results as JSON ([`Written`]) and a report stage that wants the section
//! names that file as `verified:` and as a dep, so a new verification re-renders the report
//! (docs/reproducibility.md). A run (a directory of `metrics.json` / `train.json`) is matched
//! to the verified stages whose outputs are that directory, lie in it or contain it; its
//! verdict is the worst of theirs. Nothing here is inferred: a run no result matches is
//! "not verified", and without the file the section says that nothing was.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::names;
use super::runs::{Role, Run};

/// A `repro verify --write` file, as far as the section reads it (the format is
/// docs/reproducibility.md's; other fields are ignored). Kept here rather than borrowed from
/// the engine: the file is the interface.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Written {
    #[serde(default)]
    pub format: u32,
    #[serde(default)]
    pub stages: Vec<StageResult>,
}

/// One stage's result in a [`Written`] file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StageResult {
    pub stage: String,
    pub verdict: Verdict,
    /// How the rerun's environment differed from the recorded run's (`None`: unknown).
    #[serde(default)]
    pub environment_changes: Option<Vec<String>>,
    #[serde(default)]
    pub tolerance: Option<f64>,
    #[serde(default)]
    pub files: Vec<FileDiff>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The stage's declared outputs.
    #[serde(default)]
    pub outs: Vec<String>,
}

/// A file that differed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FileDiff {
    pub path: String,
    pub what: String,
}

/// What the rerun found, worst last.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Identical,
    WithinTolerance,
    Differs,
    CouldNotRun,
}

impl Verdict {
    fn words(self) -> &'static str {
        match self {
            Verdict::Identical => "identical",
            Verdict::WithinTolerance => "within tolerance",
            Verdict::Differs => "differs",
            Verdict::CouldNotRun => "could not run",
        }
    }
}

/// One run as the section shows it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RunCheck {
    pub run: String,
    /// `identical`, `within tolerance 1e-6`, `differs`, `could not run` or `not verified`.
    pub verdict: String,
    /// The stages whose reruns this verdict comes from.
    pub stages: Vec<String>,
    /// Where the rerun was made compared with the recorded run (empty when not verified).
    pub environment: String,
    /// What differed, or why it could not run.
    pub detail: String,
}

/// The runs behind one table (or group of tables).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TableChecks {
    pub table: String,
    pub runs: Vec<RunCheck>,
}

/// The section.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct Section {
    /// The verify results file as given (`None`: the report was given none).
    pub source: Option<String>,
    pub tables: Vec<TableChecks>,
    /// Runs with a verdict, and of them identical / within tolerance / different / not run.
    pub verified: usize,
    pub identical: usize,
    pub within: usize,
    pub differ: usize,
    pub failed: usize,
    /// One sentence saying what the section shows (always set).
    pub summary: String,
}

/// Read a `repro verify --write` file (`path` relative to the workspace).
pub fn load(ws: &Path, path: &Path) -> Result<Written> {
    let full = ws.join(path);
    let text = std::fs::read_to_string(&full)
        .with_context(|| format!("verified: cannot read {}", full.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "verified: {} is not a `repro verify --write` file",
            path.display()
        )
    })
}

/// The section for `runs` from the verify results `written` (read from `source`).
pub fn section(runs: &[Run], written: Option<(&str, &Written)>) -> Section {
    let Some((source, w)) = written else {
        return Section {
            summary: "Nothing was verified: no run was rerun to check that it reproduces \
                      (repro verify; see docs/reproducibility.md)."
                .into(),
            ..Section::default()
        };
    };
    let mut tables: Vec<TableChecks> = Vec::new();
    let mut s = Section {
        source: Some(source.to_string()),
        ..Section::default()
    };
    for r in runs {
        let check = check_run(r, &w.stages);
        match check.1 {
            Some(Verdict::Identical) => s.identical += 1,
            Some(Verdict::WithinTolerance) => s.within += 1,
            Some(Verdict::Differs) => s.differ += 1,
            Some(Verdict::CouldNotRun) => s.failed += 1,
            None => {}
        }
        let table = table_of(r);
        match tables.iter_mut().find(|t| t.table == table) {
            Some(t) => t.runs.push(check.0),
            None => tables.push(TableChecks {
                table,
                runs: vec![check.0],
            }),
        }
    }
    s.verified = s.identical + s.within + s.differ + s.failed;
    s.summary = if s.verified == 0 {
        format!(
            "Nothing was verified: {source} holds no result for any of these {} run(s).",
            runs.len()
        )
    } else {
        format!(
            "{} of {} run(s) were rerun by repro verify (results from {source}): {} identical, {} within tolerance, {} different, {} could not be rerun.",
            s.verified,
            runs.len(),
            s.identical,
            s.within,
            s.differ,
            s.failed
        )
    };
    for t in &mut tables {
        t.runs.sort_by(|a, b| a.run.cmp(&b.run));
    }
    s.tables = tables;
    s
}

/// The table a run's numbers appear in.
fn table_of(r: &Run) -> String {
    let dataset = r
        .dataset
        .as_deref()
        .map_or("unspecified dataset".to_string(), names::dataset_display);
    match r.role {
        Role::Pretrain | Role::Finetune => format!("Accuracy, {dataset}"),
        Role::GammaSweep => format!("Gamma sweep, {dataset}"),
        Role::BiasInit => format!("Bias initialisation, {dataset}"),
        Role::OpenSet => format!("Open set, {dataset}"),
    }
}

/// Whether a stage output `out` belongs to the run directory `run`.
fn belongs(out: &str, run: &str) -> bool {
    let (out, run) = (out.trim_end_matches('/'), run.trim_end_matches('/'));
    out == run || out.starts_with(&format!("{run}/")) || run.starts_with(&format!("{out}/"))
}

/// A run's line and its verdict (`None`: not verified): the worst of its stages'.
fn check_run(r: &Run, results: &[StageResult]) -> (RunCheck, Option<Verdict>) {
    let mine: Vec<&StageResult> = results
        .iter()
        .filter(|s| s.outs.iter().any(|o| belongs(o, &r.id)))
        .collect();
    let worst = mine.iter().map(|s| s.verdict).max();
    let verdict = match worst {
        None => "not verified".to_string(),
        Some(Verdict::WithinTolerance) => {
            let t = mine.iter().filter_map(|s| s.tolerance).fold(0.0, f64::max);
            format!("within tolerance {t:e}")
        }
        Some(v) => v.words().to_string(),
    };
    let environment = if mine.is_empty() {
        String::new()
    } else {
        let changes: Vec<String> = mine
            .iter()
            .filter_map(|s| s.environment_changes.clone())
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if mine.iter().any(|s| s.environment_changes.is_none()) {
            "the recorded run's environment is not known".to_string()
        } else if changes.is_empty() {
            "the same environment as the recorded run".to_string()
        } else {
            format!("another environment: {}", changes.join("; "))
        }
    };
    let detail = mine
        .iter()
        .flat_map(|s| {
            s.reason
                .iter()
                .cloned()
                .chain(s.files.iter().map(|f| format!("{}: {}", f.path, f.what)))
        })
        .collect::<Vec<_>>()
        .join("; ");
    (
        RunCheck {
            run: r.id.clone(),
            verdict,
            stages: mine.iter().map(|s| s.stage.clone()).collect(),
            environment,
            detail,
        },
        worst,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, dataset: &str, role: Role) -> Run {
        let snap = super::super::runs::Snapshot {
            id: id.to_string(),
            metrics: None,
            train: None,
        };
        let mut r = super::super::runs::from_snapshot(&[snap], "test")
            .unwrap()
            .remove(0);
        r.dataset = Some(dataset.to_string());
        r.role = role;
        r
    }

    fn result(stage: &str, outs: &[&str], verdict: Verdict) -> StageResult {
        serde_json::from_value(serde_json::json!({
            "format": 1,
            "stage": stage,
            "key": "k",
            "verdict": verdict,
            "environment": "e",
            "environment_changes": [],
            "tolerance": 1e-6,
            "files": if verdict == Verdict::Differs {
                serde_json::json!([{"path": "runs/b/logits.safetensors", "what": "first difference at byte 90 (line 1)"}])
            } else {
                serde_json::json!([])
            },
            "outs": outs,
        }))
        .unwrap()
    }

    #[test]
    fn without_results_the_section_says_nothing_was_verified() {
        let runs = vec![run("runs/a", "cub", Role::Finetune)];
        let s = section(&runs, None);
        assert_eq!(s.verified, 0);
        assert!(s.tables.is_empty());
        assert!(
            s.summary.starts_with("Nothing was verified"),
            "{}",
            s.summary
        );
        let w = Written {
            format: 1,
            stages: vec![result("train@x", &["runs/x"], Verdict::Identical)],
        };
        let s = section(&runs, Some(("verified.json", &w)));
        assert_eq!(s.verified, 0);
        assert!(s.summary.contains("holds no result"), "{}", s.summary);
        assert_eq!(s.tables[0].runs[0].verdict, "not verified");
    }

    #[test]
    fn runs_get_the_worst_verdict_of_their_stages_per_table() {
        let runs = vec![
            run("runs/a", "cub", Role::Finetune),
            run("runs/b", "cub", Role::Finetune),
            run("runs/g", "cub", Role::GammaSweep),
            run("runs/n", "cub", Role::Finetune),
        ];
        let w = Written {
            format: 1,
            stages: vec![
                // A stage writing a file inside the run, one writing the run directory.
                result("train@a", &["runs/a/model.safetensors"], Verdict::Identical),
                result("eval@a", &["runs/a"], Verdict::WithinTolerance),
                result("train@b", &["runs/b/logits.safetensors"], Verdict::Differs),
                result("train@g", &["runs/g"], Verdict::Identical),
                // A directory holding runs: it belongs to each of them.
                result("other", &["elsewhere"], Verdict::CouldNotRun),
            ],
        };
        let s = section(&runs, Some(("verified.json", &w)));
        assert_eq!((s.verified, s.identical, s.within, s.differ), (3, 1, 1, 1));
        let acc = s
            .tables
            .iter()
            .find(|t| t.table.starts_with("Accuracy"))
            .unwrap();
        let by = |id: &str| acc.runs.iter().find(|r| r.run == id).unwrap();
        assert_eq!(by("runs/a").verdict, "within tolerance 1e-6");
        assert_eq!(by("runs/a").stages, ["train@a", "eval@a"]);
        assert_eq!(
            by("runs/a").environment,
            "the same environment as the recorded run"
        );
        assert_eq!(by("runs/b").verdict, "differs");
        assert!(
            by("runs/b").detail.contains("byte 90"),
            "{:?}",
            by("runs/b")
        );
        assert_eq!(by("runs/n").verdict, "not verified");
        let g = s
            .tables
            .iter()
            .find(|t| t.table.starts_with("Gamma sweep"))
            .unwrap();
        assert_eq!(g.runs[0].verdict, "identical");
        assert!(
            s.summary.starts_with("3 of 4 run(s) were rerun"),
            "{}",
            s.summary
        );
    }

    #[test]
    fn the_report_renders_the_section_from_a_verify_file() {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/ws");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("verified.json");
        let w = Written {
            format: 1,
            stages: vec![result("train@cub", &["runs/cub"], Verdict::Differs)],
        };
        std::fs::write(&file, serde_json::to_string(&w).unwrap()).unwrap();
        let opts = |verified: Option<std::path::PathBuf>| crate::report::Options {
            workspace: ws.clone(),
            runs: vec!["runs/**/metrics.json".into()],
            published: None,
            templates: None,
            title: "t".into(),
            lock: None,
            revision: Some("r".into()),
            claims: None,
            verified,
            figures: crate::report::figures::Choice {
                dataset: None,
                model: None,
                modes: vec![3, 7],
            },
        };
        let r = crate::report::render(&opts(Some(file))).unwrap();
        let html = &r.html;
        let at = html
            .find("<h2 id=\"reproducibility\">")
            .expect("the section");
        let section = &html[at..html.find("<h2 id=\"provenance\">").unwrap()];
        assert!(section.contains("were rerun by repro verify"), "{section}");
        assert!(section.contains("<td>differs</td>"), "{section}");
        assert!(section.contains("byte 90"), "{section}");
        assert!(section.contains("<td>not verified</td>"), "{section}");
        assert!(r.tex.contains("\\section{Reproducibility}"), "LaTeX too");
        let none = crate::report::render(&opts(None)).unwrap();
        assert!(none.html.contains("Nothing was verified"));
    }
}
