//! The reproduction pipeline end to end: the repository's own pipeline.yaml under the `tiny`
//! profile (a few hundred Fashion-MNIST images, one epoch) through every stage kind to the
//! report; then a no-op rerun; then a one-parameter change that reruns exactly the stages that
//! depend on it; then the change undone, restored from the cache.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::Ws;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn ran_stages(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("ran "))
        .map(|l| l.split(" in ").next().unwrap().to_string())
        .collect()
}

#[test]
fn tiny_profile_end_to_end_then_noop_then_one_parameter_change() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = Ws::new("");
    std::fs::copy(repo.join("pipeline.yaml"), ws.path("pipeline.yaml")).unwrap();
    copy_dir(&repo.join("stages"), &ws.path("stages"));
    copy_dir(&repo.join("templates"), &ws.path("templates"));

    let out = ws.ok(&["run", "--profile", "tiny"]);
    assert!(out.contains(" 0 failed"), "{out}");
    let first = ran_stages(&out);
    for kind in [
        "download@",
        "preprocess@",
        "pretrain@",
        "finetune@",
        "gamma_sweep@",
        "bias_init@",
        "evaluate_finetune@",
        "report",
    ] {
        assert!(
            first.iter().any(|s| s.starts_with(kind)),
            "no {kind} stage ran: {first:?}"
        );
    }
    // Every evaluated run has the paper's three accuracies, ordered as Eq. (26) says.
    let m: serde_json::Value =
        serde_json::from_str(&ws.read("runs/fashion-mnist/mlp/bce-nu/seed0/metrics.json")).unwrap();
    let (sw, cw, uni) = (
        m["a_sw"].as_f64().unwrap(),
        m["a_cw"].as_f64().unwrap(),
        m["a_uni"].as_f64().unwrap(),
    );
    assert!(uni <= cw && cw <= sw && sw > 10.0, "{sw} {cw} {uni}");
    assert_eq!(m["run"]["loss"], "bce-nu");
    let html = ws.read("report/report.html");
    assert!(
        html.contains("bce-nu") && html.contains(&format!("{sw:.2}")),
        "the report shows the run's A_SW {sw:.2}"
    );
    assert!(ws.path("report/report.tex").exists());
    // The Markdown summary (the README's generated block) and the runs it is drawn from.
    let summary = ws.read("report/summary.md");
    assert!(summary.contains("| `bce-higher-uni` |"), "{summary}");
    assert!(ws.path("report/summary-runs.json").exists());

    let out = ws.ok(&["run", "--profile", "tiny"]);
    assert!(
        out.contains(&format!("0 ran, {} fresh, 0 failed", first.len())),
        "{out}"
    );

    // Changing the fine-tuning rate reruns the fine-tunes, the γ sweep and the bias study,
    // their evaluations and the report — and nothing upstream of them.
    let st: serde_json::Value = serde_json::from_str(&ws.ok(&[
        "status",
        "--json",
        "--profile",
        "tiny",
        "--set",
        "finetune.lr=0.02",
    ]))
    .unwrap();
    let stale: BTreeSet<String> = st
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] != "fresh")
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect();
    let out = ws.ok(&["run", "--profile", "tiny", "--set", "finetune.lr=0.02"]);
    let second = ran_stages(&out);
    assert_eq!(second, stale, "status predicted exactly what ran");
    let expected: BTreeSet<String> = first
        .iter()
        .filter(|s| {
            !(s.starts_with("download")
                || s.starts_with("preprocess")
                || s.starts_with("pretrain")
                || s.starts_with("evaluate_pretrain"))
        })
        .cloned()
        .collect();
    assert_eq!(second, expected, "{out}");

    // Undo: everything comes back from the cache, nothing trains.
    let out = ws.ok(&["run", "--profile", "tiny"]);
    assert!(ran_stages(&out).is_empty(), "{out}");
    assert!(
        out.contains(&format!("{} restored", expected.len())),
        "{out}"
    );
}
