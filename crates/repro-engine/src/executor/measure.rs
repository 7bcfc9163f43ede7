//! Measuring a stage's command next to it: the process that waits for the command (the local
//! supervisor, or `repro internal measure` in a Slurm job) accounts for it with `wait4` and
//! leaves a [`Usage`] record for the engine, which `trace` turns into the run trace. Part of
//! the executors (they wrap and wait for commands); it names nothing above them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What `repro internal measure` writes for the engine.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub(crate) struct Usage {
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

/// Where the wrapper of `stage` leaves its usage record.
pub(crate) fn usage_path(cache_dir: &Path, stage_file_name: &str) -> PathBuf {
    cache_dir
        .join("trace")
        .join(format!("{stage_file_name}.json"))
}

/// The argv that runs `argv` measured, writing to `usage`: for executors whose jobs have no
/// supervisor of ours around them (Slurm); the local executor's supervisor measures itself.
pub(crate) fn wrap(exe: &Path, usage: &Path, argv: Vec<String>) -> Vec<String> {
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
pub(crate) fn wait_measured(
    pid: libc::pid_t,
    start: Instant,
) -> std::io::Result<(libc::c_int, Usage)> {
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
pub(crate) fn write_usage(out: &Path, usage: &Usage) {
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
