//! Moving objects between the local cache and a remote, many at a time.
//!
//! A download streams into a temporary file under `cache/remote-tmp/` while it is hashed,
//! and is renamed into the local cache only if its content matches its name: a corrupt or
//! truncated remote object never enters the cache, and a killed transfer leaves only
//! temporary files (cleared by the next one). An upload first asks whether the object is
//! already there (its name is its content, so present means done; on S3 objects of at most
//! 1 MiB are sent without asking, a look-up costing as much as the upload), re-hashes the
//! local copy so a damaged one is never spread, and afterwards checks what was stored: on S3
//! the ETag of the `PUT`'s answer, the MD5 of a single-part upload, else the size read back.
//!
//! Large objects (over [`multipart_threshold`], 256 MiB unless `REPRO_MULTIPART_THRESHOLD`
//! says otherwise) move in parts of [`part_size`] (64 MiB, `REPRO_PART_SIZE`), a few at once:
//! to S3 as a multipart upload (a single `PUT` is limited to 5 GB there), hashed while the
//! parts are read, and completed only if the hash matches (else aborted, so a damaged local
//! object is never spread); from S3 or HTTP as parallel ranged reads written in place, whose
//! finished parts are noted beside the partial file so that a killed download resumes where it
//! stopped, and the whole hashed before it enters the cache.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;

use super::store::{Kind, Store, TooLarge, cas_path, request_error};
use crate::cache::Cache;

/// A remote object that is absent, does not match its name, or is larger than it may be.
#[derive(Debug)]
pub(crate) struct BadRemoteObject {
    pub hash: String,
    pub url: String,
    pub problem: Problem,
}

#[derive(Debug)]
pub(crate) enum Problem {
    Missing,
    Corrupt,
    /// Larger than the entry or manifest that names it says (or than a cap): reading stopped.
    TooLarge(TooLarge),
}

impl std::fmt::Display for BadRemoteObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (hash, url) = (&self.hash, &self.url);
        match &self.problem {
            Problem::Missing => write!(f, "remote object cas/{hash} is missing from {url}"),
            Problem::Corrupt => write!(
                f,
                "remote object cas/{hash} on {url} is corrupted (content does not match its hash); not used"
            ),
            Problem::TooLarge(t) => write!(
                f,
                "remote object cas/{hash} on {url} is too large ({t}); not used"
            ),
        }
    }
}
impl std::error::Error for BadRemoteObject {}

/// What a transfer has done so far, for progress display.
#[derive(Default)]
pub(crate) struct Counters {
    pub bytes: AtomicU64,
    pub objects: AtomicU64,
    pub total_bytes: AtomicU64,
    pub total_objects: AtomicU64,
}

impl Counters {
    /// Count `items` into the totals the progress line shows.
    fn expect(&self, items: &[Item]) {
        self.total_objects
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        self.total_bytes
            .fetch_add(items.iter().filter_map(|i| i.size).sum(), Ordering::Relaxed);
    }

    pub(crate) fn describe(&self, verb: &str) -> String {
        let mb = |v: u64| v as f64 / 1e6;
        format!(
            "{verb} {}/{} objects, {:.1}/{:.1} MB",
            self.objects.load(Ordering::Relaxed),
            self.total_objects.load(Ordering::Relaxed),
            mb(self.bytes.load(Ordering::Relaxed)),
            mb(self.total_bytes.load(Ordering::Relaxed)),
        )
    }
}

/// One object to move, with its size where known. Both come from an entry or a manifest, so
/// a download reads no more than `size` (or, where that is unknown, than the server declares)
/// and never more than `cap`.
pub(crate) struct Item {
    pub hash: String,
    pub size: Option<u64>,
    pub cap: Option<u64>,
}

