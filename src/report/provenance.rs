//! Provenance of a report: git revision, `repro.lock` hash, libtorch versions, devices, seeds
//! and run times, all read from the workspace and the runs (no clock is read, so the report
//! stays a pure function of its inputs — and of the checkout, through the git revision).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::runs::Run;

#[derive(Serialize, Clone, Debug)]
pub struct RunInfo {
    pub id: String,
    pub dataset: Option<String>,
    pub model: Option<String>,
    pub loss: Option<String>,
    pub role: &'static str,
    pub gamma: Option<f64>,
    pub bias_init_mode: Option<u32>,
    pub seed: Option<String>,
    pub device: Option<String>,
    pub cpu_model: Option<String>,
    pub threads: Option<u64>,
    pub libtorch: Option<String>,
    pub train_seconds: Option<f64>,
    pub epochs: usize,
    pub skipped_steps: Option<u64>,
    pub diverged: bool,
    pub has_metrics: bool,
    pub has_train: bool,
    pub n: Option<u64>,
    pub non_finite_samples: Option<u64>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Provenance {
    pub revision: String,
    pub lock_path: Option<String>,
    pub lock_hash: Option<String>,
    pub libtorch: Vec<String>,
    pub devices: Vec<String>,
    /// The machines that trained the runs: CPU model, threads per run and device, with the
    /// number of runs each (see [`machines`]).
    pub machines: Vec<Machine>,
    pub published_source: String,
    pub total_train_seconds: Option<f64>,
    pub runs: Vec<RunInfo>,
}

/// `git rev-parse HEAD` in the workspace, or "unknown".
pub fn git_revision(workspace: &Path) -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// blake3 of the lock file; `explicit` makes a missing file an error.
pub fn lock_hash(path: &Path, explicit: bool) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(blake3::hash(&bytes).to_hex().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(e) => Err(e).with_context(|| {
            format!(
                "lock: cannot read {} (give the path of repro.lock, or leave `lock` out)",
                path.display()
            )
        }),
    }
}

/// One machine configuration that trained runs: the CPU model ("not recorded" for runs from
/// before it was), libtorch's threads per run and the device.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    pub threads: Option<u64>,
    pub device: Option<String>,
    pub runs: usize,
    /// "Intel(R) Xeon(R) Processor, 1 thread per run, cpu (157 runs)".
    pub text: String,
}

/// The distinct machine configurations of the runs with a train.json, most runs first. The
/// same seed gives numbers a little apart on another CPU (other SIMD kernels and summation
/// orders), so results quoted from a report name the CPU that produced them.
pub fn machines(runs: &[Run]) -> Vec<Machine> {
    let mut counts: std::collections::BTreeMap<(String, Option<u64>, Option<String>), usize> =
        Default::default();
    for t in runs.iter().filter_map(|r| r.train.as_ref()) {
        let cpu = t
            .cpu_model
            .clone()
            .unwrap_or_else(|| "CPU model not recorded".into());
        *counts
            .entry((cpu, t.threads, t.device.clone()))
            .or_default() += 1;
    }
    let mut out: Vec<Machine> = counts
        .into_iter()
        .map(|((cpu_model, threads, device), runs)| {
            let mut text = cpu_model.clone();
            if let Some(n) = threads {
                text.push_str(&format!(
                    ", {n} thread{} per run",
                    if n == 1 { "" } else { "s" }
                ));
            }
            if let Some(d) = &device {
                text.push_str(&format!(", {d}"));
            }
            text.push_str(&format!(
                " ({runs} run{})",
                if runs == 1 { "" } else { "s" }
            ));
            Machine {
                cpu_model,
                threads,
                device,
                runs,
                text,
            }
        })
        .collect();
    out.sort_by(|a, b| b.runs.cmp(&a.runs).then_with(|| a.text.cmp(&b.text)));
    out
}

fn distinct(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = it.collect();
    v.sort();
    v.dedup();
    v
}

pub fn collect(
    runs: &[Run],
    revision: String,
    lock_path: Option<String>,
    lock_hash: Option<String>,
    published_source: String,
) -> Provenance {
    let infos: Vec<RunInfo> = runs
        .iter()
        .map(|r| {
            let t = r.train.as_ref();
            RunInfo {
                id: r.id.clone(),
                dataset: r.dataset.clone(),
                model: r.model.clone(),
                loss: r.loss.clone(),
                role: r.role.as_str(),
                gamma: r.gamma,
                bias_init_mode: r.bias_init_mode,
                seed: r.seed.clone(),
                device: t.and_then(|t| t.device.clone()),
                cpu_model: t.and_then(|t| t.cpu_model.clone()),
                threads: t.and_then(|t| t.threads),
                libtorch: t.and_then(|t| t.libtorch.clone()),
                train_seconds: t.and_then(|t| t.train_seconds).filter(|s| s.is_finite()),
                epochs: t.and_then(|t| t.epochs.as_ref()).map_or(0, |e| e.len()),
                skipped_steps: t.and_then(|t| t.skipped_steps),
                diverged: r.diverged(),
                has_metrics: r.metrics.is_some(),
                has_train: t.is_some(),
                n: r.metrics.as_ref().and_then(|m| m.n),
                non_finite_samples: r.metrics.as_ref().and_then(|m| m.non_finite_samples),
            }
        })
        .collect();
    let secs: Vec<f64> = infos.iter().filter_map(|i| i.train_seconds).collect();
    Provenance {
        revision,
        lock_path,
        lock_hash,
        libtorch: distinct(infos.iter().filter_map(|i| i.libtorch.clone())),
        devices: distinct(infos.iter().filter_map(|i| i.device.clone())),
        machines: machines(runs),
        published_source,
        total_train_seconds: if secs.is_empty() {
            None
        } else {
            Some(secs.iter().sum())
        },
        runs: infos,
    }
}
