//! The pipelines in examples/ run as they are: a first run, then a no-op rerun; the Python one
//! also shows its metrics (JSON and YAML files) and plots (series and an image), then a second
//! configuration as a second experiment (`exp show`, `exp diff`, `plots diff`, the table of the
//! plots page in Chromium). And examples/README.md names only files that exist.

#[path = "common/browser.rs"]
mod browser;
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
fn the_python_example_shows_its_metrics_plots_and_experiments() {
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

    // A second configuration, as the README says: another seed, a named experiment.
    repro(
        &ws,
        &["run", "-q", "--set", "data.seed=8", "--name", "seed8"],
    );
    let exps: Value = serde_json::from_str(&repro(&ws, &["exp", "show", "--json"])).unwrap();
    let exps = exps.as_array().unwrap();
    assert_eq!(exps.len(), 2, "one experiment per configuration: {exps:?}");
    let (new, old) = (&exps[0], &exps[1]);
    assert_eq!(new["name"], "seed8");
    assert_eq!(
        (new["current"].as_bool(), old["current"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        (&new["params"]["data.seed"], &old["params"]["data.seed"]),
        (&8.into(), &7.into())
    );
    assert_eq!(
        old["metrics"]["evaluate@1.0,30"]["accuracy"].as_f64(),
        Some(acc)
    );
    for e in exps {
        assert_eq!(
            e["params"]["train@*"].as_array().map(Vec::len),
            Some(4),
            "{e}"
        );
        assert_eq!(e["metrics"]["summarize"]["configurations"], 4.0, "{e}");
    }
    let old_id = old["id"].as_str().unwrap();
    let diff = repro(&ws, &["exp", "diff", old_id, "seed8"]);
    let seed_line = diff
        .lines()
        .find(|l| l.starts_with("data.seed"))
        .unwrap_or_else(|| panic!("{diff}"));
    assert_eq!(
        seed_line.split_whitespace().collect::<Vec<_>>(),
        ["data.seed", "7", "8"]
    );
    assert!(diff.contains("best.accuracy"), "{diff}");

    // Both experiments' loss curves on the same axes.
    let p: Value =
        serde_json::from_str(&repro(&ws, &["plots", "diff", old_id, "seed8", "--json"])).unwrap();
    let train = p["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["stage"] == "train")
        .unwrap();
    let labels: Vec<&str> = train["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels.len(),
        8,
        "four configurations of each experiment: {labels:?}"
    );
    for (label, of) in [
        (format!("{old_id} train@1.0,30"), old),
        ("seed8 train@1.0,30".to_string(), new),
    ] {
        assert!(
            labels.contains(&label.as_str()),
            "{label} not in {labels:?}"
        );
        assert!(of["stages"]["train@1.0,30"].is_string());
    }
    let curve = |label: &str| {
        let l = train["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["label"] == label)
            .unwrap();
        l["points"][29][1].as_f64().unwrap()
    };
    assert_ne!(
        curve(&format!("{old_id} train@1.0,30")),
        curve("seed8 train@1.0,30"),
        "other data, other curve"
    );

    // The page lists both experiments, the current one marked, as a browser reads it.
    let page = PathBuf::from(p["page"].as_str().unwrap());
    let dom = browser::dom(&page);
    let table = &dom[dom
        .find("<table class=\"experiments\">")
        .unwrap_or_else(|| panic!("{dom}"))..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(table.matches("<tr data-id=").count(), 2, "{table}");
    assert!(
        table.contains(&format!(
            "<tr data-id=\"{}\" class=\"current\">",
            new["id"].as_str().unwrap()
        )),
        "{table}"
    );
    assert!(
        table.contains(&format!("<tr data-id=\"{old_id}\">")),
        "{table}"
    );
    assert!(
        table.contains(">data.seed</th>") && table.contains("<td>seed8</td>"),
        "{table}"
    );
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
