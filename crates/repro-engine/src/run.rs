//! `repro run`: one run of the pipeline, from its session to the line it ends with.
//!
//! [`run`] opens a [`Session`] (which may answer from the up-to-date record at once), answers
//! `--dry-run` and a read-only workspace from the plan, retires stages no longer in the
//! pipeline, picks the executor and the `-j` and GPU slots, hands the rest to the
//! [`Runner`](crate::runner::Runner), and ends by writing the lock, the stat cache and, after
//! a run that found everything fresh, the up-to-date record.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::executor::ExecutorKind;
use crate::progress::Phases;
use crate::runner::{Config, Finished, Runner};
use crate::session::{Access, Open, Opened, Session, UpToDate};
use crate::spec::{LoadOptions, Pipeline};
use crate::state::lockfile::LockFile;
use crate::state::workspace::Workspace;

pub(crate) use crate::runner::Summary;

/// What `repro run` (and `repro pull`) is to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The pipeline file.
    pub file: PathBuf,
    /// How to load it (profile, `--set`, kinds).
    pub load: LoadOptions,
    /// Stages to run with what they need; all when empty.
    pub targets: Vec<String>,
    /// Stages at once; `None`: the number of cores locally, 256 under Slurm (whose own
    /// scheduler then decides what runs).
    pub jobs: Option<usize>,
    /// `--dry-run`: print the plan, run nothing.
    pub dry_run: bool,
    /// `--force`: run the selected stages even if fresh.
    pub force: bool,
    /// `--keep-going`: after a failure, go on with what does not depend on it.
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
    /// `--name`: the name of the experiment this run records.
    pub name: Option<String>,
}

/// Run the pipeline; returns the process exit code.
pub fn run(opts: &RunOptions) -> Result<i32> {
    let t0 = Instant::now();
    let mut phases = Phases::start();
    let mut s = match Session::open(&open_options(opts), &mut phases)? {
        Opened::UpToDate(stages) => {
            phases.mark("up-to-date record holds");
            return up_to_date(opts, stages.len(), t0);
        }
        Opened::Ready(s) => *s,
    };
    if opts.dry_run {
        return dry_run(&s);
    }
    if !s.holds_run_lock() {
        // A workspace that cannot be written (see `Session::open`).
        return read_only_run(&s, t0);
    }
    // Compared at the end, so an unchanged lock is not rewritten (cheaper than serialising).
    let lock_before = s.lock.clone();
    retire_deleted_stages(&s.ws, &s.p, &mut s.lock)?;
    phases.mark("retire deleted stages");
    // Connects only when a stage first needs it.
    let remote = crate::remote::RunRemote::new(&opts.remote, &s.p)?;
    if remote.is_configured() {
        crate::remote::transfer::clear_tmp(&s.ws.cache_dir)?;
    }
    let kind: ExecutorKind = (opts.executor.as_deref().or(s.p.executor.as_deref()))
        .unwrap_or("local")
        .parse()?;
    let mut executor = crate::executor::make(kind, &s.p)?;
    let wants_gpu = s.selected.iter().any(|&i| s.p.stages[i].resources.gpus > 0);
    let config = Config {
        jobs: opts.jobs.unwrap_or_else(|| executor.default_jobs()).max(1),
        gpu_ids: crate::executor::gpus::slots(opts.gpus, wants_gpu),
        keep_going: opts.keep_going,
        force: opts.force,
    };
    let runner = Runner::new(&mut s, executor.as_mut(), &remote, &opts.load.kinds, config)?;
    phases.mark("assess all (parallel)");
    let finished = runner.run()?;
    phases.mark("schedule (assess + run)");
    drop(executor);
    let record = whole(opts) && kind == ExecutorKind::Local;
    conclude(opts, s, &lock_before, &finished, record, t0, &mut phases)
}

/// Only a local run of the whole pipeline, neither forced nor dry, may answer from the
/// up-to-date record or keep one (a `pull` must look at the remote).
fn whole(opts: &RunOptions) -> bool {
    opts.targets.is_empty() && !opts.force && !opts.remote.pull_only && !opts.dry_run
}

