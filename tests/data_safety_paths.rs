//! Data safety, paths and ownership (issue 14): the engine writes and deletes only declared
//! outputs, checkpoints, its own cache/ and repro.lock, inside the workspace. Each test plants
//! a victim file where a careless or hostile pipeline, lock or symlink would have the engine
//! destroy it, and checks that the victim survives and the error names the path and stage.

mod common;

use std::os::unix::ffi::OsStrExt;

use common::{Ws, both};

/// A directory next to the workspace (inside one temporary parent), for victims outside it.
struct Outside {
    parent: tempfile::TempDir,
}

impl Outside {
    /// A workspace (a directory inside a temporary parent) holding `pipeline`, and the parent
    /// for victims: `../NAME` from the workspace.
    fn new(pipeline: &str) -> (Outside, Ws) {
        let parent = tempfile::tempdir().unwrap();
        let dir = tempfile::TempDir::new_in(parent.path()).unwrap();
        std::fs::write(dir.path().join("pipeline.yaml"), pipeline).unwrap();
        (Outside { parent }, Ws { dir })
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.parent.path().join(rel)
    }
}

fn assert_has(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "expected {p:?} in:\n{text}");
    }
}

// Defect 2: `checkpoint:` deleted any directory it named.
#[test]
fn checkpoint_may_not_be_a_dep_an_output_cache_or_an_unowned_directory() {
    // A dep: the user's CSVs survive, nothing runs, the error points at the line.
    let ws = Ws::new(
        "stages:\n  train:\n    cmd: cat data/a.csv > model.txt\n    deps: [data]\n    outs: [model.txt]\n    checkpoint: data\n",
    );
    ws.write("data/a.csv", "1,2\n");
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "checkpoint: 'data' overlaps 'data', a dependency",
            "pipeline.yaml:6:17",
            "in stage 'train'",
            "nothing was run",
        ],
    );
    assert_eq!(ws.read("data/a.csv"), "1,2\n");
    assert!(!ws.path("model.txt").exists());

    // The cache: a first run fills it, the bad checkpoint is refused and the cache survives.
    let ws = Ws::new("stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n");
    ws.ok(&["run"]);
    ws.write(
        "pipeline.yaml",
        "stages:\n  a:\n    cmd: echo b > a.txt\n    outs: [a.txt]\n    checkpoint: cache\n",
    );
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "checkpoint: 'cache' is the engine's cache",
            "pipeline.yaml:5:17",
            "in stage 'a'",
        ],
    );
    assert!(ws.path("cache/state.redb").exists() && ws.path("cache/objects").is_dir());

    // A checkpoint holding the stage's own output (it would be deleted after success).
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: mkdir -p work && echo a > work/o.txt\n    outs: [work/o.txt]\n    checkpoint: work\n",
    );
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "checkpoint: 'work' overlaps 'work/o.txt', an output of this stage",
            "in stage 'a'",
        ],
    );

    // An existing directory the engine did not make is left alone unless --force.
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n    checkpoint: ckpt\n",
    );
    ws.write("ckpt/precious.bin", "mine");
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "ckpt already exists and was not created by repro",
            "in stage 'a'",
            "--force a",
        ],
    );
    assert_eq!(ws.read("ckpt/precious.bin"), "mine");
    assert!(!ws.path("a.txt").exists(), "nothing may run");
    // The engine's own checkpoint directories (cache/checkpoints/...) are accepted.
    ws.write("pipeline.yaml", "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n    checkpoint: cache/checkpoints/a\n");
    ws.ok(&["run"]);
    assert_eq!(ws.read("ckpt/precious.bin"), "mine");
}

