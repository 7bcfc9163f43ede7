//! End-to-end tests of the pipeline engine: the real `repro` binary on pipelines of shell
//! stages in temporary workspaces.

mod common;

use common::Ws;

/// a → b → d, a → c; each stage appends its name to `executions.log` (not an output), so
/// the test can see exactly which stages executed.
const DIAMOND: &str = r#"
vars:
  greeting: hello
  unrelated: 1
stages:
  a:
    cmd: echo a >> executions.log && cat input.txt > a.txt
    deps: [input.txt]
    outs: [a.txt]
  b:
    cmd: echo b >> executions.log && (cat a.txt; echo ${greeting}) > b.txt
    deps: [a.txt]
    outs: [b.txt]
    params: [greeting]
  c:
    cmd: echo c >> executions.log && wc -c < a.txt > c.txt
    deps: [a.txt]
    outs: [c.txt]
  d:
    cmd: echo d >> executions.log && cat b.txt c.txt > d.txt
    deps: [b.txt, c.txt]
    outs: [d.txt]
"#;

fn diamond() -> Ws {
    let ws = Ws::new(DIAMOND);
    ws.write("input.txt", "one\n");
    ws
}

#[test]
fn first_run_runs_all_and_second_run_nothing() {
    let ws = diamond();
    let out = ws.ok(&["run"]);
    assert!(out.contains("4 ran, 0 fresh, 0 failed"), "{out}");
    assert_eq!(ws.executions(), ["a", "b", "c", "d"]);
    assert_eq!(ws.read("d.txt"), "one\nhello\n4\n");
    let out = ws.ok(&["run"]);
    assert!(out.contains("0 ran, 4 fresh, 0 failed"), "{out}");
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(ws.executions().len(), 4);
    assert!(ws.read("repro.lock").contains("a.txt"));
}

#[test]
fn editing_a_dep_reruns_exactly_its_downstream() {
    let ws = diamond();
    ws.ok(&["run"]);
    ws.clear_executions();
    ws.write("input.txt", "two!\n");
    let out = ws.ok(&["run"]);
    assert!(out.contains("4 ran"), "{out}");
    ws.clear_executions();
    // Change only what b depends on through a param: c is untouched.
    ws.write(
        "pipeline.yaml",
        &DIAMOND.replace("greeting: hello", "greeting: bye"),
    );
    let out = ws.ok(&["run"]);
    assert_eq!(ws.executions(), ["b", "d"], "{out}");
}

#[test]
fn touching_mtime_without_change_reruns_nothing() {
    let ws = diamond();
    ws.ok(&["run"]);
    ws.clear_executions();
    std::thread::sleep(std::time::Duration::from_millis(20));
    ws.sh("touch input.txt a.txt && cp input.txt tmp && mv tmp input.txt");
    let out = ws.ok(&["run"]);
    assert!(out.contains("0 ran, 4 fresh"), "{out}");
    assert!(ws.executions().is_empty());
}

#[test]
fn changing_an_undeclared_var_reruns_nothing() {
    let ws = diamond();
    ws.ok(&["run"]);
    ws.clear_executions();
    ws.write(
        "pipeline.yaml",
        &DIAMOND.replace("unrelated: 1", "unrelated: 2"),
    );
    let out = ws.ok(&["run"]);
    assert!(out.contains("0 ran, 4 fresh"), "{out}");
}

#[test]
fn deleting_an_output_brings_it_back_from_the_cache() {
    let ws = diamond();
    ws.ok(&["run"]);
    let before = ws.read("c.txt");
    ws.clear_executions();
    std::fs::remove_file(ws.path("c.txt")).unwrap();
    let st = ws.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    let c = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "c")
        .unwrap();
    assert_eq!(c["state"], "stale");
    assert_eq!(c["reasons"][0], "output c.txt missing");
    // The same reason, typed.
    assert_eq!(
        c["changes"][0],
        serde_json::json!({"part": "output", "how": "missing", "path": "c.txt"})
    );
    let out = ws.ok(&["run"]);
    assert!(
        out.contains("0 ran, 3 fresh, 1 restored, 0 failed"),
        "{out}"
    );
    assert!(ws.executions().is_empty());
    assert_eq!(ws.read("c.txt"), before);
}

