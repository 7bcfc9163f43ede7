//! Content hashes of files and directories, with a stat cache so unchanged files are never
//! read twice.
//!
//! A file's hash is blake3 of its bytes. A directory's hash is blake3 of its manifest: one
//! line per file, sorted by relative path, holding the file's hash, executable bit, size and
//! path — the same text the cache stores to restore the directory. File names are bytes: a
//! name that is not UTF-8 or holds a line break is written escaped (see [`encode_name`]), so
//! every name round-trips; other names are written as they are, as they always were. The stat cache maps
//! (device, inode, size, mtime ns, ctime ns) to the hash; ctime catches tools (tar, mv, touch
//! with an old mtime) that restore mtimes. Hashing of many files runs in parallel (rayon).
//!
//! Racy-clean rule (as in git): a stat is kept only if its mtime and ctime are older, by more
//! than the file system's timestamp granularity, than a moment taken before the bytes were
//! read ([`settled`]). A later write in the same granule (the same second on ext4 with
//! 128-byte inodes, FAT, many NFS exports; the same timer tick before Linux 6.13) could leave
//! size, mtime and ctime as they were, so such a stat cannot vouch for the content: the file
//! is hashed again on the next run, by which time its stat has settled. Files older than that
//! cost nothing: the rule is applied when an entry is made, never when one is used.
//!
//! Only regular files and directories have content: a device, FIFO or socket would never end
//! (`/dev/zero`) or block, so it is an error naming the path. Hashing checks a process-wide
//! cancellation flag (set by the engine's Ctrl-C/SIGTERM handler) between chunks, so an
//! interrupt stops even a many-gigabyte file within milliseconds.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use rayon::prelude::*;

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Make every hashing in progress (and every later one) fail with [`Interrupted`].
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

pub fn reset_cancel() {
    CANCELLED.store(false, Ordering::SeqCst);
}

/// Hashing stopped because the user interrupted the run.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}
impl std::error::Error for Interrupted {}

