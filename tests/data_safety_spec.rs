//! The pipeline spec as untrusted input (issue 14, defects 7–10), end to end with the real
//! binary: values spliced into `cmd:` are words, not code; alias bombs and huge matrices fail
//! fast in bounded memory; the pipeline file is never silently read as something else; a
//! `--set` must name a variable that exists.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Ws;

/// Defect 7: a var or `--set` value in `cmd:` is one literal word wherever it stands;
/// `${raw:x}` is the explicit way to splice code.
#[test]
fn values_spliced_into_cmd_are_words_not_code() {
    let ws = Ws::new(
        r#"
vars:
  name: "x; touch pwned; echo"
  odd: "it's \"odd\" $HOME `touch pwned3` \\ *"
  redir: "> raw.txt"
  lr: 0.1
stages:
  hello:
    cmd: echo hello ${name} > hello.txt
    outs: [hello.txt]
  contexts:
    cmd: printf '%s|' ${odd} "${odd}" '${odd}' "$(printf %s ${odd})" x${odd}y > contexts.txt
    outs: [contexts.txt]
  raw:
    cmd: echo raw --lr ${lr} ${raw:redir}
    outs: [raw.txt]
"#,
    );
    ws.ok(&["run"]);
    assert!(!ws.path("pwned").exists(), "a var ran as shell code");
    assert!(!ws.path("pwned3").exists(), "a var ran as shell code");
    assert_eq!(ws.read("hello.txt"), "hello x; touch pwned; echo\n");
    let odd = r#"it's "odd" $HOME `touch pwned3` \ *"#;
    assert_eq!(
        ws.read("contexts.txt"),
        format!("{odd}|{odd}|{odd}|{odd}|x{odd}y|")
    );
    assert_eq!(ws.read("raw.txt"), "raw --lr 0.1\n");

    ws.ok(&["run", "--set", "name=$(touch pwned2)"]);
    assert!(
        !ws.path("pwned2").exists(),
        "a --set value ran as shell code"
    );
    assert_eq!(ws.read("hello.txt"), "hello $(touch pwned2)\n");
}

/// Run `repro args` under a 1 GiB address-space limit; kill it if it takes over 30 s.
/// Returns (succeeded, output, time taken).
fn bounded(ws: &Ws, args: &[&str], env: &[(&str, &str)]) -> (bool, String, Duration) {
    let out = ws.path("out.log");
    let log = std::fs::File::create(&out).unwrap();
    let start = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
        .arg(common::bin())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(ws.dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("repro {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    (
        status.success(),
        std::fs::read_to_string(&out).unwrap(),
        took,
    )
}

/// Defect 8: a 500-byte alias bomb and an 8×10 matrix (10^8 stages) fail in well under a
/// second with a clear error, inside a 1 GiB address space; the stage limit can be raised.
#[test]
fn alias_bombs_and_huge_matrices_fail_fast() {
    let mut bomb = String::from("vars:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let p = format!("*a{}", i - 1);
        bomb.push_str(&format!("  a{i}: &a{i} [{}]\n", vec![p; 10].join(",")));
    }
    bomb.push_str("stages:\n  s:\n    cmd: echo ${a8.0.0}\n");
    assert!(bomb.len() < 600, "{}", bomb.len());
    let ws = Ws::new(&bomb);
    let (ok, out, took) = bounded(&ws, &["dag"], &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("expand to more than 100000 nodes"), "{out}");
    assert!(out.contains("pipeline.yaml:"), "{out}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let axes: String = (0..8)
        .map(|i| format!("      a{i}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"))
        .collect();
    let ws = Ws::new(&format!(
        "stages:\n  big:\n    matrix:\n{axes}    cmd: echo ${{item.a0}}\n"
    ));
    let (ok, out, took) = bounded(&ws, &["run", "--dry-run"], &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("`matrix:` expands to 100000000 stages, over the limit of 100000"),
        "{out}"
    );
    assert!(
        out.contains("in stage 'big'") && out.contains("pipeline.yaml:3:5"),
        "{out}"
    );
    assert!(
        out.contains("--max-stages N or REPRO_MAX_STAGES=N"),
        "{out}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // The limit is the user's to move, by flag or environment.
    let ws = Ws::new("stages:\n  s:\n    foreach: [a, b, c]\n    cmd: echo ${item}\n");
    let (ok, out, _) = bounded(&ws, &["dag", "--max-stages", "2"], &[]);
    assert!(!ok && out.contains("over the limit of 2"), "{out}");
    let (ok, out, _) = bounded(&ws, &["dag"], &[("REPRO_MAX_STAGES", "2")]);
    assert!(!ok && out.contains("over the limit of 2"), "{out}");
    let (ok, out, _) = bounded(
        &ws,
        &["dag", "--max-stages", "3"],
        &[("REPRO_MAX_STAGES", "2")],
    );
    assert!(ok && out.contains("s@c"), "{out}");
}

/// Defect 9: a NUL byte, a duplicate key, a second document are errors naming
/// file:line:col, and nothing runs; a UTF-8 BOM is simply accepted.
#[test]
fn the_pipeline_file_is_read_exactly_or_refused() {
    const TWO: &str = "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n";
    let cases = [
        (
            format!("{TWO}\0  b:\n    cmd: echo b > b.txt\n    outs: [b.txt]\n"),
            "control character NUL",
            "pipeline.yaml:5:1",
        ),
        (
            "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n    cmd: rm -rf data\n"
                .to_string(),
            "duplicate key 'cmd' in `stages.a`",
            "pipeline.yaml:5:5",
        ),
        (
            format!("{TWO}---\nstages:\n  b:\n    cmd: echo b > b.txt\n"),
            "second YAML document",
            "pipeline.yaml:5:1",
        ),
    ];
    for (text, what, at) in cases {
        let ws = Ws::new(&text);
        let out = ws.fail(&["run"]);
        assert!(out.contains(what) && out.contains(at), "{text:?}:\n{out}");
        assert!(!ws.path("a.txt").exists(), "a stage ran:\n{out}");
    }

    let ws = Ws::new(&format!("\u{FEFF}{TWO}"));
    ws.ok(&["run"]);
    assert_eq!(ws.read("a.txt"), "a\n");
}

/// Defect 10: `--set` must name a variable that exists; a near miss suggests the right one.
#[test]
fn set_refuses_variables_that_do_not_exist() {
    let ws = Ws::new(
        "vars:\n  train: {lr: 0.1}\nstages:\n  t:\n    cmd: echo ${train.lr} > t.txt\n    outs: [t.txt]\n    params: [train.lr]\n",
    );
    let out = ws.fail(&["run", "--set", "train.lrr=0.5"]);
    assert!(out.contains("no variable `train.lrr`"), "{out}");
    assert!(out.contains("did you mean `train.lr`?"), "{out}");
    assert!(!ws.path("t.txt").exists());
    let out = ws.fail(&["status", "--set", "epochs=3"]);
    assert!(out.contains("no variable `epochs`"), "{out}");

    ws.ok(&["run", "--set", "train.lr=0.5"]);
    assert_eq!(ws.read("t.txt"), "0.5\n");
}
