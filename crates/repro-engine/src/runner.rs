//! The run loop, as a type in the manner of n2's `Work`: a [`Runner`] holds what one run
//! needs (the session's pipeline, DAG, workspace and lock, the scheduler, the executor, the
//! stages running) and its steps are methods: [`Runner::run`] repeats
//! `start_ready` (each ready stage that fits: `start_stage`, which decides, restores or
//! `launch`es it), polls the executor (`on_finished`, `fail`) and `flush_lock`, then `finish`es.
//!
//! It consumes the verdicts of [`plan`](crate::plan::plan), made once before anything runs:
//! a stage none of whose upstream stages ran or was restored keeps its planned assessment and
//! verdict (Fresh: skipped; Restorable: restored from the record the plan found; Stale: run,
//! with no second run-cache look-up); any other stage is assessed again when it becomes ready,
//! since its inputs may have changed. A stage is recorded (cache objects, run cache, lock
//! entry) only after it exited 0 and every declared output exists, so a run killed at any
//! moment never leaves a stage looking fresh with partial outputs.
//!
//! How a ready stage is admitted (within `-j` and GPU slots, or into a batch such as a Slurm
//! job array) is the executor's to say ([`Executor::admission`]); the runner keeps the
//! books. It prints progress but writes nothing but the lock and what the cache records.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cache::{CorruptObject, run_cache};
use crate::executor::{Admission, Event, Executor, Job, Outcome};
use crate::kinds::{Host, Registry};
use crate::plan::{Planned, Verdict};
use crate::progress::Progress;
use crate::remote::RunRemote;
use crate::schedule::{Lease, Scheduler};
use crate::session::Session;
use crate::spec::{Pipeline, Stage};
use crate::state::db::RunRecord;
use crate::state::lockfile::{LockEntry, LockFile};
use crate::state::workspace::{Assessment, Workspace, assess, file_safe};

/// What a run did, stage by stage (the line every run ends with).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Stages run.
    pub ran: usize,
    /// Stages already fresh.
    pub fresh: usize,
    /// Stages restored from the local run cache.
    pub restored: usize,
    /// Restored from the remote cache.
    pub restored_remote: usize,
    /// Stages that failed.
    pub failed: usize,
    /// Stages not run because something upstream failed.
    pub skipped: usize,
    /// Running (or waiting to retry) when an interrupt (Ctrl-C, SIGTERM) stopped the run.
    pub interrupted: usize,
    /// Stages that failed and ran again (`retry:`), however that ended.
    pub retried: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ran, {} fresh, ", self.ran, self.fresh)?;
        if self.restored > 0 {
            write!(f, "{} restored, ", self.restored)?;
        }
        if self.restored_remote > 0 {
            write!(f, "{} restored (remote), ", self.restored_remote)?;
        }
        write!(f, "{} failed", self.failed)?;
        if self.interrupted > 0 {
            write!(f, ", {} interrupted", self.interrupted)?;
        }
        if self.retried > 0 {
            write!(f, ", {} retried", self.retried)?;
        }
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// How a run goes, besides its session and executor.
#[derive(Clone, Debug)]
pub struct Config {
    /// Stages at once (`-j`, at least 1).
    pub jobs: usize,
    /// The device ids of the GPU slots (see [`crate::executor::gpus::slots`]); none: stages
    /// that declare GPUs run without.
    pub gpu_ids: Vec<String>,
    /// `--keep-going`: after a failure, go on with everything not downstream of it.
    pub keep_going: bool,
    /// `--force`: run every selected stage, planning nothing and restoring nothing.
    pub force: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// What ran.
    pub summary: Summary,
    /// The signal that interrupted it, or 0.
    pub signal: i32,
    /// Selected stages that never started (after an interrupt, or a failure without
    /// `--keep-going`).
    pub not_started: usize,
}

/// A stage handed to the executor.
struct Running {
    assessment: Assessment,
    /// Its CPU slots and GPUs, given back to the scheduler when it finishes.
    lease: Lease,
    /// The batch it was admitted into: (round, group), see [`Admission::Batch`].
    batch: Option<(usize, String)>,
    started: Instant,
}

