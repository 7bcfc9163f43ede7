//! End to end: Slurm job arrays for `matrix:`/`foreach:` stages, and `repro submit`.
//!
//! Needs the one-node test cluster of `scripts/slurm-up.sh` (CI starts it; locally run
//! `eval "$(scripts/slurm-up.sh)"` once). SLURM_CONF comes from the environment, else from
//! the script's default location. These tests fail, never skip, when Slurm is not up.
//! `sbatch` calls are counted by a wrapper put first on the engine's `PATH`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Ws, both, slurm_conf};

/// A workspace whose `repro` finds an `sbatch` that logs its arguments (one line per call)
/// to `sbatch.calls` before running the real one.
struct Counted {
    ws: Ws,
    shim: tempfile::TempDir,
}

impl Counted {
    fn new(pipeline: &str) -> Counted {
        let ws = Ws::new(pipeline);
        let shim = tempfile::tempdir().unwrap();
        let real = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v sbatch"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(!real.trim().is_empty(), "sbatch not on PATH");
        let calls = ws.path("sbatch.calls");
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            calls.display(),
            real.trim()
        );
        let path = shim.path().join("sbatch");
        std::fs::write(&path, script).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
        Counted { ws, shim }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.ws.cmd(args);
        let path = format!(
            "{}:{}",
            self.shim.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("SLURM_CONF", slurm_conf()).env("PATH", path);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let text = both(&o);
        assert!(o.status.success(), "repro {args:?} failed:\n{text}");
        text
    }

    /// The `sbatch` calls so far, one argument string each.
    fn sbatch_calls(&self) -> Vec<String> {
        self.ws
            .read("sbatch.calls")
            .lines()
            .map(String::from)
            .collect()
    }
}

fn squeue(args: &[&str]) -> String {
    let out = Command::new("squeue")
        .args(args)
        .env("SLURM_CONF", slurm_conf())
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every element of Slurm job (array) `id`, as `(id as Slurm prints it, state)`.
fn elements(id: &str) -> Vec<(String, String)> {
    squeue(&["-h", "-t", "all", "-o", "%i %T", "-j", id])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// 20 stages (5 × 4); each writes its array job and task id, and its start and end times,
/// into its output. `m@2,3` fails until the file `fixed` exists.
const MATRIX: &str = r#"
stages:
  m:
    matrix: {a: [0, 1, 2, 3, 4], b: [0, 1, 2, 3]}
    cmd: s=$(date +%s.%N); sleep 1; { [ "${item.a}${item.b}" != 23 ] || [ -e fixed ]; } && echo "$SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_ID $s $(date +%s.%N)" > "o${item.a}${item.b}.txt"
    outs: ["o${item.a}${item.b}.txt"]
"#;

fn outputs(ws: &Ws) -> Vec<Vec<String>> {
    let mut v = Vec::new();
    for a in 0..5 {
        for b in 0..4 {
            let text = ws.read(&format!("o{a}{b}.txt"));
            v.push(text.split_whitespace().map(String::from).collect());
        }
    }
    v
}

#[test]
fn twenty_matrix_stages_go_to_slurm_as_one_array_job() {
    let c = Counted::new(MATRIX);
    c.ws.write("fixed", "");
    let out = c.ok(&["run", "--executor", "slurm", "-j", "8"]);
    assert!(out.contains("20 ran, 0 fresh, 0 failed"), "{out}");

    // One submission, an array of 20 that Slurm runs at most 8 at a time (-j 8).
    let calls = c.sbatch_calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(calls[0].contains("--array=0-19%8"), "{}", calls[0]);

    // Each stage ran as its own element of that one array.
    let outs = outputs(&c.ws);
    let arrays: BTreeSet<&str> = outs.iter().map(|o| o[0].as_str()).collect();
    assert_eq!(arrays.len(), 1, "{outs:?}");
    let array = *arrays.first().unwrap();
    assert!(
        array.parse::<u64>().is_ok(),
        "not an array element: {outs:?}"
    );
    let tasks: BTreeSet<u32> = outs.iter().map(|o| o[1].parse().unwrap()).collect();
    assert_eq!(tasks, (0..20).collect(), "{outs:?}");
    let el = elements(array);
    assert_eq!(el.len(), 20, "{el:?}");
    assert!(el.iter().all(|(_, s)| s == "COMPLETED"), "{el:?}");

    // The %8 cap held: never more than 8 stages at once (and more than one).
    let spans: Vec<(f64, f64)> = outs
        .iter()
        .map(|o| (o[2].parse().unwrap(), o[3].parse().unwrap()))
        .collect();
    let most = spans
        .iter()
        .map(|&(s, _)| spans.iter().filter(|&&(a, b)| a <= s && s < b).count())
        .max()
        .unwrap();
    assert!((2..=8).contains(&most), "{most} at once: {spans:?}");

    // Nothing left to do, whichever executor comes next.
    let out = c.ok(&["run", "--executor", "slurm"]);
    assert!(out.contains("0 ran, 20 fresh"), "{out}");
    assert_eq!(c.sbatch_calls().len(), 1);
}

#[test]
fn a_failed_element_fails_alone_and_only_it_runs_again() {
    let c = Counted::new(MATRIX);
    let o = c.run(&["run", "--executor", "slurm"]);
    let text = both(&o);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("19 ran, 0 fresh, 1 failed"), "{text}");
    assert!(
        text.contains("FAILED m@2,3") && text.contains("NonZeroExitCode"),
        "{text}"
    );
    assert_eq!(c.sbatch_calls().len(), 1);
    // The other 19 are committed; the failed one is not, and nothing of it looks fresh.
    let status = c.ok(&["status"]);
    assert!(status.contains("19 fresh, 1 stale"), "{status}");
    assert!(!c.ws.read("repro.lock").contains("o23.txt"));

    c.ws.write("fixed", "");
    let out = c.ok(&["run", "--executor", "slurm"]);
    assert!(out.contains("1 ran, 19 fresh, 0 failed"), "{out}");
    let calls = c.sbatch_calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(
        !calls[1].contains("--array") && calls[1].contains("--job-name=repro:m@2,3"),
        "resubmitted alone: {}",
        calls[1]
    );
    let again = outputs(&c.ws);
    // m@2,3 is the 12th output; as a single job it has no array ids, only its times.
    assert_eq!(again[11].len(), 2, "{:?}", again[11]);
    assert!(c.ok(&["status"]).contains("20 fresh, 0 stale"));
}

#[test]
fn stopping_the_engine_cancels_the_whole_array() {
    let c = Counted::new(
        r#"
stages:
  hold:
    foreach: [0, 1, 2, 3, 4, 5]
    cmd: echo $$ > pid.${item}; exec sleep 600
    outs: ["never.${item}"]
"#,
    );
    // -j 2: two elements run, four wait in Slurm's queue behind the array's %2.
    let mut child = c
        .cmd(&["run", "--executor", "slurm", "-j", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let array = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the array never started"
        );
        std::thread::sleep(Duration::from_millis(200));
        let pids = (0..6)
            .filter(|i| c.ws.path(&format!("pid.{i}")).exists())
            .count();
        let jobs = squeue(&["-h", "-o", "%i %T %j", "-n", "repro:hold"]);
        if pids == 2 && jobs.contains("RUNNING") && jobs.contains("PENDING") {
            let first = jobs.split_whitespace().next().unwrap();
            break first.split('_').next().unwrap().to_string();
        }
    };
    let pids: Vec<i32> = (0..6)
        .filter_map(|i| c.ws.read(&format!("pid.{i}")).trim().parse().ok())
        .collect();

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t1.elapsed() < Duration::from_secs(90), "repro did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    // 128 + SIGTERM.
    assert_eq!(status.code(), Some(143));
    let el = elements(&array);
    assert!(!el.is_empty());
    assert!(el.iter().all(|(_, s)| s == "CANCELLED"), "{el:?}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "stage process {pid} still runs"
        );
    }
    assert_eq!(c.sbatch_calls().len(), 1);
    let status = c.ok(&["status"]);
    assert!(status.contains("0 fresh, 6 stale"), "{status}");
    assert!(!c.ws.read("repro.lock").contains("never"));
}