// Defect 3: built-in kinds wrote outside the workspace.
#[test]
fn built_in_kinds_write_only_declared_outputs_inside_the_workspace() {
    let (outside, ws) = Outside::new(
        "stages:\n  get:\n    uses: download\n    with: {sources: [src.txt], allow_unverified: true, out: ../victim_dir}\n    outs: [data]\n",
    );
    std::fs::create_dir_all(outside.path("victim_dir")).unwrap();
    std::fs::write(outside.path("victim_dir/keep.txt"), "keep").unwrap();
    ws.write("src.txt", "payload");
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "`with: out`",
            "points outside the workspace",
            "in stage 'get'",
            "pipeline.yaml:4:",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(outside.path("victim_dir/keep.txt")).unwrap(),
        "keep"
    );

    // Absolute `out:` of evaluate.
    let victim = outside.path("metrics.json");
    std::fs::write(&victim, "victim").unwrap();
    ws.write(
        "pipeline.yaml",
        &format!(
            "stages:\n  ev:\n    uses: evaluate\n    with: {{logits: l.safetensors, out: {}}}\n    outs: [m.json]\n",
            victim.display()
        ),
    );
    let out = ws.fail(&["run"]);
    assert_has(&out, &["`with: out`", "is absolute", "in stage 'ev'"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");

    // Inside the workspace but not a declared output.
    ws.write("notes.txt", "hand-written");
    ws.write(
        "pipeline.yaml",
        "stages:\n  ev:\n    uses: evaluate\n    with: {logits: l.safetensors, out: notes.txt}\n    outs: [m.json]\n",
    );
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "writes 'notes.txt', which is not a declared output of this stage",
            "in stage 'ev'",
        ],
    );
    assert_eq!(ws.read("notes.txt"), "hand-written");

    // import_weights (a kind added after the rule): its `out` is checked the same way.
    ws.write(
        "pipeline.yaml",
        "stages:\n  imp:\n    uses: import_weights\n    with: {arch: resnet50, input: w.pth, out: notes.txt}\n    outs: [w.safetensors]\n",
    );
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "writes 'notes.txt', which is not a declared output of this stage",
            "in stage 'imp'",
        ],
    );
    assert_eq!(ws.read("notes.txt"), "hand-written");
}

// Defect 3, recipes: a file name in a dataset recipe escaped the download's output.
#[test]
fn a_recipe_file_name_cannot_leave_the_output_directory() {
    let (outside, ws) = Outside::new(
        "stages:\n  get:\n    uses: download\n    with: {recipe: r.yaml, out: data, allow_unverified: true}\n    deps: [r.yaml]\n    outs: [data]\n",
    );
    ws.write("src.bin", "payload");
    ws.write(
        "r.yaml",
        "name: t\nlayout: idx\nclasses: 1\nsplits: {train: 1}\nfiles:\n  - {name: ../../x, sources: [src.bin], md5: null}\n",
    );
    let out = ws.fail(&["run"]);
    assert_has(&out, &["must be a plain file name", "FAILED get"]);
    assert!(!outside.path("x").exists() && !ws.path("../x").exists());
    assert!(!ws.path("data").exists());
}

// Defect 4: reserved paths and existing files the engine never produced.
#[test]
fn reserved_paths_are_refused_and_unowned_files_are_not_replaced_without_force() {
    for (out, why) in [
        ("pipeline.yaml", "a file the engine never writes"),
        ("repro.lock", "a file the engine never writes"),
        ("cache/objects", "the engine's cache"),
        (".git/config", "inside a .git directory"),
        ("stages", "a directory holding stages/vars.yaml"),
    ] {
        let ws = Ws::new(&format!(
            "vars: stages/vars.yaml\nstages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt, {out}]\n"
        ));
        ws.write("stages/vars.yaml", "x: 1\n");
        ws.write(".git/config", "[core]\n");
        let text = ws.fail(&["run"]);
        assert_has(
            &text,
            &[
                &format!("output '{out}' is {why}"),
                "pipeline.yaml:5:19",
                "in stage 'a'",
            ],
        );
        assert!(!ws.path("a.txt").exists(), "{out}: nothing may run");
        assert_eq!(ws.read("stages/vars.yaml"), "x: 1\n");
        assert_eq!(ws.read(".git/config"), "[core]\n");
    }

    // A hand-written file at an output path: named, left alone; --force takes it over.
    let ws = Ws::new("stages:\n  a:\n    cmd: echo generated > notes.txt\n    outs: [notes.txt]\n");
    ws.write("notes.txt", "my notes\n");
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "output 'notes.txt' already exists and was not produced by repro",
            "in stage 'a'",
            "pipeline.yaml:4:12",
            "repro run --force a",
        ],
    );
    assert_eq!(ws.read("notes.txt"), "my notes\n");
    ws.ok(&["run", "--force", "a"]);
    assert_eq!(ws.read("notes.txt"), "generated\n");
    // From then on the output is the engine's: a changed command replaces it without --force.
    ws.write(
        "pipeline.yaml",
        "stages:\n  a:\n    cmd: echo again > notes.txt\n    outs: [notes.txt]\n",
    );
    ws.ok(&["run"]);
    assert_eq!(ws.read("notes.txt"), "again\n");

    // What a failed run left at its outputs is the engine's too (no --force needed to retry).
    let ws = Ws::new("stages:\n  a:\n    cmd: echo partial > o.txt && exit 1\n    outs: [o.txt]\n");
    ws.fail(&["run"]);
    assert_eq!(ws.read("o.txt"), "partial\n");
    ws.write(
        "pipeline.yaml",
        "stages:\n  a:\n    cmd: echo whole > o.txt\n    outs: [o.txt]\n",
    );
    ws.ok(&["run"]);
    assert_eq!(ws.read("o.txt"), "whole\n");
}

