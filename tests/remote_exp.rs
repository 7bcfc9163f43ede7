//! Experiments shared through the remote (issue 27, item 3): workspace A runs two
//! configurations and `push --all`es them; workspace B, a fresh copy of the pipeline with an
//! empty cache, `pull --exp`s the first by its id (or a name) and holds exactly A's outputs and
//! lock of that configuration without running a stage. Hostile records and entries on the
//! remote are refused with the reason and change nothing in B. Running an old configuration
//! again records no second row.
// Needs the remote cache in the binary under test.
#![cfg(feature = "remote")]

mod common;
#[path = "common/remote.rs"]
mod servers;

use std::path::Path;

use common::Ws;
use serde_json::Value;
use servers::{create_bucket, fail, moto, ok};

/// Two configurations of one pipeline: `scale` feeds `gen` (a directory), which `sum` reads.
const SWEEP: &str = r#"vars:
  scale: 2
stages:
  gen:
    cmd: echo gen >> executions.log && mkdir -p out && echo ${scale} > out/v.txt && seq 1 ${scale}000 > out/n.txt && head -c 2000 /dev/urandom > out/noise.bin
    params: [scale]
    outs: [out]
  sum:
    cmd: echo sum >> executions.log && wc -l < out/n.txt > total.txt && head -c 100 /dev/urandom | od -x | head -2 >> total.txt
    deps: [out]
    outs: [total.txt]
"#;

/// Every file of the outputs and the lock, with its bytes (random bytes in each output make
/// a recomputation differ from a restore).
fn snapshot(ws: &Ws) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, p: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        } else if p.exists() {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, std::fs::read(p).unwrap()));
        }
    }
    let mut out = Vec::new();
    for o in ["out", "total.txt", "repro.lock"] {
        walk(ws.dir.path(), &ws.path(o), &mut out);
    }
    out.sort();
    out
}

fn exp_rows(ws: &Ws) -> Vec<Value> {
    let text = ok(ws, &[], &["exp", "show", "--json"]);
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(Value::Array(rows)) => rows,
        _ => panic!("not a JSON array: {text}"),
    }
}

/// A runs scale=3 (named `three`), then scale=5; returns A, the two ids (in that order) and
/// A's outputs and lock right after the first run.
fn two_configurations(env: &[(&str, String)]) -> (Ws, String, String, Vec<(String, Vec<u8>)>) {
    let a = Ws::new(SWEEP);
    ok(
        &a,
        env,
        &["run", "--no-remote", "--set", "scale=3", "--name", "three"],
    );
    let first = snapshot(&a);
    ok(&a, env, &["run", "--no-remote", "--set", "scale=5"]);
    let rows = exp_rows(&a);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let id = |i: usize| rows[i]["id"].as_str().unwrap().to_string();
    (a, id(1), id(0), first)
}

/// B pulls `what` and holds exactly `first` (outputs and lock), with nothing run.
fn pull_and_compare(
    b: &Ws,
    env: &[(&str, String)],
    url: &str,
    what: &str,
    id: &str,
    first: &[(String, Vec<u8>)],
) {
    let out = ok(b, env, &["pull", "--remote", url, "--exp", what]);
    assert!(
        out.contains(&format!("fetched 2 stages of experiment {id}"))
            && out.contains("restored experiment")
            && out.contains("it ran as: repro run --set scale=3"),
        "{out}"
    );
    assert_eq!(
        snapshot(b),
        first,
        "B holds A's first configuration, byte for byte"
    );
    assert!(b.executions().is_empty(), "B executed {:?}", b.executions());
    // The lock agrees with the workspace: with that run's params every stage is fresh.
    let st = ok(b, env, &["status", "--json", "--set", "scale=3"]);
    let st: Value = serde_json::from_str(st.trim()).unwrap();
    assert!(
        st.as_array().unwrap().iter().all(|s| s["state"] == "fresh"),
        "{st}"
    );
    // The experiment is recorded here under the same id, with its params (from the checked
    // fingerprints), and is what the workspace holds.
    let rows = exp_rows(b);
    let row = rows.iter().find(|r| r["id"] == id).expect("recorded in B");
    assert_eq!(row["current"], true, "{row}");
    assert_eq!(row["params"]["scale"], 3, "{row}");
    assert_eq!(row["name"], "three", "{row}");
}

