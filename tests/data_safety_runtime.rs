//! Data safety at run time (issue 14): stage processes, the state database, hashing, time
//! limits and GPUs, each checked against the real binary in a temporary workspace. Every test
//! here failed on the engine before these fixes.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Ws, both};

/// Wait for `child` up to `limit`; kills it (and says so in the panic) if it takes longer.
fn wait_or_kill(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what}: still running after {limit:?}\n{}", both(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_piped(ws: &Ws, args: &[&str]) -> Child {
    ws.cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Processes whose working directory is `dir` (the stages of a workspace).
fn processes_in(dir: &Path) -> Vec<i32> {
    let dir = dir.canonicalize().unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .map(|i| s[i + 1..].trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie
            && std::fs::read_link(format!("/proc/{pid}/cwd"))
                .ok()
                .as_deref()
                == Some(&dir)
        {
            out.push(pid);
        }
    }
    out
}

/// Kill whatever still runs in `dir` (so a failing test leaves nothing behind).
fn kill_all_in(dir: &Path) {
    for pid in processes_in(dir) {
        // SAFETY: these processes run in the test's own temporary workspace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Appends a line to the file named by argv[1] every 20 ms, forever.
const TICK_PY: &str = "import sys, time\nwhile True:\n    open(sys.argv[1], 'a').write('t\\n')\n    time.sleep(0.02)\n";

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Defect 1: a non-UTF-8 byte on stdout killed the stage (SIGPIPE) and lost the log.
#[test]
fn non_utf8_output_does_not_kill_the_stage_and_is_logged_as_bytes() {
    let ws = Ws::new(
        "stages:\n  s:\n    cmd: \"printf 'epoch 1 caf\\\\351\\\\n'; printf 'err \\\\377\\\\n' >&2; sleep 0.3; echo epoch 2; echo ok > l.txt\"\n    outs: [l.txt]\n",
    );
    let out = ws.ok(&["run"]);
    assert!(out.contains("1 ran"), "{out}");
    assert_eq!(ws.read("l.txt"), "ok\n");
    let log = std::fs::read(ws.path("cache/logs/s.log")).unwrap();
    let has = |needle: &[u8]| log.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"epoch 1 caf\xe9\n"), "{log:?}");
    assert!(has(b"err \xff\n"), "{log:?}");
    assert!(has(b"epoch 2\n"), "{log:?}");
}

/// Defect 11: a command that failed on a spec error exited while the state loader thread was
/// still creating `cache/state.redb`, leaving a half-created file that broke later commands.
/// The window is hit when parsing takes about as long as creating the database: pipelines of
/// growing size with the error at the end sweep across it (before the fix most of the larger
/// ones left a file that failed with "invalid data").
#[test]
fn a_spec_error_never_leaves_a_half_created_state_db() {
    for round in 0..16 {
        let mut text = String::from("stages:\n");
        for i in 0..round * 200 {
            text.push_str(&format!("  s{i}:\n    cmd: echo {i}\n"));
        }
        text.push_str("  a:\n    cmd: echo\n    dep: [x]\n");
        let ws = Ws::new(&text);
        let err = ws.fail(&["status"]);
        assert!(err.contains("unknown stage key 'dep'"), "{err}");
        ws.write(
            "pipeline.yaml",
            "stages:\n  a:\n    cmd: echo hi > a.txt\n    outs: [a.txt]\n",
        );
        let out = ws.ok(&["status"]);
        assert!(
            !out.contains("unreadable") && !out.contains("warning"),
            "round {round}: the first command left a damaged state database:\n{out}"
        );
    }
}

