//! Experiments through the remote: `repro push` uploads experiment records under
//! `exp/<id>` (the current one, or with `--all` every one), and `repro pull --exp ID|NAME`
//! brings one configuration into a workspace that never ran it.
//!
//! A record on the remote is the local one ([`Experiment`]) plus, per stage, the
//! [`Fingerprint`] its key was computed from. The key is the fingerprint's hash, so a puller
//! checks each fingerprint against its key instead of trusting it, and can then write the
//! lock entry that `exp apply` writes, exactly as the stage's own run did. A record goes up
//! only after every one of its stages' `ac/` entries (and so their objects) is on the remote,
//! so a record that a colleague can see is one whose outputs they can fetch.
//!
//! `pull --exp` resolves the id locally first, else on the remote: an 8-digit id is one read
//! of `exp/<id>`; a prefix or a name needs a listing of `exp/` (and, for a name, reading each
//! record). Every record read from the remote is capped at [`EXP_CAP`] bytes and checked like
//! a local one (id = the path it came from, hex keys, printable names) and more: every key a
//! blake3 hash, every stage in this pipeline, every fingerprint hashing to its key. Entries
//! come through [`Store::entry`] (checked against the stage's declared outputs) and objects
//! through the transfer pool (verified by hash). All entries are looked up, and all objects
//! fetched, before anything is recorded; then `exp apply`'s own checks run before anything in
//! the workspace changes, so a bad record or entry changes nothing there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use super::store::{Entry, MANIFEST_CAP, Store, TooLarge, ac_path, check_manifest, is_hash};
use super::transfer::{self, BadRemoteObject, Counters, Item};
use super::{RemoteArgs, open_required};
use crate::experiments::{self, Experiment};
use crate::spec::LoadOptions;
use crate::state::fingerprint::Fingerprint;
use crate::state::lockfile::LockFile;
use crate::state::workspace::{Workspace, WorkspaceLock};

/// The record format this build writes and reads under `exp/`.
pub(crate) const SHARED_VERSION: u32 = 1;

/// The largest `exp/<id>` record read. A record holds per stage its name, its key and its
/// fingerprint (the command, params, and one path and hash per dependency): a few hundred
/// bytes to a few kB per stage pretty-printed. 16 MiB holds thousands of stages with many
/// dependencies each, far beyond the quick profile's 316, and is nothing to hold in memory.
pub(crate) const EXP_CAP: u64 = 16 << 20;

/// An experiment as stored on a remote under `exp/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Shared {
    /// [`SHARED_VERSION`].
    pub(crate) format: u32,
    /// The record as `cache/experiments/<id>.json` holds it.
    pub(crate) experiment: Experiment,
    /// Stage → what its key was computed from (the key is its hash, so it is checked).
    pub(crate) fingerprints: BTreeMap<String, Fingerprint>,
}

impl Shared {
    /// Parse and check a record read from `exp/<id>`: anything but a well-formed experiment
    /// whose id is `id`, whose keys are blake3 hashes and whose every stage has a fingerprint
    /// that hashes to its key is refused, with the reason.
    pub(crate) fn parse(bytes: &[u8], id: &str) -> Result<Shared> {
        let s: Shared = serde_json::from_slice(bytes).context("malformed experiment record")?;
        if s.format != SHARED_VERSION {
            bail!(
                "experiment record format {} (this repro reads format {SHARED_VERSION})",
                s.format
            );
        }
        let exp = &s.experiment;
        experiments::check(exp, id).map_err(|why| anyhow::anyhow!(why))?;
        for (stage, key) in &exp.stages {
            // A key names `ac/<key>` on the remote: only a hash may.
            if !is_hash(key) {
                bail!("stage '{stage}' has key '{key}', which is not a blake3 hash");
            }
            let Some(fp) = s.fingerprints.get(stage) else {
                bail!("stage '{stage}' has no fingerprint");
            };
            if fp.key() != *key {
                bail!("the fingerprint of stage '{stage}' does not hash to its key {key}");
            }
        }
        if let Some(extra) = s.fingerprints.keys().find(|k| !exp.stages.contains_key(*k)) {
            bail!("it has a fingerprint for stage '{extra}', which it does not name");
        }
        Ok(s)
    }
}

