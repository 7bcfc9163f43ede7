//! End to end: `repro run --executor slurm` against a real Slurm, compared with local runs.
//!
//! Needs the one-node test cluster of `scripts/slurm-up.sh` (CI starts it; locally run
//! `eval "$(scripts/slurm-up.sh)"` once). SLURM_CONF comes from the environment, else from
//! the script's default location. These tests fail, never skip, when Slurm is not up.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Ws, both, slurm_conf};

/// The test node has two GPUs; tests that need them exclusively take turns.
static GPUS: Mutex<()> = Mutex::new(());

fn repro(ws: &Ws, args: &[&str]) -> Output {
    ws.cmd(args)
        .env("SLURM_CONF", slurm_conf())
        .output()
        .unwrap()
}

fn ok(ws: &Ws, args: &[&str]) -> String {
    let o = repro(ws, args);
    let text = both(&o);
    assert!(o.status.success(), "repro {args:?} failed:\n{text}");
    text
}

fn squeue(args: &[&str]) -> String {
    let out = Command::new("squeue")
        .args(args)
        .env("SLURM_CONF", slurm_conf())
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// a → b → d, a → c, with per-stage resources; each stage notes which Slurm job ran it in
/// `jobs.log` (not an output).
const DIAMOND: &str = r#"
vars:
  greeting: hello
stages:
  a:
    cmd: echo "a $SLURM_JOB_ID" >> jobs.log && cat input.txt > a.txt
    deps: [input.txt]
    outs: [a.txt]
  b:
    cmd: echo "b $SLURM_JOB_ID" >> jobs.log && (cat a.txt; echo ${greeting}) > b.txt
    deps: [a.txt]
    outs: [b.txt]
    params: [greeting]
    resources: {cpus: 2, mem: 300M, time: 5}
  c:
    cmd: echo "c $SLURM_JOB_ID" >> jobs.log && mkdir -p c && wc -c < a.txt > c/n.txt && echo to-stdout && echo '##repro-progress {"msg":"m","frac":1}' && echo to-stderr >&2
    deps: [a.txt]
    outs: [c]
  d:
    cmd: echo "d $SLURM_JOB_ID" >> jobs.log && cat b.txt c/n.txt > d.txt
    deps: [b.txt, c]
    outs: [d.txt]
"#;

#[test]
fn outputs_lock_and_status_match_a_local_run() {
    let local = Ws::new(DIAMOND);
    let slurm = Ws::new(DIAMOND);
    for ws in [&local, &slurm] {
        ws.write("input.txt", "one\n");
    }
    let out = ok(&local, &["run"]);
    assert!(out.contains("4 ran, 0 fresh, 0 failed"), "{out}");
    let out = ok(&slurm, &["run", "--executor", "slurm"]);
    assert!(out.contains("4 ran, 0 fresh, 0 failed"), "{out}");

    // Every stage really ran as a Slurm job (locally $SLURM_JOB_ID is empty).
    let jobs = slurm.read("jobs.log");
    assert_eq!(jobs.lines().count(), 4, "{jobs}");
    for line in jobs.lines() {
        let id = line.split_whitespace().nth(1).unwrap_or("");
        assert!(id.parse::<u64>().is_ok(), "not run by Slurm: {line:?}");
    }
    assert!(
        local
            .read("jobs.log")
            .lines()
            .all(|l| l.split_whitespace().count() == 1)
    );

    for f in ["a.txt", "b.txt", "c/n.txt", "d.txt", "repro.lock"] {
        assert_eq!(
            local.read(f),
            slurm.read(f),
            "{f} differs between local and Slurm runs"
        );
    }
    assert_eq!(slurm.read("d.txt"), "one\nhello\n4\n");
    // The stage's log reads the same too: output kept, progress markers relayed, not logged.
    let log = slurm.read("cache/logs/c.log");
    assert!(
        log.contains("to-stdout\n") && log.contains("to-stderr\n"),
        "{log:?}"
    );
    assert!(!log.contains("##repro-progress"), "{log:?}");
    assert_eq!(log.len(), local.read("cache/logs/c.log").len(), "{log:?}");
    assert_eq!(
        ok(&local, &["status", "--json"]),
        ok(&slurm, &["status", "--json"])
    );
    assert_eq!(ok(&local, &["status"]), ok(&slurm, &["status"]));

    // One state for both executors: nothing reruns whichever executor comes next.
    let out = ok(&slurm, &["run"]);
    assert!(out.contains("0 ran, 4 fresh, 0 failed"), "{out}");
    let out = ok(&local, &["run", "--executor", "slurm"]);
    assert!(out.contains("0 ran, 4 fresh, 0 failed"), "{out}");

    // A change reruns exactly its downstream, under Slurm too.
    slurm.write(
        "pipeline.yaml",
        &DIAMOND.replace("greeting: hello", "greeting: hi"),
    );
    let out = ok(&slurm, &["run", "--executor", "slurm"]);
    assert!(out.contains("2 ran, 2 fresh, 0 failed"), "{out}");
    assert_eq!(slurm.read("d.txt"), "one\nhi\n4\n");
}

#[test]
fn executor_and_defaults_come_from_the_pipeline() {
    let ws = Ws::new(
        r#"
executor: slurm
slurm:
  partition: other
stages:
  where:
    cmd: echo "$SLURM_JOB_PARTITION $SLURM_CPUS_PER_TASK" > where.txt
    outs: [where.txt]
    resources: {cpus: 3}
  pinned:
    cmd: echo "$SLURM_JOB_PARTITION" > pinned.txt
    outs: [pinned.txt]
    resources: {partition: debug}
"#,
    );
    ok(&ws, &["run"]);
    assert_eq!(ws.read("where.txt"), "other 3\n");
    assert_eq!(
        ws.read("pinned.txt"),
        "debug\n",
        "a stage's partition overrides the default"
    );

    ws.write(
        "pipeline.yaml",
        "executor: slurm\nslurm: {partiton: x}\nstages: {}\n",
    );
    let err = both(&repro(&ws, &["run"]));
    assert!(err.contains("partiton") && err.contains("slurm:"), "{err}");
}

#[test]
fn gpu_stages_get_different_devices_and_a_third_waits() {
    let _gpus = GPUS.lock().unwrap_or_else(|e| e.into_inner());
    let ws = Ws::new(
        r#"
stages:
  gpu:
    foreach: [0, 1, 2]
    cmd: date +%s.%N > start.${item}; echo "$CUDA_VISIBLE_DEVICES" > dev.${item}; sleep 4; date +%s.%N > end.${item}
    outs: ["dev.${item}"]
    resources: {gpu: 1}
"#,
    );
    // -j 8: the engine would start all three; only Slurm's GPU count holds one back.
    let out = ok(&ws, &["run", "--executor", "slurm", "-j", "8"]);
    assert!(out.contains("3 ran"), "{out}");
    let num = |f: String| ws.read(&f).trim().parse::<f64>().unwrap();
    let mut runs: Vec<(f64, f64, String)> = (0..3)
        .map(|i| {
            (
                num(format!("start.{i}")),
                num(format!("end.{i}")),
                ws.read(&format!("dev.{i}")),
            )
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        runs[1].0 < runs[0].1,
        "the first two ran together: {runs:?}"
    );
    let mut devs = [runs[0].2.trim(), runs[1].2.trim()];
    devs.sort();
    assert_eq!(devs, ["0", "1"], "{runs:?}");
    assert!(
        runs[2].0 >= runs[0].1.min(runs[1].1) - 0.05,
        "the third waited: {runs:?}"
    );
}

#[test]
fn a_job_killed_at_its_time_limit_is_reported_and_rerun() {
    // Slurm's time limits are whole minutes: this takes about 80 s.
    let ws = Ws::new(
        r#"
stages:
  slow:
    cmd: if [ -e fast ]; then echo done > slow.txt; else sleep 600; fi
    outs: [slow.txt]
    resources: {time: 1}
  after:
    cmd: cp slow.txt after.txt
    deps: [slow.txt]
    outs: [after.txt]
"#,
    );
    let o = repro(&ws, &["run", "--executor", "slurm"]);
    let text = both(&o);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("TIMEOUT") && text.contains("TimeLimit"),
        "Slurm's reason: {text}"
    );
    assert!(
        !ws.read("repro.lock").contains("slow.txt"),
        "nothing recorded for it"
    );
    let status = ok(&ws, &["status"]);
    assert!(status.contains("slow"), "{status}");

    ws.write("fast", "");
    let out = ok(&ws, &["run", "--executor", "slurm"]);
    assert!(out.contains("2 ran, 0 fresh, 0 failed"), "rerun: {out}");
    assert_eq!(ws.read("after.txt"), "done\n");
}

#[test]
fn ctrl_c_cancels_running_and_queued_jobs() {
    let _gpus = GPUS.lock().unwrap_or_else(|e| e.into_inner());
    // Single jobs (arrays off): tests/slurm_arrays.rs cancels a job array.
    let ws = Ws::new(
        r#"
slurm: {arrays: false}
stages:
  hold:
    foreach: [one, two]
    cmd: echo $$ > pid.${item}; exec sleep 600
    outs: ["never.${item}"]
    resources: {gpu: 2}
"#,
    );
    // Both want both GPUs: one runs, the other waits in Slurm's queue.
    let mut child = ws
        .cmd(&["run", "--executor", "slurm", "-j", "4"])
        .env("SLURM_CONF", slurm_conf())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let (running_pid, jobs) = loop {
        assert!(t0.elapsed() < Duration::from_secs(60), "jobs never started");
        std::thread::sleep(Duration::from_millis(200));
        let pid = ["pid.one", "pid.two"]
            .iter()
            .map(|f| ws.read(f))
            .find(|p| !p.is_empty());
        let jobs = squeue(&[
            "-h",
            "-o",
            "%i %T %j",
            "-n",
            "repro:hold@one,repro:hold@two",
        ]);
        if let Some(pid) = pid
            && jobs.contains("RUNNING")
            && jobs.contains("PENDING")
        {
            break (pid.trim().parse::<i32>().unwrap(), jobs);
        }
    };
    let ids: Vec<String> = jobs
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{jobs}");

    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(90),
            "repro did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    for id in &ids {
        assert_eq!(
            squeue(&["-h", "-t", "all", "-o", "%T", "-j", id]),
            "CANCELLED",
            "job {id}"
        );
    }
    assert!(
        !Path::new(&format!("/proc/{running_pid}")).exists(),
        "the stage still runs"
    );
    assert!(!ws.read("repro.lock").contains("never"));
}

