//! Two executors behind one: the pipeline's (Slurm) and the local one for the stages that say
//! `executor: local` (a report or a plot that needs no compute node, as Snakemake's
//! `localrules`). The runner keeps seeing one [`Executor`]: job ids are stage indices, unique
//! across both, so events need no translation, and the split is decided by stage name once,
//! when the pipeline is known.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;

use super::{Admission, Event, Executor, Job, JobId};

pub(crate) struct Mixed {
    /// Where stages run unless they say otherwise.
    main: Box<dyn Executor>,
    local: Box<dyn Executor>,
    /// The stages that run on `local`.
    local_stages: HashSet<String>,
}

impl Mixed {
    pub(crate) fn new(
        main: Box<dyn Executor>,
        local: Box<dyn Executor>,
        local_stages: HashSet<String>,
    ) -> Mixed {
        Mixed {
            main,
            local,
            local_stages,
        }
    }

    fn is_local(&self, stage: &str) -> bool {
        self.local_stages.contains(stage)
    }
}

impl Executor for Mixed {
    fn submit(&mut self, job: Job) -> Result<()> {
        if self.is_local(&job.stage) {
            self.local.submit(job)
        } else {
            self.main.submit(job)
        }
    }

    fn submit_many(&mut self, jobs: Vec<(Job, usize)>) -> Vec<(JobId, anyhow::Error)> {
        let (local, main): (Vec<_>, Vec<_>) =
            jobs.into_iter().partition(|(j, _)| self.is_local(&j.stage));
        let mut refused = self.local.submit_many(local);
        refused.extend(self.main.submit_many(main));
        refused
    }

    fn admission(&self, stage: &crate::spec::Stage) -> Admission {
        if self.is_local(&stage.name) {
            Admission::Slots
        } else {
            self.main.admission(stage)
        }
    }

    fn places_gpus(&self) -> bool {
        self.main.places_gpus()
    }

    fn default_jobs(&self) -> usize {
        self.main.default_jobs()
    }

    fn poll(&mut self, timeout: Duration) -> Result<Vec<Event>> {
        // Local events first and without waiting; the wait goes to the executor that has
        // jobs (the local one when only local stages run, so they are not polled late).
        let mut events = self.local.poll(Duration::ZERO)?;
        if !events.is_empty() {
            events.extend(self.main.poll(Duration::ZERO)?);
        } else if self.main.running() > 0 || self.local.running() == 0 {
            events.extend(self.main.poll(timeout)?);
        } else {
            events.extend(self.local.poll(timeout)?);
        }
        Ok(events)
    }

    fn cancel_all(&mut self) {
        self.local.cancel_all();
        self.main.cancel_all();
    }

    fn running(&self) -> usize {
        self.local.running() + self.main.running()
    }
}