/// Where experiment `id` lives on a remote.
pub(crate) fn exp_path(id: &str) -> ObjPath {
    ObjPath::from(format!("exp/{id}"))
}

/// What [`push_records`] did.
#[derive(Debug, Default)]
pub(crate) struct Pushed {
    /// Records written.
    pub(crate) sent: usize,
    /// Records the remote already held, unchanged.
    pub(crate) already: usize,
    /// One line per experiment not pushed, with why.
    pub(crate) skipped: Vec<String>,
}

/// For `repro push`, once entries are up: upload the records of `exps` each of whose stages
/// has its entry on the remote (`on_remote` lists keys known to be there; the others are
/// looked up) and a fingerprint that hashes to its key (from the local run cache, else the
/// lock). A remote record of the same id that names other stages is never overwritten.
pub(crate) fn push_records(
    store: &Store,
    ws: &Workspace,
    lock: &LockFile,
    exps: Vec<Experiment>,
    on_remote: &BTreeSet<String>,
    jobs: usize,
) -> Result<Pushed> {
    let mut out = Pushed::default();
    let db = ws.db()?;
    let unknown: BTreeSet<String> = exps
        .iter()
        .flat_map(|e| e.stages.values())
        .filter(|k| !on_remote.contains(*k))
        .cloned()
        .collect();
    let found: Mutex<BTreeSet<String>> = Mutex::default();
    let errors = store
        .rt
        .block_on(transfer::each(unknown.into_iter().collect(), jobs, |key| {
            let found = &found;
            async move {
                if store.size_of(&ac_path(&key)).await?.is_some() {
                    found.lock().expect("not poisoned").insert(key);
                }
                Ok(())
            }
        }));
    super::fail_on(errors)?;
    let found = found.into_inner().expect("not poisoned");
    let mut ready = Vec::new();
    'exps: for exp in exps {
        let mut fingerprints = BTreeMap::new();
        for (stage, key) in &exp.stages {
            if !on_remote.contains(key) && !found.contains(key) {
                out.skipped.push(format!(
                    "experiment {}: stage '{stage}' has no run-cache entry on the remote (push it with --all; a `cache: false` output is never pushed)",
                    exp.id
                ));
                continue 'exps;
            }
            let local = db.get_run(key)?.and_then(|r| r.fingerprint);
            let locked = || {
                (lock.stages.get(stage))
                    .filter(|l| &l.key == key)
                    .map(|l| l.fingerprint.clone())
            };
            match local.or_else(locked).filter(|fp| fp.key() == *key) {
                Some(fp) => drop(fingerprints.insert(stage.clone(), fp)),
                None => {
                    out.skipped.push(format!(
                        "experiment {}: stage '{stage}' has no recorded fingerprint for its key, so a puller could not check it",
                        exp.id
                    ));
                    continue 'exps;
                }
            }
        }
        ready.push(Shared {
            format: SHARED_VERSION,
            experiment: exp,
            fingerprints,
        });
    }
    let sent: Mutex<(usize, usize, Vec<String>)> = Mutex::default();
    let errors = store.rt.block_on(transfer::each(ready, jobs, |s| {
        let sent = &sent;
        async move {
            let id = s.experiment.id.clone();
            let body = serde_json::to_vec_pretty(&s)?;
            let there = match store.get_capped(&exp_path(&id), EXP_CAP).await {
                Ok(b) => b,
                Err(e) if e.downcast_ref::<TooLarge>().is_some() => Some(Default::default()),
                Err(e) => return Err(e),
            };
            if let Some(there) = there {
                if there.as_ref() == body.as_slice() {
                    sent.lock().expect("not poisoned").1 += 1;
                    return Ok(());
                }
                // Same id, other stages: someone else's experiment (ids are 8 digits).
                let same = Shared::parse(&there, &id)
                    .is_ok_and(|r| r.experiment.stages == s.experiment.stages);
                if !same {
                    sent.lock().expect("not poisoned").2.push(format!(
                        "experiment {id}: the remote's exp/{id} is another record (or one this repro cannot read); not overwritten"
                    ));
                    return Ok(());
                }
            }
            store
                .inner
                .put(&exp_path(&id), body.into())
                .await
                .map_err(|e| {
                    super::store::request_error(e, format!("writing exp/{id} to {}", store.url))
                })?;
            sent.lock().expect("not poisoned").0 += 1;
            Ok(())
        }
    }));
    super::fail_on(errors)?;
    let (n, already, skipped) = sent.into_inner().expect("not poisoned");
    out.sent = n;
    out.already = already;
    out.skipped.extend(skipped);
    Ok(out)
}

