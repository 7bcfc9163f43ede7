//! `repro push [TARGETS]`: upload the outputs and run-cache entries of fresh stages;
//! `repro push --all`: also every other entry of the local run cache (other configurations:
//! another `--set`, an earlier parameter value) whose objects are all in the local cache.
//!
//! Stages whose entry the remote already holds are skipped after one look-up. For the rest,
//! every object their outputs need is uploaded (or found present) and verified first; only
//! then is each stage's entry written, and only for stages all of whose objects made it.
//! A push killed half-way leaves objects without entries, which the next push finds present
//! and does not send again (on S3, objects of at most 1 MiB are sent again without a look-up:
//! asking costs as much as sending). Experiment records (`exp/<id>`, see [`super::exp`]) go up last,
//! each only when every entry it names is on the remote: the current experiment's by default,
//! every one with `--all`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;

use super::store::{ENTRY_VERSION, Entry, ac_path};
use super::transfer::{self, Counters, Item};
use super::{RemoteArgs, open_required};
use crate::spec::LoadOptions;
use crate::state::hashing::{Content, FILE_MODE};
use crate::state::workspace::Workspace;

/// `repro push [--all] [TARGETS]`: see the module's documentation. Returns the exit code.
pub fn push(
    file: &std::path::Path,
    load: &LoadOptions,
    targets: &[String],
    args: &RemoteArgs,
    all: bool,
) -> Result<i32> {
    let t0 = Instant::now();
    let open = crate::session::Open {
        file,
        load,
        targets,
        downstream: false,
        access: crate::session::Access::Run { wait: false },
        up_to_date: crate::session::UpToDate::Ignore,
        interrupts: false,
    };
    let crate::session::Opened::Ready(session) =
        crate::session::Session::open(&open, &mut crate::progress::Phases::start())?
    else {
        unreachable!("the up-to-date record is not asked");
    };
    // Held (the run lock with it) until the push ends.
    let session = *session;
    let store = open_required(args, &session.p)?;
    let (p, selected, ws, lock) = (&session.p, &session.selected, &session.ws, &session.lock);

    // What each fresh stage's entry will say, from its outputs as they are now (what the lock
    // records); objects missing from the local cache are stored first.
    let mut entries = Vec::new();
    let mut stale = Vec::new();
    for (&i, a) in selected
        .iter()
        .zip(crate::state::workspace::assess_all(ws, p, selected, lock))
    {
        let stage = &p.stages[i];
        let a = a?;
        if !a.fresh() {
            stale.push(format!("{} ({})", stage.name, a.reasons.join("; ")));
            continue;
        }
        // An entry must name every output, and one declared `cache: false` has no object to
        // send: such a stage is not pushed, and `run` elsewhere computes it.
        if !stage.uncached.is_empty() {
            stale.push(format!(
                "{} (declares `cache: false` output {}, which is not stored, so an entry could not restore it)",
                stage.name,
                stage.uncached.join(", ")
            ));
            continue;
        }
        let mut e = Entry {
            version: ENTRY_VERSION,
            key: a.key.clone(),
            stage: stage.name.clone(),
            outs: BTreeMap::new(),
            dirs: Vec::new(),
            sizes: BTreeMap::new(),
            created: 0,
            seconds: 0.0,
            modes: BTreeMap::new(),
        };
        if let Some(db) = ws.db_if_open()
            && let Some(rec) = db.get_run(&a.key)?
        {
            e.created = rec.created;
            e.seconds = rec.seconds;
        }
        let mut objects = Vec::new();
        for (path, content) in &a.outs {
            ws.objects.store(&ws.root.join(path), content)?;
            let hash = content.hash().expect("fresh outputs exist").to_string();
            let size = std::fs::metadata(ws.objects.object_path(&hash))?.len();
            match content {
                Content::Dir { files, .. } => {
                    e.dirs.push(path.clone());
                    objects.extend(files.iter().map(|f| (f.hash.clone(), f.size)));
                }
                Content::File { mode, .. } if *mode != FILE_MODE => {
                    e.modes.insert(path.clone(), *mode);
                }
                _ => {}
            }
            objects.push((hash.clone(), size));
            e.outs.insert(path.clone(), hash);
            e.sizes.insert(path.clone(), size);
        }
        entries.push((e, objects));
    }

    // --all: every other local run-cache entry of a selected stage (or of any stage, targets
    // or not, when none are given) whose objects are all here; one whose objects were
    // collected by `gc` is left out and counted.
    let mut incomplete = 0;
    if all {
        let names: BTreeSet<&str> = selected
            .iter()
            .map(|&i| p.stages[i].name.as_str())
            .collect();
        let mut have: BTreeSet<String> = entries.iter().map(|(e, _)| e.key.clone()).collect();
        for (key, rec) in ws.db()?.runs()? {
            if (!targets.is_empty() && !names.contains(rec.stage.as_str()))
                || !have.insert(key.clone())
            {
                continue;
            }
            match entry_of(ws, &key, &rec) {
                Some(x) => entries.push(x),
                None => incomplete += 1,
            }
        }
    }

    // One look-up per stage: an entry already there means its objects are too.
    let present: Mutex<BTreeSet<String>> = Mutex::default();
    let keys: Vec<String> = entries.iter().map(|(e, _)| e.key.clone()).collect();
    let errors = store
        .rt
        .block_on(transfer::each(keys, args.transfers, |key| {
            let (store, present) = (&store, &present);
            async move {
                if store.size_of(&ac_path(&key)).await?.is_some() {
                    present.lock().expect("not poisoned").insert(key);
                }
                Ok(())
            }
        }));
    super::fail_on(errors)?;
    let present = present.into_inner().expect("not poisoned");
    let (already, todo): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(e, _)| present.contains(&e.key));

    let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
    for (_, objs) in &todo {
        wanted.extend(objs.iter().cloned());
    }
    let items: Vec<Item> = wanted
        .iter()
        .map(|(h, s)| Item {
            hash: h.clone(),
            size: Some(*s),
            cap: None,
        })
        .collect();
    let counters = Counters::default();
    let bar = Bar::new();
    let errors = transfer::drive(
        &store,
        transfer::upload_all(&store, &ws.objects, items, args.transfers, &counters),
        || bar.show(&counters, "uploading"),
    );
    bar.clear();
    let failed: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
    for f in &failed {
        eprintln!("error: {f}");
    }
    // An entry goes up only if none of the uploads failed: a failed object may be one it needs.
    let mut pushed = 0;
    let mut records = None;
    if failed.is_empty() {
        let es: Vec<Entry> = todo.into_iter().map(|(e, _)| e).collect();
        pushed = es.len();
        let mut on_remote = present.clone();
        on_remote.extend(es.iter().map(|e| e.key.clone()));
        let errors = store.rt.block_on(transfer::each(es, args.transfers, |e| {
            let store = &store;
            async move { store.put_entry(&e).await }
        }));
        super::fail_on(errors)?;
        // Experiment records last, each once all its entries are up: every one with --all,
        // else the one the workspace holds (not when only some stages were pushed).
        let exps = if all {
            crate::experiments::list(&ws.cache_dir)?
        } else if targets.is_empty() {
            crate::experiments::current(&ws.cache_dir, lock)?
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        if !exps.is_empty() {
            records = Some(super::exp::push_records(
                &store,
                ws,
                lock,
                exps,
                &on_remote,
                args.transfers,
            )?);
        }
    }
    for s in &stale {
        println!("not pushed: {s}");
    }
    if incomplete > 0 {
        println!(
            "not pushed: {incomplete} run-cache entr{} whose objects are no longer in the local cache",
            if incomplete == 1 { "y" } else { "ies" }
        );
    }
    if let Some(r) = &records {
        for s in &r.skipped {
            println!("not pushed: {s}");
        }
        println!(
            "pushed {} experiment record{}, {} already on the remote",
            r.sent,
            if r.sent == 1 { "" } else { "s" },
            r.already
        );
    }
    println!(
        "pushed {pushed} stage{} ({} objects, {:.1} MB checked or sent), {} already on the remote, {} not fresh, to {} ({:.2}s)",
        if pushed == 1 { "" } else { "s" },
        wanted.len(),
        counters
            .total_bytes
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1e6,
        already.len(),
        stale.len(),
        store.url,
        t0.elapsed().as_secs_f64()
    );
    ws.save_stat()?;
    Ok(if failed.is_empty() { 0 } else { 1 })
}