#[test]
fn pull_exp_brings_a_colleagues_configuration_without_running_it() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().join("cache").display());
    let (a, first_id, second_id, first) = two_configurations(&[]);

    // A plain push (loading the pipeline as the last run did, so that its stages are fresh)
    // sends what the lock records and that experiment's record only.
    let out = ok(&a, &[], &["push", "--remote", &url, "--set", "scale=5"]);
    assert!(
        out.contains("pushed 2 stages") && out.contains("pushed 1 experiment record,"),
        "{out}"
    );
    assert!(
        shared
            .path()
            .join(format!("cache/exp/{second_id}"))
            .exists()
    );
    assert!(!shared.path().join(format!("cache/exp/{first_id}")).exists());
    let out = ok(&a, &[], &["push", "--all", "--remote", &url]);
    assert!(
        out.contains("pushed 2 stages") && out.contains("pushed 1 experiment record, 1 already"),
        "{out}"
    );
    let out = ok(&a, &[], &["push", "--all", "--remote", &url]);
    assert!(
        out.contains("pushed 0 experiment records, 2 already"),
        "{out}"
    );

    // By id.
    let b = Ws::new(SWEEP);
    pull_and_compare(&b, &[], &url, &first_id, &first_id, &first);
    // A later run with those params finds everything fresh and records nothing new.
    let out = ok(&b, &[], &["run", "--no-remote", "--set", "scale=3"]);
    assert!(out.contains("0 ran"), "{out}");
    assert_eq!(exp_rows(&b).len(), 1);

    // By name (a listing of exp/ on the remote), and by a prefix of the id.
    let c = Ws::new(SWEEP);
    pull_and_compare(&c, &[], &url, "three", &first_id, &first);
    let d = Ws::new(SWEEP);
    pull_and_compare(&d, &[], &url, &first_id[..5], &first_id, &first);

    // --no-apply: into the cache only; the workspace is untouched, and `exp apply` later
    // needs no remote.
    let e = Ws::new(SWEEP);
    let out = ok(
        &e,
        &[],
        &["pull", "--remote", &url, "--exp", &first_id, "--no-apply"],
    );
    assert!(out.contains("the workspace is unchanged"), "{out}");
    assert!(snapshot(&e).is_empty(), "{:?}", snapshot(&e));
    ok(&e, &[], &["exp", "apply", &first_id]);
    assert_eq!(snapshot(&e), first);

    // A name nobody recorded.
    let out = fail(&e, &[], &["pull", "--remote", &url, "--exp", "nobody"]);
    assert!(out.contains("no experiment 'nobody'"), "{out}");

    // Someone else's experiment under the same id (other keys) is never overwritten.
    let theirs = shared.path().join(format!("cache/exp/{first_id}"));
    let mut v: Value = serde_json::from_slice(&std::fs::read(&theirs).unwrap()).unwrap();
    let gen_fp = v["fingerprints"]["gen"].clone();
    v["experiment"]["stages"]["other"] = v["experiment"]["stages"]["gen"].clone();
    v["fingerprints"]["other"] = gen_fp;
    let planted = serde_json::to_vec_pretty(&v).unwrap();
    std::fs::write(&theirs, &planted).unwrap();
    let out = ok(&a, &[], &["push", "--all", "--remote", &url]);
    assert!(
        out.contains(&format!("not pushed: experiment {first_id}"))
            && out.contains("not overwritten"),
        "{out}"
    );
    assert_eq!(std::fs::read(&theirs).unwrap(), planted);
}

