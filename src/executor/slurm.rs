//! The Slurm executor: each submitted stage becomes one Slurm batch job.
//!
//! `submit` writes a small `/bin/sh` batch script under the workspace's `cache/slurm/` (the
//! workspace is on a file system the nodes share) that `exec`s the stage's argv, and hands it
//! to `sbatch` with the stage's resources as options (`--cpus-per-task`, `--mem`, `--time`,
//! `--gres=gpu:N`, `--partition`). Slurm, not repro, picks the GPUs: the job's
//! `CUDA_VISIBLE_DEVICES` comes from its gres allocation. `poll` asks Slurm about *all* tracked
//! jobs with one `squeue` call, at most once per `poll_interval`; jobs that have already left
//! `squeue` are looked up with one `sacct` call. A job that ends in any state but `COMPLETED`
//! with exit code 0 finishes as [`Outcome::Failed`] carrying Slurm's state and reason (e.g.
//! `TIMEOUT (TimeLimit)`), so the engine records it as failed and reruns it next time.
//! Progress marker lines are relayed by tailing each job's log. `cancel_all` is one `scancel`.
//! Nothing here hashes, caches or records: the engine does that exactly as for local runs.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Event, Executor, Job, JobId, Outcome};
use crate::kinds::progress;

/// How the executor talks to Slurm; the defaults suit a cluster whose client tools are on
/// `PATH` and configured (`SLURM_CONF` or `/etc/slurm/slurm.conf`).
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// Least time between two state queries (`squeue`), whatever the engine's poll rate.
    pub poll_interval: Duration,
    /// Where batch scripts are written; default `<job cwd>/cache/slurm`. Must be visible to
    /// the compute nodes (it is, when the workspace is on the shared file system).
    pub script_dir: Option<PathBuf>,
    /// Partition for stages that declare none (a profile default).
    pub default_partition: Option<String>,
    /// Extra `sbatch` arguments for every job (e.g. `--account=ml`, `--qos=low`).
    pub extra_args: Vec<String>,
    /// Environment for the Slurm client commands (e.g. `SLURM_CONF`), on top of ours.
    pub client_env: Vec<(String, String)>,
    /// How long `cancel_all` waits for cancelled jobs to leave the running states.
    pub cancel_timeout: Duration,
    /// How long Slurm may stay unreachable (failing `squeue`) before `poll` gives up.
    pub unreachable_timeout: Duration,
    /// Longest time one client command (`sbatch`, `squeue`, …) may take before it is killed.
    pub command_timeout: Duration,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            poll_interval: Duration::from_secs(1),
            script_dir: None,
            default_partition: None,
            extra_args: Vec::new(),
            client_env: Vec::new(),
            cancel_timeout: Duration::from_secs(60),
            unreachable_timeout: Duration::from_secs(120),
            command_timeout: Duration::from_secs(60),
        }
    }
}

impl SlurmOptions {
    /// Options from a pipeline's (or profile's) `slurm:` block, e.g.
    /// `{partition: gpu, account: ml, qos: low, sbatch_args: ["--constraint=a100"],
    /// poll_seconds: 2}`. `null` (no block) gives the defaults. Unknown keys are errors, so a
    /// typo does not silently submit to the wrong place.
    pub fn from_settings(settings: &serde_json::Value) -> Result<SlurmOptions> {
        const KNOWN: &str = "partition, account, qos, sbatch_args, poll_seconds";
        let mut opts = SlurmOptions::default();
        let map = match settings {
            serde_json::Value::Null => return Ok(opts),
            serde_json::Value::Object(m) => m,
            other => bail!("`slurm:` must be a mapping ({KNOWN}), not {other}"),
        };
        let text = |key: &str, v: &serde_json::Value| -> Result<String> {
            match v {
                serde_json::Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                _ => bail!("`slurm: {{{key}: …}}` must be a non-empty string, not {v}"),
            }
        };
        for (key, v) in map {
            match key.as_str() {
                "partition" => opts.default_partition = Some(text(key, v)?),
                "account" => opts.extra_args.push(format!("--account={}", text(key, v)?)),
                "qos" => opts.extra_args.push(format!("--qos={}", text(key, v)?)),
                "sbatch_args" => {
                    let items = v.as_array().with_context(|| {
                        format!("`slurm: {{sbatch_args: …}}` must be a list of strings, not {v}")
                    })?;
                    for item in items {
                        opts.extra_args.push(text("sbatch_args", item)?);
                    }
                }
                "poll_seconds" => {
                    let secs = v.as_f64().filter(|s| *s >= 0.1 && *s <= 3600.0).with_context(|| {
                        format!("`slurm: {{poll_seconds: …}}` must be a number from 0.1 to 3600, not {v}")
                    })?;
                    opts.poll_interval = Duration::from_secs_f64(secs);
                }
                other => bail!("unknown key `{other}` under `slurm:` (known: {KNOWN})"),
            }
        }
        Ok(opts)
    }
}

