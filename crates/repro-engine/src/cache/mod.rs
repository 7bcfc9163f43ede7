//! Content-addressed output cache under `cache/objects/` (or a shared directory's `objects/`).
//!
//! Each file is stored once, under its blake3 hash (`objects/ab/cdef…`); a directory is stored
//! as its manifest (see `hashing::manifest_text`) under the manifest's hash, plus its files.
//! Objects are written to a temporary name and renamed, so a crash never leaves a truncated
//! object under a valid name, and two workspaces sharing one object store can store the same
//! object at once (both renames put the same bytes under the same name); every restored copy
//! is hashed before it is used, so a corrupted object is detected, reported by path, dropped,
//! and its stage recomputed.
//!
//! How an output is placed in the workspace is the link mode list (see [`links`]): reflinks
//! or copies by default (each output independent of the cache), or read-only hard or symbolic
//! links to the object, so an output is not stored twice. A stage never writes through such a
//! link: its outputs are removed before it runs (`run_cache::prepare_outputs`).

pub(crate) mod links;
pub(crate) mod run_cache;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::state::hashing::{
    Content, FILE_MODE, FileEntry, MODE_BITS, Manifest, manifest_text, parse_manifest_full,
};

pub struct Cache {
    /// The object store (`objects/` of the workspace's cache or of a shared cache).
    pub dir: PathBuf,
    /// How outputs are placed in the workspace, in order of preference.
    pub links: Vec<links::LinkMode>,
    /// The shared cache directory when the objects are shared with other workspaces.
    pub shared: Option<PathBuf>,
    /// Outputs declared `cache: false`: never stored here.
    uncached: std::collections::HashSet<String>,
    /// Objects this process placed after hashing every byte on the way in (a verified
    /// download): linking one to an output needs no second read of its bytes.
    hashed_here: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A restore that failed because the cache itself is damaged (not the workspace).
#[derive(Debug)]
pub(crate) struct CorruptObject {
    pub path: PathBuf,
    pub detail: String,
}

impl std::fmt::Display for CorruptObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cache object {} is {}", self.path.display(), self.detail)
    }
}
impl std::error::Error for CorruptObject {}

impl Cache {
    /// The cache of the workspace whose `cache/` is `cache_dir`: its own objects, or the
    /// shared directory that `REPRO_CACHE_DIR` names or that the last `run` recorded (see
    /// [`links::configure`]); links from `REPRO_CACHE_LINK`, else reflink → copy.
    pub fn new(cache_dir: &Path) -> Cache {
        let shared = links::recorded_shared_dir(cache_dir);
        Cache {
            dir: shared
                .as_ref()
                .map_or_else(|| cache_dir.join("objects"), |d| d.join("objects")),
            links: links::env_links()
                .and_then(|r| r.ok())
                .unwrap_or_else(links::default_links),
            shared,
            uncached: Default::default(),
            hashed_here: Default::default(),
        }
    }

    /// Note that `hash`'s object was just placed by this process from bytes it hashed while
    /// writing them (see [`Cache::restore`]: a link to it is not hashed again).
    #[cfg(feature = "remote")]
    pub(crate) fn note_hashed(&self, hash: &str) {
        let mut set = self.hashed_here.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(hash.to_string());
    }

    fn was_hashed_here(&self, hash: &str) -> bool {
        let set = self.hashed_here.lock().unwrap_or_else(|e| e.into_inner());
        set.contains(hash)
    }

    /// Whether the output `path` is declared `cache: false`.
    pub fn is_uncached(&self, path: &str) -> bool {
        self.uncached.contains(path)
    }

    pub fn object_path(&self, hash: &str) -> PathBuf {
        let (a, b) = hash.split_at(2.min(hash.len()));
        self.dir.join(a).join(b)
    }

    pub fn has(&self, hash: &str) -> bool {
        self.object_path(hash).exists()
    }

    /// Store a workspace path whose content was just hashed as `content`.
    pub fn store(&self, full: &Path, content: &Content) -> Result<()> {
        match content {
            Content::Missing => bail!("cannot store missing {}", full.display()),
            Content::File { hash, .. } => self.store_file(full, hash),
            Content::Dir {
                hash,
                files,
                empty_dirs,
                links,
            } => {
                for f in files {
                    self.store_file(&full.join(f.rel_path()), &f.hash)?;
                }
                self.store_bytes(hash, manifest_text(files, empty_dirs, links).as_bytes())
            }
        }
    }