/// Run `fut` on the store's runtime, calling `tick` now, about every 100 ms while it runs,
/// and once when it is done (the caller's thread keeps drawing progress while transfers run
/// on the runtime's threads). The caller wakes the moment the work finishes: the ticks are
/// a timeout on a channel the transfer thread sends its result down, never a sleep that the
/// work has to wait out (a fixed sleep cost up to 100 ms per call, twice per stage, and made
/// a pull of 316 stages take 68 s where a copy takes 0.3 s).
pub(crate) fn drive<T: Send>(
    store: &Store,
    fut: impl std::future::Future<Output = T> + Send,
    mut tick: impl FnMut(),
) -> T {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let h = s.spawn(move || {
            let _ = tx.send(store.rt.block_on(fut));
        });
        tick();
        let out = loop {
            match rx.recv_timeout(TICK) {
                Ok(v) => break v,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => tick(),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    // The thread ended without sending: it panicked; re-raise its panic.
                    std::panic::resume_unwind(h.join().expect_err("no result means a panic"))
                }
            }
        };
        tick();
        out
    })
}

/// How often a running transfer redraws its progress.
const TICK: Duration = Duration::from_millis(100);

/// Apply `f` to every item, at most `jobs` at once; every failure is returned (an empty
/// list means all succeeded), so one bad object does not hide the others.
pub(crate) async fn each<T, F, Fut>(items: Vec<T>, jobs: usize, f: F) -> Vec<anyhow::Error>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    futures_util::stream::iter(items)
        .map(f)
        .buffer_unordered(jobs.max(1))
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}

/// The directory of a workspace's partial downloads.
pub(crate) fn tmp_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("remote-tmp")
}