#[test]
fn a_job_killed_by_slurm_resumes_from_its_checkpoint_next_run() {
    let ws = Ws::new(
        r#"
stages:
  train:
    cmd: if [ -e "$REPRO_CHECKPOINT/epoch1" ]; then echo resumed > model.txt; else touch "$REPRO_CHECKPOINT/epoch1"; echo $SLURM_JOB_ID > jobid; sleep 600; fi
    outs: [model.txt]
    checkpoint: ckpt
"#,
    );
    let child = ws
        .cmd(&["run", "--executor", "slurm"])
        .env("SLURM_CONF", slurm_conf())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while ws.read("jobid").trim().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the job never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Slurm, not repro, ends the job (as preemption or an operator would).
    let id = ws.read("jobid").trim().to_string();
    let s = Command::new("scancel")
        .arg(&id)
        .env("SLURM_CONF", slurm_conf())
        .status()
        .unwrap();
    assert!(s.success());
    let o = child.wait_with_output().unwrap();
    let text = both(&o);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("Slurm: CANCELLED") && text.contains(&id),
        "{text}"
    );

    let out = ok(&ws, &["run", "--executor", "slurm"]);
    assert!(out.contains("1 ran"), "{out}");
    assert_eq!(
        ws.read("model.txt"),
        "resumed\n",
        "resumed from the checkpoint"
    );
}