/// What [`Runner::decide`] made of a ready stage.
enum Start {
    Fresh,
    /// Restored from the run cache; `true` when its entry came from the remote cache.
    Restored(Assessment, bool),
    Run(Assessment),
}

/// One run of the selected stages of a session. See the module documentation.
pub struct Runner<'a> {
    p: &'a Pipeline,
    dag: &'a crate::graph::Dag,
    ws: &'a Workspace,
    lock: &'a mut LockFile,
    executor: &'a mut dyn Executor,
    remote: &'a RunRemote,
    kinds: &'a Registry,
    /// The program that embeds the engine (it runs kinds that are not shell lines).
    program: PathBuf,
    interrupt: &'a AtomicI32,
    config: Config,
    sched: Scheduler<'a>,
    owners: crate::confine::Ownership,
    /// The plan's verdicts, taken as each stage becomes ready.
    planned: HashMap<usize, Planned>,
    /// Stages whose outputs this run replaced (ran or restored).
    disturbed: BTreeSet<usize>,
    running: HashMap<usize, Running>,
    progress: Progress,
    summary: Summary,
    /// No new stage starts (a failure without `--keep-going`, or an interrupt).
    stop_new: bool,
    round: usize,
    /// Jobs admitted into batches this round, handed over when it ends.
    batch: Vec<(Job, Option<(usize, String)>)>,
    /// This round's batch groups: members, and members holding slots.
    groups: HashMap<String, (usize, usize)>,
    /// Jobs the executor would not take, with why.
    refused: Vec<(usize, anyhow::Error)>,
    warned_no_gpu: bool,
    /// Failed attempts so far of each stage that failed in this run.
    attempts: HashMap<usize, u32>,
    /// Stages waiting out their `retry:` backoff: when each is ready again, and the line
    /// that reports its failure should the run stop first. A timer, not a sleep: the loop
    /// goes on polling the executor meanwhile.
    retry_at: Vec<(Instant, usize, String)>,
    lock_dirty: bool,
    last_lock_write: Instant,
}

