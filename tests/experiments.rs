//! Experiments on real runs: each `repro run` records the whole pipeline's configuration;
//! `exp show` has one row per experiment with the params that differ and each stage's own
//! metrics, `exp apply` brings a whole configuration back (or changes nothing and names the
//! stages it cannot restore), `exp diff`, `exp remove`, and gc keeping what experiments use.

mod common;

use std::collections::BTreeMap;

use common::Ws;
use serde_json::Value;

/// prepare → train over a foreach → evaluate writing a nested metrics file per item.
const PIPE: &str = r#"vars:
  scale: 2
  gammas: [1, 4]
stages:
  prepare:
    cmd: echo ${scale} > data.txt
    params: [scale]
    outs: [data.txt]
  train:
    foreach: ${gammas}
    cmd: awk -v g=${item} '{ print g * $1 }' data.txt > models/g${item}.txt
    deps: [data.txt]
    outs: ["models/g${item}.txt"]
  evaluate:
    foreach: ${gammas}
    cmd: >-
      awk '{ printf "{\"acc\": {\"top1\": %g}, \"hist\": [1]}\n", 100 - 100 / $1 }'
      models/g${item}.txt > models/g${item}.json
    deps: ["models/g${item}.txt"]
    metrics: ["models/g${item}.json"]
"#;

const OUTS: &[&str] = &[
    "data.txt",
    "models/g1.txt",
    "models/g4.txt",
    "models/g1.json",
    "models/g4.json",
];

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `exp show --json` (stdout only: a skipped record warns on stderr).
fn show(ws: &Ws) -> Vec<Value> {
    let o = ws.output(&["exp", "show", "--json"]);
    assert!(o.status.success(), "{}", common::both(&o));
    json(&String::from_utf8_lossy(&o.stdout))
        .as_array()
        .unwrap()
        .clone()
}

fn outputs(ws: &Ws) -> BTreeMap<&'static str, Vec<u8>> {
    OUTS.iter()
        .map(|o| (*o, std::fs::read(ws.path(o)).unwrap()))
        .collect()
}

/// Two configurations: `base` (scale 2) then scale 3. Returns their ids and outputs.
fn two_runs(ws: &Ws) -> (String, String, BTreeMap<&'static str, Vec<u8>>) {
    ws.ok(&["run", "--name", "base"]);
    let first = outputs(ws);
    ws.ok(&["run", "--set", "scale=3"]);
    let rows = show(ws);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let id = |i: usize| rows[i]["id"].as_str().unwrap().to_string();
    (id(1), id(0), first)
}