fn check_cancelled() -> Result<()> {
    if CANCELLED.load(Ordering::Relaxed) {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// What a path that is neither a regular file nor a directory is, in words (`None` for
/// those two).
pub fn special_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() || t.is_dir() {
        None
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// A map keyed by workspace path, with a fast hasher (paths are not adversarial input).
pub type PathMap<V> = HashMap<String, V, rustc_hash::FxBuildHasher>;

/// Stat fields that must all match for a cached hash to be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl StatKey {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

/// Timestamp granularity assumed for a timestamp with a sub-second part: far above the
/// coarsest kernel timer tick (10 ms) and the finest stamps of FAT-like file systems (10 ms),
/// and it absorbs a network file server's clock running up to a second behind ours.
const FINE_GRANULE_NS: i64 = 1_000_000_000;
/// For a timestamp whose nanoseconds are zero: a file system that keeps whole seconds (or
/// FAT's two).
const COARSE_GRANULE_NS: i64 = 2_000_000_000;

/// Whether a stat taken no earlier than `now_ns` (from [`fs_now_ns`], the clock the kernel
/// stamps files with) can vouch for the content read after it: its mtime and ctime are each
/// older than `now_ns` by more than their granularity (see the module header). A timestamp
/// in the future never settles.
pub fn settled(k: &StatKey, now_ns: i64) -> bool {
    let old = |t: i64| {
        let granule = if t.rem_euclid(1_000_000_000) == 0 {
            COARSE_GRANULE_NS
        } else {
            FINE_GRANULE_NS
        };
        i128::from(now_ns) - i128::from(t) > i128::from(granule)
    };
    old(k.mtime_ns) && old(k.ctime_ns)
}

/// Now, in ns since the epoch, from the clock the kernel stamps files with
/// (`CLOCK_REALTIME_COARSE`: never ahead of a stamp given later, unlike the fine clock).
pub fn fs_now_ns() -> i64 {
    // SAFETY: `clock_gettime` writes only into the timespec it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to a timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        // Never: but an error must not make anything look settled.
        return i64::MIN;
    }
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// Fixed-size encoding of a stat-cache entry: 5 × 8 bytes of stat + 32 bytes of hash + a
/// version byte ([`ENTRY_VERSION`]).
pub const ENTRY_LEN: usize = 73;
/// 1: kept only under the racy-clean rule. Entries written before it (72 bytes, possibly of a
/// stat taken in the same second as a later write) are ignored, so each file is hashed once
/// more.
const ENTRY_VERSION: u8 = 1;

pub fn encode_entry(k: &StatKey, hash: &[u8; 32]) -> [u8; ENTRY_LEN] {
    let mut b = [0u8; ENTRY_LEN];
    b[0..8].copy_from_slice(&k.dev.to_le_bytes());
    b[8..16].copy_from_slice(&k.ino.to_le_bytes());
    b[16..24].copy_from_slice(&k.size.to_le_bytes());
    b[24..32].copy_from_slice(&k.mtime_ns.to_le_bytes());
    b[32..40].copy_from_slice(&k.ctime_ns.to_le_bytes());
    b[40..72].copy_from_slice(hash);
    b[72] = ENTRY_VERSION;
    b
}

pub fn decode_entry(b: &[u8]) -> Option<(StatKey, [u8; 32])> {
    if b.len() != ENTRY_LEN || b[72] != ENTRY_VERSION {
        return None;
    }
    let u = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().unwrap());
    let k = StatKey {
        dev: u(0..8),
        ino: u(8..16),
        size: u(16..24),
        mtime_ns: u(24..32) as i64,
        ctime_ns: u(32..40) as i64,
    };
    Some((k, b[40..72].try_into().unwrap()))
}

/// In-memory stat cache: path → (stat, hash). Loaded from and saved to the state database.
#[derive(Default)]
pub struct StatCache {
    entries: Mutex<PathMap<(StatKey, [u8; 32])>>,
    dirty: Mutex<Vec<String>>,
}

impl StatCache {
    pub fn from_entries(entries: PathMap<(StatKey, [u8; 32])>) -> Self {
        StatCache {
            entries: Mutex::new(entries),
            dirty: Mutex::default(),
        }
    }

    fn get(&self, path: &str, k: &StatKey) -> Option<[u8; 32]> {
        let e = self.entries.lock().unwrap();
        e.get(path).filter(|(sk, _)| sk == k).map(|(_, h)| *h)
    }

    /// Remember the hash of a file whose content is known (e.g. just verified while copied),
    /// so it is not read again — under the racy-clean rule, so a file just written (whose
    /// ctime is now) is not remembered and is hashed by the next run.
    pub fn record(&self, path: &str, meta: &std::fs::Metadata, hash_hex: &str) {
        let mut h = [0u8; 32];
        let k = StatKey::of(meta);
        if hex::decode_to_slice(hash_hex, &mut h).is_ok() && settled(&k, fs_now_ns()) {
            self.put(path, k, h);
        }
    }

    fn put(&self, path: &str, k: StatKey, h: [u8; 32]) {
        self.entries
            .lock()
            .unwrap()
            .insert(path.to_string(), (k, h));
        self.dirty.lock().unwrap().push(path.to_string());
    }

    /// Entries changed since load, to write back.
    pub fn take_dirty(&self) -> Vec<(String, StatKey, [u8; 32])> {
        let paths = std::mem::take(&mut *self.dirty.lock().unwrap());
        let e = self.entries.lock().unwrap();
        paths
            .into_iter()
            .filter_map(|p| e.get(&p).map(|(k, h)| (p.clone(), *k, *h)))
            .collect()
    }
}

/// What one stat said about a path whose content a verdict used (see
/// [`crate::state::up_to_date`]): the stat under which its hash was trusted, or that it was
/// missing; `Changing` when it changed while being hashed, so that no stat vouches for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Missing,
    Stat(StatKey),
    Changing,
}

/// Every path a [`Hasher`] looked at, with what it saw (workspace-relative paths; a file inside
/// a directory dep and each subdirectory are listed too, since the directory's own stat does
/// not change when a file inside it is rewritten).
pub struct SeenLog {
    log: Mutex<Vec<(std::path::PathBuf, Seen)>>,
    /// [`fs_now_ns`] when the log was made: before anything it notes was read, so a stat
    /// [`settled`] by then vouches for what was read under it.
    since_ns: i64,
}

impl Default for SeenLog {
    fn default() -> Self {
        SeenLog::since(fs_now_ns())
    }
}

impl SeenLog {
    /// A log of what was read after `since_ns` (the clock of [`fs_now_ns`]).
    pub fn since(since_ns: i64) -> Self {
        SeenLog {
            log: Mutex::default(),
            since_ns,
        }
    }

    fn note(&self, rel: impl Into<std::path::PathBuf>, seen: Seen) {
        self.log.lock().unwrap().push((rel.into(), seen));
    }

    /// Everything noted so far, in no particular order (a path may appear more than once).
    pub fn take(&self) -> Vec<(std::path::PathBuf, Seen)> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// When the log was made (see [`SeenLog::since`]).
    pub fn since_ns(&self) -> i64 {
        self.since_ns
    }
}

/// One file of a directory manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the directory, `/`-separated, in the lossless text form of
    /// [`encode_name`] (the name itself for ordinary names); [`FileEntry::rel_path`] is the
    /// path on disk.
    pub path: String,
    pub hash: String,
    pub size: u64,
    pub executable: bool,
}

