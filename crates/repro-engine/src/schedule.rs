//! Which selected stage may start next: the ready set in topological order, the `-j` CPU
//! slots, the GPU free-list, releasing dependents when a stage finishes and skipping
//! everything downstream of a failure.
//!
//! The scheduler knows stage indices and resource counts only; `run` asks it what may start,
//! starts it, and reports back. Nothing here hashes, runs or prints.

use std::collections::{BTreeSet, HashMap};

use crate::graph::Dag;

/// Resources a started stage holds until it finishes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Lease {
    /// CPU slots out of `-j`; 0 for a stage that rides along in a Slurm job array (Slurm
    /// queues it behind the elements that hold slots, see `run`).
    pub slots: usize,
    /// GPU slot indices (into the detected devices).
    pub gpus: Vec<usize>,
}

pub(crate) struct Scheduler<'d> {
    dag: &'d Dag,
    /// Position in topological order of each stage of this run (its keys are the run).
    topo_pos: HashMap<usize, usize>,
    /// Selected stages not started yet, with how many of their upstream stages in this run
    /// have not finished.
    waiting: HashMap<usize, usize>,
    /// Stages whose upstream has finished, by topological position.
    ready: BTreeSet<(usize, usize)>,
    jobs: usize,
    free_slots: usize,
    gpu_total: usize,
    free_gpus: Vec<usize>,
    /// Leases handed out and not given back.
    leased: usize,
}

impl<'d> Scheduler<'d> {
    /// `selected` in topological order (as `targets::select` gives it); `jobs` CPU slots
    /// (`-j`, at least 1); `gpu_total` GPU slots.
    pub(crate) fn new(dag: &'d Dag, selected: &[usize], jobs: usize, gpu_total: usize) -> Self {
        let topo_pos: HashMap<usize, usize> = selected
            .iter()
            .enumerate()
            .map(|(pos, &i)| (i, pos))
            .collect();
        let waiting: HashMap<usize, usize> = selected
            .iter()
            .map(|&i| {
                let n = dag
                    .upstream(i)
                    .iter()
                    .filter(|u| topo_pos.contains_key(u))
                    .count();
                (i, n)
            })
            .collect();
        let ready = selected
            .iter()
            .filter(|i| waiting[i] == 0)
            .map(|&i| (topo_pos[&i], i))
            .collect();
        let jobs = jobs.max(1);
        Scheduler {
            dag,
            topo_pos,
            waiting,
            ready,
            jobs,
            free_slots: jobs,
            gpu_total,
            free_gpus: (0..gpu_total).collect(),
            leased: 0,
        }
    }

    /// CPU slots a stage asking for `cpus` takes: at least 1, at most `-j`.
    pub(crate) fn slots_for(&self, cpus: usize) -> usize {
        cpus.clamp(1, self.jobs)
    }

    /// GPU slots a stage asking for `gpus` takes: none when there are none (it runs without,
    /// and `run` says so), else at most all of them.
    pub(crate) fn gpus_for(&self, gpus: usize) -> usize {
        gpus.min(self.gpu_total)
    }

    /// Whether `(cpus, gpus)` fits now. A stage wider than `-j` still starts alone.
    fn fits(&self, (cpus, gpus): (usize, usize)) -> bool {
        (self.slots_for(cpus) <= self.free_slots || self.leased == 0)
            && self.gpus_for(gpus) <= self.free_gpus.len()
    }

    /// The first ready stage, in topological order, that fits in the free slots (`need` gives
    /// a stage's (cpus, gpus)) or that `rides` lets start without slots; it leaves the ready
    /// set. `None` when nothing can start now.
    pub(crate) fn next(
        &mut self,
        need: impl Fn(usize) -> (usize, usize),
        rides: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let (pos, i) = self
            .ready
            .iter()
            .copied()
            .find(|&(_, i)| self.fits(need(i)) || rides(i))?;
        self.ready.remove(&(pos, i));
        self.waiting.remove(&i);
        Some(i)
    }

