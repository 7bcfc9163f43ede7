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
//!
//! The pieces: [`script`] (the batch script and `sbatch` options), [`accounting`] (state
//! queries and what a final state means), [`client`] (running Slurm's commands); this file
//! holds the executor itself, its options and the log relay.

mod accounting;
mod client;
mod script;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Event, Executor, Job, JobId, Outcome};
use crate::fsutil::{stage_file_name, write_atomic};
use crate::kinds::progress;
pub use accounting::{
    ExitStatus, JobStatus, is_active, outcome_of, parse_sacct, parse_squeue, sacct,
};
use accounting::{describe_active, join_ids, squeue};
use client::{hint_for, retry_transient, run_client, slurm_conf_shown};
pub use script::{batch_script, sbatch_args, sh_quote};

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

/// A job whose usage is wanted runs under `repro internal measure` on its node: there is no
/// supervisor of ours around a Slurm job to measure it (see `crate::trace`).
fn measured(mut job: Job) -> Result<Job> {
    if let Some(usage) = job.usage.take() {
        let exe = std::env::current_exe().context("cannot find the repro binary")?;
        job.argv = crate::trace::wrap(&exe, &usage, std::mem::take(&mut job.argv));
    }
    Ok(job)
}

impl Executor for SlurmExecutor {
    fn submit(&mut self, job: Job) -> Result<()> {
        let job = measured(job)?;
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
        let stem = format!(
            "{}-{}-{}",
            stage_file_name(&job.stage),
            job.id,
            std::process::id()
        );
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_job_whose_usage_is_wanted_runs_under_measure() {
        let job = Job {
            id: 1,
            stage: "s".into(),
            argv: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec![],
            cwd: "/ws".into(),
            log: "/ws/s.log".into(),
            resources: Default::default(),
            gpus: vec![],
            usage: Some("/ws/cache/trace/s.json".into()),
        };
        let plain = measured(Job { usage: None, ..job.clone() }).unwrap();
        assert_eq!(plain.argv, ["sh", "-c", "true"]);
        let wrapped = measured(job).unwrap();
        assert_eq!(
            wrapped.argv[1..],
            ["internal", "measure", "/ws/cache/trace/s.json", "--", "sh", "-c", "true"]
        );
        assert!(wrapped.usage.is_none());
    }
}
