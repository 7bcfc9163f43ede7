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

pub mod local;
pub mod measure;
pub mod slurm;
pub mod supervise;

/// Engine-assigned identifier of a submitted job (index of the stage in the run).
pub type JobId = usize;

/// What a stage asks of the machine; declared in the spec (`resources:`).
pub use crate::spec::Resources;

/// One process to run for one stage.
#[derive(Clone, Debug)]
pub struct Job {
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
    Succeeded,
    /// Non-zero exit, signal, or a scheduler's verdict (e.g. Slurm `TIMEOUT`), in words.
    Failed(String),
}

/// Something that happened to a running job.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A progress line relayed from the job (see `kinds::progress`).
    Progress {
        id: JobId,
        message: String,
        fraction: Option<f64>,
    },
    /// The job finished.
    Finished { id: JobId, outcome: Outcome },
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
    /// Whether [`submit_many`](Executor::submit_many) gains from getting a whole round at
    /// once; if not, the engine hands each job over as soon as it starts it.
    fn batches(&self) -> bool {
        false
    }
    /// Wait up to `timeout` for events of running jobs; returns what happened (possibly
    /// nothing). Must be cheap to call in a loop.
    fn poll(&mut self, timeout: Duration) -> Result<Vec<Event>>;
    /// Stop every running or queued job (Ctrl-C); returns once they are gone.
    fn cancel_all(&mut self);
    /// Number of jobs submitted and not yet reported finished.
    fn running(&self) -> usize;
}

/// Where stages run: `--executor`, else the pipeline's `executor:`, else local.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
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

/// The Slurm executor for a pipeline (its `slurm:` defaults); fails early, with a message
/// saying what to fix, when Slurm is not configured or its controller does not answer.
pub fn make_slurm(p: &crate::spec::Pipeline) -> Result<Box<dyn Executor>> {
    use anyhow::Context;
    let opts = slurm::SlurmOptions::from_settings(&p.slurm)
        .with_context(|| format!("{}: invalid `slurm:` settings", p.file.display()))?;
    Ok(Box::new(slurm::SlurmExecutor::new(opts)?))
}