/// One job the executor submitted and has not yet reported finished.
struct Tracked {
    id: JobId,
    slurm_id: u64,
    stage: String,
    /// The stage's log, which the executor writes: the job's output minus progress markers.
    log: PathBuf,
    log_file: Option<fs::File>,
    /// Where Slurm writes the job's stdout and stderr (`--output`), next to the script.
    raw: PathBuf,
    /// Bytes of `raw` already relayed.
    raw_offset: u64,
    script: PathBuf,
    time_min: Option<u64>,
    /// Last state and reason seen, to report changes (queued → running) once.
    last_seen: Option<(String, String)>,
    /// Polls in which neither squeue nor sacct knew the job.
    unknown_polls: u32,
}

/// Runs stages as Slurm batch jobs. See the module documentation.
pub struct SlurmExecutor {
    opts: SlurmOptions,
    jobs: Vec<Tracked>,
    next_query: Instant,
    /// When `squeue` started failing, if it is failing now.
    failing_since: Option<Instant>,
    queries: usize,
    submits: usize,
}

/// What Slurm says about one job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobStatus {
    pub slurm_id: u64,
    /// Slurm's state name, e.g. `PENDING`, `RUNNING`, `COMPLETED`, `TIMEOUT`.
    pub state: String,
    /// Slurm's reason, e.g. `Resources`, `TimeLimit`, `NonZeroExitCode` (`None` → empty).
    pub reason: String,
    pub nodes: String,
    pub exit: Option<ExitStatus>,
}

/// How a finished job's batch script ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl SlurmExecutor {
    /// An executor; checks that the Slurm controller answers (`scontrol ping`), so that a
    /// missing or unconfigured Slurm is reported before anything is submitted.
    pub fn new(opts: SlurmOptions) -> Result<Self> {
        // Slurm's tools retry a missing slurm.conf for a minute before failing; say it now.
        let conf = slurm_conf_shown(&opts);
        if conf != "unset" && !Path::new(&conf).is_file() {
            bail!(
                "SLURM_CONF is {conf}, which does not exist. Point SLURM_CONF at your \
                 cluster's slurm.conf or, for a test cluster on this machine, run \
                 `eval \"$(scripts/slurm-up.sh)\"`"
            );
        }
        let out = run_client(&opts, "scontrol", &["ping".to_string()])?;
        if !out.ok || !out.stdout.contains("UP") {
            bail!(
                "the Slurm controller does not answer (`scontrol ping`: {}). Check SLURM_CONF \
                 (currently {}) or, for a test cluster on this machine, run \
                 `eval \"$(scripts/slurm-up.sh)\"`",
                out.summary(),
                slurm_conf_shown(&opts)
            );
        }
        Ok(SlurmExecutor {
            opts,
            jobs: Vec::new(),
            next_query: Instant::now(),
            failing_since: None,
            queries: 0,
            submits: 0,
        })
    }

    /// Number of state queries (`squeue`/`sacct` calls) made so far; one per poll interval at
    /// most, however many jobs are tracked.
    pub fn queries(&self) -> usize {
        self.queries
    }

    /// Number of `sbatch` calls made so far.
    pub fn submits(&self) -> usize {
        self.submits
    }

    /// Slurm's job id for an engine job that is still tracked.
    pub fn slurm_id(&self, id: JobId) -> Option<u64> {
        self.jobs.iter().find(|t| t.id == id).map(|t| t.slurm_id)
    }

    fn script_dir(&self, job: &Job) -> PathBuf {
        match &self.opts.script_dir {
            Some(d) if d.is_absolute() => d.clone(),
            Some(d) => job.cwd.join(d),
            None => job.cwd.join("cache").join("slurm"),
        }
    }

    /// Scan each job's log for new progress marker lines.
    fn tail_logs(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        for t in &mut self.jobs {
            tail_one(t, &mut events, false);
        }
        events
    }

    /// One batched state query for every tracked job; returns the finished ones' events.
    fn query(&mut self) -> Result<Vec<Event>> {
        let ids: Vec<u64> = self.jobs.iter().map(|t| t.slurm_id).collect();
        self.queries += 1;
        let statuses = match squeue(&self.opts, &ids) {
            Ok(s) => {
                self.failing_since = None;
                s
            }
            Err(e) => {
                // A busy controller times out now and then; only a long outage is an error.
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.opts.unreachable_timeout {
                    return Err(e.context(format!(
                        "Slurm has not answered for {} s; {} job(s) may still be running \
                         (see `squeue --me`)",
                        since.elapsed().as_secs(),
                        self.jobs.len()
                    )));
                }
                return Ok(Vec::new());
            }
        };
        let mut by_id: HashMap<u64, JobStatus> =
            statuses.into_iter().map(|s| (s.slurm_id, s)).collect();

        // Jobs squeue no longer lists (purged after MinJobAge): ask the accounting records.
        let missing: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|i| !by_id.contains_key(i))
            .collect();
        if !missing.is_empty() {
            self.queries += 1;
            for s in sacct(&self.opts, &missing) {
                by_id.entry(s.slurm_id).or_insert(s);
            }
        }

        let mut events = Vec::new();
        let mut done = Vec::new();
        for (i, t) in self.jobs.iter_mut().enumerate() {
            let Some(status) = by_id.get(&t.slurm_id) else {
                t.unknown_polls += 1;
                if t.unknown_polls >= 3 {
                    tail_one(t, &mut events, true);
                    events.push(Event::Finished {
                        id: t.id,
                        outcome: Outcome::Failed(format!(
                            "Slurm: job {} vanished (neither squeue nor sacct knows it); \
                             see its log {}",
                            t.slurm_id,
                            t.log.display()
                        )),
                    });
                    done.push(i);
                }
                continue;
            };
            t.unknown_polls = 0;
            match outcome_of(status, t.time_min) {
                None => {
                    let seen = (status.state.clone(), status.reason.clone());
                    if t.last_seen.as_ref() != Some(&seen) {
                        events.push(Event::Progress {
                            id: t.id,
                            message: describe_active(status),
                            fraction: None,
                        });
                        t.last_seen = Some(seen);
                    }
                }
                Some(outcome) => {
                    tail_one(t, &mut events, true);
                    let _ = fs::remove_file(&t.raw); // all of it is in the stage's log now
                    if outcome == Outcome::Succeeded {
                        // Kept on failure, for debugging; `cache/slurm` is safe to delete.
                        let _ = fs::remove_file(&t.script);
                    }
                    events.push(Event::Finished { id: t.id, outcome });
                    done.push(i);
                }
            }
        }
        for i in done.into_iter().rev() {
            self.jobs.swap_remove(i);
        }
        Ok(events)
    }
}