/// Remove what a killed transfer left (the caller holds the workspace lock, so nothing in
/// there belongs to a live process).
///
/// The partial files of ranged downloads (`<hash>.part` and its list of finished parts,
/// `<hash>.done`) are kept for a day, so that the next pull resumes them; whatever is wrong
/// with one is caught by the hash of the whole before it is used.
pub(crate) fn clear_tmp(cache_dir: &Path) -> Result<()> {
    let dir = tmp_dir(cache_dir);
    let day = Duration::from_secs(24 * 3600);
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let resumable = name
            .to_str()
            .is_some_and(|n| n.ends_with(".part") || n.ends_with(".done"));
        let recent = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < day);
        if !(resumable && recent) {
            crate::cache::remove_any(&e.path());
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Objects larger than this many bytes move in parts (`REPRO_MULTIPART_THRESHOLD` overrides
/// the default of 256 MiB; the tests lower it).
pub(crate) fn multipart_threshold() -> u64 {
    env_bytes("REPRO_MULTIPART_THRESHOLD").unwrap_or(256 << 20)
}

/// The size of one part (`REPRO_PART_SIZE`, default 64 MiB; never under 5 MiB, S3's smallest
/// part but the last).
pub(crate) fn part_size() -> u64 {
    env_bytes("REPRO_PART_SIZE")
        .unwrap_or(64 << 20)
        .max(5 << 20)
}

/// Objects up to this size are uploaded to S3 without first asking whether they are there
/// (1 MiB: below it a `HEAD` costs about what the `PUT` does).
const BLIND_PUT_MAX: u64 = 1 << 20;

/// How many parts of one object move at once (memory: this many parts, plus one being read).
const PARTS_AT_ONCE: usize = 4;

fn env_bytes(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Fetch `items` that the local cache lacks into it, every one verified by hash.
pub(crate) async fn download_all(
    store: &Store,
    cache: &Cache,
    tmp: &Path,
    items: Vec<Item>,
    jobs: usize,
    c: &Counters,
) -> Vec<anyhow::Error> {
    // One transfer per object (two manifests may name the same file; two ranged downloads of
    // one object would share its partial file).
    let mut items = items;
    items.sort_by(|a, b| a.hash.cmp(&b.hash));
    items.dedup_by(|a, b| a.hash == b.hash);
    c.expect(&items);
    let placed = AtomicU64::new(0);
    let mut errors = each(items, jobs, |item| {
        let placed = &placed;
        async move {
            let r = download_one(store, cache, tmp, &item, c).await;
            c.objects.fetch_add(1, Ordering::Relaxed);
            if matches!(r, Ok(true)) {
                placed.fetch_add(1, Ordering::Relaxed);
            }
            r.map(|_| ())
        }
    })
    .await;
    // Durability is batched: one sync of the cache's file system once every object of the
    // batch is in place, before the caller records any entry that names them (an fsync per
    // object cost 2,303 fsyncs in a pull of 301 stages). A crash before it can leave a
    // renamed object whose bytes never reached the disk; no entry names it yet, and a restore
    // re-hashes every byte it copies, so such an object is found and dropped, never used.
    if placed.load(Ordering::Relaxed) > 0
        && let Err(e) = sync_fs(&cache.dir)
    {
        errors.push(e);
    }
    errors
}

/// Flush the file system holding `dir` (one `syncfs`).
fn sync_fs(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    // SAFETY: syncfs takes a valid open descriptor and touches no memory of ours.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot sync the file system of {}", dir.display()));
    }
    Ok(())
}

/// Bring one object into the local cache; `Ok(true)` when it was placed here now (not
/// already present).
async fn download_one(
    store: &Store,
    cache: &Cache,
    tmp_dir: &Path,
    item: &Item,
    c: &Counters,
) -> Result<bool> {
    let hash = &item.hash;
    if cache.has(hash) {
        c.bytes.fetch_add(item.size.unwrap_or(0), Ordering::Relaxed);
        return Ok(false);
    }
    let bad = |problem| {
        anyhow::Error::new(BadRemoteObject {
            hash: hash.clone(),
            url: store.url.clone(),
            problem,
        })
    };
    let too_large = |limit, declared| bad(Problem::TooLarge(TooLarge { limit, declared }));
    let limit = match (item.size, item.cap) {
        (Some(s), Some(c)) if s > c => return Err(too_large(c, Some(s))),
        (Some(s), _) => Some(s),
        (None, c) => c,
    };
    if store.kind != Kind::File
        && let Some(size) = item.size
        && size > multipart_threshold()
    {
        download_ranges(store, cache, tmp_dir, hash, size, c).await?;
        return Ok(true);
    }
    let got = match store.inner.get(&cas_path(hash)).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Err(bad(Problem::Missing)),
        Err(e) => {
            return Err(request_error(
                e,
                format!("downloading cas/{hash} from {}", store.url),
            ));
        }
    };
    // The server's size is a claim too: over the limit, nothing is read; under it, reading
    // still stops at the limit, so a body that does not end costs no more disk than that.
    let limit = match limit {
        Some(l) if got.meta.size > l => return Err(too_large(l, Some(got.meta.size))),
        Some(l) => l,
        None => got.meta.size,
    };
    let tmp = tmp_dir.join(format!("{hash}.{}", std::process::id()));
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut hasher = blake3::Hasher::new();
    let streamed: Result<()> = match got.payload {
        // A shared directory: read the file directly, in large blocks on a blocking thread.
        // (The generic stream reads a local file 8 KiB at a time, each read a hand-off to
        // another thread: 128 hand-offs per MB, most of a pull's time on file://.)
        object_store::GetResultPayload::File(src, _) => {
            let (tmp_path, url) = (tmp.clone(), store.url.clone());
            let h = hash.clone();
            let job = tokio::task::spawn_blocking(move || {
                let r = copy_capped(src, &mut file, &mut hasher, limit, &tmp_path, &url, &h);
                (r, file, hasher)
            });
            match job.await {
                Ok((r, f, h)) => {
                    (file, hasher) = (f, h);
                    r.map(|n| {
                        c.bytes.fetch_add(n, Ordering::Relaxed);
                    })
                    .map_err(|e| match e {
                        Copied::TooLarge => too_large(limit, None),
                        Copied::Other(e) => e,
                    })
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(anyhow::anyhow!("download of cas/{hash} failed: {e}"));
                }
            }
        }
        object_store::GetResultPayload::Stream(mut stream) => {
            let mut read = 0u64;
            async {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        request_error(e, format!("downloading cas/{hash} from {}", store.url))
                    })?;
                    read += chunk.len() as u64;
                    if read > limit {
                        return Err(too_large(limit, None));
                    }
                    hasher.update(&chunk);
                    file.write_all(&chunk)
                        .with_context(|| format!("cannot write {}", tmp.display()))?;
                    c.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            }
            .await
        }
    };
    if let Err(e) = streamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if hasher.finalize().to_hex().as_str() != hash.as_str() {
        let _ = std::fs::remove_file(&tmp);
        return Err(bad(Problem::Corrupt));
    }
    // No fsync here: `download_all` syncs once for the whole batch.
    let placed = (|| -> Result<()> {
        drop(file);
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))?;
        let obj = cache.object_path(hash);
        std::fs::create_dir_all(obj.parent().expect("object has a parent"))?;
        // Never over an object that is there (a workspace may hold a hard link to it).
        if cache.adopt(&tmp, &obj)? {
            cache.note_hashed(hash);
        }
        Ok(())
    })();
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    placed
        .with_context(|| format!("cannot place cas/{hash} in the local cache"))
        .map(|()| true)
}

