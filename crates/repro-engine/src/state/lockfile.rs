//! `repro.lock`: the readable record of what each stage last produced, meant to be committed.
//!
//! Deterministic (sorted maps, no timestamps) so it diffs cleanly. Replaced atomically:
//! written to a temporary file in the same directory, fsync'd, renamed over the old one, and
//! the directory fsync'd — a run killed at any moment leaves the old or the new lock, whole.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::state::fingerprint::Fingerprint;

pub(crate) const LOCK_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    pub version: u32,
    #[serde(default)]
    pub stages: BTreeMap<String, LockEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockEntry {
    pub key: String,
    #[serde(flatten)]
    pub fingerprint: Fingerprint,
    /// Output path → content hash as produced.
    #[serde(default)]
    pub out_hashes: BTreeMap<String, String>,
}

impl LockFile {
    /// Read the lock file; a missing file is an empty lock. A corrupt one is an error naming it.
    /// The lock is shared (committed), so it is untrusted: see [`LockFile::check`].
    pub fn read(path: &Path) -> Result<LockFile> {
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(&bytes, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile {
                version: LOCK_VERSION,
                ..Default::default()
            }),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// A lock file's bytes, read from `path` (named in errors), parsed and checked.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<LockFile> {
        let invalid = || {
            format!(
                "{} is not a valid lock file (delete it to rebuild it from the cache)",
                path.display()
            )
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| anyhow::anyhow!("it is not UTF-8 text ({e})"))
            .with_context(invalid)?;
        let lock: LockFile = serde_yaml_ng::from_str(text).with_context(invalid)?;
        lock.check().with_context(invalid)?;
        Ok(lock)
    }

    /// Refuse a lock this version cannot read, and any entry whose output path the engine
    /// could be made to delete outside the rule (`crate::confine`) or whose hash is not one.
    pub fn check(&self) -> Result<()> {
        if self.version != LOCK_VERSION {
            anyhow::bail!(
                "it has version {}, and this repro reads version {LOCK_VERSION}",
                self.version
            );
        }
        for (name, e) in &self.stages {
            for (path, hash) in &e.out_hashes {
                crate::confine_rule::check_lock_path(path)
                    .map_err(|why| anyhow::anyhow!("stage '{name}': output {why}"))?;
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    anyhow::bail!("stage '{name}': output '{path}' has a malformed hash '{hash}'");
                }
            }
        }
        Ok(())
    }

    pub fn to_text(&self) -> Result<String> {
        let body = serde_yaml_ng::to_string(self)?;
        Ok(format!(
            "# Written by repro: what each stage last produced. Commit it; do not edit.\n{body}"
        ))
    }

    /// Atomically replace the lock file.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_text()?.as_bytes())
    }
}

pub(crate) use crate::fsutil::write_atomic;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_round_trips_and_is_sorted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("repro.lock");
        let mut l = LockFile {
            version: LOCK_VERSION,
            ..Default::default()
        };
        for name in ["zeta", "alpha"] {
            let fp = Fingerprint {
                action: format!("cmd: echo {name}"),
                ..Default::default()
            };
            l.stages.insert(
                name.into(),
                LockEntry {
                    key: fp.key(),
                    fingerprint: fp,
                    out_hashes: Default::default(),
                },
            );
        }
        l.write(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.find("alpha").unwrap() < text.find("zeta").unwrap());
        assert_eq!(LockFile::read(&p).unwrap(), l);
        std::fs::write(&p, b"\xff\xfe garbage").unwrap();
        let e = format!("{:#}", LockFile::read(&p).unwrap_err());
        assert!(e.contains("delete it") && e.contains("UTF-8"), "{e}");
        std::fs::write(&p, "version: 99\nstages: {}\n").unwrap();
        let e = format!("{:#}", LockFile::read(&p).unwrap_err());
        assert!(e.contains("version 99") && e.contains("delete it"), "{e}");
        let fp = Fingerprint::default();
        let mut bad = l.clone();
        bad.stages.insert(
            "gone".into(),
            LockEntry {
                key: fp.key(),
                fingerprint: fp,
                out_hashes: [("../../victim.txt".to_string(), "a".repeat(64))].into(),
            },
        );
        bad.write(&p).unwrap();
        let e = format!("{:#}", LockFile::read(&p).unwrap_err());
        assert!(
            e.contains("victim.txt") && e.contains("outside the workspace"),
            "{e}"
        );
        // Whatever a pipeline puts in `with:` and `params:` comes back from the text as it was
        // written (`workspace::write_lock` keeps the written value as the parsed copy).
        let odd = serde_json::json!({
            "f": 0.1, "big": 1e300, "tiny": 5e-324, "neg": -0.0, "int": 9007199254740993_u64,
            "min": -9223372036854775808_i64, "strs": ["yes", "no", "null", "~", "1e3", "0x1F",
            "", " lead", "a: b", "- x", "#c", "multi\nline", "tab\t", "é ü", "'q'", "\"dq\""],
            "nested": {"a": [1, {"b": null}], "true": true}, "empty": {}, "none": []
        });
        let fp = Fingerprint {
            action: "uses: train@3".into(),
            with: odd.clone(),
            params: odd.as_object().unwrap().clone().into_iter().collect(),
            ..Default::default()
        };
        let mut l2 = l.clone();
        l2.stages.insert(
            "odd@x,y".into(),
            LockEntry {
                key: fp.key(),
                fingerprint: fp,
                out_hashes: [("out/a b.txt".to_string(), "a".repeat(64))].into(),
            },
        );
        let text = l2.to_text().unwrap();
        assert_eq!(LockFile::parse(text.as_bytes(), &p).unwrap(), l2, "{text}");
        std::fs::write(&p, "stages: [oops").unwrap();
        assert!(
            LockFile::read(&p)
                .unwrap_err()
                .to_string()
                .contains("repro.lock is not a valid lock file")
        );
    }
}
