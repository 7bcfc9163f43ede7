//! Comparing configurations on real runs: `exp show` over a foreach (as `exp show
//! 'gamma_sweep@*'` on the quick profile), `exp apply`, `params diff` and `metrics show|diff`
//! against the workspace, the lock, a run-cache entry and a git revision.

mod common;

use common::Ws;
use serde_json::Value;

/// `train@γ` writes a "model" (γ × scale); `evaluate@γ` turns it into a metrics file, so a
/// train configuration's metrics come from the evaluate run that read its output.
const SWEEP: &str = r#"vars:
  scale: 2
  gammas: [1, 4, 16]
stages:
  train:
    foreach: ${gammas}
    cmd: awk -v g=${item} -v s=${scale} 'BEGIN { print g * s }' > models/g${item}.txt
    params: [scale]
    outs: ["models/g${item}.txt"]
  evaluate:
    foreach: ${gammas}
    cmd: >-
      awk '{ printf "{\"a_uni\": %g, \"n\": 10, \"hist\": [1, 2]}\n", 100 - 100 / $1 }'
      models/g${item}.txt > models/g${item}.json
    deps: ["models/g${item}.txt"]
    metrics: ["models/g${item}.json"]
"#;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn rows(ws: &Ws, args: &[&str]) -> Vec<Value> {
    json(&ws.ok(args)).as_array().unwrap().clone()
}

/// The exp-show row of `stage` whose `scale` param is `scale`.
fn row<'a>(rows: &'a [Value], stage: &str, scale: i64) -> &'a Value {
    rows.iter()
        .find(|r| r["stage"] == stage && r["params"]["scale"] == scale)
        .unwrap_or_else(|| panic!("no {stage} with scale {scale} in {rows:?}"))
}