/// Defect 11: a truncated or foreign state database failed (or panicked inside redb) on every
/// command; it is a cache and is rebuilt with a warning.
#[test]
fn a_damaged_state_db_is_rebuilt_with_a_warning() {
    let ws = Ws::new("stages:\n  a:\n    cmd: echo hi > a.txt\n    outs: [a.txt]\n");
    ws.ok(&["run"]);
    let db = ws.path("cache/state.redb");
    let full = std::fs::read(&db).unwrap();
    for (what, bytes) in [
        ("truncated to half", full[..full.len() / 2].to_vec()),
        (
            "truncated to 700 bytes",
            full[..700.min(full.len())].to_vec(),
        ),
        ("garbage", b"this is not a database".repeat(100)),
    ] {
        std::fs::write(&db, &bytes).unwrap();
        // The up-to-date record would answer both commands without opening the database
        // (tests/up_to_date.rs); this is about the commands that open it.
        let _ = std::fs::remove_file(ws.path("cache/up-to-date"));
        let st = ws.output(&["status"]);
        let text = both(&st);
        assert!(st.status.success(), "{what}: status failed:\n{text}");
        assert!(!text.contains("panicked"), "{what}:\n{text}");
        assert!(
            text.contains("1 fresh"),
            "{what}: the lock still says fresh:\n{text}"
        );
        let out = ws.output(&["run"]);
        let text = both(&out);
        assert!(out.status.success(), "{what}: run failed:\n{text}");
        assert!(!text.contains("panicked"), "{what}:\n{text}");
        assert!(
            text.contains("state database") && text.contains("rebuilding"),
            "{what}: no warning:\n{text}"
        );
        assert!(text.contains("up to date"), "{what}:\n{text}");
        // Rebuilt: the next command is quiet.
        let again = ws.ok(&["run"]);
        assert!(!again.contains("warning"), "{what}:\n{again}");
    }
}

/// Defect 12: a device as a dependency (`/dev/zero`) hashed forever and ignored Ctrl-C.
#[test]
fn a_device_file_is_not_a_valid_dependency() {
    let ws = Ws::new("stages:\n  zeros:\n    cmd: echo\n    deps: [/dev/zero]\n");
    let out = wait_or_kill(
        run_piped(&ws, &["run"]),
        Duration::from_secs(20),
        "repro run with a /dev/zero dep",
    );
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("/dev/zero") && text.contains("character device"),
        "{text}"
    );
    assert!(
        text.contains("zeros") && text.contains("pipeline.yaml:4"),
        "{text}"
    );
}

/// Defect 12: SIGTERM while hashing a huge dependency was ignored until the hash finished.
#[test]
fn sigterm_interrupts_hashing_promptly() {
    let ws = Ws::new("stages:\n  big:\n    cmd: echo\n    deps: [big.bin]\n");
    // Sparse: no disk, but hashing 64 GiB of zeros takes far longer than this test waits.
    std::fs::File::create(ws.path("big.bin"))
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let child = run_piped(&ws, &["run"]);
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_millis(800));
    let sent = Instant::now();
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = wait_or_kill(
        child,
        Duration::from_secs(10),
        "repro run after SIGTERM while hashing",
    );
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} to stop:\n{}",
        both(&out)
    );
    assert!(!out.status.success(), "{}", both(&out));
    // Nothing was recorded for the interrupted stage.
    assert!(
        !ws.read("repro.lock").contains("big.bin"),
        "{}",
        ws.read("repro.lock")
    );
}

/// Defect 13: after SIGKILL of the engine, a stage's grandchildren (`cd . && python3 …`)
/// kept running; so did a process that left the stage's process group.
#[test]
fn sigkill_of_the_engine_stops_the_whole_stage_tree() {
    let ws = Ws::new(
        "stages:\n  tick:\n    cmd: (setsid python3 tick.py escaped.txt &) ; cd . && python3 tick.py tick.txt\n    outs: [never.txt]\n",
    );
    ws.write("tick.py", TICK_PY);
    let mut child = ws.spawn(&["run"]);
    let (tick, escaped) = (ws.path("tick.txt"), ws.path("escaped.txt"));
    wait_for("the stage to tick", Duration::from_secs(20), || {
        file_len(&tick) > 0 && file_len(&escaped) > 0
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = (|| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if processes_in(ws.dir.path()).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })();
    let left = processes_in(ws.dir.path());
    kill_all_in(ws.dir.path());
    assert!(gone, "stage processes outlived the engine: {left:?}");
    let (a, b) = (file_len(&tick), file_len(&escaped));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (a, b),
        (file_len(&tick), file_len(&escaped)),
        "still ticking"
    );
}

