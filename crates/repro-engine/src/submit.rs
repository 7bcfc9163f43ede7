//! `repro submit`: the engine itself as a small Slurm job, so that a long run survives the
//! user logging out. The job runs `repro run` with the same options in the same directory
//! (stages then go to Slurm as usual); its output goes to `cache/submit/<job id>.log`, and
//! `cache/submit/current.json` remembers the job so that `repro status` can say how it is
//! doing and a second `repro submit` is refused while it is queued or running.
//!
//! Two runs never share a workspace: the submitted engine takes the workspace lock like any
//! `repro run`. `submit` checks that lock and the recorded job (under `cache/submit/.lock`, so
//! two concurrent `submit`s cannot both pass the check) before it calls `sbatch`.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::executor::slurm::{self, SlurmOptions, is_active, sh_quote};

/// What `cache/submit/current.json` records about the last submitted run.
#[derive(Serialize, Deserialize)]
struct Record {
    job_id: u64,
    /// The engine's log, relative to the workspace.
    log: String,
    /// Seconds since the Unix epoch.
    submitted: u64,
    /// The `repro run` arguments the job runs with.
    args: Vec<String>,
}

fn submit_dir(root: &Path) -> PathBuf {
    root.join("cache").join("submit")
}

/// Submit `repro run <args>` as a Slurm job for the pipeline `file`; `args` are the options
/// given to `repro submit`, verbatim. `executor_given`: `--executor` is among them (else the
/// job's stages go to Slurm too, unless the pipeline says otherwise).
pub fn submit(
    file: &Path,
    load: &crate::spec::LoadOptions,
    args: &[String],
    executor_given: bool,
) -> Result<i32> {
    // Spec errors belong on the user's terminal, not in a log read later.
    let open = crate::session::Open {
        file,
        load,
        targets: &[],
        downstream: false,
        access: crate::session::Access::READ,
        up_to_date: crate::session::UpToDate::Ignore,
        interrupts: false,
    };
    let crate::session::Opened::Ready(session) =
        crate::session::Session::open(&open, &mut crate::progress::Phases::start())?
    else {
        unreachable!("the up-to-date record is not asked");
    };
    let p = session.p;
    let root = crate::spec::workspace_root(file);
    let root = root.canonicalize().unwrap_or(root);
    let dir = submit_dir(&root);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _guard = lock_exclusive(&dir.join(".lock"))?;
    let opts = SlurmOptions::from_settings(&p.slurm)
        .with_context(|| format!("{}: invalid `slurm:` settings", p.file.display()))?;

    if let Some(rec) = read_record(&root)
        && let Ok(Some(st)) = slurm::job_status(&opts, rec.job_id)
        && is_active(&st.state)
    {
        bail!(
            "a submitted run is still {}: Slurm job {} (log {}); wait for it, or cancel it \
             with `scancel {}`",
            st.state.to_lowercase(),
            rec.job_id,
            rec.log,
            rec.job_id
        );
    }
    // A local run holding the workspace would make the job fail at once: say it now.
    check_no_run(&root.join("cache").join("run.pid"))?;

    let mut run_args = args.to_vec();
    if !executor_given && p.executor.is_none() {
        run_args.extend(["--executor".to_string(), "slurm".to_string()]);
    }
    let exe = std::env::current_exe().context("cannot find the repro binary")?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let dir_text = dir.display().to_string();
    let mut sbatch = vec![
        "--parsable".to_string(),
        format!(
            "--job-name=repro-submit:{}",
            root.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ),
        format!("--chdir={}", cwd.display()),
        "--nodes=1".to_string(),
        "--ntasks=1".to_string(),
        "--cpus-per-task=1".to_string(),
        "--no-requeue".to_string(),
    ];
    // `%j` is Slurm's job id; a directory with its own `%` is redirected by the script.
    let in_script = dir_text.contains('%');
    sbatch.push(if in_script {
        "--output=/dev/null".to_string()
    } else {
        format!("--output={dir_text}/%j.log")
    });
    if let Some(part) = &opts.default_partition {
        sbatch.push(format!("--partition={part}"));
    }
    sbatch.extend(opts.extra_args.iter().cloned());

    let mut script = String::from(
        "#!/bin/sh\n# repro: the engine of `repro submit` as a Slurm job (safe to delete once it has ended).\n",
    );
    if in_script {
        script.push_str(&format!(
            "exec >{}/\"$SLURM_JOB_ID.log\" 2>&1\n",
            sh_quote(&dir_text)
        ));
    }
    script.push_str(&format!(
        "exec {} run",
        sh_quote(&exe.display().to_string())
    ));
    for a in &run_args {
        script.push(' ');
        script.push_str(&sh_quote(a));
    }
    script.push('\n');
    let script_path = dir.join("job.sh");
    crate::fsutil::write_atomic(&script_path, script.as_bytes())?;
    sbatch.push(script_path.display().to_string());

    let job_id = slurm::sbatch(&opts, &sbatch)?;
    let log = format!("cache/submit/{job_id}.log");
    let rec = Record {
        job_id,
        log: log.clone(),
        submitted: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        args: run_args.clone(),
    };
    crate::fsutil::write_atomic(
        &dir.join("current.json"),
        serde_json::to_string_pretty(&rec)?.as_bytes(),
    )?;
    println!(
        "submitted: Slurm job {job_id} runs `repro run {}`\n  log: {log}\n  `repro status` shows how it is doing; `scancel {job_id}` stops it",
        run_args.join(" ")
    );
    Ok(0)
}

/// Lines for `repro status` about the last submitted run, if there is one: its job, Slurm's
/// state and the last line of its log. Never fails: Slurm may be unreachable from here.
pub fn status_lines(file: &Path) -> Vec<String> {
    let root = crate::spec::workspace_root(file);
    let Some(rec) = read_record(&root) else {
        return Vec::new();
    };
    let opts = SlurmOptions {
        command_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let state = match slurm::job_status(&opts, rec.job_id) {
        Ok(Some(st)) => st.state,
        Ok(None) => "no longer known to Slurm".to_string(),
        Err(e) => {
            let why = format!("{e:#}");
            format!("state unknown: {}", why.lines().next().unwrap_or_default())
        }
    };
    let head = if is_active(&state) {
        format!(
            "submitted run in progress: Slurm job {} {state}",
            rec.job_id
        )
    } else {
        format!("last submitted run: Slurm job {} ({state})", rec.job_id)
    };
    let mut lines = vec![head, format!("  log: {}", rec.log)];
    let text = std::fs::read_to_string(root.join(&rec.log)).unwrap_or_default();
    if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
        lines.push(format!("  last: {}", last.trim()));
    }
    lines
}

fn read_record(root: &Path) -> Option<Record> {
    let text = std::fs::read_to_string(submit_dir(root).join("current.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Fail when a `repro run` holds the workspace lock (`cache/run.pid`, see
/// [`WorkspaceLock`](crate::state::workspace::WorkspaceLock)). Only probes the `flock`: the file, and
/// the pid of a killed run that the next run must notice, are left as they are.
fn check_no_run(pid_file: &Path) -> Result<()> {
    let Ok(f) = std::fs::File::open(pid_file) else {
        return Ok(()); // never run here
    };
    // SAFETY: flock on a descriptor we own; closing it releases the probe.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(pid_file).unwrap_or_default();
        bail!(
            "a `repro run` (pid {}) is using this workspace; wait for it to finish before \
             `repro submit`",
            holder.trim()
        );
    }
    Ok(())
}

/// An exclusive `flock` held until the file is dropped.
fn lock_exclusive(path: &Path) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("cannot lock {}", path.display());
    }
    Ok(f)
}