    /// Take the resources of a stage that starts now: its slots if they fit (else none: it
    /// rides along) and its GPUs, lowest free first.
    pub(crate) fn lease(&mut self, (cpus, gpus): (usize, usize)) -> Lease {
        let slots = self.slots_for(cpus);
        let slots = if slots <= self.free_slots || self.leased == 0 {
            slots
        } else {
            0
        };
        self.free_slots = self.free_slots.saturating_sub(slots);
        let n = self.gpus_for(gpus).min(self.free_gpus.len());
        self.leased += 1;
        Lease {
            slots,
            gpus: self.free_gpus.drain(..n).collect(),
        }
    }

    /// A finished (or refused) stage's resources come back.
    pub(crate) fn give_back(&mut self, lease: Lease) {
        self.leased = self.leased.saturating_sub(1);
        self.free_slots = (self.free_slots + lease.slots).min(self.jobs);
        self.free_gpus.extend(lease.gpus);
        self.free_gpus.sort_unstable();
    }

    /// Stage `i` finished well: dependents whose upstream is now complete become ready.
    pub(crate) fn release(&mut self, i: usize) {
        for d in self.dag.downstream(i) {
            if let Some(w) = self.waiting.get_mut(&d) {
                *w -= 1;
                if *w == 0 {
                    self.ready.insert((self.topo_pos[&d], d));
                }
            }
        }
    }

    /// Stage `i` failed: everything of this run downstream of it will not start. Returns those
    /// stages, nearest first.
    pub(crate) fn skip_downstream(&mut self, i: usize) -> Vec<usize> {
        let mut skipped = Vec::new();
        let mut stack = vec![i];
        let mut seen = BTreeSet::new();
        while let Some(s) = stack.pop() {
            for d in self.dag.downstream(s) {
                if self.topo_pos.contains_key(&d)
                    && seen.insert(d)
                    && self.waiting.remove(&d).is_some()
                {
                    self.ready.retain(|&(_, r)| r != d);
                    skipped.push(d);
                    stack.push(d);
                }
            }
        }
        skipped
    }

    /// Stage `i` was taken by [`Scheduler::next`] but did not start (interrupted while its
    /// inputs were hashed): it counts as not started.
    pub(crate) fn not_taken(&mut self, i: usize) {
        self.waiting.insert(i, 0);
    }

    /// Stage `i`, taken by [`Scheduler::next`] and failed, is ready to start again (a retry):
    /// its upstream is still complete.
    pub(crate) fn ready_again(&mut self, i: usize) {
        self.waiting.remove(&i);
        self.ready.insert((self.topo_pos[&i], i));
    }

