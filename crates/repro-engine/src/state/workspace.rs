//! The workspace and the one function that decides whether a stage is fresh.
//!
//! `assess` computes a stage's fingerprint from the workspace as it is now and compares it and
//! the recorded output hashes with the lock entry. `repro run` uses it to decide what to run,
//! `repro status` to explain; both call exactly this code, so they cannot disagree.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cache::Cache;
use crate::spec::Stage;
use crate::state::db::StateDb;
use crate::state::fingerprint::{Change, Fingerprint, How, Part};
use crate::state::hashing::{Content, Hasher, SeenLog, StatCache};
use crate::state::lockfile::{LockEntry, LockFile};

/// Paths of one workspace: `pipeline.yaml`'s directory.
pub struct Workspace {
    pub root: PathBuf,
    pub cache_dir: PathBuf,
    pub lock_path: PathBuf,
    pub stat: StatCache,
    /// `None` only for a reader that could not have it (see [`Workspace::db`]).
    db: Option<StateDb>,
    pub objects: Cache,
    /// Stats of the pipeline's source deps taken while building the DAG (see `Dag::source_stats`).
    pub source_stats: crate::state::hashing::PathMap<std::fs::Metadata>,
    /// What every stat behind a hash said this invocation (for [`crate::state::up_to_date`]).
    pub seen: SeenLog,
    /// blake3 of the `repro.lock` bytes [`read_lock`] parsed (`None`: no lock file).
    pub lock_hash: Option<[u8; 32]>,
}

impl Workspace {
    /// Open the workspace state. `wait_db`: how long to wait if another process holds the
    /// state database (a reader may pass zero and work without it).
    pub fn open(root: &Path, wait_db: Duration) -> Result<Workspace> {
        Self::open_with(root, wait_db, &mut |_| {})
    }

    /// [`Self::open`], calling `on_open` as soon as the state database is open.
    pub fn open_with(
        root: &Path,
        wait_db: Duration,
        on_open: crate::state::db::OnOpen,
    ) -> Result<Workspace> {
        let cache_dir = root.join("cache");
        let (db, stat) =
            match StateDb::open_and_load_with(&cache_dir.join("state.redb"), wait_db, on_open)? {
                Some((db, entries)) => (Some(db), StatCache::from_entries(entries)),
                None => (None, StatCache::default()),
            };
        Ok(Self::with_state(root, db, stat))
    }

    /// Open the workspace state for a command that only reads (`status`, `--dry-run`):
    /// without the state database when it cannot be had — busy, unreadable, or on a
    /// read-only file system (its stat cache only saves re-hashing).
    pub fn open_for_reading(root: &Path) -> Result<Workspace> {
        Self::open_for_reading_with(root, &mut |_| {})
    }

    /// [`Self::open_for_reading`], calling `on_open` as soon as the state database is open.
    pub fn open_for_reading_with(
        root: &Path,
        on_open: crate::state::db::OnOpen,
    ) -> Result<Workspace> {
        let cache_dir = root.join("cache");
        let (db, stat) =
            match StateDb::open_for_reading_with(&cache_dir.join("state.redb"), on_open) {
                Some((db, entries)) => (Some(db), StatCache::from_entries(entries)),
                None => (None, StatCache::default()),
            };
        Ok(Self::with_state(root, db, stat))
    }

    fn with_state(root: &Path, db: Option<StateDb>, stat: StatCache) -> Workspace {
        let cache_dir = root.join("cache");
        Workspace {
            root: root.to_path_buf(),
            lock_path: root.join("repro.lock"),
            objects: Cache::new(&cache_dir),
            cache_dir,
            stat,
            db,
            source_stats: Default::default(),
            seen: SeenLog::default(),
            lock_hash: None,
        }
    }

    /// Close the state database; the in-memory maps are left to the process exit (see the
    /// end of `Session::close`, called just before the process ends).
    pub fn close(mut self) {
        drop(self.db.take());
        std::mem::forget(self);
    }

    /// The state database. Commands that write (`run`, `gc`, `pull`) open the workspace with
    /// [`Self::open`] and fail there if it cannot be had, so for them this never errs; a
    /// reader gets an error naming the file.
    pub fn db(&self) -> Result<&StateDb> {
        match &self.db {
            Some(db) => Ok(db),
            None => bail!(
                "the state database {} is held by another process (a run is in progress?); \
                 try again when it ends",
                self.cache_dir.join("state.redb").display()
            ),
        }
    }

    /// The state database when this reader could open it.
    pub fn db_if_open(&self) -> Option<&StateDb> {
        self.db.as_ref()
    }

