//! `repro cache verify` and `repro gc`: keeping the cache honest and bounded.
//!
//! gc holds the workspace lock while it works, so it can never remove an object that a
//! running `repro run` is storing or restoring. A cache directory shared by several
//! workspaces (`cache: {dir: …}`) is another matter: one workspace's lock and records say
//! nothing about what the others need, so gc never removes objects from it; it says so and
//! names the workspaces registered as its users (see `cache::links`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::state::lockfile::LockFile;
use crate::state::workspace::{Workspace, WorkspaceLock};

/// Re-hash every cache object; corrupt ones are reported and removed, and run-cache entries
/// that needed them are dropped (their stages recompute next time).
pub fn verify(root: &Path) -> Result<i32> {
    let _lock = WorkspaceLock::acquire(&root.join("cache"), true)?;
    let ws = Workspace::open(root, Duration::from_secs(30))?;
    let (n, bad) = ws.objects.verify()?;
    for b in &bad {
        println!("corrupt: {b}");
    }
    let mut dropped = 0;
    if let Some(db) = ws.db_if_open() {
        for (key, rec) in db.runs()? {
            if !record_complete(&ws, &rec) {
                db.remove_run(&key)?;
                dropped += 1;
            }
        }
    }
    println!(
        "{n} objects checked, {} corrupt{}",
        bad.len(),
        if dropped > 0 {
            format!(", {dropped} run-cache entries dropped")
        } else {
            String::new()
        }
    );
    Ok(if bad.is_empty() { 0 } else { 1 })
}

fn record_complete(ws: &Workspace, rec: &crate::state::db::RunRecord) -> bool {
    rec.outs.iter().all(|(path, hash)| {
        if rec.dirs.contains(path) {
            ws.objects
                .manifest(hash)
                .map(|files| files.iter().all(|f| ws.objects.has(&f.hash)))
                .unwrap_or(false)
        } else {
            ws.objects.has(hash)
        }
    })
}

/// Remove objects that neither the lock file nor a kept run-cache entry references.
/// `keep_last`: keep only the newest N run-cache entries per stage and, unless `keep_exp`
/// names experiments, the newest N experiments and every named one (None = keep all): a count
/// that kept every experiment would keep every entry a run ever recorded.
/// `keep_exp`: keep only these experiments (empty = all); the entries a kept experiment or the
/// lock uses are always kept, and with `keep_exp` no others are.
pub fn gc(root: &Path, keep_last: Option<usize>, keep_exp: &[String]) -> Result<i32> {
    let _lock = WorkspaceLock::acquire(&root.join("cache"), true)?;
    let ws = Workspace::open(root, Duration::from_secs(30))?;
    let db = ws.db()?;
    let lock = LockFile::read(&ws.lock_path)?;

    let mut by_stage: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let runs = db.runs()?;
    for (key, rec) in &runs {
        by_stage
            .entry(rec.stage.clone())
            .or_default()
            .push((rec.created, key.clone()));
    }
    let locked_keys: HashSet<&str> = lock.stages.values().map(|e| e.key.as_str()).collect();
    // What `exp apply` of a kept experiment needs stays.
    let (exp_keys, dropped_exps) = crate::experiments::gc_keep(&ws.cache_dir, keep_exp, keep_last)?;
    if dropped_exps > 0 {
        println!("removed {dropped_exps} experiment records (--keep-last / --keep-exp)");
    }
    let mut dropped_runs = 0;
    if keep_last.is_some() || !keep_exp.is_empty() {
        let n = keep_last.unwrap_or(0);
        for entries in by_stage.values_mut() {
            entries.sort_by(|a, b| b.cmp(a));
            for (_, key) in entries.iter().skip(n) {
                if !locked_keys.contains(key.as_str()) && !exp_keys.contains(key) {
                    db.remove_run(key)?;
                    dropped_runs += 1;
                }
            }
        }
    }

    let mut live: HashSet<String> = HashSet::new();
    let add = |hash: &str, live: &mut HashSet<String>| {
        if live.insert(hash.to_string())
            && let Ok(files) = ws.objects.manifest(hash)
        {
            for f in files {
                live.insert(f.hash);
            }
        }
    };
    for e in lock.stages.values() {
        for h in e.out_hashes.values() {
            add(h, &mut live);
        }
    }
    for (_, rec) in db.runs()? {
        for h in rec.outs.values() {
            add(h, &mut live);
        }
    }
    if let Some(shared) = &ws.objects.shared {
        let users = crate::cache::links::registered(shared);
        println!(
            "dropped {dropped_runs} run-cache entries; removed no objects: they are in the shared \
             cache {} that {} workspace{} use{} ({}), and this workspace's records do not say what \
             the others need",
            shared.display(),
            users.len(),
            if users.len() == 1 { "" } else { "s" },
            if users.len() == 1 { "s" } else { "" },
            users.join(", ")
        );
        return Ok(0);
    }
    // Half-written objects of killed runs are never referenced: collect them too.
    let temps = ws.objects.remove_stale_temps();
    let mut removed = 0u64;
    let mut bytes = 0u64;
    for (hash, path) in ws.objects.all_objects()? {
        if !live.contains(&hash) {
            bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    println!(
        "removed {removed} objects ({:.1} MB), {dropped_runs} run-cache entries{}; kept {} objects",
        bytes as f64 / 1e6,
        if temps > 0 {
            format!(", {temps} temporary files of interrupted runs")
        } else {
            String::new()
        },
        live.len()
    );
    Ok(0)
}
