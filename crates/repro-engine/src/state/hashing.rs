//! Content hashes of files and directories, with a stat cache so unchanged files are never
//! read twice.
//!
//! A file's hash is blake3 of its bytes. A directory's hash is blake3 of its manifest: one
//! line per file, sorted by relative path, holding the file's hash, mode, size and path, then
//! its empty directories and the symbolic links that stay inside it — the same text the cache
//! stores to restore the directory (see [`manifest_text`]). File names are bytes: a
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
pub(crate) fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

pub(crate) fn reset_cancel() {
    CANCELLED.store(false, Ordering::SeqCst);
}

/// Hashing stopped because the user interrupted the run.
#[derive(Debug)]
pub(crate) struct Interrupted;

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
pub(crate) fn special_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
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
pub(crate) type PathMap<V> = HashMap<String, V, rustc_hash::FxBuildHasher>;

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
pub(crate) fn settled(k: &StatKey, now_ns: i64) -> bool {
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
pub(crate) fn fs_now_ns() -> i64 {
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
pub(crate) const ENTRY_LEN: usize = 73;
/// 1: kept only under the racy-clean rule. Entries written before it (72 bytes, possibly of a
/// stat taken in the same second as a later write) are ignored, so each file is hashed once
/// more.
const ENTRY_VERSION: u8 = 1;

pub(crate) fn encode_entry(k: &StatKey, hash: &[u8; 32]) -> [u8; ENTRY_LEN] {
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

pub(crate) fn decode_entry(b: &[u8]) -> Option<(StatKey, [u8; 32])> {
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
    /// Files this process placed or stored from bytes it hashed, whose stats are too recent
    /// to keep (see [`StatCache::record`]): trusted by this process only, never saved, and
    /// forgotten when the engine clears the output (see [`StatCache::forget_recent`]).
    recent: Mutex<PathMap<(StatKey, [u8; 32])>>,
}

impl StatCache {
    pub fn from_entries(entries: PathMap<(StatKey, [u8; 32])>) -> Self {
        StatCache {
            entries: Mutex::new(entries),
            ..Default::default()
        }
    }

    fn get(&self, path: &str, k: &StatKey) -> Option<[u8; 32]> {
        let hit = |m: &PathMap<(StatKey, [u8; 32])>| {
            m.get(path).filter(|(sk, _)| sk == k).map(|(_, h)| *h)
        };
        hit(&self.entries.lock().unwrap()).or_else(|| hit(&self.recent.lock().unwrap()))
    }

    /// Remember the hash of a file whose content is known (e.g. just verified while copied),
    /// so it is not read again. Saved only under the racy-clean rule: a file just written
    /// (whose ctime is now) is hashed again by the next run. Until then this process trusts
    /// its unchanged stat: the bytes are the ones it placed, and a write by someone else
    /// during the run could as well come after any re-hash (in a pull, each stage downstream
    /// of a restored output used to hash it again, up to 48 times).
    pub fn record(&self, path: &str, meta: &std::fs::Metadata, hash_hex: &str) {
        let mut h = [0u8; 32];
        let k = StatKey::of(meta);
        if hex::decode_to_slice(hash_hex, &mut h).is_err() {
            return;
        }
        if settled(&k, fs_now_ns()) {
            self.put(path, k, h);
        } else {
            self.recent.lock().unwrap().insert(path.to_string(), (k, h));
        }
    }

    /// Forget what [`StatCache::record`] trusted for `path` and everything under it: the
    /// engine is about to clear that output for its stage to write it again (a new file may
    /// reuse the inode, size and, on a coarse file system, timestamps of the old one).
    pub(crate) fn forget_recent(&self, path: &str) {
        let mut recent = self.recent.lock().unwrap();
        if recent.is_empty() {
            return;
        }
        recent.retain(|p, _| {
            p != path && !(p.starts_with(path) && p.as_bytes().get(path.len()) == Some(&b'/'))
        });
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

/// The permission bits a manifest keeps: the owner's, and group and other read and execute.
/// Group/other write follow the umask, which differs between machines (002 on many desktops,
/// 022 on CI): keeping them would make the same content hash differently on each.
pub(crate) const MODE_BITS: u32 = 0o755;
/// The mode a manifest records for a file: its [`MODE_BITS`], except that a file the cache
/// placed as a read-only link to its object (mode 0444, and a hard link or reached through a
/// symbolic link; see `cache::links`) counts as the ordinary file it stands for, so linking
/// an output does not change its directory's hash. (Only files of the ordinary mode are ever
/// linked.)
pub(crate) fn hashed_mode(path: &Path, meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let m = meta.mode() & MODE_BITS;
    if m == 0o444
        && (meta.nlink() > 1
            || std::fs::symlink_metadata(path).is_ok_and(|l| l.file_type().is_symlink()))
    {
        FILE_MODE
    } else {
        m
    }
}

/// The mode of an ordinary file, written `-` in a manifest (as it always was).
pub(crate) const FILE_MODE: u32 = 0o644;
/// The mode of an ordinary executable, written `x` in a manifest (as it always was).
pub(crate) const EXEC_MODE: u32 = 0o755;

/// One file of a directory manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the directory, `/`-separated, in the lossless text form of
    /// [`encode_name`] (the name itself for ordinary names); [`FileEntry::rel_path`] is the
    /// path on disk.
    pub path: String,
    pub hash: String,
    pub size: u64,
    /// Permission bits, masked with [`MODE_BITS`].
    pub mode: u32,
}

impl FileEntry {
    /// The relative path on disk (the exact bytes of the name).
    pub fn rel_path(&self) -> std::path::PathBuf {
        bytes_path(decode_name(&self.path))
    }

    pub fn executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
}

/// A symbolic link inside a directory whose target stays inside that directory (see
/// [`check_link_target`]); links that point elsewhere are followed and hashed as what they
/// point to, as they always were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEntry {
    /// Encoded as [`FileEntry::path`].
    pub path: String,
    /// The link's text, encoded the same way.
    pub target: String,
}

impl LinkEntry {
    pub fn rel_path(&self) -> std::path::PathBuf {
        bytes_path(decode_name(&self.path))
    }

    pub fn target_path(&self) -> std::path::PathBuf {
        bytes_path(decode_name(&self.target))
    }
}

/// Everything a directory manifest holds: its files, the directories that hold nothing (else
/// implied by the files' paths), and its internal symbolic links. Encoded paths throughout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub files: Vec<FileEntry>,
    pub empty_dirs: Vec<String>,
    pub links: Vec<LinkEntry>,
}

fn bytes_path(b: Vec<u8>) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStringExt;
    std::ffi::OsString::from_vec(b).into()
}

/// A file name (or `/`-separated relative path) as text, losslessly: `\` → `\\`, and a byte
/// that is not part of valid UTF-8, a line feed or a carriage return → `\xHH`. Ordinary names
/// (valid UTF-8, no backslash, no line break) are unchanged.
pub(crate) fn encode_name(bytes: &[u8]) -> String {
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
pub(crate) fn decode_name(text: &str) -> Vec<u8> {
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

/// Check a manifest path, decoded (the bytes the restore will write to): relative, no empty,
/// `.` or `..` component, no NUL. Every manifest reader goes through it (in
/// [`parse_manifest_full`]): a manifest may come from a remote, and the escaped form can spell
/// anything (`\x2e\x2e/x`, `\x2fetc/x`), so the encoded text proves nothing.
pub(crate) fn check_rel_name(decoded: &[u8]) -> Result<()> {
    let bad = decoded.is_empty()
        || decoded[0] == b'/'
        || decoded.contains(&0)
        || decoded
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad {
        anyhow::bail!(
            "manifest names an unsafe path '{}' (a path must be relative, inside its directory)",
            encode_name(decoded)
        );
    }
    Ok(())
}

/// Check that a symbolic link at `link` (a checked relative path) with text `target` points
/// inside the directory that holds it: a relative target of some `..` steps, no more than the
/// link is deep, then plain names (no `.`, `..` or empty component later, where a `..` after a
/// name that is itself a link could climb out). Followed from inside, such a link can only
/// reach paths inside (a name on the way is a real directory or another such link).
pub(crate) fn check_link_target(link: &[u8], target: &[u8]) -> Result<()> {
    let depth = link.iter().filter(|&&b| b == b'/').count();
    let mut ups = 0;
    let mut names = 0;
    let mut ok = !target.is_empty() && target[0] != b'/' && !target.contains(&0);
    for c in target.split(|&b| b == b'/') {
        if !ok {
            break;
        }
        if c == b".." && names == 0 {
            ups += 1;
            ok = ups <= depth;
        } else {
            names += 1;
            ok = !(c.is_empty() || c == b"." || c == b"..");
        }
    }
    if !ok || names == 0 {
        anyhow::bail!(
            "symbolic link '{}' -> '{}' does not point inside its directory",
            encode_name(link),
            encode_name(target)
        );
    }
    Ok(())
}

/// A path of a `dir`/`link` line: [`encode_name`]'s form with spaces escaped too, so fields
/// split on spaces.
fn encode_field(bytes: &[u8]) -> String {
    encode_name(bytes).replace(' ', "\\x20")
}

/// What a path holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Missing,
    File {
        hash: String,
        size: u64,
        /// Permission bits, masked with [`MODE_BITS`] (not part of the hash: the run cache
        /// keeps it beside an output's hash).
        mode: u32,
    },
    Dir {
        hash: String,
        files: Vec<FileEntry>,
        empty_dirs: Vec<String>,
        links: Vec<LinkEntry>,
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
/// A file's line is `HASH MODE SIZE PATH`. MODE `x`/`-` (mode 0755/0644) means PATH is the
/// name as it is — the only form before names were encoded, and still the form of every
/// ordinary name, so directory hashes did not change. MODE `xe`/`-e` means PATH is
/// [`encode_name`]'s escaped form: used only for names that the plain form cannot carry (a
/// line break, bytes that are not UTF-8). Any other mode is `m` and three octal digits
/// (`m600`, `m600e`). After the files (sorted by path), an empty directory is `dir PATH` and
/// an internal symbolic link `link PATH TARGET`, both escaped with spaces as `\x20`; a
/// directory without those, of files of ordinary modes, has the text it always had.
pub(crate) fn manifest_text(
    files: &[FileEntry],
    empty_dirs: &[String],
    links: &[LinkEntry],
) -> String {
    let mut s = String::with_capacity(files.len() * 90);
    for f in files {
        let mode = match f.mode {
            FILE_MODE => "-".to_string(),
            EXEC_MODE => "x".to_string(),
            m => format!("m{:03o}", m & MODE_BITS),
        };
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
    let mut dirs: Vec<&String> = empty_dirs.iter().collect();
    dirs.sort();
    for d in dirs {
        s.push_str(&format!("dir {}\n", encode_field(&decode_name(d))));
    }
    let mut links: Vec<&LinkEntry> = links.iter().collect();
    links.sort_by(|a, b| a.path.cmp(&b.path));
    for l in links {
        s.push_str(&format!(
            "link {} {}\n",
            encode_field(&decode_name(&l.path)),
            encode_field(&decode_name(&l.target))
        ));
    }
    s
}

/// The files of a manifest (see [`parse_manifest_full`], which checks every path).
#[cfg(any(feature = "remote", test))]
pub(crate) fn parse_manifest(text: &str) -> Result<Vec<FileEntry>> {
    Ok(parse_manifest_full(text)?.files)
}

/// Read a manifest, refusing any path that could put a restored file outside its directory:
/// every path is checked decoded ([`check_rel_name`]), every link's target
/// ([`check_link_target`]), and no path may lie under a link.
pub(crate) fn parse_manifest_full(text: &str) -> Result<Manifest> {
    let mut m = Manifest::default();
    for l in text.split_terminator('\n') {
        if let Some(rest) = l.strip_prefix("dir ") {
            check_rel_name(&decode_name(rest))?;
            m.empty_dirs.push(encode_name(&decode_name(rest)));
            continue;
        }
        if let Some(rest) = l.strip_prefix("link ") {
            let Some((path, target)) = rest.split_once(' ') else {
                anyhow::bail!("malformed manifest line '{l}'");
            };
            let (path, target) = (decode_name(path), decode_name(target));
            check_rel_name(&path)?;
            check_link_target(&path, &target)?;
            m.links.push(LinkEntry {
                path: encode_name(&path),
                target: encode_name(&target),
            });
            continue;
        }
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
        let mode = match mode {
            "-" => FILE_MODE,
            "x" => EXEC_MODE,
            m => m
                .strip_prefix('m')
                .and_then(|o| u32::from_str_radix(o, 8).ok())
                .filter(|&o| o & !MODE_BITS == 0)
                .ok_or_else(|| anyhow::anyhow!("malformed mode in manifest line '{l}'"))?,
        };
        let path = if escaped {
            let raw = decode_name(path);
            check_rel_name(&raw)?;
            encode_name(&raw)
        } else {
            check_rel_name(path.as_bytes())?;
            encode_name(path.as_bytes())
        };
        m.files.push(FileEntry {
            hash: hash.into(),
            mode,
            size: size.parse()?,
            path,
        });
    }
    if !m.links.is_empty() {
        // A path under a link would be written through it.
        let links: std::collections::HashSet<Vec<u8>> =
            m.links.iter().map(|l| decode_name(&l.path)).collect();
        let paths = m.files.iter().map(|f| &f.path);
        let paths = paths
            .chain(&m.empty_dirs)
            .chain(m.links.iter().map(|l| &l.path));
        for p in paths {
            let p = decode_name(p);
            for (i, _) in p.iter().enumerate().filter(|(_, b)| **b == b'/') {
                if links.contains(&p[..i]) {
                    anyhow::bail!(
                        "manifest names '{}' under the symbolic link '{}'",
                        encode_name(&p),
                        encode_name(&p[..i])
                    );
                }
            }
        }
    }
    Ok(m)
}

/// Hash a file's bytes (large files memory-mapped and hashed in parallel), checking for
/// cancellation between chunks.
pub(crate) fn hash_file_bytes(path: &Path) -> Result<[u8; 32]> {
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
        // One 64 MiB window mapped at a time: a whole-file map keeps every page hashed in the
        // process's resident set until the end (a 6 GiB output made repro's max RSS 6 GB).
        const WINDOW: u64 = 64 << 20;
        let mut offset = 0;
        while offset < meta.len() {
            check_cancelled()?;
            let len = WINDOW.min(meta.len() - offset) as usize;
            // SAFETY: read-only map; the stat re-check after hashing catches a concurrent writer.
            let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(len).map(&f) }
                .with_context(|| format!("reading {}", path.display()))?;
            h.update_rayon(&map);
            offset += len as u64;
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
            let mut extra = Extra::default();
            walk(&full, "", false, &mut files, &mut dirs, &mut extra)?;
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
                        mode: hashed_mode(file, meta),
                    })
                })
                .collect::<Result<_>>()?;
            let hash =
                blake3::hash(manifest_text(&entries, &extra.empty_dirs, &extra.links).as_bytes())
                    .to_hex()
                    .to_string();
            Ok(Content::Dir {
                hash,
                files: entries,
                empty_dirs: extra.empty_dirs,
                links: extra.links,
            })
        } else {
            let (hash, seen) = self.file_hash(rel, &full, &meta)?;
            self.note(rel, seen);
            Ok(Content::File {
                hash: blake3::Hash::from_bytes(hash).to_hex().to_string(),
                size: meta.len(),
                mode: hashed_mode(&full, &meta),
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

/// Collect regular files under `dir` (following symbolic links that point out of the walked
/// directory, as always): encoded relative path (see [`encode_name`]; sorting it sorts
/// ordinary names as before), path on disk, stat. `dirs` gets each subdirectory (its path on
/// disk) with the stat taken before it was listed; `extra` the empty directories and the links
/// that stay inside (kept as links: what they point to is listed in its own right; under a
/// link that was followed, every link is followed).
type Walked = (String, std::path::PathBuf, std::fs::Metadata);

#[derive(Default)]
struct Extra {
    empty_dirs: Vec<String>,
    links: Vec<LinkEntry>,
}

fn walk(
    dir: &Path,
    prefix: &str,
    through_link: bool,
    out: &mut Vec<Walked>,
    dirs: &mut Vec<(std::path::PathBuf, std::fs::Metadata)>,
    extra: &mut Extra,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let rd = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut empty = true;
    for entry in rd {
        check_cancelled()?;
        let entry = entry?;
        let name = encode_name(entry.file_name().as_bytes());
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        // Under a followed link, "inside" would be judged against the wrong directory.
        if is_link
            && !through_link
            && let Ok(target) = std::fs::read_link(entry.path())
            && check_link_target(&decode_name(&rel), target.as_os_str().as_bytes()).is_ok()
        {
            empty = false;
            extra.links.push(LinkEntry {
                path: rel,
                target: encode_name(target.as_os_str().as_bytes()),
            });
            continue;
        }
        let meta = std::fs::metadata(entry.path())
            .with_context(|| format!("cannot stat {}", entry.path().display()))?;
        if meta.is_dir() {
            empty = false;
            let path = entry.path();
            walk(&path, &rel, through_link || is_link, out, dirs, extra)?;
            dirs.push((path, meta));
        } else if meta.is_file() {
            empty = false;
            out.push((rel, entry.path(), meta));
        }
    }
    if empty && !prefix.is_empty() {
        extra.empty_dirs.push(prefix.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_file_hashed_window_by_window_has_the_hash_of_its_bytes() {
        // 150 MiB (sparse, two bytes set): three windows, the last one short, and a byte on
        // each side of the first window's edge.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.bin");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(150 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"a", (64 << 20) - 1).unwrap();
        f.write_all_at(b"b", 64 << 20).unwrap();
        f.write_all_at(b"z", (150 << 20) - 1).unwrap();
        drop(f);
        let want = blake3::hash(&std::fs::read(&p).unwrap());
        assert_eq!(hash_file_bytes(&p).unwrap(), *want.as_bytes());
    }

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

    /// A restored file's hash, recorded under a stat too recent to save, is trusted by the
    /// same process while its stat is unchanged (no second read); a changed stat, or the
    /// output cleared for its stage to run, makes the hasher read it again.
    #[test]
    fn a_recorded_recent_stat_is_trusted_in_this_process_only_until_it_changes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("out")).unwrap();
        std::fs::write(d.path().join("out/f"), "one").unwrap();
        let c = StatCache::default();
        let h = Hasher::new(d.path(), &c);
        // Recorded as the restore's verified hash: a hash that is not the bytes' shows that
        // the record, not the bytes, answered.
        let claimed = blake3::hash(b"restored").to_hex();
        let meta = std::fs::metadata(d.path().join("out/f")).unwrap();
        c.record("out/f", &meta, &claimed);
        assert!(c.take_dirty().is_empty(), "not saved: too recent");
        assert_eq!(h.content("out/f").unwrap().hash(), Some(claimed.as_str()));
        // Another process (a fresh stat cache) reads the bytes.
        let other = StatCache::default();
        let real = blake3::hash(b"one").to_hex();
        let fresh = Hasher::new(d.path(), &other).content("out/f").unwrap();
        assert_eq!(fresh.hash(), Some(real.as_str()));
        // A changed stat is not trusted.
        std::fs::write(d.path().join("out/f"), "one, longer").unwrap();
        let changed = blake3::hash(b"one, longer").to_hex();
        assert_eq!(h.content("out/f").unwrap().hash(), Some(changed.as_str()));
        // Cleared for its stage: forgotten, for the output and the files under it.
        let meta = std::fs::metadata(d.path().join("out/f")).unwrap();
        c.record("out/f", &meta, &claimed);
        c.record("outer", &meta, &claimed);
        c.forget_recent("out");
        assert_eq!(h.content("out/f").unwrap().hash(), Some(changed.as_str()));
        assert!(
            c.get("outer", &StatKey::of(&meta)).is_some(),
            "outer is not under out/"
        );
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
            mode: EXEC_MODE,
        }];
        assert_eq!(
            parse_manifest(&manifest_text(&files, &[], &[])).unwrap(),
            files
        );
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
                mode: FILE_MODE,
            })
            .collect();
        let text = manifest_text(&files, &[], &[]);
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
        assert_eq!(manifest_text(std::slice::from_ref(f), &[], &[]), old);
    }

    #[test]
    fn manifests_naming_paths_outside_are_refused_decoded() {
        let h = "ab";
        for bad in [
            // The escaped form spells what the plain check never sees.
            format!("{h} -e 1 \\x2e\\x2e/\\x2e\\x2e/victim.txt\n"),
            format!("{h} xe 1 \\x2fetc/victim\n"),
            format!("{h} -e 1 a/\\x00b\n"),
            format!("{h} -e 1 a/\\x2e/b\n"),
            format!("{h} - 1 ../x\n"),
            format!("{h} - 1 /abs\n"),
            format!("{h} - 1 a//b\n"),
            "dir \\x2e\\x2e/d\n".to_string(),
            "link l /etc/passwd\n".to_string(),
            "link l ../x\n".to_string(),
            "link a/l ../../x\n".to_string(),
            "link a/l b/../../x\n".to_string(),
            "link \\x2e\\x2e/l x\n".to_string(),
            // A path under a link would be written through it.
            format!("link l sub\n{h} - 1 l/x\n"),
            format!("{h} m4755 1 x\n"),
        ] {
            assert!(parse_manifest_full(&bad).is_err(), "accepted {bad:?}");
            assert!(parse_manifest(&bad).is_err(), "accepted {bad:?}");
        }
        assert!(parse_manifest_full("link a/l ../x\nlink m sub/x\n").is_ok());
    }

    #[test]
    fn modes_empty_dirs_and_inner_links_are_in_the_manifest() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::fs::create_dir_all(out.join("sub/empty")).unwrap();
        std::fs::write(out.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(out.join("secret"), "s").unwrap();
        std::fs::write(out.join("plain"), "p").unwrap();
        std::fs::write(d.path().join("outside"), "o").unwrap();
        let mode = |p: &str, m: u32| {
            std::fs::set_permissions(out.join(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode("run.sh", 0o755);
        mode("secret", 0o600);
        mode("plain", 0o664); // group write follows the umask: not kept
        symlink("../plain", out.join("sub/link")).unwrap();
        symlink("../outside", out.join("ext")).unwrap();
        let c = StatCache::default();
        let Content::Dir {
            files,
            empty_dirs,
            links,
            hash,
        } = Hasher::new(d.path(), &c).content("out").unwrap()
        else {
            panic!()
        };
        let text = manifest_text(&files, &empty_dirs, &links);
        assert_eq!(blake3::hash(text.as_bytes()).to_hex().as_str(), hash);
        let mode_of = |n: &str| files.iter().find(|f| f.path == n).unwrap().mode;
        assert_eq!(mode_of("run.sh"), 0o755);
        assert_eq!(mode_of("secret"), 0o600);
        assert_eq!(mode_of("plain"), 0o644);
        // A link out of the directory is followed, as it always was.
        assert!(files.iter().any(|f| f.path == "ext"), "{text}");
        assert_eq!(empty_dirs, ["sub/empty"]);
        assert_eq!(
            links,
            [LinkEntry {
                path: "sub/link".into(),
                target: "../plain".into()
            }]
        );
        assert!(text.contains(" m600 1 secret\n"), "{text}");
        assert!(text.contains(" - 1 plain\n"), "{text}");
        assert!(text.contains(" x 10 run.sh\n"), "{text}");
        assert!(
            text.ends_with("dir sub/empty\nlink sub/link ../plain\n"),
            "{text}"
        );
        let m = parse_manifest_full(&text).unwrap();
        assert_eq!((m.files, m.empty_dirs, m.links), (files, empty_dirs, links));
        // Names with spaces round-trip in the new lines too.
        let odd = manifest_text(
            &[],
            &["a b/c".into()],
            &[LinkEntry {
                path: "l m".into(),
                target: "x y".into(),
            }],
        );
        let m = parse_manifest_full(&odd).unwrap();
        assert_eq!(m.empty_dirs, ["a b/c"]);
        assert_eq!(m.links[0].target_path(), std::path::Path::new("x y"));
    }
}
