//! `repro verify`: fresh stages rerun in a scratch copy under cache/verify/ (nothing in the
//! workspace touched) and their outputs compared with the recorded ones — identical, within a
//! tolerance, different (which file, which byte), or could not run (why).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::Ws;
use serde_json::Value;

/// Every file outside `cache/` (and the workspace's own stage logs) with its bytes and mtime.
fn snapshot(root: &Path) -> BTreeMap<String, (Vec<u8>, std::time::SystemTime)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, std::time::SystemTime)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            if rel == "cache" {
                walk(root, &p.join("logs"), out);
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(rel, (std::fs::read(&p).unwrap(), m.modified().unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `repro verify ARGS` in `ws`, which must exit with `code`; its stdout and stderr.
fn verify(ws: &Ws, args: &[&str], code: i32) -> String {
    let o = ws.output(&[&["verify"], args].concat());
    let text = common::both(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "repro verify {args:?}:\n{text}"
    );
    text
}

fn results(text: &str) -> Vec<Value> {
    let start = text.find('[').expect("a JSON array");
    let end = text.rfind(']').expect("a JSON array");
    serde_json::from_str(&text[start..=end]).unwrap()
}

const TWO_STAGES: &str = r#"stages:
  up:
    cmd: tr a-z A-Z < in.txt > mid.txt
    deps: [in.txt]
    outs: [mid.txt]
  down:
    cmd: mkdir -p out && rev mid.txt > out/rev.txt && wc -c < mid.txt > out/n.txt
    deps: [mid.txt]
    outs: [out]
"#;

#[test]
fn a_deterministic_stage_verifies_identical_and_the_workspace_is_untouched() {
    let ws = Ws::new(TWO_STAGES);
    ws.write("in.txt", "hello\nworld\n");
    ws.ok(&["run"]);
    let before = snapshot(ws.dir.path());
    assert!(
        before.contains_key("cache/logs/down.log"),
        "{:?}",
        before.keys()
    );
    let text = verify(&ws, &[], 0);
    assert!(text.contains("2 identical"), "{text}");
    assert_eq!(
        snapshot(ws.dir.path()),
        before,
        "verify changed the workspace"
    );
    // The scratch copies are gone; the results are kept per stage key.
    let left: Vec<_> = std::fs::read_dir(ws.path("cache/verify"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let lines = ws.read("cache/verify/results.jsonl");
    let lock = ws.read("repro.lock");
    for line in lines.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["verdict"], "identical");
        assert!(lock.contains(r["key"].as_str().unwrap()), "{r}");
        assert!(!r["environment"].as_str().unwrap().is_empty(), "{r}");
    }
    // `exp show` says what was verified; `--write` hands it to a report.
    let rows: Vec<Value> =
        serde_json::from_str(&ws.ok(&["exp", "show", "--stages", "--json"])).unwrap();
    assert!(
        rows.iter().all(|r| r["verified"] == "identical"),
        "{rows:?}"
    );
    ws.ok(&["verify", "down", "--write", "verified.json"]);
    let w: Value = serde_json::from_str(&ws.read("verified.json")).unwrap();
    let stages = w["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "{w}");
    assert!(stages.iter().any(|s| s["outs"][0] == "out"), "{w}");
}

#[test]
fn a_nondeterministic_stage_is_caught_naming_the_file_and_byte() {
    let ws = Ws::new(
        r#"stages:
  noisy:
    cmd: printf 'seed=' > noise.txt && od -An -tx1 -N16 /dev/urandom >> noise.txt && echo done > steady.txt
    outs: [noise.txt, steady.txt]
"#,
    );
    ws.ok(&["run"]);
    let o = ws.output(&["verify", "--json"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{}", common::both(&o));
    let r = results(&text);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["verdict"], "differs");
    let files = r[0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "only the noisy file differs: {files:?}");
    assert_eq!(files[0]["path"], "noise.txt");
    let byte = files[0]["byte"].as_u64().unwrap();
    assert!((5..5 + 49).contains(&byte), "{byte}");
    // The text form names it too, with where the two runs were made.
    let text = verify(&ws, &[], 1);
    assert!(
        text.contains("DIFFERS") && text.contains("noise.txt: first difference at byte"),
        "{text}"
    );
    assert!(text.contains("environment"), "{text}");
}

#[test]
fn metrics_within_tolerance_pass_only_with_tolerance() {
    // The rerun (in cache/verify/…) writes a number 1e-9 away from the recorded one.
    let ws = Ws::new(
        r#"stages:
  score:
    cmd: 'case "$PWD" in */cache/verify/*) v=0.500000001;; *) v=0.5;; esac; printf "{\"acc\": %s, \"name\": \"m\"}\n" $v > m.json'
    metrics: [m.json]
"#,
    );
    ws.ok(&["run"]);
    let text = verify(&ws, &[], 1);
    assert!(
        text.contains("metric acc in m.json: 0.5 -> 0.500000001"),
        "{text}"
    );
    let text = verify(&ws, &["--tolerance", "1e-6"], 0);
    assert!(
        text.contains("within 1e-6") && text.contains("1 within tolerance"),
        "{text}"
    );
    verify(&ws, &["--tolerance", "1e-12"], 1);
}

#[test]
fn sample_picks_deterministically_by_seed() {
    let mut yaml = String::from("stages:\n");
    for i in 0..6 {
        yaml.push_str(&format!(
            "  s{i}:\n    cmd: echo {i} > s{i}.txt\n    outs: [s{i}.txt]\n"
        ));
    }
    let ws = Ws::new(&yaml);
    ws.ok(&["run"]);
    let pick = |seed: &str| -> Vec<String> {
        let o = ws.output(&["verify", "--sample", "1", "--seed", seed, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", common::both(&o));
        results(&String::from_utf8_lossy(&o.stdout))
            .iter()
            .map(|r| r["stage"].as_str().unwrap().to_string())
            .collect()
    };
    let a = pick("7");
    assert_eq!(a.len(), 1);
    assert_eq!(pick("7"), a);
    let others: Vec<Vec<String>> = (0..8).map(|s| pick(&s.to_string())).collect();
    assert!(others.iter().any(|o| *o != a), "every seed picked {a:?}");
}

#[test]
fn a_stage_whose_dep_is_gone_from_the_cache_could_not_run() {
    let ws = Ws::new(TWO_STAGES);
    ws.write("in.txt", "abc\n");
    ws.ok(&["run"]);
    let lock: serde_yaml_ng::Value = serde_yaml_ng::from_str(&ws.read("repro.lock")).unwrap();
    let hash = lock["stages"]["up"]["out_hashes"]["mid.txt"]
        .as_str()
        .unwrap()
        .to_string();
    let obj = ws.path(&format!("cache/objects/{}/{}", &hash[..2], &hash[2..]));
    std::fs::remove_file(&obj).unwrap();
    let text = verify(&ws, &["down"], 2);
    assert!(text.contains("COULD NOT RUN"), "{text}");
    assert!(
        text.contains("dep mid.txt (an output of 'up')") && text.contains("missing"),
        "{text}"
    );
    // Only `down` was selected: its upstream is not rerun.
    assert!(text.contains("verified 1 stage"), "{text}");
}

#[test]
fn a_json_field_that_measures_the_run_is_named_and_can_be_ignored() {
    let ws = Ws::new(
        r#"stages:
  timed:
    cmd: 'printf "{\"loss\": 1.5, \"seconds\": %s}\n" "$(od -An -tu4 -N4 /dev/urandom | tr -d " ")" > t.json'
    outs: [t.json]
"#,
    );
    ws.ok(&["run"]);
    let text = verify(&ws, &[], 1);
    assert!(
        text.contains("t.json: first difference at byte")
            && text.contains("fields that differ: seconds"),
        "{text}"
    );
    let text = verify(&ws, &["--ignore", "seconds"], 0);
    assert!(
        text.contains("identical")
            && text.contains("ignored (measures the run: declared or --ignore): t.json: seconds"),
        "{text}"
    );
}

#[test]
fn a_dep_directory_holding_other_stages_outputs_is_assembled_from_the_cache() {
    // `runs` is no stage's output: it holds two stages' outputs and a source file.
    let ws = Ws::new(
        r#"stages:
  a:
    cmd: mkdir -p runs/a && echo 1 > runs/a/x.txt
    outs: [runs/a]
  b:
    cmd: echo 2 > runs/b.txt
    outs: [runs/b.txt]
  sum:
    cmd: cat runs/a/x.txt runs/b.txt runs/notes.txt > sum.txt
    deps: [runs]
    outs: [sum.txt]
"#,
    );
    ws.write("runs/notes.txt", "notes\n");
    ws.ok(&["run"]);
    let text = verify(&ws, &["sum"], 0);
    assert!(text.contains("identical        sum"), "{text}");
    // An output inside it gone from the cache: named, and the stage not run.
    let lock: serde_yaml_ng::Value = serde_yaml_ng::from_str(&ws.read("repro.lock")).unwrap();
    let hash = lock["stages"]["b"]["out_hashes"]["runs/b.txt"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(ws.path(&format!("cache/objects/{}/{}", &hash[..2], &hash[2..]))).unwrap();
    let text = verify(&ws, &["sum"], 2);
    assert!(text.contains("dep runs/b.txt (an output of 'b')"), "{text}");
}

/// A stage declares the JSON fields that measure its run (`verify: {ignore: [FILE:FIELD]}`):
/// a rerun differing only there verifies identical, and says what it ignored; the same stage
/// without the declaration differs, naming the field.
#[test]
fn a_declared_volatile_field_verifies_identical_and_an_undeclared_one_differs() {
    const STAGE: &str = r#"stages:
  timed:
    cmd: mkdir -p out && printf '{"acc":0.5,"seconds":%s}\n' "$(od -An -tu4 -N4 /dev/urandom | tr -d ' ')" > out/train.json
    outs: [out]
"#;
    let declared = STAGE.replace(
        "    outs: [out]\n",
        "    outs: [out]\n    verify: {ignore: [\"out/train.json:seconds\"]}\n",
    );
    assert_ne!(declared, STAGE);
    let ws = Ws::new(&declared);
    ws.ok(&["run"]);
    let text = verify(&ws, &[], 0);
    assert!(text.contains("1 identical"), "{text}");
    assert!(text.contains("out/train.json: seconds"), "{text}");
    let plain = Ws::new(STAGE);
    plain.ok(&["run"]);
    let text = verify(&plain, &[], 1);
    assert!(text.contains("out/train.json"), "{text}");
    assert!(text.contains("fields that differ: seconds"), "{text}");
    // A malformed declaration is a spec error at its line.
    let bad = Ws::new(&STAGE.replace(
        "    outs: [out]\n",
        "    outs: [out]\n    verify: {ignore: [seconds]}\n",
    ));
    let o = bad.output(&["status"]);
    let text = common::both(&o);
    assert_ne!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("FILE:FIELD"), "{text}");
}
