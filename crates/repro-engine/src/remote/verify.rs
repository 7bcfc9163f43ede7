//! `repro cache verify --remote`: re-hash every object on the remote and check every entry.
//!
//! Entries are listed before objects: a writer uploads an entry's objects before the entry,
//! so any entry seen here had its objects in place before the object listing began, and a
//! concurrent push is never mistaken for damage. A corrupt object is reported and removed
//! (where the remote is writable), so that the next push of a good copy restores it; an entry
//! that needs a missing or corrupt object is reported and removed too, so a reader recomputes
//! rather than fails. Nothing else on the remote is touched.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjPath;

use super::push::Bar;
use super::store::{ENTRY_CAP, Entry, MANIFEST_CAP, Store, TooLarge, ac_path, cas_path, is_hash};
use super::transfer::{self, Counters};
use super::{RemoteArgs, open_required};

/// `repro cache verify --remote`: check that every entry and object on the remote is whole; returns the exit code.
pub fn verify(file: &std::path::Path, args: &RemoteArgs) -> Result<i32> {
    let p = crate::spec::load(file, &Default::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = open_required(args, &p)?;
    let entries = store.rt.block_on(list(&store, "ac"))?;
    let objects = store.rt.block_on(list(&store, "cas"))?;

    let counters = Counters::default();
    counters
        .total_objects
        .store(objects.len() as u64, Ordering::Relaxed);
    counters
        .total_bytes
        .store(objects.iter().map(|(_, s)| s).sum(), Ordering::Relaxed);
    let bad: Mutex<Vec<String>> = Mutex::default();
    let bar = Bar::new();
    let names: Vec<String> = objects.iter().map(|(n, _)| n.clone()).collect();
    let errors = transfer::drive(
        &store,
        transfer::each(names, args.transfers, |name| {
            let (store, bad, counters) = (&store, &bad, &counters);
            async move {
                let ok = is_hash(&name) && hash_of(store, &name, counters).await? == name;
                counters.objects.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    bad.lock().expect("not poisoned").push(name);
                }
                Ok(())
            }
        }),
        || bar.show(&counters, "verifying"),
    );
    bar.clear();
    super::fail_on(errors)?;
    let bad: BTreeSet<String> = bad
        .into_inner()
        .expect("not poisoned")
        .into_iter()
        .collect();
    let good: BTreeSet<&str> = objects
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !bad.contains(*n))
        .collect();
    for name in &bad {
        let removed = store
            .rt
            .block_on(store.inner.delete(&cas_path(name)))
            .is_ok();
        println!(
            "corrupt: cas/{name} on {} (content does not match its name){}",
            store.url,
            if removed {
                "; removed"
            } else {
                "; could not remove it (read-only remote?)"
            }
        );
    }

    let mut incomplete = 0;
    for (key, _) in &entries {
        let why = store.rt.block_on(entry_problem(&store, key, &good))?;
        if let Some(why) = why {
            incomplete += 1;
            let removed = store.rt.block_on(store.inner.delete(&ac_path(key))).is_ok();
            println!(
                "incomplete: ac/{key}: {why}{}",
                if removed {
                    "; removed"
                } else {
                    "; could not remove it (read-only remote?)"
                }
            );
        }
    }
    println!(
        "{} remote objects checked, {} corrupt; {} run-cache entries checked, {} incomplete ({})",
        objects.len(),
        bad.len(),
        entries.len(),
        incomplete,
        store.url
    );
    Ok(if bad.is_empty() && incomplete == 0 {
        0
    } else {
        1
    })
}

/// Names and sizes of the objects under `dir/` (`ac` or `cas`). The layout is flat, so one
/// level is listed (nginx's WebDAV refuses `PROPFIND` with infinite depth).
async fn list(store: &Store, dir: &str) -> Result<Vec<(String, u64)>> {
    let prefix = ObjPath::from(dir);
    let listed = match store.inner.list_with_delimiter(Some(&prefix)).await {
        Ok(l) => l.objects,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => {
            return Err(super::store::request_error(
                e,
                format!("listing {dir}/ on {}", store.url),
            ));
        }
    };
    let mut out: Vec<(String, u64)> = listed
        .into_iter()
        .filter_map(|m| m.location.filename().map(|n| (n.to_string(), m.size)))
        .collect();
    out.sort();
    Ok(out)
}

/// The blake3 of a remote object's content, streamed.
async fn hash_of(store: &Store, name: &str, c: &Counters) -> Result<String> {
    let got = store.inner.get(&cas_path(name)).await.map_err(|e| {
        super::store::request_error(e, format!("reading cas/{name} from {}", store.url))
    })?;
    let mut h = blake3::Hasher::new();
    let mut s = got.into_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.with_context(|| format!("reading cas/{name} from {}", store.url))?;
        h.update(&chunk);
        c.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Why an entry cannot be restored, if it cannot.
async fn entry_problem(store: &Store, key: &str, good: &BTreeSet<&str>) -> Result<Option<String>> {
    let bytes = match store.get_capped(&ac_path(key), ENTRY_CAP).await {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None), // removed since listed
        Err(e) if e.downcast_ref::<TooLarge>().is_some() => {
            return Ok(Some(format!("entry is {e}")));
        }
        Err(e) => return Err(e),
    };
    let e = match Entry::parse_any(&bytes, key) {
        Ok(e) => e,
        Err(err) => return Ok(Some(format!("{err:#}"))),
    };
    for (path, hash) in &e.outs {
        if !good.contains(hash.as_str()) {
            return Ok(Some(format!(
                "object cas/{hash} of {path} is missing or corrupt"
            )));
        }
        if e.dirs.contains(path) {
            let text = match store.get_capped(&cas_path(hash), MANIFEST_CAP).await {
                Ok(Some(t)) => t,
                Ok(None) => return Ok(Some(format!("manifest cas/{hash} of {path} is missing"))),
                Err(e) if e.downcast_ref::<TooLarge>().is_some() => {
                    return Ok(Some(format!("manifest cas/{hash} of {path} is {e}")));
                }
                Err(e) => return Err(e),
            };
            let files = std::str::from_utf8(&text)
                .map_err(anyhow::Error::from)
                .and_then(crate::state::hashing::parse_manifest)
                .and_then(|f| super::store::check_manifest(&f).map(|_| f));
            let files = match files {
                Ok(f) => f,
                Err(err) => return Ok(Some(format!("manifest cas/{hash} of {path}: {err:#}"))),
            };
            if let Some(f) = files.iter().find(|f| !good.contains(f.hash.as_str())) {
                return Ok(Some(format!(
                    "object cas/{} of {path}/{} is missing or corrupt",
                    f.hash, f.path
                )));
            }
        }
    }
    Ok(None)
}