#[test]
fn exp_show_lists_every_configuration_with_its_metrics_and_apply_brings_one_back() {
    let ws = Ws::new(SWEEP);
    ws.ok(&["run"]);
    let r = rows(&ws, &["exp", "show", "train@*", "--json"]);
    assert_eq!(r.len(), 3);
    // Metrics of the evaluate run that read each train output.
    let a = |r: &Value| r["metrics"]["a_uni"].as_f64().unwrap();
    assert_eq!(a(row(&r, "train@1", 2)), 50.0);
    assert_eq!(a(row(&r, "train@4", 2)), 87.5);
    assert!(
        r.iter()
            .all(|x| x["restorable"] == true && x["current"] == true)
    );
    assert!(
        r[0]["metrics"].get("hist").is_none(),
        "lists are not metrics"
    );

    ws.ok(&["run", "--set", "scale=3"]);
    let r = rows(&ws, &["exp", "show", "train", "--json"]);
    assert_eq!(r.len(), 6);
    assert!((a(row(&r, "train@16", 3)) - 97.916667).abs() < 1e-3);
    assert_eq!(row(&r, "train@16", 2)["current"], false);
    assert_eq!(row(&r, "train@16", 3)["current"], true);

    // The table: the param that differs, the metric, sorted best first.
    let table = ws.ok(&["exp", "show", "train@*", "--sort", "a_uni"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("scale") && lines[0].contains("a_uni") && lines[0].contains("restorable"),
        "{table}"
    );
    assert!(
        lines[1].contains("train@16") && lines[1].contains("97.9167"),
        "{table}"
    );
    assert!(
        lines[6].contains("train@1 ") && lines[6].contains(" 50 "),
        "{table}"
    );
    let md = ws.ok(&[
        "exp",
        "show",
        "evaluate@*",
        "--md",
        "--sort",
        "a_uni",
        "--ascending",
        "--metrics",
        "a_uni",
    ]);
    assert!(!md.contains("| n |"), "{md}");
    assert!(md.starts_with("| id | stage |"), "{md}");
    assert!(md.lines().nth(2).unwrap().contains("| 50 |"), "{md}");
    let err = ws.fail(&["exp", "show", "--stages", "--sort", "nope"]);
    assert!(
        err.contains("no configuration has a metric 'nope'") && err.contains("a_uni"),
        "{err}"
    );

    // Back to the file's scale (2): everything restored from the cache.
    let out = ws.ok(&["run"]);
    assert!(out.contains("6 restored"), "{out}");
    // Apply the scale-3 configuration of train@16: its output comes back, nothing runs.
    let id = row(&r, "train@16", 3)["id"].as_str().unwrap().to_string();
    let out = ws.ok(&["exp", "apply", &id]);
    assert!(out.contains("restored models/g16.txt"), "{out}");
    assert!(out.contains("repro run --set scale=3"), "{out}");
    assert_eq!(ws.read("models/g16.txt").trim(), "48");
    // The lock records it: with that param the stage is fresh, without it stale.
    ws.ok(&["status", "--check", "--set", "scale=3", "train@16"]);
    let o = ws.output(&["status", "--check", "train@16"]);
    assert_eq!(o.status.code(), Some(1));
    let err = ws.fail(&["exp", "apply", "ffffffffff"]);
    assert!(err.contains("not"), "{err}");
}

#[test]
fn params_and_metrics_diff_between_lock_workspace_runs_and_git() {
    let ws = Ws::new(SWEEP);
    ws.sh("git init -q && git config user.email t@t && git config user.name t");
    ws.ok(&["run"]);
    ws.sh("git add pipeline.yaml repro.lock && git commit -qm base");
    ws.ok(&["run", "--set", "scale=3"]);

    // Default: HEAD (committed lock) against the workspace (the pipeline as it is: scale 2).
    let out = ws.ok(&["params", "diff"]);
    assert!(
        out.contains("no params differ between HEAD and workspace"),
        "{out}"
    );
    let d = json(&ws.ok(&["params", "diff", "HEAD", "lock", "--json"]));
    let r = d["rows"].as_array().unwrap();
    assert_eq!(r.len(), 3, "{d}");
    assert!(
        r.iter()
            .all(|x| x["name"] == "scale" && x["a"] == 2 && x["b"] == 3),
        "{d}"
    );
    let table = ws.ok(&["params", "diff", "HEAD", "lock"]);
    assert!(table.contains("train@4") && table.contains("+1"), "{table}");

    // Metrics: the committed lock's metrics files come from the cache.
    let d = json(&ws.ok(&["metrics", "diff", "HEAD", "lock", "--json"]));
    let e16 = d["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["stage"] == "evaluate@16")
        .unwrap();
    assert_eq!(e16["a"], 96.875);
    assert!((e16["b"].as_f64().unwrap() - 97.916667).abs() < 1e-3);
    let shown = json(&ws.ok(&["metrics", "show", "--json"]));
    assert_eq!(shown["evaluate@1"]["a_uni"].as_f64().unwrap().round(), 67.0);
    assert_eq!(shown["evaluate@1"]["n"], 10.0);
    let md = ws.ok(&["metrics", "show", "--md"]);
    assert!(md.contains("| evaluate@4 | a_uni | 91.6667 |"), "{md}");

    // A run-cache entry as a source: the scale-2 evaluate@1 against the workspace.
    let r = rows(&ws, &["exp", "show", "evaluate@1", "--json"]);
    let old = r.iter().find(|x| x["metrics"]["a_uni"] == 50.0).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = json(&ws.ok(&["metrics", "diff", &old, "--json"]));
    let rows_ = d["rows"].as_array().unwrap();
    assert_eq!(d["a"], old.as_str());
    assert!(
        rows_
            .iter()
            .any(|x| x["stage"] == "evaluate@1" && x["name"] == "a_uni" && x["a"] == 50.0),
        "{d}"
    );
    let err = ws.fail(&["params", "diff", "no-such-rev"]);
    assert!(err.contains("not `workspace`"), "{err}");
}

#[test]
fn metrics_commands_refuse_a_fifo_or_an_unreadable_metrics_file_and_name_it() {
    let ws = Ws::new(
        r#"stages:
  eval:
    cmd: >-
      echo '{"acc": 0.5}' > m.json
    metrics: [m.json]
"#,
    );
    ws.ok(&["run"]);
    assert!(ws.ok(&["metrics", "show"]).contains("acc"));
    let limit = std::time::Duration::from_secs(20);

    // A FIFO at the metrics path: an error naming it, never a hang.
    std::fs::remove_file(ws.path("m.json")).unwrap();
    ws.sh("mkfifo m.json");
    for args in [&["metrics", "show"][..], &["metrics", "diff"][..]] {
        let o = common::output_within(ws.cmd(args), limit);
        let text = common::both(&o);
        assert!(!o.status.success(), "{args:?}: {text}");
        assert!(
            text.contains("m.json") && text.contains("FIFO") && text.contains("eval"),
            "{args:?}: {text}"
        );
        assert!(!text.contains("no metrics found"), "{text}");
    }
    // `params diff` does not read metrics: the FIFO does not stop it.
    let o = common::output_within(ws.cmd(&["params", "diff"]), limit);
    assert!(o.status.success(), "{}", common::both(&o));

    // A declared metrics file that cannot be read is not "no metrics".
    std::fs::remove_file(ws.path("m.json")).unwrap();
    std::fs::write(ws.path("m.json"), b"{\"acc\": \xff}").unwrap();
    let text = ws.fail(&["metrics", "show"]);
    assert!(
        text.contains("m.json") && text.contains("UTF-8") && !text.contains("no metrics found"),
        "{text}"
    );
}