impl Executor for SlurmExecutor {
    fn submit(&mut self, job: Job) -> Result<()> {
        let log = if job.log.is_absolute() {
            job.log.clone()
        } else {
            job.cwd.join(&job.log)
        };
        if let Some(parent) = log.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("creating the log directory {}", parent.display()))?;
        }
        let dir = self.script_dir(&job);
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating the Slurm script directory {}", dir.display()))?;
        let stem = format!("{}-{}-{}", sanitize(&job.stage), job.id, std::process::id());
        let script = dir.join(format!("{stem}.sh"));
        let raw = dir.join(format!("{stem}.out"));
        let args = sbatch_args(&job, &raw, &self.opts);
        let text = batch_script(&job, &raw, &args)?;
        write_atomic(&script, text.as_bytes())?;
        // Like a local run, the log starts empty when the stage is started.
        let log_file = fs::File::create(&log)
            .with_context(|| format!("creating the stage log {}", log.display()))?;
        let _ = fs::remove_file(&raw);

        let mut argv = args;
        argv.push(script.display().to_string());
        self.submits += 1;
        let out = retry_transient(|| run_client(&self.opts, "sbatch", &argv))?;
        if !out.ok {
            let _ = fs::remove_file(&script);
            bail!(
                "stage '{}': Slurm refused the job (sbatch {}): {}{}",
                job.stage,
                argv.join(" "),
                out.summary(),
                hint_for(&out.stderr, &self.opts)
            );
        }
        // `--parsable` prints `id` or `id;cluster`.
        let first = out.stdout.trim().split(';').next().unwrap_or("");
        let slurm_id: u64 = first.parse().with_context(|| {
            format!(
                "stage '{}': unexpected sbatch output {:?}",
                job.stage,
                out.stdout.trim()
            )
        })?;
        self.jobs.push(Tracked {
            id: job.id,
            slurm_id,
            stage: job.stage.clone(),
            log,
            log_file: Some(log_file),
            raw,
            raw_offset: 0,
            script,
            time_min: job.resources.time_min,
            last_seen: None,
            unknown_polls: 0,
        });
        Ok(())
    }

    fn poll(&mut self, timeout: Duration) -> Result<Vec<Event>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.jobs.is_empty() {
                return Ok(Vec::new());
            }
            let mut events = self.tail_logs();
            if Instant::now() >= self.next_query {
                events.extend(self.query()?);
                self.next_query = Instant::now() + self.opts.poll_interval;
            }
            let now = Instant::now();
            if !events.is_empty() || now >= deadline {
                return Ok(events);
            }
            // Wake for the next query, the deadline, or a log check, whichever comes first.
            let wait = (deadline - now)
                .min(self.next_query.saturating_duration_since(now))
                .min(Duration::from_millis(200));
            thread::sleep(wait.max(Duration::from_millis(5)));
        }
    }

    fn cancel_all(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        let ids: Vec<u64> = self.jobs.iter().map(|t| t.slurm_id).collect();
        let list = join_ids(&ids);
        match run_client(&self.opts, "scancel", std::slice::from_ref(&list)) {
            Ok(out) if !out.ok => {
                eprintln!("repro: scancel {list} failed: {}", out.summary());
            }
            Err(e) => eprintln!("repro: scancel {list} failed: {e:#}"),
            Ok(_) => {}
        }
        // Wait until none of them is still pending, running or completing.
        let deadline = Instant::now() + self.opts.cancel_timeout;
        loop {
            match squeue(&self.opts, &ids) {
                Ok(statuses) if statuses.iter().all(|s| !is_active(&s.state)) => break,
                _ if Instant::now() >= deadline => {
                    eprintln!(
                        "repro: Slurm jobs {list} were cancelled but had not ended after {} s",
                        self.opts.cancel_timeout.as_secs()
                    );
                    break;
                }
                _ => thread::sleep(Duration::from_millis(250)),
            }
        }
        let mut ignored = Vec::new();
        for t in &mut self.jobs {
            tail_one(t, &mut ignored, true);
            eprintln!(
                "repro: cancelled Slurm job {} (stage '{}')",
                t.slurm_id, t.stage
            );
        }
        self.jobs.clear();
    }

    fn running(&self) -> usize {
        self.jobs.len()
    }
}

