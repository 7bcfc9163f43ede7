//! The stage supervisor: a small process between the engine and each local stage, so that
//! the stage's whole process tree dies with the engine, even when the engine is killed with
//! SIGKILL and can run no code of its own.
//!
//! The engine starts `repro internal supervise -- ARGV…` with the read end of a pipe on fd 3
//! and keeps the write end; the kernel closes it when the engine dies, however it dies. The
//! supervisor makes itself a child subreaper (so every orphaned descendant of the stage,
//! even one that called `setsid` or double-forked, is re-parented to it rather than to init),
//! starts the stage in a process group of its own and waits. It tears the stage down when
//!
//! - the pipe reports end-of-file (the engine is gone): SIGKILL to the stage's group and to
//!   every descendant it can find, at once (nobody is left to report to, and the next run
//!   must not find the old stage still writing its outputs);
//! - it receives SIGTERM, SIGINT or SIGHUP (the engine cancels the run, or a time limit hit):
//!   SIGTERM to the stage's group, then after a short grace the same SIGKILL;
//! - the stage's main process exits: whatever it left running is killed (a stage is done
//!   when its command is; stragglers would hold files, GPUs and the log pipe).
//!
//! It is also the process that measures the stage for the run trace: it waits for the stage's
//! main process with `wait4` and, given `--usage FILE`, leaves its wall and CPU time and peak
//! memory there (see `crate::trace`), so a local stage runs under this one wrapper only.
//!
//! It then exits the way the stage did (same code, or the same signal), so the engine
//! reports the stage exactly as if it had run it directly.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The descriptor on which the supervisor finds the engine's end-of-life pipe.
pub(crate) const DEATH_FD: i32 = 3;

/// How long a stage may take to stop after SIGTERM before it is killed.
pub(crate) const GRACE: Duration = Duration::from_secs(2);

/// Process group of the supervised stage (0 until started).
static STAGE_PGID: AtomicI32 = AtomicI32::new(0);
static TEARING_DOWN: AtomicBool = AtomicBool::new(false);

/// Started through /proc/self/exe (see the local executor), this process is named `exe` by the
/// kernel; it takes the name of its argv[0] (`repro`) back, so `ps`, `top` and `pgrep repro`
/// show what it is.
fn take_back_name() {
    let Some(arg0) = std::env::args_os().next() else {
        return;
    };
    let Some(name) = Path::new(&arg0).file_name() else {
        return;
    };
    use std::os::unix::ffi::OsStrExt;
    // The kernel keeps 15 bytes and a NUL.
    let mut buf = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    buf[..n].copy_from_slice(&bytes[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `buf`.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// `repro internal supervise [--usage FILE] -- ARGV…`: run ARGV, write its usage to FILE, and
/// return the exit code to use (or end the process with the stage's signal).
pub fn main(argv: &[OsString], usage: Option<&Path>) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("error: supervise needs a command");
        return 2;
    };
    take_back_name();
    // SAFETY: plain prctl/fcntl calls on this process and a descriptor it owns.
    let watch_engine = unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // The stage must not inherit the pipe (it would outlive nothing, but it is ours).
        libc::fcntl(DEATH_FD, libc::F_SETFD, libc::FD_CLOEXEC) == 0
    };
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    // SAFETY: prctl is async-signal-safe. Last line of defence: if the supervisor itself is
    // SIGKILLed, at least the stage's main process goes with it.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let start = Instant::now();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start {}: {e}", program.to_string_lossy());
            return 127;
        }
    };
    STAGE_PGID.store(child.id() as i32, Ordering::SeqCst);
    let _ = ctrlc::set_handler(|| teardown(true));
    if watch_engine {
        std::thread::spawn(|| {
            let mut buf = [0u8; 64];
            loop {
                // SAFETY: reading into a buffer we own from a descriptor we own.
                let n = unsafe { libc::read(DEATH_FD, buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                if n <= 0 {
                    break;
                }
            }
            teardown(false);
        });
    }
    // wait4 rather than Child::wait: the same call gives the stage's resource usage.
    let status =
        super::measure::wait_measured(child.id() as libc::pid_t, start).map(|(raw, measured)| {
            if let Some(out) = usage {
                super::measure::write_usage(out, &measured);
            }
            std::process::ExitStatus::from_raw(raw)
        });
    drop(child);
    if TEARING_DOWN.load(Ordering::SeqCst) && engine_alive(watch_engine) {
        // Give the rest of the group the same grace to act on its SIGTERM, reaping as it
        // goes: its members that exit are re-parented to us, and their zombies would keep the
        // group alive for the whole grace.
        wait_group_empty(Instant::now() + GRACE, true);
    }
    // The stage's main process is done: nothing it started may outlive it.
    kill_tree(libc::SIGKILL, true);
    reap_all(Duration::from_secs(2));
    match status {
        Ok(s) => {
            if let Some(code) = s.code() {
                return code;
            }
            if let Some(sig) = s.signal() {
                // SAFETY: restore the default action and die of the same signal.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    libc::raise(sig);
                }
                return 128 + sig;
            }
            1
        }
        Err(e) => {
            eprintln!("error: cannot wait for the stage: {e}");
            1
        }
    }
}