impl<'a> Runner<'a> {
    /// Plan the session's selected stages (unless `--force`) and make ready to run them on
    /// `executor`. Fails before anything runs if a stage would replace something at its
    /// outputs that repro did not produce. Interrupts come from
    /// [`crate::session::interrupt_flag`] (see [`Runner::interrupt_with`]).
    pub fn new(
        session: &'a mut Session,
        executor: &'a mut dyn Executor,
        remote: &'a RunRemote,
        kinds: &'a Registry,
        config: Config,
    ) -> Result<Runner<'a>> {
        let Session {
            p,
            dag,
            selected,
            ws,
            lock,
            ..
        } = session;
        let (p, dag, ws, selected): (
            &'a Pipeline,
            &'a crate::graph::Dag,
            &'a Workspace,
            &'a [usize],
        ) = (p, dag, ws, selected);
        let owners = crate::confine::Ownership::new(config.force);
        // Every selected stage planned up front (assessed in parallel; `plan` is also what
        // `status` and `--dry-run` report).
        let planned: Vec<(usize, Result<Planned>)> = if config.force {
            Vec::new()
        } else {
            crate::plan::plan(ws, p, dag, selected, lock)
        };
        // Nothing runs if a stage would replace something at its outputs that repro did not
        // produce (unless --force): checked here, before anything runs, and again as each starts.
        let unowned: Vec<crate::spec::SpecError> = planned
            .iter()
            .filter_map(|(i, x)| Some((*i, &x.as_ref().ok()?.assessment)))
            .filter(|(_, a)| !a.fresh())
            .flat_map(|(i, a)| owners.unowned(ws, lock, &p.stages[i], a))
            .collect();
        if !unowned.is_empty() {
            anyhow::bail!("{}", crate::spec::SpecErrors(unowned));
        }
        // Every remote entry whose key is already known, fetched in one batch (see `prefetch`).
        let known: Vec<_> = planned
            .iter()
            .filter_map(|(i, x)| Some((&p.stages[*i], &x.as_ref().ok()?.assessment)))
            .collect();
        remote.prefetch(ws, &known);
        drop(known);
        // A stage that cannot be assessed now is assessed again when it starts (and fails then).
        let planned = planned
            .into_iter()
            .filter_map(|(i, x)| Some((i, x.ok()?)))
            .collect();
        let sched = Scheduler::new(dag, selected, config.jobs, config.gpu_ids.len());
        Ok(Runner {
            p,
            dag,
            ws,
            lock,
            executor,
            remote,
            kinds,
            program: std::env::current_exe().context("cannot find the repro binary")?,
            interrupt: crate::session::interrupt_flag(),
            sched,
            owners,
            planned,
            disturbed: BTreeSet::new(),
            running: HashMap::new(),
            progress: Progress::new(selected.len()),
            summary: Summary::default(),
            stop_new: false,
            round: 0,
            batch: Vec::new(),
            groups: HashMap::new(),
            refused: Vec::new(),
            warned_no_gpu: false,
            attempts: HashMap::new(),
            retry_at: Vec::new(),
            lock_dirty: false,
            last_lock_write: Instant::now(),
            config,
        })
    }

    /// Watch `flag` for interrupts instead of the signal handler's (a signal number, or 0).
    pub fn interrupt_with(mut self, flag: &'a AtomicI32) -> Self {
        self.interrupt = flag;
        self
    }

    /// Run until every selected stage is done, failed, skipped or (after an interrupt, or a
    /// failure without `--keep-going`) not started.
    pub fn run(mut self) -> Result<Finished> {
        loop {
            if self.interrupt.load(Ordering::SeqCst) != 0 {
                self.progress
                    .println("interrupted: stopping running stages");
                self.summary.interrupted = self.running.len() + self.retry_at.len();
                self.executor.cancel_all();
                break;
            }
            self.due_retries();
            self.start_ready()?;
            if self.running.is_empty()
                && self.retry_at.is_empty()
                && (!self.sched.has_ready() || self.stop_new)
            {
                break;
            }
            // Never past the next retry's time, so that it starts when due.
            let mut wait = Duration::from_millis(100);
            if let Some(t) = self.retry_at.iter().map(|r| r.0).min() {
                wait = wait.min(t.saturating_duration_since(Instant::now()));
            }
            for event in self.executor.poll(wait)? {
                match event {
                    Event::Progress { id, message, .. } => {
                        self.progress.update(id, &self.p.stages[id].name, &message)
                    }
                    Event::Finished { id, outcome } => self.on_finished(id, outcome)?,
                }
            }
            self.flush_lock()?;
        }
        Ok(self.finish())
    }

    /// Stages whose backoff is over become ready again; once nothing new may start (a
    /// failure without `--keep-going`), those still waiting fail with their last failure.
    fn due_retries(&mut self) {
        let now = Instant::now();
        let stop = self.stop_new;
        let (due, wait) = std::mem::take(&mut self.retry_at)
            .into_iter()
            .partition(|(t, ..)| stop || *t <= now);
        self.retry_at = wait;
        for (_, i, line) in due {
            if stop {
                self.fail(i, line);
            } else {
                self.sched.ready_again(i);
            }
        }
    }

    /// One scheduling round: start every ready stage that may start now, then hand the
    /// round's batch to the executor.
    fn start_ready(&mut self) -> Result<()> {
        self.round += 1;
        self.groups.clear();
        while !self.stop_new {
            let (p, executor, groups) = (self.p, &*self.executor, &self.groups);
            let gpu_slots = !self.config.gpu_ids.is_empty();
            // A member of a batch may start without slots ("ride along"), unless it wants GPUs.
            let rides = |i: usize| {
                let s = &p.stages[i];
                match executor.admission(s) {
                    Admission::Slots => false,
                    Admission::Batch { group, max } => {
                        (!gpu_slots || s.resources.gpus == 0)
                            && groups.get(&group).is_some_and(|&(n, _)| n < max)
                    }
                }
            };
            let Some(i) = self.sched.next(|i| need(&p.stages[i]), rides) else {
                break;
            };
            self.start_stage(i)?;
        }
        if !self.batch.is_empty() {
            // A batch runs at most as many of its group at once as took slots.
            let groups = &self.groups;
            let jobs = std::mem::take(&mut self.batch)
                .into_iter()
                .map(|(j, b)| {
                    let cap = b
                        .and_then(|(_, g)| groups.get(&g))
                        .map_or(1, |e| e.1.max(1));
                    (j, cap)
                })
                .collect();
            let refused = self.executor.submit_many(jobs);
            self.refused.extend(refused);
        }
        for (i, e) in std::mem::take(&mut self.refused) {
            if let Some(r) = self.running.remove(&i) {
                self.sched.give_back(r.lease);
                self.fail(i, format!("FAILED {}: {e:#}", self.p.stages[i].name));
            }
        }
        Ok(())
    }

    /// A stage the scheduler let start: skip it, restore it, or launch it.
    fn start_stage(&mut self, i: usize) -> Result<()> {
        let p = self.p;
        let stage = &p.stages[i];
        let disturbed = &self.disturbed;
        // The plan holds for a stage none of whose upstream stages changed anything.
        let planned = self
            .planned
            .remove(&i)
            .filter(|_| !self.dag.upstream(i).iter().any(|u| disturbed.contains(u)));
        let outcome = self
            .decide(stage, i, planned)
            .with_context(|| format!("stage '{}'", stage.name));
        if matches!(outcome, Ok(Start::Restored(..) | Start::Run(_))) {
            self.disturbed.insert(i);
        }
        match outcome {
            // Ctrl-C while hashing its inputs: not a failure, just not started.
            Err(e)
                if e.downcast_ref::<crate::state::hashing::Interrupted>()
                    .is_some() =>
            {
                self.sched.not_taken(i);
                self.stop_new = true;
            }
            Err(e) => self.fail(i, format!("FAILED {}: {e:#}", stage.name)),
            Ok(Start::Fresh) => {
                self.summary.fresh += 1;
                self.progress.skip_quietly();
                self.sched.release(i);
            }
            Ok(Start::Restored(a, from_remote)) => {
                if from_remote {
                    self.summary.restored_remote += 1;
                } else {
                    self.summary.restored += 1;
                }
                self.record(stage, &a);
                let from = if from_remote {
                    "the remote cache"
                } else {
                    "cache"
                };
                self.progress
                    .finish(i, &format!("restored {} from {from}", stage.name));
                self.sched.release(i);
            }
            Ok(Start::Run(a)) => self.launch(i, a)?,
        }
        Ok(())
    }

    /// What to do with a ready stage and, for a cache hit, restore it. `planned`: its verdict
    /// from the plan while still valid (no upstream stage changed anything).
    fn decide(&mut self, stage: &Stage, id: usize, planned: Option<Planned>) -> Result<Start> {
        let (ws, lock, force) = (self.ws, &*self.lock, self.config.force);
        // The plan's run-cache look-up, when it made one: `Some(found)`.
        let (a, looked_up) = match planned {
            Some(Planned {
                verdict,
                assessment,
                cached,
            }) => {
                let looked_up = match verdict {
                    Verdict::Restorable { .. } => Some(cached),
                    Verdict::Stale { upstream, .. } if upstream.is_empty() => Some(None),
                    _ => None,
                };
                (assessment, looked_up)
            }
            None => (assess(ws, stage, lock.stages.get(&stage.name))?, None),
        };
        if !force && a.fresh() {
            return Ok(Start::Fresh);
        }
        let unowned = self.owners.unowned(ws, lock, stage, &a);
        if !unowned.is_empty() {
            anyhow::bail!("{}", crate::spec::SpecErrors(unowned));
        }
        let db = ws.db()?;
        let local: Option<RunRecord> = match looked_up {
            _ if force => None,
            Some(found) => found,
            None => db.get_run(&a.key)?,
        };
        // The remote is asked only when the local run cache misses (never under --force); an
        // entry the prefetch recorded is found locally but came from the remote.
        let from_remote = !force && (local.is_none() || self.remote.take_prefetched(&a.key));
        let found = match local {
            Some(rec) => Some(rec),
            None if force => None,
            None => (self.remote).fetch(ws, stage, id, &a.key, &mut self.progress)?,
        };
        if let Some(rec) = found {
            // What the outputs hold now goes into the cache first (a no-op when it came from
            // there), so that replacing them loses nothing, even an output edited by hand.
            run_cache::preserve_outputs(ws, &a)?;
            match run_cache::restore(ws, &rec) {
                // Every restored byte was verified against the record while copied.
                Ok(()) => {
                    let restored = run_cache::restored_assessment(ws, &a, &rec)?;
                    return Ok(Start::Restored(restored, from_remote));
                }
                Err(e) => {
                    let corrupt = e.downcast_ref::<CorruptObject>();
                    if let Some(c) = corrupt {
                        self.progress.println(&format!(
                            "warning: {c}; dropped it, recomputing {}",
                            stage.name
                        ));
                        ws.objects.drop_object(&c.path);
                        // Only a damaged cache entry is forgotten; a workspace problem is not
                        // the cache's fault, and the cached configuration stays restorable.
                        db.remove_run(&a.key)?;
                    } else {
                        self.progress.println(&format!(
                            "warning: cannot restore {} from cache ({e:#}); recomputing",
                            stage.name
                        ));
                    }
                }
            }
        }
        if self.remote.pull_only() {
            anyhow::bail!(
                "not in the local or the remote run cache (key {}); `repro run` computes it",
                &a.key[..a.key.len().min(12)]
            );
        }
        self.owners.claim(ws, lock, stage)?;
        run_cache::prepare_outputs(ws, stage, &a)?;
        Ok(Start::Run(a))
    }

    /// Hand a stage that must run to the executor, within its slots or into its batch.
    fn launch(&mut self, i: usize, a: Assessment) -> Result<()> {
        let p = self.p;
        let stage = &p.stages[i];
        if stage.resources.gpus > 0 && self.config.gpu_ids.is_empty() && !self.warned_no_gpu {
            self.warned_no_gpu = true;
            self.progress.println("note: no GPU found; stages that declare `gpu:` run without one (pass --resources gpu=N to set slots)");
        }
        // Takes slots unless it rides along in a batch (see `start_ready`).
        let lease = self.sched.lease(need(stage));
        let job = self.make_job(stage, i, &a, &lease.gpus)?;
        self.progress.start(i, &stage.name, "running");
        let batch = match self.executor.admission(stage) {
            Admission::Slots => None,
            Admission::Batch { group, .. } => {
                let e = self.groups.entry(group.clone()).or_default();
                e.0 += 1;
                e.1 += usize::from(lease.slots > 0);
                Some((self.round, group))
            }
        };
        if batch.is_some() {
            self.batch.push((job, batch.clone()));
        } else {
            let refused = self.executor.submit_many(vec![(job, 1)]);
            self.stop_new |= !refused.is_empty() && !self.config.keep_going;
            self.refused.extend(refused);
        }
        let started = Instant::now();
        let r = Running {
            assessment: a,
            lease,
            batch,
            started,
        };
        self.running.insert(i, r);
        Ok(())
    }

    /// A job ended: its resources go back, the trace gets its line, and it is committed or
    /// failed.
    fn on_finished(&mut self, id: usize, outcome: Outcome) -> Result<()> {
        let Some(mut r) = self.running.remove(&id) else {
            return Ok(());
        };
        let p = self.p;
        let stage = &p.stages[id];
        let secs = r.started.elapsed().as_secs_f64();
        let gpus = if self.executor.places_gpus() {
            stage.resources.gpus
        } else {
            r.lease.gpus.len()
        };
        // A member of a batch hands its slots to one still riding along.
        if r.lease.slots > 0
            && let Some(b) = &r.batch
            && let Some(heir) = self
                .running
                .values_mut()
                .find(|o| o.lease.slots == 0 && o.batch.as_ref() == Some(b))
        {
            heir.lease.slots = std::mem::take(&mut r.lease.slots);
        }
        self.sched.give_back(r.lease);
        let cache_dir = &self.ws.cache_dir;
        let usage = crate::trace::usage_path(cache_dir, &file_safe(&stage.name));
        let key = &r.assessment.key;
        let attempt = self.attempts.get(&id).copied().unwrap_or(0) + 1;
        crate::trace::record(cache_dir, &usage, stage, key, gpus, secs, &outcome, attempt);
        let result = match outcome {
            Outcome::Succeeded => run_cache::commit_outputs(self.ws, stage, &r.assessment, secs),
            Outcome::Failed(why) => Err(anyhow::anyhow!("{why}")),
        };
        match result {
            Ok(a) => {
                self.summary.ran += 1;
                self.record(stage, &a);
                let line = format!("ran {} in {secs:.1}s", stage.name);
                self.progress.finish(id, &line);
                self.sched.release(id);
            }
            Err(e) => {
                let log = self.ws.log_path(&stage.name);
                let tail = log_tail(&log, 20);
                let tail = if tail.is_empty() {
                    String::new()
                } else {
                    format!("\n{tail}")
                };
                let line = format!(
                    "FAILED {} after {secs:.1}s: {e:#}\n  log: {}{tail}",
                    stage.name,
                    log.display()
                );
                // An interrupted run retries nothing: the failure may be the interrupt's.
                let interrupted = self.interrupt.load(Ordering::SeqCst) != 0;
                if attempt <= stage.retry.count && !self.stop_new && !interrupted {
                    self.attempts.insert(id, attempt);
                    self.summary.retried += usize::from(attempt == 1);
                    let backoff = stage.retry.backoff_s;
                    self.progress.end_line(id);
                    self.progress.println(&format!(
                        "warning: {} failed (attempt {attempt} of {}): {e:#}; retrying in {backoff}s",
                        stage.name,
                        stage.retry.count + 1
                    ));
                    let at = Instant::now() + Duration::from_secs_f64(backoff);
                    self.retry_at.push((at, id, line));
                } else {
                    self.fail(id, line);
                }
            }
        }
        Ok(())
    }

    /// Stage `i` failed (`line` says how): everything downstream of it is skipped, and says
    /// why; without `--keep-going` nothing new starts.
    fn fail(&mut self, i: usize, line: String) {
        self.summary.failed += 1;
        self.progress.finish(i, &line);
        for d in self.sched.skip_downstream(i) {
            self.summary.skipped += 1;
            let (name, up) = (&self.p.stages[d].name, &self.p.stages[i].name);
            let line = format!("skipped {name} (upstream '{up}' failed)");
            self.progress.finish(d, &line);
        }
        self.stop_new |= !self.config.keep_going;
    }

    /// A stage done: its lock entry (written out by `flush_lock` and at the end of the run).
    fn record(&mut self, stage: &Stage, a: &Assessment) {
        let out_hashes = a
            .outs
            .iter()
            .filter_map(|(p, c)| c.hash().map(|h| (p.clone(), h.to_string())))
            .collect();
        let entry = LockEntry {
            key: a.key.clone(),
            fingerprint: a.fingerprint.clone(),
            out_hashes,
        };
        self.lock.stages.insert(stage.name.clone(), entry);
        self.lock_dirty = true;
    }

    /// The lock file at most once a second while stages finish, so that a killed run keeps
    /// most of what it did.
    fn flush_lock(&mut self) -> Result<()> {
        if self.lock_dirty && self.last_lock_write.elapsed() > Duration::from_secs(1) {
            self.lock.write(&self.ws.lock_path)?;
            self.lock_dirty = false;
            self.last_lock_write = Instant::now();
        }
        Ok(())
    }

    /// The end of the loop: what the run did, and what it did not start.
    fn finish(mut self) -> Finished {
        self.progress.done();
        let signal = self.interrupt.load(Ordering::SeqCst);
        let not_started = if signal != 0 || self.stop_new {
            self.sched.not_started()
        } else {
            0
        };
        // At 10^4 stages, freeing the plan entry by entry costs more than the process exit.
        std::mem::forget(std::mem::take(&mut self.planned));
        Finished {
            summary: self.summary,
            signal,
            not_started,
        }
    }

    /// The job of a stage run in this workspace (see [`make_job`]).
    fn make_job(&self, stage: &Stage, id: usize, a: &Assessment, gpus: &[usize]) -> Result<Job> {
        let maker = JobMaker {
            kinds: self.kinds,
            program: &self.program,
            gpu_ids: &self.config.gpu_ids,
            places_gpus: self.executor.places_gpus(),
        };
        make_job(&maker, &self.ws.root, stage, id, &a.key, gpus)
    }
}