impl Drop for SlurmExecutor {
    /// Jobs still tracked when the executor goes away (the engine returned early on an error)
    /// would run on with nobody to record their outputs: cancel them.
    fn drop(&mut self) {
        if !self.jobs.is_empty() {
            self.cancel_all();
        }
    }
}

/// `sbatch` options for a job (everything but the script path); `log` is the file Slurm
/// writes the job's stdout and stderr to.
pub fn sbatch_args(job: &Job, log: &Path, opts: &SlurmOptions) -> Vec<String> {
    let r = &job.resources;
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name=repro:{}", job.stage),
        format!("--chdir={}", job.cwd.display()),
        "--nodes=1".to_string(),
        "--ntasks=1".to_string(),
        format!("--cpus-per-task={}", r.cpus.max(1)),
        // A preempted or failed job is reported and rerun by the next `repro run` (resuming
        // from its checkpoint directory), not silently requeued behind the engine's back.
        "--no-requeue".to_string(),
        "--open-mode=truncate".to_string(),
    ];
    // `%` in --output is a Slurm pattern; such logs are redirected by the script instead.
    let log_text = log.display().to_string();
    if log_text.contains('%') {
        a.push("--output=/dev/null".to_string());
    } else {
        a.push(format!("--output={log_text}"));
    }
    if r.gpus > 0 {
        a.push(format!("--gres=gpu:{}", r.gpus));
    }
    if let Some(mb) = r.mem_mb {
        a.push(format!("--mem={mb}M"));
    }
    if let Some(min) = r.time_min {
        a.push(format!("--time={}", min.max(1)));
    }
    if let Some(p) = r.partition.as_ref().or(opts.default_partition.as_ref()) {
        a.push(format!("--partition={p}"));
    }
    a.extend(opts.extra_args.iter().cloned());
    a
}