/// Download a large object in parallel ranges of [`part_size`] into `<hash>.part`, noting
/// each finished part in `<hash>.done` (a killed download resumes from there), then hash the
/// whole and place it. `size` comes from the entry or manifest that names the object: every
/// range must be exactly as long as asked (a server cannot make us write more), and the hash
/// decides whether the bytes are the object's.
async fn download_ranges(
    store: &Store,
    cache: &Cache,
    tmp_dir: &Path,
    hash: &str,
    size: u64,
    c: &Counters,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let part = part_size();
    let n = size.div_ceil(part);
    let tmp = tmp_dir.join(format!("{hash}.part"));
    let done_file = tmp_dir.join(format!("{hash}.done"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    // Parts finished by an earlier, interrupted download of the same object (only if the
    // partial file has the size this one will have).
    let mut done = std::collections::BTreeSet::new();
    if file.metadata()?.len() == size {
        for l in std::fs::read_to_string(&done_file)
            .unwrap_or_default()
            .lines()
        {
            if let Ok(i) = l.parse::<u64>()
                && i < n
            {
                done.insert(i);
            }
        }
    } else {
        let _ = std::fs::remove_file(&done_file);
    }
    file.set_len(size)
        .map_err(|e| crate::cache::disk_error(e, &tmp))?;
    let resumed: u64 = done.iter().map(|i| (size - i * part).min(part)).sum();
    c.bytes.fetch_add(resumed, Ordering::Relaxed);
    let log = std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&done_file)
            .with_context(|| format!("cannot create {}", done_file.display()))?,
    );
    let location = cas_path(hash);
    let todo: Vec<u64> = (0..n).filter(|i| !done.contains(i)).collect();
    let (file, log, location, part_path) = (&file, &log, &location, tmp.as_path());
    let errors = each(todo, PARTS_AT_ONCE, |i| async move {
        let start = i * part;
        let end = (start + part).min(size);
        let what = || format!("downloading cas/{hash} from {}", store.url);
        // Each range is written where it belongs as its chunks arrive, not collected first:
        // with every part held whole (four of 64 MiB, and the buffers they were gathered in),
        // a 6 GiB pull peaked at 488 MB of private memory; streamed, a part costs only the
        // chunks in flight.
        let got = store
            .inner
            .get_opts(
                location,
                object_store::GetOptions::new().with_range(Some(start..end)),
            )
            .await
            .map_err(|e| request_error(e, what()))?;
        let mut body = got.into_stream();
        let mut at = start;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| request_error(e, what()))?;
            if at + chunk.len() as u64 > end {
                bail!(
                    "remote object cas/{hash} on {}: asked for bytes {start}..{end}, got more; not used",
                    store.url
                );
            }
            file.write_all_at(&chunk, at)
                .map_err(|e| crate::cache::disk_error(e, part_path))?;
            at += chunk.len() as u64;
            c.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        if at != end {
            bail!(
                "remote object cas/{hash} on {}: asked for bytes {start}..{end}, got {}; not used",
                store.url,
                at - start
            );
        }
        writeln!(log.lock().unwrap(), "{i}")?;
        Ok(())
    })
    .await;
    if let Some(e) = errors.into_iter().next() {
        // The finished parts stay for the next try.
        return Err(e);
    }
    let got = hash_file(&tmp)?;
    let _ = std::fs::remove_file(&done_file);
    if got != hash {
        let _ = std::fs::remove_file(&tmp);
        if !done.is_empty() {
            // Parts kept from an earlier try were not what they should be (a partial file
            // changed since): once more, from nothing.
            return Box::pin(download_ranges(store, cache, tmp_dir, hash, size, c)).await;
        }
        return Err(anyhow::Error::new(BadRemoteObject {
            hash: hash.to_string(),
            url: store.url.clone(),
            problem: Problem::Corrupt,
        }));
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))?;
    let obj = cache.object_path(hash);
    std::fs::create_dir_all(obj.parent().expect("object has a parent"))?;
    let adopted = cache
        .adopt(&tmp, &obj)
        .with_context(|| format!("cannot place cas/{hash} in the local cache"))?;
    if adopted {
        cache.note_hashed(hash);
    }
    Ok(())
}