#[test]
fn status_explains_param_and_dep_changes() {
    let ws = diamond();
    ws.ok(&["run"]);
    ws.write(
        "pipeline.yaml",
        &DIAMOND.replace("greeting: hello", "greeting: bye"),
    );
    let st = ws.ok(&["status"]);
    assert!(st.contains("param greeting changed: hello -> bye"), "{st}");
    assert!(st.contains("upstream stage 'b' is stale"), "{st}");
    // `status --json` carries the reasons typed beside the prose.
    let v: serde_json::Value = serde_json::from_str(&ws.ok(&["status", "--json"])).unwrap();
    let changes: Vec<&serde_json::Value> = (v.as_array().unwrap().iter())
        .flat_map(|s| s["changes"].as_array().unwrap())
        .collect();
    assert!(
        changes.contains(&&serde_json::json!({
            "part": "param", "how": "changed", "name": "greeting", "old": "hello", "new": "bye"
        })),
        "{v}"
    );
    assert!(
        changes.contains(&&serde_json::json!({"part": "upstream", "how": "stale", "name": "b"})),
        "{v}"
    );
    ws.write("input.txt", "changed\n");
    let st = ws.ok(&["status"]);
    assert!(st.contains("dep input.txt changed"), "{st}");
}

#[test]
fn failing_stage_skips_dependents_and_keep_going_runs_siblings() {
    let ws = Ws::new(
        r#"
stages:
  bad:
    cmd: echo boom >&2 && exit 3
    outs: [bad.txt]
  after_bad:
    cmd: cat bad.txt > x.txt
    deps: [bad.txt]
    outs: [x.txt]
  sibling:
    cmd: sleep 0.3 && echo ok > s.txt
    outs: [s.txt]
"#,
    );
    let out = ws.fail(&["run", "-j", "1"]);
    assert!(out.contains("FAILED bad"), "{out}");
    assert!(out.contains("exit code 3"), "{out}");
    assert!(out.contains("| boom"), "log tail is shown: {out}");
    assert!(out.contains("skipped after_bad"), "{out}");
    assert!(
        !ws.path("s.txt").exists(),
        "without --keep-going nothing new starts: {out}"
    );
    let out = ws.fail(&["run", "-j", "1", "--keep-going"]);
    assert!(out.contains("1 ran, 0 fresh, 1 failed, 1 skipped"), "{out}");
    assert_eq!(ws.read("s.txt"), "ok\n");
}

#[test]
fn missing_declared_output_fails_the_stage() {
    let ws = Ws::new("stages:\n  a:\n    cmd: echo hi > other.txt\n    outs: [a.txt]\n");
    let out = ws.fail(&["run"]);
    assert!(
        out.contains("did not produce declared output a.txt"),
        "{out}"
    );
    assert!(!ws.read("repro.lock").contains("a.txt") || !ws.path("repro.lock").exists());
}

#[test]
fn targets_run_only_what_they_need() {
    let ws = diamond();
    let out = ws.ok(&["run", "c"]);
    assert!(out.contains("2 ran"), "{out}");
    assert_eq!(ws.executions(), ["a", "c"]);
    let out = ws.ok(&["run", "--dry-run"]);
    assert!(out.contains("would run b (never run)"), "{out}");
}