    pub fn hasher(&self) -> Hasher<'_> {
        Hasher {
            root: &self.root,
            cache: &self.stat,
            known: Some(&self.source_stats),
            seen: Some(&self.seen),
            clock: crate::state::hashing::fs_now_ns,
        }
    }

    /// Persist stat-cache entries learned during this invocation.
    pub fn save_stat(&self) -> Result<()> {
        if let Some(db) = &self.db {
            db.save_stat(&self.stat.take_dirty())?;
        }
        Ok(())
    }

    /// Whether the run cache holds outputs for this stage key (false without the database).
    pub fn in_run_cache(&self, key: &str) -> Result<bool> {
        Ok(match &self.db {
            Some(db) => db.get_run(key)?.is_some(),
            None => false,
        })
    }

    pub fn log_path(&self, stage: &str) -> PathBuf {
        self.cache_dir
            .join("logs")
            .join(format!("{}.log", file_safe(stage)))
    }
}

/// A stage name made safe as a file name (expanded names contain `@` and `,`).
pub(crate) use crate::fsutil::stage_file_name as file_safe;

/// The verdict on one stage.
#[derive(Debug, Clone)]
pub(crate) struct Assessment {
    pub fingerprint: Fingerprint,
    pub key: String,
    /// Empty when fresh; otherwise why not, in words.
    pub reasons: Vec<String>,
    /// The same reasons, typed: which part changed and how (`status --json`'s `changes`).
    pub changes: Vec<Change>,
    /// Current content of each declared output.
    pub outs: BTreeMap<String, Content>,
}

impl Assessment {
    pub(crate) fn fresh(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The fingerprint of a stage from the workspace as it is now.
pub(crate) fn fingerprint(ws: &Workspace, stage: &Stage) -> Result<Fingerprint> {
    let (action, with) = stage.action.key();
    let paths: Vec<&str> = stage.deps.iter().map(|d| d.path.as_str()).collect();
    let contents = ws
        .hasher()
        .contents(&paths)
        .with_context(|| format!("stage '{}': hashing its deps", stage.name))?;
    let mut deps = BTreeMap::new();
    for (p, c) in paths.iter().zip(contents) {
        deps.insert(p.to_string(), c.hash().unwrap_or("missing").to_string());
    }
    let mut fp = Fingerprint {
        action,
        with,
        params: stage.params.clone(),
        deps,
        outs: stage.outs.iter().map(|o| o.path.clone()).collect(),
        ..Default::default()
    };
    // `env:`, `tools:`, `container:` (nothing to do for a stage without them).
    crate::declared::fill(&ws.hasher(), stage, &mut fp)?;
    Ok(fp)
}

/// Decide whether `stage` is fresh against its lock entry, and why not.
pub(crate) fn assess(
    ws: &Workspace,
    stage: &Stage,
    entry: Option<&LockEntry>,
) -> Result<Assessment> {
    let fingerprint = fingerprint(ws, stage)?;
    let key = fingerprint.key();
    let out_paths: Vec<&str> = stage.outs.iter().map(|o| o.path.as_str()).collect();
    let contents = ws
        .hasher()
        .contents(&out_paths)
        .with_context(|| format!("stage '{}': hashing its outputs", stage.name))?;
    let outs: BTreeMap<String, Content> = out_paths
        .iter()
        .map(|p| p.to_string())
        .zip(contents)
        .collect();
    let mut changes = Vec::new();
    match entry {
        None => changes.push(Change::new(Part::NeverRun, "never run".to_string())),
        Some(e) => {
            if e.key != key {
                let why = fingerprint.changes(&e.fingerprint);
                if why.is_empty() {
                    // Equal fingerprints, different keys: the entry's key was not made from
                    // its fingerprint by this version's encoding.
                    changes.push(Change::new(
                        Part::Encoding,
                        "its lock entry was written by another key encoding".into(),
                    ));
                }
                changes.extend(why);
            }
            for (p, c) in &outs {
                let output = |how: How, word: &str| {
                    let mut c = Change::new(Part::Output, format!("output {p} {word}"));
                    (c.how, c.path) = (Some(how), Some(p.clone()));
                    c
                };
                match (c.hash(), e.out_hashes.get(p)) {
                    (None, _) => changes.push(output(How::Missing, "missing")),
                    (Some(h), Some(rec)) if h != rec => {
                        changes.push(output(How::Modified, "modified"))
                    }
                    (Some(_), None) => changes.push(output(How::NotRecorded, "not recorded")),
                    _ => {}
                }
            }
        }
    }
    Ok(Assessment {
        fingerprint,
        key,
        reasons: changes.iter().map(|c| c.text.clone()).collect(),
        changes,
        outs,
    })
}

/// Assess many stages at once, in parallel, against the files as they are now. Each result is
/// exactly what [`assess`] would say for that stage alone, given that no upstream stage
/// changes its outputs in between (the caller re-assesses the stages for which that fails).
pub(crate) fn assess_all(
    ws: &Workspace,
    p: &crate::spec::Pipeline,
    stages: &[usize],
    lock: &crate::state::lockfile::LockFile,
) -> Vec<Result<Assessment>> {
    use rayon::prelude::*;
    let one = |&i: &usize| {
        let s = &p.stages[i];
        assess(ws, s, lock.stages.get(&s.name))
    };
    if stages.len() < 64 {
        stages.iter().map(one).collect()
    } else {
        stages.par_iter().with_min_len(16).map(one).collect()
    }
}

/// An exclusive hold on the workspace for one `repro run`, released when dropped (and by the
/// kernel if the process dies, so a killed run never leaves a lock that needs clearing).
pub(crate) struct WorkspaceLock {
    file: File,
    path: PathBuf,
    /// The previous holder ended without releasing it (killed): its leftovers may need
    /// collecting.
    pub taken_over: bool,
}

impl WorkspaceLock {
    /// Take the lock, waiting for it if `wait`, else failing with the holder's pid.
    pub(crate) fn acquire(cache_dir: &Path, wait: bool) -> Result<WorkspaceLock> {
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("cannot create {}", cache_dir.display()))?;
        let path = cache_dir.join("run.pid");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let previous = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let holder = || {
            previous
                .map(|p| format!("pid {p}"))
                .unwrap_or_else(|| "another process".into())
        };
        // SAFETY: flock on a descriptor we own.
        let mut held = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !held && wait {
            // Say what we wait for: a long run can hold the workspace for hours.
            eprintln!(
                "waiting for the workspace lock {}, held by {} …",
                path.display(),
                previous.map_or_else(|| "another repro command".into(), describe_holder)
            );
            loop {
                // SAFETY: as above, blocking.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                    held = true;
                    break;
                }
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    break;
                }
            }
        }
        if !held {
            let holder = holder();
            bail!(
                "another `repro run` ({holder}) is using this workspace ({}); wait for it to finish, stop it, or pass --wait",
                path.display()
            );
        }
        // Read again now that we hold it: a holder we waited for cleared it when it ended.
        let previous = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let mut taken_over = false;
        if let Some(p) = previous {
            // SAFETY: kill with signal 0 only checks whether the pid exists.
            if p != std::process::id() as i32 && unsafe { libc::kill(p, 0) } != 0 {
                taken_over = true;
                eprintln!(
                    "note: taking over the workspace lock left by pid {p}, which is no longer running"
                );
            }
        }
        // The pid is only information for the next contender (the flock is the lock), so a
        // full disk must not stop us here, and it needs no fsync.
        let _ = file
            .set_len(0)
            .and_then(|_| write!(file, "{}", std::process::id()));
        Ok(WorkspaceLock {
            file,
            path,
            taken_over,
        })
    }
}