/// The unusable-record error for `exp/<id>`.
fn bad_record(store: &Store, id: &str, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "remote experiment record exp/{id} on {} is unusable: {why}",
        store.url
    )
}

/// Read and check `exp/<id>`; `None` when the remote has none.
async fn get_record(store: &Store, id: &str) -> Result<Option<Shared>> {
    let bytes = match store.get_capped(&exp_path(id), EXP_CAP).await {
        Ok(None) => return Ok(None),
        Ok(Some(b)) => b,
        Err(e) if e.downcast_ref::<TooLarge>().is_some() => {
            return Err(bad_record(store, id, format!("too large ({e})")));
        }
        Err(e) => return Err(e),
    };
    Shared::parse(&bytes, id)
        .map(Some)
        .map_err(|e| bad_record(store, id, format!("{e:#}")))
}

/// The ids under `exp/` (one level: the layout is flat, and nginx's WebDAV refuses an
/// infinite-depth listing).
async fn list_ids(store: &Store) -> Result<Vec<String>> {
    let listed = match store
        .inner
        .list_with_delimiter(Some(&ObjPath::from("exp")))
        .await
    {
        Ok(l) => l.objects,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => {
            return Err(super::store::request_error(
                e,
                format!("listing exp/ on {}", store.url),
            ));
        }
    };
    let mut ids: Vec<String> = listed
        .iter()
        .filter_map(|m| m.location.filename())
        .filter(|n| experiments::valid_id(n))
        .map(str::to_string)
        .collect();
    ids.sort();
    Ok(ids)
}

/// The experiment `what` names on the remote: an id (one read), a unique prefix of at least
/// 4 digits (a listing, then one read) or a name (a listing, then every record read; the
/// newest with that name wins, and a record that does not check is skipped with a warning).
fn find_remote(store: &Store, what: &str, jobs: usize) -> Result<Shared> {
    let none = || {
        anyhow::anyhow!(
            "no experiment '{what}' here or on the remote {} (`repro push` uploads the current one, `push --all` every one)",
            store.url
        )
    };
    if experiments::valid_id(what) {
        return store.rt.block_on(get_record(store, what))?.ok_or_else(none);
    }
    let ids = store.rt.block_on(list_ids(store))?;
    if what.len() >= 4 && what.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hits: Vec<&String> = ids.iter().filter(|i| i.starts_with(what)).collect();
        return match hits.as_slice() {
            [one] => store.rt.block_on(get_record(store, one))?.ok_or_else(none),
            [] => Err(none()),
            _ => bail!(
                "'{what}' names {} experiments on the remote {}; give more of the id",
                hits.len(),
                store.url
            ),
        };
    }
    let found: Mutex<Vec<Shared>> = Mutex::default();
    let errors = store.rt.block_on(transfer::each(ids, jobs, |id| {
        let found = &found;
        async move {
            match get_record(store, &id).await {
                Ok(Some(s)) if s.experiment.name.as_deref() == Some(what) => {
                    found.lock().expect("not poisoned").push(s)
                }
                Ok(_) => {}
                Err(e) => eprintln!("warning: {e:#}; skipped"),
            }
            Ok(())
        }
    }));
    super::fail_on(errors)?;
    let mut found = found.into_inner().expect("not poisoned");
    found.sort_by(|a, b| {
        (b.experiment.created, &a.experiment.id).cmp(&(a.experiment.created, &b.experiment.id))
    });
    found.into_iter().next().ok_or_else(none)
}

