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
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::executor::Outcome;
pub use crate::trace_file::{Entry, last_run, read};

/// What `repro internal measure` writes for the engine.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Usage {
    pub wall_s: f64,
    pub cpu_s: f64,
    /// Peak resident set size, KiB.
    pub max_rss_kb: u64,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal, when a signal ended it.
    pub signal: Option<i32>,
    /// `SLURM_JOB_ID` of the job it ran in, if any.
    pub slurm_job: Option<String>,
}

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

/// Where the wrapper of `stage` leaves its usage record.
pub fn usage_path(cache_dir: &Path, stage_file_name: &str) -> PathBuf {
    cache_dir
        .join("trace")
        .join(format!("{stage_file_name}.json"))
}

/// The argv that runs `argv` measured, writing to `usage`: for executors whose jobs have no
/// supervisor of ours around them (Slurm); the local executor's supervisor measures itself.
pub fn wrap(exe: &Path, usage: &Path, argv: Vec<String>) -> Vec<String> {
    let mut v = vec![
        exe.display().to_string(),
        "internal".into(),
        "measure".into(),
        usage.display().to_string(),
        "--".into(),
    ];
    v.extend(argv);
    v
}

const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// `repro internal measure OUT -- ARGV…` (Slurm jobs): run ARGV, write its [`Usage`] to OUT,
/// and end the way it ended (same exit code, or killed by the same signal).
pub fn measure(out: &Path, argv: &[String]) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let Some(program) = argv.first() else {
        anyhow::bail!("measure: no command given")
    };
    // Signals to the stage's process group reach the command directly; this process only
    // waits for it and then ends the same way, so it ignores them meanwhile.
    // SAFETY: setting dispositions in a single-threaded process before spawning.
    unsafe {
        for s in FORWARDED {
            libc::signal(s, libc::SIG_IGN);
        }
    }
    let start = Instant::now();
    let mut cmd = std::process::Command::new(program);
    cmd.args(&argv[1..]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for s in FORWARDED {
                libc::signal(s, libc::SIG_DFL);
            }
            // Dies with this wrapper, as the wrapper dies with the engine.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("repro: cannot start {program}: {e}");
            return Ok(127);
        }
    };
    let (_, usage) = wait_measured(child.id() as libc::pid_t, start)
        .context("measure: cannot wait for the stage")?;
    drop(child);
    write_usage(out, &usage);
    if let Some(sig) = usage.signal {
        // SAFETY: restore the default action and end by the same signal.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return Ok(128 + sig);
    }
    Ok(usage.exit_code.unwrap_or(1))
}

/// Wait for the child `pid` (started at `start`) with `wait4` and account for it: returns its
/// raw wait status and its [`Usage`].
pub fn wait_measured(pid: libc::pid_t, start: Instant) -> std::io::Result<(libc::c_int, Usage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let usage = Usage {
        wall_s: start.elapsed().as_secs_f64(),
        cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kb: ru.ru_maxrss.max(0) as u64,
        exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        slurm_job: std::env::var("SLURM_JOB_ID").ok(),
    };
    Ok((status, usage))
}

/// Leave `usage` at `out` for the engine. Not fatal: the stage's own result matters more than
/// its account.
pub fn write_usage(out: &Path, usage: &Usage) {
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let res = serde_json::to_vec(usage)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(out, bytes));
    if let Err(e) = res {
        eprintln!("repro: cannot write {}: {e}", out.display());
    }
}

/// Append the trace line of a finished stage run (engine side); the wrapper's usage file is
/// consumed. Failing to trace never fails the run: it is reported and the run goes on.
pub fn record(
    cache_dir: &Path,
    usage: &Path,
    stage: &crate::spec::Stage,
    key: &str,
    gpus: usize,
    wall_s: f64,
    outcome: &Outcome,
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
        crate::compare::render_table(&headers, &rows, crate::compare::Format::Text)
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