// Defect 5: repro.lock is untrusted input.
#[test]
fn lock_file_paths_and_version_are_checked() {
    let (outside, ws) = Outside::new("stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n");
    ws.ok(&["run"]);
    let victim = outside.path("victim.txt");
    std::fs::write(&victim, "victim").unwrap();
    let hash = blake3::hash(b"victim").to_hex().to_string();
    // A removed stage whose recorded output is the victim, with its true hash and the object
    // in the cache: everything the retiring step asks for, except a path inside.
    let obj = ws.path(&format!("cache/objects/{}/{}", &hash[..2], &hash[2..]));
    std::fs::create_dir_all(obj.parent().unwrap()).unwrap();
    std::fs::write(&obj, "victim").unwrap();
    let lock = ws.read("repro.lock");
    let evil = format!(
        "{lock}  gone:\n    key: k\n    action: 'cmd: x'\n    out_hashes:\n      ../victim.txt: {hash}\n"
    );
    ws.write("repro.lock", &evil);
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "repro.lock is not a valid lock file",
            "stage 'gone'",
            "../victim.txt",
            "outside the workspace",
            "delete it",
        ],
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");

    ws.write("repro.lock", &lock.replace("version: 1", "version: 99"));
    let out = ws.fail(&["status"]);
    assert_has(
        &out,
        &[
            "repro.lock is not a valid lock file",
            "version 99",
            "delete it",
        ],
    );
}

// Defect 6: symlinks defeated confinement.
#[test]
fn symlinks_are_resolved_before_anything_is_written() {
    let (outside, ws) =
        Outside::new("stages:\n  a:\n    cmd: echo a > ext/o.txt\n    outs: [ext/o.txt]\n");
    std::fs::create_dir_all(outside.path("extdir")).unwrap();
    std::fs::write(outside.path("extdir/o.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(outside.path("extdir"), ws.path("ext")).unwrap();
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "output 'ext/o.txt' resolves through a symlink to",
            "outside the workspace",
            "in stage 'a'",
            "pipeline.yaml:4:12",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(outside.path("extdir/o.txt")).unwrap(),
        "outside"
    );

    // Two stages writing one file through an alias.
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: echo a > real/f.txt\n    outs: [real/f.txt]\n  b:\n    cmd: echo b > alias/f.txt\n    outs: [alias/f.txt]\n",
    );
    std::fs::create_dir_all(ws.path("real")).unwrap();
    std::os::unix::fs::symlink("real", ws.path("alias")).unwrap();
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &[
            "output 'alias/f.txt' is the same file as output 'real/f.txt' of stage 'a'",
            "in stage 'b'",
        ],
    );

    // A symlink into the cache is the cache.
    let ws = Ws::new("stages:\n  a:\n    cmd: echo a > c/x\n    outs: [c/objects]\n");
    std::fs::create_dir_all(ws.path("cache")).unwrap();
    std::os::unix::fs::symlink("cache", ws.path("c")).unwrap();
    let out = ws.fail(&["run"]);
    assert_has(
        &out,
        &["'c/objects' is a symlinked alias of 'cache/objects', which is the engine's cache"],
    );
}