#[test]
fn submit_runs_the_engine_as_a_slurm_job_and_status_follows_it() {
    let c = Counted::new(
        "stages:\n  s:\n    foreach: [1, 2]\n    cmd: sleep 3; echo ${item} > s${item}.txt\n    outs: [\"s${item}.txt\"]\n",
    );
    // While a `repro run` holds the workspace (its flock on cache/run.pid), submit refuses.
    {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(c.ws.path("cache")).unwrap();
        let held = std::fs::File::create(c.ws.path("cache/run.pid")).unwrap();
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let o = c.run(&["submit"]);
        let text = both(&o);
        assert!(
            !o.status.success() && text.contains("using this workspace"),
            "{text}"
        );
        assert!(c.sbatch_calls().is_empty());
    }
    let out = c.ok(&["submit", "-j", "4"]);
    let id: u64 = out
        .split("Slurm job ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {out:?}"));
    let log: PathBuf = c.ws.path(&format!("cache/submit/{id}.log"));
    assert!(out.contains(&format!("cache/submit/{id}.log")), "{out}");

    // While it runs: a second submit is refused, and status names the job.
    let o = c.run(&["submit"]);
    let text = both(&o);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains(&format!("Slurm job {id}")), "{text}");
    let status = c.ok(&["status"]);
    assert!(
        status.contains(&format!("submitted run in progress: Slurm job {id}")),
        "{status}"
    );

    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the submitted run never ended"
        );
        let state = squeue(&["-h", "-t", "all", "-o", "%T", "-j", &id.to_string()]);
        if state == "COMPLETED" {
            break;
        }
        assert!(
            ["PENDING", "RUNNING", "COMPLETING", "CONFIGURING"].contains(&state.as_str()),
            "{state}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let text = std::fs::read_to_string(&log).expect("the submitted run's log");
    assert!(text.contains("2 ran, 0 fresh, 0 failed"), "{text}");
    assert_eq!(
        (c.ws.read("s1.txt"), c.ws.read("s2.txt")),
        ("1\n".into(), "2\n".into())
    );
    // The engine's job, then (from inside it) the stages' array; the refused second submit
    // never reached sbatch.
    let calls = c.sbatch_calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(
        calls[0].contains("--job-name=repro-submit:"),
        "{}",
        calls[0]
    );
    assert!(calls[1].contains("--array=0-1%2"), "{}", calls[1]);
    let status = c.ok(&["status"]);
    assert!(
        status.contains(&format!("last submitted run: Slurm job {id} (COMPLETED)"))
            && status.contains("2 fresh, 0 stale"),
        "{status}"
    );
}
