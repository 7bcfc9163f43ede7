//! Bringing one file from a list of sources (https, http, or a local path), tried in order.
//!
//! HTTP transfers stream into a `.part` file, resume with a `Range` request after a dropped
//! connection, and retry with exponential backoff; a 404 (or any other client error) moves on
//! to the next source at once. Every candidate is verified against its [`Checksum`] before the
//! caller may place it; a failing candidate is deleted so that it is never resumed from.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use super::checksum::Checksum;

/// Where progress goes: a message and, where known, the fraction done (the `download` kind
/// relays it to the engine's display).
pub type Progress<'a> = &'a dyn Fn(&str, Option<f64>);

/// Retry and timeout settings.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Attempts per HTTP source (the first try included).
    pub attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Connect and read timeout of one request.
    pub timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        }
    }
}

/// A verified file, ready to be placed.
#[derive(Debug)]
pub enum Fetched {
    /// A local source, verified where it lies (not copied).
    Local(PathBuf),
    /// A download, complete and verified, at the `.part` path.
    Downloaded(PathBuf),
}

impl Fetched {
    pub fn path(&self) -> &Path {
        match self {
            Fetched::Local(p) | Fetched::Downloaded(p) => p,
        }
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Try `sources` in order until one yields a file that matches `check`. `part` is where an
/// HTTP transfer is written (and resumed from); `label` names the file in messages. A source
/// path that is relative is taken relative to `base`.
pub fn fetch(
    sources: &[String],
    check: &Checksum,
    part: &Path,
    base: &Path,
    label: &str,
    opts: &FetchOptions,
    progress: Progress,
) -> Result<Fetched> {
    if sources.is_empty() {
        bail!("{label}: no sources given");
    }
    let mut failures = Vec::new();
    for src in sources {
        let outcome = if is_url(src) {
            download(src, part, label, opts, progress).and_then(|()| {
                match check.verify(part)? {
                    None => Ok(Fetched::Downloaded(part.to_path_buf())),
                    Some(why) => {
                        // A corrupt transfer must not be resumed from later.
                        fs::remove_file(part).ok();
                        Err(anyhow!("checksum mismatch: {why}"))
                    }
                }
            })
        } else {
            let p = src.strip_prefix("file://").unwrap_or(src);
            let path = base.join(p);
            if !path.is_file() {
                Err(anyhow!("no such file"))
            } else {
                progress(&format!("verifying {label} ({})", path.display()), None);
                match check.verify(&path) {
                    Ok(None) => Ok(Fetched::Local(path)),
                    Ok(Some(why)) => Err(anyhow!("checksum mismatch: {why}")),
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(f) => return Ok(f),
            Err(e) => failures.push(format!("  {src}: {e:#}")),
        }
    }
    bail!(
        "could not obtain {label}; nothing was placed. Tried:\n{}",
        failures.join("\n")
    )
}

/// Download `url` into `part`, resuming what is already there.
fn download(
    url: &str,
    part: &Path,
    label: &str,
    opts: &FetchOptions,
    progress: Progress,
) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(opts.timeout)
        .timeout_read(opts.timeout)
        .build();
    let mut delay = opts.backoff;
    let mut last_err = anyhow!("no attempt made");
    for attempt in 1..=opts.attempts.max(1) {
        if attempt > 1 {
            std::thread::sleep(delay);
            delay *= 2;
        }
        match attempt_once(&agent, url, part, label, progress) {
            Ok(()) => return Ok(()),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(e)) => last_err = e,
        }
    }
    Err(last_err.context(format!("gave up after {} attempts", opts.attempts.max(1))))
}

enum Attempt {
    /// Worth retrying: connection dropped, timeout, server error.
    Retry(anyhow::Error),
    /// Not worth retrying this source: 404 and other client errors.
    Fatal(anyhow::Error),
}

fn attempt_once(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    label: &str,
    progress: Progress,
) -> Result<(), Attempt> {
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent.get(url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, _)) if have > 0 => {
            // Range not satisfiable: what we hold is stale or longer; start again.
            fs::remove_file(part).ok();
            return Err(Attempt::Retry(anyhow!("HTTP 416 for a resume; restarting")));
        }
        Err(ureq::Error::Status(code, r)) => {
            let e = anyhow!("HTTP {code} {}", r.status_text());
            return Err(if code >= 500 || code == 408 || code == 429 {
                Attempt::Retry(e)
            } else {
                Attempt::Fatal(e)
            });
        }
        Err(e) => return Err(Attempt::Retry(anyhow!("{e}"))),
    };
    // 206 continues the part file; anything else (200) restarts it.
    let resumed = resp.status() == 206 && content_range_start(&resp) == Some(have);
    let start = if resumed { have } else { 0 };
    let total = resp
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| n + start);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(part)
        .map_err(|e| Attempt::Fatal(anyhow!("opening {}: {e}", part.display())))?;
    let mut reader = resp.into_reader();
    let mut done = start;
    let mut buf = vec![0u8; 256 * 1024];
    let t0 = Instant::now();
    let mut last = Instant::now();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                file.flush().ok();
                return Err(Attempt::Retry(anyhow!(
                    "transfer interrupted after {done} bytes: {e}"
                )));
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| Attempt::Fatal(anyhow!("writing {}: {e}", part.display())))?;
        done += n as u64;
        if last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            report_bytes(progress, label, done, start, total, t0.elapsed());
        }
    }
    file.sync_all().ok();
    if let Some(t) = total
        && done < t
    {
        return Err(Attempt::Retry(anyhow!(
            "transfer ended at {done} of {t} bytes"
        )));
    }
    report_bytes(progress, label, done, start, total, t0.elapsed());
    Ok(())
}

fn content_range_start(resp: &ureq::Response) -> Option<u64> {
    // "bytes 100-199/200"
    let v = resp.header("Content-Range")?;
    let rest = v.trim().strip_prefix("bytes")?.trim();
    rest.split('-').next()?.trim().parse().ok()
}

fn report_bytes(
    progress: Progress,
    label: &str,
    done: u64,
    start: u64,
    total: Option<u64>,
    took: Duration,
) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let rate = mib(done - start) / took.as_secs_f64().max(1e-3);
    let msg = match total {
        Some(t) => format!("{label} {:.1}/{:.1} MiB {rate:.1} MiB/s", mib(done), mib(t)),
        None => format!("{label} {:.1} MiB {rate:.1} MiB/s", mib(done)),
    };
    progress(&msg, total.map(|t| done as f64 / t.max(1) as f64));
}
