//! The up-to-date record: when a run finds every stage fresh and changes nothing, it keeps
//! what that verdict rested on in `cache/up-to-date` — the key of the checked plan and what
//! the stat of every file the verdict read said: the pipeline and vars files, `repro.lock`,
//! and each dep and output (with each file and subdirectory of a directory one). The next
//! `run` or `status` of the whole pipeline stats those paths, in parallel, and when every one
//! says the same it reports every stage fresh without decoding the plan, reading the lock,
//! opening the state database or assessing a stage; at thousands of stages the stats are
//! then nearly all that is left of a no-op run, as in ninja and n2. Any difference, or
//! anything odd about the record, and the command takes its full path, which writes a new
//! record if the run again changes nothing.
//!
//! Why matching stats are enough: the verdict is a function of the plan (same key, same
//! pipeline and vars bytes), of the lock (same bytes) and of the content of the paths hashed,
//! and each of these is trusted under the stat the stat cache trusts a file's content under
//! (device, inode, size, mtime, ctime). The pipeline, vars and lock files are stat'ed, hashed
//! and stat'ed again when the record is written, and must hash to what the run used. A file
//! that changed while it was hashed, a path seen with two stats, or one whose mtime or ctime is
//! not older than the start of the command by more than its file system's timestamp
//! granularity (the stat cache's racy-clean rule: a change in the same second, or timer tick,
//! could leave its stat as it was) keeps the record from being written. The output checks of `crate::confine` depend on symlinks besides: the record holds
//! the `lstat` of each output, checkpoint and path a kind writes, and of each directory above
//! them, and is written only when none of them is a symlink, so whatever becomes one later no
//! longer matches.
//!
//! The file is the engine's own (in `cache/`, replaced atomically, not synced: a record lost
//! to a power cut costs one full run) but read as untrusted bytes: a checksum covers it, and a
//! record that does not decode is a miss, never an error.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::spec::Pipeline;
use crate::state::hashing::{self, Seen, StatKey};
use crate::state::workspace::Workspace;

const MAGIC: &[u8] = b"repro up-to-date\n";
/// Bumped whenever the stored form changes meaning.
const FORMAT: u32 = 2; // 2: stats kept under the racy-clean rule, not a 50 ms guard

/// The record's file in a workspace.
pub(crate) fn path(root: &Path) -> PathBuf {
    root.join("cache").join("up-to-date")
}

/// How a path was looked at: through symlinks (content) or not (`crate::confine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Look {
    Follow,
    NoFollow,
}

/// What a run that changed nothing rested on (see the module header), as stored: borrowed
/// from the bytes read, so that checking allocates next to nothing.
#[derive(Debug, PartialEq)]
struct Record<'a> {
    /// [`crate::state::plan_cache::key`] of the load.
    plan_key: &'a str,
    /// The options of the command besides the plan that could make it fail (see
    /// [`crate::run`]); `status` does not compare it.
    context: &'a str,
    /// Every stage, in the order `status` lists them.
    stages: Vec<&'a str>,
    /// Paths (workspace-relative, or absolute outside it) with how they were looked at and
    /// what that said, sorted, so that the paths of one directory mostly sit together.
    paths: Vec<(&'a [u8], Look, Seen)>,
}

/// The stages of the pipeline, all fresh, if the record in `root` still holds: same plan key
/// and every stat as recorded. `context`: the caller's own (see [`Record::context`]); `None`
/// does not compare it.
pub(crate) fn check(root: &Path, plan_key: &str, context: Option<&str>) -> Option<Vec<String>> {
    let bytes = std::fs::read(path(root)).ok()?;
    let r = decode(&bytes)?;
    if r.plan_key != plan_key
        || context.is_some_and(|c| c != r.context)
        || !stats_unchanged(root, &r.paths)
    {
        return None;
    }
    Some(r.stages.iter().map(|s| s.to_string()).collect())
}

/// Whether every path still stats as recorded. In parallel; each path is looked up from its
/// directory, opened once per run of paths that share it (a full path per stat costs a
/// dentry lookup per component, and the stats are nearly all of a no-op run).
fn stats_unchanged(root: &Path, paths: &[(&[u8], Look, Seen)]) -> bool {
    let Ok(root) = Dir::open(libc::AT_FDCWD, root.as_os_str().as_bytes()) else {
        return false;
    };
    let same = |dirs: &mut Dirs, &(rel, look, seen): &(&[u8], Look, Seen)| {
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(0) => (&rel[..1], &rel[1..]),
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        let now = match dirs.get(&root, parent) {
            Ok(dir) => statx_at(dir, name, look),
            // As a stat of the whole path would say.
            Err(libc::ENOENT) => Seen::Missing,
            Err(_) => Seen::Changing,
        };
        now == seen
    };
    if paths.len() < 256 {
        let mut dirs = Dirs::default();
        paths.iter().all(|p| same(&mut dirs, p))
    } else {
        paths
            .par_iter()
            .with_min_len(64)
            .map_init(Dirs::default, same)
            .all(|x| x)
    }
}