/// Defect 13: `.tmp-*` files a killed run left in `cache/objects` were never collected; gc and
/// the next run (after a killed one) remove them, but never one of a live process.
#[test]
fn temporary_objects_of_killed_runs_are_collected() {
    let ws = Ws::new("stages:\n  a:\n    cmd: echo hi > a.txt\n    outs: [a.txt]\n");
    ws.ok(&["run"]);
    // A pid that no longer exists.
    let mut c = Command::new("true").spawn().unwrap();
    let dead = c.id();
    c.wait().unwrap();
    let live = std::process::id();
    let objects = ws.path("cache/objects/ab");
    std::fs::create_dir_all(&objects).unwrap();
    let stale = objects.join(format!(".tmp-{dead}-17"));
    let busy = objects.join(format!(".tmp-{live}-18"));
    std::fs::write(&stale, "half an object").unwrap();
    std::fs::write(&busy, "being written").unwrap();
    let out = ws.ok(&["gc"]);
    assert!(!stale.exists(), "gc left {}:\n{out}", stale.display());
    assert!(busy.exists(), "gc removed a live process's file");

    // The next run after a killed one: the lock file still names the dead run.
    std::fs::write(&stale, "half an object").unwrap();
    std::fs::write(ws.path("cache/run.pid"), dead.to_string()).unwrap();
    ws.ok(&["run"]);
    assert!(
        !stale.exists(),
        "the run after a killed run left {}",
        stale.display()
    );
    assert!(busy.exists());
}

/// Defect 16: with CUDA_VISIBLE_DEVICES=2,3 stages were handed 0 and 1. GPUs are faked
/// through that variable alone (detection trusts it before asking nvidia-smi).
#[test]
fn stages_get_the_users_own_gpu_ids() {
    let ws = Ws::new(
        "stages:\n  g:\n    foreach: [a, b]\n    cmd: echo \"$CUDA_VISIBLE_DEVICES\" > dev.${item}; sleep 0.3\n    outs: [\"dev.${item}\"]\n    resources: {gpu: 1}\n",
    );
    let out = ws
        .cmd(&["run", "-j", "2"])
        .env("CUDA_VISIBLE_DEVICES", "2,3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    let mut devs = [
        ws.read("dev.a").trim().to_string(),
        ws.read("dev.b").trim().to_string(),
    ];
    devs.sort();
    assert_eq!(devs, ["2", "3"], "{}", both(&out));

    // `--resources gpu=1` with the user's list: the first of their devices, not 0.
    let _ = std::fs::remove_file(ws.path("dev.a"));
    let out = ws
        .cmd(&["run", "--force", "g@a", "--resources", "gpu=1"])
        .env("CUDA_VISIBLE_DEVICES", "5,7")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(ws.read("dev.a").trim(), "5");
}

