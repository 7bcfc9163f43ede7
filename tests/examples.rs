//! The pipelines in examples/ run as they are: a first run, then a no-op rerun; the Python one
//! also shows its metrics (JSON and YAML files) and plots (series and an image). And
//! examples/README.md names only files that exist.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of `examples/NAME` in a temporary directory (the example stays clean).
fn copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new("cp")
        .arg("-r")
        .arg(root().join("examples").join(name))
        .arg(dir.path().join("ws"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    dir
}

fn repro(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(common::bin())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "repro {args:?}: {}", common::both(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn run_twice(ws: &Path) {
    repro(ws, &["run", "-q"]);
    let again = repro(ws, &["run"]);
    assert!(again.contains("0 ran"), "{again}");
}

#[test]
fn the_shell_example_runs_and_reruns_nothing() {
    let d = copy("shell");
    let ws = d.path().join("ws");
    run_twice(&ws);
    assert!(
        !std::fs::read_to_string(ws.join("top.txt"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_python_example_shows_its_metrics_and_plots() {
    if Command::new("python3").arg("--version").output().is_err() {
        panic!("python3 is needed by examples/python");
    }
    let d = copy("python");
    let ws = d.path().join("ws");
    run_twice(&ws);

    let m: Value = serde_json::from_str(&repro(&ws, &["metrics", "show", "--json"])).unwrap();
    let acc = m["evaluate@1.0,30"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.8 && acc <= 1.0, "{m}");
    // The YAML metrics file, nested keys by dotted name.
    assert_eq!(m["summarize"]["configurations"], 4.0);
    assert!(m["summarize"]["best.accuracy"].as_f64().unwrap() >= acc);

    let p: Value = serde_json::from_str(&repro(&ws, &["plots", "show", "--json"])).unwrap();
    let charts = p["charts"].as_array().unwrap();
    let chart = |stage: &str| charts.iter().find(|c| c["stage"] == stage).unwrap();
    let loss = chart("train")["lines"].as_array().unwrap();
    assert_eq!(loss.len(), 4, "one loss curve per configuration");
    let curve = loss.iter().find(|l| l["stage"] == "train@1.0,30").unwrap();
    let pts = curve["points"].as_array().unwrap();
    assert_eq!(pts.len(), 30);
    assert!(pts[29][1].as_f64() < pts[0][1].as_f64(), "the loss falls");
    assert_eq!(chart("summarize")["lines"].as_array().unwrap().len(), 2);
    assert_eq!(chart("plot")["images"][0]["file"], "results/accuracy.svg");
    assert!(PathBuf::from(p["page"].as_str().unwrap()).is_file());
}

#[test]
fn the_examples_readme_names_files_that_exist() {
    let dir = root().join("examples");
    let text = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let mut checked = 0;
    // Markdown link targets: `](path)`.
    for part in text.split("](").skip(1) {
        let target = &part[..part.find(')').unwrap()];
        if target.starts_with("http") {
            continue;
        }
        let target = target.split('#').next().unwrap();
        assert!(
            dir.join(target).exists(),
            "examples/README.md names {target}"
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} links");
}