/// blake3 of a file read in 8 MiB blocks (not mapped: a mapping of a file of many gigabytes
/// would count it all as the process's memory).
fn hash_file(p: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", p.display()))?;
        if n == 0 {
            break;
        }
        h.update_rayon(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

enum Copied {
    /// More bytes than the limit: reading stopped there.
    TooLarge,
    Other(anyhow::Error),
}

/// Copy at most `limit` bytes of `src` into `out`, hashing them; reading one byte more than
/// the limit is an error (nothing past the limit is written).
fn copy_capped(
    mut src: std::fs::File,
    out: &mut std::fs::File,
    hasher: &mut blake3::Hasher,
    limit: u64,
    tmp: &Path,
    url: &str,
    hash: &str,
) -> std::result::Result<u64, Copied> {
    use std::io::Read;
    thread_local! {
        // One buffer per blocking thread, not a fresh zeroed MiB per object (3 % of a pull's
        // samples were `memset` of new buffers).
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 1 << 20]);
    }
    BUF.with_borrow_mut(|buf| {
        let mut read = 0u64;
        loop {
            let n = match src.read(buf) {
                Ok(0) => return Ok(read),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Copied::Other(
                        anyhow::Error::new(e).context(format!("downloading cas/{hash} from {url}")),
                    ));
                }
            };
            read += n as u64;
            if read > limit {
                return Err(Copied::TooLarge);
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| {
                Copied::Other(
                    anyhow::Error::new(e).context(format!("cannot write {}", tmp.display())),
                )
            })?;
        }
    })
}

/// Upload local cache objects the remote lacks.
pub(crate) async fn upload_all(
    store: &Store,
    cache: &Cache,
    items: Vec<Item>,
    jobs: usize,
    c: &Counters,
) -> Vec<anyhow::Error> {
    c.expect(&items);
    each(items, jobs, |item| async move {
        let r = upload_one(store, cache, &item.hash, c).await;
        c.objects.fetch_add(1, Ordering::Relaxed);
        r
    })
    .await
}

async fn upload_one(store: &Store, cache: &Cache, hash: &str, c: &Counters) -> Result<()> {
    let local = cache.object_path(hash);
    let size = std::fs::metadata(&local)
        .with_context(|| format!("local cache object {} is missing", local.display()))?
        .len();
    let remote = cas_path(hash);
    // A small object on S3 is sent without asking first: the look-up costs a request as dear
    // as the `PUT` itself, and sending again what is there rewrites the same bytes under the
    // same name (content-addressed). On moto the look-up and the read-back made three requests
    // per object where `aws s3 sync` makes one, and push took 2-3x its time (docs/remote.md).
    let blind = store.kind == Kind::S3 && size <= BLIND_PUT_MAX;
    if !blind
        && let Some((have, _)) = store.size_of(&remote).await?
        && have == size
    {
        c.bytes.fetch_add(size, Ordering::Relaxed);
        return Ok(());
    }
    if store.kind == Kind::S3 && size > multipart_threshold() {
        return upload_parts(store, &local, hash, size, c).await;
    }
    let data = if size == 0 {
        bytes::Bytes::new()
    } else {
        let f = std::fs::File::open(&local)
            .with_context(|| format!("cannot read {}", local.display()))?;
        // SAFETY: cache objects are read-only and replaced only by rename, never written in place.
        let map = unsafe { memmap2::Mmap::map(&f) }
            .with_context(|| format!("cannot map {}", local.display()))?;
        bytes::Bytes::from_owner(map)
    };
    let mut h = blake3::Hasher::new();
    if data.len() > 16 << 20 {
        h.update_rayon(&data);
    } else {
        h.update(&data);
    }
    if h.finalize().to_hex().as_str() != hash {
        bail!(
            "local cache object {} is corrupted (content does not match its hash); not uploaded — run `repro cache verify`",
            local.display()
        );
    }
    let md5 = (store.kind == Kind::S3).then(|| {
        use md5::Digest;
        hex::encode(md5::Md5::digest(&data))
    });
    let put = store
        .inner
        .put(&remote, data.into())
        .await
        .map_err(|e| request_error(e, format!("uploading cas/{hash} to {}", store.url)))?;
    // S3 answers a single-part `PUT` with the MD5 of what it stored as the ETag: when that is
    // the MD5 of the bytes sent, the object is verified (size included) without reading back.
    if let (Some(md5), Some(etag)) = (&md5, &put.e_tag)
        && etag.trim_matches('"').eq_ignore_ascii_case(md5)
    {
        c.bytes.fetch_add(size, Ordering::Relaxed);
        return Ok(());
    }
    let Some((stored, etag)) = store.size_of(&remote).await? else {
        bail!("uploaded cas/{hash} to {} but it is not there", store.url);
    };
    if stored != size {
        bail!(
            "upload of cas/{hash} to {} did not verify: {stored} bytes stored, {size} sent",
            store.url
        );
    }
    if let (Some(md5), Some(etag)) = (md5, etag) {
        let etag = etag.trim_matches('"');
        // A single-part S3 upload's ETag is the MD5 of its bytes; other forms carry no digest.
        if etag.len() == 32
            && etag.bytes().all(|b| b.is_ascii_hexdigit())
            && !etag.eq_ignore_ascii_case(&md5)
        {
            bail!(
                "upload of cas/{hash} to {} did not verify: stored MD5 {etag}, sent {md5}",
                store.url
            );
        }
    }
    c.bytes.fetch_add(size, Ordering::Relaxed);
    Ok(())
}