/// The remote entry for a local run-cache record, with the objects it needs (hash, size), if
/// every one of them is in the local cache.
fn entry_of(
    ws: &Workspace,
    key: &str,
    rec: &crate::state::db::RunRecord,
) -> Option<(Entry, Vec<(String, u64)>)> {
    let size = |h: &str| {
        std::fs::metadata(ws.objects.object_path(h))
            .ok()
            .map(|m| m.len())
    };
    let mut objects = Vec::new();
    let mut sizes = BTreeMap::new();
    for (path, hash) in &rec.outs {
        let s = size(hash)?;
        if rec.dirs.contains(path) {
            for f in ws.objects.manifest(hash).ok()? {
                objects.push((f.hash.clone(), size(&f.hash)?));
            }
        }
        objects.push((hash.clone(), s));
        sizes.insert(path.clone(), s);
    }
    let e = Entry {
        version: ENTRY_VERSION,
        key: key.to_string(),
        stage: rec.stage.clone(),
        outs: rec.outs.clone(),
        dirs: rec.dirs.clone(),
        sizes,
        created: rec.created,
        seconds: rec.seconds,
        modes: rec.modes.clone(),
    };
    Some((e, objects))
}

/// A byte progress bar on a terminal; nothing otherwise.
pub(crate) struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    pub(crate) fn new() -> Bar {
        use std::io::IsTerminal;
        Bar(std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise:.dim} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b
        }))
    }

    pub(crate) fn show(&self, c: &Counters, verb: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(b) = &self.0 {
            b.set_length(c.total_bytes.load(Relaxed));
            b.set_position(c.bytes.load(Relaxed));
            b.set_message(format!(
                "{verb} {}/{} objects",
                c.objects.load(Relaxed),
                c.total_objects.load(Relaxed)
            ));
        }
    }

    pub(crate) fn clear(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}
