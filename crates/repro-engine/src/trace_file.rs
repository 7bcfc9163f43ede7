//! The run trace's file format, `cache/trace.jsonl`: one JSON line per stage run. The engine
//! writes it (`crate::trace`); the report's timeline reads it. It is a contract between the
//! two, so it lives apart from both and names no other module of the crate.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One line of `cache/trace.jsonl`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Entry {
    /// The `repro run` invocation it belongs to (its start, ms since the epoch).
    pub run: u64,
    /// The stage.
    pub stage: String,
    /// `cmd`, or the built-in kind (`download`, `train`, `report`, …); absent in lines written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its stage key.
    pub key: String,
    /// Milliseconds since the epoch when the stage was handed to the executor; it ended
    /// `wall_s` later.
    pub started: u64,
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// `null` when the measuring wrapper could not report (killed with the stage).
    pub cpu_s: Option<f64>,
    /// Peak resident memory in KiB, when measured.
    pub max_rss_kb: Option<u64>,
    /// GPUs it held.
    pub gpus: usize,
    /// GPU-seconds: `gpus` × `wall_s`.
    pub gpu_s: f64,
    /// `ok`, `exit N`, `signal N`, or the executor's verdict.
    pub status: String,
    /// `local`, or `slurm:<job id>`.
    pub executor: String,
    /// The environment it ran in: the id of `cache/environments/<id>.json` (see
    /// `crate::environment`); absent in lines written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Which run of the stage within its `repro run` this was: 1, or more for a retry (see
    /// `retry:`); 1 in lines written before it was recorded.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

/// Read the trace. A line that does not parse — cut by a full disk or a kill, or holding
/// bytes that are not UTF-8 — is skipped, and one warning on stderr says how many were, so
/// one damaged line never hides the rest.
pub fn read(cache_dir: &Path) -> Result<Vec<Entry>> {
    let path = cache_dir.join("trace.jsonl");
    let (entries, skipped) = read_lines(&path)?;
    if skipped > 0 {
        eprintln!(
            "warning: skipped {skipped} unreadable line{} of {}",
            if skipped == 1 { "" } else { "s" },
            path.display()
        );
    }
    Ok(entries)
}

/// The entries of a trace file and how many non-empty lines were skipped.
fn read_lines(path: &Path) -> Result<(Vec<Entry>, usize)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut entries = Vec::new();
    let mut skipped = 0;
    for line in bytes.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(e) => entries.push(e),
            Err(_) => skipped += 1,
        }
    }
    Ok((entries, skipped))
}

/// Only the entries of the newest run.
pub fn last_run(entries: Vec<Entry>) -> Vec<Entry> {
    let Some(last) = entries.iter().map(|e| e.run).max() else {
        return entries;
    };
    entries.into_iter().filter(|e| e.run == last).collect()
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc_seconds(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_lines_are_skipped_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let good = r#"{"run":1,"stage":"a","key":"k","started":5,"wall_s":0.5,"cpu_s":null,"max_rss_kb":null,"gpus":0,"gpu_s":0.0,"status":"ok","executor":"local"}"#;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(good.as_bytes());
        bytes.extend_from_slice(b"\n{\"run\":\xff\xfe}\n\n");
        bytes.extend_from_slice(good.replace("\"a\"", "\"b\"").as_bytes());
        bytes.extend_from_slice(b"\n{\"run\":2,\"sta");
        std::fs::write(d.path().join("trace.jsonl"), bytes).unwrap();
        let (entries, skipped) = read_lines(&d.path().join("trace.jsonl")).unwrap();
        let stages: Vec<&str> = entries.iter().map(|e| e.stage.as_str()).collect();
        assert_eq!(stages, ["a", "b"]);
        assert_eq!(skipped, 2, "the invalid byte and the torn last line");
        assert_eq!(read(d.path()).unwrap().len(), 2);
    }
}
