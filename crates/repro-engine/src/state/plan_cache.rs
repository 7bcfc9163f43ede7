//! The checked plan, kept: `pipeline.yaml` expanded and checked (the [`Pipeline`]) together
//! with the shape of its DAG, stored in the state database and reused while nothing it was
//! made from has changed, the way n2 keeps its build log. On a large no-op run, parsing and
//! checking the pipeline is otherwise the largest part of the time.
//!
//! A plan is found by a key over everything a load depends on besides the files it reads:
//! the pipeline file's absolute path, `--profile`, `--set`, `--max-stages`,
//! `REPRO_MAX_STAGES`, and the repro binary itself (its version and its build id, or its
//! file's content where it has none, so a rebuilt binary never trusts a plan checked by
//! another, even one written in place with the same size and mtime). The record then names
//! every file the load read (the pipeline and each vars file) with the blake3 of its bytes;
//! each is read and hashed again, and one difference means a full parse. What depends on the
//! file system rather than on those files (source deps exist and are files, outputs resolve
//! inside the workspace) is checked again on every load.
//!
//! The database is the engine's own, but a record is still treated as untrusted bytes: one
//! that does not decode, was written by another format, or does not fit its pipeline is
//! ignored and the pipeline parsed. A plan is stored only if it decodes back to exactly what
//! was encoded (a number that would not survive the round trip keeps that plan uncached).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::graph::{Dag, Shape};
use crate::spec::yaml::{Mark, Source};
use crate::spec::{InputFile, LoadOptions, Pipeline};
use crate::state::db::StateDb;
use crate::state::hashing::{self, StatKey};
use crate::state::workspace::Workspace;

/// Bumped whenever the stored form changes meaning.
const FORMAT: u32 = 2; // 2: every action is a kind (`cmd:` is `cmd`)

/// The key of the plan for loading `file` with `opts` (see the module header).
pub(crate) fn key(file: &Path, opts: &LoadOptions) -> String {
    // Every option, by name: a new one must be added here (or deliberately left out).
    let LoadOptions {
        profile,
        overrides,
        max_stages,
        kinds,
    } = opts;
    let mut h = blake3::Hasher::new();
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(&FORMAT.to_le_bytes());
    field(env!("CARGO_PKG_VERSION").as_bytes());
    // The kinds' code is the binary's (below); which kinds are registered is the caller's.
    field(kinds.names().join(",").as_bytes());
    field(binary_identity().as_bytes());
    let abs = if file.is_absolute() {
        file.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(file)
    };
    field(abs.as_os_str().as_encoded_bytes());
    field(format!("{profile:?}").as_bytes());
    field(&(overrides.len() as u64).to_le_bytes());
    for (k, v) in overrides {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    field(format!("{max_stages:?}").as_bytes());
    field(format!("{:?}", std::env::var_os("REPRO_MAX_STAGES")).as_bytes());
    h.finalize().to_hex().to_string()
}

/// What identifies the code of the running binary (see [`identity`]), worked out once per
/// process.
fn binary_identity() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| identity(build_id(), hashing::fs_now_ns()))
}

/// The binary's GNU build id — the linker's hash of everything it linked, read from the
/// program's own loaded headers, so it names the code that is running even if its file has
/// been replaced since — or, for a binary linked without one, its file's content:
/// `/proc/self/exe`'s stat identity including the ctime (which no user can set, and which
/// every write changes) once that has settled by the racy-clean rule, else its bytes
/// hashed. The path, inode, size and mtime alone cannot tell another binary written in place
/// (same size, mtime put back) from the one that checked the plan.
fn identity(build_id: Option<Vec<u8>>, now_ns: i64) -> String {
    if let Some(id) = build_id {
        return format!("build-id {}", hex::encode(id));
    }
    let exe = Path::new("/proc/self/exe");
    let Ok(meta) = std::fs::metadata(exe) else {
        return "unknown binary".into();
    };
    let k = StatKey::of(&meta);
    if hashing::settled(&k, now_ns) {
        return format!(
            "stat {} {} {} {} {}",
            k.dev, k.ino, k.size, k.mtime_ns, k.ctime_ns
        );
    }
    match hashing::hash_file_bytes(exe) {
        Ok(h) => format!("content {}", hex::encode(h)),
        Err(_) => "unknown binary".into(),
    }
}

