//! Property test of the two decision paths (issue 26, "Also"): random sequences of edits
//! replayed on a workspace — content rewritten with the same size, with and without its mtime
//! put back, renames and swaps, symlink retargets, files added to and removed from a directory
//! dep and the directory replaced, vars, profile and `--set` changes, outputs edited and
//! deleted, the binary itself rewritten in place — and after each, three answers must agree: `repro status` in place (answered
//! from the up-to-date record when it holds, else through the stat cache), and `repro status`
//! in a copy of the workspace without `cache/` (every file hashed from scratch). Then `repro
//! run` must produce exactly what the inputs say, and a copy must find it all fresh.
//!
//! Edits follow each other within milliseconds, so on the 1-second file system
//! (tests/coarse_fs) most of them land in the same second as the last hash: exactly the case
//! the racy-clean rule exists for. Now and then the workspace is left to settle and a no-op run
//! keeps an up-to-date record, so the record's answer is put to the test as well. A fixed
//! number of rounds from fixed seeds: the same sequence every time.

mod coarse_fs;
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{Ws, both, build_id_offset};
use rand::{Rng, SeedableRng};

const PIPELINE: &str = "vars: [params.yaml]
profiles:
  alt: [alt.yaml]
stages:
  a:
    cmd: cat in.txt link.txt > a.txt && find data -type f | LC_ALL=C sort | xargs cat >> a.txt && echo ${msg} >> a.txt
    deps: [in.txt, link.txt, data]
    outs: [a.txt]
    params: [msg]
  b:
    cmd: mkdir -p out && cat a.txt other.txt > out/b.txt
    deps: [a.txt, other.txt]
    outs: [out/b.txt]
";

const ROUNDS: usize = 40;

/// The options of the commands: none, `--profile alt` or `--set msg=...`.
#[derive(Clone, Debug)]
enum Mode {
    Plain,
    Profile,
    Set(String),
}

impl Mode {
    fn args(&self) -> Vec<String> {
        match self {
            Mode::Plain => vec![],
            Mode::Profile => vec!["--profile".into(), "alt".into()],
            Mode::Set(v) => vec!["--set".into(), format!("msg={v}")],
        }
    }
}

struct Sim {
    ws: Ws,
    rng: rand_chacha::ChaCha8Rng,
    mode: Mode,
    log: Vec<String>,
    /// How long a stat takes to settle here, with a margin.
    granule: Duration,
    extra: usize,
    /// Rounds whose edit was made with an up-to-date record in place.
    with_record: usize,
    /// The repro binary every command runs: a copy, rewritten in place now and then.
    exe: std::path::PathBuf,
    _bin_dir: tempfile::TempDir,
}

fn with(cmd: &mut std::process::Command, args: &[String]) -> std::process::Output {
    common::output_of_written_binary(cmd.args(args))
}

impl Sim {
    fn new(root: &Path, seed: u64, granule: Duration) -> Sim {
        let ws = Ws {
            dir: tempfile::tempdir_in(root).unwrap(),
        };
        ws.write("pipeline.yaml", PIPELINE);
        ws.write("params.yaml", "msg: m000\n");
        ws.write("alt.yaml", "msg: alt0\n");
        ws.write("in.txt", "i0000\n");
        ws.write("other.txt", "o0000\n");
        ws.write("t1.txt", "t1:00\n");
        ws.write("t2.txt", "t2:00\n");
        ws.write("data/keep.txt", "keep\n");
        ws.write("data/sub/deep.txt", "d0000\n");
        std::os::unix::fs::symlink("t1.txt", ws.path("link.txt")).unwrap();
        let bin_dir = tempfile::tempdir().unwrap();
        std::fs::copy(common::bin(), bin_dir.path().join("repro")).unwrap();
        let mut sim = Sim {
            ws,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            mode: Mode::Plain,
            log: vec![format!("seed {seed}")],
            granule,
            extra: 0,
            with_record: 0,
            exe: bin_dir.path().join("repro"),
            _bin_dir: bin_dir,
        };
        sim.run();
        sim
    }

    fn history(&self) -> String {
        self.log.join("\n")
    }

    fn sh(&self, script: &str) {
        self.ws.sh(script);
    }

    /// Same size, new bytes: `tag` and a random number.
    fn rewrite(&mut self, rel: &str, tag: &str, keep_mtime: bool) {
        let n: u32 = self.rng.gen_range(0..10_000);
        let text = format!("{tag}{n:04}\n");
        if keep_mtime {
            self.sh(&format!(
                "cp -p {rel} .ref && printf '{text}' > {rel} && touch -r .ref {rel} && rm .ref"
            ));
        } else {
            self.ws.write(rel, &text);
        }
        self.log.push(format!(
            "rewrite {rel} -> {text:?} (mtime kept: {keep_mtime})"
        ));
    }

