//! The run loop on its own: a [`Runner`] over a real session (a pipeline in a temporary
//! workspace) and a fake executor that starts no process. The fake "runs" a job by writing
//! the stage's declared outputs when it is polled, one job per poll in the order submitted,
//! and records what it was handed, so each test can say what ran, when and with what.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use repro_engine::Phases;
use repro_engine::executor::{Admission, Event, Executor, Job, JobId, Outcome};
use repro_engine::remote::{RemoteArgs, RunRemote};
use repro_engine::{Access, Open, Opened, Session, UpToDate};
use repro_engine::{Finished, Runner, RunnerConfig as Config, Summary};
use repro_engine::{LoadOptions, Stage};

/// An executor that runs nothing: see the module documentation.
#[derive(Default)]
struct Fake {
    /// Each stage's declared outputs (written when its job "succeeds").
    outs: HashMap<String, Vec<String>>,
    /// Stages whose job fails.
    fail: BTreeSet<String>,
    /// Stages whose job fails this many times, then succeeds.
    fail_first: HashMap<String, usize>,
    /// Stage names with when each was submitted, in order.
    submitted_at: Vec<(String, Instant)>,
    /// Admit stages as Slurm does with job arrays: one batch per base name (before `@`),
    /// of at most this many.
    batch_max: Option<usize>,
    /// Set this flag (to SIGINT) at the first poll.
    interrupt: Option<Arc<AtomicI32>>,
    /// Submitted and not finished, oldest first.
    queue: VecDeque<Job>,
    /// Stage names in the order submitted.
    submitted: Vec<String>,
    /// Each `submit_many` call: (stage, cap) per job.
    calls: Vec<Vec<(String, usize)>>,
    /// Jobs finished before each stage was submitted.
    finished_before: HashMap<String, usize>,
    finished: usize,
    max_running: usize,
    /// `CUDA_VISIBLE_DEVICES` of each job.
    devices: HashMap<String, String>,
    /// A device handed to two jobs running at once.
    device_clash: bool,
    cancelled: bool,
}

impl Fake {
    fn for_session(s: &Session) -> Fake {
        let outs =
            s.p.stages
                .iter()
                .map(|st| {
                    (
                        st.name.clone(),
                        st.outs.iter().map(|o| o.path.clone()).collect(),
                    )
                })
                .collect();
        Fake {
            outs,
            ..Fake::default()
        }
    }

    fn device(job: &Job) -> Option<String> {
        job.env
            .iter()
            .find(|(k, _)| k == "CUDA_VISIBLE_DEVICES")
            .map(|(_, v)| v.clone())
    }
}

impl Executor for Fake {
    fn submit(&mut self, job: Job) -> Result<()> {
        if let Some(d) = Fake::device(&job) {
            self.device_clash |= self.queue.iter().any(|q| {
                Fake::device(q).is_some_and(|e| e.split(',').any(|x| d.split(',').any(|y| x == y)))
            });
            self.devices.insert(job.stage.clone(), d);
        }
        self.submitted.push(job.stage.clone());
        self.submitted_at.push((job.stage.clone(), Instant::now()));
        self.finished_before
            .insert(job.stage.clone(), self.finished);
        self.queue.push_back(job);
        self.max_running = self.max_running.max(self.queue.len());
        Ok(())
    }

    fn submit_many(&mut self, jobs: Vec<(Job, usize)>) -> Vec<(JobId, anyhow::Error)> {
        self.calls
            .push(jobs.iter().map(|(j, c)| (j.stage.clone(), *c)).collect());
        for (job, _) in jobs {
            self.submit(job).unwrap();
        }
        Vec::new()
    }

    fn admission(&self, stage: &Stage) -> Admission {
        match self.batch_max {
            Some(max) => Admission::Batch {
                group: stage.name.split('@').next().unwrap().to_string(),
                max,
            },
            None => Admission::Slots,
        }
    }

    fn poll(&mut self, _timeout: Duration) -> Result<Vec<Event>> {
        if let Some(flag) = self.interrupt.take() {
            flag.store(libc_sigint(), Ordering::SeqCst);
            return Ok(Vec::new());
        }
        let Some(job) = self.queue.pop_front() else {
            return Ok(Vec::new());
        };
        self.finished += 1;
        let flaky = self.fail_first.get_mut(&job.stage).filter(|n| **n > 0);
        let flaky = flaky.map(|n| *n -= 1).is_some();
        let outcome = if flaky || self.fail.contains(&job.stage) {
            Outcome::Failed("exit status 1".into())
        } else {
            for o in &self.outs[&job.stage] {
                std::fs::write(job.cwd.join(o), format!("{} made this\n", job.stage))?;
            }
            Outcome::Succeeded
        };
        Ok(vec![Event::Finished {
            id: job.id,
            outcome,
        }])
    }