/// A multipart upload of a large local object to S3: parts of [`part_size`] read in order and
/// hashed as they are read, [`PARTS_AT_ONCE`] in flight; completed only if the whole hashes
/// to its name (else aborted: a damaged local object is never spread), then its size is read
/// back. (A multipart ETag is not an MD5 of the bytes, so there is no digest to compare.) A
/// failed upload is aborted; the next push sends the object again from its first part.
async fn upload_parts(
    store: &Store,
    local: &Path,
    hash: &str,
    size: u64,
    c: &Counters,
) -> Result<()> {
    use std::io::Read;
    let remote = cas_path(hash);
    let what = || format!("uploading cas/{hash} to {}", store.url);
    let mut f =
        std::fs::File::open(local).with_context(|| format!("cannot read {}", local.display()))?;
    let mut up = store
        .inner
        .put_multipart(&remote)
        .await
        .map_err(|e| request_error(e, what()))?;
    let part = part_size() as usize;
    let mut h = blake3::Hasher::new();
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let mut sent = 0u64;
    let result: Result<()> = async {
        while sent < size || !pending.is_empty() {
            while sent < size && pending.len() < PARTS_AT_ONCE {
                let len = (size - sent).min(part as u64) as usize;
                let mut buf = vec![0u8; len];
                f.read_exact(&mut buf)
                    .with_context(|| format!("cannot read {}", local.display()))?;
                h.update_rayon(&buf);
                let fut = up.put_part(bytes::Bytes::from(buf).into());
                pending.push(async move { fut.await.map(|()| len as u64) });
                sent += len as u64;
            }
            match pending.next().await {
                Some(Ok(n)) => {
                    c.bytes.fetch_add(n, Ordering::Relaxed);
                }
                Some(Err(e)) => return Err(request_error(e, what())),
                None => {}
            }
        }
        if h.finalize().to_hex().as_str() != hash {
            bail!(
                "local cache object {} is corrupted (content does not match its hash); not uploaded — run `repro cache verify`",
                local.display()
            );
        }
        Ok(())
    }
    .await;
    drop(pending);
    if let Err(e) = result {
        let _ = up.abort().await;
        return Err(e);
    }
    up.complete().await.map_err(|e| request_error(e, what()))?;
    match store.size_of(&remote).await? {
        Some((stored, _)) if stored == size => Ok(()),
        Some((stored, _)) => bail!(
            "upload of cas/{hash} to {} did not verify: {stored} bytes stored, {size} sent",
            store.url
        ),
        None => bail!("uploaded cas/{hash} to {} but it is not there", store.url),
    }
}
