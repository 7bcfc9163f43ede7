//! The run trace: what every stage run cost, appended to `cache/trace.jsonl`; `repro trace`.
//!
//! The process that waits for a stage's command measures it: it waits with `wait4` and writes
//! the kernel's account of the command: wall time, CPU time (user + system) and peak resident
//! memory, each covering the whole process tree the command waited for. Locally that process
//! is the stage's supervisor (`repro internal supervise --usage FILE`, see
//! `executor::supervise`), so a stage runs under one wrapper, not two; a Slurm job runs
//! `repro internal measure` on its node, and the record carries the job id. Measuring next to
//! the stage, not in the engine, gives the same record for both executors without attributing
//! one stage's children to another. The engine then appends one JSON line per finished run:
//! the stage, its key, when it started, the figures, GPUs × wall time, how it ended, and where
//! it ran. Peak memory is the largest resident set of any one process of the tree (what
//! `getrusage` reports), not the sum of concurrent ones.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use crate::executor::Outcome;
// Measuring lives with the executors (they wrap and wait for commands); the command line and
// the run loop name it here.
pub(crate) use crate::executor::measure::{Usage, usage_path};
pub(crate) use crate::trace_file::Entry;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The id of this `repro run` invocation.
fn run_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(now_ms)
}

/// Append the trace line of a finished stage run (engine side); the wrapper's usage file is
/// consumed. Failing to trace never fails the run: it is reported and the run goes on.
// One call site (the runner's); a struct for the arguments would only repeat them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    cache_dir: &Path,
    usage: &Path,
    stage: &crate::spec::Stage,
    key: &str,
    gpus: usize,
    wall_s: f64,
    outcome: &Outcome,
    attempt: u32,
) {
    let measured: Option<Usage> = std::fs::read(usage)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let _ = std::fs::remove_file(usage);
    let wall = measured.as_ref().map_or(wall_s, |u| u.wall_s);
    let status = match (outcome, &measured) {
        (Outcome::Succeeded, _) => "ok".to_string(),
        (
            Outcome::Failed(_),
            Some(Usage {
                exit_code: Some(c), ..
            }),
        ) => format!("exit {c}"),
        (
            Outcome::Failed(_),
            Some(Usage {
                signal: Some(s), ..
            }),
        ) => format!("signal {s}"),
        (Outcome::Failed(why), _) => why.clone(),
    };
    let entry = Entry {
        run: run_id(),
        stage: stage.name.clone(),
        kind: Some(stage.action.kind.clone()),
        key: key.to_string(),
        started: now_ms().saturating_sub((wall_s * 1000.0) as u64),
        wall_s: wall,
        cpu_s: measured.as_ref().map(|u| u.cpu_s),
        max_rss_kb: measured.as_ref().map(|u| u.max_rss_kb),
        gpus,
        gpu_s: gpus as f64 * wall,
        status,
        executor: match measured.and_then(|u| u.slurm_job) {
            Some(id) => format!("slurm:{id}"),
            None => "local".into(),
        },
        // Under Slurm this is the submitting machine's; the stage's node is in its job.
        environment: Some(crate::environment::save(cache_dir)),
        attempt,
    };
    let path = cache_dir.join("trace.jsonl");
    let res = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        // One write per line, so concurrent appends cannot interleave within a line.
        f.write_all(format!("{}\n", serde_json::to_string(&entry)?).as_bytes())?;
        Ok(())
    })();
    if let Err(e) = res {
        eprintln!("warning: cannot append to {}: {e:#}", path.display());
    }
}

fn mem(kb: Option<u64>) -> String {
    match kb {
        None => "-".into(),
        Some(k) if k >= 1024 * 1024 => format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0),
        Some(k) if k >= 1024 => format!("{:.0} MiB", k as f64 / 1024.0),
        Some(k) => format!("{k} KiB"),
    }
}

/// `repro trace`: one line per stage run, then the totals.
pub fn print(entries: &[Entry]) {
    if entries.is_empty() {
        println!("no stage runs traced yet (repro run records them in cache/trace.jsonl)");
        return;
    }
    let headers: Vec<String> = [
        "stage",
        "started (UTC)",
        "wall",
        "cpu",
        "peak mem",
        "gpus",
        "status",
        "executor",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.stage.clone(),
                crate::trace_file::utc_seconds(e.started),
                format!("{:.2}s", e.wall_s),
                e.cpu_s.map_or("-".into(), |c| format!("{c:.2}s")),
                mem(e.max_rss_kb),
                e.gpus.to_string(),
                e.status.clone(),
                e.executor.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::ui::render_table(&headers, &rows, crate::ui::Format::Text)
    );
    let cpu: f64 = entries.iter().filter_map(|e| e.cpu_s).sum();
    let gpu: f64 = entries.iter().map(|e| e.gpu_s).sum();
    let wall: f64 = entries.iter().map(|e| e.wall_s).sum();
    println!(
        "{} stage runs: {:.2} stage-hours of wall time, {:.3} CPU-hours, {:.3} GPU-hours",
        entries.len(),
        wall / 3600.0,
        cpu / 3600.0,
        gpu / 3600.0
    );
}
