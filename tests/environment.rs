//! The environment as an input: `env:` variables and `tools:` enter exactly the keys of the
//! stages that declare them, so changing one reruns exactly those stages (and their
//! downstream), and nothing else; declaring nothing changes no key.

mod common;

use common::Ws;

/// `seeded` reads SEED from repro's environment and sets MODE for itself; `pinned` depends on
/// the tool file and a tool command; `after` is downstream of `seeded`; `other` declares
/// nothing. Each appends its name to `executions.log`.
const PIPELINE: &str = r#"
stages:
  seeded:
    cmd: echo seeded >> executions.log && echo "$SEED $MODE" > seeded.txt
    env: [SEED, {MODE: fast}]
    outs: [seeded.txt]
  after:
    cmd: echo after >> executions.log && cat seeded.txt > after.txt
    deps: [seeded.txt]
    outs: [after.txt]
  pinned:
    cmd: echo pinned >> executions.log && echo ok > pinned.txt
    tools:
      - file: requirements.lock
      - cmd: cat version.txt
      - python: venv
    outs: [pinned.txt]
  other:
    cmd: echo other >> executions.log && echo x > other.txt
    outs: [other.txt]
"#;

fn ws() -> Ws {
    let ws = Ws::new(PIPELINE);
    ws.write("requirements.lock", "torch==2.5.0\n");
    ws.write("version.txt", "2.5.0\n");
    ws.write(
        "venv/lib/python3.11/site-packages/numpy-2.0.0.dist-info/METADATA",
        "",
    );
    ws
}

fn run(ws: &Ws, seed: &str) -> String {
    let o = ws.cmd(&["run"]).env("SEED", seed).output().unwrap();
    let text = common::both(&o);
    assert!(o.status.success(), "{text}");
    text
}

fn status(ws: &Ws, seed: &str) -> String {
    let o = ws.cmd(&["status"]).env("SEED", seed).output().unwrap();
    common::both(&o)
}

#[test]
fn a_declared_variable_reruns_exactly_the_stages_that_declare_it() {
    let ws = ws();
    run(&ws, "1");
    assert_eq!(ws.executions(), ["after", "other", "pinned", "seeded"]);
    // The set value reaches the command, the passed one is inherited.
    assert_eq!(ws.read("seeded.txt"), "1 fast\n");
    ws.clear_executions();
    let out = run(&ws, "1");
    assert!(out.contains("0 ran, 4 fresh"), "{out}");
    // Twice: the second no-op run must not answer from a record that ignores SEED.
    run(&ws, "1");
    assert!(ws.executions().is_empty());
    let st = status(&ws, "2");
    assert!(st.contains("env SEED changed: \"1\" -> \"2\""), "{st}");
    run(&ws, "2");
    assert_eq!(ws.executions(), ["after", "seeded"]);
    assert_eq!(ws.read("seeded.txt"), "2 fast\n");
    // Unset is not the same as empty, and both are not "2".
    ws.clear_executions();
    let o = ws.cmd(&["run"]).env_remove("SEED").output().unwrap();
    assert!(o.status.success(), "{}", common::both(&o));
    assert_eq!(ws.executions(), ["after", "seeded"]);
    // Back to a value seen before: restored from the run cache, not run.
    ws.clear_executions();
    run(&ws, "1");
    assert!(ws.executions().is_empty(), "{:?}", ws.executions());
    assert_eq!(ws.read("seeded.txt"), "1 fast\n");
    // The values are in the lock, where `status` explains from.
    let lock = ws.read("repro.lock");
    assert!(lock.contains("SEED"), "{lock}");
}

