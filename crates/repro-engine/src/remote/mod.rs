//! A remote cache shared between workspaces, machines and CI: `repro push`, `repro pull`,
//! `repro cache verify --remote`, and the look-up `repro run` makes before running a stage
//! whose key is not in the local run cache.
//!
//! The remote is configured by `--remote URL`, else `REPRO_REMOTE`, else the pipeline's
//! `remote:` (`--no-remote` turns it off); credentials come only from the environment. It
//! holds the same objects as the local cache (`cas/`) and run-cache entries (`ac/`), see
//! [`store`]. Objects go up before the entry that names them, and come down into the local
//! cache, verified by hash, before an entry is recorded locally and outputs are placed, so
//! neither side ever sees an entry whose objects are missing, and a killed transfer leaves
//! nothing that looks fresh. Nothing here runs, or even starts its runtime, unless a remote is
//! configured and a stage actually needs it.

// Without the `remote` feature, `off` stands in for the modules that need the HTTP stack.
#[cfg(not(feature = "remote"))]
mod off;
#[cfg(not(feature = "remote"))]
pub(crate) use off::transfer;
#[cfg(not(feature = "remote"))]
pub use off::{RunRemote, exp, push, verify};
#[cfg(feature = "remote")]
pub mod exp;
#[cfg(feature = "remote")]
pub mod push;
#[cfg(feature = "remote")]
pub(crate) mod store;
#[cfg(feature = "remote")]
pub(crate) mod transfer;
#[cfg(feature = "remote")]
pub mod verify;

#[cfg(feature = "remote")]
use std::cell::{Cell, OnceCell, RefCell};
#[cfg(feature = "remote")]
use std::collections::{BTreeMap, BTreeSet, HashMap};
#[cfg(feature = "remote")]
use std::path::Path;
#[cfg(feature = "remote")]
use std::sync::Mutex;

#[cfg(feature = "remote")]
use anyhow::Context;
#[cfg(feature = "remote")]
use anyhow::Result;

#[cfg(feature = "remote")]
use crate::progress::Progress;
#[cfg(feature = "remote")]
use crate::spec::{Pipeline, Stage};
#[cfg(feature = "remote")]
use crate::state::db::RunRecord;
#[cfg(feature = "remote")]
use crate::state::workspace::{Assessment, Workspace};
#[cfg(feature = "remote")]
use store::{BadRemoteEntry, Entry, MANIFEST_CAP, Store};
#[cfg(feature = "remote")]
use transfer::{BadRemoteObject, Counters, Item};

/// Remote options shared by `run`, `pull` and `push`.
#[derive(clap::Args, Clone, Debug)]
pub struct RemoteArgs {
    /// Remote cache URL: s3://bucket/prefix, https://host/path (WebDAV) or file:///path.
    /// Overrides REPRO_REMOTE and the pipeline's `remote:`.
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// Use no remote cache, even if one is configured.
    #[arg(long, conflicts_with = "remote")]
    pub no_remote: bool,
    /// Objects transferred at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub transfers: usize,
    /// Set by `repro pull`: restore stages, never run one.
    #[arg(skip)]
    pub pull_only: bool,
}

impl Default for RemoteArgs {
    fn default() -> Self {
        RemoteArgs {
            remote: None,
            no_remote: false,
            transfers: 16,
            pull_only: false,
        }
    }
}

/// The remote URL in force, if any: `--remote`, else `REPRO_REMOTE`, else `remote:`. A plain
/// path is a shared directory (relative to the workspace when it comes from the pipeline).
#[cfg(feature = "remote")]
pub(crate) fn resolve(
    args: &RemoteArgs,
    pipeline: Option<&str>,
    root: &Path,
) -> Result<Option<String>> {
    if args.no_remote {
        return Ok(None);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let chosen = match (
        &args.remote,
        std::env::var("REPRO_REMOTE").ok().filter(|s| !s.is_empty()),
    ) {
        (Some(url), _) => Some((url.clone(), cwd)),
        (None, Some(env)) => Some((env, cwd)),
        (None, None) => pipeline.map(|p| (p.to_string(), root.to_path_buf())),
    };
    let Some((spec, base)) = chosen else {
        return Ok(None);
    };
    let url = crate::remote_url::normalise(&spec, &base)?;
    crate::remote_url::check_url(&url).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(url))
}