/// Defect 17: `resources: {time: …}` was ignored locally.
#[test]
fn a_local_time_limit_stops_the_stage_tree() {
    let ws = Ws::new(
        "stages:\n  slow:\n    cmd: echo partial > out.txt; cd . && python3 tick.py tick.txt\n    outs: [out.txt]\n    resources: {time: '0:01'}\n",
    );
    ws.write("tick.py", TICK_PY);
    let started = Instant::now();
    let out = wait_or_kill(
        run_piped(&ws, &["run"]),
        Duration::from_secs(30),
        "repro run of a stage with a 1 s limit",
    );
    let took = started.elapsed();
    let text = both(&out);
    kill_all_in(ws.dir.path());
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("timed out after 1s"), "{text}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(processes_in(ws.dir.path()).is_empty());
    let ticks = file_len(&ws.path("tick.txt"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        ticks,
        file_len(&ws.path("tick.txt")),
        "the stage still runs"
    );
    // Not recorded: the partial output does not look fresh.
    let st = ws.ok(&["status"]);
    assert!(st.contains("stale  slow"), "{st}");
}

/// Issue 14, follow-up: a local stage ran under two wrappers (`internal supervise`, then
/// `internal measure`); the supervisor now measures too. The stage walks its parent chain
/// and the test finds exactly one `repro` process between the stage's shell and the engine.
#[test]
fn a_local_stage_runs_under_exactly_one_repro_wrapper() {
    let ws = Ws::new("stages:\n  tree:\n    cmd: sh chain.sh\n    outs: [chain.txt]\n");
    // One line per ancestor, from the stage's shell up to init: pid, name, command line.
    ws.write(
        "chain.sh",
        "p=$$\nwhile [ \"$p\" -gt 1 ]; do\n  printf '%s\\t%s\\t%s\\n' \"$p\" \"$(cat /proc/$p/comm)\" \"$(tr '\\0' ' ' < /proc/$p/cmdline)\" >> chain.tmp\n  p=$(awk '/^PPid:/ {print $2}' /proc/$p/status)\ndone\nmv chain.tmp chain.txt\n",
    );
    let engine = run_piped(&ws, &["run"]);
    let engine_pid = engine.id().to_string();
    let out = wait_or_kill(engine, Duration::from_secs(30), "repro run");
    assert!(out.status.success(), "{}", both(&out));
    let chain = ws.read("chain.txt");
    let rows: Vec<Vec<&str>> = chain.lines().map(|l| l.split('\t').collect()).collect();
    let engine_at = rows
        .iter()
        .position(|r| r[0] == engine_pid)
        .unwrap_or_else(|| {
            panic!("the engine ({engine_pid}) is not an ancestor of the stage:\n{chain}")
        });
    assert!(rows[engine_at][2].contains(" run"), "{chain}");
    let wrappers: Vec<&Vec<&str>> = rows[..engine_at]
        .iter()
        .filter(|r| r[1] == "repro")
        .collect();
    assert_eq!(
        wrappers.len(),
        1,
        "repro processes between the stage and the engine:\n{chain}"
    );
    assert!(wrappers[0][2].contains("internal supervise"), "{chain}");
    assert!(!chain.contains("internal measure"), "{chain}");
    // The one wrapper still measures the stage for the run trace.
    let trace = ws.ok(&["trace", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&trace).unwrap();
    assert_eq!(entries[0]["stage"], "tree", "{trace}");
    assert!(
        entries[0]["cpu_s"].is_number() && entries[0]["max_rss_kb"].as_u64().unwrap() > 0,
        "{trace}"
    );
}

/// Defect 18: "N not started" counted stages that were ready twice.
#[test]
fn stages_not_started_are_counted_once() {
    let ws =
        Ws::new("stages:\n  a:\n    cmd: exit 1\n  b:\n    cmd: echo b\n  c:\n    cmd: echo c\n");
    let out = ws.fail(&["run", "-j", "1"]);
    assert!(out.contains("1 failed, 2 not started"), "{out}");
}

/// Defect 18: a stage name too long for a file name failed only when the stage started.
#[test]
fn an_overlong_stage_name_is_a_load_error() {
    let name = "n".repeat(300);
    let ws = Ws::new(&format!(
        "stages:\n  ok:\n    cmd: echo\n  {name}:\n    cmd: echo hi\n"
    ));
    let err = ws.fail(&["status"]);
    assert!(err.contains("pipeline.yaml:4"), "{err}");
    assert!(err.contains("300 characters"), "{err}");
    let err = ws.fail(&["run"]);
    assert!(
        err.contains("300 characters") && !err.contains("ran"),
        "{err}"
    );
}

/// Defect 18: `repro eval --logits <dir>` said "No such device".
#[test]
fn eval_of_a_directory_says_so() {
    let ws = Ws::new("stages: {}\n");
    std::fs::create_dir(ws.path("logits")).unwrap();
    let err = ws.fail(&["eval", "--logits", "logits"]);
    assert!(err.contains("is a directory"), "{err}");
    assert!(!err.contains("No such device"), "{err}");
}

/// Whether this test runs as root (permissions then do not stop writes, a read-only mount
/// does).
fn is_root() -> bool {
    // SAFETY: no arguments, no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// Run `repro ARGS` in `ws` with the workspace made read-only: by permissions for a normal
/// user, by a read-only bind mount in a private mount namespace for root. `None` where
/// neither is possible (root without mount rights).
fn on_read_only(ws: &Ws, args: &[&str]) -> Option<Output> {
    let dir = ws.dir.path().to_path_buf();
    if !is_root() {
        let chmod = |mode: &str| {
            assert!(
                Command::new("chmod")
                    .args(["-R", mode, dir.to_str().unwrap()])
                    .status()
                    .unwrap()
                    .success()
            );
        };
        chmod("a-w");
        let out = ws.output(args);
        chmod("u+w");
        return Some(out);
    }
    let probe = Command::new("unshare").args(["-m", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let script = format!(
        "mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}' && cd '{d}' && exec \"$0\" \"$@\"",
        d = dir.display()
    );
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .arg(common::bin())
        .args(args)
        .stdin(Stdio::null());
    Some(c.output().unwrap())
}

/// Defect 18: `status` failed on a read-only workspace (it opened the state database for
/// writing).
#[test]
fn status_works_on_a_read_only_workspace() {
    let ws = Ws::new("stages:\n  a:\n    cmd: echo hi > a.txt\n    outs: [a.txt]\n");
    ws.ok(&["run"]);
    let Some(out) = on_read_only(&ws, &["status", "--all"]) else {
        eprintln!("skipped: cannot make a read-only workspace here (root without mount rights)");
        return;
    };
    let text = both(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("fresh  a"), "{text}");
    // A checkout that never ran: no cache/ at all.
    let fresh = Ws::new("stages:\n  a:\n    cmd: echo hi > a.txt\n    outs: [a.txt]\n");
    let out = on_read_only(&fresh, &["status"]).unwrap();
    assert!(out.status.success(), "{}", both(&out));
    assert!(both(&out).contains("stale  a"), "{}", both(&out));
}

/// Defect 18: on a full disk, state database writes failed with "Previous I/O error occurred"
/// and no path; `status` failed outright (it saves its stat cache).
#[test]
fn full_disk_errors_name_the_file_and_status_still_works() {
    let ws = Ws::new("");
    let dir = ws.dir.path().to_path_buf();
    let mounted = is_root()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: needs to mount a small tmpfs (root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(dir.clone());
    ws.write(
        "pipeline.yaml",
        "vars:\n  n: 1\nstages:\n  s:\n    cmd: echo ${n} > a.txt\n    outs: [a.txt]\n",
    );
    ws.ok(&["run"]);
    // Fill the disk.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "of=filler", "bs=4k"])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status();
    let _ = ws.output(&["run", "--set", "n=2"]);
    let out = ws.output(&["run", "--set", "n=1"]);
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    for line in text
        .lines()
        .filter(|l| l.contains("error") || l.contains("FAILED"))
    {
        assert!(
            line.contains(dir.to_str().unwrap()) || line.contains("exit code"),
            "names no path: {line}\n{text}"
        );
    }
    assert!(
        !text.contains("Previous I/O error occurred. Please"),
        "{text}"
    );
    let st = ws.output(&["status"]);
    assert!(st.status.success(), "{}", both(&st));
}

/// Issue 26, defect 5: a stage that leaves its output as a symlink out of the workspace had
/// the outside file's bytes copied into the cache, and every later command refused to load
/// the pipeline until the link was deleted by hand.
#[test]
fn an_output_left_as_a_symlink_out_of_the_workspace_fails_the_stage_and_stores_nothing() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, "the secret bytes\n").unwrap();
    let pipeline = format!(
        "stages:\n  leak:\n    cmd: ln -sf '{}' out.txt\n    outs: [out.txt]\n  other:\n    cmd: echo ok > other.txt\n    outs: [other.txt]\n",
        secret.display()
    );
    let ws = Ws::new(&pipeline);
    let text = ws.fail(&["run", "-k"]);
    assert!(
        text.contains("leak")
            && text.contains("out.txt")
            && text.contains(&secret.display().to_string())
            && text.contains("outside the workspace"),
        "{text}"
    );
    // Nothing of the secret in the cache; the secret itself untouched.
    let mut stored = Vec::new();
    let mut stack = vec![ws.path("cache")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && std::fs::read(e.path()).unwrap() == b"the secret bytes\n" {
                stored.push(e.path());
            }
        }
    }
    assert!(stored.is_empty(), "stored: {stored:?}");
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "the secret bytes\n"
    );
    assert!(!ws.read("repro.lock").contains("out.txt"));
    // The workspace stays usable: status loads and says the stage is stale, the other fresh.
    let st = ws.ok(&["status", "--all"]);
    assert!(
        st.contains("stale  leak") && st.contains("fresh  other"),
        "{st}"
    );
    // The next run gets as far as running the stage again (it fails the same way).
    let again = ws.fail(&["run"]);
    assert!(again.contains("outside the workspace"), "{again}");
    assert!(!again.contains("resolves through a symlink"), "{again}");
}

/// Issue 26, defect 10: `exp show`, `metrics show`, `params diff` and a no-op `repro run`
/// failed on a read-only workspace (status and --dry-run worked).
#[test]
fn comparisons_and_a_no_op_run_work_on_a_read_only_workspace() {
    let ws = Ws::new(
        "vars:\n  n: 3\nstages:\n  a:\n    cmd: >-\n      echo '{\"acc\": ${n}}' > m.json\n    params: [n]\n    metrics: [m.json]\n",
    );
    ws.ok(&["run"]);
    let cases: [(&[&str], &str); 4] = [
        (&["exp", "show"], "acc"),
        (&["metrics", "show"], "acc"),
        (&["params", "diff", "lock", "workspace", "--all"], "n"),
        (&["run"], "1 fresh"),
    ];
    for (args, expect) in cases {
        let Some(out) = on_read_only(&ws, args) else {
            eprintln!(
                "skipped: cannot make a read-only workspace here (root without mount rights)"
            );
            return;
        };
        let text = both(&out);
        assert!(
            out.status.success(),
            "repro {args:?} on a read-only workspace:\n{text}"
        );
        assert!(text.contains(expect), "repro {args:?}:\n{text}");
    }
    // A read-only checkout that never ran (no cache/): nothing recorded, no error.
    let never = Ws::new("stages:\n  a:\n    cmd: echo hi > a.txt\n    outs: [a.txt]\n");
    for args in [
        &["exp", "show"][..],
        &["params", "diff", "lock", "workspace"][..],
    ] {
        let out = on_read_only(&never, args).unwrap();
        assert!(out.status.success(), "repro {args:?}:\n{}", both(&out));
    }
}

/// Issue 26, defect 11: a FIFO at one stage's output path made `status` fail for the whole
/// pipeline.
#[test]
fn a_fifo_at_one_output_makes_that_stage_stale_and_status_reports_the_rest() {
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n  b:\n    cmd: echo b > b.txt\n    outs: [b.txt]\n",
    );
    ws.ok(&["run"]);
    std::fs::remove_file(ws.path("a.txt")).unwrap();
    ws.sh("mkfifo a.txt");
    let out = common::output_within(ws.cmd(&["status", "--all"]), Duration::from_secs(20));
    let text = both(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("stale  a") && text.contains("fresh  b") && text.contains("FIFO"),
        "{text}"
    );
    // `--dry-run` gives the same verdicts.
    let out = common::output_within(ws.cmd(&["run", "--dry-run"]), Duration::from_secs(20));
    let text = both(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("would run a") && text.contains("FIFO") && text.contains("1 fresh"),
        "{text}"
    );
}

/// Issue 26, defect 11: SIGTERM made `repro run` exit 130 (128 + SIGINT); and stopping a
/// stage that exits at once on SIGTERM cost the whole 2 s grace (its zombies kept its process
/// group alive until the grace ran out).
#[test]
fn sigint_and_sigterm_stop_a_run_promptly_with_their_own_exit_codes() {
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let ws = Ws::new(
            // `started` appears once `sleep` runs: stopping the stage then leaves a zombie
            // in its group.
            "stages:\n  s:\n    cmd: sleep 30 & echo $! > started; wait; echo done > out.txt\n    outs: [out.txt]\n",
        );
        let child = run_piped(&ws, &["run"]);
        wait_for("the stage to start", Duration::from_secs(20), || {
            ws.path("started").exists()
        });
        let sent = Instant::now();
        // SAFETY: our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let out = wait_or_kill(child, Duration::from_secs(20), "repro run after a signal");
        let took = sent.elapsed();
        kill_all_in(ws.dir.path());
        assert_eq!(
            out.status.code(),
            Some(code),
            "signal {sig}: {}",
            both(&out)
        );
        // The stage's shell and its `sleep` end on SIGTERM at once: well under the grace.
        assert!(
            took < Duration::from_millis(1500),
            "signal {sig}: took {took:?}"
        );
    }
}

/// Issue 26, defect 11: `gc` waited silently for a running `repro run`.
#[test]
fn gc_says_what_it_waits_for() {
    let ws = Ws::new(
        "stages:\n  s:\n    cmd: touch started; sleep 3; echo > out.txt\n    outs: [out.txt]\n",
    );
    let run = run_piped(&ws, &["run"]);
    let run_pid = run.id();
    wait_for("the stage to start", Duration::from_secs(20), || {
        ws.path("started").exists()
    });
    let gc = wait_or_kill(
        ws.cmd(&["gc"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
        "repro gc",
    );
    let run = wait_or_kill(run, Duration::from_secs(30), "repro run");
    assert!(run.status.success(), "{}", both(&run));
    let text = String::from_utf8_lossy(&gc.stderr);
    assert!(gc.status.success(), "{}", both(&gc));
    assert!(
        text.contains("waiting for the workspace lock")
            && text.contains(&format!("`repro run` (pid {run_pid})")),
        "{text}"
    );
}