#[test]
fn foreach_matrix_and_globs() {
    let ws = Ws::new(
        r#"
vars:
  models: [cnn, mlp]
stages:
  train:
    matrix:
      model: ${models}
      loss: [soft-d, bce-nu]
    cmd: echo ${item.model} ${item.loss} > out/${item.model}-${item.loss}.txt
    outs: ["out/${item.model}-${item.loss}.txt"]
  collect:
    cmd: cat out/*.txt | sort > all.txt
    deps: [out]
    outs: [all.txt]
"#,
    );
    let dag = ws.ok(&["dag"]);
    assert!(dag.contains("train@cnn,bce-nu"), "{dag}");
    assert!(
        dag.contains(
            "collect  <- train@cnn,soft-d, train@cnn,bce-nu, train@mlp,soft-d, train@mlp,bce-nu"
        ),
        "{dag}"
    );
    let out = ws.ok(&["run", "train@mlp,*"]);
    assert!(out.contains("2 ran"), "{out}");
    let out = ws.ok(&["run"]);
    assert!(out.contains("3 ran, 2 fresh"), "{out}");
    assert_eq!(ws.read("all.txt").lines().count(), 4);
}

#[test]
fn validation_errors_name_file_line_stage_and_quote() {
    let cases: &[(&str, &[&str])] = &[
        (
            "stages:\n  a:\n    cmd: echo\n    outz: [x]\n",
            &[
                "unknown stage key 'outz'",
                "pipeline.yaml:4:5",
                "did you mean 'outs'",
                "in stage 'a'",
                "    outz: [x]",
            ],
        ),
        (
            "stages:\n  a:\n    cmd: echo ${nope}\n",
            &[
                "undefined variable `${nope}`",
                "pipeline.yaml:3:15",
                "in stage 'a'",
            ],
        ),
        (
            "stages:\n  a:\n    cmd: x\n    uses: train\n",
            &["either `cmd:` or `uses:`"],
        ),
        (
            "stages:\n  a:\n    deps: [q]\n",
            &["neither `cmd:` nor `uses:`", "pipeline.yaml:2:3"],
        ),
        (
            "stages:\n  a:\n    cmd: x\n    deps: [c]\n    outs: [a]\n  b:\n    cmd: x\n    deps: [a]\n    outs: [b]\n  c:\n    cmd: x\n    deps: [b]\n    outs: [c]\n",
            &["dependency cycle: a -> b -> c -> a"],
        ),
        (
            "stages:\n  a:\n    cmd: x\n    outs: [o]\n  b:\n    cmd: x\n    outs: [o]\n",
            &[
                "output 'o' is declared by two stages: 'a' and 'b'",
                "pipeline.yaml:7:12",
            ],
        ),
        (
            "stages:\n  a:\n    cmd: x\n    outs: [d]\n  b:\n    cmd: x\n    outs: [d/f]\n",
            &["output 'd/f' is inside output 'd'"],
        ),
        (
            "stages:\n  a:\n    cmd: x\n    deps: [nowhere.csv]\n",
            &[
                "dependency 'nowhere.csv' does not exist and no stage produces it",
                "pipeline.yaml:4:12",
            ],
        ),
        (
            "stages:\n  a:\n    cmd: x\n    resources: {gpuz: 1}\n",
            &["unknown resource 'gpuz'", "did you mean 'gpu"],
        ),
        (
            "stages:\n  a:\n    cmd: x\n    params: [lr]\n",
            &["param `lr` is not defined in vars"],
        ),
        (
            "stages:\n  a:\n    cmd: x\n    uses: nosuchkind\n",
            &["either `cmd:` or `uses:`"],
        ),
        (
            "stages:\n  a:\n    uses: nosuchkind\n",
            &["unknown stage kind 'nosuchkind'"],
        ),
        ("stages:\n  a: [1\n", &["invalid YAML", "pipeline.yaml:"]),
        (
            "stagez: {}\n",
            &["unknown top-level key 'stagez'", "did you mean 'stages'"],
        ),
    ];
    for (yaml, expected) in cases {
        let ws = Ws::new(yaml);
        ws.write("marker.txt", "untouched");
        let out = ws.fail(&["run"]);
        for e in *expected {
            assert!(out.contains(e), "expected {e:?} in:\n{out}\nfor:\n{yaml}");
        }
        assert!(out.contains("nothing was run"), "{out}");
        assert!(!ws.path("repro.lock").exists(), "nothing ran for {yaml}");
    }
}

#[test]
fn a_second_run_on_the_same_workspace_names_the_holder() {
    let ws =
        Ws::new("stages:\n  slow:\n    cmd: sleep 4 && echo done > s.txt\n    outs: [s.txt]\n");
    let mut first = ws.spawn(&["run"]);
    // Wait until the first run holds the workspace (its pid is written once it does) and
    // its stage is running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(ws.read("cache/run.pid").trim().parse::<u32>().is_ok()
        && ws.path("cache/logs/slow.log").exists())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = ws.fail(&["run"]);
    assert!(out.contains("another `repro run` (pid"), "{out}");
    // status never needs the lock.
    let st = ws.ok(&["status"]);
    assert!(st.contains("slow"), "{st}");
    assert!(first.wait().unwrap().success());
    let out = ws.ok(&["run"]);
    assert!(out.contains("1 fresh"), "{out}");
}

#[test]
fn outputs_of_a_deleted_stage_leave_the_workspace_and_come_back_from_the_cache() {
    let two = "stages:\n  a:\n    cmd: mkdir -p runs && echo a > runs/a.txt\n    outs: [runs/a.txt]\n  b:\n    cmd: mkdir -p runs && echo b > runs/b.txt\n    outs: [runs/b.txt]\n  all:\n    cmd: cat runs/*.txt > all.txt\n    deps: [runs]\n    outs: [all.txt]\n";
    let ws = Ws::new(two);
    ws.ok(&["run"]);
    assert_eq!(ws.read("all.txt"), "a\nb\n");
    let one = two.replace(
        "  b:\n    cmd: mkdir -p runs && echo b > runs/b.txt\n    outs: [runs/b.txt]\n",
        "",
    );
    ws.write("pipeline.yaml", &one);
    let out = ws.ok(&["run"]);
    assert!(
        out.contains("removed runs/b.txt: its stage 'b' is no longer in the pipeline"),
        "{out}"
    );
    assert_eq!(
        ws.read("all.txt"),
        "a\n",
        "the directory dep no longer sees b's output"
    );
    ws.write("pipeline.yaml", two);
    let out = ws.ok(&["run"]);
    assert!(out.contains("0 ran") && out.contains("2 restored"), "{out}");
    assert_eq!(ws.read("all.txt"), "a\nb\n");
}

/// The engine binary must not load libtorch (its start-up would cost every command ~0.5 s);
/// only `repro-torch` links it, and `repro doctor` reaches it through `repro`.
#[test]
fn the_engine_binary_does_not_link_libtorch_and_doctor_reaches_repro_torch() {
    let ldd = std::process::Command::new("ldd")
        .arg(common::bin())
        .output()
        .unwrap();
    let libs = String::from_utf8_lossy(&ldd.stdout);
    assert!(
        !libs.contains("libtorch") && !libs.contains("libc10"),
        "repro links libtorch:\n{libs}"
    );
    let out = std::process::Command::new(common::bin())
        .arg("doctor")
        .output()
        .unwrap();
    let text = common::both(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("libtorch        2.11.0"), "{text}");
}

#[test]
fn replacing_the_binary_during_a_run_does_not_break_the_stages_still_to_start() {
    // A copy of repro that the test deletes while the first stage runs, as a `cargo build`
    // or an install replacing the binary would: the second stage must still start.
    let bin_dir = tempfile::tempdir().unwrap();
    let copy = bin_dir.path().join("repro");
    std::fs::copy(common::bin(), &copy).unwrap();
    let ws = Ws::new(
        r#"stages:
  first:
    cmd: touch started && while [ ! -f go ]; do sleep 0.05; done && echo 1 > first.txt
    outs: [first.txt]
  second:
    cmd: cat first.txt > second.txt
    deps: [first.txt]
    outs: [second.txt]
"#,
    );
    let child = std::process::Command::new(&copy)
        .arg("run")
        .current_dir(ws.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !ws.path("started").exists() {
        assert!(t0.elapsed().as_secs() < 60, "the first stage never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::remove_file(&copy).unwrap();
    ws.write("go", "");
    let out = child.wait_with_output().unwrap();
    let text = common::both(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(ws.read("second.txt"), "1\n", "{text}");
}