#[test]
fn an_unreachable_slurm_is_reported_before_anything_runs() {
    let ws = Ws::new("stages:\n  a:\n    cmd: touch a.txt\n    outs: [a.txt]\n");
    let o = ws
        .cmd(&["run", "--executor", "slurm"])
        .env("SLURM_CONF", "/nonexistent/slurm.conf")
        .output()
        .unwrap();
    let text = both(&o);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("/nonexistent/slurm.conf") && text.contains("slurm-up.sh"),
        "{text}"
    );
    assert!(!ws.path("a.txt").exists());
}

/// Issue 30 (item 5): a stage that says `executor: local` runs on this machine while the rest
/// of the pipeline runs as Slurm jobs (the report on the login node).
#[test]
fn a_stage_with_executor_local_runs_here_beside_slurm_jobs() {
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: echo \"job=$SLURM_JOB_ID\" > a.txt\n    outs: [a.txt]\n  report:\n    cmd: (echo \"job=$SLURM_JOB_ID\"; cat a.txt) > r.txt\n    deps: [a.txt]\n    outs: [r.txt]\n    executor: local\n",
    );
    let out = ok(&ws, &["run", "--executor", "slurm"]);
    assert!(out.contains("2 ran, 0 fresh, 0 failed"), "{out}");
    let r = ws.read("r.txt");
    let mut lines = r.lines();
    assert_eq!(
        lines.next(),
        Some("job="),
        "the report ran outside Slurm: {r}"
    );
    let a = lines.next().unwrap_or_default();
    assert!(a.len() > "job=".len(), "a ran as a Slurm job: {r}");
    let executors: Vec<(String, String)> = ws
        .read("cache/trace.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("stage"), s("executor"))
        })
        .collect();
    assert_eq!(executors[1], ("report".to_string(), "local".to_string()));
    assert!(executors[0].1.starts_with("slurm:"), "{executors:?}");
}