/// What [`make_job`] needs besides the stage and where it runs.
pub(crate) struct JobMaker<'a> {
    pub kinds: &'a Registry,
    /// The program that embeds the engine (it runs kinds that are not shell lines).
    pub program: &'a Path,
    /// The device ids the GPU slots stand for (see [`Config::gpu_ids`]).
    pub gpu_ids: &'a [String],
    /// Whether the executor places GPUs itself ([`Executor::places_gpus`]).
    pub places_gpus: bool,
}

/// The process (or shell line) that runs `stage` (key `key`) with its environment and log.
/// `root` is the workspace it runs in: its working directory and checkpoint, and the `cache/`
/// that gets its spec file, log and usage. The runner passes the workspace; `repro verify`
/// (the `verify` module) a scratch copy, so that a rerun writes nothing in the workspace.
pub(crate) fn make_job(
    m: &JobMaker,
    root: &Path,
    stage: &Stage,
    id: usize,
    key: &str,
    gpus: &[usize],
) -> Result<Job> {
    let (places_gpus, cache_dir) = (m.places_gpus, root.join("cache"));
    let mut env = vec![
        ("REPRO_STAGE".to_string(), stage.name.clone()),
        ("REPRO_KEY".to_string(), key.to_string()),
        (
            "OMP_NUM_THREADS".to_string(),
            stage.resources.cpus.to_string(),
        ),
    ];
    if let Some(cp) = &stage.checkpoint {
        let cp = root.join(cp).display().to_string();
        env.push(("REPRO_CHECKPOINT".into(), cp));
    }
    if !gpus.is_empty() && !places_gpus {
        // Slots are handed out as indices; the stage sees the device ids they stand for.
        let ids = m.gpu_ids;
        let visible: Vec<String> = gpus
            .iter()
            .map(|&g| ids.get(g).cloned().unwrap_or_else(|| g.to_string()))
            .collect();
        env.push(("CUDA_VISIBLE_DEVICES".into(), visible.join(",")));
    }
    let action = &stage.action;
    let argv = match m.kinds.host(&action.kind)? {
        Host::Shell(line) => vec!["sh".to_string(), "-c".to_string(), line(&action.with)?],
        Host::Here(_) | Host::Program(_) => {
            // Inside the child, the visible devices are renumbered from 0.
            let n_gpus = gpus
                .len()
                .max(if places_gpus { stage.resources.gpus } else { 0 });
            let spec = crate::kinds::StageContext {
                stage: stage.name.clone(),
                kind: action.kind.clone(),
                key: key.to_string(),
                params: action.with.clone(),
                checkpoint: stage.checkpoint.as_ref().map(|c| root.join(c)),
                threads: stage.resources.cpus,
                gpus: (0..n_gpus).collect(),
                // The child's working directory; not part of the file.
                workspace: PathBuf::new(),
            };
            let path = cache_dir
                .join("specs")
                .join(format!("{}.json", file_safe(&stage.name)));
            std::fs::create_dir_all(path.parent().expect("has parent"))?;
            let text = serde_json::to_string_pretty(&spec)?;
            crate::fsutil::write_atomic(&path, text.as_bytes())?;
            // The program that embeds the engine finds the kind's body (here or elsewhere).
            let program = m.program.display().to_string();
            let path = path.display().to_string();
            vec![program, "internal".into(), "run-kind".into(), path]
        }
    };
    Ok(Job {
        id,
        stage: stage.name.clone(),
        argv,
        env,
        cwd: root.to_path_buf(),
        log: cache_dir
            .join("logs")
            .join(format!("{}.log", file_safe(&stage.name))),
        resources: stage.resources.clone(),
        gpus: gpus.to_vec(),
        // Measured (CPU time, peak memory) for the run trace: see crate::trace.
        usage: Some(crate::trace::usage_path(
            &cache_dir,
            &file_safe(&stage.name),
        )),
    })
}

/// What a stage asks of the scheduler: (cpus, gpus).
fn need(s: &Stage) -> (usize, usize) {
    (s.resources.cpus, s.resources.gpus)
}

/// The last `n` lines of a log, indented, for failure messages.
fn log_tail(path: &Path, n: usize) -> String {
    // Logs are the stage's bytes; only this display is lossy.
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
