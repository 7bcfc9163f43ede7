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
//! Job arrays: [`Executor::submit_many`] gets every stage the engine started in one scheduling
//! round. Stages of one `foreach:`/`matrix:` (the same name before `@`) that ask for the same
//! `sbatch` options go to Slurm as one `sbatch --array=0-(N-1)%C` (C: the engine's `-j`)
//! whose script dispatches on `$SLURM_ARRAY_TASK_ID` to each stage's own batch script. Each
//! element is still tracked, reported and committed as its own stage, so a failed element fails
//! alone and the next `repro run` resubmits only it. `slurm: {arrays: false}` turns this off.
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

use super::{Admission, Event, Executor, Job, JobId, Outcome};
use crate::fsutil::{stage_file_name, write_atomic};
use crate::kinds::progress;
pub use accounting::{ExitStatus, JobStatus, sacct};
use accounting::{describe_active, job_display_id, join_ids, squeue};
pub(crate) use accounting::{is_active, outcome_of};
use client::{hint_for, retry_transient, run_client, slurm_conf_shown};
pub(crate) use script::{array_script, batch_script, sbatch_args, sh_quote};

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
    /// Submit stages of one `foreach:`/`matrix:` that start together as one job array.
    pub arrays: bool,
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
            arrays: true,
        }
    }
}

impl SlurmOptions {
    /// Options from a pipeline's (or profile's) `slurm:` block, e.g.
    /// `{partition: gpu, account: ml, qos: low, sbatch_args: ["--constraint=a100"],
    /// poll_seconds: 2}`. `null` (no block) gives the defaults. Unknown keys are errors, so a
    /// typo does not silently submit to the wrong place.
    pub(crate) fn from_settings(settings: &serde_json::Value) -> Result<SlurmOptions> {
        use crate::spec::slurm_decl::{KNOWN, check_entry};
        let mut opts = SlurmOptions::default();
        let map = match settings {
            serde_json::Value::Null => return Ok(opts),
            serde_json::Value::Object(m) => m,
            other => bail!("`slurm:` must be a mapping ({KNOWN}), not {other}"),
        };
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        for (key, v) in map {
            // One set of rules: the pipeline loader applies them too, at the entry's line.
            check_entry(key, v).map_err(anyhow::Error::msg)?;
            match key.as_str() {
                "partition" => opts.default_partition = Some(text(v)),
                "account" => opts.extra_args.push(format!("--account={}", text(v))),
                "qos" => opts.extra_args.push(format!("--qos={}", text(v))),
                "sbatch_args" => {
                    opts.extra_args
                        .extend(v.as_array().into_iter().flatten().map(text));
                }
                "poll_seconds" => {
                    opts.poll_interval = Duration::from_secs_f64(v.as_f64().unwrap_or(1.0));
                }
                "arrays" => opts.arrays = v.as_bool().unwrap_or(true),
                _ => {}
            }
        }
        Ok(opts)
    }
}

