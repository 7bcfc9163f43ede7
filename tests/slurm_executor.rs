//! The Slurm executor against a real Slurm, through the `Executor` trait only.
//!
//! Needs the one-node test cluster of `scripts/slurm-up.sh` (CI starts it; locally run
//! `eval "$(scripts/slurm-up.sh)"` once). SLURM_CONF comes from the environment, else from
//! the script's default location. These tests fail, never skip, when Slurm is not up.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::slurm_conf;
use repro_engine::executor::slurm::{ExitStatus, SlurmExecutor, SlurmOptions, sacct};
use repro_engine::executor::{Event, Executor, Job, JobId, Outcome, Resources};

fn options() -> SlurmOptions {
    SlurmOptions {
        poll_interval: Duration::from_millis(300),
        client_env: vec![("SLURM_CONF".into(), slurm_conf())],
        ..Default::default()
    }
}

fn executor_with(opts: SlurmOptions) -> SlurmExecutor {
    SlurmExecutor::new(opts).unwrap_or_else(|e| {
        panic!("Slurm is not up ({e:#}); start it with `eval \"$(scripts/slurm-up.sh)\"`")
    })
}

fn sh_job(id: JobId, stage: &str, ws: &Path, script: &str, resources: Resources) -> Job {
    Job {
        id,
        stage: stage.to_string(),
        argv: vec!["sh".into(), "-c".into(), script.to_string()],
        env: vec![],
        cwd: ws.to_path_buf(),
        log: ws.join("logs").join(format!("{stage}.log")),
        resources: Resources {
            cpus: resources.cpus.max(1),
            ..resources
        },
        gpus: vec![],
        usage: None,
    }
}

/// Poll until `n` jobs have finished; returns their outcomes and every progress message.
fn wait_all(
    ex: &mut SlurmExecutor,
    n: usize,
    limit: Duration,
) -> (HashMap<JobId, Outcome>, Vec<(JobId, String)>) {
    let start = Instant::now();
    let (mut done, mut progress) = (HashMap::new(), Vec::new());
    while done.len() < n {
        assert!(
            start.elapsed() < limit,
            "jobs not finished after {limit:?}: {done:?}"
        );
        for ev in ex.poll(Duration::from_millis(500)).expect("poll") {
            match ev {
                Event::Finished { id, outcome } => {
                    done.insert(id, outcome);
                }
                Event::Progress { id, message, .. } => progress.push((id, message)),
            }
        }
    }
    assert_eq!(ex.running(), 0);
    (done, progress)
}

fn squeue_state(id: u64) -> String {
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%T", "-j", &id.to_string()])
        .env("SLURM_CONF", slurm_conf())
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The Slurm job id the failing job of `runs_stages_…` printed into its log.
fn failed_slurm_id(ws: &tempfile::TempDir) -> u64 {
    let log = fs::read_to_string(ws.path().join("logs/fail.log")).unwrap();
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("job "))
        .expect("job id in the log");
    line.trim().parse().unwrap()
}

