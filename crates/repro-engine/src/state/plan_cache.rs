//! The checked plan, kept: `pipeline.yaml` expanded and checked (the [`Pipeline`]) together
//! with the shape of its DAG, stored in the state database and reused while nothing it was
//! made from has changed, the way n2 keeps its build log. On a large no-op run, parsing and
//! checking the pipeline is otherwise the largest part of the time.
//!
//! A plan is found by a key over everything a load depends on besides the files it reads:
//! the pipeline file's absolute path, `--profile`, `--set`, `--max-stages`,
//! `REPRO_MAX_STAGES`, and the repro binary itself (its version and the size and mtime of its
//! file, so a rebuilt binary never trusts a plan checked by another). The record then names
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
use crate::state::workspace::Workspace;

/// Bumped whenever the stored form changes meaning.
const FORMAT: u32 = 2; // 2: every action is a kind (`cmd:` is `cmd`)

/// The key of the plan for loading `file` with `opts` (see the module header).
pub fn key(file: &Path, opts: &LoadOptions) -> String {
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
    let exe = std::env::current_exe().ok();
    let meta = exe.as_ref().and_then(|e| std::fs::metadata(e).ok());
    field(format!("{exe:?}").as_bytes());
    field(
        format!(
            "{:?}",
            meta.map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.len(), m.mtime(), m.mtime_nsec(), m.ino())
            })
        )
        .as_bytes(),
    );
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
pub fn lookup(bytes: &[u8], key: &str) -> Option<(Pipeline, Shape)> {
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
pub fn remember(ws: &Workspace, key: Option<String>, plan: &Pipeline, dag: &Dag) {
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
