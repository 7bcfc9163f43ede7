//! `repro status`, `repro run --dry-run` and `repro run` judge every stage by the same plan:
//! end-to-end tests with the real binary, including the case that used to split them (an
//! upstream stage reruns and rewrites its output byte for byte).

mod common;

use std::collections::BTreeMap;

use common::Ws;

/// a → b → c, a → e; `side` and `other` stand alone. `a` upper-cases its input, so `hello`
/// and `HELLO` give the same `a.txt`.
const PIPELINE: &str = r#"
stages:
  a:
    cmd: echo a >> executions.log && tr a-z A-Z < input.txt > a.txt
    deps: [input.txt]
    outs: [a.txt]
  b:
    cmd: echo b >> executions.log && cat a.txt > b.txt
    deps: [a.txt]
    outs: [b.txt]
  c:
    cmd: echo c >> executions.log && cat b.txt > c.txt
    deps: [b.txt]
    outs: [c.txt]
  side:
    cmd: echo side >> executions.log && echo s > side.txt
    outs: [side.txt]
  other:
    cmd: echo other >> executions.log && echo o > other.txt
    outs: [other.txt]
"#;

/// Added after the first run: never run, downstream of `a`.
const LATE_STAGE: &str = r#"
  e:
    cmd: echo e >> executions.log && cat a.txt > e.txt
    deps: [a.txt]
    outs: [e.txt]
"#;

/// Stage → `state` of `repro status --json` (with `+restorable` when it says so).
fn status(ws: &Ws) -> BTreeMap<String, String> {
    let v: serde_json::Value = serde_json::from_str(&ws.ok(&["status", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut state = s["state"].as_str().unwrap().to_string();
            if s["restorable"] == true {
                state.push_str("+restorable");
            }
            (s["stage"].as_str().unwrap().to_string(), state)
        })
        .collect()
}

/// Stage → verdict word of `repro run --dry-run`, in the words of `status`; stages it does
/// not list are fresh (`names` lists every stage).
fn dry_run(ws: &Ws, names: &[&str]) -> BTreeMap<String, String> {
    let out = ws.ok(&["run", "--dry-run"]);
    let mut m: BTreeMap<String, String> = names
        .iter()
        .map(|n| (n.to_string(), "fresh".to_string()))
        .collect();
    for line in out.lines() {
        for (prefix, state) in [
            ("would run ", "stale"),
            ("would restore ", "stale+restorable"),
            ("may run ", "pending"),
        ] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let name = rest.split(" (").next().unwrap();
                m.insert(name.to_string(), state.to_string());
            }
        }
    }
    m
}

/// Stage → what `repro run` did: `ran`, `restored` or `fresh`.
fn run(ws: &Ws, names: &[&str]) -> BTreeMap<String, String> {
    let out = ws.ok(&["run", "-j", "1"]);
    let mut m: BTreeMap<String, String> = names
        .iter()
        .map(|n| (n.to_string(), "fresh".to_string()))
        .collect();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("ran ") {
            m.insert(rest.split(" in ").next().unwrap().to_string(), "ran".into());
        } else if let Some(rest) = line.strip_prefix("restored ") {
            m.insert(
                rest.split(" from cache").next().unwrap().to_string(),
                "restored".into(),
            );
        }
    }
    m
}

/// What a run may do with a stage of each verdict.
fn allowed(verdict: &str) -> &'static [&'static str] {
    match verdict {
        "fresh" => &["fresh"],
        "stale" => &["ran", "restored"],
        "stale+restorable" => &["restored"],
        "pending" => &["fresh", "ran", "restored"],
        other => panic!("unknown verdict {other}"),
    }
}

fn assert_agree(ws: &Ws, names: &[&str]) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let st = status(ws);
    let dry = dry_run(ws, names);
    assert_eq!(st, dry, "status and --dry-run disagree");
    let done = run(ws, names);
    for (stage, verdict) in &st {
        assert!(
            allowed(verdict).contains(&done[stage].as_str()),
            "{stage}: status and --dry-run said {verdict}, run {}",
            done[stage]
        );
    }
    // Afterwards all three call everything fresh.
    let fresh: BTreeMap<String, String> = names
        .iter()
        .map(|n| (n.to_string(), "fresh".to_string()))
        .collect();
    assert_eq!(status(ws), fresh);
    assert_eq!(dry_run(ws, names), fresh);
    (st, done)
}

