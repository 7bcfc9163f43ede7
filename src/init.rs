//! `repro init`: start a new workspace with a small pipeline that runs as written.
//!
//! The pipeline shows the pieces a researcher needs on day one (a `cmd` stage with a param,
//! a `foreach` over a list of values, deps, outs and a metrics file) and nothing else, so it
//! can be read in a minute and edited into the real thing. The cache directory is added to
//! `.gitignore` (once; an existing file keeps its content), and so is the block of declared
//! outputs that `repro run` keeps current (`repro_engine::gitignore_with_block`). An existing pipeline is
//! never overwritten.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// The pipeline `repro init` writes. Plain POSIX shell and awk, so it runs anywhere.
pub const TEMPLATE: &str = r#"# yaml-language-server: $schema=pipeline.schema.json
# A repro pipeline. `repro run` runs what is stale; `repro status` says what and why;
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

/// The schema file `init` writes beside the pipeline, which the template's first line names
/// for the YAML language server (`repro schema -o pipeline.schema.json` refreshes it).
pub const SCHEMA_FILE: &str = "pipeline.schema.json";

/// The JSON Schema of pipeline.yaml as `repro schema` prints it.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&repro_engine::pipeline_schema())
        .expect("a JSON value serialises");
    text.push('\n');
    text
}

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
    // Everything that can fail is checked before anything is written: a `.gitignore` that
    // cannot be read must not leave a pipeline behind.
    let ignore = dir.join(".gitignore");
    let old = read_ignore(&ignore)?;
    let addition = addition_to(&old);
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
    // An editor's schema: written when absent (one that is there may be newer or the user's).
    let schema = dir.join(SCHEMA_FILE);
    if !schema.exists() && !schema.is_symlink() {
        repro_engine::write_atomic(&schema, schema_text().as_bytes())
            .with_context(|| format!("cannot write {}", schema.display()))?;
        done.push(format!(
            "wrote {} (the schema editors read: see the first line of pipeline.yaml)",
            schema.display()
        ));
    }
    // The template's outputs, in the block `repro run` keeps current (before the cache line).
    let outs: Vec<String> = repro_engine::load(&pipeline, &Default::default())
        .map(|p| {
            p.stages
                .iter()
                .flat_map(|s| s.outs.iter().map(|o| o.path.clone()))
                .collect()
        })
        .unwrap_or_default();
    let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let mut new = repro_engine::gitignore_with_block(&old, &outs).unwrap_or_else(|| old.clone());
    let listed = new != old;
    if let Some(bytes) = &addition {
        new.extend_from_slice(bytes);
    }
    if new != old {
        use std::io::Write;
        if new.starts_with(&old) {
            // Appending keeps every byte that was there, even if the file changed meanwhile.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&ignore)
                .and_then(|mut f| f.write_all(&new[old.len()..]))
        } else {
            repro_engine::write_atomic(&ignore, &new).map_err(std::io::Error::other)
        }
        .with_context(|| format!("cannot write {}", ignore.display()))?;
    }
    if listed {
        done.push(format!(
            "listed the pipeline's {} declared outputs in {} (a marked block `repro run` keeps current)",
            outs.len(),
            ignore.display()
        ));
    }
    if addition.is_some() {
        done.push(format!("added {IGNORE_LINE} to {}", ignore.display()));
    }
    Ok(done)
}

/// The bytes to append to a `.gitignore` so that it ignores the cache, or `None` when an
/// equivalent line is already there. Works on bytes: a `.gitignore` need not be UTF-8, and
/// what it holds is kept as it is.
#[cfg(test)]
fn ignore_addition(path: &Path) -> Result<Option<Vec<u8>>> {
    Ok(addition_to(&read_ignore(path)?))
}

/// A `.gitignore`'s bytes (none when there is no file).
fn read_ignore(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The bytes to append to a `.gitignore` holding `old` so that it ignores the cache.
fn addition_to(old: &[u8]) -> Option<Vec<u8>> {
    let covered = old
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .any(|l| matches!(l, b"cache" | b"cache/" | b"/cache" | b"/cache/"));
    if covered {
        return None;
    }
    let mut text = Vec::new();
    if !old.is_empty() && !old.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(
        b"# repro's cache (outputs, run cache, logs); commit repro.lock, not this\n",
    );
    text.extend_from_slice(IGNORE_LINE.as_bytes());
    text.push(b'\n');
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_entry_is_added_once_and_keeps_existing_lines() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".gitignore"), "*.pyc").unwrap();
        init(d.path()).unwrap();
        let g = d.path().join(".gitignore");
        let text = std::fs::read_to_string(&g).unwrap();
        assert!(text.starts_with("*.pyc\n"), "{text}");
        assert_eq!(text.lines().filter(|l| *l == IGNORE_LINE).count(), 1);
        assert_eq!(ignore_addition(&g).unwrap(), None);
        std::fs::write(&g, "cache/\n").unwrap();
        assert_eq!(ignore_addition(&g).unwrap(), None);
    }

    #[test]
    fn a_gitignore_that_is_not_utf8_keeps_its_bytes_and_gets_the_entry() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join(".gitignore");
        let old = b"caf\xe9.log\n*.pyc".to_vec();
        std::fs::write(&g, &old).unwrap();
        let done = init(d.path()).unwrap();
        // pipeline.yaml, its schema, the outputs' block, /cache/.
        assert_eq!(done.len(), 4, "{done:?}");
        assert!(done[3].starts_with("added /cache/"), "{done:?}");
        assert!(d.path().join("pipeline.yaml").is_file());
        let bytes = std::fs::read(&g).unwrap();
        assert!(bytes.starts_with(&old), "{bytes:?}");
        assert!(bytes.ends_with(b"\n/cache/\n"), "{bytes:?}");
    }

    #[test]
    fn an_unreadable_gitignore_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        // A directory at .gitignore cannot be read as a file, even by root.
        std::fs::create_dir(d.path().join(".gitignore")).unwrap();
        let err = init(d.path()).unwrap_err();
        assert!(format!("{err:#}").contains(".gitignore"), "{err:#}");
        assert!(!d.path().join("pipeline.yaml").exists());
    }
}
