//! The up-to-date record (issue 17, item 7): after a run that found every stage fresh and
//! changed nothing, the next run and `status` of the whole pipeline answer from the stats of
//! what that verdict read — and every change to any of it (a dep, a file deep inside a
//! directory dep, an output, the pipeline, a vars file, the lock, a directory above an output
//! turned into a symlink) is seen and handled by the full path, exactly as without the record.
//! Which path a run took is read from its `REPRO_TIMINGS=1` phase lines.

mod common;

use std::time::Duration;

use common::{Ws, both};

const PIPELINE: &str = "vars: [params.yaml]
stages:
  a:
    cmd: cat in.txt data/sub/deep.txt > out/a.txt && echo ${msg} >> out/a.txt
    deps: [in.txt, data]
    outs: [out/a.txt]
    params: [msg]
  b:
    cmd: cat out/a.txt > b.txt
    deps: [out/a.txt]
    outs: [b.txt]
";

const FAST: &str = "timing: up-to-date record holds";

/// `repro run ARGS` with phase timings; (answered from the record?, stdout + stderr).
fn run(ws: &Ws, args: &[&str]) -> (bool, String) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let o = ws.cmd(&all).env("REPRO_TIMINGS", "1").output().unwrap();
    let text = both(&o);
    assert!(o.status.success(), "repro {all:?} failed:\n{text}");
    (text.contains(FAST), text)
}

fn workspace() -> Ws {
    let ws = Ws::new(PIPELINE);
    ws.write("params.yaml", "msg: hello\n");
    ws.write("in.txt", "x\n");
    ws.write("data/top.txt", "top\n");
    ws.write("data/sub/deep.txt", "deep\n");
    std::fs::create_dir_all(ws.path("out")).unwrap();
    assert!(run(&ws, &[]).1.contains("2 ran"));
    ws
}

/// Let every file age past the racy-clean granule (1 s for sub-second timestamps: a change
/// within it could leave a stat as it was), then a no-op run keeps the record and the next
/// run answers from it.
fn settle(ws: &Ws) {
    std::thread::sleep(Duration::from_millis(1100));
    let (fast, text) = run(ws, &[]);
    assert!(text.contains("0 ran, 2 fresh"), "{text}");
    if !fast {
        let (fast, text) = run(ws, &[]);
        assert!(fast, "the record is kept and used:\n{text}");
        assert!(
            text.contains("0 ran, 2 fresh, 0 failed — everything is up to date"),
            "{text}"
        );
    }
}

/// The next run takes the full path and does what it does without a record.
fn full(ws: &Ws, expect: &str) {
    let (fast, text) = run(ws, &[]);
    assert!(!fast, "a change is seen:\n{text}");
    assert!(text.contains(expect), "expected '{expect}':\n{text}");
}

#[test]
fn a_no_op_answers_from_the_record_and_status_agrees() {
    let ws = workspace();
    settle(&ws);
    let st = ws.ok(&["status", "--all"]);
    assert!(
        st.contains("fresh  a") && st.contains("fresh  b") && st.contains("2 stages: 2 fresh"),
        "{st}"
    );
    assert_eq!(
        ws.status_names(&[]),
        ["a", "b"],
        "in the order of the full path"
    );
    // Targets, --force and --dry-run take the full path.
    assert!(!run(&ws, &["b"]).0);
    assert!(!run(&ws, &["--dry-run"]).0);
    assert!(run(&ws, &["--force"]).1.contains("2 ran"));
}