/// The GNU build id of the running program, if it was linked with one.
pub(crate) fn build_id() -> Option<Vec<u8>> {
    /// Called by `dl_iterate_phdr` with each loaded object, the program first.
    unsafe extern "C" fn program(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Option` passed below; `info` describes a loaded object whose
        // `PT_NOTE` segments are mapped at `dlpi_addr + p_vaddr` for `p_memsz` bytes.
        unsafe {
            let out = &mut *data.cast::<Option<Vec<u8>>>();
            let info = &*info;
            for i in 0..usize::from(info.dlpi_phnum) {
                let ph = &*info.dlpi_phdr.add(i);
                if ph.p_type != libc::PT_NOTE {
                    continue;
                }
                let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
                let notes = std::slice::from_raw_parts(start as *const u8, ph.p_memsz as usize);
                if let Some(id) = gnu_build_id(notes, ph.p_align as usize) {
                    *out = Some(id.to_vec());
                    break;
                }
            }
        }
        1 // the program is the first object: stop
    }
    let mut out: Option<Vec<u8>> = None;
    // SAFETY: the callback only reads the headers it is given and writes into `out`.
    unsafe { libc::dl_iterate_phdr(Some(program), (&raw mut out).cast()) };
    out.filter(|id| !id.is_empty())
}

/// The description of the `NT_GNU_BUILD_ID` note in a note segment aligned to `align`.
fn gnu_build_id(mut notes: &[u8], align: usize) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let pad = |n: usize| {
        let a = if align == 8 { 8 } else { 4 };
        n.checked_add(a - 1).map(|n| n & !(a - 1))
    };
    while notes.len() >= 12 {
        let word = |i: usize| u32::from_ne_bytes(notes[i..i + 4].try_into().unwrap());
        let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
        // The name and the description each start at an aligned offset.
        let desc = pad(12usize.checked_add(namesz)?)?;
        let end = desc.checked_add(descsz)?;
        let name = notes.get(12..12 + namesz)?;
        let body = notes.get(desc..end)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return Some(body);
        }
        notes = notes.get(pad(end)?..)?;
    }
    None
}

/// Read first, and checked before the plan itself is decoded.
#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    key: String,
    inputs: Vec<InputFile>,
}

#[derive(Deserialize)]
struct Body {
    plan: Pipeline,
    shape: Shape,
}

/// [`Body`] as it is written (the same JSON, from borrowed parts).
#[derive(Serialize)]
struct BodyRef<'a> {
    plan: &'a Pipeline,
    shape: &'a Shape,
}

/// `header length (u32 LE) | header JSON | body JSON`.
fn encode(header: &Header, body: &[u8]) -> Option<Vec<u8>> {
    let head = serde_json::to_vec(header).ok()?;
    let mut out = Vec::with_capacity(4 + head.len() + body.len());
    out.extend_from_slice(&u32::try_from(head.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    Some(out)
}

fn split(bytes: &[u8]) -> Option<(Header, &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let head = bytes.get(4..4 + len)?;
    Some((serde_json::from_slice(head).ok()?, &bytes[4 + len..]))
}

/// A cached plan for `key`, if there is one and every file it was made from is unchanged.
/// Anything odd about the record is a miss, never an error.
pub(crate) fn lookup(bytes: &[u8], key: &str) -> Option<(Pipeline, Shape)> {
    let (header, body) = split(bytes)?;
    if header.format != FORMAT || header.key != key || header.inputs.is_empty() {
        return None;
    }
    let mut sources = Vec::with_capacity(header.inputs.len());
    for input in &header.inputs {
        let bytes = std::fs::read(&input.path).ok()?;
        if blake3::hash(&bytes).to_hex().as_str() != input.hash {
            return None;
        }
        // As `yaml::parse_str` keeps it: UTF-8, without a BOM.
        let mut text = String::from_utf8(bytes).ok()?;
        if text.starts_with('\u{FEFF}') {
            text.drain(..'\u{FEFF}'.len_utf8());
        }
        sources.push(Arc::new(Source {
            path: input.shown.clone(),
            text,
        }));
    }
    let body: Body = with_sources(sources, || serde_json::from_slice(body).ok())?;
    let fits = body.plan.inputs == header.inputs && fits(&body.plan, &body.shape);
    fits.then_some((body.plan, body.shape))
}

/// Every stage and dep the shape names exists in the plan.
fn fits(p: &Pipeline, shape: &Shape) -> bool {
    let n = p.stages.len() as u64;
    shape
        .edges
        .iter()
        .all(|&(a, b)| u64::from(a) < n && u64::from(b) < n)
        && shape.sources.iter().all(|&(i, k)| {
            p.stages
                .get(i as usize)
                .is_some_and(|s| (k as usize) < s.deps.len())
        })
}

/// Keep the plan of a load that parsed the files (`key` set) in the workspace's state
/// database, if it has one. Best effort: a plan that cannot be stored is parsed again next
/// time.
pub(crate) fn remember(ws: &Workspace, key: Option<String>, plan: &Pipeline, dag: &Dag) {
    if let (Some(key), Some(db)) = (key, ws.db_if_open()) {
        store(db, &key, plan, dag);
    }
}

fn store(db: &StateDb, key: &str, plan: &Pipeline, dag: &Dag) {
    if let Some(bytes) = record(key, plan, dag) {
        let _ = db.put_plan(key, &bytes);
    }
}

fn record(key: &str, plan: &Pipeline, dag: &Dag) -> Option<Vec<u8>> {
    let shown: Vec<PathBuf> = plan.inputs.iter().map(|i| i.shown.clone()).collect();
    let shape = dag.shape();
    let body = BodyRef {
        plan,
        shape: &shape,
    };
    let bytes = with_shown(&shown, || serde_json::to_vec(&body).ok())?;
    // Stored only if it decodes to exactly the same plan.
    let sources: Vec<Arc<Source>> = plan
        .inputs
        .iter()
        .map(|i| {
            Arc::new(Source {
                path: i.shown.clone(),
                text: String::new(),
            })
        })
        .collect();
    let back: Body = with_sources(sources, || serde_json::from_slice(&bytes).ok())?;
    let back = BodyRef {
        plan: &back.plan,
        shape: &back.shape,
    };
    let again = with_shown(&shown, || serde_json::to_vec(&back).ok())?;
    if again != bytes {
        return None;
    }
    let header = Header {
        format: FORMAT,
        key: key.to_string(),
        inputs: plan.inputs.clone(),
    };
    encode(&header, &bytes)
}

thread_local! {
    /// While encoding: the files marks may point into (a mark is stored as an index).
    static SHOWN: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    /// While decoding: the sources those indices stand for.
    static SOURCES: RefCell<Vec<Arc<Source>>> = const { RefCell::new(Vec::new()) };
}

fn with_shown<T>(shown: &[PathBuf], f: impl FnOnce() -> T) -> T {
    SHOWN.with(|s| *s.borrow_mut() = shown.to_vec());
    let r = f();
    SHOWN.with(|s| s.borrow_mut().clear());
    r
}

fn with_sources<T>(sources: Vec<Arc<Source>>, f: impl FnOnce() -> T) -> T {
    SOURCES.with(|s| *s.borrow_mut() = sources);
    let r = f();
    SOURCES.with(|s| s.borrow_mut().clear());
    r
}

/// A mark is stored as `[input index, line, column]`; its source text is the input file's,
/// read again (and checked against its hash) when the plan is reused. Marks exist only
/// inside plans: encoding one outside [`store`] is an error.
impl Serialize for Mark {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = SHOWN
            .with(|shown| shown.borrow().iter().position(|p| p == self.path()))
            .ok_or_else(|| S::Error::custom("a mark outside the pipeline's input files"))?;
        (i as u32, self.line as u32, self.col as u32).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Mark {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mark, D::Error> {
        let (i, line, col) = <(u32, u32, u32)>::deserialize(d)?;
        let source = SOURCES
            .with(|s| s.borrow().get(i as usize).cloned())
            .ok_or_else(|| D::Error::custom("a mark names no input file"))?;
        Ok(Mark {
            source,
            line: line as usize,
            col: col as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path, opts: &LoadOptions) -> (Pipeline, Dag) {
        let p = crate::spec::load(&dir.join("pipeline.yaml"), opts).unwrap();
        let dag = crate::graph::build(&p).unwrap();
        (p, dag)
    }

    fn workspace() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("pipeline.yaml"),
            "vars: [params.yaml]\nstages:\n  a:\n    cmd: echo ${lr} > a.txt\n    deps: [in.txt]\n    outs: [a.txt]\n    params: [lr]\n  b:\n    cmd: cat a.txt > b.txt\n    deps: [a.txt]\n    outs: [b.txt]\n",
        )
        .unwrap();
        std::fs::write(d.path().join("params.yaml"), "lr: 0.1\n").unwrap();
        std::fs::write(d.path().join("in.txt"), "x").unwrap();
        d
    }

    #[test]
    fn a_stored_plan_comes_back_whole_and_any_input_change_misses() {
        let d = workspace();
        let opts = LoadOptions::default();
        let (p, dag) = load(d.path(), &opts);
        let k = key(&d.path().join("pipeline.yaml"), &opts);
        let bytes = record(&k, &p, &dag).expect("storable");
        let (q, shape) = lookup(&bytes, &k).expect("unchanged inputs: a hit");
        assert_eq!(shape, dag.shape());
        assert_eq!(format!("{:?}", q.stages), format!("{:?}", p.stages));
        assert_eq!(q.vars, p.vars);
        assert_eq!(q.inputs.len(), 2, "the pipeline and its vars file");
        // Marks quote the same source lines as a parse.
        assert_eq!(q.stages[0].mark.source.line(q.stages[0].mark.line), "  a:");
        // Another key, a changed vars file, a changed pipeline: misses.
        assert!(lookup(&bytes, "other").is_none());
        std::fs::write(d.path().join("params.yaml"), "lr: 0.2\n").unwrap();
        assert!(lookup(&bytes, &k).is_none());
        std::fs::write(d.path().join("params.yaml"), "lr: 0.1\n").unwrap();
        assert!(lookup(&bytes, &k).is_some());
        let text = std::fs::read_to_string(d.path().join("pipeline.yaml")).unwrap();
        std::fs::write(d.path().join("pipeline.yaml"), text + "\n").unwrap();
        assert!(lookup(&bytes, &k).is_none());
    }

    #[test]
    fn damaged_records_are_misses() {
        let d = workspace();
        let opts = LoadOptions::default();
        let (p, dag) = load(d.path(), &opts);
        let k = key(&d.path().join("pipeline.yaml"), &opts);
        let bytes = record(&k, &p, &dag).unwrap();
        for cut in [0, 3, 4, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(lookup(&bytes[..cut], &k).is_none(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x55;
        assert!(lookup(&flipped, &k).is_none());
        // Another format version.
        let (mut header, body) = split(&bytes).unwrap();
        header.format += 1;
        assert!(lookup(&encode(&header, body).unwrap(), &k).is_none());
    }

    fn note(name: &[u8], kind: u32, desc: &[u8], align: usize) -> Vec<u8> {
        let mut n = Vec::new();
        for v in [name.len() as u32, desc.len() as u32, kind] {
            n.extend_from_slice(&v.to_ne_bytes());
        }
        for part in [name, desc] {
            n.extend_from_slice(part);
            while n.len() % align != 0 {
                n.push(0);
            }
        }
        n
    }

    #[test]
    fn the_build_id_note_is_found_among_others() {
        for align in [4, 8] {
            let mut seg = note(b"GNU\0", 5, &[1; 12], align);
            seg.extend(note(b"XYZW\0", 3, &[2; 7], align));
            seg.extend(note(b"GNU\0", 3, &[9, 8, 7, 6, 5], align));
            assert_eq!(gnu_build_id(&seg, align), Some(&[9, 8, 7, 6, 5][..]));
            // Cut short anywhere: nothing, never a panic.
            for cut in 0..seg.len() - 1 {
                assert!(gnu_build_id(&seg[..cut], align).is_none_or(|id| id.len() == 5));
            }
        }
        assert_eq!(gnu_build_id(&note(b"GNU\0", 1, &[3], 4), 4), None);
    }

    #[test]
    fn the_running_binary_is_known_by_its_build_id() {
        // This test binary is linked like repro: with a build id, found in its file too.
        let id = build_id().expect("linked with a build id");
        let file = std::fs::read("/proc/self/exe").unwrap();
        let mut needle = b"GNU\0".to_vec();
        needle.extend_from_slice(&id);
        assert!(file.windows(needle.len()).any(|w| w == needle));
        assert_eq!(binary_identity(), format!("build-id {}", hex::encode(&id)));
        // Another build id, another key part; no build id: the file, by content or by its
        // settled stat (ctime included).
        assert_ne!(identity(Some(vec![1, 2]), 0), identity(Some(vec![1, 3]), 0));
        let racy = identity(None, i64::MIN);
        assert!(racy.starts_with("content "), "{racy}");
        let settled = identity(None, i64::MAX);
        let k = StatKey::of(&std::fs::metadata("/proc/self/exe").unwrap());
        assert!(
            settled.ends_with(&format!(" {} {}", k.mtime_ns, k.ctime_ns)),
            "{settled}"
        );
    }

    #[test]
    fn options_are_part_of_the_key() {
        let f = Path::new("/ws/pipeline.yaml");
        let base = LoadOptions::default();
        let set = LoadOptions {
            overrides: vec![("lr".into(), "0.2".into())],
            ..Default::default()
        };
        let profile = LoadOptions {
            profile: Some("paper".into()),
            ..Default::default()
        };
        let max = LoadOptions {
            max_stages: Some(5),
            ..Default::default()
        };
        let keys = [
            key(f, &base),
            key(f, &set),
            key(f, &profile),
            key(f, &max),
            key(Path::new("/other/pipeline.yaml"), &base),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(key(f, &base), key(f, &LoadOptions::default()));
    }
}
