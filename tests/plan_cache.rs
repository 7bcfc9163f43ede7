//! The checked plan kept in the state database (issue 17, item 7): an unchanged no-op run
//! reuses it, and every change to what it was made from (the pipeline, a vars file, a profile
//! file, `--set`, `--profile`, the stage limit) is seen and takes effect. Which path a run
//! took is read from its `REPRO_TIMINGS=1` phase lines.

mod common;

use common::{Ws, both, build_id_offset};

const PIPELINE: &str = "vars: [params.yaml]
profiles:
  big: [big.yaml]
stages:
  a:
    cmd: echo ${msg} > a.txt
    outs: [a.txt]
";

/// Run with phase timings; returns (parsed the files?, stdout + stderr). A run that did not
/// parse either reused the stored plan or answered from the up-to-date record
/// (tests/up_to_date.rs), which is kept only after the plan was reused.
fn run(ws: &Ws, args: &[&str]) -> (bool, String) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let o = ws.cmd(&all).env("REPRO_TIMINGS", "1").output().unwrap();
    let text = both(&o);
    assert!(o.status.success(), "repro {all:?} failed:\n{text}");
    let paths = [
        "timing: parse + check pipeline",
        "timing: reuse checked plan",
        "timing: up-to-date record holds",
    ]
    .map(|p| text.contains(p));
    assert_eq!(
        paths.iter().filter(|&&p| p).count(),
        1,
        "exactly one of the three paths:\n{text}"
    );
    (paths[0], text)
}

fn workspace() -> Ws {
    let ws = Ws::new(PIPELINE);
    ws.write("params.yaml", "msg: hello\n");
    ws.write("big.yaml", "msg: big\n");
    ws
}

#[test]
fn an_unchanged_pipeline_reuses_its_checked_plan() {
    let ws = workspace();
    assert!(run(&ws, &[]).0, "the first run parses");
    assert_eq!(ws.read("a.txt"), "hello\n");
    let (parsed, text) = run(&ws, &[]);
    assert!(!parsed, "unchanged: the stored plan is used\n{text}");
    assert!(text.contains("0 ran, 1 fresh"), "{text}");
    // `status` reuses it as well, and agrees.
    let st = ws.ok(&["status"]);
    assert!(st.contains("1 fresh"), "{st}");
}

#[test]
fn every_change_to_what_the_plan_was_made_from_is_seen() {
    let ws = workspace();
    run(&ws, &[]);
    assert!(!run(&ws, &[]).0);

    // A vars file.
    ws.write("params.yaml", "msg: world\n");
    assert!(run(&ws, &[]).0, "a changed vars file is parsed again");
    assert_eq!(ws.read("a.txt"), "world\n");
    assert!(!run(&ws, &[]).0);

    // A profile, then its file.
    assert!(run(&ws, &["--profile", "big"]).0);
    assert_eq!(ws.read("a.txt"), "big\n");
    assert!(!run(&ws, &["--profile", "big"]).0);
    ws.write("big.yaml", "msg: bigger\n");
    assert!(
        run(&ws, &["--profile", "big"]).0,
        "a changed profile file is parsed again"
    );
    assert_eq!(ws.read("a.txt"), "bigger\n");

    // --set, and another --set.
    assert!(run(&ws, &["--set", "msg=set1"]).0);
    assert_eq!(ws.read("a.txt"), "set1\n");
    assert!(!run(&ws, &["--set", "msg=set1"]).0);
    assert!(run(&ws, &["--set", "msg=set2"]).0);
    assert_eq!(ws.read("a.txt"), "set2\n");

    // The pipeline itself, by one byte of its command.
    ws.write(
        "pipeline.yaml",
        &PIPELINE.replace("echo ${msg}", "echo x${msg}"),
    );
    assert!(run(&ws, &[]).0, "a changed pipeline is parsed again");
    assert_eq!(ws.read("a.txt"), "xworld\n");

    // The stage limit is part of what was checked.
    let out = ws.fail(&["run", "--max-stages", "0"]);
    assert!(out.contains("over the limit of 0"), "{out}");
    let o = ws
        .cmd(&["run"])
        .env("REPRO_MAX_STAGES", "0")
        .output()
        .unwrap();
    assert!(
        !o.status.success() && both(&o).contains("over the limit of 0"),
        "{}",
        both(&o)
    );

    // Back to a plan seen before: reused, and its result is the one it stands for.
    assert!(!run(&ws, &[]).0);
    assert_eq!(ws.read("a.txt"), "xworld\n");
}