    fn cancel_all(&mut self) {
        self.cancelled = true;
        self.queue.clear();
    }

    fn running(&self) -> usize {
        self.queue.len()
    }
}

fn libc_sigint() -> i32 {
    2
}

/// A workspace holding `yaml` as its pipeline, opened as `repro run` opens it.
fn open(yaml: &str) -> (tempfile::TempDir, PathBuf, Session) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, yaml).unwrap();
    let s = reopen(&file);
    (dir, file, s)
}

fn reopen(file: &std::path::Path) -> Session {
    let load = LoadOptions::default();
    let o = Open {
        file,
        load: &load,
        targets: &[],
        downstream: false,
        access: Access::Run { wait: false },
        up_to_date: UpToDate::Ignore,
        interrupts: false,
    };
    match Session::open(&o, &mut Phases::start()).unwrap() {
        Opened::Ready(s) => *s,
        Opened::UpToDate(_) => panic!("the record was not asked"),
    }
}

fn config(jobs: usize) -> Config {
    Config {
        jobs,
        gpu_ids: Vec::new(),
        keep_going: false,
        force: false,
    }
}

/// Run the session's stages on `fake`, interrupted only through `flag`.
fn run(s: &mut Session, fake: &mut Fake, config: Config, flag: &AtomicI32) -> Finished {
    let remote = RunRemote::new(
        &RemoteArgs {
            no_remote: true,
            ..RemoteArgs::default()
        },
        &s.p,
    )
    .unwrap();
    let kinds = LoadOptions::default().kinds;
    Runner::new(s, fake, &remote, &kinds, config)
        .unwrap()
        .interrupt_with(flag)
        .run()
        .unwrap()
}

/// a → b, a → c, (b, c) → d.
const DIAMOND: &str = "stages:
  a:
    cmd: make a
    outs: [a.txt]
  b:
    cmd: make b
    deps: [a.txt]
    outs: [b.txt]
  c:
    cmd: make c
    deps: [a.txt]
    outs: [c.txt]
  d:
    cmd: make d
    deps: [b.txt, c.txt]
    outs: [d.txt]
";

/// a → b; c on its own.
const CHAIN_AND_ONE: &str = "stages:
  a:
    cmd: make a
    outs: [a.txt]
  b:
    cmd: make b
    deps: [a.txt]
    outs: [b.txt]
  c:
    cmd: make c
    outs: [c.txt]
";

fn independent(n: usize, resources: &str) -> String {
    let mut y = String::from("stages:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  s{i}:\n    cmd: make {i}\n    outs: [s{i}.txt]\n{resources}"
        ));
    }
    y
}

#[test]
fn ready_stages_start_in_topological_order_once_their_upstream_is_done() {
    let (_d, _f, mut s) = open(DIAMOND);
    let mut fake = Fake::for_session(&s);
    let done = run(&mut s, &mut fake, config(1), &AtomicI32::new(0));
    assert_eq!(fake.submitted, ["a", "b", "c", "d"]);
    // d was handed over only after a, b and c had finished.
    assert_eq!(fake.finished_before["d"], 3);
    assert_eq!(fake.finished_before["b"], 1);
    assert_eq!(
        done.summary,
        Summary {
            ran: 4,
            ..Summary::default()
        }
    );
    assert_eq!(
        s.lock.stages.len(),
        4,
        "every stage that ran has a lock entry"
    );
}

#[test]
fn jobs_bound_how_many_stages_run_at_once() {
    let (_d, _f, mut s) = open(&independent(5, ""));
    let mut fake = Fake::for_session(&s);
    let done = run(&mut s, &mut fake, config(2), &AtomicI32::new(0));
    assert_eq!(fake.max_running, 2, "-j 2: two at once, never more");
    assert_eq!(done.summary.ran, 5);
    // Without the bound, all five would be handed over in the first round.
    let (_d, _f, mut s) = open(&independent(5, ""));
    let mut fake = Fake::for_session(&s);
    run(&mut s, &mut fake, config(8), &AtomicI32::new(0));
    assert_eq!(fake.max_running, 5);
}