#[test]
fn runs_stages_and_reports_success_and_failure() {
    let ws = tempfile::tempdir().unwrap();
    let mut ex = executor_with(options());
    let tricky = "it's \"quoted\" $HOME & ; *";
    let mut ok = Job {
        argv: vec![
            "sh".into(),
            "-c".into(),
            format!(
                "printf '%s\\n' \"$1\" > out.txt; echo \"$REPRO_T\" >> out.txt; pwd >> out.txt; \
                 echo '{}{{\"msg\":\"half way\",\"frac\":0.5}}'; echo hello-stdout",
                repro_engine::kinds::progress::MARKER
            ),
            "arg0".into(),
            tricky.into(),
        ],
        env: vec![("REPRO_T".into(), "value with spaces".into())],
        ..sh_job(0, "ok", ws.path(), "", Resources::default())
    };
    ok.stage = "ok stage".into();
    ex.submit(ok).unwrap();
    ex.submit(sh_job(
        1,
        "fail",
        ws.path(),
        "echo job $SLURM_JOB_ID; echo oops >&2; exit 3",
        Resources::default(),
    ))
    .unwrap();
    assert_eq!(ex.running(), 2);

    let (done, progress) = wait_all(&mut ex, 2, Duration::from_secs(60));
    assert_eq!(done[&0], Outcome::Succeeded);
    let Outcome::Failed(msg) = &done[&1] else {
        panic!("job 1 should fail: {done:?}")
    };
    assert!(
        msg.contains("FAILED") && msg.contains("exit code 3"),
        "{msg}"
    );

    // After squeue forgets a job (MinJobAge), its final state comes from sacct.
    let fail_id = failed_slurm_id(&ws);
    let records = sacct(&options(), &[fail_id]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].state.as_str(), records[0].exit),
        ("FAILED", Some(ExitStatus::Code(3)))
    );

    let out = fs::read_to_string(ws.path().join("out.txt")).unwrap();
    let cwd = fs::canonicalize(ws.path()).unwrap();
    assert_eq!(
        out,
        format!("{tricky}\nvalue with spaces\n{}\n", cwd.display())
    );
    let log = fs::read_to_string(ws.path().join("logs/ok.log")).unwrap();
    assert!(log.contains("hello-stdout"), "{log}");
    assert!(
        !log.contains(repro_engine::kinds::progress::MARKER),
        "markers are relayed, not logged: {log}"
    );
    let log = fs::read_to_string(ws.path().join("logs/fail.log")).unwrap();
    assert!(log.contains("oops"), "stderr goes to the log too: {log}");
    assert!(
        progress.iter().any(|(id, m)| *id == 0 && m == "half way"),
        "the marker line is relayed as progress: {progress:?}"
    );
    // Scripts live under cache/slurm; the successful job's is cleaned up.
    let scripts: Vec<PathBuf> = fs::read_dir(ws.path().join("cache/slurm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(scripts.len(), 1, "{scripts:?}");
    assert!(
        scripts[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("fail-1-")
    );
}

#[test]
fn resources_become_slurm_allocations() {
    let ws = tempfile::tempdir().unwrap();
    let mut ex = executor_with(options());
    let res = Resources {
        cpus: 3,
        gpus: 0,
        mem_mb: Some(300),
        time_min: Some(7),
        time_s: Some(420),
        partition: Some("other".into()),
    };
    let script = "echo \"$SLURM_CPUS_PER_TASK $SLURM_JOB_PARTITION $SLURM_MEM_PER_NODE \
                  $SLURM_JOB_NAME\" > alloc.txt; \
                  squeue -h -j \"$SLURM_JOB_ID\" -o %l >> alloc.txt; \
                  echo \"gpus=${CUDA_VISIBLE_DEVICES-unset}\" >> alloc.txt";
    let mut job = sh_job(0, "alloc", ws.path(), script, res);
    // A device list from the submitting side must not leak into a CPU job.
    job.env.push(("CUDA_VISIBLE_DEVICES".into(), "5".into()));
    ex.submit(job).unwrap();
    let (done, _) = wait_all(&mut ex, 1, Duration::from_secs(60));
    assert_eq!(done[&0], Outcome::Succeeded);
    let got = fs::read_to_string(ws.path().join("alloc.txt")).unwrap();
    assert_eq!(got, "3 other 300 repro:alloc\n7:00\ngpus=unset\n");
}

#[test]
fn gpu_stages_get_distinct_devices_and_a_third_waits() {
    let ws = tempfile::tempdir().unwrap();
    let mut ex = executor_with(options());
    let script = "date +%s.%N > start.$1; echo \"$CUDA_VISIBLE_DEVICES\" > dev.$1; sleep 4; \
                  date +%s.%N > end.$1";
    for i in 0..3 {
        let mut j = sh_job(
            i,
            &format!("gpu{i}"),
            ws.path(),
            "",
            Resources {
                gpus: 1,
                ..Default::default()
            },
        );
        j.argv = vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
            i.to_string(),
        ];
        ex.submit(j).unwrap();
    }
    let (done, progress) = wait_all(&mut ex, 3, Duration::from_secs(90));
    assert!(done.values().all(|o| *o == Outcome::Succeeded), "{done:?}");

    let read = |name: String| {
        fs::read_to_string(ws.path().join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let num = |name: String| read(name).parse::<f64>().unwrap();
    let mut runs: Vec<(f64, f64, String)> = (0..3)
        .map(|i| {
            (
                num(format!("start.{i}")),
                num(format!("end.{i}")),
                read(format!("dev.{i}")),
            )
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    // The first two ran together on different devices...
    assert!(
        runs[1].0 < runs[0].1,
        "the first two GPU jobs overlap: {runs:?}"
    );
    let mut first_two = [runs[0].2.clone(), runs[1].2.clone()];
    first_two.sort();
    assert_eq!(first_two, ["0".to_string(), "1".to_string()], "{runs:?}");
    // ...and the third started only once one of them had released its GPU.
    let first_end = runs[0].1.min(runs[1].1);
    assert!(
        runs[2].0 >= first_end - 0.05,
        "third GPU job waited: {runs:?}"
    );
    assert!(runs[2].2 == "0" || runs[2].2 == "1", "{runs:?}");
    assert!(
        progress.iter().any(|(_, m)| m.contains("pending")),
        "the waiting job was reported as pending: {progress:?}"
    );
}

#[test]
fn cancel_all_stops_running_and_queued_jobs() {
    let ws = tempfile::tempdir().unwrap();
    let mut ex = executor_with(options());
    ex.submit(sh_job(
        0,
        "runs",
        ws.path(),
        "echo $$ > pid; exec sleep 600",
        Resources::default(),
    ))
    .unwrap();
    // A second executor whose jobs may not start for ten minutes: a queued job.
    let mut later = executor_with(SlurmOptions {
        extra_args: vec!["--begin=now+600".into()],
        ..options()
    });
    later
        .submit(sh_job(
            1,
            "queued",
            ws.path(),
            "touch ran",
            Resources::default(),
        ))
        .unwrap();
    let (run_id, queued_id) = (ex.slurm_id(0).unwrap(), later.slurm_id(1).unwrap());

    // Wait until the first job is really running (its pid file exists).
    let t0 = Instant::now();
    while !ws.path().join("pid").exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "job never started");
        ex.poll(Duration::from_millis(200)).unwrap();
    }
    let pid: i32 = fs::read_to_string(ws.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(squeue_state(queued_id), "PENDING");

    ex.cancel_all();
    later.cancel_all();
    assert_eq!((ex.running(), later.running()), (0, 0));
    assert_eq!(squeue_state(run_id), "CANCELLED");
    assert_eq!(squeue_state(queued_id), "CANCELLED");
    // The stage's process is gone, and the queued one never ran.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still alive"
    );
    assert!(!ws.path().join("ran").exists());
    assert!(ex.poll(Duration::from_millis(10)).unwrap().is_empty());
}

#[test]
fn dropping_the_executor_cancels_what_it_still_tracks() {
    let ws = tempfile::tempdir().unwrap();
    let mut ex = executor_with(options());
    ex.submit(sh_job(
        0,
        "orphan",
        ws.path(),
        "sleep 600",
        Resources::default(),
    ))
    .unwrap();
    let id = ex.slurm_id(0).unwrap();
    drop(ex);
    assert_eq!(squeue_state(id), "CANCELLED");
}

#[test]
fn polling_is_batched_and_rate_limited() {
    let ws = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(500);
    let mut ex = executor_with(SlurmOptions {
        poll_interval: interval,
        ..options()
    });
    let n = 6;
    for i in 0..n {
        ex.submit(sh_job(
            i,
            &format!("b{i}"),
            ws.path(),
            "sleep 3",
            Resources::default(),
        ))
        .unwrap();
    }
    // Poll as fast as an eager engine might.
    let start = Instant::now();
    let (mut finished, mut polls) = (0, 0);
    while finished < n {
        assert!(start.elapsed() < Duration::from_secs(60));
        polls += 1;
        finished += ex
            .poll(Duration::from_millis(1))
            .unwrap()
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Finished {
                        outcome: Outcome::Succeeded,
                        ..
                    }
                )
            })
            .count();
    }
    let elapsed = start.elapsed();
    let allowed = (elapsed.as_secs_f64() / interval.as_secs_f64()).ceil() as usize + 1;
    assert!(
        ex.queries() <= allowed,
        "{} queries in {elapsed:?} for {n} jobs and {polls} polls (allowed {allowed})",
        ex.queries()
    );
    assert!(
        polls > ex.queries(),
        "polls {polls}, queries {}",
        ex.queries()
    );
    assert_eq!(ex.submits(), n);
}