/// The batch script: exports the job's environment and `exec`s its argv, all quoted for sh;
/// `log` as for [`sbatch_args`].
pub fn batch_script(job: &Job, log: &Path, sbatch_args: &[String]) -> Result<String> {
    if job.argv.is_empty() {
        bail!("stage '{}': nothing to run (empty command)", job.stage);
    }
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str(&format!(
        "# repro: Slurm batch job for stage {} (safe to delete once it has ended).\n",
        sh_quote(&job.stage)
    ));
    s.push_str("# Submitted as: sbatch");
    for a in sbatch_args {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s.push_str(" <this script>\n");
    let log_text = log.display().to_string();
    if log_text.contains('%') {
        s.push_str(&format!("exec >{} 2>&1\n", sh_quote(&log_text)));
    }
    if job.resources.gpus == 0 {
        // Devices named on the submitting machine mean nothing here; Slurm sets this variable
        // itself for jobs that asked for GPUs.
        s.push_str("unset CUDA_VISIBLE_DEVICES\n");
    }
    for (k, v) in &job.env {
        if k == "CUDA_VISIBLE_DEVICES" {
            continue; // Slurm's gres allocation decides.
        }
        if k.is_empty()
            || k.starts_with(|c: char| c.is_ascii_digit())
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            bail!(
                "stage '{}': environment variable name {k:?} is not valid in a shell",
                job.stage
            );
        }
        s.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    s.push_str("exec");
    for a in &job.argv {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s.push('\n');
    Ok(s)
}

/// Quote a word for a POSIX shell: bare when it is plainly safe, else single-quoted.
pub fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A stage name made safe for a file name.
fn sanitize(stage: &str) -> String {
    let s: String = stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if s.is_empty() { "stage".to_string() } else { s }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// States in which a job has not ended yet.
pub fn is_active(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "CONFIGURING"
            | "RUNNING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "REQUEUE_FED"
            | "REQUEUE_HOLD"
            | "RESIZING"
            | "SIGNALING"
            | "STAGE_OUT"
            | "STOPPED"
            | "RESV_DEL_HOLD"
    )
}

/// `None` while the job has not ended; else how it ended, in Slurm's words.
pub fn outcome_of(s: &JobStatus, time_min: Option<u64>) -> Option<Outcome> {
    if is_active(&s.state) {
        return None;
    }
    if s.state == "COMPLETED" && matches!(s.exit, Some(ExitStatus::Code(0)) | None) {
        return Some(Outcome::Succeeded);
    }
    let mut msg = format!("Slurm: {}", s.state);
    if !s.reason.is_empty() && s.reason != "None" {
        msg.push_str(&format!(" ({})", s.reason));
    }
    msg.push_str(&format!(", job {}", s.slurm_id));
    match (s.state.as_str(), time_min) {
        ("TIMEOUT", Some(m)) => msg.push_str(&format!(
            "; it ran past its time limit of {m} min (raise `resources: {{time: …}}`)"
        )),
        ("OUT_OF_MEMORY", _) => {
            msg.push_str("; it ran out of memory (raise `resources: {mem: …}`)")
        }
        ("PREEMPTED" | "NODE_FAIL" | "BOOT_FAIL", _) => {
            msg.push_str("; it will rerun (and resume from its checkpoint) on the next `repro run`")
        }
        _ => match s.exit {
            Some(ExitStatus::Code(c)) if c != 0 => msg.push_str(&format!("; exit code {c}")),
            Some(ExitStatus::Signal(sig)) => msg.push_str(&format!("; killed by signal {sig}")),
            _ => {}
        },
    }
    Some(Outcome::Failed(msg))
}

fn describe_active(s: &JobStatus) -> String {
    let mut m = format!("slurm job {} {}", s.slurm_id, s.state.to_lowercase());
    if s.state == "PENDING" && !s.reason.is_empty() && s.reason != "None" {
        m.push_str(&format!(" ({})", s.reason));
    } else if !s.nodes.is_empty() && s.state == "RUNNING" {
        m.push_str(&format!(" on {}", s.nodes));
    }
    m
}

/// Relay new output of a job to its stage log, progress markers becoming events instead (as
/// the local executor does). Only whole lines until the job has ended (`last`).
fn tail_one(t: &mut Tracked, events: &mut Vec<Event>, last: bool) {
    let Ok(mut f) = fs::File::open(&t.raw) else {
        return;
    };
    if f.seek(SeekFrom::Start(t.raw_offset)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
        return;
    }
    let end = if last {
        buf.len()
    } else {
        match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => return, // a partial line: read again next time
        }
    };
    t.raw_offset += end as u64;
    let mut plain = Vec::with_capacity(end);
    for line in buf[..end].split_inclusive(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        match progress::parse(text.trim_end_matches(['\n', '\r'])) {
            Some((message, fraction)) => events.push(Event::Progress {
                id: t.id,
                message,
                fraction,
            }),
            None => plain.extend_from_slice(line),
        }
    }
    if let Some(log) = t.log_file.as_mut()
        && !plain.is_empty()
        && log.write_all(&plain).is_err()
    {
        eprintln!("repro: cannot write the log {}", t.log.display());
        t.log_file = None;
    }
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// One `squeue` call for many jobs, finished ones included (they stay for `MinJobAge`).
fn squeue(opts: &SlurmOptions, ids: &[u64]) -> Result<Vec<JobStatus>> {
    let args = [
        "--noheader".to_string(),
        "--states=all".to_string(),
        format!("--jobs={}", join_ids(ids)),
        "--Format=JobID:|,State:|,Reason:|,exit_code:|,NodeList:|".to_string(),
    ];
    let out = run_client(opts, "squeue", &args)?;
    if !out.ok {
        // squeue fails outright when *none* of the ids is known any more.
        if out.stderr.contains("Invalid job id") {
            return Ok(Vec::new());
        }
        bail!("squeue failed: {}", out.summary());
    }
    Ok(parse_squeue(&out.stdout))
}

/// Parse `squeue --Format=JobID:|,State:|,Reason:|,exit_code:|,NodeList:|` output.
pub fn parse_squeue(text: &str) -> Vec<JobStatus> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('|').map(str::trim).collect();
            if f.len() < 4 {
                return None;
            }
            let slurm_id = f[0].parse().ok()?;
            // exit_code is the raw wait status of the batch script.
            let exit = f[3].parse::<i32>().ok().map(|w| {
                if w & 0x7f != 0 {
                    ExitStatus::Signal(w & 0x7f)
                } else {
                    ExitStatus::Code(w >> 8)
                }
            });
            Some(JobStatus {
                slurm_id,
                state: f[1].to_string(),
                reason: f[2].to_string(),
                nodes: f.get(4).map(|s| s.to_string()).unwrap_or_default(),
                exit,
            })
        })
        .collect()
}