    /// Whether a stage is ready to start (resources permitting).
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Stages of this run that never started.
    pub(crate) fn not_started(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DAG from edges over `n` stages named s0…, and all of it selected in index order
    /// (every edge here goes from a lower to a higher index, so that is topological).
    fn dag(n: usize, edges: &[(usize, usize)]) -> Dag {
        let mut yaml = String::from("stages:\n");
        for i in 0..n {
            yaml.push_str(&format!("  s{i}:\n    cmd: 'true'\n    outs: [o{i}]\n"));
            let deps: Vec<String> = edges
                .iter()
                .filter(|&&(_, b)| b == i)
                .map(|&(a, _)| format!("o{a}"))
                .collect();
            if !deps.is_empty() {
                yaml.push_str(&format!("    deps: [{}]\n", deps.join(", ")));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pipeline.yaml");
        std::fs::write(&f, yaml).unwrap();
        crate::graph::build(&crate::spec::load(&f, &Default::default()).unwrap()).unwrap()
    }

    fn all(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    #[test]
    fn stages_start_in_topological_order_as_their_upstream_finishes() {
        // s0 → s1 → s3, s0 → s2
        let d = dag(4, &[(0, 1), (1, 3), (0, 2)]);
        let mut s = Scheduler::new(&d, &all(4), 8, 0);
        let one = |_| (1, 0);
        assert_eq!(s.next(one, |_| false), Some(0));
        assert_eq!(s.next(one, |_| false), None, "s1 and s2 wait for s0");
        s.release(0);
        assert_eq!(s.next(one, |_| false), Some(1));
        assert_eq!(s.next(one, |_| false), Some(2));
        assert_eq!(s.next(one, |_| false), None, "s3 waits for s1");
        s.release(1);
        assert_eq!(s.next(one, |_| false), Some(3));
        assert_eq!(s.not_started(), 0);
    }

    #[test]
    fn cpu_slots_bound_what_runs_and_a_wide_stage_runs_alone() {
        let d = dag(3, &[]);
        let mut s = Scheduler::new(&d, &all(3), 2, 0);
        let need = |i| if i == 2 { (5, 0) } else { (1, 0) };
        let a = s.next(need, |_| false).unwrap();
        let la = s.lease(need(a));
        let b = s.next(need, |_| false).unwrap();
        let lb = s.lease(need(b));
        assert_eq!((la.slots, lb.slots), (1, 1));
        assert_eq!(s.next(need, |_| false), None, "-j 2 is full");
        s.give_back(la);
        assert_eq!(
            s.next(need, |_| false),
            None,
            "the wide stage waits for an empty machine"
        );
        s.give_back(lb);
        assert_eq!(s.next(need, |_| false), Some(2));
        assert_eq!(s.lease(need(2)).slots, 2, "clamped to -j");
    }

    #[test]
    fn gpus_come_from_the_free_list_lowest_first_and_go_back() {
        let d = dag(3, &[]);
        let mut s = Scheduler::new(&d, &all(3), 8, 3);
        let need = |_| (1, 2);
        s.next(need, |_| false).unwrap();
        let a = s.lease(need(0));
        assert_eq!(a.gpus, vec![0, 1]);
        assert_eq!(s.next(need, |_| false), None, "one GPU left, two wanted");
        s.give_back(a);
        s.next(need, |_| false).unwrap();
        assert_eq!(s.lease(need(1)).gpus, vec![0, 1]);
        // Without GPUs a stage that wants one still runs, on none.
        let mut none = Scheduler::new(&d, &all(3), 8, 0);
        none.next(need, |_| false).unwrap();
        assert_eq!(none.lease(need(0)).gpus, Vec::<usize>::new());
    }

    #[test]
    fn a_rider_starts_without_slots() {
        let d = dag(2, &[]);
        let mut s = Scheduler::new(&d, &all(2), 1, 0);
        let one = |_| (1, 0);
        s.next(one, |_| false).unwrap();
        assert_eq!(s.lease(one(0)).slots, 1);
        assert_eq!(s.next(one, |i| i == 1), Some(1));
        assert_eq!(s.lease(one(1)).slots, 0, "rides along in the array");
    }

    #[test]
    fn a_failure_skips_everything_downstream_in_the_run_only() {
        // s0 → s1 → s2, s3 independent
        let d = dag(4, &[(0, 1), (1, 2)]);
        let mut s = Scheduler::new(&d, &all(4), 4, 0);
        let one = |_| (1, 0);
        assert_eq!(s.next(one, |_| false), Some(0));
        assert_eq!(s.skip_downstream(0), vec![1, 2]);
        assert_eq!(s.next(one, |_| false), Some(3));
        assert_eq!(s.next(one, |_| false), None);
        assert_eq!(s.not_started(), 0, "skipped stages are accounted for");
        // Only s1 selected: nothing else of the DAG is touched.
        let mut only = Scheduler::new(&d, &[1], 4, 0);
        assert_eq!(
            only.next(one, |_| false),
            Some(1),
            "upstream outside the run is done"
        );
        assert!(only.skip_downstream(1).is_empty());
    }

    #[test]
    fn a_stage_taken_but_not_started_counts_as_not_started() {
        let d = dag(1, &[]);
        let mut s = Scheduler::new(&d, &all(1), 1, 0);
        let i = s.next(|_| (1, 0), |_| false).unwrap();
        s.not_taken(i);
        assert_eq!(s.not_started(), 1);
        assert!(!s.has_ready());
    }
}