/// One job the executor submitted and has not yet reported finished.
struct Tracked {
    id: JobId,
    /// The job id; for an element of a job array, the array's id.
    slurm_id: u64,
    /// The element's index in its job array.
    task: Option<u32>,
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

impl Tracked {
    /// A job (or an array's element `task`) just accepted by `sbatch`, with its stage log, raw
    /// Slurm output and batch script; single jobs and array elements are followed alike.
    fn submitted(
        job: &Job,
        slurm_id: u64,
        task: Option<u32>,
        files: (PathBuf, fs::File, PathBuf, PathBuf),
    ) -> Self {
        let (log, log_file, raw, script) = files;
        Tracked {
            id: job.id,
            slurm_id,
            task,
            stage: job.stage.clone(),
            log,
            log_file: Some(log_file),
            raw,
            raw_offset: 0,
            script,
            time_min: job.resources.time_min,
            last_seen: None,
            unknown_polls: 0,
        }
    }
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
    /// Dispatch scripts of job arrays with elements still tracked, and whether one failed
    /// (then the script is kept for inspection).
    arrays: HashMap<u64, (PathBuf, bool)>,
    /// Events to hand out at the next poll (which array element a stage became).
    queued: Vec<Event>,
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
            arrays: HashMap::new(),
            queued: Vec::new(),
        })
    }

    /// Number of state queries (`squeue`/`sacct` calls) made so far; one per poll interval at
    /// most, however many jobs are tracked.
    pub fn queries(&self) -> usize {
        self.queries
    }

    /// Number of `sbatch` calls made so far (a job array is one).
    pub fn submits(&self) -> usize {
        self.submits
    }

    /// Slurm's id for an engine job that is still tracked, as Slurm prints it (`1234_7` for
    /// an array element).
    pub fn slurm_job(&self, id: JobId) -> Option<String> {
        self.jobs
            .iter()
            .find(|t| t.id == id)
            .map(|t| job_display_id(t.slurm_id, t.task))
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
        let mut by_id: HashMap<(u64, Option<u32>), JobStatus> = statuses
            .into_iter()
            .map(|s| ((s.slurm_id, s.task), s))
            .collect();

        // Jobs squeue no longer lists (purged after MinJobAge): ask the accounting records.
        let missing: Vec<u64> = self
            .jobs
            .iter()
            .filter(|t| !by_id.contains_key(&(t.slurm_id, t.task)))
            .map(|t| t.slurm_id)
            .collect();
        if !missing.is_empty() {
            self.queries += 1;
            for s in sacct(&self.opts, &missing) {
                by_id.entry((s.slurm_id, s.task)).or_insert(s);
            }
        }

        let mut events = Vec::new();
        let mut done = Vec::new();
        for (i, t) in self.jobs.iter_mut().enumerate() {
            let Some(status) = by_id.get(&(t.slurm_id, t.task)) else {
                t.unknown_polls += 1;
                if t.unknown_polls >= 3 {
                    tail_one(t, &mut events, true);
                    mark_array_failed(&mut self.arrays, t);
                    events.push(Event::Finished {
                        id: t.id,
                        outcome: Outcome::Failed(format!(
                            "Slurm: job {} vanished (neither squeue nor sacct knows it); \
                             see its log {}",
                            job_display_id(t.slurm_id, t.task),
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
                    } else {
                        mark_array_failed(&mut self.arrays, t);
                    }
                    events.push(Event::Finished { id: t.id, outcome });
                    done.push(i);
                }
            }
        }
        for i in done.into_iter().rev() {
            self.jobs.swap_remove(i);
        }
        self.forget_ended_arrays();
        Ok(events)
    }

    /// Drop the dispatch scripts of arrays none of whose elements is tracked any more (kept
    /// when an element failed).
    fn forget_ended_arrays(&mut self) {
        let jobs = &self.jobs;
        self.arrays.retain(|id, (script, failed)| {
            let live = jobs.iter().any(|t| t.task.is_some() && t.slurm_id == *id);
            if !live && !*failed {
                let _ = fs::remove_file(script);
            }
            live
        });
    }

    /// Everything a job needs before `sbatch`: its log (started empty, as in a local run) and
    /// the directory for scripts.
    fn prepare(&self, job: &Job) -> Result<(PathBuf, fs::File, PathBuf)> {
        let log = if job.log.is_absolute() {
            job.log.clone()
        } else {
            job.cwd.join(&job.log)
        };
        if let Some(parent) = log.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("creating the log directory {}", parent.display()))?;
        }
        let dir = self.script_dir(job);
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating the Slurm script directory {}", dir.display()))?;
        let log_file = fs::File::create(&log)
            .with_context(|| format!("creating the stage log {}", log.display()))?;
        Ok((log, log_file, dir))
    }

    /// Jobs that may share one array: same base name (before `@`), same `sbatch` options but
    /// for name and output, same script directory. Groups keep the engine's order; the key is
    /// `None` for jobs that go alone.
    fn array_groups(&self, jobs: Vec<(Job, usize)>) -> Vec<Vec<(Job, usize)>> {
        type Key = (String, Vec<String>, PathBuf);
        type Group = (Option<Key>, Vec<(Job, usize)>);
        let mut groups: Vec<Group> = Vec::new();
        for (job, cap) in jobs {
            let dir = self.script_dir(&job);
            let key = self.opts.arrays.then(|| {
                let args: Vec<String> = sbatch_args(&job, Path::new("/"), &self.opts)
                    .into_iter()
                    .filter(|a| !a.starts_with("--job-name=") && !a.starts_with("--output="))
                    .collect();
                (base_name(&job.stage).to_string(), args, dir)
            });
            match groups
                .iter_mut()
                .find(|(k, g)| k.is_some() && *k == key && g.len() < MAX_ARRAY)
            {
                Some((_, g)) => g.push((job, cap)),
                None => groups.push((key, vec![(job, cap)])),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }

    /// Submit `jobs` (two or more of one group) as one job array of at most `cap` elements
    /// running at once. On failure, every job of it fails with the same reason.
    fn submit_array(&mut self, jobs: Vec<Job>, cap: usize) -> Vec<(JobId, anyhow::Error)> {
        let base = base_name(&jobs[0].stage).to_string();
        let stem = format!(
            "{}-array-{}-{}",
            stage_file_name(&base),
            jobs[0].id,
            std::process::id()
        );
        let mut ready: Vec<(Job, PathBuf, fs::File, PathBuf, PathBuf)> = Vec::new();
        let mut failed = Vec::new();
        // Each element's own batch script, exactly as for a single job.
        for job in jobs {
            let prepared = self.prepare(&job).and_then(|(log, log_file, dir)| {
                let n = ready.len();
                let raw = dir.join(format!("{stem}_{n}.out"));
                let script = dir.join(format!("{stem}_{n}.sh"));
                let text = batch_script(&job, &raw, &[])?;
                write_atomic(&script, text.as_bytes())?;
                let _ = fs::remove_file(&raw);
                Ok((log, log_file, raw, script))
            });
            match prepared {
                Ok((log, log_file, raw, script)) => ready.push((job, log, log_file, raw, script)),
                Err(e) => failed.push((job.id, e.context(format!("stage '{}'", job.stage)))),
            }
        }
        if ready.len() < 2 {
            // Nothing left to batch: the survivor (if any) goes alone.
            for (job, _, _, _, script) in ready {
                let _ = fs::remove_file(&script);
                let id = job.id;
                if let Err(e) = self.submit(job) {
                    failed.push((id, e));
                }
            }
            return failed;
        }
        let dir = ready[0]
            .4
            .parent()
            .expect("scripts live in a directory")
            .to_path_buf();
        let dispatch = dir.join(format!("{stem}.sh"));
        // `%a` is the element's index; a directory with its own `%` cannot be a pattern, and
        // then each element's script redirects its output itself (see `batch_script`).
        let pattern = if dir.display().to_string().contains('%') {
            PathBuf::from("/dev/null")
        } else {
            dir.join(format!("{stem}_%a.out"))
        };
        let mut args: Vec<String> = sbatch_args(&ready[0].0, &pattern, &self.opts)
            .into_iter()
            .map(|a| {
                if a.starts_with("--job-name=") {
                    format!("--job-name=repro:{base}")
                } else if a.starts_with("--output=") {
                    format!("--output={}", pattern.display())
                } else {
                    a
                }
            })
            .collect();
        args.insert(1, format!("--array=0-{}%{}", ready.len() - 1, cap.max(1)));
        let scripts: Vec<&Path> = ready.iter().map(|r| r.4.as_path()).collect();
        let text = array_script(&base, &scripts, &args);
        let written = write_atomic(&dispatch, text.as_bytes());
        let mut argv = args;
        argv.push(dispatch.display().to_string());
        let result = written.and_then(|()| {
            self.submits += 1;
            let out = retry_transient(|| run_client(&self.opts, "sbatch", &argv))?;
            if !out.ok {
                bail!(
                    "Slurm refused the job array of {} stages (sbatch {}): {}{}",
                    scripts.len(),
                    argv.join(" "),
                    out.summary(),
                    hint_for(&out.stderr, &self.opts)
                );
            }
            parse_sbatch_id(&out.stdout)
        });
        let slurm_id = match result {
            Ok(id) => id,
            Err(e) => {
                let _ = fs::remove_file(&dispatch);
                let why = format!("{e:#}");
                for (job, _, _, _, script) in ready {
                    let _ = fs::remove_file(&script);
                    failed.push((job.id, anyhow::anyhow!("stage '{}': {why}", job.stage)));
                }
                return failed;
            }
        };
        let n = ready.len();
        self.arrays.insert(slurm_id, (dispatch, false));
        for (task, (job, log, log_file, raw, script)) in ready.into_iter().enumerate() {
            self.queued.push(Event::Progress {
                id: job.id,
                message: format!("slurm job {slurm_id}_{task} submitted (array of {n})"),
                fraction: None,
            });
            let files = (log, log_file, raw, script);
            self.jobs
                .push(Tracked::submitted(&job, slurm_id, Some(task as u32), files));
        }
        failed
    }
}

/// Submit a ready-made batch script (`argv`: sbatch options, then the script) for
/// `repro submit`; returns the job id.
pub(crate) fn sbatch(opts: &SlurmOptions, argv: &[String]) -> Result<u64> {
    let out = retry_transient(|| run_client(opts, "sbatch", argv))?;
    if !out.ok {
        bail!(
            "Slurm refused the job (sbatch {}): {}{}",
            argv.join(" "),
            out.summary(),
            hint_for(&out.stderr, opts)
        );
    }
    parse_sbatch_id(&out.stdout)
}

/// What Slurm says about one job now (`squeue`, else the accounting records); `None` when
/// neither knows it any more.
pub(crate) fn job_status(opts: &SlurmOptions, id: u64) -> Result<Option<JobStatus>> {
    let found = squeue(opts, &[id])?
        .into_iter()
        .find(|s| s.slurm_id == id && s.task.is_none());
    Ok(found.or_else(|| {
        sacct(opts, &[id])
            .into_iter()
            .find(|s| s.slurm_id == id && s.task.is_none())
    }))
}

/// Slurm's default `MaxArraySize` is 1001 (indices 0..=1000); larger groups are split.
const MAX_ARRAY: usize = 1000;

/// The stage's base name: `train` for `train@bce`, the name itself otherwise.
fn base_name(stage: &str) -> &str {
    stage.split('@').next().unwrap_or(stage)
}

/// `sbatch --parsable` prints `id` or `id;cluster`.
fn parse_sbatch_id(stdout: &str) -> Result<u64> {
    let first = stdout.trim().split(';').next().unwrap_or("");
    first
        .parse()
        .with_context(|| format!("unexpected sbatch output {:?}", stdout.trim()))
}

/// A job whose usage is wanted runs under `repro internal measure` on its node: there is no
/// supervisor of ours around a Slurm job to measure it (see `crate::trace`). Taking `usage`
/// makes a second call a no-op.
fn measured(mut job: Job) -> Result<Job> {
    if let Some(usage) = job.usage.take() {
        let exe = std::env::current_exe().context("cannot find the repro binary")?;
        job.argv = crate::executor::measure::wrap(&exe, &usage, std::mem::take(&mut job.argv));
    }
    Ok(job)
}

fn mark_array_failed(arrays: &mut HashMap<u64, (PathBuf, bool)>, t: &Tracked) {
    if t.task.is_some()
        && let Some((_, failed)) = arrays.get_mut(&t.slurm_id)
    {
        *failed = true;
    }
}

impl Executor for SlurmExecutor {
    fn submit(&mut self, job: Job) -> Result<()> {
        let job = measured(job)?;
        let (log, log_file, dir) = self.prepare(&job)?;
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
        let slurm_id =
            parse_sbatch_id(&out.stdout).with_context(|| format!("stage '{}'", job.stage))?;
        let files = (log, log_file, raw, script);
        self.jobs
            .push(Tracked::submitted(&job, slurm_id, None, files));
        Ok(())
    }

    fn submit_many(&mut self, jobs: Vec<(Job, usize)>) -> Vec<(JobId, anyhow::Error)> {
        let mut failed = Vec::new();
        let jobs = jobs
            .into_iter()
            .filter_map(|(job, cap)| {
                let id = job.id;
                measured(job)
                    .map(|j| (j, cap))
                    .map_err(|e| failed.push((id, e)))
                    .ok()
            })
            .collect();
        for group in self.array_groups(jobs) {
            if group.len() >= 2 {
                let cap = group.iter().map(|(_, c)| *c).max().unwrap_or(1);
                let jobs = group.into_iter().map(|(j, _)| j).collect();
                failed.extend(self.submit_array(jobs, cap));
            } else {
                for (job, _) in group {
                    let id = job.id;
                    if let Err(e) = self.submit(job) {
                        failed.push((id, e));
                    }
                }
            }
        }
        failed
    }

    /// Stages of one `foreach:`/`matrix:` (the same base name) with equal resources share one
    /// job array per round, of at most [`MAX_ARRAY`] elements; without arrays, one job each.
    fn admission(&self, stage: &crate::spec::Stage) -> Admission {
        if !self.opts.arrays {
            return Admission::Slots;
        }
        Admission::Batch {
            group: format!("{}\u{0}{:?}", base_name(&stage.name), stage.resources),
            max: MAX_ARRAY,
        }
    }

    /// Slurm picks the GPUs: the job's `CUDA_VISIBLE_DEVICES` comes from its gres allocation.
    fn places_gpus(&self) -> bool {
        true
    }

    /// Slurm's own scheduler decides what runs; the engine keeps this many jobs submitted.
    fn default_jobs(&self) -> usize {
        256
    }

    fn poll(&mut self, timeout: Duration) -> Result<Vec<Event>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.jobs.is_empty() {
                return Ok(std::mem::take(&mut self.queued));
            }
            let mut events = std::mem::take(&mut self.queued);
            events.extend(self.tail_logs());
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
                job_display_id(t.slurm_id, t.task),
                t.stage
            );
        }
        self.jobs.clear();
        // Kept: scripts of cancelled jobs, like those of failed ones.
        self.arrays.clear();
        self.queued.clear();
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
        let plain = measured(Job {
            usage: None,
            ..job.clone()
        })
        .unwrap();
        assert_eq!(plain.argv, ["sh", "-c", "true"]);
        let wrapped = measured(job).unwrap();
        assert_eq!(
            wrapped.argv[1..],
            [
                "internal",
                "measure",
                "/ws/cache/trace/s.json",
                "--",
                "sh",
                "-c",
                "true"
            ]
        );
        assert!(wrapped.usage.is_none());
    }
}
