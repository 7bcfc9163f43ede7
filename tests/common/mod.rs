//! Helpers shared by the end-to-end tests: a temporary workspace and the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct Ws {
    pub dir: tempfile::TempDir,
}

impl Ws {
    pub fn new(pipeline: &str) -> Ws {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.yaml"), pipeline).unwrap();
        Ws { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run and expect success; returns stdout + stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.output(args);
        let text = both(&o);
        assert!(o.status.success(), "repro {args:?} failed:\n{text}");
        text
    }

    /// Run and expect failure; returns stdout + stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let o = self.output(args);
        let text = both(&o);
        assert!(
            !o.status.success(),
            "repro {args:?} should have failed:\n{text}"
        );
        text
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn sh(&self, script: &str) {
        let s = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .status()
            .unwrap();
        assert!(s.success(), "{script}");
    }

    /// Lines of `executions.log` (stages append their names to it).
    pub fn executions(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .read("executions.log")
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    }

    /// The stage names `repro status --json ARGS` lists, in its order.
    pub fn status_names(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["status", "--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap_or_else(|| panic!("not a JSON array: {out}"))
            .iter()
            .map(|s| s["stage"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn clear_executions(&self) {
        let _ = std::fs::remove_file(self.path("executions.log"));
    }
}

pub fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_repro"))
}

/// The test cluster's slurm.conf: `SLURM_CONF`, else the default of scripts/slurm-up.sh. Fails
/// (never skips) when Slurm is not up: CI must run the Slurm tests.
pub fn slurm_conf() -> String {
    if let Ok(c) = std::env::var("SLURM_CONF") {
        return c;
    }
    let dir = std::env::var("REPRO_SLURM_DIR").unwrap_or_else(|_| "/tmp/repro-slurm".into());
    let conf = Path::new(&dir).join("slurm.conf");
    assert!(
        conf.exists(),
        "Slurm is not up: SLURM_CONF is unset and {} does not exist. Start the test cluster \
         with `eval \"$(scripts/slurm-up.sh)\"` (packages: scripts/setup.sh --tests)",
        conf.display()
    );
    conf.display().to_string()
}

/// Run `cmd` to its end, but for at most `limit`: a command still running then (one that
/// would hang CI, e.g. on a FIFO) is killed and the test fails.
pub fn output_within(mut cmd: Command, limit: std::time::Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} still running after {limit:?}: killed");
        }
    }
}

/// The offset of the build id inside a binary's file: after the `NT_GNU_BUILD_ID` note's
/// header (name size 4, description size 20 — the linker's SHA-1 — type 3, "GNU\0").
pub fn build_id_offset(bytes: &[u8]) -> Option<usize> {
    let mut header = Vec::new();
    for v in [4u32, 20, 3] {
        header.extend_from_slice(&v.to_ne_bytes());
    }
    header.extend_from_slice(b"GNU\0");
    bytes
        .windows(header.len())
        .position(|w| w == header)
        .map(|i| i + header.len())
}

/// Run `cmd` (a copy of the binary this test wrote) to its end. Tests in one binary run on
/// parallel threads: a process forked by another thread while this copy was open for writing
/// holds that descriptor until it execs, and exec then fails with ETXTBSY ("Text file busy").
/// That window is short, so the exec is retried.
pub fn output_of_written_binary(cmd: &mut Command) -> Output {
    for _ in 0..500 {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            r => return r.unwrap(),
        }
    }
    panic!("{cmd:?}: still 'text file busy' after 5 s")
}
