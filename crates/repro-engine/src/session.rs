//! The start-up every command that reads a pipeline and its workspace shares: `run` (and
//! `pull`, a run that only restores), `status`, the comparing commands, `submit` and `push`.
//!
//! [`Session::open`] answers from the up-to-date record when the command allows it (a whole
//! run, or `status`, after a run that found everything fresh), else loads the workspace state
//! on a second thread (taking the run lock when asked) while the pipeline is parsed and
//! checked, or taken from the checked plan the state database keeps; selects the targets;
//! and hands the source stats the graph gathered to the workspace. The interrupt handler goes
//! in before anything hashes.

use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::Result;

use crate::graph::Dag;
use crate::progress::Phases;
use crate::spec::{LoadOptions, Pipeline};
use crate::state::lockfile::LockFile;
use crate::state::workspace::{Workspace, WorkspaceLock};

/// The signal that interrupted the command (SIGINT, SIGTERM or SIGHUP), or 0; a run exits
/// with 128 + it, as a shell reports a process that signal ended.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// The flag the interrupt handler sets (see [`Open::interrupts`]); the run loop watches it.
pub(crate) fn interrupt_flag() -> &'static AtomicI32 {
    &INTERRUPTED
}

/// A pipeline opened against its workspace: what every command works on.
pub struct Session {
    /// The loaded, checked pipeline.
    pub p: Pipeline,
    /// Its DAG.
    pub dag: Dag,
    /// The selected stages in topological order, closed over upstream.
    pub selected: Vec<usize>,
    /// The workspace, with its state database and stat cache.
    pub ws: Workspace,
    /// `repro.lock` as read at start-up.
    pub lock: LockFile,
    /// The run lock (`cache/run.pid`), held until the session is closed or dropped.
    run_lock: Option<WorkspaceLock>,
}

/// What [`Session::open`] is to do.
pub struct Open<'a> {
    /// The pipeline file.
    pub file: &'a Path,
    /// How to load it.
    pub load: &'a LoadOptions,
    /// The stages to select; all when empty.
    pub targets: &'a [String],
    /// `--downstream`: the targets and every stage after them.
    pub downstream: bool,
    /// How to hold the workspace.
    pub access: Access,
    /// Whether the up-to-date record may answer.
    pub up_to_date: UpToDate,
    /// Install the handler that turns SIGINT, SIGTERM and SIGHUP into [`interrupt_flag`]
    /// (and cancels hashing), before anything hashes.
    pub interrupts: bool,
}

/// How a session holds the workspace.
#[derive(Clone, Copy, Debug)]
pub enum Access {
    /// Without the run lock, and without the state database when it cannot be had within
    /// `wait_db` (`status`, `--dry-run` and the comparing commands only read).
    Read {
        /// How long to wait for the state database before reading without it.
        wait_db: Duration,
    },
    /// With the run lock, waiting for another run if `wait`; the state database is required.
    /// On a workspace that cannot be written, nothing can change: it is read instead, and
    /// [`Session::holds_run_lock`] says so.
    Run {
        /// Wait for another run holding the workspace instead of failing.
        wait: bool,
    },
}

impl Access {
    /// Reading, without waiting for the state database.
    pub const READ: Access = Access::Read {
        wait_db: Duration::ZERO,
    };
}

/// Whether the up-to-date record (`crate::state::up_to_date`) may answer instead.
#[derive(Clone, Debug)]
pub enum UpToDate {
    /// Do not look at it.
    Ignore,
    /// Check it, with the options besides the plan that it must have been recorded under
    /// (`None`: any, as `status` reads it).
    Check {
        /// The options the record must have been kept under; `None`: any.
        context: Option<String>,
    },
}

/// What [`Session::open`] found.
pub enum Opened {
    /// The up-to-date record holds: these stages, all fresh. Nothing else was read.
    UpToDate(Vec<String>),
    /// The session, with the state loaded.
    Ready(Box<Session>),
}