#[test]
fn gpu_slots_hand_each_running_stage_its_own_devices() {
    let (_d, _f, mut s) = open(&independent(3, "    resources: {gpu: 1}\n"));
    let mut fake = Fake::for_session(&s);
    let cfg = Config {
        gpu_ids: vec!["4".into(), "7".into()],
        ..config(8)
    };
    let done = run(&mut s, &mut fake, cfg, &AtomicI32::new(0));
    assert_eq!(done.summary.ran, 3);
    assert_eq!(fake.max_running, 2, "two GPU slots: two GPU stages at once");
    assert!(
        !fake.device_clash,
        "a device was handed to two running stages"
    );
    let seen: BTreeSet<&str> = fake.devices.values().map(String::as_str).collect();
    assert_eq!(
        seen,
        BTreeSet::from(["4", "7"]),
        "stages see the device ids, not the slot numbers"
    );
}

#[test]
fn a_failure_skips_its_dependents_and_stops_the_run() {
    let (_d, _f, mut s) = open(CHAIN_AND_ONE);
    let mut fake = Fake::for_session(&s);
    fake.fail.insert("a".into());
    let done = run(&mut s, &mut fake, config(1), &AtomicI32::new(0));
    assert_eq!(fake.submitted, ["a"], "b depends on a; c waits for a slot");
    assert_eq!(
        done.summary,
        Summary {
            failed: 1,
            skipped: 1,
            ..Summary::default()
        }
    );
    assert_eq!(done.not_started, 1, "c never started");
    assert!(s.lock.stages.is_empty(), "a failed stage is not recorded");
}

#[test]
fn keep_going_runs_what_does_not_depend_on_the_failure() {
    let (_d, _f, mut s) = open(CHAIN_AND_ONE);
    let mut fake = Fake::for_session(&s);
    fake.fail.insert("a".into());
    let cfg = Config {
        keep_going: true,
        ..config(1)
    };
    let done = run(&mut s, &mut fake, cfg, &AtomicI32::new(0));
    assert_eq!(fake.submitted, ["a", "c"]);
    assert_eq!(
        done.summary,
        Summary {
            ran: 1,
            failed: 1,
            skipped: 1,
            ..Summary::default()
        }
    );
    assert_eq!(done.not_started, 0);
    assert!(s.lock.stages.contains_key("c") && !s.lock.stages.contains_key("b"));
}

#[test]
fn an_interrupt_cancels_what_runs_and_starts_nothing_more() {
    let (_d, _f, mut s) = open(&independent(4, ""));
    let mut fake = Fake::for_session(&s);
    let flag = Arc::new(AtomicI32::new(0));
    fake.interrupt = Some(flag.clone());
    let done = run(&mut s, &mut fake, config(1), &flag);
    assert!(fake.cancelled, "the running stage is cancelled");
    assert_eq!(fake.submitted.len(), 1);
    assert_eq!(done.signal, 2);
    assert_eq!(done.not_started, 3);
    assert_eq!(done.summary.ran, 0);
    // The one stage running when the interrupt came is counted as such in the summary.
    assert_eq!(done.summary.interrupted, 1);
    assert!(done.summary.to_string().contains("1 interrupted"));
}

