//! The output cache, the run cache and crash safety, end to end with the real binary.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Ws;

const FLIP: &str = r#"
vars:
  lr: 0.1
stages:
  train:
    cmd: echo train >> executions.log && mkdir -p model && echo "lr=${lr} $(cat data.txt)" > model/weights.txt && head -c 200000 /dev/urandom > model/blob.bin
    deps: [data.txt]
    outs: [model]
  evaluate:
    cmd: echo evaluate >> executions.log && md5sum model/weights.txt model/blob.bin > score.txt
    deps: [model]
    outs: [score.txt]
"#;

/// A workspace whose FLIP pipeline has run once (lr 0.1).
fn ran_once() -> Ws {
    let ws = Ws::new(FLIP);
    ws.write("data.txt", "d1");
    ws.ok(&["run"]);
    ws
}

/// Switch the FLIP pipeline to lr 0.2 (`true`) or back to 0.1.
fn set_second_lr(ws: &Ws, second: bool) {
    let yaml = if second {
        FLIP.replace("lr: 0.1", "lr: 0.2")
    } else {
        FLIP.to_string()
    };
    ws.write("pipeline.yaml", &yaml);
}

fn snapshot(ws: &Ws) -> Vec<(String, Vec<u8>)> {
    [
        "model/weights.txt",
        "model/blob.bin",
        "score.txt",
        "repro.lock",
    ]
    .iter()
    .map(|p| (p.to_string(), std::fs::read(ws.path(p)).unwrap_or_default()))
    .collect()
}

#[test]
fn flipping_a_param_back_restores_outputs_without_running() {
    let ws = ran_once();
    let first = snapshot(&ws);
    set_second_lr(&ws, true);
    let out = ws.ok(&["run"]);
    assert!(out.contains("2 ran"), "{out}");
    assert_ne!(snapshot(&ws), first);
    ws.clear_executions();
    set_second_lr(&ws, false);
    let out = ws.ok(&["run"]);
    assert!(
        out.contains("0 ran, 0 fresh, 2 restored, 0 failed"),
        "{out}"
    );
    assert!(ws.executions().is_empty(), "nothing executed");
    assert_eq!(
        snapshot(&ws),
        first,
        "byte-identical to the first run (random blob included)"
    );
    let v = ws.ok(&["cache", "verify"]);
    assert!(v.contains(" 0 corrupt"), "{v}");
}

#[test]
fn an_output_edited_by_hand_is_kept_in_the_cache_when_a_restore_replaces_it() {
    let ws = ran_once();
    set_second_lr(&ws, true);
    ws.ok(&["run"]);
    // Edit the output by hand, then flip back: the restore replaces `model`.
    ws.write("model/weights.txt", "my hand-tuned weights");
    set_second_lr(&ws, false);
    let out = ws.ok(&["run"]);
    assert!(out.contains("2 restored"), "{out}");
    assert!(
        ws.read("model/weights.txt").starts_with("lr=0.1"),
        "the first run's weights are back"
    );
    let hash = blake3::hash(b"my hand-tuned weights").to_hex().to_string();
    assert!(
        ws.path(&format!("cache/objects/{}/{}", &hash[..2], &hash[2..]))
            .exists(),
        "the hand-edited file was saved in the cache before it was replaced"
    );
    let names: Vec<String> = std::fs::read_dir(ws.path("."))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".repro-")),
        "no temporary left: {names:?}"
    );
}

#[test]
fn a_corrupt_cache_object_is_detected_reported_and_recomputed() {
    let ws = ran_once();
    let weights = ws.read("model/weights.txt");
    let hash = blake3::hash(weights.as_bytes()).to_hex().to_string();
    set_second_lr(&ws, true);
    ws.ok(&["run"]);
    // Damage the cached copy of the first run's weights.
    let obj = ws.path(&format!("cache/objects/{}/{}", &hash[..2], &hash[2..]));
    assert!(obj.exists());
    ws.sh(&format!(
        "chmod u+w {0} && echo tampered > {0}",
        obj.display()
    ));
    set_second_lr(&ws, false);
    ws.clear_executions();
    let out = ws.ok(&["run"]);
    assert!(out.contains("corrupted"), "{out}");
    assert!(
        out.contains(&obj.display().to_string()),
        "names the object: {out}"
    );
    assert!(out.contains("2 ran"), "{out}");
    assert_eq!(ws.read("model/weights.txt"), weights);
    assert!(ws.ok(&["cache", "verify"]).contains(" 0 corrupt"));
}

