//! The state database under `cache/`: the stat cache and the run cache.
//!
//! redb gives crash-safe, fsync'd transactions in one file with no server, so a run killed at
//! any moment leaves either the old or the new state, never a torn one. The run cache maps a
//! stage key to the output manifest that key produced, so an earlier configuration's outputs
//! come back without recomputing. One process at a time holds the file; a reader that finds it
//! busy (`repro status` during a run) works without it rather than waiting.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::hashing::{self, StatKey};

const STAT: TableDefinition<&str, &[u8]> = TableDefinition::new("stat");
/// stage key → JSON RunRecord
const RUNS: TableDefinition<&str, &str> = TableDefinition::new("runs");
/// "lock" → blake3 of repro.lock's text (32 bytes) + the same lock as JSON: parsing YAML is
/// the slowest part of a no-op run on large pipelines, JSON is several times faster.
const PARSED_LOCK: TableDefinition<&str, &[u8]> = TableDefinition::new("parsed_lock");

/// What the run cache remembers of one successful execution.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RunRecord {
    pub stage: String,
    /// Output path → content hash (file hash, or directory manifest hash).
    pub outs: std::collections::BTreeMap<String, String>,
    /// Which outputs are directories.
    #[serde(default)]
    pub dirs: Vec<String>,
    /// Milliseconds since the epoch when recorded (orders entries for `gc --keep-last`;
    /// seconds would tie for stages recorded in the same second).
    pub created: u64,
    /// Seconds the stage took to run.
    #[serde(default)]
    pub seconds: f64,
    /// What the key was computed from, so `repro exp show` can say how configurations differ
    /// (absent in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<crate::fingerprint::Fingerprint>,
    /// Which outputs hold metrics (`metrics:`, or a kind's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
}

pub struct StateDb {
    db: Database,
}

impl StateDb {
    /// Open (or create) the database, waiting up to `wait` if another process holds it.
    /// Returns `Ok(None)` if it stays busy.
    pub fn open(path: &Path, wait: Duration) -> Result<Option<StateDb>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let start = Instant::now();
        loop {
            match Database::create(path) {
                Ok(db) => {
                    // Create the tables once; later opens only read (and so work on a full disk).
                    let exists = {
                        let r = db.begin_read()?;
                        r.open_table(STAT).is_ok()
                            && r.open_table(RUNS).is_ok()
                            && r.open_table(PARSED_LOCK).is_ok()
                    };
                    if !exists {
                        let tx = db.begin_write()?;
                        tx.open_table(STAT)?;
                        tx.open_table(RUNS)?;
                        tx.open_table(PARSED_LOCK)?;
                        tx.commit()?;
                    }
                    return Ok(Some(StateDb { db }));
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Ok(None),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot open state database {}", path.display()));
                }
            }
        }
    }

    /// Every stat-cache entry.
    pub fn load_stat(&self) -> Result<hashing::PathMap<(StatKey, [u8; 32])>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(STAT)?;
        let mut out = hashing::PathMap::with_capacity_and_hasher(t.len()? as usize, Default::default());
        for item in t.iter()? {
            let (k, v) = item?;
            if let Some(e) = hashing::decode_entry(v.value()) {
                out.insert(k.value().to_string(), e);
            }
        }
        Ok(out)
    }

    pub fn save_stat(&self, entries: &[(String, StatKey, [u8; 32])]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(STAT)?;
            for (p, k, h) in entries {
                t.insert(p.as_str(), hashing::encode_entry(k, h).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The JSON form of a lock file whose text hashes to `text_hash`, if remembered.
    pub fn parsed_lock(&self, text_hash: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(PARSED_LOCK)?;
        Ok(t.get("lock")?
            .map(|v| v.value().to_vec())
            .filter(|v| v.len() >= 32 && v[..32] == text_hash[..])
            .map(|v| v[32..].to_vec()))
    }

    pub fn put_parsed_lock(&self, text_hash: &[u8; 32], json: &[u8]) -> Result<()> {
        let mut value = text_hash.to_vec();
        value.extend_from_slice(json);
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(PARSED_LOCK)?;
            t.insert("lock", value.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn get_run(&self, key: &str) -> Result<Option<RunRecord>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(RUNS)?;
        Ok(match t.get(key)? {
            Some(v) => serde_json::from_str(v.value()).ok(),
            None => None,
        })
    }

    pub fn put_run(&self, key: &str, rec: &RunRecord) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(RUNS)?;
            t.insert(key, serde_json::to_string(rec)?.as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn remove_run(&self, key: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(RUNS)?;
            t.remove(key)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// All run-cache entries (key, record).
    pub fn runs(&self) -> Result<Vec<(String, RunRecord)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(RUNS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            if let Ok(r) = serde_json::from_str(v.value()) {
                out.push((k.value().to_string(), r));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_stat_persist_and_second_open_is_busy() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.redb");
        {
            let db = StateDb::open(&p, Duration::ZERO).unwrap().unwrap();
            let rec = RunRecord {
                stage: "a".into(),
                outs: [("o".to_string(), "h".to_string())].into(),
                dirs: vec![],
                created: 1,
                seconds: 0.5,
                fingerprint: None,
                metrics: vec![],
            };
            db.put_run("k1", &rec).unwrap();
            let k = StatKey {
                dev: 1,
                ino: 2,
                size: 3,
                mtime_ns: 4,
                ctime_ns: 5,
            };
            db.save_stat(&[("f".into(), k, [9; 32])]).unwrap();
            assert!(
                StateDb::open(&p, Duration::from_millis(100))
                    .unwrap()
                    .is_none()
            );
        }
        let db = StateDb::open(&p, Duration::ZERO).unwrap().unwrap();
        assert_eq!(db.get_run("k1").unwrap().unwrap().stage, "a");
        assert_eq!(db.load_stat().unwrap().len(), 1);
    }
}