/// foreach `t` over 1, 2, 3: stages t@1, t@2, t@3 of one group.
const FOREACH: &str = "stages:
  t:
    foreach: [1, 2, 3]
    cmd: make ${item}
    outs: [\"t${item}.txt\"]
";

#[test]
fn a_batching_executor_admits_riders_beyond_the_slots_up_to_its_group_size() {
    let (_d, _f, mut s) = open(FOREACH);
    let mut fake = Fake::for_session(&s);
    fake.batch_max = Some(2);
    let done = run(&mut s, &mut fake, config(1), &AtomicI32::new(0));
    assert_eq!(done.summary.ran, 3);
    // -j 1: t@1 holds the slot, t@2 rides along in its batch (the group holds 2), handed
    // over together with a cap of one at a time.
    assert_eq!(
        fake.calls[0],
        [("t@1".to_string(), 1), ("t@2".to_string(), 1)]
    );
    assert_eq!(fake.calls[1], [("t@3".to_string(), 1)]);
    // t@1's slot went to the rider t@2, so t@3 waited for t@2 too: -j still bounds what runs.
    assert_eq!(fake.finished_before["t@3"], 2);
}

#[test]
fn without_batches_each_stage_waits_for_a_slot_and_goes_alone() {
    let (_d, _f, mut s) = open(FOREACH);
    let mut fake = Fake::for_session(&s);
    run(&mut s, &mut fake, config(1), &AtomicI32::new(0));
    assert_eq!(fake.calls.len(), 3);
    assert!(fake.calls.iter().all(|c| c.len() == 1));
    assert_eq!(fake.max_running, 1);
}

#[test]
fn the_plan_decides_fresh_and_restorable_stages_without_the_executor() {
    let (d, file, mut s) = open(CHAIN_AND_ONE);
    let mut fake = Fake::for_session(&s);
    run(&mut s, &mut fake, config(2), &AtomicI32::new(0));
    repro_engine::write_lock(&s.ws, &s.lock).unwrap();
    drop(s);
    // c's output is lost: its key is in the run cache, so it is restored, not run.
    std::fs::remove_file(d.path().join("c.txt")).unwrap();
    let mut s = reopen(&file);
    let mut fake = Fake::for_session(&s);
    let done = run(&mut s, &mut fake, config(2), &AtomicI32::new(0));
    assert!(fake.submitted.is_empty(), "ran {:?}", fake.submitted);
    assert_eq!(
        done.summary,
        Summary {
            fresh: 2,
            restored: 1,
            ..Summary::default()
        }
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("c.txt")).unwrap(),
        "c made this\n"
    );
}

/// `flaky` (fails twice, then succeeds; retried twice after 0.4 s) beside a chain a → b → c.
const FLAKY: &str = "stages:
  flaky:
    cmd: make flaky
    outs: [flaky.txt]
    retry: {count: 2, backoff: 0.4s}
  a:
    cmd: make a
    outs: [a.txt]
  b:
    cmd: make b
    deps: [a.txt]
    outs: [b.txt]
  c:
    cmd: make c
    deps: [b.txt]
    outs: [c.txt]
";

#[test]
fn a_failed_stage_runs_again_after_its_backoff_without_holding_up_the_others() {
    let (dir, _f, mut s) = open(FLAKY);
    let mut fake = Fake::for_session(&s);
    fake.fail_first.insert("flaky".into(), 2);
    let flag = AtomicI32::new(0);
    let done = run(&mut s, &mut fake, config(2), &flag);
    assert_eq!(
        done.summary,
        Summary {
            ran: 4,
            retried: 1,
            ..Summary::default()
        }
    );
    assert!(done.summary.to_string().contains("1 retried"));
    let at = |name: &str| -> Vec<Instant> {
        let v = fake.submitted_at.iter().filter(|(n, _)| n == name);
        v.map(|(_, t)| *t).collect()
    };
    let flaky = at("flaky");
    assert_eq!(flaky.len(), 3, "{:?}", fake.submitted);
    for w in flaky.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(400), "retried after {gap:?}");
    }
    // The chain went on while flaky waited out its backoff: the loop did not sleep.
    let c = at("c")[0];
    assert!(c < flaky[1], "{:?}", fake.submitted);
    assert!(
        c - flaky[0] < Duration::from_millis(300),
        "{:?}",
        c - flaky[0]
    );
    // The trace numbers the attempts.
    let trace = std::fs::read_to_string(dir.path().join("cache/trace.jsonl")).unwrap();
    let attempts: Vec<u64> = trace
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["stage"] == "flaky")
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[test]
fn a_stage_that_keeps_failing_fails_after_its_retries_and_others_are_not_retried() {
    let yaml = FLAKY.replace("0.4s", "0.05");
    let (_d, _f, mut s) = open(&yaml);
    let mut fake = Fake::for_session(&s);
    fake.fail.insert("flaky".into());
    fake.fail.insert("c".into());
    let flag = AtomicI32::new(0);
    let mut cfg = config(2);
    cfg.keep_going = true;
    let done = run(&mut s, &mut fake, cfg, &flag);
    assert_eq!(done.summary.failed, 2);
    assert_eq!(done.summary.retried, 1);
    let count = |name: &str| fake.submitted.iter().filter(|n| *n == name).count();
    assert_eq!((count("flaky"), count("c")), (3, 1), "{:?}", fake.submitted);
    assert!(!s.lock.stages.contains_key("flaky"));
}
