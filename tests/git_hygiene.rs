//! Declared outputs are kept out of git: `repro init` and `repro run` keep a marked block in
//! `.gitignore` listing them, never touching the user's own lines (even non-UTF-8 ones), and
//! `git check-ignore` agrees with it.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use common::Ws;

const PIPE: &str = r#"stages:
  gen:
    cmd: mkdir -p data && echo 1 > data/a.txt
    outs: [data]
  b:
    cmd: cat data/a.txt > b.txt
    deps: [data]
    outs: [b.txt]
"#;

const PIPE2: &str = r#"stages:
  gen:
    cmd: mkdir -p data && echo 1 > data/a.txt
    outs: [data]
  c:
    cmd: cat data/a.txt > "c [1].txt"
    deps: [data]
    outs: ["c [1].txt"]
"#;

fn git(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git is installed")
}

/// Whether git ignores `path` (relative to the work tree).
fn ignored(ws: &Ws, path: &str) -> bool {
    let o = git(ws.dir.path(), &["check-ignore", "-q", "--no-index", path]);
    match o.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "git check-ignore {path}: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

#[test]
fn run_keeps_a_block_of_declared_outputs_in_gitignore_and_the_users_lines() {
    let ws = Ws::new(PIPE);
    assert!(git(ws.dir.path(), &["init", "-q"]).status.success());
    let user = b"*.pyc\n# my notes\ncaf\xe9.log\n!keep.pyc".to_vec();
    std::fs::write(ws.path(".gitignore"), &user).unwrap();

    ws.ok(&["run"]);
    let text = std::fs::read(ws.path(".gitignore")).unwrap();
    assert!(
        text.starts_with(&user),
        "{}",
        String::from_utf8_lossy(&text)
    );
    let s = String::from_utf8_lossy(&text);
    assert!(s.contains("\n/b.txt\n/data\n"), "{s}");
    for p in ["data", "data/a.txt", "b.txt", "x.pyc"] {
        assert!(ignored(&ws, p), "{p} is not ignored:\n{s}");
    }
    for p in ["pipeline.yaml", "repro.lock", "keep.pyc", "c [1].txt"] {
        assert!(!ignored(&ws, p), "{p} is ignored:\n{s}");
    }

    // A no-op run does not touch the file.
    let ino = std::fs::metadata(ws.path(".gitignore")).unwrap().ino();
    ws.ok(&["run"]);
    assert_eq!(std::fs::metadata(ws.path(".gitignore")).unwrap().ino(), ino);
    assert_eq!(std::fs::read(ws.path(".gitignore")).unwrap(), text);

    // An output removed and another added: the block follows, the user's lines stay.
    ws.write("pipeline.yaml", PIPE2);
    ws.ok(&["run"]);
    let text2 = std::fs::read(ws.path(".gitignore")).unwrap();
    assert!(text2.starts_with(&user));
    let s2 = String::from_utf8_lossy(&text2);
    assert!(!s2.contains("/b.txt"), "{s2}");
    assert!(ignored(&ws, "c [1].txt"), "{s2}");
    assert!(!ignored(&ws, "b.txt"), "{s2}");
    assert!(
        !ignored(&ws, "c 1.txt"),
        "a wildcard was not escaped:\n{s2}"
    );
    assert_eq!(s2.matches("# >>> repro").count(), 1, "{s2}");
    // `git add -A` stages no output.
    assert!(git(ws.dir.path(), &["add", "-A"]).status.success());
    let staged =
        String::from_utf8_lossy(&git(ws.dir.path(), &["diff", "--cached", "--name-only"]).stdout)
            .to_string();
    assert!(
        !staged.contains("data/") && !staged.contains("c [1]"),
        "{staged}"
    );
    assert!(staged.contains("repro.lock"), "{staged}");
}

#[test]
fn init_lists_the_template_outputs_and_run_outside_git_writes_no_gitignore() {
    let d = tempfile::tempdir().unwrap();
    let ws = Ws { dir: d };
    ws.ok(&["init"]);
    assert!(git(ws.dir.path(), &["init", "-q"]).status.success());
    for p in [
        "data/numbers.txt",
        "summary.txt",
        "results/offset-1.json",
        "cache/x",
    ] {
        assert!(
            ignored(&ws, p),
            "{p} is not ignored:\n{}",
            ws.read(".gitignore")
        );
    }
    assert!(!ignored(&ws, "pipeline.yaml"));

    // Not in git and no block yet: nothing is written.
    let plain = Ws::new(PIPE);
    plain.ok(&["run"]);
    assert!(!plain.path(".gitignore").exists());
}