#[test]
fn refused_submissions_name_the_stage_and_the_problem() {
    let ws = tempfile::tempdir().unwrap();
    let mut ex = executor_with(options());
    let res = Resources {
        partition: Some("no-such-partition".into()),
        ..Default::default()
    };
    let err = ex
        .submit(sh_job(0, "lost", ws.path(), "true", res))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("stage 'lost'") && msg.contains("no-such-partition"),
        "{msg}"
    );
    assert_eq!(ex.running(), 0);
    // More GPUs than any node has.
    let res = Resources {
        gpus: 64,
        ..Default::default()
    };
    let msg = format!(
        "{:#}",
        ex.submit(sh_job(1, "greedy", ws.path(), "true", res))
            .unwrap_err()
    );
    assert!(msg.contains("stage 'greedy'"), "{msg}");

    // An unreachable or unconfigured Slurm is reported before anything is submitted.
    let bad = SlurmOptions {
        client_env: vec![("SLURM_CONF".into(), "/nonexistent/slurm.conf".into())],
        ..Default::default()
    };
    let msg = format!("{:#}", SlurmExecutor::new(bad).err().expect("must fail"));
    assert!(
        msg.contains("/nonexistent/slurm.conf") && msg.contains("slurm-up.sh"),
        "{msg}"
    );
}
