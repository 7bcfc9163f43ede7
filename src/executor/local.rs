//! The local executor: each stage is a child process in its own process group, its stdout and
//! stderr appended to the stage's log, progress marker lines relayed as events.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, unbounded};

use super::{Event, Executor, Job, JobId, Outcome};
use crate::kinds::progress;

pub struct LocalExecutor {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    /// Running jobs: id → process group id.
    running: Arc<Mutex<HashMap<JobId, i32>>>,
    /// One file per running process group, so that a run that was killed (and could not stop
    /// its stages) has them stopped by the next run before it starts anything.
    pid_dir: Option<std::path::PathBuf>,
}

impl Default for LocalExecutor {
    fn default() -> Self {
        let (tx, rx) = unbounded();
        LocalExecutor {
            tx,
            rx,
            running: Arc::default(),
            pid_dir: None,
        }
    }
}

impl LocalExecutor {
    /// An executor that records its process groups in `pid_dir`, after stopping any that a
    /// previous, killed run left behind there.
    pub fn with_pid_dir(pid_dir: std::path::PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&pid_dir)
            .with_context(|| format!("cannot create {}", pid_dir.display()))?;
        for entry in std::fs::read_dir(&pid_dir)? {
            let entry = entry?;
            if let Ok(pgid) = entry.file_name().to_string_lossy().parse::<i32>() {
                // Linux does not reuse a pid while it names a live process group, so this
                // can only hit the orphaned stage's processes.
                // SAFETY: sending a signal to a process group id.
                if unsafe { libc::kill(-pgid, libc::SIGKILL) } == 0 {
                    eprintln!(
                        "note: stopped processes of an interrupted earlier run (process group {pgid})"
                    );
                }
            }
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(LocalExecutor {
            pid_dir: Some(pid_dir),
            ..Default::default()
        })
    }
}

impl Executor for LocalExecutor {
    fn submit(&mut self, job: Job) -> Result<()> {
        if let Some(dir) = job.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::File::create(&job.log)
            .with_context(|| format!("cannot create log {}", job.log.display()))?;
        let log = Arc::new(Mutex::new(log));
        let mut cmd = Command::new(&job.argv[0]);
        cmd.args(&job.argv[1..])
            .current_dir(&job.cwd)
            .envs(job.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group, so stopping a stage stops everything it started.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child if
        // the engine dies (kill -9, crash), so stages do not outlive an engine killed mid-run.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start stage '{}' ({})", job.stage, job.argv[0]))?;
        let pid = child.id() as i32;
        self.running.lock().unwrap().insert(job.id, pid);
        let pid_file = self.pid_dir.as_ref().map(|d| d.join(pid.to_string()));
        if let Some(f) = &pid_file {
            let _ = std::fs::write(f, &job.stage);
        }

        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (id, tx) = (job.id, self.tx.clone());
        let out_log = log.clone();
        // `-v`: lines are also shown on the terminal, prefixed by the stage (crate::ui).
        let (out_name, err_name) = (job.stage.clone(), job.stage.clone());
        let out_thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((message, fraction)) = progress::parse(&line) {
                    let _ = tx.send(Event::Progress {
                        id,
                        message,
                        fraction,
                    });
                } else {
                    crate::ui::stage_output(&out_name, &line);
                    let _ = writeln!(out_log.lock().unwrap(), "{line}");
                }
            }
        });
        let err_log = log.clone();
        let err_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                crate::ui::stage_output(&err_name, &line);
                let _ = writeln!(err_log.lock().unwrap(), "{line}");
            }
        });
        let tx = self.tx.clone();
        let running = self.running.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = out_thread.join();
            let _ = err_thread.join();
            let _ = log.lock().unwrap().sync_all();
            running.lock().unwrap().remove(&id);
            if let Some(f) = pid_file {
                // SAFETY: stop anything the stage left running in its group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let _ = std::fs::remove_file(f);
            }
            let outcome = match status {
                Ok(s) if s.success() => Outcome::Succeeded,
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(c), _) => Outcome::Failed(format!("exit code {c}")),
                    (None, Some(sig)) => Outcome::Failed(format!("killed by signal {sig}")),
                    _ => Outcome::Failed("ended abnormally".into()),
                },
                Err(e) => Outcome::Failed(format!("cannot wait for the process: {e}")),
            };
            let _ = tx.send(Event::Finished { id, outcome });
        });
        Ok(())
    }

    fn poll(&mut self, timeout: Duration) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        if let Ok(e) = self.rx.recv_timeout(timeout) {
            events.push(e);
            while let Ok(e) = self.rx.try_recv() {
                events.push(e);
            }
        }
        Ok(events)
    }

    fn cancel_all(&mut self) {
        let groups: Vec<i32> = self.running.lock().unwrap().values().copied().collect();
        for g in &groups {
            // SAFETY: signalling a process group we created.
            unsafe { libc::kill(-g, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !self.running.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for g in self.running.lock().unwrap().values() {
            // SAFETY: as above; the group ignored SIGTERM.
            unsafe { libc::kill(-g, libc::SIGKILL) };
        }
    }

    fn running(&self) -> usize {
        self.running.lock().unwrap().len()
    }
}
