//! The state database under `cache/`: the stat cache and the run cache.
//!
//! redb gives crash-safe, fsync'd transactions in one file with no server, so a run killed at
//! any moment leaves either the old or the new state, never a torn one. The run cache maps a
//! stage key to the output manifest that key produced, so an earlier configuration's outputs
//! come back without recomputing. One process at a time holds the file; a reader that finds it
//! busy (`repro status` during a run) works without it rather than waiting.
//!
//! It is a cache and nothing else: everything in it can be recomputed from the workspace, the
//! lock file and `cache/objects`. So a file that cannot be read (truncated, half-created by a
//! process that died while creating it, written by another format version) is rebuilt with a
//! warning, never a reason for every later command to fail; redb may panic on some damaged
//! files, and that is caught too. Errors of the file system itself (permissions, full disk)
//! are reported, naming the file, and nothing is deleted for them.

// redb's unified error is large; it only travels inside this module's open and write paths
// (callers get anyhow errors), so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::state::hashing::{self, StatKey};

const STAT: TableDefinition<&str, &[u8]> = TableDefinition::new("stat");
/// stage key → JSON RunRecord
const RUNS: TableDefinition<&str, &str> = TableDefinition::new("runs");
/// "lock" → blake3 of repro.lock's text (32 bytes) + the same lock as JSON: parsing YAML is
/// the slowest part of a no-op run on large pipelines, JSON is several times faster.
const PARSED_LOCK: TableDefinition<&str, &[u8]> = TableDefinition::new("parsed_lock");
/// plan key → the checked plan (`crate::state::plan_cache`). Created by the first write, so opening
/// a database made before it existed writes nothing.
const PLANS: TableDefinition<&str, &[u8]> = TableDefinition::new("plans");
/// Plans kept (one per combination of pipeline file and options); more clears the table.
const MAX_PLANS: u64 = 16;

/// What the run cache remembers of one successful execution.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct RunRecord {
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
    pub fingerprint: Option<crate::state::fingerprint::Fingerprint>,
    /// Which outputs hold metrics (`metrics:`, or a kind's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// The mode (masked with `hashing::MODE_BITS`) of each file output whose mode is not
    /// 0644; a directory's files have theirs in its manifest. (Records from before modes were
    /// kept restore 0644, as they always did.)
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub modes: std::collections::BTreeMap<String, u32>,
    /// The machine it ran on (`crate::environment::Environment`, with the stage's thread
    /// count), kept as JSON so that records of any format stay readable; absent in records
    /// written before it was kept and in those restored from a remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<serde_json::Value>,
}

impl RunRecord {
    /// The mode to restore the file output `path` with.
    pub(crate) fn file_mode(&self, path: &str) -> u32 {
        self.modes
            .get(path)
            .map_or(hashing::FILE_MODE, |m| m & hashing::MODE_BITS)
    }
}

/// The state database (`cache/state.redb`): stat cache, run cache, parsed lock and checked plans.
pub struct StateDb {
    db: Database,
    path: PathBuf,
    /// The first I/O error of a write: after one, redb answers every later write with only
    /// "Previous I/O error occurred", which would hide the cause (e.g. a full disk).
    first_io: std::sync::Mutex<Option<String>>,
}

/// The stat cache as loaded.
pub(crate) type StatEntries = hashing::PathMap<(StatKey, [u8; 32])>;

/// Called with the database as soon as it is open, before the stat cache is read (the state
/// loader hands the stored plan to the main thread from here; see `session::StateLoader`).
pub(crate) type OnOpen<'a> = &'a mut dyn FnMut(&StateDb);

/// Why the database could not be opened.
enum OpenFailure {
    /// Another process holds it.
    Busy,
    /// The file is damaged or not a state database: rebuild it.
    Unreadable(String),
    /// The file system refused (permissions, read-only, full): report, delete nothing.
    Io(redb::Error),
}