#[test]
fn a_changed_tool_reruns_exactly_the_stages_that_declare_it() {
    let ws = ws();
    run(&ws, "1");
    ws.clear_executions();
    ws.write("requirements.lock", "torch==2.6.0\n");
    let st = status(&ws, "1");
    assert!(st.contains("tool file: requirements.lock changed"), "{st}");
    run(&ws, "1");
    assert_eq!(ws.executions(), ["pinned"]);
    ws.clear_executions();
    // A tool command's output: run once per `repro run`, read as the tool's identity.
    ws.write("version.txt", "2.6.0\n");
    let st = status(&ws, "1");
    assert!(
        st.contains("tool cmd: cat version.txt changed: 2.5.0 -> 2.6.0"),
        "{st}"
    );
    run(&ws, "1");
    assert_eq!(ws.executions(), ["pinned"]);
    ws.clear_executions();
    run(&ws, "1");
    assert!(ws.executions().is_empty());
    // A package upgraded in the declared Python environment.
    let site = ws.path("venv/lib/python3.11/site-packages");
    std::fs::rename(
        site.join("numpy-2.0.0.dist-info"),
        site.join("numpy-2.1.0.dist-info"),
    )
    .unwrap();
    let st = status(&ws, "1");
    assert!(st.contains("tool python: venv changed"), "{st}");
    run(&ws, "1");
    assert_eq!(ws.executions(), ["pinned"]);
    // A tool command that fails is an error naming the stage and the command.
    std::fs::remove_file(ws.path("version.txt")).unwrap();
    let o = ws.cmd(&["run"]).env("SEED", "1").output().unwrap();
    let text = common::both(&o);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("pinned") && text.contains("cat version.txt"),
        "{text}"
    );
}

#[test]
fn declaring_nothing_changes_no_key() {
    // The same stage with and without an empty `env:` has the same key as before these
    // fields existed (tests/plan.rs and the lock files of existing workspaces rely on it).
    let plain = Ws::new("stages:\n  a:\n    cmd: echo x > a.txt\n    outs: [a.txt]\n");
    plain.ok(&["run"]);
    let with_empty = Ws::new(
        "stages:\n  a:\n    cmd: echo x > a.txt\n    outs: [a.txt]\n    env: []\n    tools: []\n",
    );
    with_empty.ok(&["run"]);
    let key = |ws: &Ws| {
        let lock = ws.read("repro.lock");
        lock.lines()
            .find(|l| l.trim_start().starts_with("key:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(key(&plain), key(&with_empty));
}

#[test]
fn env_and_tools_errors_name_file_line_and_stage() {
    let cases: &[(&str, &[&str])] = &[
        (
            "stages:\n  a:\n    cmd: echo\n    env: [OK, 1BAD]\n",
            &[
                "pipeline.yaml:4",
                "'1BAD' is not a variable name",
                "in stage 'a'",
            ],
        ),
        (
            "stages:\n  a:\n    cmd: echo\n    env: [OMP_NUM_THREADS]\n",
            &["pipeline.yaml:4", "set by repro", "in stage 'a'"],
        ),
        (
            "stages:\n  a:\n    cmd: echo\n    env: [A, {A: 1}]\n",
            &["pipeline.yaml:4", "A is declared twice"],
        ),
        (
            "stages:\n  a:\n    cmd: echo\n    tools:\n      - path: x\n",
            &["pipeline.yaml:5", "`file: PATH`", "in stage 'a'"],
        ),
        (
            "stages:\n  a:\n    cmd: echo\n    tools:\n      - file: ../x\n",
            &["pipeline.yaml:5", "points outside the workspace"],
        ),
    ];
    for (yaml, wants) in cases {
        let ws = Ws::new(yaml);
        let out = ws.fail(&["status"]);
        for w in *wants {
            assert!(out.contains(w), "{yaml}\nwanted {w:?} in:\n{out}");
        }
    }
}

#[test]
fn the_machine_is_recorded_with_each_run_and_not_looked_at_by_a_no_op_run() {
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: echo x > a.txt\n    outs: [a.txt]\n    resources: {cpus: 2}\n",
    );
    ws.ok(&["run"]);
    // `exp show --json`: the run-cache record carries the environment.
    let out = ws.ok(&["exp", "show", "a", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let env = &rows[0]["environment"];
    assert!(
        env["kernel"].as_str().is_some_and(|k| !k.is_empty()),
        "{out}"
    );
    assert!(env["cpus"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(env["stage_threads"], 2, "{out}");
    assert!(env["cpu_flags"].is_array(), "{out}");
    assert!(
        env["repro"]
            .as_str()
            .is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    // The trace line names the environment, written once beside it.
    let trace = ws.read("cache/trace.jsonl");
    let line: serde_json::Value = serde_json::from_str(trace.lines().next().unwrap()).unwrap();
    let id = line["environment"].as_str().unwrap().to_string();
    let saved = ws.read(&format!("cache/environments/{id}.json"));
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["kernel"], env["kernel"]);
    // A run that runs nothing captures nothing.
    std::fs::remove_dir_all(ws.path("cache/environments")).unwrap();
    let out = ws.ok(&["run"]);
    assert!(out.contains("0 ran, 1 fresh"), "{out}");
    assert!(!ws.path("cache/environments").exists());
}