impl FileEntry {
    /// The relative path on disk (the exact bytes of the name).
    pub fn rel_path(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStringExt;
        std::ffi::OsString::from_vec(decode_name(&self.path)).into()
    }
}

/// A file name (or `/`-separated relative path) as text, losslessly: `\` → `\\`, and a byte
/// that is not part of valid UTF-8, a line feed or a carriage return → `\xHH`. Ordinary names
/// (valid UTF-8, no backslash, no line break) are unchanged.
pub fn encode_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' | '\r' => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The bytes of a name encoded by [`encode_name`] (malformed escapes are kept literally).
pub fn decode_name(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'x')
                && let Some(v) = text
                    .get(i + 2..i + 4)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// What a path holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Missing,
    File {
        hash: String,
        size: u64,
        executable: bool,
    },
    Dir {
        hash: String,
        files: Vec<FileEntry>,
    },
}

impl Content {
    pub fn hash(&self) -> Option<&str> {
        match self {
            Content::Missing => None,
            Content::File { hash, .. } | Content::Dir { hash, .. } => Some(hash),
        }
    }
}

/// The canonical manifest text of a directory (also what the cache stores for it).
///
/// A line is `HASH MODE SIZE PATH`. MODE `x`/`-` (executable or not) means PATH is the name as
/// it is — the only form before names were encoded, and still the form of every ordinary
/// name, so directory hashes did not change. MODE `xe`/`-e` means PATH is [`encode_name`]'s
/// escaped form: used only for names that the plain form cannot carry (a line break, bytes
/// that are not UTF-8).
pub fn manifest_text(files: &[FileEntry]) -> String {
    let mut s = String::with_capacity(files.len() * 90);
    for f in files {
        let mode = if f.executable { "x" } else { "-" };
        // `path` is the encoded form: a backslash means an escape, else it is the raw name.
        let raw = if f.path.contains('\\') {
            String::from_utf8(decode_name(&f.path))
                .ok()
                .filter(|r| !r.contains(['\n', '\r']))
        } else {
            Some(f.path.clone())
        };
        match raw {
            Some(raw) => s.push_str(&format!("{} {mode} {} {raw}\n", f.hash, f.size)),
            None => s.push_str(&format!("{} {mode}e {} {}\n", f.hash, f.size, f.path)),
        }
    }
    s
}

pub fn parse_manifest(text: &str) -> Result<Vec<FileEntry>> {
    text.split_terminator('\n')
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let (Some(hash), Some(mode), Some(size), Some(path)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                anyhow::bail!("malformed manifest line '{l}'");
            };
            let (mode, escaped) = match mode.strip_suffix('e') {
                Some(m) => (m, true),
                None => (mode, false),
            };
            Ok(FileEntry {
                hash: hash.into(),
                executable: mode == "x",
                size: size.parse()?,
                path: if escaped {
                    path.into()
                } else {
                    encode_name(path.as_bytes())
                },
            })
        })
        .collect()
}

/// Hash a file's bytes (large files memory-mapped and hashed in parallel), checking for
/// cancellation between chunks.
pub fn hash_file_bytes(path: &Path) -> Result<[u8; 32]> {
    check_cancelled()?;
    let mut h = blake3::Hasher::new();
    // Checked before opening: opening a FIFO would block until someone writes to it.
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    if let Some(kind) = special_kind(&meta) {
        anyhow::bail!(
            "{} is {kind}, not a file or directory: it has no content to hash",
            path.display()
        );
    }
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.len() > 16 << 20 {
        // SAFETY: read-only map; the stat re-check after hashing catches a concurrent writer.
        let map = unsafe { memmap2::Mmap::map(&f) }
            .with_context(|| format!("reading {}", path.display()))?;
        for chunk in map.chunks(64 << 20) {
            check_cancelled()?;
            h.update_rayon(chunk);
        }
    } else {
        let mut f = f;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(*h.finalize().as_bytes())
}

/// Hashes paths under a root, through a stat cache.
pub struct Hasher<'a> {
    pub root: &'a Path,
    pub cache: &'a StatCache,
    /// Stats already taken this invocation (the DAG's source deps), used instead of a new stat.
    pub known: Option<&'a PathMap<std::fs::Metadata>>,
    /// Where to note what each stat said (the workspace's log; `None` for one-off hashing).
    pub seen: Option<&'a SeenLog>,
    /// The clock of the racy-clean rule ([`fs_now_ns`]; tests inject their own).
    pub clock: fn() -> i64,
}

