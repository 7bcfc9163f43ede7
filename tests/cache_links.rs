//! Link modes (`cache: {link: …}`), `cache: false` outputs and a cache directory shared by
//! several workspaces, end to end with the real binary.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::Ws;

/// A stage that appends to its output (as a careless script would), one that makes a
/// directory, and a param to flip between two configurations.
fn pipeline(link: &str) -> String {
    format!(
        r#"
cache: {{link: [{link}]}}
vars:
  v: one
stages:
  append:
    cmd: echo append >> executions.log && echo log-${{v}} >> log.txt
    outs: [log.txt]
  model:
    cmd: echo model >> executions.log && mkdir -p model/sub && echo ${{v}} > model/a.txt && head -c 50000 /dev/zero > model/sub/zeros.bin && echo exe > model/tool && chmod 755 model/tool
    outs: [model]
"#
    )
}

fn flip(ws: &Ws, link: &str, second: bool) {
    let text = pipeline(link);
    ws.write(
        "pipeline.yaml",
        &if second {
            text.replace("v: one", "v: two")
        } else {
            text
        },
    );
}

/// Every object file under `dir` (a cache's `objects/`).
fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for o in std::fs::read_dir(sub.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(o.path());
        }
    }
    out
}

/// The object a workspace file is a hard link of, if any.
fn object_of(objs: &Path, file: &Path) -> Option<PathBuf> {
    let m = std::fs::metadata(file).unwrap();
    objects(objs).into_iter().find(|o| {
        let om = std::fs::metadata(o).unwrap();
        (om.dev(), om.ino()) == (m.dev(), m.ino())
    })
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn stale(ws: &Ws) -> Vec<String> {
    let out = ws.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] != "fresh")
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn hardlinked_outputs_are_the_objects_read_only_and_fresh() {
    let ws = Ws::new(&pipeline("hardlink, copy"));
    ws.ok(&["run"]);
    let objs = ws.path("cache/objects");
    for f in ["log.txt", "model/a.txt", "model/sub/zeros.bin"] {
        let p = ws.path(f);
        assert_eq!(std::fs::metadata(&p).unwrap().nlink(), 2, "{f}");
        assert!(object_of(&objs, &p).is_some(), "{f} is not its object");
        assert_eq!(mode(&p), 0o444, "{f} is read-only");
    }
    // An executable cannot share the object's inode (one inode, one mode): it is a copy.
    assert_eq!(std::fs::metadata(ws.path("model/tool")).unwrap().nlink(), 1);
    assert_eq!(mode(&ws.path("model/tool")), 0o755);
    // Linked files hash as the ordinary files they stand for: nothing is stale, and a second
    // run does nothing.
    assert!(stale(&ws).is_empty(), "{:?}", stale(&ws));
    ws.clear_executions();
    ws.ok(&["run"]);
    assert!(ws.executions().is_empty());

    // Restores link too.
    flip(&ws, "hardlink, copy", true);
    ws.ok(&["run"]);
    flip(&ws, "hardlink, copy", false);
    ws.clear_executions();
    let out = ws.ok(&["run"]);
    assert!(out.contains("2 restored"), "{out}");
    assert_eq!(ws.read("model/a.txt"), "one\n");
    assert!(object_of(&objs, &ws.path("model/a.txt")).is_some());
    assert!(object_of(&objs, &ws.path("log.txt")).is_some());
    assert!(stale(&ws).is_empty());
}

/// A pull links objects it hashed on the way in without reading them again; an object that
/// was already in the cache (written by an earlier process) is still hashed when linked, so
/// damage done to it since is caught, not handed out as the output.
#[test]
fn a_corrupt_object_is_caught_when_restored_as_a_hard_link() {
    let ws = Ws::new(&pipeline("hardlink"));
    ws.ok(&["run"]);
    let objs = ws.path("cache/objects");
    let obj = object_of(&objs, &ws.path("model/a.txt")).expect("model/a.txt is its object");
    flip(&ws, "hardlink", true);
    ws.ok(&["run"]);
    // Damage the first configuration's object (same length, other bytes).
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&obj, "eno\n").unwrap();
    flip(&ws, "hardlink", false);
    ws.clear_executions();
    let out = ws.ok(&["run"]);
    assert!(
        out.contains("corrupted") && out.contains("recomputing model"),
        "{out}"
    );
    assert_eq!(ws.read("model/a.txt"), "one\n");
    assert!(ws.executions().iter().any(|e| e == "model"), "{out}");
}