/// A directory opened to look paths up from (`O_PATH`: no permission to read it needed).
struct Dir(libc::c_int);

impl Dir {
    /// `path` relative to the directory `at` (or absolute); the error number if it fails.
    fn open(at: libc::c_int, path: &[u8]) -> Result<Dir, i32> {
        let path = std::ffi::CString::new(path).map_err(|_| libc::EINVAL)?;
        // SAFETY: a NUL-terminated path; the descriptor is owned by the returned value.
        let fd = unsafe {
            libc::openat(
                at,
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        Ok(Dir(fd))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

/// The directory last looked up from (paths are sorted, so mostly the same one).
#[derive(Default)]
struct Dirs {
    last: Option<(Vec<u8>, Result<Dir, i32>)>,
}

impl Dirs {
    /// The directory `parent` (empty: the root), or why it cannot be opened.
    fn get<'d>(&'d mut self, root: &'d Dir, parent: &[u8]) -> Result<&'d Dir, i32> {
        if parent.is_empty() {
            return Ok(root);
        }
        if self.last.as_ref().is_none_or(|(p, _)| p != parent) {
            self.last = Some((parent.to_vec(), Dir::open(root.0, parent)));
        }
        match &self.last {
            Some((_, Ok(d))) => Ok(d),
            Some((_, Err(e))) => Err(*e),
            None => Err(libc::EIO),
        }
    }
}

/// What a stat of `name` in `dir` says now, as [`StatKey::of`] would have it (the fields
/// `std::fs::metadata` fills from the same call).
fn statx_at(dir: &Dir, name: &[u8], look: Look) -> Seen {
    let Ok(name) = std::ffi::CString::new(name) else {
        return Seen::Changing;
    };
    let flags = match look {
        Look::Follow => 0,
        Look::NoFollow => libc::AT_SYMLINK_NOFOLLOW,
    };
    // SAFETY: `statx` writes only into the zeroed buffer it is given.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    let mask = libc::STATX_TYPE | libc::STATX_INO | libc::STATX_SIZE | libc::STATX_MTIME;
    // SAFETY: a valid directory descriptor, a NUL-terminated name and a buffer of the type.
    let rc = unsafe {
        libc::statx(
            dir.0,
            name.as_ptr(),
            flags,
            mask | libc::STATX_CTIME,
            &mut buf,
        )
    };
    if rc != 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) => Seen::Missing,
            // Unreadable now (or no `statx`): never the same as what was recorded.
            _ => Seen::Changing,
        };
    }
    let ns = |t: libc::statx_timestamp| t.tv_sec * 1_000_000_000 + i64::from(t.tv_nsec);
    Seen::Stat(StatKey {
        dev: libc::makedev(buf.stx_dev_major, buf.stx_dev_minor),
        ino: buf.stx_ino,
        size: buf.stx_size,
        mtime_ns: ns(buf.stx_mtime),
        ctime_ns: ns(buf.stx_ctime),
    })
}

/// Keep the record of a run of every stage of `p` (`order`: the stages as `status` lists
/// them) that found all of them fresh and changed nothing, from what `ws` saw while assessing
/// them. Returns whether it was written: not when a path changed while it was looked at, or
/// one that `crate::confine` resolves is a symlink. Best effort: a record that cannot be
/// written only costs the next run its full path.
pub(crate) fn record(
    ws: &Workspace,
    p: &Pipeline,
    order: &[usize],
    plan_key: &str,
    context: &str,
) -> bool {
    // A key that rests on more than files (a variable of repro's environment, a tool
    // command's output, an image in a runtime's store) must be computed again by every run.
    let volatile = p.stages.iter().any(|s| s.env.volatile());
    let Some(paths) = paths_seen(ws, p).filter(|_| !volatile) else {
        // An old record might still match the files as they are now: remove it.
        let _ = std::fs::remove_file(path(&ws.root));
        return false;
    };
    let r = Record {
        plan_key,
        context,
        stages: order.iter().map(|&i| p.stages[i].name.as_str()).collect(),
        paths: paths
            .iter()
            .map(|(rel, look, seen)| (rel.as_slice(), *look, *seen))
            .collect(),
    };
    crate::fsutil::write_atomic_unsynced(&path(&ws.root), &encode(&r)).is_ok()
}

/// Every path the assessment saw, once, plus the `lstat` of each path `crate::confine`
/// resolves, sorted by their bytes; `None` if one changed while seen, was seen with two stats,
/// is a symlink, or changed too recently to be told apart from a change to come.
fn paths_seen(ws: &Workspace, p: &Pipeline) -> Option<Vec<(Vec<u8>, Look, Seen)>> {
    use std::os::unix::ffi::OsStringExt;
    let mut paths: Vec<(Vec<u8>, Look, Seen)> = ws
        .seen
        .take()
        .into_iter()
        .map(|(rel, seen)| (rel.into_os_string().into_vec(), Look::Follow, seen))
        .collect();
    // What the plan was made from and the lock the verdict compared against, if they still
    // hold exactly the bytes the run used.
    let mut used: Vec<(PathBuf, Option<[u8; 32]>)> = vec![("repro.lock".into(), ws.lock_hash)];
    for i in &p.inputs {
        let mut h = [0u8; 32];
        hex::decode_to_slice(&i.hash, &mut h).ok()?;
        used.push((i.path.clone(), Some(h)));
    }
    for (file, hash) in used {
        let seen = stat_of_used(&ws.root.join(&file), hash.as_ref())?;
        paths.push((file.into_os_string().into_vec(), Look::Follow, seen));
    }
    let resolved = crate::confine_rule::resolved_paths(p);
    let mut nofollow: Vec<&str> = resolved
        .iter()
        .flat_map(|r| std::iter::once(r.as_str()).chain(crate::graph::ancestors(r)))
        .collect();
    nofollow.sort_unstable();
    nofollow.dedup();
    let lstat = |rel: &&str| {
        let seen = match std::fs::symlink_metadata(ws.root.join(rel)) {
            Ok(m) if m.file_type().is_symlink() => return None,
            Ok(m) => Seen::Stat(StatKey::of(&m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::Missing,
            Err(_) => return None,
        };
        Some((rel.as_bytes().to_vec(), Look::NoFollow, seen))
    };
    let lstats: Vec<_> = nofollow.par_iter().with_min_len(64).map(lstat).collect();
    paths.extend(lstats.into_iter().collect::<Option<Vec<_>>>()?);
    if paths.iter().any(|(_, _, seen)| *seen == Seen::Changing) {
        return None;
    }
    paths.sort_by(|a, b| a.0.cmp(&b.0));
    let mut once: Vec<(Vec<u8>, Look, Seen)> = Vec::with_capacity(paths.len());
    for (rel, look, seen) in paths {
        match once.last_mut() {
            Some(last) if last.0 == rel => {
                if last.2 != seen {
                    return None;
                }
                // Not a symlink, so its `lstat` is its `stat`: one check covers both.
                if look == Look::NoFollow {
                    last.1 = look;
                }
            }
            _ => once.push((rel, look, seen)),
        }
    }
    all_settled(&once, ws.seen.since_ns()).then_some(once)
}

/// The racy-clean rule of the stat cache ([`hashing::settled`]), against `since_ns`, a moment
/// before the assessment read anything: a stat taken within a timestamp granule of a change
/// cannot tell that change from the next one in the same granule (same size, same truncated
/// mtime and ctime), so while any path is that recent no record is kept (the next run's full
/// path keeps one).
fn all_settled(paths: &[(Vec<u8>, Look, Seen)], since_ns: i64) -> bool {
    paths.iter().all(|(_, _, seen)| match seen {
        Seen::Stat(k) => hashing::settled(k, since_ns),
        Seen::Missing => true,
        Seen::Changing => false,
    })
}

/// The stat of a file that held bytes hashing to `hash` when they were used (`None`: it did
/// not exist), if it still holds exactly those: stat, read and hash, stat again; the same stat
/// both times. `None` when it does not.
fn stat_of_used(full: &Path, hash: Option<&[u8; 32]>) -> Option<Seen> {
    let stat = || match std::fs::metadata(full) {
        Ok(m) => Some(Seen::Stat(StatKey::of(&m))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Seen::Missing),
        Err(_) => None,
    };
    let before = stat()?;
    let now = match std::fs::read(full) {
        Ok(bytes) => Some(*blake3::hash(&bytes).as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => return None,
    };
    (now.as_ref() == hash && stat()? == before).then_some(before)
}

// The stored form: MAGIC, then the fields below in order, then blake3 of all that. Numbers
// are little-endian; bytes are a u32 length then the bytes.

fn encode(r: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + r.paths.len() * 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    put_bytes(&mut out, r.plan_key.as_bytes());
    put_bytes(&mut out, r.context.as_bytes());
    put_len(&mut out, r.stages.len());
    for s in &r.stages {
        put_bytes(&mut out, s.as_bytes());
    }
    put_len(&mut out, r.paths.len());
    for (rel, look, seen) in &r.paths {
        put_bytes(&mut out, rel);
        let look = match look {
            Look::Follow => 0,
            Look::NoFollow => 2,
        };
        match seen {
            Seen::Missing => out.push(look),
            Seen::Stat(k) => {
                out.push(look + 1);
                for v in [k.dev, k.ino, k.size, k.mtime_ns as u64, k.ctime_ns as u64] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Seen::Changing => unreachable!("never recorded"),
        }
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

/// Reads the stored form front to back; every read fails (`None`) past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
    /// A count of items that each take at least `min` bytes (a damaged count fails here
    /// rather than reserving memory for it).
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(min)? <= self.0.len()).then_some(n)
    }
}

fn decode(bytes: &[u8]) -> Option<Record<'_>> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut r = Reader(body);
    if r.take(MAGIC.len())? != MAGIC || r.u32()? != FORMAT {
        return None;
    }
    let plan_key = r.str()?;
    let context = r.str()?;
    let stages = (0..r.count(4)?).map(|_| r.str()).collect::<Option<_>>()?;
    let n = r.count(5)?;
    // Sized up front: collecting through `Option` would grow it by doubling.
    let mut paths = Vec::with_capacity(n);
    for _ in 0..n {
        let rel = r.bytes()?;
        let tag = r.u8()?;
        let look = match tag >> 1 {
            0 => Look::Follow,
            1 => Look::NoFollow,
            _ => return None,
        };
        let seen = if tag & 1 == 0 {
            Seen::Missing
        } else {
            Seen::Stat(StatKey {
                dev: r.u64()?,
                ino: r.u64()?,
                size: r.u64()?,
                mtime_ns: r.u64()? as i64,
                ctime_ns: r.u64()? as i64,
            })
        };
        paths.push((rel, look, seen));
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(Record {
        plan_key,
        context,
        stages,
        paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record<'static> {
        Record {
            plan_key: "k",
            context: "c",
            stages: vec!["a", "b@x,y"],
            paths: vec![
                (b"in.txt", Look::Follow, Seen::Missing),
                (
                    b"out/a.txt",
                    Look::NoFollow,
                    Seen::Stat(StatKey {
                        dev: 1,
                        ino: 2,
                        size: 3,
                        mtime_ns: -4,
                        ctime_ns: 5,
                    }),
                ),
            ],
        }
    }

    #[test]
    fn no_record_rests_on_a_stat_within_a_granule_of_the_start() {
        const S: i64 = 1_000_000_000;
        let t = 1_700_000_000 * S;
        let stat = |mtime_ns, ctime_ns| {
            Seen::Stat(StatKey {
                dev: 1,
                ino: 2,
                size: 3,
                mtime_ns,
                ctime_ns,
            })
        };
        let paths = |seen| {
            vec![
                (b"a".to_vec(), Look::Follow, Seen::Missing),
                (b"b".to_vec(), Look::Follow, seen),
            ]
        };
        // A 1-second file system: a dep written at t.9 is stamped t; a run starting at t.95 must
        // keep no record (the old rule, 50 ms against the truncated stamp, kept one and the
        // next write in the same second went unseen).
        assert!(!all_settled(&paths(stat(t, t)), t + 950_000_000));
        assert!(!all_settled(&paths(stat(t, t)), t + 2 * S));
        assert!(all_settled(&paths(stat(t, t)), t + 2 * S + 1));
        // Nanosecond stamps: one second.
        assert!(!all_settled(&paths(stat(t + 7, t + 7)), t + 7 + S / 2));
        assert!(all_settled(&paths(stat(t + 7, t + 7)), t + 7 + S + 1));
        // An old mtime with a fresh ctime, a stamp in the future, a path that changed.
        assert!(!all_settled(
            &paths(stat(t - 100 * S, t + 7)),
            t + 7 + S / 2
        ));
        assert!(!all_settled(&paths(stat(t + 100 * S, t)), t + 10 * S));
        assert!(!all_settled(&paths(Seen::Changing), t));
        assert!(all_settled(&paths(Seen::Missing), t));
    }

    #[test]
    fn the_stored_form_round_trips_and_any_damage_is_a_miss() {
        let r = sample();
        let bytes = encode(&r);
        assert_eq!(decode(&bytes), Some(r));
        for cut in [0, 1, MAGIC.len(), bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        for i in [0, MAGIC.len() + 2, bytes.len() / 2, bytes.len() - 3] {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x20;
            assert_eq!(decode(&flipped), None, "byte {i} flipped");
        }
        // A well-formed record of another format version.
        let mut other = bytes[..bytes.len() - 32].to_vec();
        other[MAGIC.len()] = 9;
        let sum = *blake3::hash(&other).as_bytes();
        other.extend_from_slice(&sum);
        assert_eq!(decode(&other), None);
    }
}