/// Open the remote a command needs, or say how to configure one.
#[cfg(feature = "remote")]
pub(crate) fn open_required(args: &RemoteArgs, p: &Pipeline) -> Result<Store> {
    match resolve(args, p.remote.as_deref(), &p.root)? {
        Some(url) => Store::open(&url),
        None => anyhow::bail!(
            "no remote cache configured: pass --remote URL, set REPRO_REMOTE, or add `remote: URL` to {}",
            p.file.display()
        ),
    }
}

/// The remote as `repro run` (and `repro pull`, which is a run that only restores) sees it:
/// connected on first use only, and turned off for the rest of a run after a failure that is
/// not about one object (an unreachable server should cost one warning, not one per stage).
#[cfg(feature = "remote")]
pub struct RunRemote {
    url: Option<String>,
    pull_only: bool,
    transfers: usize,
    store: OnceCell<Store>,
    off: Cell<bool>,
    /// Keys whose remote entry proved unusable in this run (warned about once).
    bad: RefCell<BTreeSet<String>>,
    /// Entries found by [`RunRemote::prefetch`] whose objects are all in the local cache.
    prefetched: RefCell<HashMap<String, Entry>>,
    /// Keys [`RunRemote::prefetch`] found no entry for (not asked again in this run).
    absent: RefCell<BTreeSet<String>>,
}

#[cfg(feature = "remote")]
impl RunRemote {
    /// The remote the options and the pipeline configure (none is fine, except for `repro pull`); it connects on first use.
    pub fn new(args: &RemoteArgs, p: &Pipeline) -> Result<RunRemote> {
        let url = resolve(args, p.remote.as_deref(), &p.root)?;
        if args.pull_only && url.is_none() {
            open_required(args, p)?;
        }
        Ok(RunRemote {
            url,
            pull_only: args.pull_only,
            transfers: args.transfers,
            store: OnceCell::new(),
            off: Cell::new(false),
            bad: RefCell::default(),
            prefetched: RefCell::default(),
            absent: RefCell::default(),
        })
    }

    /// Whether a remote is configured for this run.
    pub fn is_configured(&self) -> bool {
        self.url.is_some()
    }

    /// Whether `key`'s entry was found on the remote by [`RunRemote::prefetch`] and is not
    /// yet restored (it is in the local run cache, but it came from the remote); forgets it.
    pub(crate) fn take_prefetched(&self, key: &str) -> bool {
        self.prefetched.borrow_mut().remove(key).is_some()
    }

    /// `repro pull`: stages are restored or reported, never run.
    pub(crate) fn pull_only(&self) -> bool {
        self.pull_only
    }

