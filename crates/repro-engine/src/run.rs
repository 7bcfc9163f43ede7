//! `repro run`: the scheduler loop.
//!
//! Stages become ready when everything upstream of them is done. A ready stage is assessed
//! against the workspace as it is at that moment (so it sees its upstream's new outputs); if
//! fresh it is skipped, if its key is in the run cache its outputs are restored, otherwise it
//! is handed to the executor within the `-j` and GPU slots. A stage is recorded (cache objects,
//! run cache, lock entry) only after it exited 0 and every declared output exists, so a run
//! killed at any moment never leaves a stage looking fresh with partial outputs.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cache::CorruptObject;
use crate::cache::run_cache;
use crate::executor::{Event, Executor, ExecutorKind, Job, Outcome};
use crate::kinds::{Host, Registry};
use crate::progress::Progress;
use crate::schedule::{Lease, Scheduler};
use crate::spec::{LoadOptions, Pipeline, Stage};
use crate::state::lockfile::{LockEntry, LockFile};
use crate::state::workspace::{Assessment, Workspace, WorkspaceLock, assess, file_safe};

/// The signal that interrupted the run (SIGINT, SIGTERM or SIGHUP), or 0; the run exits
/// with 128 + it, as a shell reports a process that signal ended.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub file: PathBuf,
    pub load: LoadOptions,
    pub targets: Vec<String>,
    /// Stages at once; `None`: the number of cores locally, 256 under Slurm (whose own
    /// scheduler then decides what runs).
    pub jobs: Option<usize>,
    pub dry_run: bool,
    pub force: bool,
    pub keep_going: bool,
    /// GPU slots (`--resources gpu=N`); `None` = detect.
    pub gpus: Option<usize>,
    /// `--executor`; overrides the pipeline's `executor:`.
    pub executor: Option<String>,
    /// Wait for another run holding the workspace instead of failing.
    pub wait: bool,
    /// The remote cache (`--remote`, `--no-remote`; `repro pull` sets `pull_only`).
    pub remote: crate::remote::RemoteArgs,
    /// `--downstream`: the targets and every stage after them.
    pub downstream: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub ran: usize,
    pub fresh: usize,
    pub restored: usize,
    /// Restored from the remote cache.
    pub restored_remote: usize,
    pub failed: usize,
    pub skipped: usize,
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
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// Load the pipeline and its DAG, printing spec errors the way users should see them.
pub fn load(file: &Path, opts: &LoadOptions) -> Result<(Pipeline, crate::graph::Dag)> {
    let p = crate::spec::load(file, opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dag = crate::graph::build(&p);
    checked(p, dag)
}

/// The pipeline with its DAG once what the engine may write or delete (docs/safety.md) is
/// checked too, before anything runs; every error of both checks at once.
fn checked(
    p: Pipeline,
    dag: Result<crate::graph::Dag, crate::spec::SpecErrors>,
) -> Result<(Pipeline, crate::graph::Dag)> {
    let confined = crate::confine::check_pipeline(&p);
    match (dag, confined) {
        (Ok(dag), Ok(())) => Ok((p, dag)),
        (Err(a), Err(b)) => Err(anyhow::anyhow!(
            "{}",
            crate::spec::SpecErrors(a.0.into_iter().chain(b.0).collect())
        )),
        (Err(e), _) | (_, Err(e)) => Err(anyhow::anyhow!("{e}")),
    }
}

/// GPUs on this machine: `CUDA_VISIBLE_DEVICES` if set, else `nvidia-smi -L`, else none.
pub fn detect_gpus() -> usize {
    detect_gpu_ids().len()
}

/// The device ids stages may be handed, as `CUDA_VISIBLE_DEVICES` spells them: the user's own
/// list when the variable is set (a user who allowed `2,3` must never get `0`), else
/// `0..n` for the `n` GPUs `nvidia-smi -L` lists. Tests fake GPUs through the variable alone.
pub fn detect_gpu_ids() -> Vec<String> {
    if let Some(ids) = visible_device_ids() {
        return ids;
    }
    (0..count_nvidia_smi_gpus())
        .map(|i| i.to_string())
        .collect()
}

/// `CUDA_VISIBLE_DEVICES`, split (`None` when unset).
fn visible_device_ids() -> Option<Vec<String>> {
    let v = std::env::var("CUDA_VISIBLE_DEVICES").ok()?;
    Some(
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// `--resources gpu=N`: N slots, named after the user's visible devices where there are
/// enough of them.
fn gpu_ids_for_slots(n: usize) -> Vec<String> {
    match visible_device_ids() {
        Some(ids) if ids.len() >= n => ids.into_iter().take(n).collect(),
        _ => (0..n).map(|i| i.to_string()).collect(),
    }
}

fn count_nvidia_smi_gpus() -> usize {
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count()
        })
        .unwrap_or(0)
}

struct Running {
    assessment: Assessment,
    /// Its CPU slots and GPUs, given back to the scheduler when it finishes.
    lease: Lease,
    /// The job array it went to Slurm in (round and group, see `array_key`), if batched.
    array: Option<String>,
    started: Instant,
}

/// The workspace state a command needs besides the pipeline: the run lock (when taken), the
/// workspace with its state database and stat cache, and the parsed `repro.lock`.
pub type State = (Option<WorkspaceLock>, Workspace, LockFile);

/// The workspace state, loading on a second thread while the caller parses the pipeline: on a
/// large no-op run the two take about as long. `run_lock`: whether to take the run lock (and
/// need the state database) or read without them, as `status` and `--dry-run` do.
/// Dropping it unjoined (the pipeline failed to parse) still waits for the thread, so the
/// process never exits while the state database is being created or written.
///
/// As soon as the state database is open, the thread also hands over the checked plan stored
/// there for this pipeline and these options, if any (see [`StateLoader::pipeline`]).
pub struct StateLoader {
    handle: Option<std::thread::JoinHandle<Result<State>>>,
    /// The stored plan's bytes (`None`: no database, or no plan under `plan_key`).
    plan: Option<crossbeam_channel::Receiver<Option<Vec<u8>>>>,
    plan_key: String,
}

pub fn load_state_in_background(file: &Path, plan_key: &str, run_lock: RunLock) -> StateLoader {
    let root = crate::spec::workspace_root(file);
    let (plan_tx, plan_rx) = crossbeam_channel::bounded(1);
    let key = plan_key.to_string();
    let handle = std::thread::spawn(move || -> Result<State> {
        let guard = match run_lock {
            RunLock::Take { wait } => Some(WorkspaceLock::acquire(&root.join("cache"), wait)?),
            RunLock::Held(guard) => Some(guard),
            RunLock::None => None,
        };
        let db_wait = if guard.is_some() {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        };
        // The stored plan goes to the main thread as soon as the database is open (once; a
        // damaged file reopened sends nothing more), before the stat cache is read.
        let mut plan_tx = Some(plan_tx);
        let mut send_plan = move |db: &crate::state::db::StateDb| {
            if let Some(tx) = plan_tx.take() {
                let _ = tx.send(db.plan(&key).ok().flatten());
            }
        };
        let mut ws = if guard.is_some() {
            Workspace::open_with(&root, db_wait, &mut send_plan)?
        } else {
            Workspace::open_for_reading_with(&root, &mut send_plan)?
        };
        // No database (busy, read-only): the sender is dropped here and the plan is parsed.
        drop(send_plan);
        if let Some(g) = &guard
            && g.taken_over
        {
            // A killed run may have left half-written objects; only then is the sweep worth it.
            ws.objects.remove_stale_temps();
        }
        if guard.is_some() && ws.db_if_open().is_none() {
            anyhow::bail!(
                "the state database {} is held by another process",
                ws.cache_dir.join("state.redb").display()
            );
        }
        let lock = crate::state::workspace::read_lock(&mut ws)?;
        Ok((guard, ws, lock))
    });
    StateLoader {
        handle: Some(handle),
        plan: Some(plan_rx),
        plan_key: plan_key.to_string(),
    }
}

/// The run lock (`cache/run.pid`) as [`load_state_in_background`] is to have it.
pub enum RunLock {
    /// Read without it.
    None,
    /// Take it, waiting for another run if `wait`.
    Take { wait: bool },
    /// Already taken.
    Held(WorkspaceLock),
}

impl StateLoader {
    /// The pipeline and its DAG: the plan stored in the state database when every file it
    /// was made from is unchanged (the checks that depend on the file system are made again),
    /// else loaded from the files. The third value is set when it was loaded: the key under
    /// which to keep it ([`crate::state::plan_cache::remember`], once the state is joined).
    pub fn pipeline(
        &mut self,
        file: &Path,
        opts: &LoadOptions,
    ) -> Result<(Pipeline, crate::graph::Dag, Option<String>)> {
        let stored = self.plan.take().and_then(|rx| rx.recv().ok().flatten());
        if let Some((p, shape)) =
            stored.and_then(|b| crate::state::plan_cache::lookup(&b, &self.plan_key))
        {
            let dag = crate::graph::rebuild(&p, &shape);
            let (p, dag) = checked(p, dag)?;
            return Ok((p, dag, None));
        }
        let (p, dag) = load(file, opts)?;
        Ok((p, dag, Some(self.plan_key.clone())))
    }

    pub fn join(mut self) -> Result<State> {
        let handle = self.handle.take().expect("joined once");
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("loading the workspace state panicked"))?
    }
}

