//! Working on a pipeline from an editor and a shell: `repro schema` (the JSON Schema the
//! YAML language server reads, named on the first line of the pipeline `repro init` writes),
//! shell completion of stage and profile names, and one error for an undefined `${var}`.

mod common;

use std::process::Command;

use common::Ws;
use serde_json::Value;

fn schema() -> Value {
    let o = Command::new(common::bin()).arg("schema").output().unwrap();
    assert!(o.status.success(), "{}", common::both(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn names(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// The keys a pipeline file uses at the top and in its stages, read as plain YAML.
fn used_keys(text: &str) -> (Vec<String>, Vec<String>) {
    let doc: Value = serde_yaml_ng::from_str(text).unwrap();
    let top = doc.as_object().unwrap().keys().cloned().collect();
    let stage = doc["stages"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s.as_object().unwrap().keys().cloned())
        .collect();
    (top, stage)
}

#[test]
fn the_schema_lists_every_key_and_the_repository_pipelines_use_only_those() {
    let s = schema();
    assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
    let top = names(&s["properties"]);
    let stage = names(&s["definitions"]["stage"]["properties"]);
    for k in ["stages", "vars", "profiles", "remote", "slurm"] {
        assert!(top.contains(&k), "{k} not in {top:?}");
    }
    for k in [
        "cmd", "uses", "deps", "outs", "metrics", "plots", "params", "foreach",
    ] {
        assert!(stage.contains(&k), "{k} not in {stage:?}");
    }
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(s["definitions"]["stage"]["additionalProperties"], false);

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("pipeline.yaml")];
    for e in std::fs::read_dir(root.join("examples")).unwrap() {
        let p = e.unwrap().path().join("pipeline.yaml");
        if p.is_file() {
            files.push(p);
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let (t, st) = used_keys(&std::fs::read_to_string(&f).unwrap());
        for k in t {
            assert!(
                top.contains(&k.as_str()),
                "{}: `{k}` not in the schema",
                f.display()
            );
        }
        for k in st {
            assert!(
                stage.contains(&k.as_str()),
                "{}: `{k}` not in the schema",
                f.display()
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.json");
    let o = Command::new(common::bin())
        .args(["schema", "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&std::fs::read(&out).unwrap()).unwrap(),
        s
    );
}

#[test]
fn init_names_the_schema_for_the_yaml_language_server_and_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(common::bin())
        .args(["init", "ws"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::both(&o));
    let ws = dir.path().join("ws");
    let pipeline = std::fs::read_to_string(ws.join("pipeline.yaml")).unwrap();
    assert_eq!(
        pipeline.lines().next(),
        Some("# yaml-language-server: $schema=pipeline.schema.json")
    );
    let written: Value =
        serde_json::from_slice(&std::fs::read(ws.join("pipeline.schema.json")).unwrap()).unwrap();
    assert_eq!(written, schema());
    let (top, stage) = used_keys(&pipeline);
    let s = schema();
    assert!(top.iter().all(|k| s["properties"].get(k).is_some()));
    assert!(
        stage
            .iter()
            .all(|k| s["definitions"]["stage"]["properties"].get(k).is_some())
    );
}

#[test]
fn bash_completion_offers_stage_and_profile_names() {
    let ws = Ws::new(
        "profiles:\n  quick: {n: 1}\n  paper: {n: 2}\nvars: {n: 0, ks: [1, 2]}\nstages:\n  prepare:\n    cmd: echo ${n}\n  train:\n    foreach: ${ks}\n    cmd: echo ${item}\n",
    );
    let script = ws.path("repro.bash");
    let o = ws.output(&["completions", "bash"]);
    assert!(o.status.success());
    std::fs::write(&script, &o.stdout).unwrap();
    // What bash's completion would offer for a command line ending in an empty or partial word.
    let complete = |words: &str| -> Vec<String> {
        let test = format!(
            r#"source {script}
COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=()
_repro_names repro "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
            script = script.display()
        );
        let bin_dir = common::bin().parent().unwrap();
        let o = Command::new("bash")
            .args(["-c", &test])
            .current_dir(ws.dir.path())
            .env(
                "PATH",
                format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::both(&o));
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    assert_eq!(complete("repro run tr"), ["train", "train@1", "train@2"]);
    assert_eq!(complete("repro status train@"), ["train@1", "train@2"]);
    assert_eq!(complete("repro plots show p"), ["prepare"]);
    assert_eq!(complete("repro run --profile ''"), ["paper", "quick"]);
    assert_eq!(complete("repro run --profile q"), ["quick"]);
    // Not a stage position: `exp` wants its subcommand.
    assert_eq!(complete("repro exp s"), ["show"]);
}

#[test]
fn an_undefined_variable_is_one_error() {
    let ws = Ws::new("stages:\n  a:\n    cmd: echo ${nope}\n    outs: [o.txt]\n");
    let err = ws.fail(&["status"]);
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(err.contains("undefined variable `${nope}`") && err.contains("pipeline.yaml:3"));
    // Without any command it is still said.
    let ws = Ws::new("stages:\n  a:\n    outs: [o.txt]\n");
    assert!(
        ws.fail(&["status"])
            .contains("stage has neither `cmd:` nor `uses:`")
    );
}
