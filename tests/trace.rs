//! The run trace: each stage run's wall and CPU time, peak memory of its process tree, GPUs,
//! exit status and executor in cache/trace.jsonl, printed by `repro trace`.

mod common;

use common::Ws;
use serde_json::Value;

#[test]
fn stage_runs_are_traced_with_cpu_memory_and_how_they_ended() {
    // `busy` burns CPU and holds ~64 MiB in a grandchild (sh → python3); `fails` exits 3;
    // `killed` dies by SIGTERM.
    let ws = Ws::new(
        r#"stages:
  busy:
    cmd: python3 -c 'b = b"x" * (64 << 20); s = sum(range(4_000_000))' && echo ok > busy.txt
    outs: [busy.txt]
  fails:
    cmd: exit 3
  killed:
    cmd: kill -TERM $$
"#,
    );
    let o = ws.output(&["run", "-k"]);
    assert_eq!(o.status.code(), Some(1), "{}", common::both(&o));
    let text = common::both(&o);
    assert!(
        text.contains("exit code 3") && text.contains("killed by signal 15"),
        "{text}"
    );

    let entries: Vec<Value> = serde_json::from_str(&ws.ok(&["trace", "--json"])).unwrap();
    assert_eq!(entries.len(), 3, "{entries:?}");
    let get = |s: &str| entries.iter().find(|e| e["stage"] == s).unwrap();
    let busy = get("busy");
    assert_eq!(busy["status"], "ok");
    assert_eq!(busy["executor"], "local");
    assert_eq!(busy["gpus"], 0);
    assert!(busy["cpu_s"].as_f64().unwrap() > 0.05, "{busy}");
    let rss = busy["max_rss_kb"].as_u64().unwrap();
    assert!(rss > 64 * 1024, "peak memory of the grandchild: {busy}");
    assert!(
        busy["wall_s"].as_f64().unwrap() >= busy["cpu_s"].as_f64().unwrap() * 0.5,
        "{busy}"
    );
    assert_eq!(get("fails")["status"], "exit 3");
    assert_eq!(get("killed")["status"], "signal 15");
    assert_eq!(busy["key"].as_str().unwrap().len(), 64);

    // A second run traces only what ran; --last shows that run alone.
    std::fs::remove_file(ws.path("busy.txt")).unwrap();
    ws.ok(&["run", "--force", "busy"]);
    let all: Vec<Value> = serde_json::from_str(&ws.ok(&["trace", "--json"])).unwrap();
    assert_eq!(all.len(), 4);
    let last: Vec<Value> = serde_json::from_str(&ws.ok(&["trace", "--last", "--json"])).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0]["stage"], "busy");
    let table = ws.ok(&["trace", "--last"]);
    assert!(
        table.contains("peak mem") && table.contains("busy") && table.contains("MiB"),
        "{table}"
    );
    assert!(
        table.contains("1 stage runs") && table.contains("CPU-hours"),
        "{table}"
    );
    // Nothing left behind by the measuring wrapper.
    assert_eq!(
        std::fs::read_dir(ws.path("cache/trace")).unwrap().count(),
        0
    );
}

#[test]
fn a_damaged_trace_line_is_skipped_with_one_warning() {
    let ws = Ws::new(
        r#"stages:
  a:
    cmd: echo a > a.txt
    outs: [a.txt]
"#,
    );
    ws.ok(&["run"]);
    // One invalid byte in a line of its own, then another run appends after it.
    let trace = ws.path("cache/trace.jsonl");
    let mut bytes = std::fs::read(&trace).unwrap();
    bytes.extend_from_slice(b"{\"run\": \xff}\n");
    std::fs::write(&trace, bytes).unwrap();
    ws.ok(&["run", "--force"]);

    let o = ws.output(&["trace", "--json"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}", common::both(&o));
    let entries: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        entries.len(),
        2,
        "both runs survive the damaged line: {entries:?}"
    );
    assert_eq!(
        stderr.matches("warning").count(),
        1,
        "one warning: {stderr}"
    );
    assert!(
        stderr.contains("skipped 1 unreadable line") && stderr.contains("trace.jsonl"),
        "{stderr}"
    );
}
