//! Getting started: `repro init` writes a pipeline that runs, never replaces one, and ignores
//! the cache once; every pipeline under examples/ runs, and reruns as a no-op.

mod common;

use std::path::Path;

use common::Ws;

/// Copy a directory tree (the examples are a few small files).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A workspace holding a copy of examples/NAME.
fn example(name: &str) -> Ws {
    let ws = Ws::new("");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
        ws.dir.path(),
    );
    ws
}

#[test]
fn init_writes_a_runnable_pipeline_and_never_overwrites() {
    let ws = Ws::new("");
    std::fs::remove_file(ws.path("pipeline.yaml")).unwrap();
    ws.write(".gitignore", "*.pyc");
    let out = ws.ok(&["init"]);
    assert!(out.contains("wrote"), "{out}");
    let ignore = ws.read(".gitignore");
    assert_eq!(
        ignore.lines().filter(|l| *l == "/cache/").count(),
        1,
        "{ignore}"
    );
    assert!(ignore.starts_with("*.pyc\n"), "{ignore}");

    let out = ws.ok(&["run"]);
    assert!(out.contains("4 ran"), "{out}");
    assert_eq!(
        ws.read("results/offset-1.json").trim(),
        r#"{"total": 20, "mean": 4}"#
    );
    assert!(ws.ok(&["run"]).contains("everything is up to date"));
    // A param change reruns what depends on it, and nothing else.
    let out = ws.ok(&["run", "--set", "n=3"]);
    assert!(
        out.contains("ran prepare") && out.contains("4 ran"),
        "{out}"
    );

    // A second init refuses, and leaves both files as they were.
    let before = ws.read("pipeline.yaml");
    std::fs::write(ws.path("pipeline.yaml"), "# mine\n").unwrap();
    let err = ws.fail(&["init"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(ws.read("pipeline.yaml"), "# mine\n");
    assert_ne!(before, "# mine\n");
    assert_eq!(ws.read(".gitignore"), ignore);
}

#[test]
fn init_creates_a_new_directory() {
    let ws = Ws::new("");
    ws.ok(&["init", "sub/project"]);
    assert!(ws.path("sub/project/pipeline.yaml").exists());
    assert!(ws.read("sub/project/.gitignore").contains("/cache/"));
}

#[test]
fn shell_example_runs_and_reruns_only_what_a_param_touches() {
    let ws = example("shell");
    let out = ws.ok(&["run"]);
    assert!(out.contains("3 ran"), "{out}");
    let top = ws.read("top.txt");
    assert_eq!(top.lines().count(), 5, "{top}");
    assert!(top.lines().next().unwrap().trim().starts_with('3'), "{top}");
    assert!(ws.ok(&["run"]).contains("everything is up to date"));
    let out = ws.ok(&["run", "--set", "top=2"]);
    assert!(out.contains("1 ran, 2 fresh"), "{out}");
    assert_eq!(ws.read("top.txt").lines().count(), 2);
}

#[test]
fn python_example_trains_evaluates_and_reruns_as_a_noop() {
    let ws = example("python");
    let out = ws.ok(&["run"]);
    // make_data, featurize, 4 train (lr × epochs), 4 evaluate, summarize, plot.
    assert!(out.contains("12 ran"), "{out}");
    for run in [
        "0.1-epochs-10",
        "0.1-epochs-30",
        "1.0-epochs-10",
        "1.0-epochs-30",
    ] {
        let m: serde_json::Value =
            serde_json::from_str(&ws.read(&format!("models/lr-{run}/metrics.json"))).unwrap();
        let acc = m["accuracy"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&acc), "lr {run}: {m}");
    }
    // The progress lines went to the display, not into the log.
    let log = ws.read("cache/logs/train@1.0,30.log");
    assert!(
        log.contains("trained lr=1.0") && !log.contains("##repro-progress"),
        "{log}"
    );
    assert!(ws.ok(&["run"]).contains("everything is up to date"));
}