impl Session {
    /// Open the pipeline `o.file` against its workspace; `phases` marks where the time went
    /// (`REPRO_TIMINGS=1`).
    pub fn open(o: &Open, phases: &mut Phases) -> Result<Opened> {
        let plan_key = crate::state::plan_cache::key(o.file, o.load);
        let root = crate::spec::workspace_root(o.file);
        let run_lock = match o.access {
            Access::Read { wait_db } => {
                if let UpToDate::Check { context } = &o.up_to_date
                    && let Some(stages) =
                        crate::state::up_to_date::check(&root, &plan_key, context.as_deref())
                {
                    return Ok(Opened::UpToDate(stages));
                }
                RunLock::None { wait_db }
            }
            // Nobody can change it, so no lock is needed: the run is checked, not made.
            Access::Run { .. } if read_only(&root) => RunLock::None {
                wait_db: Duration::ZERO,
            },
            Access::Run { wait } => match &o.up_to_date {
                UpToDate::Check { context } if crate::state::up_to_date::path(&root).exists() => {
                    match record_holds(&root, &plan_key, context.as_deref(), wait)? {
                        Ok(stages) => return Ok(Opened::UpToDate(stages)),
                        Err(guard) => RunLock::Held(guard),
                    }
                }
                _ => RunLock::Take { wait },
            },
        };
        if o.interrupts {
            install_interrupt_handler();
        }
        let mut state = StateLoader::start(o.file, &plan_key, run_lock);
        let (p, mut dag, parsed) = state.pipeline(o.file, o.load)?;
        phases.mark(if parsed.is_some() {
            "parse + check pipeline"
        } else {
            "reuse checked plan"
        });
        let selected = crate::targets::select(&p, &dag, o.targets, o.downstream)?;
        let (run_lock, mut ws, lock) = state.join()?;
        if run_lock.is_some() {
            // `cache:` (link modes, a shared directory, `cache: false`): see cache::links.
            crate::cache::links::configure(&mut ws.objects, &p, &ws.cache_dir)?;
        }
        crate::state::plan_cache::remember(&ws, parsed, &p, &dag);
        // What the graph stat-ed while it was built, the hasher need not stat again.
        ws.source_stats = std::mem::take(&mut dag.source_stats);
        phases.mark("wait for workspace state");
        Ok(Opened::Ready(Box::new(Session {
            p,
            dag,
            selected,
            ws,
            lock,
            run_lock,
        })))
    }

    /// Whether this session holds the run lock (a run on a read-only workspace does not).
    pub fn holds_run_lock(&self) -> bool {
        self.run_lock.is_some()
    }

    /// End of a command: the state database is closed properly, the run lock released, and
    /// the big read-only structures left to the process exit (freeing 10^5 map entries and
    /// strings one by one would cost a no-op run of 10,000 stages about 70 ms).
    pub fn close(self) {
        let Session {
            p,
            dag,
            selected,
            ws,
            lock,
            run_lock,
        } = self;
        ws.close();
        drop(run_lock);
        std::mem::forget((p, dag, selected, lock));
    }
}

