//! Executors: where a ready stage's process actually runs.
//!
//! The scheduler decides *what* may run (dependencies, `-j`, resource slots); an executor
//! decides *where*: as a local child process, or as a Slurm job. Both sit behind [`Executor`],
//! and neither hashes, caches nor records anything: the engine does that the same way for
//! every executor, so the cache, lock file and `repro status` do not depend on which one ran
//! a stage.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

pub(crate) mod gpus;
pub(crate) mod local;
pub(crate) mod measure;
pub(crate) mod mixed;
pub mod slurm;
pub(crate) mod supervise;

/// Engine-assigned identifier of a submitted job (index of the stage in the run).
pub type JobId = usize;

/// What a stage asks of the machine; declared in the spec (`resources:`).
pub use crate::spec::Resources;

/// One process to run for one stage.
#[derive(Clone, Debug)]
pub struct Job {
    /// The runner's id for it, which events name.
    pub id: JobId,
    /// Stage name, for messages and job names.
    pub stage: String,
    /// Program and arguments (`["sh", "-c", cmd]`, or the repro binary running a kind).
    pub argv: Vec<String>,
    /// Extra environment (e.g. `CUDA_VISIBLE_DEVICES` for local GPU slots).
    pub env: Vec<(String, String)>,
    /// Working directory (the workspace root).
    pub cwd: PathBuf,
    /// Where the stage's stdout and stderr go.
    pub log: PathBuf,
    /// What the stage asks of the machine (threads, memory, GPUs, time).
    pub resources: Resources,
    /// Concrete GPU indices assigned by the local scheduler (empty under Slurm, which assigns
    /// its own).
    pub gpus: Vec<usize>,
    /// Where the stage's measured usage goes for the run trace (`crate::trace`), if wanted:
    /// the local executor's supervisor writes it, a Slurm job runs `internal measure`.
    pub usage: Option<PathBuf>,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Exit status 0.
    Succeeded,
    /// Non-zero exit, signal, or a scheduler's verdict (e.g. Slurm `TIMEOUT`), in words.
    Failed(String),
}

/// Something that happened to a running job.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A progress line relayed from the job (see `kinds::progress`).
    Progress {
        /// The job.
        id: JobId,
        /// The progress message.
        message: String,
        /// How far along, from 0 to 1, when the job says.
        fraction: Option<f64>,
    },
    /// The job finished.
    Finished {
        /// The job.
        id: JobId,
        /// How it ended.
        outcome: Outcome,
    },
}

/// A place to run jobs.
pub trait Executor: Send {
    /// Start a job without waiting for it.
    fn submit(&mut self, job: Job) -> Result<()>;
    /// Start the jobs the engine started in one scheduling round; returns those that could not
    /// be started, with why. Each job comes with a cap: of the jobs the executor batches with
    /// it (Slurm: one job array per `foreach:`/`matrix:` group), at most that many may run at
    /// once (the ones the engine gave `-j` slots to).
    fn submit_many(&mut self, jobs: Vec<(Job, usize)>) -> Vec<(JobId, anyhow::Error)> {
        jobs.into_iter()
            .filter_map(|(j, _)| {
                let id = j.id;
                self.submit(j).err().map(|e| (id, e))
            })
            .collect()
    }
    /// How the engine admits a ready `stage` to this executor: within its `-j` and GPU slots,
    /// handed over at once ([`Admission::Slots`], the default), or into a batch handed over at
    /// the end of the scheduling round ([`Admission::Batch`]: Slurm job arrays).
    fn admission(&self, stage: &crate::spec::Stage) -> Admission {
        let _ = stage;
        Admission::Slots
    }
    /// Whether the executor, not the engine, places a stage on GPUs (Slurm: its gres
    /// allocation). Then the engine sets no `CUDA_VISIBLE_DEVICES`, and a stage counts the GPUs
    /// it declared rather than the slots it was leased.
    fn places_gpus(&self) -> bool {
        false
    }
    /// `-j` when the user gives none: the cores of this machine (an executor with a scheduler
    /// of its own may take more at once).
    fn default_jobs(&self) -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
    /// Wait up to `timeout` for events of running jobs; returns what happened (possibly
    /// nothing). Must be cheap to call in a loop.
    fn poll(&mut self, timeout: Duration) -> Result<Vec<Event>>;
    /// Stop every running or queued job (Ctrl-C); returns once they are gone.
    fn cancel_all(&mut self);
    /// Number of jobs submitted and not yet reported finished.
    fn running(&self) -> usize;
}

/// How a ready stage is admitted (see [`Executor::admission`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// When its `-j` and GPU slots are free; its job is handed over at once.
    Slots,
    /// Into the batch `group` of this round, handed over when the round ends, which holds at
    /// most `max` stages. A member that finds no free `-j` slot still starts, without slots
    /// ("rides along"), unless it wants GPU slots; with each job of the batch the executor
    /// gets how many of the group took slots, and runs at most that many at once. A member
    /// with slots that finishes hands them to one still riding along, so `-j` still bounds
    /// what runs.
    Batch {
        /// The admission group (stages of one foreach/matrix with equal resources).
        group: String,
        /// The most stages one batch holds.
        max: usize,
    },
}

/// Where stages run: `--executor`, else the pipeline's `executor:`, else local.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExecutorKind {
    /// Child processes on this machine, within `-j` and GPU slots.
    Local,
    /// One Slurm batch job per stage, or one job array per `foreach:`/`matrix:` round.
    Slurm,
}

impl std::str::FromStr for ExecutorKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "local" => Ok(ExecutorKind::Local),
            "slurm" => Ok(ExecutorKind::Slurm),
            other => anyhow::bail!("unknown executor '{other}' (known: local, slurm)"),
        }
    }
}

/// The executor of `kind` for a pipeline. Under Slurm, stages that say `executor: local`
/// run here, through a local executor beside it ([`mixed::Mixed`]).
pub(crate) fn make(kind: ExecutorKind, p: &crate::spec::Pipeline) -> Result<Box<dyn Executor>> {
    let local = || -> Result<Box<dyn Executor>> {
        let pid_dir = p.root.join("cache").join("running");
        Ok(Box::new(local::LocalExecutor::with_pid_dir(pid_dir)?))
    };
    match kind {
        ExecutorKind::Local => local(),
        ExecutorKind::Slurm => {
            let here: std::collections::HashSet<String> = (p.stages.iter())
                .filter(|s| s.executor.as_deref() == Some("local"))
                .map(|s| s.name.clone())
                .collect();
            let slurm = make_slurm(p)?;
            if here.is_empty() {
                return Ok(slurm);
            }
            Ok(Box::new(mixed::Mixed::new(slurm, local()?, here)))
        }
    }
}

/// The Slurm executor for a pipeline (its `slurm:` defaults); fails early, with a message
/// saying what to fix, when Slurm is not configured or its controller does not answer.
pub(crate) fn make_slurm(p: &crate::spec::Pipeline) -> Result<Box<dyn Executor>> {
    use anyhow::Context;
    let opts = slurm::SlurmOptions::from_settings(&p.slurm)
        .with_context(|| format!("{}: invalid `slurm:` settings", p.file.display()))?;
    Ok(Box::new(slurm::SlurmExecutor::new(opts)?))
}