    fn edit(&mut self) {
        let keep = self.rng.gen_bool(0.5);
        match self.rng.gen_range(0..13) {
            0 => self.rewrite("in.txt", "i", keep),
            1 => self.rewrite("data/sub/deep.txt", "d", keep),
            2 => {
                if self.extra > 0 && self.rng.gen_bool(0.5) {
                    self.sh(&format!("rm data/extra{}.txt", self.extra));
                    self.log
                        .push(format!("remove data/extra{}.txt", self.extra));
                    self.extra -= 1;
                } else {
                    self.extra += 1;
                    self.ws
                        .write(&format!("data/extra{}.txt", self.extra), "e\n");
                    self.log.push(format!("add data/extra{}.txt", self.extra));
                }
            }
            3 => {
                self.sh("mv in.txt .swap && mv other.txt in.txt && mv .swap other.txt");
                self.log.push("swap in.txt and other.txt".into());
            }
            4 => {
                let to = if self.rng.gen_bool(0.5) {
                    "t1.txt"
                } else {
                    "t2.txt"
                };
                self.sh(&format!("ln -sfn {to} link.txt"));
                self.log.push(format!("link.txt -> {to}"));
            }
            5 => {
                let which = if self.rng.gen_bool(0.5) {
                    "t1.txt"
                } else {
                    "t2.txt"
                };
                let tag = &which[..3];
                self.rewrite(which, tag, keep);
            }
            6 => {
                let n: u32 = self.rng.gen_range(0..1000);
                let (file, text) = if self.rng.gen_bool(0.5) {
                    ("params.yaml", format!("msg: m{n:03}\n"))
                } else {
                    ("alt.yaml", format!("msg: a{n:03}\n"))
                };
                if keep {
                    self.sh(&format!("cp -p {file} .ref && printf '{text}' > {file} && touch -r .ref {file} && rm .ref"));
                } else {
                    self.ws.write(file, &text);
                }
                self.log
                    .push(format!("{file}: {text:?} (mtime kept: {keep})"));
            }
            7 => {
                self.mode = match self.rng.gen_range(0..3) {
                    0 => Mode::Plain,
                    1 => Mode::Profile,
                    _ => Mode::Set(format!("s{:03}", self.rng.gen_range(0..1000))),
                };
                self.log.push(format!("mode {:?}", self.mode));
            }
            8 => {
                // An output edited by hand, same size, mtime put back or not.
                let out = if self.rng.gen_bool(0.5) {
                    "a.txt"
                } else {
                    "out/b.txt"
                };
                if self.ws.path(out).exists() {
                    let script = format!(
                        "cp -p {out} .ref && sed -i '1s/^./X/' {out}{}; rm .ref",
                        if keep {
                            format!(" && touch -r .ref {out}")
                        } else {
                            String::new()
                        }
                    );
                    self.sh(&script);
                    self.log
                        .push(format!("edit output {out} (mtime kept: {keep})"));
                }
            }
            9 => {
                let out = if self.rng.gen_bool(0.5) {
                    "a.txt"
                } else {
                    "out/b.txt"
                };
                let _ = std::fs::remove_file(self.ws.path(out));
                self.log.push(format!("delete output {out}"));
            }
            10 => {
                // The directory dep replaced by a copy of itself with one file changed.
                let n: u32 = self.rng.gen_range(0..10_000);
                self.sh(&format!(
                    "cp -a data .data && printf 'd{n:04}\\n' > .data/sub/deep.txt && rm -rf data && mv .data data"
                ));
                self.log.push(format!("data/ replaced (deep.txt d{n:04})"));
            }
            11 => {
                // Another binary (another build id) written over the one in use, in place,
                // its mtime put back: same path, inode, size and mtime.
                let mut bytes = std::fs::read(&self.exe).unwrap();
                let at = build_id_offset(&bytes).expect("repro is linked with a build id");
                bytes[at] ^= 0xff;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&self.exe)
                    .unwrap();
                let mtime = f.metadata().unwrap().modified().unwrap();
                std::os::unix::fs::FileExt::write_all_at(&f, &bytes[at..at + 1], at as u64)
                    .unwrap();
                f.set_modified(mtime).unwrap();
                self.log
                    .push("binary rewritten in place (another build id)".into());
            }
            _ => {
                // Left alone past the granule, then a no-op run keeps an up-to-date record.
                std::thread::sleep(self.granule);
                self.run();
                self.log.push("settled + no-op run".into());
            }
        }
    }

    /// stage → state, from `repro status --json` in `dir`.
    fn status_in(&self, dir: &Path) -> BTreeMap<String, String> {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.current_dir(dir).args(["status", "--json"]);
        let o = with(&mut cmd, &self.mode.args());
        let text = both(&o);
        assert!(
            o.status.success(),
            "status failed:\n{text}\n{}",
            self.history()
        );
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["stage"].as_str().unwrap().to_string(),
                    s["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// `status` in a copy of the workspace without its state: every file hashed afresh.
    fn scratch_status(&self) -> BTreeMap<String, String> {
        let copy = tempfile::tempdir_in(self.ws.dir.path().parent().unwrap()).unwrap();
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg("cp -a \"$0\"/. \"$1\"/ && rm -rf \"$1\"/cache")
            .arg(self.ws.dir.path())
            .arg(copy.path())
            .status()
            .unwrap();
        assert!(o.success());
        self.status_in(copy.path())
    }

    fn run(&mut self) {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.current_dir(self.ws.dir.path())
            .arg("run")
            .stdin(std::process::Stdio::null());
        let o = with(&mut cmd, &self.mode.args());
        assert!(
            o.status.success(),
            "run failed:\n{}\n{}",
            both(&o),
            self.history()
        );
        self.log
            .push(format!("run {:?}: {}", self.mode.args(), both(&o).trim()));
    }

    /// What the outputs must hold, from the inputs as they are.
    fn expected(&self) -> (String, String) {
        let read = |rel: &str| self.ws.read(rel);
        let mut data = Vec::new();
        fn walk(dir: &Path, out: &mut Vec<(String, String)>, root: &Path) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out, root);
                } else {
                    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    out.push((rel, std::fs::read_to_string(&p).unwrap()));
                }
            }
        }
        walk(&self.ws.path("data"), &mut data, self.ws.dir.path());
        data.sort();
        let msg = match &self.mode {
            Mode::Plain => read("params.yaml")[5..].trim().to_string(),
            Mode::Profile => read("alt.yaml")[5..].trim().to_string(),
            Mode::Set(v) => v.clone(),
        };
        let mut a = read("in.txt") + &read("link.txt");
        for (_, text) in data {
            a += &text;
        }
        a += &format!("{msg}\n");
        let b = a.clone() + &read("other.txt");
        (a, b)
    }

    fn round(&mut self, i: usize) {
        if self.ws.path("cache/up-to-date").exists() {
            self.with_record += 1;
        }
        self.edit();
        let here = self.status_in(self.ws.dir.path());
        let scratch = self.scratch_status();
        assert_eq!(
            here,
            scratch,
            "round {i}: status in place and from scratch disagree\n{}",
            self.history()
        );
        self.run();
        let (a, b) = self.expected();
        assert_eq!(self.ws.read("a.txt"), a, "round {i}\n{}", self.history());
        assert_eq!(
            self.ws.read("out/b.txt"),
            b,
            "round {i}\n{}",
            self.history()
        );
        let all_fresh = |st: &BTreeMap<String, String>| st.values().all(|s| s == "fresh");
        let scratch = self.scratch_status();
        assert!(
            all_fresh(&scratch),
            "round {i}: after the run, from scratch: {scratch:?}\n{}",
            self.history()
        );
        let here = self.status_in(self.ws.dir.path());
        assert_eq!(here, scratch, "round {i}\n{}", self.history());
    }
}

fn replay(root: &Path, seed: u64, granule: Duration) {
    let mut sim = Sim::new(root, seed, granule);
    for i in 0..ROUNDS {
        sim.round(i);
    }
    // The record's answer was put to the test, not only the stat cache's.
    assert!(sim.with_record > 0, "{}", sim.history());
    eprintln!(
        "{ROUNDS} rounds, {} with an up-to-date record",
        sim.with_record
    );
}

#[test]
fn status_in_place_and_from_scratch_agree_on_a_nanosecond_file_system() {
    replay(&std::env::temp_dir(), 26, Duration::from_millis(1100));
}

#[test]
fn status_in_place_and_from_scratch_agree_on_a_one_second_file_system() {
    let Some(fs) = coarse_fs::CoarseFs::mount_or_skip("the 1-second property test") else {
        return;
    };
    replay(fs.path(), 2026, Duration::from_millis(2100));
}