impl OpenFailure {
    fn of(e: redb::Error) -> OpenFailure {
        use std::io::ErrorKind::{InvalidData, UnexpectedEof};
        match e {
            redb::Error::DatabaseAlreadyOpen => OpenFailure::Busy,
            // redb reports a bad header or a short file as these.
            redb::Error::Io(io) if matches!(io.kind(), InvalidData | UnexpectedEof) => {
                OpenFailure::Unreadable(io.to_string())
            }
            e @ (redb::Error::Io(_) | redb::Error::PreviousIo) => OpenFailure::Io(e),
            other => OpenFailure::Unreadable(other.to_string()),
        }
    }
}

thread_local! {
    /// Set while this thread runs redb code whose panics are caught and reported as damage.
    static QUIET_PANICS: Cell<bool> = const { Cell::new(false) };
}

/// Run `f`, turning a panic into an error without printing the panic message (other threads'
/// panics are printed as usual).
fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET_PANICS.with(|q| q.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(false));
    r.map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown".into());
        format!("the database library failed on it: {msg}")
    })
}

impl StateDb {
    /// Open (or create) the database, waiting up to `wait` if another process holds it.
    /// Returns `Ok(None)` if it stays busy.
    pub fn open(path: &Path, wait: Duration) -> Result<Option<StateDb>> {
        Ok(Self::open_and_load(path, wait)?.map(|(db, _)| db))
    }

    /// Open (or create) the database and load the stat cache, waiting up to `wait` if another
    /// process holds it (`Ok(None)` if it stays busy). A damaged file is rebuilt, with a
    /// warning.
    pub(crate) fn open_and_load(
        path: &Path,
        wait: Duration,
    ) -> Result<Option<(StateDb, StatEntries)>> {
        Self::open_and_load_with(path, wait, &mut |_| {})
    }

