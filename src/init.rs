//! `repro init`: start a new workspace with a small pipeline that runs as written.
//!
//! The pipeline shows the pieces a researcher needs on day one (a `cmd` stage with a param,
//! a `foreach` over a list of values, deps, outs and a metrics file) and nothing else, so it
//! can be read in a minute and edited into the real thing. The cache directory is added to
//! `.gitignore` (once; an existing file keeps its content). An existing pipeline is never
//! overwritten.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// The pipeline `repro init` writes. Plain POSIX shell and awk, so it runs anywhere.
pub const TEMPLATE: &str = r#"# A repro pipeline. `repro run` runs what is stale; `repro status` says what and why;
# `repro exp show` compares the configurations the cache knows. Schema: docs/pipeline.md.
vars:
  n: 5                    # how many numbers `prepare` writes
  offsets: [1, 10]        # one `score` stage per value (foreach)

stages:
  prepare:
    cmd: seq 1 ${n} > data/numbers.txt
    params: [n]           # the stage reruns when `n` changes (repro run --set n=8)
    outs: [data/numbers.txt]

  score:
    foreach: ${offsets}
    cmd: >-
      awk -v k=${item} '{ s += $1 + k } END { printf "{\"total\": %d, \"mean\": %g}\n", s, s / NR }'
      data/numbers.txt > results/offset-${item}.json
    deps: [data/numbers.txt]
    outs: ["results/offset-${item}.json"]
    metrics: ["results/offset-${item}.json"]

  summary:
    cmd: cat results/offset-*.json > summary.txt
    deps: [results]
    outs: [summary.txt]
"#;

/// The line `.gitignore` gets: the cache is local state, `repro.lock` is meant to be committed.
const IGNORE_LINE: &str = "/cache/";

/// Write `pipeline.yaml` in `dir` (refusing to replace one) and ignore `cache/` there.
/// Returns what was done, one line per action, for the caller to print.
pub fn init(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pipeline = dir.join("pipeline.yaml");
    if pipeline.exists() || pipeline.is_symlink() {
        bail!(
            "{} already exists; repro init never replaces a pipeline (edit it, or remove it first)",
            pipeline.display()
        );
    }
    // create_new: a file that appeared since the check is not replaced either.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&pipeline)
            .with_context(|| format!("cannot create {}", pipeline.display()))?;
        f.write_all(TEMPLATE.as_bytes())
            .with_context(|| format!("cannot write {}", pipeline.display()))?;
    }
    let mut done = vec![format!("wrote {}", pipeline.display())];
    if add_ignore(&dir.join(".gitignore"))? {
        done.push(format!(
            "added {IGNORE_LINE} to {}",
            dir.join(".gitignore").display()
        ));
    }
    Ok(done)
}

/// Append the cache entry to a `.gitignore` unless an equivalent line is already there.
/// Returns whether the file changed.
fn add_ignore(path: &Path) -> Result<bool> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let covered = old
        .lines()
        .map(str::trim)
        .any(|l| matches!(l, "cache" | "cache/" | "/cache" | "/cache/"));
    if covered {
        return Ok(false);
    }
    let mut text = old;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# repro's cache (outputs, run cache, logs); commit repro.lock, not this\n");
    text.push_str(IGNORE_LINE);
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_entry_is_added_once_and_keeps_existing_lines() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join(".gitignore");
        std::fs::write(&g, "*.pyc").unwrap();
        assert!(add_ignore(&g).unwrap());
        assert!(!add_ignore(&g).unwrap());
        let text = std::fs::read_to_string(&g).unwrap();
        assert!(text.starts_with("*.pyc\n"), "{text}");
        assert_eq!(text.lines().filter(|l| *l == IGNORE_LINE).count(), 1);
        std::fs::write(&g, "cache/\n").unwrap();
        assert!(!add_ignore(&g).unwrap());
    }
}