    fn store(&self) -> Result<&Store> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let s = Store::open(self.url.as_deref().expect("only called with a remote"))?;
        let _ = self.store.set(s);
        Ok(self.store.get().expect("just set"))
    }

    /// For a stage whose key is not in the local run cache: if the remote has an entry for
    /// it, bring every object it needs into the local cache (verified), record the entry in
    /// the local run cache, and return it for the usual restore. In `run`, a remote problem
    /// is a warning and the stage runs; in `pull` it is the stage's error.
    pub(crate) fn fetch(
        &self,
        ws: &Workspace,
        stage: &Stage,
        id: usize,
        key: &str,
        progress: &mut Progress,
    ) -> Result<Option<RunRecord>> {
        if self.url.is_none() {
            return Ok(None);
        }
        if let Some(entry) = self.prefetched.borrow_mut().remove(key) {
            // Its objects came down (verified) and it was recorded before the scheduler
            // started.
            return Ok(Some(entry.record()));
        }
        if self.off.get() || self.bad.borrow().contains(key) || self.absent.borrow().contains(key) {
            return Ok(None);
        }
        let res = self.try_fetch(ws, stage, id, key, progress);
        progress.end_line(id);
        match res {
            Ok(r) => Ok(r),
            Err(e) if self.pull_only => Err(e),
            Err(e) => {
                if e.downcast_ref::<BadRemoteObject>().is_some()
                    || e.downcast_ref::<BadRemoteEntry>().is_some()
                {
                    // This entry only: the remote answered, so it stays in use for the others.
                    self.bad.borrow_mut().insert(key.to_string());
                    progress.println(&format!(
                        "warning: {e:#}; skipped it, running {}",
                        stage.name
                    ));
                } else {
                    progress.println(&format!(
                        "warning: remote cache {} unavailable ({e:#}); continuing without it",
                        self.url.as_deref().unwrap_or_default()
                    ));
                    self.off.set(true);
                }
                Ok(None)
            }
        }
    }

    /// Before the scheduler starts: look up, many at once, the remote entries of every stage
    /// in `planned` that is out of date, whose key is computable (every dep is here, or is
    /// written by a stage found earlier in the look-ahead, see [`OutsKnown`]) and that the
    /// local run cache lacks, and bring the objects of all the entries found
    /// into the local cache in one pool of transfers (manifests first, then the files they
    /// name), instead of one stage after another as the scheduler reaches them. An entry
    /// whose objects all arrived is kept for [`RunRemote::fetch`], which records it and
    /// restores the stage as before. Anything that goes wrong here (an unreachable remote, a
    /// bad entry, manifest or object) only leaves that stage to its own look-up in `fetch`,
    /// which applies every trust rule and reports it exactly as without the prefetch.
    pub(crate) fn prefetch(&self, ws: &Workspace, planned: &[(&Stage, &Assessment)]) {
        if self.url.is_none() || self.off.get() {
            return;
        }
        let Ok(db) = ws.db() else { return };
        let Ok(store) = self.store() else { return };
        let tmp = transfer::tmp_dir(&ws.cache_dir);
        if std::fs::create_dir_all(&tmp).is_err() {
            return;
        }
        let counters = Counters::default();
        let bar = push::Bar::new();
        let pool = |items: BTreeMap<String, Item>| {
            let items = items.into_values().collect();
            transfer::drive(
                store,
                transfer::download_all(store, &ws.objects, &tmp, items, self.transfers, &counters),
                || bar.show(&counters, "fetching"),
            )
        };
        // Look-ahead, in rounds: a stage whose deps are missing (a fresh clone) or stale
        // gets its key once the stages that write those deps have an entry (remote or local
        // run cache): their outputs' hashes are the deps' hashes after the restore. Each round
        // is one batch of look-ups, so the depth of the graph costs round trips, not every
        // stage; the objects all come down in one pool at the end.
        let mut outs_known = OutsKnown::default();
        let mut looked: BTreeSet<String> = BTreeSet::new();
        let mut found: Vec<Entry> = Vec::new();
        let mut absent_all: BTreeSet<String> = BTreeSet::new();
        let mut rounds = 0;
        loop {
            let mut wanted: Vec<(String, Vec<String>)> = Vec::new();
            for (s, a) in planned.iter().filter(|(_, a)| !a.fresh()) {
                let Some(key) = outs_known.key_after_restores(ws, a) else {
                    continue;
                };
                if !looked.insert(key.clone()) {
                    continue;
                }
                match db.get_run(&key) {
                    // Restored from the local run cache: its outputs are known too.
                    Ok(Some(rec)) => outs_known.add(&rec.outs, &rec.dirs),
                    Ok(None) => wanted.push((key, s.outs.iter().map(|o| o.path.clone()).collect())),
                    Err(_) => {}
                }
            }
            if wanted.is_empty() {
                if outs_known.grew() {
                    continue;
                }
                break;
            }
            rounds += 1;
            let round: Mutex<Vec<Entry>> = Mutex::default();
            let absent: Mutex<BTreeSet<String>> = Mutex::default();
            let each = transfer::each(wanted, self.transfers * 2, |(key, outs)| {
                let (round, absent) = (&round, &absent);
                async move {
                    let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
                    match store.entry(&key, &outs).await? {
                        Some(e) => round.lock().expect("not poisoned").push(e),
                        None => drop(absent.lock().expect("not poisoned").insert(key)),
                    }
                    Ok(())
                }
            });
            let errors = store.rt.block_on(each);
            drop(errors); // each stage's own look-up reports what went wrong
            absent_all.extend(absent.into_inner().expect("not poisoned"));
            let round = round.into_inner().expect("not poisoned");
            // Manifests (and the file outputs) of this round's entries, in one pool: the next
            // round reads deps inside a directory output from its manifest.
            let mut first = BTreeMap::new();
            for e in &round {
                for (path, hash) in &e.outs {
                    first.entry(hash.clone()).or_insert(Item {
                        hash: hash.clone(),
                        size: e.sizes.get(path).copied(),
                        cap: e.dirs.contains(path).then_some(MANIFEST_CAP),
                    });
                }
                outs_known.add(&e.outs, &e.dirs);
            }
            drop(pool(first));
            found.extend(round);
            outs_known.grew();
        }
        *self.absent.borrow_mut() = absent_all;
        if found.is_empty() {
            return;
        }
        // The files every manifest names, in one pool; an entry whose manifest is not here
        // or does not check is dropped.
        let mut files = BTreeMap::new();
        found.retain(|e| {
            let mut mine = Vec::new();
            for d in &e.dirs {
                match ws
                    .objects
                    .manifest(&e.outs[d])
                    .and_then(|m| store::check_manifest(&m).map(|()| m))
                {
                    Ok(m) => mine.extend(m),
                    Err(_) => return false,
                }
            }
            for f in mine {
                files.entry(f.hash.clone()).or_insert(Item {
                    hash: f.hash,
                    size: Some(f.size),
                    cap: None,
                });
            }
            true
        });
        drop(pool(files));
        bar.clear();
        // Kept: the entries whose every object is now in the local cache.
        let mut kept = self.prefetched.borrow_mut();
        let mut records = Vec::new();
        for e in found {
            let complete = e.outs.values().all(|h| ws.objects.has(h))
                && e.dirs.iter().all(|d| {
                    ws.objects
                        .manifest(&e.outs[d])
                        .is_ok_and(|m| m.iter().all(|f| ws.objects.has(&f.hash)))
                });
            if complete {
                records.push((e.key.clone(), e.record()));
                kept.insert(e.key.clone(), e);
            }
        }
        // Recorded in the local run cache in one transaction (not one commit per stage), after
        // `download_all`'s flush; if that fails, each stage falls back to its own look-up.
        let recs: Vec<(&str, &RunRecord)> = records.iter().map(|(k, r)| (k.as_str(), r)).collect();
        if db.put_runs(&recs).is_err() {
            kept.clear();
        }
        let n = kept.len();
        println!(
            "remote: {n} stage{} found ahead of the run, in {rounds} round{} of look-ups",
            if n == 1 { "" } else { "s" },
            if rounds == 1 { "" } else { "s" }
        );
    }

    fn try_fetch(
        &self,
        ws: &Workspace,
        stage: &Stage,
        id: usize,
        key: &str,
        progress: &mut Progress,
    ) -> Result<Option<RunRecord>> {
        let store = self.store()?;
        let outs: Vec<&str> = stage.outs.iter().map(|o| o.path.as_str()).collect();
        let Some(entry) = store.rt.block_on(store.entry(key, &outs))? else {
            return Ok(None);
        };
        progress.start(id, &stage.name, "fetching from the remote cache");
        let tmp = transfer::tmp_dir(&ws.cache_dir);
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let counters = Counters::default();
        let mut tick = |c: &Counters| progress.update(id, &stage.name, &c.describe("fetching"));
        // Manifests first: they name the files of directory outputs.
        let mut first = Vec::new();
        for (path, hash) in &entry.outs {
            first.push(Item {
                hash: hash.clone(),
                size: entry.sizes.get(path).copied(),
                cap: entry.dirs.contains(path).then_some(MANIFEST_CAP),
            });
        }
        let errors = transfer::drive(
            store,
            transfer::download_all(store, &ws.objects, &tmp, first, self.transfers, &counters),
            || tick(&counters),
        );
        fail_on(errors).map_err(|e| name_entry(e, store, key))?;
        let mut files = Vec::new();
        for d in &entry.dirs {
            // A manifest that does not parse or check is this entry's fault, not the remote's.
            let manifest = ws
                .objects
                .manifest(&entry.outs[d])
                .and_then(|m| store::check_manifest(&m).map(|()| m))
                .map_err(|e| store.bad_entry(key, format!("remote manifest of {d}: {e:#}")))?;
            files.extend(manifest.into_iter().map(|f| Item {
                hash: f.hash,
                size: Some(f.size),
                cap: None,
            }));
        }
        files.sort_by(|a, b| a.hash.cmp(&b.hash));
        files.dedup_by(|a, b| a.hash == b.hash);
        let errors = transfer::drive(
            store,
            transfer::download_all(store, &ws.objects, &tmp, files, self.transfers, &counters),
            || tick(&counters),
        );
        fail_on(errors).map_err(|e| name_entry(e, store, key))?;
        let rec = entry.record();
        ws.db()?.put_run(key, &rec)?;
        Ok(Some(rec))
    }
}