/// Names of the odd files of the directory-output tests: a line feed, a byte that is not UTF-8.
fn odd_names() -> [&'static [u8]; 3] {
    [b"new\nline.txt", b"caf\xe9.txt", b"back\\slash.txt"]
}

// Defect 14: odd file names in output directories.
#[test]
fn output_directories_keep_odd_file_names_exactly() {
    let ws =
        Ws::new("stages:\n  a:\n    cmd: python3 make.py\n    deps: [make.py]\n    outs: [out]\n");
    ws.write(
        "make.py",
        "import os\nos.makedirs(b'out', exist_ok=True)\nfor n in [b'new\\nline.txt', b'caf\\xe9.txt', b'back\\\\slash.txt']:\n    open(b'out/' + n, 'wb').write(n)\n",
    );
    ws.ok(&["run"]);
    let status = ws.ok(&["status"]);
    assert!(status.contains("1 fresh, 0 stale"), "{status}");
    std::fs::remove_dir_all(ws.path("out")).unwrap();
    let out = ws.ok(&["run"]);
    assert_has(&out, &["restored a from cache"]);
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(ws.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    let mut want: Vec<Vec<u8>> = odd_names().iter().map(|n| n.to_vec()).collect();
    want.sort();
    assert_eq!(names, want);
    for n in odd_names() {
        let p = ws.path("out").join(std::ffi::OsStr::from_bytes(n));
        assert_eq!(std::fs::read(p).unwrap(), n);
    }
    let out = ws.ok(&["run"]);
    assert_has(&out, &["everything is up to date"]);
}

// Defect 15: an output that is a file in one configuration and a directory in another.
#[test]
fn switching_an_output_between_file_and_directory_restores_both_and_leaves_nothing() {
    let ws = Ws::new(
        "vars:\n  shape: file\nstages:\n  a:\n    cmd: if [ ${shape} = file ]; then echo f > out; else mkdir out && echo d > out/x; fi\n    outs: [out]\n",
    );
    ws.ok(&["run"]);
    ws.ok(&["run", "--set", "shape=dir"]);
    assert_eq!(ws.read("out/x"), "d\n");
    let back = ws.ok(&["run"]);
    assert_has(&back, &["restored a from cache"]);
    assert_eq!(ws.read("out"), "f\n");
    let again = ws.ok(&["run", "--set", "shape=dir"]);
    assert_has(&again, &["restored a from cache"]);
    assert!(!again.contains("cannot restore"), "{again}");
    assert_eq!(ws.read("out/x"), "d\n");
    let left: Vec<String> = std::fs::read_dir(ws.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".repro-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // Both configurations stay cached.
    assert_has(&ws.ok(&["run"]), &["restored a from cache"]);
}

// Defect 18 (part): `cache verify` and a garbage lock file.
#[test]
fn cache_verify_reports_removal_truthfully_and_a_garbage_lock_says_delete_it() {
    // A workspace path holding ": " (the old report split paths on it and removed nothing).
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("ws: one");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("pipeline.yaml"),
        "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .args(args)
            .current_dir(&root)
            .output()
            .unwrap()
    };
    assert!(run(&["run"]).status.success());
    let hash = blake3::hash(b"a\n").to_hex().to_string();
    let obj = root.join(format!("cache/objects/{}/{}", &hash[..2], &hash[2..]));
    std::fs::remove_file(&obj).unwrap();
    std::fs::write(&obj, "tampered").unwrap();
    let o = run(&["cache", "verify"]);
    let text = both(&o);
    assert_has(&text, &["corrupt:", "removed"]);
    assert!(
        !obj.exists(),
        "verify said removed but the object is still there:\n{text}"
    );

    let ws = Ws::new("stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n");
    std::fs::write(ws.path("repro.lock"), b"\xff\xfe\x00garbage").unwrap();
    let out = ws.fail(&["status"]);
    assert_has(&out, &["repro.lock is not a valid lock file", "delete it"]);
}