#[test]
fn cache_verify_reports_damage() {
    let ws = ran_once();
    let obj = std::fs::read_dir(ws.path("cache/objects"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = std::fs::read_dir(&obj)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    ws.sh(&format!("chmod u+w {0} && printf x >> {0}", file.display()));
    let out = ws.fail(&["cache", "verify"]);
    assert!(
        out.contains("corrupt:") && out.contains(&file.display().to_string()),
        "{out}"
    );
    assert!(!file.exists(), "removed");
}

#[test]
fn gc_keeps_what_the_lock_and_kept_runs_need() {
    let ws = ran_once();
    set_second_lr(&ws, true);
    ws.ok(&["run"]);
    let out = ws.ok(&["gc", "--keep-last", "1"]);
    assert!(
        out.contains("removed") && out.contains("2 run-cache entries"),
        "{out}"
    );
    // The current outputs are still restorable after deleting them.
    std::fs::remove_dir_all(ws.path("model")).unwrap();
    let out = ws.ok(&["run"]);
    assert!(out.contains("1 restored"), "{out}");
    // The old configuration's outputs were collected: flipping back recomputes.
    set_second_lr(&ws, false);
    let out = ws.ok(&["run"]);
    assert!(out.contains("2 ran"), "{out}");
}

#[test]
fn a_stale_lock_left_by_a_dead_process_is_taken_over() {
    let ws = Ws::new("stages:\n  a:\n    cmd: echo hi > a.txt\n    outs: [a.txt]\n");
    std::fs::create_dir_all(ws.path("cache")).unwrap();
    // The pid of a process that has exited.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(ws.path("cache/run.pid"), pid.to_string()).unwrap();
    let out = ws.ok(&["run"]);
    assert!(out.contains("no longer running"), "{out}");
    assert!(out.contains("1 ran"), "{out}");
}

#[test]
fn a_stage_over_the_file_size_limit_fails_cleanly() {
    let ws = Ws::new(
        "stages:\n  big:\n    cmd: head -c 20000000 /dev/zero > big.bin\n    outs: [big.bin]\n  after:\n    cmd: wc -c big.bin > n.txt\n    deps: [big.bin]\n    outs: [n.txt]\n",
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 8000; exec {} run",
            common::bin().display()
        ))
        .current_dir(ws.dir.path())
        .output()
        .unwrap();
    let text = common::both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FAILED big"), "{text}");
    assert!(text.contains("skipped after"), "{text}");
    let st = ws.ok(&["status", "--json"]);
    assert!(
        st.contains("\"state\": \"stale\""),
        "nothing recorded as fresh: {st}"
    );
}

#[test]
fn a_full_disk_while_storing_outputs_fails_the_stage_and_corrupts_nothing() {
    let ws = Ws::new(
        "vars:\n  n: 1\nstages:\n  big:\n    cmd: head -c 2000000 /dev/urandom > big.bin && echo ${n} >> big.bin\n    outs: [big.bin]\n",
    );
    std::fs::create_dir_all(ws.path("cache")).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4500k", "tmpfs"])
        .arg(ws.path("cache"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(mounted, "this test needs to mount a small tmpfs (root)");
    let guard = Unmount(ws.path("cache"));
    ws.ok(&["run"]);
    ws.write("pipeline.yaml", "vars:\n  n: 2\nstages:\n  big:\n    cmd: head -c 2000000 /dev/urandom > big.bin && echo ${n} >> big.bin\n    outs: [big.bin]\n");
    let out = ws.fail(&["run"]);
    assert!(out.contains("no space left on device"), "{out}");
    let st = ws.ok(&["status"]);
    assert!(st.contains("stale"), "{st}");
    let v = ws.ok(&["cache", "verify"]);
    assert!(v.contains(" 0 corrupt"), "{v}");
    drop(guard);
}

struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A stage that counts to 6, one step every 0.3 s, saving each step in its checkpoint.
const RESUMABLE: &str = r#"
stages:
  count:
    cmd: |
      start=0
      if [ -f "$REPRO_CHECKPOINT/step" ]; then start=$(cat "$REPRO_CHECKPOINT/step"); echo "resuming from step $start"; fi
      i=$start
      while [ $i -lt 6 ]; do i=$((i+1)); sleep 0.3; echo $i > "$REPRO_CHECKPOINT/step"; echo "step $i" >> steps.log; done
      seq 1 6 > count.txt
    outs: [count.txt]
    checkpoint: ckpt
"#;

#[test]
fn an_interrupted_stage_resumes_from_its_checkpoint() {
    let ws = Ws::new(RESUMABLE);
    let mut child = ws.spawn(&["run"]);
    // Wait (under any machine load) until the stage has made some progress, then SIGKILL
    // the engine.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ws.read("steps.log").lines().count() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let done_before = ws.read("steps.log").lines().count();
    assert!(
        (1..6).contains(&done_before),
        "killed mid-way: {done_before} steps"
    );
    let out = ws.ok(&["run"]);
    assert!(out.contains("1 ran"), "{out}");
    let log = ws.read("cache/logs/count.log");
    assert!(log.contains("resuming from step"), "{log}");
    assert_eq!(ws.read("count.txt"), "1\n2\n3\n4\n5\n6\n");
    assert!(
        ws.read("steps.log").lines().count() < 6 + done_before,
        "did not start over"
    );
    assert!(
        !ws.path("ckpt").exists(),
        "checkpoint removed after success"
    );
}

const TORTURE: &str = r#"
vars:
  parts: [p1, p2, p3, p4]
stages:
  gen:
    foreach: ${parts}
    cmd: sleep 0.05 && for i in 1 2 3 4 5; do echo ${item}-$i >> gen/${item}.txt; sleep 0.02; done
    outs: ["gen/${item}.txt"]
  merge:
    cmd: cat gen/*.txt | sort > merged.txt && sleep 0.1 && wc -l < merged.txt > count.txt
    deps: [gen]
    outs: [merged.txt, count.txt]
  dir:
    cmd: mkdir -p tree/a tree/b && cp merged.txt tree/a/m.txt && sleep 0.05 && cp count.txt tree/b/c.txt
    deps: [merged.txt, count.txt]
    outs: [tree]
"#;

#[test]
fn killing_the_engine_at_random_moments_never_leaves_a_fresh_looking_partial_output() {
    let clean = Ws::new(TORTURE);
    clean.ok(&["run"]);

    let ws = Ws::new(TORTURE);
    // Seeded LCG for the kill delays (0–600 ms), so a failure reproduces.
    let mut seed: u64 = 0x5eed_1234;
    for round in 0..24 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = (seed >> 33) % 600;
        let mut child = ws.spawn(&["run", "-j", "2"]);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        child.wait().unwrap();
        // Whatever state it left, status must never call a stage fresh whose outputs differ
        // from what a clean run produces.
        let st: serde_json::Value = serde_json::from_str(&ws.ok(&["status", "--json"])).unwrap();
        for s in st.as_array().unwrap() {
            if s["state"] == "fresh" {
                let name = s["stage"].as_str().unwrap();
                for out in outputs_of(name) {
                    assert_eq!(
                        std::fs::read(ws.path(&out)).ok(),
                        std::fs::read(clean.path(&out)).ok(),
                        "round {round} (kill after {delay} ms): {name} looks fresh but {out} differs"
                    );
                }
            }
        }
    }
    let out = ws.ok(&["run"]);
    assert!(out.contains("0 failed"), "{out}");
    for f in [
        "gen/p1.txt",
        "gen/p4.txt",
        "merged.txt",
        "count.txt",
        "tree/a/m.txt",
        "tree/b/c.txt",
        "repro.lock",
    ] {
        assert_eq!(
            std::fs::read(ws.path(f)).ok(),
            std::fs::read(clean.path(f)).ok(),
            "{f}"
        );
    }
    assert!(ws.ok(&["cache", "verify"]).contains(" 0 corrupt"));
    assert!(ws.ok(&["run"]).contains("0 ran, 6 fresh"));
}

fn outputs_of(stage: &str) -> Vec<String> {
    match stage {
        "merge" => vec!["merged.txt".into(), "count.txt".into()],
        "dir" => vec!["tree/a/m.txt".into(), "tree/b/c.txt".into()],
        s => vec![format!("gen/{}.txt", s.trim_start_matches("gen@"))],
    }
}

/// A stage whose outputs carry modes, an empty directory and an internal link; a downstream
/// stage runs what it made.
const FAITHFUL: &str = r#"
vars:
  v: 1
  w: 1
stages:
  build:
    cmd: echo build >> executions.log && mkdir -p out/bin out/empty/inner && echo 'echo tool-${v}' > out/bin/tool && chmod 755 out/bin/tool && echo secret > out/private && chmod 600 out/private && ln -s bin/tool out/tool && echo 'echo single-${v}' > run.sh && chmod 700 run.sh
    outs: [out, run.sh]
  use:
    cmd: echo use >> executions.log && ./run.sh > used.txt && out/tool >> used.txt && echo w=${w} >> used.txt
    deps: [out, run.sh]
    outs: [used.txt]
"#;

#[test]
fn restores_keep_modes_empty_directories_and_internal_links() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Ws::new(FAITHFUL);
    ws.ok(&["run"]);
    let mode = |p: &str| std::fs::metadata(ws.path(p)).unwrap().permissions().mode() & 0o777;
    let check = |ws: &Ws, when: &str| {
        assert_eq!(mode("run.sh"), 0o700, "{when}: single-file output");
        assert_eq!(mode("out/bin/tool"), 0o755, "{when}");
        assert_eq!(mode("out/private"), 0o600, "{when}");
        assert!(ws.path("out/empty/inner").is_dir(), "{when}: empty dir");
        let link = std::fs::symlink_metadata(ws.path("out/tool")).unwrap();
        assert!(
            link.file_type().is_symlink(),
            "{when}: link came back a copy"
        );
        assert_eq!(
            std::fs::read_link(ws.path("out/tool")).unwrap(),
            std::path::Path::new("bin/tool"),
            "{when}"
        );
    };
    check(&ws, "as made");

    // Another configuration, then back: both stages come from the cache.
    ws.write("pipeline.yaml", &FAITHFUL.replace("v: 1", "v: 2"));
    let out = ws.ok(&["run"]);
    assert!(out.contains("2 ran"), "{out}");
    ws.write("pipeline.yaml", FAITHFUL);
    ws.clear_executions();
    let out = ws.ok(&["run"]);
    assert!(out.contains("2 restored"), "{out}");
    assert!(ws.executions().is_empty());
    check(&ws, "restored after a switch");
    assert_eq!(ws.read("used.txt"), "single-1\ntool-1\nw=1\n");

    // Outputs deleted and a new downstream configuration: `build` is restored, and `use`
    // runs the restored executables.
    std::fs::remove_dir_all(ws.path("out")).unwrap();
    std::fs::remove_file(ws.path("run.sh")).unwrap();
    ws.write("pipeline.yaml", &FAITHFUL.replace("w: 1", "w: 2"));
    let out = ws.ok(&["run"]);
    assert!(out.contains("1 ran") && out.contains("1 restored"), "{out}");
    assert_eq!(ws.executions(), ["use"], "{out}");
    check(&ws, "restored after deletion");
    assert_eq!(ws.read("used.txt"), "single-1\ntool-1\nw=2\n");
    let out = ws.ok(&["run"]);
    assert!(out.contains("up to date"), "{out}");
}

/// A link inside an output directory that leads out of the workspace would copy outside bytes
/// (a secret) into the cache and on to a remote: the stage fails naming it, nothing is stored,
/// the link is removed, and the workspace stays usable.
#[test]
fn a_link_out_of_the_workspace_inside_an_output_directory_fails_the_stage() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, "top secret bytes").unwrap();
    let pipe = format!(
        "stages:\n  s:\n    cmd: mkdir -p out && echo a > out/a && ln -s {} out/key\n    outs: [out]\n",
        secret.display()
    );
    let ws = Ws::new(&pipe);
    let out = ws.fail(&["run"]);
    assert!(
        out.contains("out/key") && out.contains("outside the workspace"),
        "{out}"
    );
    let hash = blake3::hash(b"top secret bytes").to_hex().to_string();
    assert!(
        !ws.path(&format!("cache/objects/{}/{}", &hash[..2], &hash[2..]))
            .exists(),
        "the secret was copied into the cache"
    );
    assert!(std::fs::symlink_metadata(ws.path("out/key")).is_err());
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "top secret bytes"
    );
    ws.ok(&["status"]);
}