/// A bad object is its entry's problem: say which entry, so the warning names it.
#[cfg(feature = "remote")]
fn name_entry(e: anyhow::Error, store: &Store, key: &str) -> anyhow::Error {
    if e.downcast_ref::<BadRemoteObject>().is_some() {
        e.context(format!("remote run-cache entry ac/{key} on {}", store.url))
    } else {
        e
    }
}

/// One error for a list of transfer failures: the first, with a count of the others
/// (a corrupt or missing object stays recognisable by downcasting).
#[cfg(feature = "remote")]
pub(crate) fn fail_on(mut errors: Vec<anyhow::Error>) -> Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    // Report a bad object in preference to a follow-on error.
    if let Some(i) = errors
        .iter()
        .position(|e| e.downcast_ref::<BadRemoteObject>().is_some())
    {
        errors.swap(0, i);
    }
    let n = errors.len();
    let first = errors.swap_remove(0);
    Err(if n > 1 {
        first.context(format!("{n} transfers failed, the first"))
    } else {
        first
    })
}

/// The outputs a run will restore (entries found in the remote or local run cache): output
/// path → content hash, for [`RunRemote::prefetch`]'s look-ahead.
#[cfg(feature = "remote")]
#[derive(Default)]
struct OutsKnown {
    files: BTreeMap<String, String>,
    /// Directory outputs → their manifest's hash.
    dirs: BTreeMap<String, String>,
    grown: bool,
    /// Manifests read so far (hash → file path → file hash; `None`: not readable), so that a
    /// manifest is read once, not once per dep inside it and per round.
    manifests: RefCell<HashMap<String, Option<HashMap<String, String>>>>,
}

