//! Issue 30, items 4 and 5: the command-line habits people expect of a run (failures on
//! stderr, SIGTERM's exit code and the interrupted count, a short `status`) and per-stage
//! `retry:`.

mod common;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Ws, both};

fn wait_or_kill(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}\n{}", both(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_failure_is_reported_on_stderr_and_the_summary_on_stdout() {
    let ws = Ws::new(
        "stages:\n  bad:\n    cmd: echo boom >&2; exit 3\n    outs: [bad.txt]\n  good:\n    cmd: echo ok > good.txt\n    outs: [good.txt]\n",
    );
    let o = ws.output(&["run", "-j", "1", "--keep-going"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        err.contains("FAILED bad") && err.contains("| boom"),
        "stderr: {err}"
    );
    assert!(!out.contains("FAILED"), "stdout: {out}");
    assert!(out.contains("1 ran, 0 fresh, 1 failed"), "stdout: {out}");
}

#[test]
fn sigterm_exits_143_and_the_summary_counts_the_interrupted_stage() {
    let ws = Ws::new(
        "stages:\n  slow:\n    cmd: touch started; sleep 30; echo > s.txt\n    outs: [s.txt]\n  quick:\n    cmd: echo > q.txt\n    outs: [q.txt]\n",
    );
    let mut child = ws
        .cmd(&["run", "-j", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stdout is read as it comes: the signal goes only once the engine has said `quick` ran
    // (its output file existing is not enough: the engine may still be storing it).
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (seen, mut pipe) = (seen.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ws.path("started").exists() || !seen.lock().unwrap().contains("ran quick") {
        assert!(Instant::now() < deadline, "the stages never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = wait_or_kill(child, Duration::from_secs(20));
    reader.join().unwrap();
    let out = seen.lock().unwrap().clone();
    assert_eq!(o.status.code(), Some(143), "{out}{}", stderr(&o));
    assert!(
        out.contains("1 ran") && out.contains("1 interrupted"),
        "{out}"
    );
    assert!(stderr(&o).contains("interrupted: stopping"), "{}", both(&o));
}

#[test]
fn status_lists_what_needs_work_and_counts_the_fresh_stages() {
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n  b:\n    cmd: echo b > b.txt\n    outs: [b.txt]\n  c:\n    cmd: cat in.txt > c.txt\n    deps: [in.txt]\n    outs: [c.txt]\n",
    );
    ws.write("in.txt", "1");
    ws.ok(&["run"]);
    ws.write("in.txt", "2");
    let st = ws.ok(&["status"]);
    assert!(st.contains("stale  c"), "{st}");
    assert!(!st.contains("fresh  a") && !st.contains("fresh  b"), "{st}");
    assert!(st.contains("2 fresh stage(s) not shown"), "{st}");
    assert!(st.contains("3 stages: 2 fresh, 1 stale"), "{st}");
    let all = ws.ok(&["status", "--all"]);
    assert!(
        all.contains("fresh  a") && all.contains("fresh  b") && all.contains("stale  c"),
        "{all}"
    );
    assert!(!all.contains("not shown"), "{all}");
    // --json keeps every stage.
    assert_eq!(ws.status_names(&[]), ["a", "b", "c"]);
}

/// Fails on its first run (no `tries` file yet), succeeds on the second.
const FLAKY: &str = "stages:\n  flaky:\n    cmd: echo x >> tries; test $(wc -l < tries) -ge 2 && echo ok > f.txt\n    outs: [f.txt]\n    retry: {count: 2, backoff: 0.2s}\n";

#[test]
fn retry_runs_a_failed_stage_again_and_says_so() {
    let ws = Ws::new(FLAKY);
    let o = ws.output(&["run"]);
    assert!(o.status.success(), "{}", both(&o));
    assert_eq!(ws.read("tries").lines().count(), 2);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        err.contains("warning: flaky failed (attempt 1 of 3)") && err.contains("retrying in 0.2s"),
        "stderr: {err}"
    );
    assert!(
        out.contains("1 ran, 0 fresh, 0 failed, 1 retried"),
        "stdout: {out}"
    );
    let trace = ws.read("cache/trace.jsonl");
    let attempts: Vec<(String, u64)> = trace
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| {
            (
                e["status"].as_str().unwrap().to_string(),
                e["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [("exit 1".to_string(), 1), ("ok".to_string(), 2)]);
    // `retry:` is not part of the key: changing it leaves the stage fresh.
    ws.write("pipeline.yaml", &FLAKY.replace("count: 2", "count: 5"));
    let st = ws.ok(&["status"]);
    assert!(st.contains("1 stages: 1 fresh, 0 stale"), "{st}");
}

#[test]
fn a_stage_without_retry_fails_at_once() {
    let ws = Ws::new(&FLAKY.replace("    retry: {count: 2, backoff: 0.2s}\n", ""));
    let o = ws.output(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert_eq!(ws.read("tries").lines().count(), 1);
    assert!(!stdout(&o).contains("retried"), "{}", both(&o));
}

#[test]
fn retry_and_executor_are_checked_where_they_are_written() {
    for (value, want) in [
        ("retry: {count: many}", "5:20"),
        ("retry: {cuont: 3}", "5:13"),
        ("retry: -1", "5:12"),
        ("retry: {count: 1, backoff: soon}", "5:32"),
        ("executor: slurm", "5:15"),
    ] {
        let ws = Ws::new(&format!(
            "stages:\n  s:\n    cmd: echo > s.txt\n    outs: [s.txt]\n    {value}\n"
        ));
        let err = ws.fail(&["status"]);
        assert!(
            err.contains(&format!("pipeline.yaml:{want}")),
            "{value}: {err}"
        );
    }
    let ws = Ws::new(
        "stages:\n  s:\n    cmd: echo > s.txt\n    outs: [s.txt]\n    retry: 2\n    executor: local\n",
    );
    ws.ok(&["run"]);
}