/// Whether the local cache holds every object of outputs `outs` (directories: `dirs`).
fn complete(ws: &Workspace, outs: &BTreeMap<String, String>, dirs: &[String]) -> bool {
    outs.iter().all(|(path, hash)| {
        ws.objects.has(hash)
            && (!dirs.contains(path)
                || ws
                    .objects
                    .manifest(hash)
                    .is_ok_and(|m| m.iter().all(|f| ws.objects.has(&f.hash))))
    })
}

/// `repro pull --exp WHAT`: bring experiment `what` (found locally, else on the remote) into
/// the local cache: every stage's run-cache entry and objects that are not here yet, through
/// the transfer pool. Then record the experiment and, when `apply`, restore the workspace to
/// it exactly as `repro exp apply` does. Any stage that cannot be had is named, and nothing
/// in the workspace changes. Returns the exit code.
pub fn pull(
    file: &Path,
    load: &LoadOptions,
    args: &RemoteArgs,
    what: &str,
    apply: bool,
) -> Result<i32> {
    let root = crate::spec::workspace_root(file);
    let cache_dir = root.join("cache");
    let _guard = WorkspaceLock::acquire(&cache_dir, false)?;
    // The remote comes from the pipeline as the command loads it (only `remote:` is read).
    let (p0, _) = crate::session::load_pipeline(file, load)?;
    let store = open_required(args, &p0)?;
    let local = experiments::list(&cache_dir)?;
    let (exp, mut fingerprints, from_remote) = match experiments::find(&local, what)? {
        Some(e) => (e.clone(), BTreeMap::new(), false),
        None => {
            let s = find_remote(&store, what, args.transfers)?;
            (s.experiment, s.fingerprints, true)
        }
    };
    // The pipeline as that run loaded it: its stage names and declared outputs.
    let mut opts = load.clone();
    opts.profile = exp.profile.clone().or(opts.profile);
    opts.overrides = exp.set.clone();
    let (p, _) = crate::session::load_pipeline(file, &opts)
        .with_context(|| format!("loading {} as experiment {} ran it", file.display(), exp.id))?;
    let ws = Workspace::open(&root, std::time::Duration::from_secs(10))?;
    transfer::clear_tmp(&cache_dir)?;

    let mut problems = Vec::new();
    // Stage, key, declared outputs: the stages whose entry or objects are not here.
    let mut wanted: Vec<(String, String, Vec<String>)> = Vec::new();
    for (stage, key) in &exp.stages {
        let Some(decl) = p.stages.iter().find(|s| &s.name == stage) else {
            // A local record's stage that left the pipeline is `exp apply`'s note; a remote
            // record must fit this pipeline whole.
            if from_remote {
                problems.push(format!(
                    "stage '{stage}' is not in {} (the experiment ran at commit {}; check that out first)",
                    file.display(),
                    exp.commit.as_deref().map_or("unknown".into(), |c| c.chars().take(8).collect::<String>())
                ));
            }
            continue;
        };
        let here = ws.db()?.get_run(key)?;
        if here
            .as_ref()
            .is_some_and(|r| complete(&ws, &r.outs, &r.dirs))
        {
            continue;
        }
        if !is_hash(key) {
            problems.push(format!("stage '{stage}': key {key} is not a blake3 hash"));
            continue;
        }
        let outs = decl.outs.iter().map(|o| o.path.clone()).collect();
        wanted.push((stage.clone(), key.clone(), outs));
    }
    if !problems.is_empty() {
        bail!(
            "cannot pull experiment {}; nothing was changed:\n  {}",
            exp.id,
            problems.join("\n  ")
        );
    }
    if !wanted.is_empty() && !from_remote {
        // A local record keeps no fingerprints: the remote's copy has them, for the lock.
        match store.rt.block_on(get_record(&store, &exp.id)) {
            Ok(Some(s)) => fingerprints = s.fingerprints,
            Ok(None) => {}
            Err(e) => eprintln!("warning: {e:#}; the stages fetched get no lock entry"),
        }
    }

    // Every entry first, 32 at a time: nothing is fetched unless all are usable.
    let found: Mutex<BTreeMap<String, Entry>> = Mutex::default();
    let missing: Mutex<Vec<String>> = Mutex::default();
    let errors = store.rt.block_on(transfer::each(
        wanted.clone(),
        args.transfers * 2,
        |(stage, key, outs)| {
            let (store, found, missing) = (&store, &found, &missing);
            async move {
                let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
                let r = store.entry(&key, &outs).await;
                match r {
                    Ok(Some(e)) => drop(found.lock().expect("not poisoned").insert(stage, e)),
                    Ok(None) => missing.lock().expect("not poisoned").push(format!(
                        "stage '{stage}': the remote has no run-cache entry ac/{key}"
                    )),
                    Err(e) => missing
                        .lock()
                        .expect("not poisoned")
                        .push(format!("stage '{stage}': {e:#}")),
                }
                Ok(())
            }
        },
    ));
    super::fail_on(errors)?;
    let mut problems = missing.into_inner().expect("not poisoned");
    problems.sort();
    if !problems.is_empty() {
        bail!(
            "cannot pull experiment {}; nothing was changed:\n  {}",
            exp.id,
            problems.join("\n  ")
        );
    }
    let found = found.into_inner().expect("not poisoned");

    // Objects: manifests and files first, then the files the manifests name, each pool
    // through the transfer module (verified by hash before entering the cache).
    let tmp = transfer::tmp_dir(&cache_dir);
    let counters = Counters::default();
    let bar = super::push::Bar::new();
    let pool = |items: Vec<Item>| {
        transfer::drive(
            &store,
            transfer::download_all(&store, &ws.objects, &tmp, items, args.transfers, &counters),
            || bar.show(&counters, "fetching"),
        )
    };
    // Which stages need each object, to name them when it fails.
    let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut first = Vec::new();
    for (stage, e) in &found {
        for (path, hash) in &e.outs {
            needs.entry(hash.clone()).or_default().insert(stage.clone());
            first.push(Item {
                hash: hash.clone(),
                size: e.sizes.get(path).copied(),
                cap: e.dirs.contains(path).then_some(MANIFEST_CAP),
            });
        }
    }
    let mut errors = pool(first);
    let mut files = Vec::new();
    for (stage, e) in &found {
        for d in &e.dirs {
            if !ws.objects.has(&e.outs[d]) {
                continue; // its download failed: reported below
            }
            match ws
                .objects
                .manifest(&e.outs[d])
                .and_then(|m| check_manifest(&m).map(|()| m))
            {
                Ok(m) => {
                    for f in m {
                        needs
                            .entry(f.hash.clone())
                            .or_default()
                            .insert(stage.clone());
                        files.push(Item {
                            hash: f.hash,
                            size: Some(f.size),
                            cap: None,
                        });
                    }
                }
                Err(why) => problems.push(format!(
                    "stage '{stage}': remote manifest of {d} (ac/{}): {why:#}",
                    e.key
                )),
            }
        }
    }
    errors.extend(pool(files));
    bar.clear();
    for e in &errors {
        let who = e
            .downcast_ref::<BadRemoteObject>()
            .and_then(|b| needs.get(&b.hash))
            .map(|s| {
                let names: Vec<String> = s.iter().map(|n| format!("'{n}'")).collect();
                format!("stage {}: ", names.join(", "))
            })
            .unwrap_or_default();
        problems.push(format!("{who}{e:#}"));
    }
    for (stage, e) in &found {
        if problems.is_empty() && !complete(&ws, &e.outs, &e.dirs) {
            problems.push(format!("stage '{stage}': some objects did not arrive"));
        }
    }
    if !problems.is_empty() {
        bail!(
            "cannot pull experiment {}; nothing in the workspace was changed (objects already fetched stay in the cache):\n  {}",
            exp.id,
            problems.join("\n  ")
        );
    }

    // Everything is here: record the entries (with the checked fingerprints, so `exp show`
    // has the params and `apply` writes the lock), then the experiment.
    for (stage, e) in &found {
        let decl = p.stages.iter().find(|s| &s.name == stage).expect("checked");
        let mut rec = e.record();
        rec.stage = stage.clone();
        rec.fingerprint = fingerprints
            .get(stage)
            .filter(|fp| fp.key() == e.key)
            .cloned();
        rec.metrics = decl.metric_paths();
        ws.db()?.put_run(&e.key, &rec)?;
    }
    if from_remote {
        experiments::adopt(&cache_dir, &exp)?;
    }
    ws.save_stat()?;
    ws.close();
    let fetched = format!(
        "fetched {} stage{} of experiment {} from {}",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        exp.id,
        store.url
    );
    println!("{fetched}");
    if apply {
        for line in experiments::apply_held(file, load, &exp)? {
            println!("{line}");
        }
    } else {
        println!(
            "the workspace is unchanged; `repro exp apply {}` restores it",
            exp.id
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(cmd: &str) -> Fingerprint {
        Fingerprint {
            action: format!("cmd: {cmd}"),
            outs: vec!["out.txt".into()],
            ..Default::default()
        }
    }

    fn shared(id: &str) -> Shared {
        let f = fp("echo 1 > out.txt");
        Shared {
            format: SHARED_VERSION,
            experiment: Experiment {
                version: 1,
                id: id.into(),
                name: Some("base".into()),
                created: 1,
                commit: None,
                dirty: false,
                profile: None,
                set: vec![("scale".into(), "2".into())],
                stages: [("gen".to_string(), f.key())].into(),
            },
            fingerprints: [("gen".to_string(), f)].into(),
        }
    }

    fn parse(s: &Shared, id: &str) -> std::result::Result<Shared, String> {
        Shared::parse(&serde_json::to_vec(s).unwrap(), id).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn a_good_record_reads_back() {
        let s = shared("abcd1234");
        assert_eq!(parse(&s, "abcd1234").unwrap(), s);
    }

    #[test]
    fn hostile_records_are_refused_with_the_reason() {
        let e = parse(&shared("abcd1234"), "abcd9999").unwrap_err();
        assert!(e.contains("not the one it is stored under"), "{e}");

        let mut s = shared("abcd1234");
        s.experiment.stages.insert("gen".into(), "../../etc".into());
        let e = parse(&s, "abcd1234").unwrap_err();
        assert!(e.contains("not a hex key"), "{e}");

        // Hex, but not a blake3 hash (so not a name `ac/` may have).
        let mut s = shared("abcd1234");
        s.experiment.stages.insert("gen".into(), "abcd".into());
        let e = parse(&s, "abcd1234").unwrap_err();
        assert!(e.contains("not a blake3 hash"), "{e}");

        // A fingerprint that does not hash to the key: a lie about what the stage ran.
        let mut s = shared("abcd1234");
        s.fingerprints.insert("gen".into(), fp("rm -rf ~"));
        let e = parse(&s, "abcd1234").unwrap_err();
        assert!(e.contains("does not hash to its key"), "{e}");

        let mut s = shared("abcd1234");
        s.fingerprints.clear();
        let e = parse(&s, "abcd1234").unwrap_err();
        assert!(e.contains("has no fingerprint"), "{e}");

        let mut s = shared("abcd1234");
        s.experiment.name = Some("\u{1b}[2J".into());
        let e = parse(&s, "abcd1234").unwrap_err();
        assert!(e.contains("control characters"), "{e}");

        let mut s = shared("abcd1234");
        s.format = 9;
        let e = parse(&s, "abcd1234").unwrap_err();
        assert!(e.contains("format 9"), "{e}");

        // `exp show` prints the first 8 characters of the commit: only a git object id.
        let mut s = shared("abcd1234");
        s.experiment.commit = Some("ééééé".into());
        let e = parse(&s, "abcd1234").unwrap_err();
        assert!(e.contains("not a git commit id"), "{e}");

        let e = Shared::parse(b"{\"format\": 1", "abcd1234").unwrap_err();
        assert!(format!("{e:#}").contains("malformed"), "{e:#}");
    }
}