/// Stop the stage: with `graceful`, SIGTERM to its group and SIGKILL to everything left after
/// [`GRACE`]; else SIGKILL at once. Runs on a signal or watch thread; the main thread sees
/// the stage exit and finishes.
fn teardown(graceful: bool) {
    if TEARING_DOWN.swap(true, Ordering::SeqCst) {
        if graceful {
            return;
        }
        // The engine died during a graceful stop: no more grace.
    } else if graceful {
        let pgid = STAGE_PGID.load(Ordering::SeqCst);
        // SAFETY: signalling the stage's own process group.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        // No reaping here (see below); the main thread reaps and ends the process as soon as
        // the group is gone.
        wait_group_empty(Instant::now() + GRACE, false);
    }
    // No reaping here: the main thread is waiting for the stage's main process.
    kill_tree(libc::SIGKILL, false);
    // The main thread normally exits first; if the stage's main process cannot be reaped
    // (stuck in the kernel), do not hang the engine's wait.
    std::thread::sleep(Duration::from_secs(3));
    std::process::exit(128 + libc::SIGTERM);
}

/// Whether the engine still holds its end of the pipe (true when there is no pipe).
fn engine_alive(watching: bool) -> bool {
    if !watching {
        return true;
    }
    let mut p = libc::pollfd {
        fd: DEATH_FD,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one descriptor we own, without waiting.
    unsafe { libc::poll(&mut p, 1, 0) == 0 }
}

/// Wait until the stage's process group has no members left, or `deadline`. With `reap`
/// (main thread only), exited children are collected meanwhile: a zombie still counts as a
/// member of its group. Returns whether the group is gone.
fn wait_group_empty(deadline: Instant, reap: bool) -> bool {
    let pgid = STAGE_PGID.load(Ordering::SeqCst);
    loop {
        if reap {
            reap_exited();
        }
        // SAFETY: signal 0 only asks whether the group still has members.
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Collect every child that has already exited, without waiting.
fn reap_exited() {
    let mut status = 0;
    // SAFETY: waitpid on any child of this process, non-blocking.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

/// Signal the stage's process group and every descendant of this process, until none is
/// left (new ones may be forked while we look). Only the main thread reaps (`reap`), so the
/// stage's main process is never collected behind its `wait`.
fn kill_tree(sig: i32, reap: bool) {
    let pgid = STAGE_PGID.load(Ordering::SeqCst);
    if pgid > 0 {
        // SAFETY: signalling the stage's own process group.
        unsafe { libc::kill(-pgid, sig) };
    }
    for _ in 0..50 {
        let found = descendants(std::process::id() as i32);
        if found.is_empty() {
            return;
        }
        for pid in found {
            // SAFETY: `pid` is a descendant of this process (read from /proc just now).
            unsafe { libc::kill(pid, sig) };
        }
        if reap {
            reap_all(Duration::from_millis(100));
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Live descendants of `root` (from /proc), zombies excluded.
fn descendants(root: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses and may hold anything.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (f.next(), f.next().and_then(|p| p.parse::<i32>().ok()));
        if let (Some(state), Some(ppid)) = (state, ppid)
            && state != "Z"
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == p && pid != root && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

/// Collect exited children (re-parented orphans included) for up to `limit`, until none is left.
fn reap_all(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child of this process, non-blocking.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if r < 0 || Instant::now() >= deadline {
            return; // ECHILD: no children left
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    /// A stage that exits at once on SIGTERM must not cost the grace period: once its
    /// members are reaped, the group is gone, and the wait ends then, not at the deadline.
    #[test]
    fn a_group_whose_members_exited_is_gone_once_reaped() {
        const NAME: &str =
            "executor::supervise::tests::a_group_whose_members_exited_is_gone_once_reaped";
        // Reaping collects any child of the process, so the check runs in a process of its
        // own (other tests here wait for their own children).
        if std::env::var_os("REPRO_TEST_REAP_CHILD").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1"])
                .env("REPRO_TEST_REAP_CHILD", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        let child = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        super::STAGE_PGID.store(pgid, std::sync::atomic::Ordering::SeqCst);
        // Wait for the exit without reaping: the zombie stays a member of its group.
        // SAFETY: waitid with WNOWAIT on our own child, into a zeroed siginfo we own.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            assert_eq!(
                libc::waitid(
                    libc::P_PID,
                    pgid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT
                ),
                0
            );
        }
        let short = Instant::now() + Duration::from_millis(100);
        assert!(
            !super::wait_group_empty(short, false),
            "an exited, unreaped member keeps its group"
        );
        assert!(
            super::wait_group_empty(Instant::now() + super::GRACE, true),
            "reaped, the group is gone before the grace ends"
        );
        std::mem::forget(child);
    }

    #[test]
    fn descendants_finds_children_and_grandchildren() {
        let mut c = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5; wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let sh = c.id() as i32;
        assert!(super::descendants(std::process::id() as i32).contains(&sh));
        let found = super::descendants(sh);
        assert_eq!(found.len(), 2, "the two sleeps: {found:?}");
        // Only the test's own processes are touched (other tests run alongside).
        for pid in found.into_iter().chain([sh]) {
            // SAFETY: our own descendants.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = c.wait();
    }
}