    fn store_file(&self, src: &Path, hash: &str) -> Result<()> {
        let obj = self.object_path(hash);
        if obj.exists() {
            return Ok(());
        }
        let tmp = self.temp_for(&obj)?;
        // With hard links first, the workspace file itself becomes the object (made
        // read-only below): its bytes are not copied, and the output is not stored twice.
        // Only a file with no other name: one that shares its inode with a file elsewhere (a
        // stage that hard-linked a system or user file into its output) is copied, since
        // making the object read-only would change that other file's mode too.
        let linked = self.links.first() == Some(&links::LinkMode::Hardlink)
            && links::plain_file(src)
            && links::single_name(src)
            && std::fs::hard_link(src, &tmp).is_ok();
        let got = if linked {
            links::sync_and_hash(&tmp)
        } else {
            copy_hashing(src, &tmp, true)
        }
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        if got != hash {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "{} changed while it was being stored in the cache (expected {hash}, read {got})",
                src.display()
            );
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))?;
        let won = self
            .adopt(&tmp, &obj)
            .with_context(|| format!("cannot store {}", obj.display()))?;
        if linked && !won {
            // Another run stored the object first: the workspace file is not it, so it is
            // writable again (as it was); `link_output` links it to the stored one.
            std::fs::set_permissions(src, std::fs::Permissions::from_mode(FILE_MODE))?;
        }
        Ok(())
    }

    /// Put a finished temporary file under its object name, never replacing an object that
    /// is there (it has the same bytes, and a workspace may hold a hard link to it: replacing
    /// it would leave that output a read-only file of its own). Returns whether `tmp` became
    /// the object. A temporary on another file system (a download into a workspace's
    /// `remote-tmp/`, the objects in a shared directory elsewhere) is copied across first.
    pub(crate) fn adopt(&self, tmp: &Path, obj: &Path) -> Result<bool> {
        match std::fs::hard_link(tmp, obj) {
            Ok(()) => {
                let _ = std::fs::remove_file(tmp);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(tmp);
                Ok(false)
            }
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let near = self.temp_for(obj)?;
                let copied = std::fs::copy(tmp, &near).map_err(|e| disk_error(e, &near));
                let _ = std::fs::remove_file(tmp);
                if let Err(e) = copied {
                    let _ = std::fs::remove_file(&near);
                    return Err(e);
                }
                std::fs::set_permissions(&near, std::fs::Permissions::from_mode(0o444))?;
                self.adopt(&near, obj)
            }
            // A file system without hard links: a rename (which replaces).
            Err(_) => {
                std::fs::rename(tmp, obj).inspect_err(|_| {
                    let _ = std::fs::remove_file(tmp);
                })?;
                Ok(true)
            }
        }
    }

    fn store_bytes(&self, hash: &str, bytes: &[u8]) -> Result<()> {
        let obj = self.object_path(hash);
        if obj.exists() {
            return Ok(());
        }
        let tmp = self.temp_for(&obj)?;
        let res = (|| -> Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            Ok(())
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", obj.display()));
        }
        self.adopt(&tmp, &obj)?;
        Ok(())
    }

    pub(crate) fn temp_for(&self, obj: &Path) -> Result<PathBuf> {
        let dir = obj.parent().expect("object has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir.join(format!(".tmp-{}-{}", std::process::id(), unique())))
    }

    /// The files of a directory manifest object.
    pub fn manifest(&self, hash: &str) -> Result<Vec<FileEntry>> {
        Ok(self.manifest_full(hash)?.files)
    }

    /// Read a directory manifest object (every path in it checked, see
    /// [`parse_manifest_full`]).
    pub fn manifest_full(&self, hash: &str) -> Result<Manifest> {
        let path = self.object_path(hash);
        let text = std::fs::read_to_string(&path).map_err(|e| CorruptObject {
            path: path.clone(),
            detail: format!("unreadable ({e})"),
        })?;
        if blake3::hash(text.as_bytes()).to_hex().as_str() != hash {
            return Err(CorruptObject {
                path,
                detail: "corrupted (content does not match its hash)".into(),
            }
            .into());
        }
        parse_manifest_full(&text)
    }

    /// Materialise `hash` at `dest` (a file, or a directory if `is_dir`), replacing whatever
    /// is there. The new content is built under a temporary name and renamed into place, so
    /// `dest` never holds a partial restore. A directory being replaced is moved aside first
    /// and deleted on another thread while the new one is built (deleting 1 GiB costs about
    /// as much as copying it); the caller has put its content in the cache beforehand, and
    /// a missing output only makes its stage stale, never fresh. `file_mode` is the mode of a
    /// file output (a directory's files have theirs in its manifest).
    pub fn restore(&self, hash: &str, is_dir: bool, file_mode: u32, dest: &Path) -> Result<()> {
        let parent = dest.parent().expect("dest has a parent");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        remove_leftovers(parent, name);
        let tmp = parent.join(format!(
            ".repro-restore-{name}-{}-{}",
            std::process::id(),
            unique()
        ));
        let old_remover = match std::fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => {
                let old = parent.join(format!(
                    ".repro-old-{name}-{}-{}",
                    std::process::id(),
                    unique()
                ));
                std::fs::rename(dest, &old)
                    .with_context(|| format!("cannot move {} aside", dest.display()))?;
                Some(std::thread::spawn(move || remove_any(&old)))
            }
            // A directory cannot be renamed over a file: a file output that becomes a
            // directory (another configuration) goes first. Its content is in the cache.
            Ok(_) if is_dir => {
                std::fs::remove_file(dest)
                    .with_context(|| format!("cannot replace {}", dest.display()))?;
                None
            }
            _ => None,
        };
        let built = if is_dir {
            self.manifest_full(hash)
                .and_then(|m| self.build_dir(&m, &tmp))
                .with_context(|| format!("restoring {}", dest.display()))
        } else {
            self.restore_file(hash, file_mode, &tmp)
        };
        // `dest` is gone (moved aside or removed above) or a file replaced by a file: a rename
        // puts the new content in place atomically. Whatever fails, no temporary is left.
        let placed = built.and_then(|()| {
            std::fs::rename(&tmp, dest).with_context(|| format!("cannot place {}", dest.display()))
        });
        if placed.is_err() {
            remove_any(&tmp);
        }
        if let Some(remover) = old_remover {
            let _ = remover.join();
        }
        placed
    }

    /// Build a directory from its manifest at `tmp` (new): directories first, each checked to
    /// lie inside `tmp`, then the files, then the links (last, so nothing is written through
    /// one).
    fn build_dir(&self, m: &Manifest, tmp: &Path) -> Result<()> {
        std::fs::create_dir_all(tmp)?;
        let root = tmp.canonicalize()?;
        let mut parents = std::collections::BTreeSet::new();
        for p in m.files.iter().map(|f| f.rel_path()) {
            parents.insert(p.parent().map(Path::to_path_buf).unwrap_or_default());
        }
        for l in &m.links {
            parents.insert(
                l.rel_path()
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            );
        }
        for d in &m.empty_dirs {
            use std::os::unix::ffi::OsStringExt;
            let d = std::ffi::OsString::from_vec(crate::state::hashing::decode_name(d));
            parents.insert(PathBuf::from(d));
        }
        for rel in &parents {
            let dir = tmp.join(rel);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            // Manifest paths are checked when read; this is the last word on where bytes go.
            if !dir.canonicalize()?.starts_with(&root) {
                bail!(
                    "manifest path {} resolves outside the directory being restored",
                    rel.display()
                );
            }
        }
        use rayon::prelude::*;
        m.files
            .par_iter()
            .try_for_each(|f| self.restore_file(&f.hash, f.mode, &tmp.join(f.rel_path())))?;
        for l in &m.links {
            let at = tmp.join(l.rel_path());
            std::os::unix::fs::symlink(l.target_path(), &at)
                .with_context(|| format!("cannot create symbolic link {}", at.display()))?;
        }
        Ok(())
    }

    fn restore_file(&self, hash: &str, mode: u32, to: &Path) -> Result<()> {
        let obj = self.object_path(hash);
        if !obj.exists() {
            return Err(CorruptObject {
                path: obj,
                detail: "missing".into(),
            }
            .into());
        }
        let how = self.place(&obj, to, mode)?;
        // A link is checked by hashing the object it leads to, unless this process wrote that
        // object from bytes it hashed (a pull: every byte was hashed once on the way in, and
        // the link shares its inode); a copy by hashing the copy.
        let got = if how.is_link() && self.was_hashed_here(hash) {
            Ok(hash.to_string())
        } else if how.is_link() {
            links::hash_of(&obj)
        } else {
            links::hash_of(to)
        };
        if got.as_deref().ok() != Some(hash) {
            let _ = std::fs::remove_file(to);
            return Err(CorruptObject {
                path: obj,
                detail: "corrupted (content does not match its hash)".into(),
            }
            .into());
        }
        if !how.is_link() {
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode & MODE_BITS))?;
        }
        Ok(())
    }

    /// Remove an object (after it was found corrupt).
    pub fn drop_object(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }

    /// Every object path with its name-hash.
    pub fn all_objects(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for sub in rd {
            let sub = sub?;
            let prefix = sub.file_name().to_string_lossy().to_string();
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for obj in std::fs::read_dir(sub.path())? {
                let obj = obj?;
                let rest = obj.file_name().to_string_lossy().to_string();
                if rest.starts_with(".tmp-") {
                    continue;
                }
                out.push((format!("{prefix}{rest}"), obj.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Remove the temporary files (`.tmp-<pid>-…`) that a run killed while storing an object
    /// left in `objects/`: those whose process is gone, and any older than an hour (the pid
    /// may have been reused). The caller holds the workspace lock, so no live run is writing
    /// them. Returns how many were removed.
    pub fn remove_stale_temps(&self) -> usize {
        let Ok(subdirs) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let me = std::process::id();
        let mut removed = 0;
        for sub in subdirs.flatten() {
            let Ok(entries) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".tmp-")) else {
                    continue;
                };
                let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                // SAFETY: signal 0 only asks whether the pid exists.
                let owner_alive =
                    pid.is_some_and(|p| p == me || unsafe { libc::kill(p as i32, 0) } == 0);
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(3600));
                if (!owner_alive || old)
                    && pid != Some(me)
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Re-hash every object; returns the corrupt ones (removed) as messages.
    pub fn verify(&self) -> Result<(usize, Vec<String>)> {
        use rayon::prelude::*;
        let objs = self.all_objects()?;
        let bad: Vec<(&PathBuf, String)> = objs
            .par_iter()
            .filter_map(
                |(hash, path)| match crate::state::hashing::hash_file_bytes(path) {
                    Ok(h) if hex::encode(h) == *hash => None,
                    Ok(_) => Some((
                        path,
                        "corrupted (content does not match its hash)".to_string(),
                    )),
                    Err(e) => Some((path, format!("unreadable ({e})"))),
                },
            )
            .collect();
        // Say "removed" only of what was removed.
        let report = bad
            .into_iter()
            .map(|(path, why)| match std::fs::remove_file(path) {
                Ok(()) => format!("{}: {why}; removed", path.display()),
                Err(e) => format!("{}: {why}; could not remove it ({e})", path.display()),
            })
            .collect();
        Ok((objs.len(), report))
    }
}

/// Copy `src` to `dst` (created new) and return the blake3 hash of what landed in `dst`.
///
/// The bytes move inside the kernel — a reflink where the file system shares blocks, else
/// `copy_file_range` (through `std::io::copy`) — never through a user-space buffer; then the
/// destination is hashed through a memory map, one window at a time. Hashing the copy rather than the source means
/// the caller's check covers exactly the bytes that will be used, and it reads from the page
/// cache the copy just filled. (Reading, hashing and writing every byte in user space cost a
/// 1 GiB restore 5× a `cp -r`.)
pub(crate) fn copy_hashing(src: &Path, dst: &Path, sync: bool) -> Result<String> {
    let mut input = File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
    let mut out = File::create(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    if !reflink(&input, &out) {
        std::io::copy(&mut input, &mut out).map_err(|e| disk_error(e, dst))?;
    }
    if sync {
        out.sync_all().map_err(|e| disk_error(e, dst))?;
    }
    drop(out);
    links::hash_of(dst).with_context(|| format!("cannot read back {}", dst.display()))
}

pub(crate) fn disk_error(e: std::io::Error, path: &Path) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        anyhow::anyhow!("no space left on device while writing {}", path.display())
    } else if e.raw_os_error() == Some(libc::EFBIG) {
        anyhow::anyhow!("file size limit exceeded while writing {}", path.display())
    } else {
        anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
    }
}

/// Share the source's blocks (btrfs, XFS, …); false where unsupported.
pub(crate) fn reflink(src: &File, dst: &File) -> bool {
    use std::os::fd::AsRawFd;
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: both are open file descriptors owned by the caller for the call's duration.
    unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) == 0 }
}