#[test]
fn a_stage_appending_to_its_linked_output_never_writes_into_the_cache() {
    for link in ["hardlink", "symlink"] {
        let ws = Ws::new(&pipeline(link));
        ws.ok(&["run"]);
        assert_eq!(ws.read("log.txt"), "log-one\n");
        // The old output is a link to the object; the stage appends to the path again. (Run
        // as root, read-only bits would not stop it: the path must be replaced first.)
        flip(&ws, link, true);
        ws.ok(&["run"]);
        assert_eq!(
            ws.read("log.txt"),
            "log-two\n",
            "{link}: built on its own old output"
        );
        let v = ws.ok(&["cache", "verify"]);
        assert!(v.contains(" 0 corrupt"), "{link}: {v}");
        flip(&ws, link, false);
        ws.clear_executions();
        ws.ok(&["run"]);
        assert!(ws.executions().is_empty(), "{link}: restored, not run");
        assert_eq!(
            ws.read("log.txt"),
            "log-one\n",
            "{link}: the object stayed intact"
        );
    }
}

#[test]
fn symlinked_outputs_point_into_the_cache_and_status_sees_them_fresh() {
    let ws = Ws::new(&pipeline("symlink"));
    ws.ok(&["run"]);
    let objs = std::fs::canonicalize(ws.path("cache/objects")).unwrap();
    for f in ["log.txt", "model/a.txt"] {
        let target = std::fs::read_link(ws.path(f)).unwrap();
        assert!(target.starts_with(&objs), "{f} -> {}", target.display());
        assert_eq!(mode(&ws.path(f)), 0o444);
    }
    assert!(
        std::fs::symlink_metadata(ws.path("model/tool"))
            .unwrap()
            .is_file(),
        "an executable is copied"
    );
    assert!(stale(&ws).is_empty(), "{:?}", stale(&ws));
}

#[test]
fn an_edited_linked_output_is_seen_by_status() {
    let ws = Ws::new(&pipeline("hardlink"));
    ws.ok(&["run"]);
    assert!(stale(&ws).is_empty());
    // Editing a read-only link takes a deliberate chmod; it changes the object as well (one
    // inode), and status sees the output modified.
    std::thread::sleep(std::time::Duration::from_millis(20));
    ws.sh("chmod u+w model/a.txt && echo edited >> model/a.txt");
    assert_eq!(stale(&ws), ["model"]);
}

#[test]
fn the_environment_overrides_the_pipeline_and_the_default_is_a_copy() {
    let ws = Ws::new(&pipeline("hardlink"));
    let o = ws
        .cmd(&["run"])
        .env("REPRO_CACHE_LINK", "reflink,copy")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::both(&o));
    assert_eq!(std::fs::metadata(ws.path("log.txt")).unwrap().nlink(), 1);
    assert_eq!(mode(&ws.path("log.txt")), 0o644);

    let plain = Ws::new(&pipeline("copy").replace("cache: {link: [copy]}\n", ""));
    plain.ok(&["run"]);
    assert_eq!(std::fs::metadata(plain.path("log.txt")).unwrap().nlink(), 1);
    assert_eq!(mode(&plain.path("log.txt")), 0o644);

    let bad = ws
        .cmd(&["run"])
        .env("REPRO_CACHE_LINK", "hardlink,teleport")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(common::both(&bad).contains("teleport"));
    let ws = Ws::new(&pipeline("teleport"));
    let err = ws.fail(&["status"]);
    assert!(err.contains("unknown link mode 'teleport'"), "{err}");
}