/// Read, change and write back a JSON file on the remote.
fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn hostile_records_and_entries_are_refused_and_change_nothing() {
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("cache");
    let url = format!("file://{}", remote.display());
    let (a, first_id, _, first) = two_configurations(&[]);
    ok(&a, &[], &["push", "--all", "--remote", &url]);
    let good = std::fs::read(remote.join(format!("exp/{first_id}"))).unwrap();
    let record: Value = serde_json::from_slice(&good).unwrap();
    let key = |stage: &str| {
        record["experiment"]["stages"][stage]
            .as_str()
            .unwrap()
            .to_string()
    };

    // B holds another configuration of its own; no refusal may touch it.
    let b = Ws::new(SWEEP);
    ok(&b, &[], &["run", "--no-remote", "--set", "scale=4"]);
    let before = snapshot(&b);
    let rows_before = exp_rows(&b);
    let refused = |id: &str, expect: &[&str]| {
        let out = fail(&b, &[], &["pull", "--remote", &url, "--exp", id]);
        for e in expect {
            assert!(out.contains(e), "expected {e:?} in:\n{out}");
        }
        assert_eq!(snapshot(&b), before, "B's workspace changed after:\n{out}");
        assert_eq!(
            exp_rows(&b),
            rows_before,
            "B recorded something after:\n{out}"
        );
        assert!(b.executions().len() == 2, "{:?}", b.executions());
    };
    let plant = |id: &str, f: &dyn Fn(&mut Value)| {
        let mut v = record.clone();
        f(&mut v);
        std::fs::write(
            remote.join(format!("exp/{id}")),
            serde_json::to_vec(&v).unwrap(),
        )
        .unwrap();
    };

    // The id inside is not the one the path names.
    plant("0000aaaa", &|_| {});
    refused(
        "0000aaaa",
        &["exp/0000aaaa", "unusable", "not the one it is stored under"],
    );
    // A key that is not a hash: a path, then hex of the wrong length.
    plant("0000bbbb", &|v| {
        v["experiment"]["id"] = "0000bbbb".into();
        v["experiment"]["stages"]["gen"] = "../../../etc/passwd".into();
    });
    refused("0000bbbb", &["stage 'gen'", "not a hex key"]);
    plant("0000cccc", &|v| {
        v["experiment"]["id"] = "0000cccc".into();
        v["experiment"]["stages"]["gen"] = "abcdef".into();
    });
    refused("0000cccc", &["stage 'gen'", "not a blake3 hash"]);
    // A stage this pipeline does not have (its fingerprint checks: gen's, under another name).
    plant("0000dddd", &|v| {
        v["experiment"]["id"] = "0000dddd".into();
        v["experiment"]["stages"]["evil"] = key("gen").into();
        v["fingerprints"]["evil"] = v["fingerprints"]["gen"].clone();
    });
    refused(
        "0000dddd",
        &["stage 'evil' is not in", "nothing was changed"],
    );
    // A fingerprint that does not hash to its key (it would write a lying lock entry).
    plant("0000eeee", &|v| {
        v["experiment"]["id"] = "0000eeee".into();
        v["fingerprints"]["gen"]["action"] = "cmd: rm -rf /".into();
    });
    refused(
        "0000eeee",
        &["fingerprint of stage 'gen' does not hash to its key"],
    );
    // Over the size cap: refused before it is parsed.
    std::fs::write(remote.join("exp/0000ffff"), vec![b' '; (16 << 20) + 1]).unwrap();
    refused("0000ffff", &["exp/0000ffff", "too large"]);
    // A name whose record would print a terminal escape is skipped, not chosen.
    plant("00001111", &|v| {
        v["experiment"]["id"] = "00001111".into();
        v["experiment"]["name"] = "\u{1b}[2Jx".into();
    });
    refused("\u{1b}[2Jx", &["no experiment"]);

    // The record is fine, but an entry names a path the stage does not declare.
    let ac_gen = remote.join(format!("ac/{}", key("gen")));
    let entry = std::fs::read(&ac_gen).unwrap();
    edit_json(&ac_gen, |v| {
        let h = v["outs"]["out"].clone();
        v["outs"]["../outside.txt"] = h;
    });
    refused(&first_id, &["stage 'gen'", "ac/", "declares"]);
    assert!(!b.dir.path().join("../outside.txt").exists());
    std::fs::write(&ac_gen, &entry).unwrap();
    // A directory manifest (hashing to its name, so it is fetched) that names a path outside
    // its directory.
    let manifest = format!("{} - 3 ../escape.txt\n", "ab".repeat(32));
    let m_hash = blake3::hash(manifest.as_bytes()).to_hex().to_string();
    std::fs::write(remote.join(format!("cas/{m_hash}")), &manifest).unwrap();
    edit_json(&ac_gen, |v| {
        v["outs"]["out"] = m_hash.clone().into();
        v["sizes"]["out"] = manifest.len().into();
    });
    refused(&first_id, &["stage 'gen'", "remote manifest of out"]);
    assert!(!b.dir.path().join("escape.txt").exists());
    std::fs::write(&ac_gen, &entry).unwrap();
    // An entry missing from the remote, and an object missing: each names its stage.
    let ac_sum = remote.join(format!("ac/{}", key("sum")));
    let sum_entry = std::fs::read(&ac_sum).unwrap();
    std::fs::remove_file(&ac_sum).unwrap();
    refused(
        &first_id,
        &["stage 'sum': the remote has no run-cache entry"],
    );
    std::fs::write(&ac_sum, &sum_entry).unwrap();
    // An object missing (one no refused pull above fetched: a file of gen's directory, whose
    // real manifest never came down).
    let gen_entry: Value = serde_json::from_slice(&entry).unwrap();
    let listing = std::fs::read_to_string(remote.join(format!(
        "cas/{}",
        gen_entry["outs"]["out"].as_str().unwrap()
    )))
    .unwrap();
    let noise = listing
        .lines()
        .find(|l| l.ends_with(" noise.bin"))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no noise.bin in {listing}"));
    let object_path = remote.join(format!("cas/{noise}"));
    let object = std::fs::read(&object_path).unwrap();
    std::fs::remove_file(&object_path).unwrap();
    refused(&first_id, &["stage 'gen'", "is missing from"]);
    std::fs::write(&object_path, &object).unwrap();

    // With the remote repaired, the same pull succeeds.
    let out = ok(&b, &[], &["pull", "--remote", &url, "--exp", &first_id]);
    assert!(out.contains("restored experiment"), "{out}");
    assert_eq!(snapshot(&b), first);
}