/// Remove what a run killed in the middle of a restore left beside `name` in `parent` (its
/// temporary build and the old copy it was deleting). Only one run holds a workspace at a
/// time, so none of these belongs to a live process.
fn remove_leftovers(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let (old, building) = (
        format!(".repro-old-{name}-"),
        format!(".repro-restore-{name}-"),
    );
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&old) || file.starts_with(&building) {
            remove_any(&e.path());
        }
    }
}

pub(crate) fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

pub(crate) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (t << 16) ^ N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::hashing::{Hasher, StatCache};

    #[test]
    fn store_restore_round_trip_and_corruption_detected() {
        let ws = tempfile::tempdir().unwrap();
        let cache = Cache::new(&ws.path().join("cache"));
        std::fs::create_dir_all(ws.path().join("out/sub")).unwrap();
        std::fs::write(ws.path().join("out/sub/a.txt"), "alpha").unwrap();
        std::fs::write(ws.path().join("out/b.txt"), "beta").unwrap();
        let sc = StatCache::default();
        let content = Hasher::new(ws.path(), &sc).content("out").unwrap();
        cache.store(&ws.path().join("out"), &content).unwrap();
        std::fs::remove_dir_all(ws.path().join("out")).unwrap();
        cache
            .restore(content.hash().unwrap(), true, 0, &ws.path().join("out"))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(ws.path().join("out/sub/a.txt")).unwrap(),
            "alpha"
        );
        let sc2 = StatCache::default();
        assert_eq!(
            Hasher::new(ws.path(), &sc2).content("out").unwrap(),
            content
        );

        // Corrupt one object: restore fails naming it, verify reports and removes it.
        let Content::Dir { files, .. } = &content else {
            panic!()
        };
        let obj = cache.object_path(&files[0].hash);
        std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&obj, "tampered").unwrap();
        let err = cache
            .restore(content.hash().unwrap(), true, 0, &ws.path().join("out"))
            .unwrap_err();
        assert!(err.downcast_ref::<CorruptObject>().is_some(), "{err:#}");
        // The replaced directory was moved aside (its content is in the cache) and nothing
        // partial took its place: no `out`, and no temporary or old copy left beside it.
        assert!(
            !ws.path().join("out").exists(),
            "a failed restore must not leave a partial output"
        );
        let beside: Vec<_> = std::fs::read_dir(ws.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            beside
                .iter()
                .all(|n| !n.to_string_lossy().starts_with(".repro-")),
            "{beside:?}"
        );
        let (n, bad) = cache.verify().unwrap();
        assert_eq!(n, 3);
        assert_eq!(bad.len(), 1);
        assert!(!obj.exists());
    }

    #[test]
    fn a_hard_linked_output_sharing_its_inode_with_a_file_elsewhere_is_copied_not_adopted() {
        let ws = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let theirs = elsewhere.path().join("dataset.gz");
        std::fs::write(&theirs, "someone else's bytes").unwrap();
        // A stage placed its output as a hard link to a file outside the workspace.
        std::fs::hard_link(&theirs, ws.path().join("out.gz")).unwrap();
        let mut cache = Cache::new(&ws.path().join("cache"));
        cache.links = vec![links::LinkMode::Hardlink, links::LinkMode::Copy];
        let sc = StatCache::default();
        let content = Hasher::new(ws.path(), &sc).content("out.gz").unwrap();
        cache.store(&ws.path().join("out.gz"), &content).unwrap();
        let mode = std::fs::metadata(&theirs).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o644,
            "the file outside the workspace was made read-only"
        );
        let obj = cache.object_path(content.hash().unwrap());
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            std::fs::metadata(&obj).unwrap().ino(),
            std::fs::metadata(&theirs).unwrap().ino(),
            "the object is the outside file itself"
        );

        // A file with no other name still becomes the object (nothing copied).
        std::fs::write(ws.path().join("own.bin"), "own bytes").unwrap();
        let own = Hasher::new(ws.path(), &sc).content("own.bin").unwrap();
        cache.store(&ws.path().join("own.bin"), &own).unwrap();
        assert_eq!(
            std::fs::metadata(cache.object_path(own.hash().unwrap()))
                .unwrap()
                .ino(),
            std::fs::metadata(ws.path().join("own.bin")).unwrap().ino()
        );
    }

    #[test]
    fn restores_keep_modes_empty_dirs_and_inner_links() {
        use std::os::unix::fs::symlink;
        let ws = tempfile::tempdir().unwrap();
        let cache = Cache::new(&ws.path().join("cache"));
        let out = ws.path().join("out");
        std::fs::create_dir_all(out.join("bin")).unwrap();
        std::fs::create_dir_all(out.join("keep/empty")).unwrap();
        std::fs::write(out.join("bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(out.join("private"), "secret").unwrap();
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&out.join("bin/tool"), 0o755);
        set(&out.join("private"), 0o600);
        symlink("bin/tool", out.join("tool")).unwrap();
        std::fs::write(ws.path().join("single"), "x").unwrap();
        set(&ws.path().join("single"), 0o700);
        let sc = StatCache::default();
        let h = Hasher::new(ws.path(), &sc);
        let dir = h.content("out").unwrap();
        let single = h.content("single").unwrap();
        let Content::File { mode, .. } = single else {
            panic!()
        };
        assert_eq!(mode, 0o700);
        cache.store(&out, &dir).unwrap();
        cache.store(&ws.path().join("single"), &single).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_file(ws.path().join("single")).unwrap();
        cache.restore(dir.hash().unwrap(), true, 0, &out).unwrap();
        cache
            .restore(
                single.hash().unwrap(),
                false,
                mode,
                &ws.path().join("single"),
            )
            .unwrap();
        let mode_of = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode_of(&out.join("bin/tool")), 0o755);
        assert_eq!(mode_of(&out.join("private")), 0o600);
        assert_eq!(mode_of(&ws.path().join("single")), 0o700);
        assert!(out.join("keep/empty").is_dir());
        assert_eq!(
            std::fs::read_link(out.join("tool")).unwrap(),
            Path::new("bin/tool")
        );
        let sc2 = StatCache::default();
        assert_eq!(Hasher::new(ws.path(), &sc2).content("out").unwrap(), dir);
    }

    #[test]
    fn a_manifest_naming_a_path_outside_writes_nothing() {
        let ws = tempfile::tempdir().unwrap();
        let cache = Cache::new(&ws.path().join("cache"));
        let victim = ws.path().join("victim.txt");
        std::fs::write(&victim, "mine").unwrap();
        std::fs::create_dir_all(ws.path().join("a")).unwrap();
        std::fs::write(ws.path().join("a/f"), "evil").unwrap();
        let sc = StatCache::default();
        let Content::File { hash, .. } = Hasher::new(ws.path(), &sc).content("a/f").unwrap() else {
            panic!()
        };
        cache.store_file(&ws.path().join("a/f"), &hash).unwrap();
        for line in [
            format!("{hash} xe 4 \\x2e\\x2e/victim.txt\n"),
            format!("{hash} xe 4 \\x2f{}\n", victim.display()),
        ] {
            let mhash = blake3::hash(line.as_bytes()).to_hex().to_string();
            cache.store_bytes(&mhash, line.as_bytes()).unwrap();
            let err = cache
                .restore(&mhash, true, 0, &ws.path().join("out"))
                .unwrap_err();
            assert!(format!("{err:#}").contains("unsafe path"), "{err:#}");
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine");
            assert!(!ws.path().join("out").exists());
        }

        // The last check, on where a directory really is: a link already in the tree being
        // built (which the manifest checks make impossible to create) is caught too.
        let tmp = ws.path().join("building");
        std::fs::create_dir_all(&tmp).unwrap();
        std::os::unix::fs::symlink(ws.path(), tmp.join("a")).unwrap();
        let m = Manifest {
            files: vec![FileEntry {
                path: "a/victim.txt".into(),
                hash: hash.clone(),
                size: 4,
                mode: 0o644,
            }],
            ..Manifest::default()
        };
        let err = cache.build_dir(&m, &tmp).unwrap_err();
        assert!(format!("{err:#}").contains("outside"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine");
    }
}