/// How `run` opens its session: with the run lock (reading, for `--dry-run`), the interrupt
/// handler, and the up-to-date record when the run is [`whole`].
fn open_options(opts: &RunOptions) -> Open<'_> {
    Open {
        file: &opts.file,
        load: &opts.load,
        targets: &opts.targets,
        downstream: opts.downstream,
        access: if opts.dry_run {
            Access::READ
        } else {
            Access::Run { wait: opts.wait }
        },
        up_to_date: if whole(opts) {
            UpToDate::Check {
                context: Some(run_context(opts)),
            }
        } else {
            UpToDate::Ignore
        },
        interrupts: true,
    }
}

/// The up-to-date record answered for `fresh` stages: nothing changed, so the last experiment
/// is this configuration and takes the run's name.
fn up_to_date(opts: &RunOptions, fresh: usize, t0: Instant) -> Result<i32> {
    if let Some(name) = &opts.name {
        let root = crate::spec::workspace_root(&opts.file);
        crate::experiments::name_last(&root.join("cache"), name)?;
    }
    let summary = Summary {
        fresh,
        ..Default::default()
    };
    print_summary(&summary, false, 0, t0);
    Ok(0)
}

/// The end of a run: the lock (when it changed) and the stat cache written, the up-to-date
/// record kept after a run that found every stage fresh and changed nothing (`record`: one
/// that may keep it), the summary printed; returns the exit code.
fn conclude(
    opts: &RunOptions,
    s: Session,
    lock_before: &LockFile,
    finished: &Finished,
    record: bool,
    t0: Instant,
    phases: &mut Phases,
) -> Result<i32> {
    let Finished {
        summary,
        signal,
        not_started,
    } = *finished;
    let lock_changed = s.lock != *lock_before;
    if lock_changed {
        crate::state::workspace::write_lock(&s.ws, &s.lock)?;
        crate::gitignore::after_lock_written(&s.p);
    }
    s.ws.save_stat()?;
    phases.mark("write lock + stat cache");
    // The whole pipeline's configuration as an experiment (nothing new when it is the last
    // one's); a failed or interrupted run left no configuration anyone asked for.
    if signal == 0 && summary.failed == 0 {
        let name = opts.name.as_deref();
        if let Err(e) = crate::experiments::record(&s.ws, &s.p, &s.lock, &opts.load, name) {
            eprintln!("warning: the experiment was not recorded: {e:#}");
        }
    }
    phases.mark("record the experiment");
    // What that rested on is kept, so that the next such run only stats (`up_to_date`).
    let all_fresh = Summary {
        fresh: s.selected.len(),
        ..Default::default()
    };
    if record
        && s.selected.len() == s.p.stages.len()
        && !lock_changed
        && signal == 0
        && summary == all_fresh
    {
        let key = crate::state::plan_cache::key(&opts.file, &opts.load);
        crate::state::up_to_date::record(&s.ws, &s.p, &s.selected, &key, &run_context(opts));
        phases.mark("keep the up-to-date record");
    }
    print_summary(&summary, signal != 0, not_started, t0);
    s.close();
    phases.mark("close state db");
    Ok(if signal != 0 {
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

/// `repro run` on a read-only workspace: it succeeds when every selected stage is fresh (a
/// no-op run needs to write nothing), and otherwise says what would have to run.
fn read_only_run(s: &Session, t0: Instant) -> Result<i32> {
    let Session {
        p,
        dag,
        selected,
        ws,
        lock,
        ..
    } = s;
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

/// `--dry-run`: what would happen, without running or recording anything: the verdicts of
/// [`plan`](crate::plan::plan), as `repro status` reports them and `run` acts on them.
fn dry_run(s: &Session) -> Result<i32> {
    use crate::plan::Verdict;
    let Session {
        p,
        dag,
        selected,
        ws,
        lock,
        ..
    } = s;
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