/// Running an old configuration again makes no second row: that experiment is current again,
/// moved to the top with this run's time (and a name given now).
#[test]
fn running_an_old_configuration_again_records_no_duplicate_row() {
    let (a, first_id, second_id, first) = two_configurations(&[]);
    let created = |id: &str| {
        let rows = exp_rows(&a);
        let r = rows.iter().find(|r| r["id"] == id).unwrap().clone();
        r["created"].as_u64().unwrap()
    };
    let before = created(&first_id);
    ok(
        &a,
        &[],
        &["run", "--no-remote", "--set", "scale=3", "--name", "again"],
    );
    assert_eq!(snapshot(&a), first, "restored from the local run cache");
    let rows = exp_rows(&a);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["id"], first_id.as_str());
    assert_eq!(rows[0]["current"], true);
    assert_eq!(rows[0]["name"], "again");
    assert!(created(&first_id) > before);
    assert_eq!(rows[1]["id"], second_id.as_str());
    assert_eq!(rows[1]["current"], false);
    // And back to the second: still two rows.
    ok(&a, &[], &["run", "--no-remote", "--set", "scale=5"]);
    let rows = exp_rows(&a);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["id"], second_id.as_str());
    // A new configuration is a new row.
    ok(&a, &[], &["run", "--no-remote", "--set", "scale=6"]);
    assert_eq!(exp_rows(&a).len(), 3);
}

// ---------------------------------------------------------------------------------------
// S3 (moto): the same sharing, with a name looked up through a listing of exp/.

#[test]
fn s3_push_all_then_pull_exp_by_name() {
    let Some((_server, port)) = moto() else {
        return;
    };
    create_bucket(port, "lab");
    let env = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
    ];
    let url = "s3://lab/team/repro";
    let (a, first_id, _, first) = two_configurations(&env);
    let out = ok(&a, &env, &["push", "--all", "--remote", url]);
    assert!(out.contains("pushed 2 experiment records"), "{out}");
    let b = Ws::new(SWEEP);
    pull_and_compare(&b, &env, url, "three", &first_id, &first);
}