#[test]
fn every_change_to_what_the_verdict_read_is_seen() {
    let ws = workspace();

    // A dep rewritten with the same size, its mtime put back (as tar or cp -p would): the
    // ctime still differs.
    settle(&ws);
    ws.sh("cp -p in.txt ref && printf 'y\\n' > in.txt && touch -r ref in.txt && rm ref");
    full(&ws, "2 ran");
    assert!(ws.read("b.txt").starts_with("y\n"));

    // A file deep inside a directory dep, then a new file in its subdirectory.
    settle(&ws);
    ws.write("data/sub/deep.txt", "DEEP\n");
    full(&ws, "2 ran");
    assert!(ws.read("b.txt").contains("DEEP"));
    settle(&ws);
    ws.write("data/sub/new.txt", "new\n");
    full(&ws, "1 ran, 1 fresh");

    // An output, edited by hand: put back from the cache.
    settle(&ws);
    ws.write("b.txt", "edited\n");
    full(&ws, "0 ran, 1 fresh, 1 restored");
    assert!(ws.read("b.txt").contains("DEEP"));

    // A vars file with the same size, then the pipeline itself.
    settle(&ws);
    ws.write("params.yaml", "msg: world\n");
    full(&ws, "2 ran");
    assert!(ws.read("b.txt").contains("world"));
    settle(&ws);
    ws.write(
        "pipeline.yaml",
        &PIPELINE.replace("> b.txt", "| rev > b.txt"),
    );
    full(&ws, "1 ran, 1 fresh");

    // The lock: a colleague's copy with a comment added decides the same, on the full path.
    settle(&ws);
    let lock = ws.read("repro.lock");
    ws.write("repro.lock", &format!("{lock}# reviewed\n"));
    full(&ws, "0 ran, 2 fresh");
    // ...and without it every stage is new to the engine (restored from its cache).
    settle(&ws);
    std::fs::remove_file(ws.path("repro.lock")).unwrap();
    full(&ws, "2 restored");
}

#[test]
fn a_directory_above_an_output_turned_into_a_symlink_is_the_full_path_error() {
    let ws = workspace();
    settle(&ws);
    // `out/` moves outside the workspace and a symlink takes its place: every file under it
    // stats as before through the link, but the engine must now refuse to write there.
    let outside = tempfile::tempdir().unwrap();
    let moved = outside.path().join("out");
    std::fs::rename(ws.path("out"), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, ws.path("out")).unwrap();
    let o = ws.cmd(&["run"]).env("REPRO_TIMINGS", "1").output().unwrap();
    let text = both(&o);
    assert!(!o.status.success(), "{text}");
    assert!(!text.contains(FAST), "{text}");
    assert!(
        text.contains("resolves through a symlink") && text.contains("outside the workspace"),
        "{text}"
    );
}

#[test]
fn a_damaged_record_is_a_miss_and_is_kept_again() {
    let ws = workspace();
    settle(&ws);
    let record = ws.path("cache/up-to-date");
    let bytes = std::fs::read(&record).unwrap();
    for damaged in [
        bytes[..bytes.len() / 2].to_vec(),
        Vec::new(),
        bytes.iter().map(|b| b ^ 1).collect(),
    ] {
        std::fs::write(&record, &damaged).unwrap();
        let (fast, text) = run(&ws, &[]);
        assert!(!fast && text.contains("0 ran, 2 fresh"), "{text}");
        let (fast, text) = run(&ws, &[]);
        assert!(fast, "kept again by the full path:\n{text}");
    }
}

#[test]
fn no_record_while_a_timestamp_is_too_recent_to_trust() {
    // A dep stamped in the future (a clock skew, an archive from elsewhere) never settles:
    // every run takes the full path, which still finds the stages fresh.
    let ws = workspace();
    ws.sh("touch -d '+1 hour' in.txt");
    run(&ws, &[]);
    std::thread::sleep(Duration::from_millis(120));
    for _ in 0..2 {
        let (fast, text) = run(&ws, &[]);
        assert!(!fast && text.contains("0 ran, 2 fresh"), "{text}");
    }
    assert!(!ws.path("cache/up-to-date").exists());
}

#[test]
fn a_busy_workspace_is_the_same_error_with_a_record() {
    let ws = workspace();
    settle(&ws);
    // Another run holds the run lock.
    let mut holder = std::process::Command::new("flock")
        .arg(ws.path("cache/run.pid"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = ws.fail(&["run"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(out.contains("is using this workspace"), "{out}");
}