#[test]
fn each_run_records_one_row_with_differing_params_and_own_metrics() {
    let ws = Ws::new(PIPE);
    let (a, b, _) = two_runs(&ws);
    let rows = show(&ws);
    // Newest first: the scale=3 run, then `base`.
    assert_eq!(rows[0]["id"], b.as_str());
    assert_eq!(rows[1]["name"], "base");
    assert_eq!(rows[1]["params"]["scale"], 2);
    assert_eq!(rows[0]["params"]["scale"], 3);
    assert_eq!(rows[0]["current"], true);
    assert_eq!(rows[1]["current"], false);
    // The matrix axis, from the stage names.
    assert_eq!(rows[0]["params"]["train@*"], serde_json::json!(["1", "4"]));
    // Every stage's key, the whole pipeline.
    assert_eq!(rows[0]["stages"].as_object().unwrap().len(), 5);
    // Metrics: dotted names, each stage only its own (no upstream stage shows them).
    let m = |r: &Value, s: &str| r["metrics"][s]["acc.top1"].as_f64();
    assert_eq!(m(&rows[1], "evaluate@1"), Some(50.0));
    assert_eq!(m(&rows[1], "evaluate@4"), Some(87.5));
    assert!((m(&rows[0], "evaluate@1").unwrap() - 66.666667).abs() < 1e-3);
    let stages_with_metrics: Vec<&String> =
        rows[0]["metrics"].as_object().unwrap().keys().collect();
    assert_eq!(stages_with_metrics, ["evaluate@1", "evaluate@4"]);
    assert!(rows[0]["metrics"]["evaluate@1"].get("hist").is_none());
    // The machine its stages ran on, once (both runs ran here).
    let envs = rows[0]["environments"]
        .as_array()
        .expect("environments listed");
    assert_eq!(envs.len(), 1, "{envs:?}");
    assert!(envs[0]["cpus"].as_u64().unwrap() >= 1, "{envs:?}");
    assert!(envs[0].get("stage_threads").is_none(), "{envs:?}");

    // The table: one row per experiment, the param that differs as a column, the metrics.
    let table = ws.ok(&["exp", "show"]);
    let lines: Vec<&str> = table.lines().collect();
    let head = lines[0];
    for col in ["id", "name", "commit", "scale", "evaluate@1:acc.top1"] {
        assert!(head.contains(col), "no {col} column:\n{table}");
    }
    assert!(
        !head.contains("train@*"),
        "an axis that does not differ:\n{table}"
    );
    assert!(!head.contains("stage "), "{table}");
    assert!(lines[1].starts_with(&format!("{b}*")), "{table}");
    assert!(lines[2].contains(&a) && lines[2].contains("base") && lines[2].contains("87.5"));

    // A run that changes nothing records nothing; the same keys again neither, but a name
    // given then names the last experiment.
    ws.ok(&["run", "--set", "scale=3"]);
    assert_eq!(show(&ws).len(), 2);
    ws.ok(&["run", "--set", "scale=3", "--name", "bigger"]);
    let rows = show(&ws);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], "bigger");
    // --sort by a metric, and the per-stage view is still there.
    let sorted = json(&ws.ok(&["exp", "show", "--json", "--sort", "evaluate@1:acc.top1"]));
    assert_eq!(sorted[0]["id"], b.as_str());
    let per_stage = json(&ws.ok(&["exp", "show", "--stages", "--json"]));
    assert!(
        per_stage
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["stage"] == "train@4")
    );
    // A single experiment still shows its params.
    ws.ok(&["exp", "remove", &a]);
    let table = ws.ok(&["exp", "show"]);
    assert!(table.lines().next().unwrap().contains("scale"), "{table}");
}

#[test]
fn apply_restores_the_whole_configuration() {
    let ws = Ws::new(PIPE);
    let (_a, b, first) = two_runs(&ws);
    let second = outputs(&ws);
    assert_ne!(first, second);
    let out = ws.ok(&["exp", "apply", "base"]);
    assert!(out.contains("restored experiment"), "{out}");
    assert_eq!(outputs(&ws), first, "every output as the first run left it");
    // The lock agrees: with the pipeline's own params, nothing runs.
    let run = ws.ok(&["run"]);
    assert!(run.contains("0 ran"), "{run}");
    assert_eq!(
        show(&ws).len(),
        2,
        "applying then running records nothing new"
    );
    assert_eq!(show(&ws)[1]["current"], true);
    // And back, saying how it ran.
    let out = ws.ok(&["exp", "apply", &b]);
    assert!(out.contains("--set scale=3"), "{out}");
    assert_eq!(outputs(&ws), second);
}