#[test]
fn an_output_declared_cache_false_is_never_stored_and_its_stage_remakes_it() {
    let ws = Ws::new(
        r#"
vars:
  v: one
stages:
  fetch:
    cmd: echo fetch >> executions.log && echo big-${v} > big.tar && echo small-${v} > small.txt
    outs: [{path: big.tar, cache: false}, small.txt]
"#,
    );
    ws.ok(&["run"]);
    let stored: Vec<Vec<u8>> = objects(&ws.path("cache/objects"))
        .iter()
        .map(|o| std::fs::read(o).unwrap())
        .collect();
    assert!(stored.contains(&b"small-one\n".to_vec()));
    assert!(
        !stored.contains(&b"big-one\n".to_vec()),
        "big.tar was stored"
    );
    assert!(ws.ok(&["status"]).contains("fresh") || stale(&ws).is_empty());
    assert!(stale(&ws).is_empty());

    // Another configuration and back: the uncached output cannot come from the cache, so
    // the stage runs again (it is re-fetchable by declaration); nothing old was stored.
    let text = ws.read("pipeline.yaml");
    ws.write("pipeline.yaml", &text.replace("v: one", "v: two"));
    ws.ok(&["run"]);
    ws.write("pipeline.yaml", &text);
    ws.clear_executions();
    ws.ok(&["run"]);
    assert_eq!(ws.executions(), ["fetch"]);
    assert_eq!(ws.read("big.tar"), "big-one\n");
    let stored: Vec<Vec<u8>> = objects(&ws.path("cache/objects"))
        .iter()
        .map(|o| std::fs::read(o).unwrap())
        .collect();
    assert!(!stored.contains(&b"big-two\n".to_vec()));
    assert!(!stored.contains(&b"big-one\n".to_vec()));
    // With the output in place, a run-cache hit leaves it alone.
    ws.clear_executions();
    ws.ok(&["run"]);
    assert!(ws.executions().is_empty());

    // Not pushed: an entry must name every output, and this one has no object to send.
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let out = ws.ok(&["push", "--remote", &url]);
    assert!(
        out.contains("not pushed: fetch") && out.contains("cache: false"),
        "{out}"
    );
    assert!(
        !remote.path().join("ac").exists()
            || std::fs::read_dir(remote.path().join("ac"))
                .unwrap()
                .next()
                .is_none()
    );

    let bad = Ws::new("stages:\n  a:\n    cmd: 'true'\n    outs: [{path: x, cache: maybe}]\n");
    assert!(bad.fail(&["status"]).contains("true or false"));
}

/// Two workspaces on one shared cache, run at the same time: both succeed, their outputs
/// are right, the objects are stored once in the shared directory, and gc in one of them
/// removes none (naming the workspaces that use it).
#[test]
fn two_workspaces_run_concurrently_on_one_shared_cache() {
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path().display().to_string();
    let text = |who: &str| {
        format!(
            r#"
cache: {{dir: "{dir}", link: [hardlink, copy]}}
stages:
  common:
    foreach: [a, b, c, d, e, f, g, h]
    cmd: mkdir -p out && head -c 300000 /dev/zero | tr '\0' '${{item}}' > out/${{item}}.bin
    outs: ["out/${{item}}.bin"]
  own:
    cmd: echo {who} > own.txt
    outs: [own.txt]
"#
        )
    };
    let (a, b) = (Ws::new(&text("first")), Ws::new(&text("second")));
    for _ in 0..3 {
        let (pa, pb) = (a.spawn(&["run"]), b.spawn(&["run"]));
        for (mut p, w) in [(pa, &a), (pb, &b)] {
            assert!(p.wait().unwrap().success(), "{}", w.ok(&["status"]));
        }
        for w in [&a, &b] {
            assert!(stale(w).is_empty());
            assert_eq!(
                std::fs::read(w.path("out/c.bin")).unwrap(),
                vec![b'c'; 300000]
            );
            // Next round from scratch: outputs removed, restored from the shared cache.
            w.sh("rm -rf out own.txt");
        }
    }
    a.ok(&["run"]);
    b.ok(&["run"]);
    assert_eq!(a.read("own.txt"), "first\n");
    assert_eq!(b.read("own.txt"), "second\n");
    let objs = shared.path().join("objects");
    // 8 shared files + 2 own files, each once.
    assert_eq!(objects(&objs).len(), 10, "{:?}", objects(&objs));
    assert!(objects(&a.path("cache/objects")).is_empty());
    assert!(object_of(&objs, &a.path("out/a.bin")).is_some());
    assert!(
        a.ok(&["cache", "verify"])
            .contains("10 objects checked, 0 corrupt")
    );

    let gc = a.ok(&["gc"]);
    assert!(gc.contains("removed no objects"), "{gc}");
    assert!(gc.contains("2 workspaces"), "{gc}");
    assert_eq!(objects(&objs).len(), 10);
}

#[test]
fn a_shared_cache_dir_must_be_an_existing_directory() {
    let ws = Ws::new(
        "cache: {dir: /nonexistent/repro-shared}\nstages:\n  a:\n    cmd: echo a > a\n    outs: [a]\n",
    );
    let err = ws.fail(&["run"]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!Path::new("/nonexistent/repro-shared").exists());
    ws.write("file", "x");
    ws.write(
        "pipeline.yaml",
        "stages:\n  a:\n    cmd: echo a > a\n    outs: [a]\n",
    );
    let o = ws
        .cmd(&["run"])
        .env("REPRO_CACHE_DIR", ws.path("file"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(common::both(&o).contains("not a directory"));
}