impl<'a> Hasher<'a> {
    /// A hasher that neither reuses stats nor notes them.
    pub fn new(root: &'a Path, cache: &'a StatCache) -> Hasher<'a> {
        Hasher {
            root,
            cache,
            known: None,
            seen: None,
            clock: fs_now_ns,
        }
    }

    fn note(&self, rel: impl Into<std::path::PathBuf>, seen: Seen) {
        if let Some(log) = self.seen {
            log.note(rel, seen);
        }
    }

    /// Hash one workspace path (file or directory); `Missing` if it does not exist.
    pub fn content(&self, rel: &str) -> Result<Content> {
        let full = self.root.join(rel);
        let known = self.known.and_then(|k| k.get(rel)).cloned();
        let meta = match known.map_or_else(|| std::fs::metadata(&full), Ok) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.note(rel, Seen::Missing);
                return Ok(Content::Missing);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", full.display())),
        };
        if let Some(kind) = special_kind(&meta) {
            anyhow::bail!(
                "{rel} is {kind}, not a file or directory: it cannot be a dependency or output"
            );
        }
        if meta.is_dir() {
            // Noted before listing: an entry added after this stat changes the directory's.
            self.note(rel, Seen::Stat(StatKey::of(&meta)));
            let mut files = Vec::new();
            let mut dirs = Vec::new();
            walk(&full, "", &mut files, &mut dirs)?;
            for (path, meta) in dirs {
                let inside = path.strip_prefix(self.root).unwrap_or(&path);
                self.note(inside, Seen::Stat(StatKey::of(&meta)));
            }
            files.sort_by(|a, b| a.0.cmp(&b.0));
            let entries: Vec<FileEntry> = files
                .par_iter()
                .map(|(relpath, file, meta)| {
                    let key = format!("{rel}/{relpath}");
                    let hash = self.file_hash(&key, file, meta)?;
                    let inside = file.strip_prefix(self.root).unwrap_or(file);
                    self.note(inside, hash.1);
                    let hash = hash.0;
                    Ok(FileEntry {
                        path: relpath.clone(),
                        hash: blake3::Hash::from_bytes(hash).to_hex().to_string(),
                        size: meta.len(),
                        executable: meta.mode() & 0o111 != 0,
                    })
                })
                .collect::<Result<_>>()?;
            let hash = blake3::hash(manifest_text(&entries).as_bytes())
                .to_hex()
                .to_string();
            Ok(Content::Dir {
                hash,
                files: entries,
            })
        } else {
            let (hash, seen) = self.file_hash(rel, &full, &meta)?;
            self.note(rel, seen);
            Ok(Content::File {
                hash: blake3::Hash::from_bytes(hash).to_hex().to_string(),
                size: meta.len(),
                executable: meta.mode() & 0o111 != 0,
            })
        }
    }

    /// Hash many paths in parallel.
    pub fn contents(&self, rels: &[&str]) -> Result<Vec<Content>> {
        // A stage usually names a handful of paths whose hashes come from the stat cache:
        // handing those to the thread pool costs more than the stats themselves. Large
        // files and directories still hash in parallel inside `content`.
        if rels.len() <= 32 {
            return rels.iter().map(|r| self.content(r)).collect();
        }
        rels.par_iter().map(|r| self.content(r)).collect()
    }

    /// The hash of a file, with the stat that vouches for it.
    fn file_hash(
        &self,
        key: &str,
        full: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<([u8; 32], Seen)> {
        let sk = StatKey::of(meta);
        // An entry was settled when it was made, so a hit needs no clock (see `settled`).
        if let Some(h) = self.cache.get(key, &sk) {
            return Ok((h, Seen::Stat(sk)));
        }
        // Taken before the bytes are read: a write after it gets a later timestamp.
        let now = (self.clock)();
        let h = hash_file_bytes(full)?;
        // Re-stat: a file that changed while we read it must not be cached under the new stat.
        if let Ok(after) = std::fs::metadata(full)
            && StatKey::of(&after) == sk
        {
            // Racy-clean: a stat too recent to tell this content from a write to come is not
            // kept; the next run hashes the file again. It still says what was seen now.
            if settled(&sk, now) {
                self.cache.put(key, sk, h);
            }
            return Ok((h, Seen::Stat(sk)));
        }
        Ok((h, Seen::Changing))
    }
}