/// The process holding the workspace lock, in words: "`repro run` (pid 12)".
fn describe_holder(pid: i32) -> String {
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args = argv
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let exe = args.next().unwrap_or_default();
    let name = Path::new(&exe)
        .file_name()
        .map_or_else(|| "repro".into(), |n| n.to_string_lossy().into_owned());
    match args.find(|a| !a.starts_with('-')) {
        Some(sub) if !exe.is_empty() => format!("`{name} {sub}` (pid {pid})"),
        _ => format!("another repro command (pid {pid})"),
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = &self.path;
    }
}

/// Read the lock file of a workspace, through the state database's parsed copy when the
/// text is unchanged (the YAML file stays the source of truth: the copy is keyed by its hash).
pub(crate) fn read_lock(ws: &mut Workspace) -> Result<LockFile> {
    ws.lock_hash = None;
    let text = match std::fs::read(&ws.lock_path) {
        Ok(t) => t,
        Err(_) => return LockFile::read(&ws.lock_path),
    };
    let hash = *blake3::hash(&text).as_bytes();
    let lock = parse_lock(ws, &text, hash)?;
    ws.lock_hash = Some(hash);
    Ok(lock)
}

/// Replace `repro.lock` with `lock` and keep its parsed copy under the hash of the text
/// written, so that the next command does not parse the YAML again (about a second at 10,000
/// stages). The copy is what was serialised, which parsing the text gives back (the round trip
/// is tested in `state::lockfile`). Keeping it is best effort.
pub fn write_lock(ws: &Workspace, lock: &LockFile) -> Result<()> {
    let text = lock.to_text()?;
    crate::fsutil::write_atomic(&ws.lock_path, text.as_bytes())?;
    if let (Some(db), Ok(json)) = (&ws.db, serde_json::to_vec(lock)) {
        let _ = db.put_parsed_lock(blake3::hash(text.as_bytes()).as_bytes(), &json);
    }
    Ok(())
}

fn parse_lock(ws: &Workspace, text: &[u8], hash: [u8; 32]) -> Result<LockFile> {
    let Some(db) = &ws.db else {
        return LockFile::parse(text, &ws.lock_path);
    };
    if let Some(json) = db.parsed_lock(&hash)?
        && let Ok(lock) = serde_json::from_slice::<LockFile>(&json)
        // A copy parsed by an older repro was not checked (`LockFile::check`).
        && lock.check().is_ok()
    {
        return Ok(lock);
    }
    let lock = LockFile::parse(text, &ws.lock_path)?;
    // Best effort: a failure here only costs the next run a YAML parse.
    let _ = db.put_parsed_lock(&hash, &serde_json::to_vec(&lock)?);
    Ok(lock)
}