#[cfg(feature = "remote")]
impl OutsKnown {
    fn add(&mut self, outs: &BTreeMap<String, String>, dirs: &[String]) {
        for (path, hash) in outs {
            let map = if dirs.contains(path) {
                &mut self.dirs
            } else {
                &mut self.files
            };
            if map.insert(path.clone(), hash.clone()).as_ref() != Some(hash) {
                self.grown = true;
            }
        }
    }

    /// Whether anything was added since the last call.
    fn grew(&mut self) -> bool {
        std::mem::take(&mut self.grown)
    }

    /// The stage's key once the known outputs are in place; `None` while a dep is missing
    /// and nothing known will write it.
    fn key_after_restores(&self, ws: &Workspace, a: &Assessment) -> Option<String> {
        let mut after: Option<crate::state::fingerprint::Fingerprint> = None;
        for (dep, now) in &a.fingerprint.deps {
            match self.hash_of(ws, dep) {
                Some(h) if h != *now => {
                    after
                        .get_or_insert_with(|| a.fingerprint.clone())
                        .deps
                        .insert(dep.clone(), h);
                }
                None if now == "missing" => return None,
                _ => {}
            }
        }
        Some(after.map_or_else(|| a.key.clone(), |f| f.key()))
    }

    /// A dep's hash after the restores: an output itself, or a file inside a directory
    /// output whose manifest is in the local cache.
    fn hash_of(&self, ws: &Workspace, dep: &str) -> Option<String> {
        if let Some(h) = self.files.get(dep).or_else(|| self.dirs.get(dep)) {
            return Some(h.clone());
        }
        // The directory output holding it, if any: the dep's ancestors, nearest first.
        let (rest, manifest) = dep.match_indices('/').rev().find_map(|(i, _)| {
            let m = self.dirs.get(&dep[..i])?;
            Some((&dep[i + 1..], m))
        })?;
        let mut memo = self.manifests.borrow_mut();
        let files = memo.entry(manifest.clone()).or_insert_with(|| {
            let files = ws.objects.manifest(manifest).ok()?;
            Some(files.into_iter().map(|f| (f.path, f.hash)).collect())
        });
        files.as_ref()?.get(rest).cloned()
    }
}
