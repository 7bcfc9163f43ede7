//! The racy-clean rule (issue 26, defect 2) end to end: on a file system with 1-second
//! timestamps, a dep rewritten with the same size within the same second as its last hash
//! keeps its size, mtime and ctime, and only the rule tells it apart. A seed sweep in quick
//! succession — `echo $((seed*1111)) > data.csv; repro run`, every value the same size —
//! must give each seed's own result, and `repro.lock` must record the hash the file has.
//! Before the rule, the first seed's result came back for most of the others.

mod coarse_fs;
mod common;

use std::path::Path;

use common::Ws;

const PIPELINE: &str = "stages:
  s:
    cmd: cat data.csv > result.txt
    deps: [data.csv]
    outs: [result.txt]
";

fn sweep(root: &Path) {
    let ws = Ws {
        dir: tempfile::tempdir_in(root).unwrap(),
    };
    ws.write("pipeline.yaml", PIPELINE);
    for seed in 1..=6 {
        ws.sh(&format!("echo $(({seed}*1111)) > data.csv"));
        let want = format!("{}\n", seed * 1111);
        let hash = blake3::hash(want.as_bytes()).to_hex().to_string();
        let st = ws.ok(&["status"]);
        if seed > 1 {
            assert!(st.contains("stale"), "seed {seed}: the edit is seen:\n{st}");
        }
        let out = ws.ok(&["run"]);
        assert_eq!(ws.read("result.txt"), want, "seed {seed}:\n{out}");
        assert!(
            ws.read("repro.lock").contains(&hash),
            "seed {seed}: the lock records the hash data.csv has:\n{}",
            ws.read("repro.lock")
        );
        // A no-op run right away (which may keep an up-to-date record only from stats that
        // have settled) and `status` agree.
        let out = ws.ok(&["run"]);
        assert!(out.contains("0 ran, 1 fresh"), "seed {seed}:\n{out}");
        let st = ws.ok(&["status"]);
        assert!(st.contains("1 fresh"), "seed {seed}:\n{st}");
    }
}

#[test]
fn a_seed_sweep_on_a_one_second_file_system_gives_each_seeds_result() {
    let Some(fs) = coarse_fs::CoarseFs::mount_or_skip("the 1-second seed sweep") else {
        return;
    };
    sweep(fs.path());
}

#[test]
fn a_seed_sweep_on_the_usual_file_system_gives_each_seeds_result() {
    sweep(&std::env::temp_dir());
}