/// Final states from the accounting records (slurmdbd), or from the job completion log
/// (`sacct -c`, clusters without slurmdbd). Empty when neither knows the jobs. `poll` uses it
/// for jobs that have left `squeue`.
pub fn sacct(opts: &SlurmOptions, ids: &[u64]) -> Vec<JobStatus> {
    let list = join_ids(ids);
    let attempts: [&[&str]; 2] = [
        &[
            "--noheader",
            "--parsable2",
            "--allocations",
            "--format=JobIDRaw,State,ExitCode,Reason",
        ],
        &[
            "--completion",
            "--noheader",
            "--parsable2",
            "--format=JobID,State,ExitCode",
        ],
    ];
    for base in attempts {
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        args.push(format!("--jobs={list}"));
        if let Ok(out) = run_client(opts, "sacct", &args)
            && out.ok
        {
            let found = parse_sacct(&out.stdout);
            if !found.is_empty() {
                return found;
            }
        }
    }
    Vec::new()
}

/// Parse `sacct --parsable2` lines `id|STATE[ by uid]|exit:signal[|reason]`.
pub fn parse_sacct(text: &str) -> Vec<JobStatus> {
    let mut seen = HashSet::new();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            if f.len() < 3 {
                return None;
            }
            let slurm_id: u64 = f[0].trim().parse().ok()?; // skips steps like `12.batch`
            let state = f[1].split_whitespace().next()?.to_string();
            let exit = f[2].split_once(':').and_then(|(c, s)| {
                let (c, s) = (c.parse::<i32>().ok()?, s.parse::<i32>().ok()?);
                Some(if s != 0 {
                    ExitStatus::Signal(s)
                } else {
                    ExitStatus::Code(c)
                })
            });
            let reason = f.get(3).map(|r| r.trim().to_string()).unwrap_or_default();
            seen.insert(slurm_id).then_some(JobStatus {
                slurm_id,
                state,
                reason,
                nodes: String::new(),
                exit,
            })
        })
        .collect()
}

/// Output of one Slurm client command.
struct ClientOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl ClientOutput {
    fn summary(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let text = text.trim();
        if text.is_empty() {
            "no output".to_string()
        } else {
            text.to_string()
        }
    }
}

