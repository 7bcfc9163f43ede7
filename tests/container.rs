//! `container:` stages: a tiny image built here from a busybox root file system (no registry
//! is reachable), a stage run in it with the workspace at its own path, the image's digest in
//! the key; and a missing runtime as a positioned validation error.
//!
//! Needs podman (scripts/setup.sh --tests installs it) and fails, never skips, without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Ws;

fn podman() -> PathBuf {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("podman");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "podman is not installed: run scripts/setup.sh --tests (it installs podman, runc, busybox-static)"
    );
}

/// A configuration for podman that starts containers on hosts where its defaults cannot:
/// runc (crun refuses hybrid cgroup hierarchies) when installed, and low resource limits
/// (podman's defaults raise them, which needs CAP_SYS_RESOURCE).
fn containers_conf(dir: &Path) -> PathBuf {
    let limit = |flag: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("ulimit -H{flag}")])
            .output()
            .unwrap();
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // Low enough to be below any hard limit podman's process may have here (setting one
        // equal to this process's own was refused on a host without CAP_SYS_RESOURCE).
        v.parse::<u64>().map_or(4096, |n| n.min(4096))
    };
    let mut conf = format!(
        "[containers]\ndefault_ulimits = [\"nofile={n}:{n}\", \"nproc={p}:{p}\"]\n",
        n = limit("n"),
        p = limit("u"),
    );
    let runc = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("runc").is_file());
    if runc {
        conf.push_str("[engine]\nruntime = \"runc\"\n");
    }
    let path = dir.join("containers.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// A root file system of busybox and `sh`, with the mount points podman wants.
fn rootfs(dir: &Path, marker: &str) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox is not installed: run scripts/setup.sh --tests (busybox-static)");
    for d in ["bin", "dev", "proc", "sys", "etc", "run", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for tool in ["sh", "cat", "echo", "pwd"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(tool)).unwrap();
    }
    std::fs::write(dir.join("etc/marker"), marker).unwrap();
}

/// Import `dir` as the podman image `name`.
fn import(podman: &Path, conf: &Path, dir: &Path, name: &str) {
    let tar = dir.with_extension("tar");
    let ok = Command::new("tar")
        .args([
            "-C",
            dir.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = Command::new(podman)
        .env("CONTAINERS_CONF", conf)
        .args(["import", "--quiet", tar.to_str().unwrap(), name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::both(&out));
}

fn run(ws: &Ws, conf: &Path) -> String {
    let o = ws
        .cmd(&["run"])
        .env("CONTAINERS_CONF", conf)
        .env("GREETING", "hello")
        .output()
        .unwrap();
    let text = common::both(&o);
    assert!(
        o.status.success(),
        "{text}\nlog:\n{}",
        ws.read("cache/logs/inside.log")
    );
    text
}

#[test]
fn a_stage_runs_in_a_local_image_with_the_workspace_at_its_own_path() {
    let podman = podman();
    let tmp = tempfile::tempdir().unwrap();
    let conf = containers_conf(tmp.path());
    // One image name per test process, so that parallel test runs do not re-tag each other's.
    let image = format!("localhost/repro-test-busybox:{}", std::process::id());
    rootfs(&tmp.path().join("one"), "one");
    import(&podman, &conf, &tmp.path().join("one"), &image);

    let ws = Ws::new(&format!(
        r#"
stages:
  inside:
    cmd: echo inside >> executions.log; (cat /etc/marker; echo; pwd; echo "$GREETING $MODE") > out.txt
    container: {image}
    env: [GREETING, {{MODE: boxed}}]
    outs: [out.txt]
  host:
    cmd: echo host >> executions.log; cat out.txt > host.txt
    deps: [out.txt]
    outs: [host.txt]
"#
    ));
    run(&ws, &conf);
    let root = ws.dir.path().canonicalize().unwrap();
    // The marker is the image's, the working directory is the workspace's own path, the
    // declared variables reached the container.
    assert_eq!(
        ws.read("out.txt"),
        format!("one\n{}\nhello boxed\n", root.display())
    );
    assert_eq!(ws.executions(), ["host", "inside"]);
    let lock = ws.read("repro.lock");
    assert!(lock.contains("digest: sha256:"), "{lock}");

    ws.clear_executions();
    let out = run(&ws, &conf);
    assert!(out.contains("0 ran, 2 fresh"), "{out}");

    // The same name, another image: its digest changes, so the stage (and its downstream)
    // runs again, in the new image.
    rootfs(&tmp.path().join("two"), "two");
    import(&podman, &conf, &tmp.path().join("two"), &image);
    let st = ws
        .cmd(&["status"])
        .env("CONTAINERS_CONF", &conf)
        .env("GREETING", "hello")
        .output()
        .unwrap();
    assert!(
        common::both(&st).contains("container changed"),
        "{}",
        common::both(&st)
    );
    run(&ws, &conf);
    assert_eq!(ws.executions(), ["host", "inside"]);
    assert!(ws.read("out.txt").starts_with("two\n"));
    let _ = Command::new(&podman)
        .env("CONTAINERS_CONF", &conf)
        .args(["rmi", "--force", &image])
        .output();
}

#[test]
fn a_root_file_system_directory_is_an_image_keyed_by_its_content() {
    podman();
    let tmp = tempfile::tempdir().unwrap();
    let conf = containers_conf(tmp.path());
    let ws = Ws::new(
        "stages:\n  s:\n    cmd: echo s >> executions.log; cat /etc/marker > out.txt\n    container: ./rootfs\n    outs: [out.txt]\n",
    );
    rootfs(&ws.path("rootfs"), "a");
    run(&ws, &conf);
    assert_eq!(ws.read("out.txt"), "a");
    // Running left the directory as it was (an overlay took podman's writes): fresh.
    run(&ws, &conf);
    assert_eq!(ws.executions(), ["s"]);
    std::fs::write(ws.path("rootfs/etc/marker"), "b").unwrap();
    run(&ws, &conf);
    assert_eq!(ws.read("out.txt"), "b");
    assert_eq!(ws.executions(), ["s", "s"]);
}

#[test]
fn a_missing_runtime_is_a_validation_error_at_the_container_line() {
    let yaml = "stages:\n  s:\n    cmd: echo\n    container: localhost/x:1\n";
    let ws = Ws::new(yaml);
    // No runtime on PATH at all.
    let empty = tempfile::tempdir().unwrap();
    let o = ws
        .cmd(&["status"])
        .env("PATH", empty.path())
        .env_remove("REPRO_CONTAINER_RUNTIME")
        .output()
        .unwrap();
    let text = common::both(&o);
    assert!(!o.status.success(), "{text}");
    for want in [
        "pipeline.yaml:4",
        "in stage 's'",
        "no container runtime found",
        "podman, apptainer, singularity",
    ] {
        assert!(text.contains(want), "wanted {want:?} in:\n{text}");
    }
    // A runtime asked for by name that is not installed.
    let o = ws
        .cmd(&["status"])
        .env("REPRO_CONTAINER_RUNTIME", "singularity")
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let text = common::both(&o);
    assert!(
        text.contains("REPRO_CONTAINER_RUNTIME=singularity, but singularity is not on PATH"),
        "{text}"
    );
    // `container:` on a `uses:` stage is refused where it is written.
    let ws = Ws::new("stages:\n  s:\n    uses: nosuchkind\n    container: x\n");
    let text = ws.fail(&["status"]);
    assert!(
        text.contains("pipeline.yaml:4") && text.contains("only `cmd:` stages run in a container"),
        "{text}"
    );
}