/// Collect regular files under `dir` (following symlinks to files): encoded relative path
/// (see [`encode_name`]; sorting it sorts ordinary names as before), path on disk, stat.
/// `dirs` gets each subdirectory (its path on disk) with the stat taken before it was listed.
type Walked = (String, std::path::PathBuf, std::fs::Metadata);

fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<Walked>,
    dirs: &mut Vec<(std::path::PathBuf, std::fs::Metadata)>,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let rd = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in rd {
        check_cancelled()?;
        let entry = entry?;
        let name = encode_name(entry.file_name().as_bytes());
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::metadata(entry.path())
            .with_context(|| format!("cannot stat {}", entry.path().display()))?;
        if meta.is_dir() {
            let path = entry.path();
            walk(&path, &rel, out, dirs)?;
            dirs.push((path, meta));
        } else if meta.is_file() {
            out.push((rel, entry.path(), meta));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_hash_depends_on_names_and_content_only() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir_all(d.join("x/sub")).unwrap();
            std::fs::write(d.join("x/sub/f.txt"), "hello").unwrap();
            std::fs::write(d.join("x/g.txt"), "world").unwrap();
        }
        let ca = StatCache::default();
        let cb = StatCache::default();
        let ha = Hasher::new(a.path(), &ca).content("x").unwrap();
        let hb = Hasher::new(b.path(), &cb).content("x").unwrap();
        assert_eq!(ha.hash(), hb.hash());
        std::fs::write(b.path().join("x/g.txt"), "World").unwrap();
        let cb2 = StatCache::default();
        assert_ne!(
            ha.hash(),
            Hasher::new(b.path(), &cb2).content("x").unwrap().hash()
        );
    }

    #[test]
    fn stat_cache_is_used_and_invalidated_by_change() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "one").unwrap();
        let c = StatCache::default();
        // A clock an hour ahead: every stat has settled.
        let h = Hasher {
            clock: || fs_now_ns() + 3_600_000_000_000,
            ..Hasher::new(d.path(), &c)
        };
        let first = h.content("f").unwrap();
        assert_eq!(c.take_dirty().len(), 1);
        assert_eq!(h.content("f").unwrap(), first);
        assert!(
            c.take_dirty().is_empty(),
            "unchanged file must not be rehashed"
        );
        std::fs::write(d.path().join("f"), "two").unwrap();
        assert_ne!(h.content("f").unwrap(), first);
    }

    const S: i64 = 1_000_000_000;

    fn stamped(mtime_ns: i64, ctime_ns: i64) -> StatKey {
        StatKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns,
            ctime_ns,
        }
    }

    #[test]
    fn racy_clean_rule_with_an_injected_clock() {
        let t = 1_700_000_000 * S;
        // Whole-second stamps (1-second file systems): trusted only 2 s after the stamp. The
        // old 50 ms guard trusted a stamp truncated to the second 0.9 s into that second.
        assert!(!settled(&stamped(t, t), t + 900_000_000));
        assert!(!settled(&stamped(t, t), t + S + 500_000_000));
        assert!(!settled(&stamped(t, t), t + 2 * S));
        assert!(settled(&stamped(t, t), t + 2 * S + 1));
        // Sub-second stamps: 1 s.
        let f = t + 123;
        assert!(!settled(&stamped(f, f), f + 50_000_000));
        assert!(!settled(&stamped(f, f), f + S));
        assert!(settled(&stamped(f, f), f + S + 1));
        // Both timestamps count: an old mtime put back (cp -p, tar) with a fresh ctime.
        assert!(!settled(&stamped(t - 3600 * S, f), f + S / 2));
        assert!(!settled(&stamped(f, t - 3600 * S), f + S / 2));
        // A stamp in the future never settles; extremes do not overflow.
        assert!(!settled(&stamped(t + 3600 * S, t), t + 10 * S));
        assert!(!settled(&stamped(i64::MAX, i64::MAX), i64::MIN));
        assert!(settled(&stamped(i64::MIN, i64::MIN), i64::MAX));
        // Negative stamps (before 1970) round like any other.
        assert!(!settled(&stamped(-S, -S), S / 2));
        assert!(settled(&stamped(-S, -S), S + 1));
    }

    static RACY_NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

    #[test]
    fn a_stat_too_recent_to_trust_is_not_kept_and_is_hashed_again() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "one").unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::fs::write(d.path().join("dir/g"), "two").unwrap();
        let k = StatKey::of(&std::fs::metadata(d.path().join("f")).unwrap());
        let c = StatCache::default();
        // The clock says the file was written half a second ago: within the granule.
        RACY_NOW.store(k.mtime_ns.max(k.ctime_ns) + S / 2, Ordering::SeqCst);
        let h = Hasher {
            clock: || RACY_NOW.load(Ordering::SeqCst),
            ..Hasher::new(d.path(), &c)
        };
        let first = h.content("f").unwrap();
        h.content("dir").unwrap();
        assert!(
            c.take_dirty().is_empty(),
            "a racy stat must not be kept (the old rule kept it)"
        );
        // The same size and stat as far as a 1-second file system could tell: hashed again,
        // so the change is seen.
        std::fs::write(d.path().join("f"), "ONE").unwrap();
        assert_ne!(h.content("f").unwrap(), first);
        // Once the clock has moved past the granule, the stat is kept.
        RACY_NOW.store(fs_now_ns() + 3 * S, Ordering::SeqCst);
        h.content("f").unwrap();
        assert_eq!(c.take_dirty().len(), 1);
        // `record` (a verified restore) applies the rule with the real clock: a file just
        // written is not remembered.
        let meta = std::fs::metadata(d.path().join("f")).unwrap();
        c.record("f2", &meta, &blake3::hash(b"ONE").to_hex());
        assert!(c.take_dirty().is_empty());
    }

    #[test]
    fn entries_of_the_old_format_are_ignored() {
        let k = stamped(4, 5);
        let e = encode_entry(&k, &[7; 32]);
        assert_eq!(
            decode_entry(&e[..72]),
            None,
            "a 72-byte entry of before the rule"
        );
        let mut other = e;
        other[72] = 0;
        assert_eq!(decode_entry(&other), None);
    }

    #[test]
    fn entries_round_trip() {
        let k = StatKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: -4,
            ctime_ns: 5,
        };
        let e = encode_entry(&k, &[7; 32]);
        assert_eq!(decode_entry(&e), Some((k, [7; 32])));
        let files = vec![FileEntry {
            path: "a b/c".into(),
            hash: "ab".into(),
            size: 3,
            executable: true,
        }];
        assert_eq!(parse_manifest(&manifest_text(&files)).unwrap(), files);
    }

    #[test]
    fn odd_names_round_trip_and_ordinary_manifests_are_unchanged() {
        use std::os::unix::ffi::OsStrExt;
        let names: [&[u8]; 5] = [
            b"plain.txt",
            b"new\nline",
            b"caf\xe9",
            b"back\\slash",
            b"cr\r",
        ];
        for n in names {
            let e = encode_name(n);
            assert!(!e.contains(['\n', '\r']), "{e:?}");
            assert_eq!(decode_name(&e), n);
        }
        assert_eq!(encode_name(b"a b/c.txt"), "a b/c.txt");
        let files: Vec<FileEntry> = names
            .iter()
            .map(|n| FileEntry {
                path: encode_name(n),
                hash: "ab".into(),
                size: 1,
                executable: false,
            })
            .collect();
        let text = manifest_text(&files);
        assert_eq!(text.lines().count(), files.len(), "{text:?}");
        assert_eq!(parse_manifest(&text).unwrap(), files);
        // An ordinary name (a backslash included) is written as it always was.
        assert!(
            text.contains("ab - 1 plain.txt\n") && text.contains("ab - 1 back\\slash\n"),
            "{text}"
        );
        assert_eq!(files[2].rel_path().as_os_str().as_bytes(), b"caf\xe9");
        // A manifest written before encoding existed reads the same.
        let old = "ab x 3 dir/a\\b c\n";
        let f = &parse_manifest(old).unwrap()[0];
        assert_eq!(f.rel_path().as_os_str().as_bytes(), b"dir/a\\b c");
        assert_eq!(manifest_text(std::slice::from_ref(f)), old);
    }
}