impl Drop for StateLoader {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Ctrl-C / SIGTERM: stop starting stages, cancel running ones, and interrupt hashing.
fn install_interrupt_handler() {
    INTERRUPTED.store(0, Ordering::SeqCst);
    crate::state::hashing::reset_cancel();
    // A handler of our own rather than `ctrlc`'s, which does not say which signal came.
    extern "C" fn on_signal(sig: libc::c_int) {
        // Atomic stores only: async-signal-safe.
        INTERRUPTED.store(sig, Ordering::SeqCst);
        crate::state::hashing::cancel();
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores atomics.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Run the pipeline; returns the process exit code.
pub fn run(opts: &RunOptions) -> Result<i32> {
    let t0 = Instant::now();
    let mut phases = crate::progress::Phases::start();
    let plan_key = crate::state::plan_cache::key(&opts.file, &opts.load);
    let run_lock = match up_to_date(opts, &plan_key)? {
        UpToDate::Yes(stages) => {
            phases.mark("up-to-date record holds");
            let summary = Summary {
                fresh: stages,
                ..Default::default()
            };
            print_summary(&summary, false, 0, t0);
            return Ok(0);
        }
        UpToDate::No(held) => held,
    };
    // Before anything hashes (the state loader, retiring stages, assessing).
    install_interrupt_handler();
    let mut state = load_state_in_background(&opts.file, &plan_key, run_lock);
    let (p, mut dag, parsed) = state.pipeline(&opts.file, &opts.load)?;
    phases.mark(if parsed.is_some() {
        "parse + check pipeline"
    } else {
        "reuse checked plan"
    });
    let selected = crate::targets::select(&p, &dag, &opts.targets, opts.downstream)?;
    // Held (when taken) until the run ends.
    let (_run_lock, mut ws, mut lock) = state.join()?;
    crate::state::plan_cache::remember(&ws, parsed, &p, &dag);
    ws.source_stats = std::mem::take(&mut dag.source_stats);
    phases.mark("wait for workspace state");
    if opts.dry_run {
        return dry_run(&p, &dag, &selected, &ws, &lock);
    }
    if _run_lock.is_none() {
        // A read-only workspace (see `up_to_date`).
        return read_only_run(&p, &dag, &selected, &ws, &lock, t0);
    }
    // Compared at the end, so an unchanged lock is not rewritten (cheaper than serialising).
    let lock_before = lock.clone();
    retire_deleted_stages(&ws, &p, &mut lock)?;
    phases.mark("retire deleted stages");
    // Connects only when a stage first needs it.
    let remote = crate::remote::RunRemote::new(&opts.remote, &p)?;
    if remote.is_configured() {
        crate::remote::transfer::clear_tmp(&ws.cache_dir)?;
    }

    let executor_kind: ExecutorKind = opts
        .executor
        .as_deref()
        .or(p.executor.as_deref())
        .unwrap_or("local")
        .parse()?;
    let mut executor = make_executor(executor_kind, &p)?;

    let jobs = opts
        .jobs
        .unwrap_or_else(|| {
            if executor_kind == ExecutorKind::Slurm {
                256
            } else {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            }
        })
        .max(1);
    // Only look for GPUs (which may spawn nvidia-smi) when a selected stage wants one.
    let wants_gpu = selected.iter().any(|&i| p.stages[i].resources.gpus > 0);
    let gpu_ids: Vec<String> = match opts.gpus {
        Some(n) => gpu_ids_for_slots(n),
        None if wants_gpu => detect_gpu_ids(),
        None => Vec::new(),
    };
    let gpu_total = gpu_ids.len();
    let mut sched = Scheduler::new(&dag, &selected, jobs, gpu_total);
    let need = |i: usize| (p.stages[i].resources.cpus, p.stages[i].resources.gpus);
    let warned_no_gpu = std::cell::Cell::new(false);
    let batching = executor.batches();
    let mut round = 0usize;

    let mut running: HashMap<usize, Running> = HashMap::new();
    let mut summary = Summary::default();
    let mut progress = Progress::new(selected.len());
    let mut stop_new = false;
    let mut lock_dirty = false;
    let mut last_lock_write = Instant::now();
    let exe = std::env::current_exe().context("cannot find the repro binary")?;
    // Every selected stage planned up front (assessed in parallel; `plan` is also what
    // `status` and `--dry-run` report). A Fresh verdict is not assessed again: on a no-op run
    // of many stages this is most of the work. Anything else is re-assessed when it starts.
    let assessed: Vec<(usize, Result<Assessment>)> = if opts.force {
        Vec::new()
    } else {
        crate::plan::plan(&ws, &p, &dag, &selected, &lock)
            .into_iter()
            .map(|(i, r)| (i, r.map(|x| x.assessment)))
            .collect()
    };
    // Nothing runs if a stage would replace something at its outputs that repro did not
    // produce (unless --force): checked here, before anything runs, and again as each starts.
    let owners = crate::confine::Ownership::new(opts.force);
    let unowned: Vec<crate::spec::SpecError> = assessed
        .iter()
        .filter_map(|(i, a)| Some((*i, a.as_ref().ok().filter(|a| !a.fresh())?)))
        .flat_map(|(i, a)| owners.unowned(&ws, &lock, &p.stages[i], a))
        .collect();
    if !unowned.is_empty() {
        anyhow::bail!("{}", crate::spec::SpecErrors(unowned));
    }
    // Every remote entry whose key is already known, fetched in one batch (see `prefetch`).
    let planned: Vec<_> = assessed
        .iter()
        .filter_map(|(i, a)| Some((&p.stages[*i], a.as_ref().ok()?)))
        .collect();
    remote.prefetch(&ws, &planned);
    drop(planned);
    let mut pre_fresh: HashMap<usize, Assessment> = assessed
        .into_iter()
        .filter_map(|(i, a)| a.ok().filter(Assessment::fresh).map(|a| (i, a)))
        .collect();
    // Stages whose outputs this run replaced (ran or restored).
    let mut disturbed: BTreeSet<usize> = BTreeSet::new();
    phases.mark("assess all (parallel)");

    // Everything downstream of a failed stage is skipped, and says why.
    let skip_downstream = |sched: &mut Scheduler, i: usize, progress: &mut Progress| {
        let skipped = sched.skip_downstream(i);
        for &d in &skipped {
            progress.finish(
                d,
                &format!(
                    "skipped {} (upstream '{}' failed)",
                    p.stages[d].name, p.stages[i].name
                ),
            );
        }
        skipped.len()
    };

    loop {
        if INTERRUPTED.load(Ordering::SeqCst) != 0 {
            progress.println("interrupted: stopping running stages");
            executor.cancel_all();
            break;
        }
        // Start what can start. Jobs go to the executor as a batch after the round when it
        // batches them (Slurm job arrays), else each at once. In a batch, stages of one
        // foreach/matrix with equal resources share one array that Slurm runs at most as many
        // at a time as took slots: the rest "ride along" without slots, queued by Slurm (`%N`),
        // and inherit the slots of elements that finish, so -j still bounds what runs.
        round += 1;
        let mut batch: Vec<(Job, Option<String>)> = Vec::new();
        let mut refused: Vec<(usize, anyhow::Error)> = Vec::new();
        let mut arrays: HashMap<String, (usize, usize)> = HashMap::new(); // members, with slots
        let array_key = |i: usize| {
            let s = &p.stages[i];
            let base = s.name.split('@').next().unwrap_or(&s.name);
            format!("{round}\u{0}{base}\u{0}{:?}", s.resources)
        };
        while !stop_new {
            // A stage without GPUs may ride along in its group's array (see above).
            let rides = |i: usize| {
                batching
                    && (gpu_total == 0 || p.stages[i].resources.gpus == 0)
                    && arrays
                        .get(&array_key(i))
                        .is_some_and(|&(n, _)| n < MAX_ARRAY)
            };
            let Some(i) = sched.next(need, rides) else {
                break;
            };
            let stage = &p.stages[i];
            let pre = pre_fresh
                .remove(&i)
                .filter(|_| !dag.upstream(i).iter().any(|u| disturbed.contains(u)));
            let outcome = start_stage(&ws, stage, pre, &lock, &owners, &mut progress, (&remote, i))
                .with_context(|| format!("stage '{}'", stage.name));
            if matches!(outcome, Ok(Start::Restored(..) | Start::Run(_))) {
                disturbed.insert(i);
            }
            match outcome {
                // Ctrl-C while hashing its inputs: not a failure, just not started.
                Err(e)
                    if e.downcast_ref::<crate::state::hashing::Interrupted>()
                        .is_some() =>
                {
                    sched.not_taken(i);
                    stop_new = true;
                }
                Err(e) => {
                    summary.failed += 1;
                    progress.finish(i, &format!("FAILED {}: {e:#}", stage.name));
                    summary.skipped += skip_downstream(&mut sched, i, &mut progress);
                    stop_new |= !opts.keep_going;
                }
                Ok(Start::Fresh) => {
                    summary.fresh += 1;
                    progress.skip_quietly();
                    sched.release(i);
                }
                Ok(Start::Restored(a, from_remote)) => {
                    if from_remote {
                        summary.restored_remote += 1;
                    } else {
                        summary.restored += 1;
                    }
                    record_lock(&mut lock, stage, &a);
                    lock_dirty = true;
                    let from = if from_remote {
                        "the remote cache"
                    } else {
                        "cache"
                    };
                    progress.finish(i, &format!("restored {} from {from}", stage.name));
                    sched.release(i);
                }
                Ok(Start::Run(a)) => {
                    if stage.resources.gpus > 0 && gpu_total == 0 && !warned_no_gpu.replace(true) {
                        progress.println("note: no GPU found; stages that declare `gpu:` run without one (pass --resources gpu=N to set slots)");
                    }
                    // Takes slots unless it rides along in an array (see above).
                    let lease = sched.lease(need(i));
                    let job = make_job(
                        &ws,
                        &opts.load.kinds,
                        &exe,
                        stage,
                        i,
                        &a,
                        &lease.gpus,
                        &gpu_ids,
                        executor_kind == ExecutorKind::Slurm,
                    )?;
                    progress.start(i, &stage.name, "running");
                    let array = batching.then(|| array_key(i));
                    if let Some(k) = &array {
                        let e = arrays.entry(k.clone()).or_default();
                        e.0 += 1;
                        e.1 += usize::from(lease.slots > 0);
                    }
                    batch.push((job, array.clone()));
                    if !batching {
                        let jobs_now = std::mem::take(&mut batch)
                            .into_iter()
                            .map(|(j, _)| (j, 1))
                            .collect();
                        refused.extend(executor.submit_many(jobs_now));
                        stop_new |= !refused.is_empty() && !opts.keep_going;
                    }
                    running.insert(
                        i,
                        Running {
                            assessment: a,
                            lease,
                            array,
                            started: Instant::now(),
                        },
                    );
                }
            }
        }
        if !batch.is_empty() {
            // An array runs at most as many elements at once as took slots.
            let jobs_now = batch
                .into_iter()
                .map(|(j, k)| (j, k.and_then(|k| arrays.get(&k)).map_or(1, |e| e.1.max(1))))
                .collect();
            refused.extend(executor.submit_many(jobs_now));
        }
        for (i, e) in refused {
            let Some(r) = running.remove(&i) else {
                continue;
            };
            sched.give_back(r.lease);
            summary.failed += 1;
            progress.finish(i, &format!("FAILED {}: {e:#}", p.stages[i].name));
            summary.skipped += skip_downstream(&mut sched, i, &mut progress);
            stop_new |= !opts.keep_going;
        }
        if running.is_empty() && (!sched.has_ready() || stop_new) {
            break;
        }
        for event in executor.poll(Duration::from_millis(100))? {
            match event {
                Event::Progress { id, message, .. } => {
                    progress.update(id, &p.stages[id].name, &message)
                }
                Event::Finished { id, outcome } => {
                    let Some(mut r) = running.remove(&id) else {
                        continue;
                    };
                    let stage = &p.stages[id];
                    let secs = r.started.elapsed().as_secs_f64();
                    let n_gpus = if executor_kind == ExecutorKind::Slurm {
                        stage.resources.gpus
                    } else {
                        r.lease.gpus.len()
                    };
                    // An element of a job array hands its slots to one still riding along.
                    if r.lease.slots > 0
                        && let Some(k) = &r.array
                        && let Some(heir) = running
                            .values_mut()
                            .find(|o| o.lease.slots == 0 && o.array.as_ref() == Some(k))
                    {
                        heir.lease.slots = std::mem::take(&mut r.lease.slots);
                    }
                    sched.give_back(r.lease);
                    let usage = crate::trace::usage_path(&ws.cache_dir, &file_safe(&stage.name));
                    crate::trace::record(
                        &ws.cache_dir,
                        &usage,
                        stage,
                        &r.assessment.key,
                        n_gpus,
                        secs,
                        &outcome,
                    );
                    let result = match outcome {
                        Outcome::Succeeded => {
                            run_cache::commit_outputs(&ws, stage, &r.assessment, secs)
                        }
                        Outcome::Failed(why) => Err(anyhow::anyhow!("{why}")),
                    };
                    match result {
                        Ok(a) => {
                            summary.ran += 1;
                            record_lock(&mut lock, stage, &a);
                            lock_dirty = true;
                            progress.finish(id, &format!("ran {} in {:.1}s", stage.name, secs));
                            sched.release(id);
                        }
                        Err(e) => {
                            summary.failed += 1;
                            let log = ws.log_path(&stage.name);
                            let tail = log_tail(&log, 20);
                            progress.finish(
                                id,
                                &format!(
                                    "FAILED {} after {:.1}s: {e:#}\n  log: {}{}",
                                    stage.name,
                                    secs,
                                    log.display(),
                                    if tail.is_empty() {
                                        String::new()
                                    } else {
                                        format!("\n{tail}")
                                    }
                                ),
                            );
                            summary.skipped += skip_downstream(&mut sched, id, &mut progress);
                            stop_new |= !opts.keep_going;
                        }
                    }
                }
            }
        }
        if lock_dirty && last_lock_write.elapsed() > Duration::from_secs(1) {
            lock.write(&ws.lock_path)?;
            lock_dirty = false;
            last_lock_write = Instant::now();
        }
    }
    progress.done();
    phases.mark("schedule (assess + run)");
    let signal = INTERRUPTED.load(Ordering::SeqCst);
    let interrupted = signal != 0;
    let lock_changed = lock != lock_before;
    if lock_changed {
        crate::state::workspace::write_lock(&ws, &lock)?;
        crate::gitignore::after_lock_written(&p);
    }
    ws.save_stat()?;
    phases.mark("write lock + stat cache");
    // A run of the whole pipeline, locally, that found every stage fresh and changed nothing:
    // what that rested on is kept, so that the next such run only stats (`up_to_date`).
    let whole = opts.targets.is_empty() && selected.len() == p.stages.len();
    if whole
        && !lock_changed
        && !interrupted
        && !opts.force
        && !opts.remote.pull_only
        && executor_kind == ExecutorKind::Local
        && summary
            == (Summary {
                fresh: selected.len(),
                ..Default::default()
            })
    {
        crate::state::up_to_date::record(&ws, &p, &selected, &plan_key, &run_context(opts));
        phases.mark("keep the up-to-date record");
    }
    let not_run = if interrupted || stop_new {
        sched.not_started()
    } else {
        0
    };
    print_summary(&summary, interrupted, not_run, t0);
    drop(executor);
    // The process ends right after this: freeing 10^5 map entries and strings one by one
    // would cost a no-op run of 10,000 stages about 70 ms, so the big read-only structures
    // are left to the exit. The state database is closed properly.
    ws.close();
    std::mem::forget((pre_fresh, lock_before, lock, dag, p));
    phases.mark("close state db");
    Ok(if interrupted {
        128 + signal
    } else if summary.failed > 0 {
        1
    } else {
        0
    })
}

/// The summary line every run ends with.
fn print_summary(summary: &Summary, interrupted: bool, not_started: usize, t0: Instant) {
    let mut line = summary.to_string();
    if not_started > 0 {
        line.push_str(&format!(", {not_started} not started"));
    }
    if summary.ran + summary.restored + summary.restored_remote + summary.failed == 0
        && !interrupted
    {
        line.push_str(" — everything is up to date");
    }
    // Milliseconds matter for a no-op run, not for an hour of training.
    let secs = t0.elapsed().as_secs_f64();
    if !crate::ui::quiet() {
        if secs < 1.0 {
            println!("{line} ({secs:.3}s)")
        } else {
            println!("{line} ({secs:.2}s)")
        }
    }
}

enum UpToDate {
    /// The up-to-date record holds: this many stages, all fresh.
    Yes(usize),
    /// The full path, with the run lock when it was taken here.
    No(RunLock),
}

/// Whether `run` can answer from the up-to-date record (`crate::state::up_to_date`): only a
/// run of the whole pipeline, neither forced nor dry, holding the run lock (a busy workspace
/// is the same error either way), after an earlier run that ended cleanly (a killed one may
/// have left temporary objects or stage processes for the full path to clear).
fn up_to_date(opts: &RunOptions, plan_key: &str) -> Result<UpToDate> {
    let full_path = RunLock::Take { wait: opts.wait };
    if opts.dry_run {
        return Ok(UpToDate::No(RunLock::None));
    }
    let root = crate::spec::workspace_root(&opts.file);
    if read_only(&root) {
        // Nobody can change it, so no lock is needed: the run is checked, not made.
        return Ok(UpToDate::No(RunLock::None));
    }
    if !opts.targets.is_empty()
        || opts.force
        || opts.remote.pull_only
        || !crate::state::up_to_date::path(&root).exists()
    {
        return Ok(UpToDate::No(full_path));
    }
    let cache = root.join("cache");
    let guard = WorkspaceLock::acquire(&cache, opts.wait)?;
    let stage_left = std::fs::read_dir(cache.join("running")).is_ok_and(|mut d| d.next().is_some());
    if guard.taken_over || stage_left {
        return Ok(UpToDate::No(RunLock::Held(guard)));
    }
    Ok(
        match crate::state::up_to_date::check(&root, plan_key, Some(&run_context(opts))) {
            Some(stages) => UpToDate::Yes(stages.len()),
            None => UpToDate::No(RunLock::Held(guard)),
        },
    )
}

/// The options of a run besides its plan that could make it fail before assessing anything
/// (an unknown executor, a remote that does not parse): part of the up-to-date record.
fn run_context(opts: &RunOptions) -> String {
    format!(
        "executor {:?}; remote {:?}, off {}; REPRO_REMOTE {:?}",
        opts.executor,
        opts.remote.remote,
        opts.remote.no_remote,
        std::env::var_os("REPRO_REMOTE")
    )
}

/// Most elements of one Slurm job array (Slurm's default `MaxArraySize` is 1001).
const MAX_ARRAY: usize = 1000;

/// Stages that are no longer in the pipeline lose their lock entry, and their outputs leave
/// the workspace (they stay in the cache, so a stage that comes back restores them): otherwise
/// a directory dep such as `runs/` would keep seeing results of stages that no longer exist.
fn retire_deleted_stages(ws: &Workspace, p: &Pipeline, lock: &mut LockFile) -> Result<()> {
    let names: BTreeSet<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
    let declared: BTreeSet<&str> = p
        .stages
        .iter()
        .flat_map(|s| s.outs.iter().map(|o| o.path.as_str()))
        .collect();
    let gone: Vec<String> = lock
        .stages
        .keys()
        .filter(|k| !names.contains(k.as_str()))
        .cloned()
        .collect();
    let rules = (!gone.is_empty()).then(|| crate::confine::Rules::new(p));
    for name in gone {
        let entry = lock.stages.remove(&name).expect("listed");
        for (path, hash) in &entry.out_hashes {
            let full = ws.root.join(path);
            if declared.contains(path.as_str()) || std::fs::symlink_metadata(&full).is_err() {
                continue;
            }
            // The lock is shared, so untrusted: only paths the rule allows are ever removed.
            if let Some(Err(why)) = rules.as_ref().map(|r| r.deletable(path)) {
                println!(
                    "note: {path} left in place although its stage '{name}' was removed: {why}"
                );
                continue;
            }
            // Only remove what is exactly what the stage produced, and so is in the cache.
            if ws.hasher().content(path)?.hash() == Some(hash.as_str()) && ws.objects.has(hash) {
                crate::cache::remove_any(&full);
                println!(
                    "removed {path}: its stage '{name}' is no longer in the pipeline (kept in the cache)"
                );
            }
        }
    }
    Ok(())
}

enum Start {
    Fresh,
    /// Restored from the run cache; `true` when its entry came from the remote cache.
    Restored(Assessment, bool),
    Run(Assessment),
}

/// Decide what to do with a ready stage and, for a cache hit, restore it.
/// `pre`: an assessment made earlier this run that is still valid (upstream unchanged).
/// `remote`: the remote cache and this stage's index, asked when the local run cache misses.
#[allow(clippy::too_many_arguments)]
fn start_stage(
    ws: &Workspace,
    stage: &Stage,
    pre: Option<Assessment>,
    lock: &LockFile,
    owners: &crate::confine::Ownership,
    progress: &mut Progress,
    (remote, id): (&crate::remote::RunRemote, usize),
) -> Result<Start> {
    let force = owners.force;
    let a = match pre {
        Some(a) => a,
        None => assess(ws, stage, lock.stages.get(&stage.name))?,
    };
    if !force && a.fresh() {
        return Ok(Start::Fresh);
    }
    let unowned = owners.unowned(ws, lock, stage, &a);
    if !unowned.is_empty() {
        anyhow::bail!("{}", crate::spec::SpecErrors(unowned));
    }
    let db = ws.db()?;
    let mut from_remote = false;
    let found = match db.get_run(&a.key)? {
        _ if force => None,
        Some(rec) => Some(rec),
        None => remote
            .fetch(ws, stage, id, &a.key, progress)?
            .inspect(|_| from_remote = true),
    };
    if let Some(rec) = found {
        // What the outputs hold now goes into the cache first (a no-op when it came from
        // there), so that replacing them loses nothing, even an output edited by hand.
        run_cache::preserve_outputs(ws, &a)?;
        match run_cache::restore(ws, &rec) {
            Ok(()) => {
                // Every restored byte was verified against the record while copied.
                return Ok(Start::Restored(
                    run_cache::restored_assessment(ws, &a, &rec)?,
                    from_remote,
                ));
            }
            Err(e) => {
                if let Some(c) = e.downcast_ref::<CorruptObject>() {
                    progress.println(&format!(
                        "warning: {c}; dropped it, recomputing {}",
                        stage.name
                    ));
                    ws.objects.drop_object(&c.path);
                } else {
                    progress.println(&format!(
                        "warning: cannot restore {} from cache ({e:#}); recomputing",
                        stage.name
                    ));
                }
                // Only a damaged cache entry is forgotten; a workspace problem is not the
                // cache's fault, and the cached configuration stays restorable.
                if e.downcast_ref::<CorruptObject>().is_some() {
                    db.remove_run(&a.key)?;
                }
            }
        }
    }
    if remote.pull_only() {
        anyhow::bail!(
            "not in the local or the remote run cache (key {}); `repro run` computes it",
            &a.key[..a.key.len().min(12)]
        );
    }
    owners.claim(ws, lock, stage)?;
    run_cache::prepare_outputs(ws, stage, &a)?;
    Ok(Start::Run(a))
}

/// Whether the workspace cannot be written (a read-only mount, or no write permission): its
/// `cache/`, or the workspace itself while it has none. One `access` call.
fn read_only(root: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let writable = |p: &Path| -> std::io::Result<()> {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated path; access only asks.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let refused = |e: &std::io::Error| {
        e.raw_os_error() == Some(libc::EROFS) || e.kind() == std::io::ErrorKind::PermissionDenied
    };
    match writable(&root.join("cache")) {
        Ok(()) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            writable(root).is_err_and(|e| refused(&e))
        }
        Err(e) => refused(&e),
    }
}

/// `repro run` on a read-only workspace: it succeeds when every selected stage is fresh (a
/// no-op run needs to write nothing), and otherwise says what would have to run.
fn read_only_run(
    p: &Pipeline,
    dag: &crate::graph::Dag,
    selected: &[usize],
    ws: &Workspace,
    lock: &LockFile,
    t0: Instant,
) -> Result<i32> {
    let mut stale = Vec::new();
    for (i, planned) in crate::plan::plan(ws, p, dag, selected, lock) {
        if !planned?.verdict.is_fresh() {
            stale.push(p.stages[i].name.as_str());
        }
    }
    if !stale.is_empty() {
        let n = stale.len();
        let more = if n > 5 { ", …" } else { "" };
        stale.truncate(5);
        anyhow::bail!(
            "the workspace is read-only ({} cannot be written), and {} stage(s) are not fresh \
             ({}{more}); nothing was run (`repro status` says why)",
            ws.cache_dir.display(),
            n,
            stale.join(", ")
        );
    }
    let summary = Summary {
        fresh: selected.len(),
        ..Default::default()
    };
    print_summary(&summary, false, 0, t0);
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn make_job(
    ws: &Workspace,
    kinds: &Registry,
    exe: &Path,
    stage: &Stage,
    id: usize,
    a: &Assessment,
    gpus: &[usize],
    gpu_ids: &[String],
    slurm: bool,
) -> Result<Job> {
    let mut env = vec![
        ("REPRO_STAGE".to_string(), stage.name.clone()),
        ("REPRO_KEY".to_string(), a.key.clone()),
        (
            "OMP_NUM_THREADS".to_string(),
            stage.resources.cpus.to_string(),
        ),
    ];
    if let Some(cp) = &stage.checkpoint {
        env.push((
            "REPRO_CHECKPOINT".into(),
            ws.root.join(cp).display().to_string(),
        ));
    }
    if !gpus.is_empty() && !slurm {
        env.push((
            "CUDA_VISIBLE_DEVICES".into(),
            // Slots are handed out as indices; the stage sees the device ids they stand for.
            gpus.iter()
                .map(|&g| gpu_ids.get(g).cloned().unwrap_or_else(|| g.to_string()))
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    let action = &stage.action;
    let argv = match kinds.host(&action.kind)? {
        Host::Shell(line) => vec!["sh".to_string(), "-c".to_string(), line(&action.with)?],
        Host::Here(_) | Host::Program(_) => {
            let spec = crate::kinds::StageContext {
                stage: stage.name.clone(),
                kind: action.kind.clone(),
                params: action.with.clone(),
                checkpoint: stage.checkpoint.as_ref().map(|c| ws.root.join(c)),
                threads: stage.resources.cpus,
                // Inside the child, the visible devices are renumbered from 0.
                gpus: (0..gpus.len().max(if slurm { stage.resources.gpus } else { 0 })).collect(),
                // The child's working directory; not part of the file.
                workspace: PathBuf::new(),
            };
            let path = ws
                .cache_dir
                .join("specs")
                .join(format!("{}.json", file_safe(&stage.name)));
            std::fs::create_dir_all(path.parent().expect("has parent"))?;
            crate::fsutil::write_atomic(&path, serde_json::to_string_pretty(&spec)?.as_bytes())?;
            // The program that embeds the engine finds the kind's body (here or elsewhere).
            vec![
                exe.display().to_string(),
                "internal".into(),
                "run-kind".into(),
                path.display().to_string(),
            ]
        }
    };
    Ok(Job {
        id,
        stage: stage.name.clone(),
        argv,
        env,
        cwd: ws.root.clone(),
        log: ws.log_path(&stage.name),
        resources: stage.resources.clone(),
        gpus: gpus.to_vec(),
        // Measured (CPU time, peak memory) for the run trace: see crate::trace.
        usage: Some(crate::trace::usage_path(
            &ws.cache_dir,
            &file_safe(&stage.name),
        )),
    })
}

/// After a stage exited 0: check its outputs, store them, record the run.
fn record_lock(lock: &mut LockFile, stage: &Stage, a: &Assessment) {
    let out_hashes = a
        .outs
        .iter()
        .filter_map(|(p, c)| c.hash().map(|h| (p.clone(), h.to_string())))
        .collect();
    lock.stages.insert(
        stage.name.clone(),
        LockEntry {
            key: a.key.clone(),
            fingerprint: a.fingerprint.clone(),
            out_hashes,
        },
    );
}

/// The last `n` lines of a log, indented, for failure messages.
pub fn log_tail(path: &Path, n: usize) -> String {
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

fn make_executor(kind: ExecutorKind, p: &Pipeline) -> Result<Box<dyn Executor>> {
    match kind {
        ExecutorKind::Local => Ok(Box::new(
            crate::executor::local::LocalExecutor::with_pid_dir(
                p.root.join("cache").join("running"),
            )?,
        )),
        ExecutorKind::Slurm => crate::executor::make_slurm(p),
    }
}

/// `--dry-run`: what would happen, without running or recording anything: the verdicts of
/// [`plan`](crate::plan::plan), as `repro status` reports them and `run` acts on them.
fn dry_run(
    p: &Pipeline,
    dag: &crate::graph::Dag,
    selected: &[usize],
    ws: &Workspace,
    lock: &LockFile,
) -> Result<i32> {
    use crate::plan::Verdict;
    let (mut run, mut may, mut fresh, mut restore) = (0, 0, 0, 0);
    for (i, planned) in crate::plan::plan(ws, p, dag, selected, lock) {
        let name = &p.stages[i].name;
        let v = match planned {
            Ok(planned) => planned.verdict,
            // As `repro status` says: this stage is stale for that reason, the rest as usual.
            Err(e) => Verdict::Stale {
                reasons: vec![format!("{e:#}")],
                upstream: Vec::new(),
            },
        };
        let mut why = v.reasons().join("; ");
        if !v.upstream().is_empty() {
            let after = format!("after upstream {}", v.upstream().join(", "));
            why = if why.is_empty() {
                after
            } else {
                format!("{why}; {after}")
            };
        }
        match v {
            Verdict::Fresh => fresh += 1,
            Verdict::Stale { .. } => {
                println!("would run {name} ({why})");
                run += 1;
            }
            Verdict::Restorable { .. } => {
                println!("would restore {name} ({why})");
                restore += 1;
            }
            Verdict::Pending { .. } => {
                println!("may run {name} ({why})");
                may += 1;
            }
        }
    }
    println!("dry run: {run} would run, {may} may run, {fresh} fresh, {restore} would be restored");
    Ok(0)
}
