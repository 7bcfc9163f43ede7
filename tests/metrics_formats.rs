//! Metrics files in every usual format, through the real binary: JSON at any depth, YAML,
//! TOML, CSV and TSV give dotted names; an unsupported or malformed file is an error that
//! names the file and the stage.

mod common;

use common::Ws;
use serde_json::{Value, json};

const FORMATS: &str = r#"stages:
  j:
    cmd: |-
      printf '{"a": {"b": {"c": 0.5}}, "hist": [1, 2]}' > m.json
    metrics: [m.json]
  y:
    cmd: |-
      printf 'acc: 0.9\neval:\n  test:\n    top1: 0.75\nname: x\n' > m.yaml
    metrics: [m.yaml]
  t:
    cmd: |-
      printf 'acc = 0.8\n[eval.test]\ntop1 = 0.7\n' > m.toml
    metrics: [m.toml]
  c:
    cmd: |-
      printf 'epoch,split,loss\n1,train,0.9\n2,train,0.25\n' > log.csv
    metrics: [log.csv]
  s:
    cmd: |-
      printf 'acc\tf1\n0.5\t0.125\n' > m.tsv
    metrics: [m.tsv]
"#;

#[test]
fn every_format_gives_its_numbers_by_dotted_name() {
    let ws = Ws::new(FORMATS);
    ws.ok(&["run", "-q"]);
    let o = ws.output(&["metrics", "show", "--json"]);
    assert!(o.status.success(), "{}", common::both(&o));
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["j"], json!({"a.b.c": 0.5}));
    assert_eq!(m["y"], json!({"acc": 0.9, "eval.test.top1": 0.75}));
    assert_eq!(m["t"], json!({"acc": 0.8, "eval.test.top1": 0.7}));
    // CSV: the last data row, by column; the text column is not a metric.
    assert_eq!(m["c"], json!({"epoch": 2.0, "loss": 0.25}));
    assert_eq!(m["s"], json!({"acc": 0.5, "f1": 0.125}));
}

#[test]
fn an_unsupported_or_malformed_metrics_file_is_an_error_naming_it_and_its_stage() {
    let ws = Ws::new("stages:\n  a:\n    cmd: echo 0.5 > m.txt\n    metrics: [m.txt]\n");
    ws.ok(&["run", "-q"]);
    let err = ws.fail(&["metrics", "show"]);
    assert!(
        err.contains("metrics file m.txt of stage 'a'")
            && err.contains("unsupported metrics format '.txt'"),
        "{err}"
    );

    for (file, text, why) in [
        ("m.yaml", "a: [", "invalid YAML"),
        ("m.toml", "a = ", "invalid TOML"),
        ("m.json", "[1, 2]", "not a mapping"),
        ("m.csv", "a,b\\n", "no data row"),
    ] {
        let ws = Ws::new(&format!(
            "stages:\n  bad:\n    cmd: |-
      printf '{text}' > {file}\n    metrics: [{file}]\n"
        ));
        ws.ok(&["run", "-q"]);
        let err = ws.fail(&["metrics", "show"]);
        assert!(
            err.contains(&format!("metrics file {file} of stage 'bad'")) && err.contains(why),
            "{file}: {err}"
        );
        // The lock's copy (in the cache) is read the same way.
        let err = ws.fail(&["metrics", "diff", "lock", "workspace"]);
        assert!(
            err.contains(&format!("{file} of stage 'bad' in lock")),
            "{err}"
        );
    }
}
