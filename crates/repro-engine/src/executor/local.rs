//! The local executor: each stage runs under its own supervisor process (see
//! [`super::supervise`]), which keeps the stage's whole process tree tied to the engine's
//! life and measures it for the run trace; its stdout and stderr are appended to the stage's log as bytes, progress marker
//! lines relayed as events. A declared `resources: {time: …}` is enforced here: at the limit
//! the stage's tree is stopped and the stage fails as "timed out after …".

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, unbounded};

use super::{Event, Executor, Job, JobId, Outcome};
use crate::kinds::progress;

pub(crate) struct LocalExecutor {
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
    pub(crate) fn with_pid_dir(pid_dir: std::path::PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&pid_dir)
            .with_context(|| format!("cannot create {}", pid_dir.display()))?;
        // Stages (and their supervisors) run in the workspace root, `cache/running/../..`.
        let root = pid_dir
            .parent()
            .and_then(|c| c.parent())
            .and_then(|r| r.canonicalize().ok());
        let ours = |pid: i32| {
            is_our_supervisor(pid) && std::fs::read_link(format!("/proc/{pid}/cwd")).ok() == root
        };
        for entry in std::fs::read_dir(&pid_dir)? {
            let entry = entry?;
            if let Ok(pgid) = entry.file_name().to_string_lossy().parse::<i32>()
                && ours(pgid)
            {
                // Only a supervisor that outlived its engine is signalled (a pid freed since
                // may belong to anything); it tears its stage down.
                // SAFETY: sending a signal to a process group id.
                if unsafe { libc::kill(-pgid, libc::SIGTERM) } == 0 {
                    eprintln!(
                        "note: stopping processes of an interrupted earlier run (process group {pgid})"
                    );
                    // Its stage must be gone before this run may start it again.
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while ours(pgid) && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
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

/// Whether `pid` is a live `repro internal supervise` process.
fn is_our_supervisor(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.windows(19).any(|w| w == b"internal\0supervise\0"))
}

/// A pipe whose write end the engine keeps and whose read end becomes the supervisor's
/// [`super::supervise::DEATH_FD`]: both close-on-exec, so no other child inherits them.
fn death_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors, which we own from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// "1s", "2m05s", "1h30m00s".
pub(crate) fn format_limit(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// Relay one output stream of a stage: every byte goes to the log as it came (a stage's
/// output is bytes, not necessarily UTF-8); on stdout, progress marker lines become events.
fn relay(
    stream: impl Read,
    log: Arc<Mutex<std::fs::File>>,
    stage: String,
    progress: Option<(super::JobId, crossbeam_channel::Sender<Event>)>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Keep reading would spin; dropping the pipe is all that is left.
            Err(_) => break,
        }
        if let Some((id, tx)) = &progress
            && let Ok(text) = std::str::from_utf8(&line)
            && let Some((message, fraction)) = progress::parse(text.trim_end_matches(['\n', '\r']))
        {
            let _ = tx.send(Event::Progress {
                id: *id,
                message,
                fraction,
            });
            continue;
        }
        // `-v`: the line is also shown on the terminal, prefixed by the stage (crate::ui).
        if crate::ui::verbose() {
            crate::ui::stage_output(
                &stage,
                String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']),
            );
        }
        // A full disk loses log lines, never the stage: the pipe must keep draining.
        let _ = log.lock().unwrap().write_all(&line);
    }
}

/// The path under which Linux names the running process's own executable.
pub(crate) const SELF_EXE: &str = "/proc/self/exe";

impl Executor for LocalExecutor {
    fn submit(&mut self, job: Job) -> Result<()> {
        if let Some(dir) = job.log.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let log = std::fs::File::create(&job.log)
            .with_context(|| format!("cannot create log {}", job.log.display()))?;
        let log = Arc::new(Mutex::new(log));
        let exe = std::env::current_exe().context("cannot find the repro binary")?;
        // The supervisor starts from the running binary itself, through /proc/self/exe: a
        // `cargo build` or install that replaces the file at `exe` during a run must not fail
        // the stages still to start. Its argv[0] stays `exe` (what `ps` shows), and it takes
        // back its name (the kernel names it `exe`) first thing, see `supervise::main`.
        let this = Path::new(SELF_EXE);
        let own = if this.exists() { this } else { exe.as_path() };
        let (death_r, death_w) = death_pipe().context("cannot create a pipe")?;
        let mut cmd = Command::new(own);
        cmd.arg0(&exe).args(["internal", "supervise"]);
        // The supervisor also measures the stage for the run trace: one wrapper, not two.
        if let Some(usage) = &job.usage {
            cmd.arg("--usage").arg(usage);
        }
        cmd.arg("--")
            .args(&job.argv)
            .current_dir(&job.cwd)
            .envs(job.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: the engine's Ctrl-C and `cancel_all` reach the supervisor only.
            .process_group(0);
        let fd = {
            use std::os::fd::AsRawFd;
            death_r.as_raw_fd()
        };
        const TARGET: i32 = super::supervise::DEATH_FD;
        // SAFETY: dup2, fcntl and prctl are async-signal-safe; they act on the child only.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto the same number would keep close-on-exec set.
                let ok = if fd == TARGET {
                    libc::fcntl(TARGET, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(fd, TARGET) == TARGET
                };
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
                // The pipe is the reliable signal; this one also covers a supervisor that
                // started after the engine died.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start stage '{}' ({})", job.stage, job.argv[0]))?;
        drop(death_r);
        let pid = child.id() as i32;
        self.running.lock().unwrap().insert(job.id, pid);
        let pid_file = self.pid_dir.as_ref().map(|d| d.join(pid.to_string()));
        if let Some(f) = &pid_file {
            let _ = std::fs::write(f, &job.stage);
        }

        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let id = job.id;
        let (out_log, progress_tx) = (log.clone(), self.tx.clone());
        let (out_name, err_name) = (job.stage.clone(), job.stage.clone());
        let out_thread =
            std::thread::spawn(move || relay(stdout, out_log, out_name, Some((id, progress_tx))));
        let err_log = log.clone();
        let err_thread = std::thread::spawn(move || relay(stderr, err_log, err_name, None));
        // The time limit: SIGTERM to the supervisor, which stops the stage's tree (SIGKILL
        // after its grace period).
        let limit = job.resources.time_s.map(Duration::from_secs);
        let timed_out = Arc::new(AtomicBool::new(false));
        // Set (under the lock) once the supervisor has exited and before it is reaped, so
        // the timer never signals a pid that may have been reused.
        let exited = Arc::new(Mutex::new(false));
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        if let Some(limit) = limit {
            let (timed_out, exited) = (timed_out.clone(), exited.clone());
            std::thread::spawn(move || {
                if done_rx.recv_timeout(limit) == Err(crossbeam_channel::RecvTimeoutError::Timeout)
                {
                    let exited = exited.lock().unwrap();
                    if !*exited {
                        timed_out.store(true, Ordering::SeqCst);
                        // SAFETY: the supervisor is our child and not yet reaped.
                        unsafe { libc::kill(pid, libc::SIGTERM) };
                    }
                }
            });
        }
        let tx = self.tx.clone();
        let running = self.running.clone();
        std::thread::spawn(move || {
            // Wait for the exit without reaping (the pid stays ours), then reap.
            // SAFETY: waitid with WNOWAIT on our own child, into a zeroed siginfo we own.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                while libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                ) != 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                }
            }
            *exited.lock().unwrap() = true;
            drop(done_tx);
            let status = child.wait();
            // The supervisor is gone; our end of its pipe has nothing left to tell.
            drop(death_w);
            let _ = out_thread.join();
            let _ = err_thread.join();
            let _ = log.lock().unwrap().sync_all();
            running.lock().unwrap().remove(&id);
            if let Some(f) = pid_file {
                let _ = std::fs::remove_file(f);
            }
            let outcome = match status {
                _ if timed_out.load(Ordering::SeqCst) => Outcome::Failed(format!(
                    "timed out after {} (resources: time)",
                    format_limit(limit.unwrap_or_default())
                )),
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

#[cfg(test)]
mod tests {
    #[test]
    fn limits_read_as_durations() {
        use std::time::Duration;
        assert_eq!(super::format_limit(Duration::from_secs(1)), "1s");
        assert_eq!(super::format_limit(Duration::from_secs(125)), "2m05s");
        assert_eq!(super::format_limit(Duration::from_secs(5400)), "1h30m00s");
    }
}