/// Load the pipeline and its DAG, checked (spec, graph and what the engine may write or
/// delete), without the workspace state: for `repro dag`, and for a session whose state
/// database holds no checked plan for it.
pub fn load_pipeline(file: &Path, opts: &LoadOptions) -> Result<(Pipeline, Dag)> {
    let p = crate::spec::load(file, opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dag = crate::graph::build(&p);
    checked(p, dag)
}

/// The pipeline with its DAG once what the engine may write or delete (docs/safety.md) is
/// checked too, before anything runs; every error of both checks at once.
fn checked(p: Pipeline, dag: Result<Dag, crate::spec::SpecErrors>) -> Result<(Pipeline, Dag)> {
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

/// For a run that may answer from the up-to-date record: the run lock (a busy workspace is the
/// same error either way), then the record, which holds only after a run that ended cleanly (a
/// killed one may have left temporary objects or stage processes for the full path to clear).
/// `Err`: the lock, for the full path.
fn record_holds(
    root: &Path,
    plan_key: &str,
    context: Option<&str>,
    wait: bool,
) -> Result<Result<Vec<String>, WorkspaceLock>> {
    let cache = root.join("cache");
    let guard = WorkspaceLock::acquire(&cache, wait)?;
    let stage_left = std::fs::read_dir(cache.join("running")).is_ok_and(|mut d| d.next().is_some());
    if guard.taken_over || stage_left {
        return Ok(Err(guard));
    }
    Ok(
        match crate::state::up_to_date::check(root, plan_key, context) {
            Some(stages) => Ok(stages),
            None => Err(guard),
        },
    )
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

/// The workspace state besides the pipeline: the run lock (when taken), the workspace with
/// its state database and stat cache, and the parsed `repro.lock`.
type State = (Option<WorkspaceLock>, Workspace, LockFile);

/// The run lock (`cache/run.pid`) as the [`StateLoader`] is to have it.
enum RunLock {
    /// Read without it, waiting this long for the state database.
    None { wait_db: Duration },
    /// Take it, waiting for another run if `wait`.
    Take { wait: bool },
    /// Already taken.
    Held(WorkspaceLock),
}

/// The workspace state, loading on a second thread while the caller parses the pipeline: on a
/// large no-op run the two take about as long. Dropping it unjoined (the pipeline failed to
/// parse) still waits for the thread, so the process never exits while the state database is
/// being created or written.
///
/// As soon as the state database is open, the thread also hands over the checked plan stored
/// there for this pipeline and these options, if any (see [`StateLoader::pipeline`]).
struct StateLoader {
    handle: Option<std::thread::JoinHandle<Result<State>>>,
    /// The stored plan's bytes (`None`: no database, or no plan under `plan_key`).
    plan: Option<crossbeam_channel::Receiver<Option<Vec<u8>>>>,
    plan_key: String,
}

impl StateLoader {
    fn start(file: &Path, plan_key: &str, run_lock: RunLock) -> StateLoader {
        let root = crate::spec::workspace_root(file);
        let (plan_tx, plan_rx) = crossbeam_channel::bounded(1);
        let key = plan_key.to_string();
        let handle = std::thread::spawn(move || -> Result<State> {
            let (guard, wait_db) = match run_lock {
                RunLock::Take { wait } => (
                    Some(WorkspaceLock::acquire(&root.join("cache"), wait)?),
                    Duration::from_secs(30),
                ),
                RunLock::Held(guard) => (Some(guard), Duration::from_secs(30)),
                RunLock::None { wait_db } => (None, wait_db),
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
                Workspace::open_with(&root, wait_db, &mut send_plan)?
            } else if wait_db > Duration::ZERO {
                // A reader that may wait, and reads the workspace as it is if it cannot.
                match Workspace::open_with(&root, wait_db, &mut send_plan) {
                    Ok(ws) => ws,
                    Err(_) => Workspace::open_for_reading_with(&root, &mut send_plan)?,
                }
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

    /// The pipeline and its DAG: the plan stored in the state database when every file it
    /// was made from is unchanged (the checks that depend on the file system are made again),
    /// else loaded from the files. The third value is set when it was loaded: the key under
    /// which to keep it ([`crate::state::plan_cache::remember`], once the state is joined).
    fn pipeline(
        &mut self,
        file: &Path,
        opts: &LoadOptions,
    ) -> Result<(Pipeline, Dag, Option<String>)> {
        let stored = self.plan.take().and_then(|rx| rx.recv().ok().flatten());
        if let Some((p, shape)) =
            stored.and_then(|b| crate::state::plan_cache::lookup(&b, &self.plan_key))
        {
            let dag = crate::graph::rebuild(&p, &shape);
            let (p, dag) = checked(p, dag)?;
            return Ok((p, dag, None));
        }
        let (p, dag) = load_pipeline(file, opts)?;
        Ok((p, dag, Some(self.plan_key.clone())))
    }

    fn join(mut self) -> Result<State> {
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
