//! A remote is untrusted: a directory manifest on it that names a path outside its output,
//! in the escaped form the plain check never saw (`\x2e\x2e/…`, `\x2f…`), is refused by
//! `repro pull` and `repro run --remote` alike, and nothing outside is written.
// Needs the remote cache in the binary under test.
#![cfg(feature = "remote")]

mod common;

use std::path::Path;

use common::{Ws, both};

const PIPE: &str = r#"stages:
  gen:
    cmd: echo gen >> executions.log && mkdir -p data && echo evil > data/f.txt
    outs: [data]
"#;

fn repro(ws: &Ws, args: &[&str]) -> (bool, String) {
    let mut c = ws.cmd(args);
    c.env_remove("REPRO_REMOTE");
    let o = c.output().unwrap();
    (o.status.success(), both(&o))
}

/// Replace the one entry's directory manifest on the remote at `root` by `manifest`.
fn plant_manifest(root: &Path, manifest: &str) {
    let hash = blake3::hash(manifest.as_bytes()).to_hex().to_string();
    std::fs::write(root.join("cas").join(&hash), manifest).unwrap();
    let ac = std::fs::read_dir(root.join("ac"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
        .unwrap();
    let mut e: serde_json::Value = serde_json::from_slice(&std::fs::read(&ac).unwrap()).unwrap();
    e["outs"]["data"] = hash.into();
    e["sizes"]["data"] = manifest.len().into();
    std::fs::write(&ac, serde_json::to_vec(&e).unwrap()).unwrap();
}

#[test]
fn a_remote_manifest_naming_paths_outside_is_refused_and_writes_nothing() {
    let shared = tempfile::tempdir().unwrap();
    let root = shared.path().join("cache");
    let url = format!("file://{}", root.display());
    let a = Ws::new(PIPE);
    let (ok, out) = repro(&a, &["run"]);
    assert!(ok, "{out}");
    let (ok, out) = repro(&a, &["push", "--remote", &url]);
    assert!(ok, "{out}");
    let file = blake3::hash(b"evil\n").to_hex().to_string();
    assert!(root.join("cas").join(&file).exists());

    let outside = tempfile::tempdir().unwrap();
    let abs_victim = outside.path().join("victim.txt");
    for (manifest, victim_rel) in [
        // Relative to the restore's temporary beside `data`: the workspace's victim.txt.
        (format!("{file} xe 5 \\x2e\\x2e/victim.txt\n"), true),
        (
            format!(
                "{file} xe 5 \\x2f{}\n",
                abs_victim.display().to_string().trim_start_matches('/')
            ),
            false,
        ),
    ] {
        plant_manifest(&root, &manifest);
        for args in [
            vec!["pull", "--remote", &url],
            vec!["run", "--remote", &url],
        ] {
            let b = Ws::new(PIPE);
            let victim = if victim_rel {
                b.path("victim.txt")
            } else {
                abs_victim.clone()
            };
            std::fs::write(&victim, "mine").unwrap();
            let (ok, out) = repro(&b, &args);
            assert!(out.contains("unsafe path"), "{args:?}: {out}");
            if args[0] == "pull" {
                assert!(!ok, "pull must fail: {out}");
                assert!(!b.path("data").exists(), "{out}");
            } else {
                // run computes the stage itself.
                assert!(ok, "{out}");
                assert_eq!(b.executions(), ["gen"], "{out}");
            }
            assert_eq!(
                std::fs::read_to_string(&victim).unwrap(),
                "mine",
                "{args:?}"
            );
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&victim).unwrap().permissions(),
            );
            assert_ne!(mode & 0o777, 0o755, "{args:?}");
            // Nothing of it was recorded: a later run without the remote writes nothing either.
            let (ok, out) = repro(&b, &["run", "--no-remote"]);
            assert!(ok, "{out}");
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine");
        }
    }
    // `cache verify --remote` reports the entry (it used to find nothing wrong).
    let (ok, out) = repro(&a, &["cache", "verify", "--remote", &url]);
    assert!(
        !ok && out.contains("incomplete: ac/") && out.contains("unsafe path"),
        "{out}"
    );
}

/// Modes, an empty directory and an internal link travel through a remote as they are.
const FAITHFUL: &str = r#"stages:
  build:
    cmd: echo build >> executions.log && mkdir -p out/bin out/empty && echo 'echo tool' > out/bin/tool && chmod 755 out/bin/tool && echo s > out/private && chmod 600 out/private && ln -s bin/tool out/tool && echo 'echo single' > run.sh && chmod 700 run.sh
    outs: [out, run.sh]
"#;

#[test]
fn a_pull_restores_modes_empty_directories_and_internal_links() {
    use std::os::unix::fs::PermissionsExt;
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().join("cache").display());
    let a = Ws::new(FAITHFUL);
    let (ok, out) = repro(&a, &["run"]);
    assert!(ok, "{out}");
    let (ok, out) = repro(&a, &["push", "--remote", &url]);
    assert!(ok, "{out}");
    let b = Ws::new(FAITHFUL);
    let (ok, out) = repro(&b, &["pull", "--remote", &url]);
    assert!(ok && out.contains("1 restored (remote)"), "{out}");
    assert!(b.executions().is_empty());
    let mode = |p: &str| std::fs::metadata(b.path(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("run.sh"), 0o700);
    assert_eq!(mode("out/bin/tool"), 0o755);
    assert_eq!(mode("out/private"), 0o600);
    assert!(b.path("out/empty").is_dir());
    assert_eq!(
        std::fs::read_link(b.path("out/tool")).unwrap(),
        Path::new("bin/tool")
    );
    let (ok, out) = repro(&b, &["run", "--no-remote"]);
    assert!(ok && out.contains("up to date"), "{out}");
}