fn run_client(opts: &SlurmOptions, program: &str, args: &[String]) -> Result<ClientOutput> {
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .envs(opts.client_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "`{program}` not found on PATH: the Slurm executor needs Slurm's client \
                     tools (Debian: apt-get install slurm-client)"
                )
            } else {
                anyhow::anyhow!("running `{program}`: {e}")
            }
        })?;
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out_reader = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_reader = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    // A client command can hang (e.g. retrying an unreadable slurm.conf for a minute).
    let deadline = Instant::now() + opts.command_timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{program}`"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{program} {}` did not finish within {} s",
                args.join(" "),
                opts.command_timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(ClientOutput {
        ok: status.success(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Retry a client call a few times when Slurm says it is busy.
fn retry_transient(mut f: impl FnMut() -> Result<ClientOutput>) -> Result<ClientOutput> {
    let mut delay = Duration::from_millis(500);
    for _ in 0..4 {
        let out = f()?;
        let busy = !out.ok && {
            let e = out.stderr.to_lowercase();
            e.contains("temporarily unavailable")
                || e.contains("timed out")
                || e.contains("try again")
                || e.contains("unable to contact slurm controller")
        };
        if !busy {
            return Ok(out);
        }
        thread::sleep(delay);
        delay *= 2;
    }
    f()
}

fn slurm_conf_shown(opts: &SlurmOptions) -> String {
    opts.client_env
        .iter()
        .find(|(k, _)| k == "SLURM_CONF")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("SLURM_CONF").ok())
        .unwrap_or_else(|| "unset".to_string())
}

fn hint_for(stderr: &str, opts: &SlurmOptions) -> String {
    let e = stderr.to_lowercase();
    if e.contains("configuration") && (e.contains("establish") || e.contains("fetch")) {
        format!(
            " (Slurm is not configured here: SLURM_CONF is {}; for a test cluster run \
             `eval \"$(scripts/slurm-up.sh)\"`)",
            slurm_conf_shown(opts)
        )
    } else if e.contains("partition") {
        " (check `resources: {partition: …}` against `sinfo`)".to_string()
    } else if e.contains("requested node configuration is not available") {
        " (no node has that many CPUs, GPUs or that much memory; compare `resources:` with \
         `sinfo -o '%P %c %m %G'`)"
            .to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Resources;

    fn job() -> Job {
        Job {
            id: 7,
            stage: "train@bce nu".to_string(),
            argv: vec![
                "/opt/repro".into(),
                "internal".into(),
                "it's \"quoted\" $HOME".into(),
            ],
            env: vec![
                ("REPRO_X".into(), "a b".into()),
                ("CUDA_VISIBLE_DEVICES".into(), "3".into()),
            ],
            cwd: PathBuf::from("/ws"),
            log: PathBuf::from("/ws/logs/train.log"),
            resources: Resources {
                cpus: 4,
                gpus: 2,
                mem_mb: Some(2048),
                time_min: Some(90),
                time_s: Some(5400),
                partition: Some("gpu".into()),
            },
            gpus: vec![],
        }
    }

    #[test]
    fn resources_become_sbatch_options() {
        let j = job();
        let opts = SlurmOptions {
            default_partition: Some("cpu".into()),
            extra_args: vec!["--account=ml".into()],
            ..Default::default()
        };
        let a = sbatch_args(&j, &j.log, &opts);
        for want in [
            "--job-name=repro:train@bce nu",
            "--chdir=/ws",
            "--cpus-per-task=4",
            "--gres=gpu:2",
            "--mem=2048M",
            "--time=90",
            "--partition=gpu",
            "--output=/ws/logs/train.log",
            "--no-requeue",
            "--account=ml",
        ] {
            assert!(a.iter().any(|x| x == want), "missing {want} in {a:?}");
        }
        // Without a stage partition, the default applies; without GPUs, no gres.
        let mut cpu = job();
        cpu.resources = Resources {
            cpus: 0,
            ..Default::default()
        };
        let a = sbatch_args(&cpu, &cpu.log, &opts);
        assert!(a.contains(&"--partition=cpu".to_string()));
        assert!(a.contains(&"--cpus-per-task=1".to_string()));
        assert!(
            !a.iter()
                .any(|x| x.starts_with("--gres") || x.starts_with("--mem"))
        );
    }

    #[test]
    fn script_execs_argv_verbatim_through_sh() {
        let j = job();
        let text = batch_script(&j, &j.log, &[]).unwrap();
        assert!(
            !text.contains("CUDA_VISIBLE_DEVICES=3"),
            "Slurm assigns GPUs:\n{text}"
        );
        let exec_line = text.lines().find(|l| l.starts_with("exec ")).unwrap();
        // Let a real shell split the line back into words.
        let printed = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '%s\\n' {}",
                exec_line.trim_start_matches("exec ")
            ))
            .output()
            .unwrap();
        let words: Vec<String> = String::from_utf8(printed.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(words, j.argv);
        assert!(text.contains("export REPRO_X='a b'\n"));
    }

    #[test]
    fn bad_env_names_and_empty_commands_are_refused() {
        let mut j = job();
        j.env = vec![("A-B".into(), "x".into())];
        let e = batch_script(&j, &j.log, &[]).unwrap_err().to_string();
        assert!(e.contains("A-B") && e.contains("train@bce nu"), "{e}");
        j.env.clear();
        j.argv.clear();
        assert!(batch_script(&j, &j.log, &[]).is_err());
    }

    #[test]
    fn percent_in_log_path_is_redirected_by_the_script() {
        let mut j = job();
        j.log = PathBuf::from("/ws/logs/100%.log");
        let a = sbatch_args(&j, &j.log, &SlurmOptions::default());
        assert!(a.contains(&"--output=/dev/null".to_string()));
        let text = batch_script(&j, &j.log, &a).unwrap();
        assert!(text.contains("exec >/ws/logs/100%.log 2>&1\n"), "{text}");
    }

    #[test]
    fn squeue_lines_parse_with_wait_status() {
        let text = "1|COMPLETED|None|0|node1|\n5|FAILED|NonZeroExitCode|768|node1|\n\
                    6|CANCELLED|None|15|node1|\n9|PENDING|Resources|0||\n";
        let s = parse_squeue(text);
        assert_eq!(s.len(), 4);
        assert_eq!(s[1].exit, Some(ExitStatus::Code(3)));
        assert_eq!(s[2].exit, Some(ExitStatus::Signal(15)));
        assert_eq!(outcome_of(&s[0], None), Some(Outcome::Succeeded));
        let Some(Outcome::Failed(m)) = outcome_of(&s[1], None) else {
            panic!()
        };
        assert!(
            m.contains("FAILED (NonZeroExitCode)") && m.contains("exit code 3"),
            "{m}"
        );
        assert_eq!(outcome_of(&s[3], None), None);
        assert_eq!(describe_active(&s[3]), "slurm job 9 pending (Resources)");
    }

    #[test]
    fn timeouts_and_preemption_carry_slurms_reason() {
        let t = JobStatus {
            slurm_id: 12,
            state: "TIMEOUT".into(),
            reason: "TimeLimit".into(),
            nodes: "node1".into(),
            exit: Some(ExitStatus::Code(0)),
        };
        let Some(Outcome::Failed(m)) = outcome_of(&t, Some(1)) else {
            panic!()
        };
        assert!(m.starts_with("Slurm: TIMEOUT (TimeLimit), job 12"), "{m}");
        assert!(m.contains("time limit of 1 min"), "{m}");
        let p = JobStatus {
            state: "PREEMPTED".into(),
            reason: "None".into(),
            ..t
        };
        let Some(Outcome::Failed(m)) = outcome_of(&p, None) else {
            panic!()
        };
        assert!(
            m.contains("PREEMPTED") && m.contains("next `repro run`"),
            "{m}"
        );
    }

    #[test]
    fn sacct_lines_parse_and_skip_steps() {
        let text = "5|FAILED|3:0|\n5.batch|FAILED|3:0|\n8|CANCELLED by 0|0:15|None\n";
        let s = parse_sacct(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].exit, Some(ExitStatus::Code(3)));
        assert_eq!(s[1].state, "CANCELLED");
        assert_eq!(s[1].exit, Some(ExitStatus::Signal(15)));
    }

    #[test]
    fn pipeline_settings_become_options() {
        let v = serde_json::json!({
            "partition": "gpu", "account": "ml", "qos": "low",
            "sbatch_args": ["--constraint=a100"], "poll_seconds": 2.5
        });
        let o = SlurmOptions::from_settings(&v).unwrap();
        assert_eq!(o.default_partition.as_deref(), Some("gpu"));
        assert_eq!(
            o.extra_args,
            ["--account=ml", "--qos=low", "--constraint=a100"]
        );
        assert_eq!(o.poll_interval, Duration::from_millis(2500));
        assert_eq!(
            SlurmOptions::from_settings(&serde_json::Value::Null)
                .unwrap()
                .poll_interval,
            Duration::from_secs(1)
        );
        for (bad, needle) in [
            (serde_json::json!({"partiton": "x"}), "partiton"),
            (serde_json::json!({"poll_seconds": 0}), "poll_seconds"),
            (serde_json::json!({"sbatch_args": "--x"}), "sbatch_args"),
            (serde_json::json!({"account": 3}), "account"),
            (serde_json::json!(["gpu"]), "mapping"),
        ] {
            let e = SlurmOptions::from_settings(&bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn quoting_is_minimal_and_safe() {
        assert_eq!(sh_quote("abc/d.e"), "abc/d.e");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(sh_quote("$x"), "'$x'");
    }
}