#[test]
fn status_dry_run_and_run_agree_when_an_upstream_rewrites_identical_output() {
    let ws = Ws::new(PIPELINE);
    ws.write("input.txt", "hello\n");
    ws.ok(&["run"]);
    ws.clear_executions();

    // A new input that upper-cases to the same a.txt; a stage downstream of `a` that never
    // ran; an output deleted (its stage restorable); one stage untouched.
    ws.write("input.txt", "HELLO\n");
    ws.write("pipeline.yaml", &format!("{PIPELINE}{LATE_STAGE}"));
    std::fs::remove_file(ws.path("side.txt")).unwrap();
    let names = ["a", "b", "c", "e", "other", "side"];
    let (verdicts, done) = assert_agree(&ws, &names);

    let expect = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        verdicts,
        expect(&[
            ("a", "stale"),
            ("b", "pending"),
            ("c", "pending"),
            ("e", "stale"),
            ("other", "fresh"),
            ("side", "stale+restorable"),
        ])
    );
    // `a` reran and rewrote a.txt as it was: b and c were fresh after all.
    assert_eq!(
        done,
        expect(&[
            ("a", "ran"),
            ("b", "fresh"),
            ("c", "fresh"),
            ("e", "ran"),
            ("other", "fresh"),
            ("side", "restored"),
        ])
    );
    assert_eq!(ws.executions(), ["a", "e"]);

    // Now an input that changes a.txt: the pending stages run.
    ws.clear_executions();
    ws.write("input.txt", "world\n");
    let (verdicts, done) = assert_agree(&ws, &names);
    assert_eq!(verdicts["b"], "pending");
    assert_eq!(verdicts["c"], "pending");
    assert_eq!(done["b"], "ran");
    assert_eq!(done["c"], "ran");
    assert_eq!(ws.executions(), ["a", "b", "c", "e"]);
}

#[test]
fn status_explains_a_pending_stage_by_its_upstream() {
    let ws = Ws::new(PIPELINE);
    ws.write("input.txt", "hello\n");
    ws.ok(&["run"]);
    ws.write("input.txt", "HELLO\n");
    let text = ws.ok(&["status"]);
    assert!(text.contains("- dep input.txt changed"), "{text}");
    assert!(text.contains("pending  b"), "{text}");
    assert!(text.contains("- upstream stage 'a' is stale"), "{text}");
    assert!(text.contains("- upstream stage 'b' may run"), "{text}");
    assert!(
        text.contains("5 stages: 2 fresh, 1 stale, 2 pending"),
        "{text}"
    );
    let dry = ws.ok(&["run", "--dry-run"]);
    assert!(dry.contains("may run c (after upstream b)"), "{dry}");
    assert!(
        dry.contains("dry run: 1 would run, 2 may run, 2 fresh, 0 would be restored"),
        "{dry}"
    );
}

/// Every stage gets its key as `REPRO_KEY` (the `train` kind keys its checkpoint by it).
#[test]
fn each_stage_sees_its_own_key_as_repro_key() {
    let ws = Ws::new(
        r#"
stages:
  k1:
    cmd: printf %s "$REPRO_KEY" > k1.txt
    outs: [k1.txt]
  k2:
    cmd: printf %s "$REPRO_KEY" > k2.txt
    deps: [k1.txt]
    outs: [k2.txt]
"#,
    );
    ws.ok(&["run"]);
    let lock: serde_json::Value = serde_yaml_ng::from_str(&ws.read("repro.lock")).unwrap();
    for s in ["k1", "k2"] {
        let key = lock["stages"][s]["key"].as_str().unwrap();
        assert_eq!(key.len(), 64, "{key}");
        assert_eq!(ws.read(&format!("{s}.txt")), key, "stage {s}");
    }
}