#[test]
fn apply_changes_nothing_when_a_stage_cannot_be_restored() {
    let ws = Ws::new(PIPE);
    ws.ok(&["run", "--name", "base"]);
    let lock: serde_yaml_ng::Value = serde_yaml_ng::from_str(&ws.read("repro.lock")).unwrap();
    let hash = lock["stages"]["train@4"]["out_hashes"]["models/g4.txt"]
        .as_str()
        .unwrap()
        .to_string();
    ws.ok(&["run", "--set", "scale=3"]);
    let before = outputs(&ws);
    let lock_before = ws.read("repro.lock");
    std::fs::remove_file(ws.path(&format!("cache/objects/{}/{}", &hash[..2], &hash[2..]))).unwrap();
    let err = ws.fail(&["exp", "apply", "base"]);
    assert!(
        err.contains("stage 'train@4'") && err.contains("models/g4.txt"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(
        !err.contains("stage 'prepare'"),
        "only what cannot be restored: {err}"
    );
    assert_eq!(outputs(&ws), before, "the workspace is untouched");
    assert_eq!(ws.read("repro.lock"), lock_before);
}

#[test]
fn a_hostile_record_writes_nothing() {
    let ws = Ws::new(PIPE);
    let (a, _b, _) = two_runs(&ws);
    let before = outputs(&ws);
    // An experiment whose `prepare` names the key of another stage: that record's outputs are
    // not prepare's to write.
    let path = ws.path(&format!("cache/experiments/{a}.json"));
    let mut rec = json(&std::fs::read_to_string(&path).unwrap());
    let train_key = rec["stages"]["train@1"].clone();
    rec["stages"]["prepare"] = train_key;
    std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
    let err = ws.fail(&["exp", "apply", &a]);
    assert!(
        err.contains("stage 'prepare'") && err.contains("does not declare"),
        "{err}"
    );
    assert_eq!(outputs(&ws), before);
    // A key that is not a key makes the record unreadable, not a path.
    rec["stages"]["prepare"] = Value::String("../../etc/passwd".into());
    std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
    assert_eq!(show(&ws).len(), 1);
    let err = ws.fail(&["exp", "apply", &a]);
    assert!(err.contains("not a valid experiment record"), "{err}");
    assert_eq!(outputs(&ws), before);
}

#[test]
fn diff_remove_and_gc_by_experiment() {
    let ws = Ws::new(PIPE);
    let (a, b, first) = two_runs(&ws);
    let d = json(&ws.ok(&["exp", "diff", "base", &b, "--json"]));
    assert_eq!(d["params"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["params"][0]["name"], "scale");
    assert_eq!(d["params"][0]["a"], 2);
    assert_eq!(d["params"][0]["b"], 3);
    let metrics: Vec<(&str, &str)> = d["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["stage"].as_str().unwrap(), c["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        metrics,
        [("evaluate@1", "acc.top1"), ("evaluate@4", "acc.top1")]
    );
    // scale is upstream of everything: every key differs.
    assert_eq!(d["stages"].as_array().unwrap().len(), 5);
    let text = ws.ok(&["exp", "diff", &a, &b]);
    assert!(
        text.contains("scale") && text.contains("acc.top1"),
        "{text}"
    );
    assert!(
        ws.ok(&["exp", "diff", &a, &a])
            .contains("same configuration")
    );

    // gc --keep-last keeps what a named experiment uses: base still applies.
    ws.ok(&["gc", "--keep-last", "1"]);
    ws.ok(&["exp", "apply", "base"]);
    assert_eq!(outputs(&ws), first);
    ws.ok(&["exp", "apply", &b]);
    // gc --keep-exp keeps that experiment (and the lock's entries) only.
    ws.ok(&["gc", "--keep-exp", &b]);
    let rows = show(&ws);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], b.as_str());
    let entries = json(&ws.ok(&["exp", "show", "--stages", "--json"]));
    assert_eq!(entries.as_array().unwrap().len(), 5, "{entries}");

    ws.ok(&["exp", "remove", &b]);
    assert!(show(&ws).is_empty());
    assert!(ws.fail(&["exp", "remove", &b]).contains("no experiment"));
}

#[test]
fn records_the_commit_and_whether_the_tree_was_dirty() {
    let ws = Ws::new(PIPE);
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(ws.dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", common::both(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    git(&["init", "-q"]);
    git(&["add", "pipeline.yaml"]);
    git(&["commit", "-q", "-m", "pipeline"]);
    let head = git(&["rev-parse", "HEAD"]).trim().to_string();
    // The lock, .gitignore, cache/ and the outputs are what the run writes: not dirty.
    ws.ok(&["run"]);
    let rows = show(&ws);
    assert_eq!(rows[0]["commit"], head.as_str());
    assert_eq!(rows[0]["dirty"], false, "{rows:?}");
    ws.write("notes.txt", "scratch\n");
    ws.ok(&["run", "--set", "scale=5"]);
    assert_eq!(show(&ws)[0]["dirty"], true);
    let table = ws.ok(&["exp", "show"]);
    assert!(table.contains(&format!("{}-dirty", &head[..8])), "{table}");
}