#[test]
fn a_cached_plan_that_no_longer_checks_is_an_error_like_a_parse() {
    // The checks that depend on the file system are made on every load: a source dep that
    // went away is reported by a run that reuses the plan, as by one that parses.
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: cat in.txt > a.txt\n    deps: [in.txt]\n    outs: [a.txt]\n",
    );
    ws.write("in.txt", "x\n");
    run(&ws, &[]);
    assert!(!run(&ws, &[]).0);
    std::fs::remove_file(ws.path("in.txt")).unwrap();
    let out = ws.fail(&["run"]);
    assert!(
        out.contains("dependency 'in.txt' does not exist and no stage produces it"),
        "{out}"
    );
    assert!(
        out.contains("pipeline.yaml:4:") && out.contains("deps: [in.txt]"),
        "the error quotes the file: {out}"
    );
}

#[test]
fn a_damaged_cached_plan_is_never_used() {
    let ws = workspace();
    run(&ws, &[]);
    let db_path = ws.path("cache/state.redb");
    let keys = {
        let db = repro_engine::StateDb::open(&db_path, std::time::Duration::ZERO)
            .unwrap()
            .unwrap();
        let keys = db.plan_keys().unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        let good = db.plan(&keys[0]).unwrap().unwrap();
        // Cut short: does not decode.
        db.put_plan(&keys[0], &good[..good.len() / 2]).unwrap();
        keys
    };
    assert!(run(&ws, &[]).0, "a truncated plan is parsed again");
    assert!(!run(&ws, &[]).0, "and stored whole again");
    {
        let db = repro_engine::StateDb::open(&db_path, std::time::Duration::ZERO)
            .unwrap()
            .unwrap();
        db.put_plan(&keys[0], b"\xff\x00garbage").unwrap();
    }
    // Past the up-to-date record, which would answer without the plan.
    let _ = std::fs::remove_file(ws.path("cache/up-to-date"));
    let (parsed, text) = run(&ws, &[]);
    assert!(parsed, "{text}");
    assert!(text.contains("0 ran, 1 fresh"), "{text}");
}

#[test]
fn another_binary_written_in_place_with_the_same_stat_does_not_trust_the_plan() {
    // A copy of repro, run from its own path; then another binary (here: another build id)
    // written over it in place — same path, inode and size — with its mtime put back, as a
    // deploy script or `cp --preserve=timestamps` onto the same file leaves it.
    use std::os::unix::fs::MetadataExt;
    let ws = workspace();
    let bins = tempfile::tempdir().unwrap();
    let exe = bins.path().join("repro");
    std::fs::copy(common::bin(), &exe).unwrap();
    let with = |exe: &std::path::Path| {
        let o = common::output_of_written_binary(
            std::process::Command::new(exe)
                .arg("run")
                .current_dir(ws.path(""))
                .env("REPRO_TIMINGS", "1")
                .stdin(std::process::Stdio::null()),
        );
        let text = both(&o);
        assert!(o.status.success(), "{text}");
        (text.contains("timing: parse + check pipeline"), text)
    };
    assert!(with(&exe).0);
    // (The up-to-date record, were it kept, is keyed on the same plan key.)
    assert!(!with(&exe).0, "the same binary reuses its plan");

    let before = std::fs::metadata(&exe).unwrap();
    let mut bytes = std::fs::read(&exe).unwrap();
    let at = build_id_offset(&bytes).expect("repro is linked with a build id");
    bytes[at] ^= 0xff;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&exe).unwrap();
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(&bytes[at..at + 1]).unwrap();
    }
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::new(before.mtime() as u64, before.mtime_nsec() as u32);
    std::fs::File::options()
        .write(true)
        .open(&exe)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let after = std::fs::metadata(&exe).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
        (
            before.ino(),
            before.len(),
            before.mtime(),
            before.mtime_nsec()
        ),
        "the old key's parts are all unchanged"
    );
    let (parsed, text) = with(&exe);
    assert!(
        parsed,
        "a plan checked by another binary must not be trusted:\n{text}"
    );
    assert!(text.contains("0 ran, 1 fresh"), "{text}");
    assert!(!with(&exe).0, "the new binary reuses its own plan");
}
