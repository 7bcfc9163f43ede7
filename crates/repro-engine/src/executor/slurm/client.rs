//! Running Slurm's client commands (`sbatch`, `squeue`, `sacct`, `scancel`, `scontrol`):
//! with the configured environment, a time limit, both pipes drained, retries while the
//! controller is busy, and hints that turn Slurm's terse refusals into something to fix.

use std::io::Read;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::SlurmOptions;

/// Output of one Slurm client command.
pub(super) struct ClientOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ClientOutput {
    pub(super) fn summary(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let text = text.trim();
        if text.is_empty() {
            "no output".to_string()
        } else {
            text.to_string()
        }
    }
}

pub(super) fn run_client(
    opts: &SlurmOptions,
    program: &str,
    args: &[String],
) -> Result<ClientOutput> {
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .envs(opts.client_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "`{program}` not found on PATH: the Slurm executor needs Slurm's client \
                     tools (Debian: apt-get install slurm-client)"
                )
            } else {
                anyhow::anyhow!("running `{program}`: {e}")
            }
        })?;
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out_reader = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_reader = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    // A client command can hang (e.g. retrying an unreadable slurm.conf for a minute).
    let deadline = Instant::now() + opts.command_timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{program}`"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{program} {}` did not finish within {} s",
                args.join(" "),
                opts.command_timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(ClientOutput {
        ok: status.success(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Retry a client call a few times when Slurm says it is busy.
pub(super) fn retry_transient(mut f: impl FnMut() -> Result<ClientOutput>) -> Result<ClientOutput> {
    let mut delay = Duration::from_millis(500);
    for _ in 0..4 {
        let out = f()?;
        let busy = !out.ok && {
            let e = out.stderr.to_lowercase();
            e.contains("temporarily unavailable")
                || e.contains("timed out")
                || e.contains("try again")
                || e.contains("unable to contact slurm controller")
        };
        if !busy {
            return Ok(out);
        }
        thread::sleep(delay);
        delay *= 2;
    }
    f()
}

pub(super) fn slurm_conf_shown(opts: &SlurmOptions) -> String {
    opts.client_env
        .iter()
        .find(|(k, _)| k == "SLURM_CONF")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("SLURM_CONF").ok())
        .unwrap_or_else(|| "unset".to_string())
}

pub(super) fn hint_for(stderr: &str, opts: &SlurmOptions) -> String {
    let e = stderr.to_lowercase();
    if e.contains("configuration") && (e.contains("establish") || e.contains("fetch")) {
        format!(
            " (Slurm is not configured here: SLURM_CONF is {}; for a test cluster run \
             `eval \"$(scripts/slurm-up.sh)\"`)",
            slurm_conf_shown(opts)
        )
    } else if e.contains("partition") {
        " (check `resources: {partition: …}` against `sinfo`)".to_string()
    } else if e.contains("requested node configuration is not available") {
        " (no node has that many CPUs, GPUs or that much memory; compare `resources:` with \
         `sinfo -o '%P %c %m %G'`)"
            .to_string()
    } else {
        String::new()
    }
}