    /// [`Self::open_and_load`], calling `on_open` as soon as the database is open.
    pub(crate) fn open_and_load_with(
        path: &Path,
        wait: Duration,
        on_open: OnOpen,
    ) -> Result<Option<(StateDb, StatEntries)>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let io_error = |e: redb::Error| {
            anyhow::Error::new(e).context(format!("cannot open state database {}", path.display()))
        };
        match Self::try_open(path, wait, &mut *on_open) {
            Ok(x) => Ok(Some(x)),
            Err(OpenFailure::Busy) => Ok(None),
            Err(OpenFailure::Io(e)) => Err(io_error(e)),
            Err(OpenFailure::Unreadable(why)) => {
                eprintln!(
                    "warning: the state database {} is unreadable ({why}); rebuilding it \
                     (it is a cache: unchanged files are hashed once more, and results of \
                     configurations other than those in repro.lock are no longer restorable)",
                    path.display()
                );
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
                match Self::try_open(path, wait, on_open) {
                    Ok(x) => Ok(Some(x)),
                    Err(OpenFailure::Busy) => Ok(None),
                    Err(OpenFailure::Io(e)) => Err(io_error(e)),
                    Err(OpenFailure::Unreadable(why)) => {
                        anyhow::bail!("cannot rebuild state database {}: {why}", path.display())
                    }
                }
            }
        }
    }

    /// For commands that only read: the database and its stat cache if they can be had now,
    /// else `None` (busy, on a read-only file system, damaged: a warning, and the next
    /// `repro run` rebuilds it). Never fails, never deletes.
    #[cfg(test)]
    pub(crate) fn open_for_reading(path: &Path) -> Option<(StateDb, StatEntries)> {
        Self::open_for_reading_with(path, &mut |_| {})
    }

    /// [`Self::open_for_reading`], calling `on_open` as soon as the database is open.
    pub(crate) fn open_for_reading_with(
        path: &Path,
        on_open: OnOpen,
    ) -> Option<(StateDb, StatEntries)> {
        if let Some(dir) = path.parent()
            && std::fs::create_dir_all(dir).is_err()
        {
            return None;
        }
        match Self::try_open(path, Duration::ZERO, on_open) {
            Ok(x) => Some(x),
            Err(OpenFailure::Unreadable(why)) => {
                eprintln!(
                    "warning: the state database {} is unreadable ({why}); working without it \
                     (the next `repro run` rebuilds it)",
                    path.display()
                );
                None
            }
            Err(OpenFailure::Busy) => None,
            // A read-only file system or cache directory: redb opens its file for writing
            // (and marks it open in its header), so a reader works on a copy in memory; what
            // it would write is dropped with it.
            Err(OpenFailure::Io(_)) => Self::open_copy(path, on_open),
        }
    }

    /// [`Self::open_for_reading_with`] on a copy of the file in memory (`None`: no file, or
    /// not a database).
    fn open_copy(path: &Path, on_open: OnOpen) -> Option<(StateDb, StatEntries)> {
        use redb::StorageBackend;
        let bytes = std::fs::read(path).ok()?;
        let mem = redb::backends::InMemoryBackend::new();
        mem.set_len(bytes.len() as u64).ok()?;
        mem.write(0, &bytes).ok()?;
        drop(bytes);
        catch_quietly(|| {
            let db = Database::builder()
                .create_with_backend(mem)
                .map_err(redb::Error::from)?;
            Self::with_tables(db, path, on_open)
        })
        .ok()?
        .ok()
    }

    fn try_open(
        path: &Path,
        wait: Duration,
        on_open: OnOpen,
    ) -> Result<(StateDb, StatEntries), OpenFailure> {
        let start = Instant::now();
        loop {
            let attempt = catch_quietly(|| Self::open_once(path, &mut *on_open))
                .map_err(OpenFailure::Unreadable)
                .and_then(|r| r.map_err(OpenFailure::of));
            match attempt {
                Err(OpenFailure::Busy) if start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path, on_open: OnOpen) -> Result<(StateDb, StatEntries), redb::Error> {
        Self::with_tables(Database::create(path)?, path, on_open)
    }

    /// The opened database `db` of the file `path`, its tables created if missing, and its
    /// stat cache.
    fn with_tables(
        db: Database,
        path: &Path,
        on_open: OnOpen,
    ) -> Result<(StateDb, StatEntries), redb::Error> {
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
        let db = StateDb {
            db,
            path: path.to_path_buf(),
            first_io: Default::default(),
        };
        on_open(&db);
        let entries = Self::read_stat(&db.db)?;
        Ok((db, entries))
    }

    fn read_stat(db: &Database) -> Result<StatEntries, redb::Error> {
        let tx = db.begin_read()?;
        let t = tx.open_table(STAT)?;
        let mut out =
            hashing::PathMap::with_capacity_and_hasher(t.len()? as usize, Default::default());
        for item in t.iter()? {
            let (k, v) = item?;
            if let Some(e) = hashing::decode_entry(v.value()) {
                out.insert(k.value().to_string(), e);
            }
        }
        Ok(out)
    }

    /// Every stat-cache entry.
    #[cfg(test)]
    pub(crate) fn load_stat(&self) -> Result<StatEntries> {
        Self::read_stat(&self.db).map_err(|e| self.failed(e, "read"))
    }

    /// A redb error, naming the file (a full disk must say which disk).
    fn failed(&self, e: impl Into<redb::Error>, what: &str) -> anyhow::Error {
        let e = e.into();
        let mut first = self.first_io.lock().unwrap_or_else(|p| p.into_inner());
        let detail = match (&e, first.as_ref()) {
            (redb::Error::PreviousIo, Some(cause)) => format!("an earlier write failed: {cause}"),
            (redb::Error::Io(io), _) => {
                first.get_or_insert_with(|| io.to_string());
                e.to_string()
            }
            _ => e.to_string(),
        };
        anyhow::anyhow!(
            "cannot {what} the state database {}: {detail}",
            self.path.display()
        )
    }

    pub(crate) fn save_stat(&self, entries: &[(String, StatKey, [u8; 32])]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let write = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(STAT)?;
                for (p, k, h) in entries {
                    t.insert(p.as_str(), hashing::encode_entry(k, h).as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| self.failed(e, "write"))
    }

    /// The JSON form of a lock file whose text hashes to `text_hash`, if remembered.
    pub(crate) fn parsed_lock(&self, text_hash: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(PARSED_LOCK)?;
        Ok(t.get("lock")?
            .map(|v| v.value().to_vec())
            .filter(|v| v.len() >= 32 && v[..32] == text_hash[..])
            .map(|v| v[32..].to_vec()))
    }

    pub(crate) fn put_parsed_lock(&self, text_hash: &[u8; 32], json: &[u8]) -> Result<()> {
        let mut value = text_hash.to_vec();
        value.extend_from_slice(json);
        let write = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(PARSED_LOCK)?;
                t.insert("lock", value.as_slice())?;
            }
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| self.failed(e, "write"))
    }

    /// The stored plan under `key`, as bytes (checked by `crate::state::plan_cache`).
    pub fn plan(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let t = match tx.open_table(PLANS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    /// The keys of every stored plan.
    pub fn plan_keys(&self) -> Result<Vec<String>> {
        let tx = self.db.begin_read()?;
        let t = match tx.open_table(PLANS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut keys = Vec::new();
        for item in t.iter()? {
            keys.push(item?.0.value().to_string());
        }
        Ok(keys)
    }

    /// Store the checked plan under `key` (bytes as the plan cache encodes them).
    pub fn put_plan(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let write = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(PLANS)?;
                if t.len()? >= MAX_PLANS && t.get(key)?.is_none() {
                    t.retain(|_, _| false)?;
                }
                t.insert(key, bytes)?;
            }
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| self.failed(e, "write"))
    }

    pub(crate) fn get_run(&self, key: &str) -> Result<Option<RunRecord>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(RUNS)?;
        Ok(match t.get(key)? {
            Some(v) => serde_json::from_str(v.value()).ok(),
            None => None,
        })
    }

    pub(crate) fn put_run(&self, key: &str, rec: &RunRecord) -> Result<()> {
        self.put_runs(&[(key, rec)])
    }

    /// Several run-cache entries in one transaction (one commit, one flush: a pull records
    /// hundreds of entries at once).
    pub(crate) fn put_runs(&self, recs: &[(&str, &RunRecord)]) -> Result<()> {
        let mut json = Vec::with_capacity(recs.len());
        for (key, rec) in recs {
            json.push((*key, serde_json::to_string(rec)?));
        }
        let write = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(RUNS)?;
                for (key, json) in &json {
                    t.insert(*key, json.as_str())?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| self.failed(e, "write"))
    }

    pub(crate) fn remove_run(&self, key: &str) -> Result<()> {
        let write = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(RUNS)?;
                t.remove(key)?;
            }
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| self.failed(e, "write"))
    }

    /// All run-cache entries (key, record).
    pub(crate) fn runs(&self) -> Result<Vec<(String, RunRecord)>> {
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
                modes: Default::default(),
                environment: None,
            };
            db.put_run("k1", &rec).unwrap();
            // Several in one transaction (a pull's prefetch).
            let other = RunRecord {
                stage: "b".into(),
                ..rec.clone()
            };
            db.put_runs(&[("k2", &other), ("k3", &rec)]).unwrap();
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
        assert_eq!(db.get_run("k2").unwrap().unwrap().stage, "b");
        assert_eq!(db.runs().unwrap().len(), 3);
        assert_eq!(db.load_stat().unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_file_is_rebuilt_and_a_reader_works_without_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.redb");
        drop(StateDb::open(&p, Duration::ZERO).unwrap().unwrap());
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len / 3).unwrap();
        drop(f);
        assert!(StateDb::open_for_reading(&p).is_none());
        assert!(p.exists(), "a reader deletes nothing");
        let (db, stat) = StateDb::open_and_load(&p, Duration::ZERO).unwrap().unwrap();
        assert!(stat.is_empty());
        db.put_run(
            "k",
            &RunRecord {
                stage: "s".into(),
                outs: Default::default(),
                dirs: vec![],
                created: 1,
                seconds: 0.0,
                fingerprint: None,
                metrics: vec![],
                modes: Default::default(),
                environment: None,
            },
        )
        .unwrap();
    }
}
