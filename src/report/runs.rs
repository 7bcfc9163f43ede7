//! Finding and reading the evaluated runs: `metrics.json` (from `evaluate`) and `train.json`
//! (from `train`), each optional, in one directory per run.
//!
//! Every field is optional: a report is drawn from whatever the runs hold, and a field that is
//! absent (or `null`, as non-finite numbers are written) is shown as missing. A field that is
//! present with the wrong type is an error naming the file, because that is a producer bug,
//! not a missing result.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::names;

/// Accuracies and the optimal threshold, as `evaluate` writes them (percent).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct Acc {
    pub a_sw: Option<f64>,
    pub a_cw: Option<f64>,
    pub a_uni: Option<f64>,
    pub t_star: Option<f64>,
    pub t_star_interval: Option<Vec<Option<f64>>>,
}

impl Acc {
    /// A metric by its name in the published data (`a_sw`, `a_cw`, `a_uni`, `t_star`).
    pub fn get(&self, metric: &str) -> Option<f64> {
        match metric {
            "a_sw" => self.a_sw,
            "a_cw" => self.a_cw,
            "a_uni" => self.a_uni,
            "t_star" => self.t_star,
            _ => None,
        }
        .filter(|v| v.is_finite())
    }
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct Hist {
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    pub bins: Option<usize>,
    pub pos: Vec<f64>,
    pub neg: Vec<f64>,
}

/// Distribution of positive and negative metrics over the classes.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct Dist {
    pub min_pos: Vec<Option<f64>>,
    pub max_neg_type1: Vec<Option<f64>>,
    pub max_neg_type2: Vec<Option<f64>>,
    pub mean_min_pos: Option<f64>,
    pub std_min_pos: Option<f64>,
    pub mean_max_neg: Option<f64>,
    pub std_max_neg: Option<f64>,
    pub overlap: Option<Vec<Option<f64>>>,
    pub overlap_width: Option<f64>,
    pub hist: Option<Hist>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct Distribution {
    pub with_bias: Option<Dist>,
    pub without_bias: Option<Dist>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct OpenSetAt {
    pub name: Option<String>,
    pub threshold: Option<f64>,
    pub unknown_rejected: Option<f64>,
    pub known_accuracy: Option<f64>,
    pub known_accepted: Option<f64>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct OpenSet {
    pub known: Option<u64>,
    pub unknown: Option<u64>,
    pub at: Vec<OpenSetAt>,
    pub auroc: Option<f64>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct Metrics {
    /// Open-set figures (`evaluate` with `unknown_logits`).
    pub openset: Option<OpenSet>,
    pub n: Option<u64>,
    pub classes: Option<u64>,
    #[serde(flatten)]
    pub acc: Acc,
    pub ordering_holds: Option<bool>,
    pub non_finite_samples: Option<u64>,
    pub softmax: Option<Acc>,
    pub distribution: Option<Distribution>,
    pub bias: Option<Vec<Option<f64>>>,
    pub bias_init: Option<Vec<Option<f64>>>,
    pub run: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct Epoch {
    #[serde(deserialize_with = "lenient")]
    pub epoch: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub loss: Option<f64>,
    /// Steps taken in the epoch (skipped ones included).
    #[serde(default)]
    pub steps: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub seconds: Option<f64>,
}

/// A field of an unexpected type reads as missing: train.json is a log that grows fields over
/// time, and the report only shows it (the accuracies come from metrics.json).
fn lenient<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// `train.json`, as the `train` kind writes it; every field optional and lenient.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct Train {
    #[serde(deserialize_with = "lenient")]
    pub loss: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub model: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub gamma: Option<f64>,
    /// The diverse-bias initialisation mode (0–7, Section V-B).
    #[serde(deserialize_with = "lenient")]
    pub bias_mode: Option<serde_json::Value>,
    #[serde(deserialize_with = "lenient")]
    pub bias_init: Option<Vec<Option<f64>>>,
    #[serde(deserialize_with = "lenient")]
    pub bias_final: Option<Vec<Option<f64>>>,
    #[serde(deserialize_with = "lenient")]
    pub epochs: Option<Vec<Epoch>>,
    #[serde(deserialize_with = "lenient")]
    pub skipped_steps: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub diverged: Option<bool>,
    #[serde(deserialize_with = "lenient")]
    pub seed: Option<serde_json::Value>,
    #[serde(deserialize_with = "lenient")]
    pub device: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub numerics: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub libtorch: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub train_seconds: Option<f64>,
    /// The CPU's model name (train.json from this revision on; older runs: `None`).
    #[serde(deserialize_with = "lenient")]
    pub cpu_model: Option<String>,
    /// libtorch's CPU threads in the run.
    #[serde(deserialize_with = "lenient")]
    pub threads: Option<u64>,
}

/// What a run was for, which decides the tables it appears in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Pretrain,
    Finetune,
    GammaSweep,
    BiasInit,
    /// Trained on some classes only; evaluated with the unseen classes' images (`openset`).
    OpenSet,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_lowercase().replace('_', "-").as_str() {
            "pretrain" | "pre-train" | "pretraining" | "pre-training" => Some(Role::Pretrain),
            "finetune" | "fine-tune" | "train" | "" => Some(Role::Finetune),
            "gamma-sweep" | "gamma" => Some(Role::GammaSweep),
            "bias-init" | "bias-initialisation" | "bias-initialization" => Some(Role::BiasInit),
            "openset" | "open-set" => Some(Role::OpenSet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pretrain => "pretrain",
            Role::Finetune => "finetune",
            Role::GammaSweep => "gamma-sweep",
            Role::BiasInit => "bias-init",
            Role::OpenSet => "openset",
        }
    }
}

/// One evaluated (or at least trained) run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Directory relative to the workspace, `/`-separated; identifies the run in the report.
    pub id: String,
    pub metrics: Option<Metrics>,
    pub train: Option<Train>,
    /// Canonical names (see `names`); `None` where neither file says.
    pub dataset: Option<String>,
    pub model: Option<String>,
    pub loss: Option<String>,
    pub gamma: Option<f64>,
    pub role: Role,
    pub bias_init_mode: Option<u32>,
    pub seed: Option<String>,
    /// How the loss was evaluated: `stable` (softplus) or `direct` (log(1 + e^x) as written,
    /// fp32); `None` = not recorded (stable).
    pub numerics: Option<String>,
}

impl Run {
    pub fn diverged(&self) -> bool {
        self.train
            .as_ref()
            .and_then(|t| t.diverged)
            .unwrap_or(false)
    }

    /// Accuracies after the learned bias (`softmax = false`) or after SoftMax (`true`).
    pub fn acc(&self, softmax: bool) -> Option<&Acc> {
        let m = self.metrics.as_ref()?;
        if softmax {
            m.softmax.as_ref()
        } else {
            Some(&m.acc)
        }
    }

    /// Final learned biases: `metrics.bias`, else `train.bias_final`.
    pub fn bias_final(&self) -> Option<Vec<Option<f64>>> {
        self.metrics
            .as_ref()
            .and_then(|m| m.bias.clone())
            .or_else(|| self.train.as_ref().and_then(|t| t.bias_final.clone()))
            .filter(|b| !b.is_empty())
    }

    /// Initial biases: `train.bias_init`, else `metrics.bias_init`.
    pub fn bias_init(&self) -> Option<Vec<Option<f64>>> {
        self.train
            .as_ref()
            .and_then(|t| t.bias_init.clone())
            .or_else(|| self.metrics.as_ref().and_then(|m| m.bias_init.clone()))
            .filter(|b| !b.is_empty())
    }

    pub fn dist(&self, with_bias: bool) -> Option<&Dist> {
        let d = self.metrics.as_ref()?.distribution.as_ref()?;
        if with_bias {
            d.with_bias.as_ref()
        } else {
            d.without_bias.as_ref()
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let v = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not the JSON the report expects (fix or re-create the file)",
            path.display()
        )
    })?;
    Ok(Some(v))
}

fn run_str(m: Option<&Metrics>, key: &str) -> Option<String> {
    match m?.run.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn run_f64(m: Option<&Metrics>, key: &str) -> Option<f64> {
    match m?.run.get(key)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `3`, `"3"`, `"mode3"`, `"Mode 3"` → 3.
fn mode_number(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(|x| x as u32),
        serde_json::Value::String(s) => {
            let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        }
        _ => None,
    }
}

/// Read one run directory (`dir` absolute, `id` its workspace-relative name).
pub fn load_run(dir: &Path, id: String) -> Result<Run> {
    let metrics: Option<Metrics> = read_json(&dir.join("metrics.json"))?;
    let train: Option<Train> = read_json(&dir.join("train.json"))?;
    if metrics.is_none() && train.is_none() {
        bail!(
            "run directory {} holds neither metrics.json nor train.json (check the `runs:` entry)",
            dir.display()
        );
    }
    build(
        id,
        metrics,
        train,
        &dir.join("metrics.json").display().to_string(),
    )
}

/// One run of a snapshot (see [`snapshot`]): its id and the kept fields of its two files.
#[derive(serde::Serialize, Deserialize, Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub metrics: Option<serde_json::Value>,
    pub train: Option<serde_json::Value>,
}

/// Fields of `metrics.json` / `train.json` a snapshot drops: per-class arrays and histograms
/// (figures only) and the training log; everything the tables and claims read is kept.
const DROP_METRICS: &[&str] = &[
    "min_pos",
    "max_neg_type1",
    "max_neg_type2",
    "overlap",
    "hist",
];
const KEEP_TRAIN: &[&str] = &[
    "loss",
    "model",
    "gamma",
    "bias_mode",
    "bias_init",
    "bias_final",
    "diverged",
    "seed",
    "numerics",
    "device",
    "skipped_steps",
    "cpu_model",
    "threads",
];

/// A compact, re-loadable copy of the runs' results (the source of the Markdown summary), so
/// the summary can be re-rendered without the run directories.
pub fn snapshot(workspace: &Path, runs: &[Run]) -> Result<Vec<Snapshot>> {
    let read = |p: PathBuf| -> Result<Option<serde_json::Value>> { read_json(&p) };
    let mut out = Vec::new();
    for r in runs {
        let dir = workspace.join(&r.id);
        let mut metrics = read(dir.join("metrics.json"))?;
        if let Some(serde_json::Value::Object(m)) = &mut metrics
            && let Some(serde_json::Value::Object(d)) = m.get_mut("distribution")
        {
            for (name, side) in d.iter_mut() {
                if let serde_json::Value::Object(x) = side {
                    // The claim of Fig. 3 reads the per-class minimum positive and type II
                    // negative metrics without bias: those two lists stay.
                    let keep: &[&str] = if name == "without_bias" {
                        &["min_pos", "max_neg_type2"]
                    } else {
                        &[]
                    };
                    x.retain(|k, _| {
                        keep.contains(&k.as_str()) || !DROP_METRICS.contains(&k.as_str())
                    });
                }
            }
        }
        let mut train = read(dir.join("train.json"))?;
        if let Some(serde_json::Value::Object(t)) = &mut train {
            t.retain(|k, _| KEEP_TRAIN.contains(&k.as_str()));
        }
        out.push(Snapshot {
            id: r.id.clone(),
            metrics,
            train,
        });
    }
    Ok(out)
}

/// The runs of a snapshot; `name` is shown in errors.
pub fn from_snapshot(snap: &[Snapshot], name: &str) -> Result<Vec<Run>> {
    snap.iter()
        .map(|s| {
            let what = format!("{name}: run {}", s.id);
            let metrics: Option<Metrics> = s
                .metrics
                .clone()
                .map(serde_json::from_value)
                .transpose()
                .with_context(|| format!("{what}: metrics"))?;
            let train: Option<Train> = s
                .train
                .clone()
                .map(serde_json::from_value)
                .transpose()
                .with_context(|| format!("{what}: train"))?;
            build(s.id.clone(), metrics, train, &what)
        })
        .collect()
}

fn build(
    id: String,
    metrics: Option<Metrics>,
    train: Option<Train>,
    shown_as: &str,
) -> Result<Run> {
    let m = metrics.as_ref();
    let t = train.as_ref();
    let dataset = run_str(m, "dataset").map(|s| names::dataset(&s));
    let model = run_str(m, "model")
        .or_else(|| t.and_then(|t| t.model.clone()))
        .map(|s| names::model(&s));
    let loss = run_str(m, "loss")
        .or_else(|| t.and_then(|t| t.loss.clone()))
        .map(|s| names::loss(&s));
    let gamma = run_f64(m, "gamma").or_else(|| t.and_then(|t| t.gamma));
    let role_text = run_str(m, "role");
    let role = match role_text.as_deref() {
        None => Role::Finetune,
        Some(r) => Role::parse(r).with_context(|| {
            format!(
                "{shown_as}: run.role is '{r}'; expected pretrain, finetune, gamma-sweep or bias-init"
            )
        })?,
    };
    let bias_init_mode = m
        .and_then(|m| {
            ["bias_init_mode", "init_mode", "bias_init"]
                .iter()
                .find_map(|k| m.run.get(*k).and_then(mode_number))
        })
        .or_else(|| t.and_then(|t| t.bias_mode.as_ref()).and_then(mode_number));
    let seed = run_str(m, "seed").or_else(|| {
        t.and_then(|t| t.seed.as_ref()).map(|s| match s {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    });
    let numerics = run_str(m, "numerics").or_else(|| t.and_then(|t| t.numerics.clone()));
    Ok(Run {
        id,
        metrics,
        train,
        dataset,
        model,
        loss,
        gamma,
        role,
        bias_init_mode,
        seed,
        numerics,
    })
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

fn rel_id(workspace: &Path, dir: &Path) -> String {
    let rel = dir.strip_prefix(workspace).unwrap_or(dir);
    let parts: Vec<_> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            out.push(p.clone());
            walk(&p, out);
        } else if ft.is_file() {
            out.push(p);
        }
    }
}

/// Resolve the `runs:` entries (directories, files, or glob patterns, relative to the
/// workspace) to run directories, sorted and without duplicates.
pub fn resolve(workspace: &Path, patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut dirs = BTreeSet::new();
    for pat in patterns {
        if has_glob(pat) {
            let glob = globset::GlobBuilder::new(pat)
                .literal_separator(true)
                .build()
                .with_context(|| format!("runs: '{pat}' is not a valid glob pattern"))?
                .compile_matcher();
            // Walk only below the literal prefix of the pattern.
            let cut = pat.find(['*', '?', '[', '{']).unwrap_or(pat.len());
            let base = pat[..cut].rfind('/').map(|i| &pat[..i]).unwrap_or("");
            let root = workspace.join(base);
            let mut found = Vec::new();
            walk(&root, &mut found);
            for p in found {
                let rel = rel_id(workspace, &p);
                if !glob.is_match(&rel) {
                    continue;
                }
                if p.is_dir() {
                    if p.join("metrics.json").is_file() || p.join("train.json").is_file() {
                        dirs.insert(p);
                    }
                } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
                    && (name == "metrics.json" || name == "train.json")
                {
                    dirs.insert(p.parent().unwrap_or(workspace).to_path_buf());
                }
            }
        } else {
            let p = workspace.join(pat);
            if p.is_dir() {
                dirs.insert(p);
            } else if p.is_file() {
                dirs.insert(p.parent().unwrap_or(workspace).to_path_buf());
            } else {
                bail!(
                    "runs: '{pat}' does not exist (relative to the workspace {})",
                    workspace.display()
                );
            }
        }
    }
    Ok(dirs.into_iter().collect())
}

/// Resolve and read every run.
pub fn load(workspace: &Path, patterns: &[String]) -> Result<Vec<Run>> {
    resolve(workspace, patterns)?
        .into_iter()
        .map(|d| {
            let id = rel_id(workspace, &d);
            load_run(&d, id)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_partial_files_and_resolves_globs() {
        let ws = tempfile::tempdir().unwrap();
        let a = ws.path().join("runs/cub/bce-nu");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(
            a.join("metrics.json"),
            r#"{"a_sw": 80.5, "t_star": null, "run": {"dataset": "CUB", "loss": "bce_nu", "role": "bias-init", "bias_init": "mode3"}}"#,
        )
        .unwrap();
        let b = ws.path().join("runs/cub/soft-d");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            b.join("train.json"),
            r#"{"loss": "soft-d", "diverged": true}"#,
        )
        .unwrap();
        let runs = load(
            ws.path(),
            &["runs/**/metrics.json".into(), "runs/cub/soft-d".into()],
        )
        .unwrap();
        assert_eq!(runs.len(), 2);
        let r = &runs[0];
        assert_eq!(r.id, "runs/cub/bce-nu");
        assert_eq!(r.dataset.as_deref(), Some("cub"));
        assert_eq!(r.loss.as_deref(), Some("bce-nu"));
        assert_eq!(r.role, Role::BiasInit);
        assert_eq!(r.bias_init_mode, Some(3));
        assert_eq!(r.acc(false).unwrap().get("a_sw"), Some(80.5));
        assert_eq!(r.acc(false).unwrap().get("t_star"), None);
        assert!(runs[1].diverged() && runs[1].metrics.is_none());
    }

    #[test]
    fn train_json_fields_of_other_types_read_as_missing() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::write(
            ws.path().join("train.json"),
            r#"{"loss": "bce-nd", "bias_mode": 3, "params": {"lr": 0.1}, "epochs": "n/a", "gamma": "big", "bias_final": [1.0, null]}"#,
        )
        .unwrap();
        let r = &load(ws.path(), &[".".into()]).unwrap()[0];
        let t = r.train.as_ref().unwrap();
        assert_eq!((t.gamma, t.epochs.is_none()), (None, true));
        assert_eq!(r.bias_final(), Some(vec![Some(1.0), None]));
        assert_eq!(r.bias_init_mode, Some(3));
    }

    #[test]
    fn bad_input_names_the_file() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::write(ws.path().join("metrics.json"), r#"{"a_sw": "high"}"#).unwrap();
        let err = load(ws.path(), &[".".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("metrics.json"), "{err:#}");
        let err = load(ws.path(), &["nope".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("'nope' does not exist"));
    }
}
