//! Experiments: the configuration of the whole pipeline that a `repro run` left in the
//! workspace, recorded so it can be listed, compared and brought back as one unit.
//!
//! An experiment is every pipeline stage's key after a run (whether the stage ran, was fresh
//! or was restored), when, the git commit and whether the tree differed from it, the profile
//! and `--set` values the run loaded the pipeline with, and an optional `--name`. The keys say
//! everything else: a stage's params and `with:` values are in its run-cache record's
//! fingerprint, its outputs and metrics in the objects that record names. So an experiment is
//! small, and `exp apply` restores it through the run cache's own restore.
//!
//! Storage: one JSON file per experiment, `cache/experiments/<id>.json`, written with
//! [`crate::fsutil::write_atomic`], plus `cache/experiments/last` (`<id> <digest of its
//! keys>`). Files rather than a table in the state database because the database is held open
//! (and so busy) for the whole of a run while `exp show` must still read experiments; a
//! record is written once and updated in place only for a name or when its configuration runs
//! again (its time; see [`record`]); removing one is deleting a file; and the state
//! database's schema stays as it is. The `last` file lets the end of a
//! run decide "same keys as the last experiment, record nothing" by reading one short line,
//! so a run that changed nothing costs one small read and no git call; a run answered from
//! the up-to-date record (the no-op fast path) never gets here at all.
//!
//! Files under `cache/` are the engine's own, but an experiment file is still read as
//! untrusted input: its id must match its file name, and `exp apply` writes only paths that
//! pass [`check_rel_name`], the pipeline's confinement rules and are declared outputs of the
//! stage being restored.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::spec::{LoadOptions, Pipeline};
use crate::state::db::RunRecord;
use crate::state::hashing::check_rel_name;
use crate::state::lockfile::{LockEntry, LockFile};
use crate::state::workspace::Workspace;
use crate::ui::{Format, render_table};

/// Bumped when the stored form changes meaning.
const VERSION: u32 = 1;
/// The file naming the newest experiment and the digest of its keys.
const LAST: &str = "last";

/// One recorded configuration of the whole pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Experiment {
    /// The stored form's version when it was written.
    pub version: u32,
    /// 8 hex digits, also the file name.
    pub id: String,
    /// The name given with `--name`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Milliseconds since the epoch when it was recorded.
    pub created: u64,
    /// `git rev-parse HEAD` of the workspace, when it is in a git repository with commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Whether the tree differed from the commit (besides `repro.lock`, `.gitignore`,
    /// `cache/` and declared outputs, which the run itself writes).
    #[serde(default)]
    pub dirty: bool,
    /// `--profile` of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// `--set KEY=VALUE` of the run, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Stage name → its key, for every pipeline stage that had a lock entry.
    pub stages: BTreeMap<String, String>,
}

fn exp_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("experiments")
}

/// Whether `id` is an experiment id: 8 lowercase hex digits.
pub(crate) fn valid_id(id: &str) -> bool {
    id.len() == 8 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A stage key as the engine writes it (hex); anything else in a record is refused.
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What "the same configuration" means: the same stages with the same keys.
fn digest(stages: &BTreeMap<String, String>) -> String {
    let mut h = blake3::Hasher::new();
    for (name, key) in stages {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(key.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex()[..16].to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Check a `--name` before anything runs: free text, but not one that reads as an id.
pub fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        bail!("--name must be 1 to 100 printable characters");
    }
    if name.len() >= 4 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--name '{name}' would read as an experiment id; use a name with a non-hex letter");
    }
    Ok(())
}

/// At the end of a run, after the lock is written: record the configuration the workspace
/// holds now, unless it is the last experiment's (then only a `name` is given to that one).
/// Returns the new experiment's id.
pub(crate) fn record(
    ws: &Workspace,
    p: &Pipeline,
    lock: &LockFile,
    load: &LoadOptions,
    name: Option<&str>,
) -> Result<Option<String>> {
    let stages: BTreeMap<String, String> = p
        .stages
        .iter()
        .filter_map(|s| Some((s.name.clone(), lock.stages.get(&s.name)?.key.clone())))
        .collect();
    if stages.is_empty() {
        return Ok(None);
    }
    let dir = exp_dir(&ws.cache_dir);
    let d = digest(&stages);
    if let Some(last) = read_last(&dir)
        && last.1 == d
    {
        if let Some(name) = name {
            rename(&ws.cache_dir, &last.0, name)?;
        }
        return Ok(None);
    }
    // An earlier configuration run again (same stages, same keys, so the same params): that
    // experiment is what the workspace holds now, not a new one. Its row moves to the top
    // (its time is this run's, which also keeps it among gc's newest) instead of a duplicate.
    // Reading every record costs a little, but only after a run that changed the keys.
    if let Some(mut again) = list_quiet(&ws.cache_dir)
        .into_iter()
        .find(|e| digest(&e.stages) == d)
    {
        again.created = now_ms();
        if let Some(name) = name {
            again.name = Some(name.to_string());
        }
        write(&ws.cache_dir, &again)?;
        write_last(&dir, &again.id, &d)?;
        return Ok(None);
    }
    let created = now_ms();
    let mut id;
    let mut n = 0u32;
    loop {
        let seed = format!("{created} {} {d} {n}", std::process::id());
        id = blake3::hash(seed.as_bytes()).to_hex()[..8].to_string();
        if !dir.join(format!("{id}.json")).exists() {
            break;
        }
        n += 1;
    }
    let (commit, dirty) = git_state(p);
    let exp = Experiment {
        version: VERSION,
        id: id.clone(),
        name: name.map(str::to_string),
        created,
        commit,
        dirty,
        profile: load.profile.clone(),
        set: load.overrides.clone(),
        stages,
    };
    write(&ws.cache_dir, &exp)?;
    write_last(&dir, &id, &d)?;
    Ok(Some(id))
}

fn write(cache_dir: &Path, exp: &Experiment) -> Result<()> {
    let path = exp_dir(cache_dir).join(format!("{}.json", exp.id));
    crate::fsutil::write_atomic(&path, &serde_json::to_vec_pretty(exp)?)
}

fn write_last(dir: &Path, id: &str, digest: &str) -> Result<()> {
    // Losing it costs at most one duplicate experiment: no fsync.
    crate::fsutil::write_atomic_unsynced(&dir.join(LAST), format!("{id} {digest}\n").as_bytes())
}

fn read_last(dir: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(dir.join(LAST)).ok()?;
    let (id, d) = text.trim().split_once(' ')?;
    valid_id(id).then(|| (id.to_string(), d.to_string()))
}

/// Give the last experiment the name `name` (a run answered from the up-to-date record: it
/// changed nothing, so the last experiment is what the workspace holds).
pub(crate) fn name_last(cache_dir: &Path, name: &str) -> Result<()> {
    match read_last(&exp_dir(cache_dir)) {
        Some((id, _)) => rename(cache_dir, &id, name),
        None => Ok(()),
    }
}

/// Give the experiment `id` the name `name` (a no-op when it has it, or no longer exists).
fn rename(cache_dir: &Path, id: &str, name: &str) -> Result<()> {
    let Some(mut exp) = read_one(cache_dir, id) else {
        return Ok(());
    };
    if exp.name.as_deref() != Some(name) {
        exp.name = Some(name.to_string());
        write(cache_dir, &exp)?;
    }
    Ok(())
}

fn read_one(cache_dir: &Path, id: &str) -> Option<Experiment> {
    let text = std::fs::read(exp_dir(cache_dir).join(format!("{id}.json"))).ok()?;
    let exp: Experiment = serde_json::from_slice(&text).ok()?;
    check(&exp, id).is_ok().then_some(exp)
}

/// Check an experiment record read from `<id>.json` (or a remote's `exp/<id>`): it is data
/// from a file anyone may have edited, so its id must be the one it was found under, its
/// keys hex, and what `exp show` prints free of control characters (terminal escapes).
/// `Err` says what is wrong, in words.
pub(crate) fn check(exp: &Experiment, id: &str) -> std::result::Result<(), String> {
    let printable = |s: &str| !s.chars().any(char::is_control);
    if !valid_id(id) || exp.id != id {
        return Err(format!(
            "its id '{}' is not the one it is stored under ({id})",
            exp.id.escape_debug()
        ));
    }
    if exp.version > VERSION {
        return Err(format!(
            "record format version {} (this repro reads up to {VERSION})",
            exp.version
        ));
    }
    if exp.stages.is_empty() {
        return Err("it names no stage".into());
    }
    for (stage, key) in &exp.stages {
        if stage.is_empty() || stage.len() > 1000 || !printable(stage) {
            return Err(format!(
                "stage name '{}' is malformed",
                stage.escape_debug()
            ));
        }
        if !valid_key(key) {
            return Err(format!(
                "stage '{stage}' has key '{}', which is not a hex key",
                key.escape_debug()
            ));
        }
    }
    if let Some(c) = &exp.commit
        && (c.is_empty() || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(format!(
            "its commit '{}' is not a git commit id",
            c.escape_debug()
        ));
    }
    let texts = exp.name.iter().chain(&exp.profile);
    let set = exp.set.iter().flat_map(|(k, v)| [k, v]);
    if let Some(bad) = texts.chain(set).find(|t| !printable(t)) {
        return Err(format!(
            "its name, profile or --set value '{}' holds control characters",
            bad.escape_debug()
        ));
    }
    Ok(())
}

/// Every readable experiment record, in no order, without warnings (for `record`, which must
/// not print about a file that `exp show` will name anyway).
fn list_quiet(cache_dir: &Path) -> Vec<Experiment> {
    let Ok(entries) = std::fs::read_dir(exp_dir(cache_dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let id = name.to_str()?.strip_suffix(".json")?.to_string();
            valid_id(&id).then(|| read_one(cache_dir, &id)).flatten()
        })
        .collect()
}

/// The experiment the workspace holds now: the newest one each of whose stages has the
/// lock's key (`None` when no experiment is). Only `repro push` asks.
#[cfg(feature = "remote")]
pub(crate) fn current(cache_dir: &Path, lock: &LockFile) -> Result<Option<Experiment>> {
    Ok(list(cache_dir)?.into_iter().find(|e| {
        e.stages
            .iter()
            .all(|(s, k)| lock.stages.get(s).is_some_and(|l| &l.key == k))
    }))
}

/// Record an experiment brought from elsewhere (`repro pull --exp`) under its own id, so
/// that the same id names it in both workspaces. A record with that id already here is kept
/// when it names the same stages and keys; one that names others is a different experiment
/// that happens to have the same id, and is an error (nothing is overwritten).
#[cfg(any(feature = "remote", test))]
pub(crate) fn adopt(cache_dir: &Path, exp: &Experiment) -> Result<()> {
    check(exp, &exp.id).map_err(|why| anyhow::anyhow!("experiment {}: {why}", exp.id))?;
    match read_one(cache_dir, &exp.id) {
        Some(here) if here.stages == exp.stages => Ok(()),
        Some(_) => bail!(
            "this workspace already has a different experiment with the id {} ({}); not replaced",
            exp.id,
            exp_dir(cache_dir)
                .join(format!("{}.json", exp.id))
                .display()
        ),
        None if exp_dir(cache_dir).join(format!("{}.json", exp.id)).exists() => bail!(
            "{} exists but is not a valid experiment record; remove it first",
            exp_dir(cache_dir)
                .join(format!("{}.json", exp.id))
                .display()
        ),
        None => write(cache_dir, exp),
    }
}

/// Every experiment recorded in the workspace whose cache is `cache_dir`, newest first; a
/// file that does not read as one is skipped with a warning.
pub(crate) fn list(cache_dir: &Path) -> Result<Vec<Experiment>> {
    let dir = exp_dir(cache_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries {
        let name = e?.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if !valid_id(id) {
            continue;
        }
        match read_one(cache_dir, id) {
            Some(exp) => out.push(exp),
            None => eprintln!(
                "warning: {} is not a valid experiment record; skipped",
                dir.join(&name).display()
            ),
        }
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// The experiment `what` names: its id, its name (the newest with it), or a unique prefix of
/// at least 4 digits of its id.
pub(crate) fn resolve<'a>(all: &'a [Experiment], what: &str) -> Result<&'a Experiment> {
    find(all, what)?
        .ok_or_else(|| anyhow::anyhow!("no experiment '{what}' (repro exp show lists them)"))
}

/// [`resolve`], with `Ok(None)` when nothing matches (`pull --exp` then asks the remote);
/// an ambiguous prefix is still an error.
pub(crate) fn find<'a>(all: &'a [Experiment], what: &str) -> Result<Option<&'a Experiment>> {
    if let Some(e) = all.iter().find(|e| e.id == what) {
        return Ok(Some(e));
    }
    if let Some(e) = all.iter().find(|e| e.name.as_deref() == Some(what)) {
        return Ok(Some(e));
    }
    if what.len() >= 4 {
        let hits: Vec<&Experiment> = all.iter().filter(|e| e.id.starts_with(what)).collect();
        match hits.as_slice() {
            [one] => return Ok(Some(one)),
            [] => {}
            _ => bail!(
                "'{what}' names {} experiments; give more of the id",
                hits.len()
            ),
        }
    }
    Ok(None)
}

/// Whether `what` names a recorded experiment (`exp apply` falls back to a run-cache id).
pub fn exists(root: &Path, what: &str) -> bool {
    list(&root.join("cache")).is_ok_and(|all| resolve(&all, what).is_ok())
}

/// The commit of the workspace's git repository and whether its tree differs from it. Paths
/// the run itself writes (the lock, `.gitignore`'s block of outputs, `cache/`, declared
/// outputs and checkpoints) do not make it dirty: the experiment's keys describe them.
fn git_state(p: &Pipeline) -> (Option<String>, bool) {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&p.root)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| o.stdout)
    };
    let Some(out) = git(&["rev-parse", "--show-prefix", "HEAD"]) else {
        return (None, false);
    };
    let text = String::from_utf8_lossy(&out);
    let mut lines = text.lines();
    let prefix = lines.next().unwrap_or("").to_string();
    let Some(commit) = lines.next().map(str::to_string) else {
        return (None, false);
    };
    let Some(status) = git(&["status", "--porcelain", "-z", "--untracked-files=all"]) else {
        return (Some(commit), false);
    };
    let mut written: Vec<String> = ["repro.lock", ".gitignore", "cache"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for s in &p.stages {
        written.extend(s.outs.iter().map(|o| o.path.clone()));
        written.extend(s.checkpoint.iter().cloned());
    }
    let written: Vec<String> = written
        .iter()
        .map(|w| format!("{prefix}{}", w.trim_end_matches('/')))
        .collect();
    let mut dirty = false;
    let mut records = status.split(|&b| b == 0);
    while let Some(rec) = records.next() {
        if rec.len() < 4 {
            continue;
        }
        // A rename or copy is followed by its source path: not a change of its own.
        if matches!(rec[0], b'R' | b'C') {
            records.next();
        }
        let path = String::from_utf8_lossy(&rec[3..]);
        let path = path.trim_end_matches('/');
        let ours = written.iter().any(|w| {
            path == w
                || path
                    .strip_prefix(w.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        });
        if !ours {
            dirty = true;
            break;
        }
    }
    (Some(commit), dirty)
}

/// The workspace's state as the experiment commands read it.
struct State {
    ws: Workspace,
    lock: LockFile,
    records: HashMap<String, Option<RunRecord>>,
    /// A stage's own metrics by key: experiments share most keys, so each file is parsed once.
    metrics: HashMap<String, BTreeMap<String, f64>>,
}

impl State {
    fn open(root: &Path) -> Result<State> {
        // These commands only read: on a read-only workspace, the state is read as it is.
        let mut ws = match Workspace::open(root, Duration::from_secs(10)) {
            Ok(ws) => ws,
            Err(_) => Workspace::open_for_reading(root)?,
        };
        if ws.db_if_open().is_none() && ws.cache_dir.join("state.redb").exists() {
            bail!(
                "the state database {} is busy (a run is in progress); try again when it ends",
                ws.cache_dir.join("state.redb").display()
            );
        }
        let lock = crate::state::workspace::read_lock(&mut ws)?;
        Ok(State {
            ws,
            lock,
            records: HashMap::new(),
            metrics: HashMap::new(),
        })
    }

    /// The run-cache record of `key`, read once.
    fn record(&mut self, key: &str) -> Result<Option<&RunRecord>> {
        if !self.records.contains_key(key) {
            let rec = match self.ws.db_if_open() {
                Some(db) => db.get_run(key)?,
                None => None,
            };
            self.records.insert(key.to_string(), rec);
        }
        Ok(self.records[key].as_ref())
    }

    fn object_text(&self, hash: &str) -> Option<String> {
        std::fs::read_to_string(self.ws.objects.object_path(hash)).ok()
    }
}

/// One experiment as `exp show` and `exp diff` present it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The experiment's id (8 hex digits).
    pub id: String,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// Milliseconds since the epoch.
    pub created: u64,
    /// The git commit the workspace was at, if it is a git checkout.
    pub commit: Option<String>,
    /// The checkout had uncommitted changes.
    pub dirty: bool,
    /// The workspace holds it now (every stage's key is the lock's).
    pub current: bool,
    /// The params and `with:` values of its stages by name (a list where its stages differ, as
    /// along a matrix axis), and for each foreach/matrix stage `BASE@*`, the list of its
    /// expansions.
    pub params: BTreeMap<String, Json>,
    /// Each stage's own metrics (from its own `metrics:` files), by stage.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Stage → key.
    pub stages: BTreeMap<String, String>,
    /// The `--profile` it ran with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The `--set` values it ran with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// The distinct machine environments its stages ran in (`crate::environment`, without a
    /// stage's own thread count), from their run-cache records; empty for records made before
    /// environments were kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<Json>,
}

fn row(st: &mut State, exp: &Experiment, problems: &mut Vec<String>) -> Result<Row> {
    let mut values: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    let mut axes: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    let mut metrics = BTreeMap::new();
    let mut environments: Vec<Json> = Vec::new();
    for (stage, key) in &exp.stages {
        if let Some((base, item)) = stage.split_once('@') {
            axes.entry(format!("{base}@*"))
                .or_default()
                .push(Json::String(item.to_string()));
        }
        let lock_entry = st.lock.stages.get(stage).filter(|e| &e.key == key).cloned();
        let rec = st.record(key)?.cloned();
        let fp = rec
            .as_ref()
            .and_then(|r| r.fingerprint.clone())
            .or_else(|| lock_entry.as_ref().map(|e| e.fingerprint.clone()));
        if let Some(fp) = fp {
            for (k, v) in crate::compare::params_of(&fp.params, &fp.with) {
                let vs = values.entry(k).or_default();
                if !vs.contains(&v) {
                    vs.push(v);
                }
            }
        }
        // Only the stage's own metrics files: an upstream stage never shows what a downstream
        // one measured.
        let Some(rec) = rec else { continue };
        if let Some(mut env) = rec.environment.clone() {
            if let Some(o) = env.as_object_mut() {
                o.remove("stage_threads");
            }
            if !environments.contains(&env) {
                environments.push(env);
            }
        }
        if !st.metrics.contains_key(key) {
            let mut own = BTreeMap::new();
            for m in &rec.metrics {
                let Some(text) = rec.outs.get(m).and_then(|h| st.object_text(h)) else {
                    continue;
                };
                match crate::metrics_file::parse_named(&text, m, &rec.metrics) {
                    Ok(found) => own.extend(found),
                    Err(why) => problems.push(format!(
                        "metrics file {m} of stage '{stage}' in experiment {}: {why}",
                        exp.id
                    )),
                }
            }
            st.metrics.insert(key.clone(), own);
        }
        let own = st.metrics[key].clone();
        if !own.is_empty() {
            metrics.insert(stage.clone(), own);
        }
    }
    let mut params: BTreeMap<String, Json> = values
        .into_iter()
        .map(|(k, mut vs)| {
            (
                k,
                if vs.len() == 1 {
                    vs.remove(0)
                } else {
                    Json::Array(vs)
                },
            )
        })
        .collect();
    params.extend(axes.into_iter().map(|(k, v)| (k, Json::Array(v))));
    let current = exp
        .stages
        .iter()
        .all(|(s, k)| st.lock.stages.get(s).is_some_and(|e| &e.key == k));
    Ok(Row {
        id: exp.id.clone(),
        name: exp.name.clone(),
        created: exp.created,
        commit: exp.commit.clone(),
        dirty: exp.dirty,
        current,
        params,
        metrics,
        stages: exp.stages.clone(),
        profile: exp.profile.clone(),
        set: exp.set.clone(),
        environments,
    })
}

/// Every experiment of the workspace at `root` as a row, newest first. An existing metrics
/// file that cannot be read is an error naming it.
pub fn rows(root: &Path) -> Result<Vec<Row>> {
    let all = list(&root.join("cache"))?;
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let mut st = State::open(root)?;
    let mut problems = Vec::new();
    let rows = all
        .iter()
        .map(|e| row(&mut st, e, &mut problems))
        .collect::<Result<Vec<_>>>()?;
    if !problems.is_empty() {
        bail!("cannot read {}", problems.join("; cannot read "));
    }
    Ok(rows)
}

/// The column name of each (stage, metric): the metric's own name when only one stage has
/// it, else `stage:metric`.
fn metric_columns(rows: &[Row]) -> Vec<(String, String, String)> {
    let pairs: BTreeSet<(String, String)> = rows
        .iter()
        .flat_map(|r| {
            r.metrics
                .iter()
                .flat_map(|(s, m)| m.keys().map(move |k| (s.clone(), k.clone())))
        })
        .collect();
    let mut stages_of: HashMap<&str, usize> = HashMap::new();
    for (_, m) in &pairs {
        *stages_of.entry(m).or_default() += 1;
    }
    pairs
        .iter()
        .map(|(s, m)| {
            let label = if stages_of[m.as_str()] == 1 {
                m.clone()
            } else {
                format!("{s}:{m}")
            };
            (label, s.clone(), m.clone())
        })
        .collect()
}

/// Whether the column `label` is what `wanted` names: equal, or its last dotted or prefixed
/// part.
fn label_matches(label: &str, wanted: &str) -> bool {
    label == wanted
        || label.ends_with(&format!(".{wanted}"))
        || label.ends_with(&format!(":{wanted}"))
}

/// `exp show --sort METRIC`: best (largest) first unless `ascending`; rows without it last.
pub fn sort_rows(rows: &mut [Row], metric: &str, ascending: bool) -> Result<()> {
    let cols = metric_columns(rows);
    let wanted: Vec<&(String, String, String)> = cols
        .iter()
        .filter(|(l, _, _)| label_matches(l, metric))
        .collect();
    if wanted.is_empty() {
        let known: Vec<&str> = cols.iter().map(|(l, _, _)| l.as_str()).collect();
        bail!(
            "no experiment has a metric '{metric}' (metrics: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
    }
    let value = |r: &Row| {
        wanted
            .iter()
            .find_map(|(_, s, m)| r.metrics.get(s).and_then(|ms| ms.get(m)).copied())
    };
    rows.sort_by(|a, b| match (value(a), value(b)) {
        (Some(x), Some(y)) => {
            let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
            if ascending { o } else { o.reverse() }
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(())
}

/// `exp show --metrics a,b`: keep only the metrics these name.
pub fn keep_metrics(rows: &mut [Row], wanted: &[String]) {
    for r in rows {
        for (s, ms) in r.metrics.iter_mut() {
            ms.retain(|m, _| {
                wanted
                    .iter()
                    .any(|w| label_matches(m, w) || label_matches(&format!("{s}:{m}"), w))
            });
        }
        r.metrics.retain(|_, ms| !ms.is_empty());
    }
}

/// The params whose values are not the same in every row; with a single row, all of them (a
/// lone configuration still says what it was).
fn shown_params(rows: &[Row]) -> Vec<String> {
    let names: BTreeSet<&String> = rows.iter().flat_map(|r| r.params.keys()).collect();
    names
        .into_iter()
        .filter(|n| {
            let first = rows.first().and_then(|r| r.params.get(*n));
            rows.len() < 2 || rows.iter().any(|r| r.params.get(*n) != first)
        })
        .cloned()
        .collect()
}

/// The most values a list cell shows.
const LIST_CELL: usize = 8;
/// The most metric columns a table shows (a matrix of hundreds of evaluations would make it
/// unreadable): the rest are named in a note, and `--metrics` or `--json` give them.
const METRIC_COLUMNS: usize = 16;

fn cell(v: Option<&Json>) -> String {
    match v {
        None => "-".into(),
        Some(Json::String(s)) => s.clone(),
        // A long axis (hundreds of expansions) is summarised; --json has every value.
        Some(Json::Array(a)) if a.len() > LIST_CELL => format!(
            "{},… ({} values)",
            a[..3]
                .iter()
                .map(|v| cell(Some(v)))
                .collect::<Vec<_>>()
                .join(","),
            a.len()
        ),
        Some(Json::Array(a)) => a
            .iter()
            .map(|v| cell(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        Some(v) => v.to_string(),
    }
}

fn num_cell(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => {
            let s = format!("{x:.6}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

fn commit_cell(r: &Row) -> String {
    match &r.commit {
        None => "-".into(),
        Some(c) => format!(
            "{}{}",
            &c[..c.len().min(8)],
            if r.dirty { "-dirty" } else { "" }
        ),
    }
}

fn utc(ms: u64) -> String {
    crate::trace_file::utc_seconds(ms)[..16].to_string()
}

/// What `exp show` shows, whichever way it is drawn (the text or Markdown table here, the
/// HTML table of the plots page): the headers and the cells of each row. The id cell is the
/// bare id; `current[i]` says row `i` is in the workspace now.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub headers: Vec<String>,
    pub cells: Vec<Vec<String>>,
    pub current: Vec<bool>,
    /// How many of the leading columns are id, name, time, commit, then the differing params
    /// (the metric columns follow).
    pub fixed: usize,
    /// Metric columns left out (over `METRIC_COLUMNS`).
    pub hidden: usize,
}

/// The table of `rows`: id, name, when, commit, the params that differ, the metrics.
pub(crate) fn table(rows: &[Row]) -> Table {
    let params = shown_params(rows);
    let mut metrics = metric_columns(rows);
    let hidden = metrics.len().saturating_sub(METRIC_COLUMNS);
    metrics.truncate(METRIC_COLUMNS);
    let mut headers = vec![
        "id".to_string(),
        "name".into(),
        "ran (UTC)".into(),
        "commit".into(),
    ];
    headers.extend(params.iter().cloned());
    let fixed = headers.len();
    headers.extend(metrics.iter().map(|(l, _, _)| l.clone()));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                r.id.clone(),
                r.name.clone().unwrap_or_else(|| "-".into()),
                utc(r.created),
                commit_cell(r),
            ];
            c.extend(params.iter().map(|p| cell(r.params.get(p))));
            c.extend(
                metrics
                    .iter()
                    .map(|(_, s, m)| num_cell(r.metrics.get(s).and_then(|ms| ms.get(m)).copied())),
            );
            c
        })
        .collect();
    Table {
        headers,
        cells,
        current: rows.iter().map(|r| r.current).collect(),
        fixed,
        hidden,
    }
}

/// `exp show`: one row per experiment: id (`*`: in the workspace now), name, when, commit,
/// the params that differ, the metrics.
pub fn print(rows: &[Row], fmt: Format) -> Result<()> {
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no experiments yet: each `repro run` records one (`--stages` lists the run cache)"
        );
        return Ok(());
    }
    let mut t = table(rows);
    for (c, &now) in t.cells.iter_mut().zip(&t.current) {
        if now {
            c[0].push('*');
        }
    }
    print!("{}", render_table(&t.headers, &t.cells, fmt));
    if t.hidden > 0 {
        println!(
            "({} more metric columns: choose with --metrics NAMES, or see --json)",
            t.hidden
        );
    }
    if fmt == Format::Text {
        println!(
            "* = in the workspace now; repro exp apply ID restores one; --stages lists the run cache per stage"
        );
    }
    Ok(())
}

/// One difference between two experiments.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The stage, for a metric or a key; none for a param (params are per experiment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The param, metric or stage.
    pub name: String,
    /// Its value in A (`None`: absent there).
    pub a: Option<Json>,
    /// Its value in B.
    pub b: Option<Json>,
}

/// `exp diff A B`.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// A's id.
    pub a: String,
    /// B's id.
    pub b: String,
    /// Params that differ.
    pub params: Vec<Change>,
    /// Metrics that differ, by stage.
    pub metrics: Vec<Change>,
    /// Stages whose keys differ (`name` is `key`).
    pub stages: Vec<Change>,
    /// How the machines differ (`cpu: … (was …)`, `cpu_flags: -avx512f`), comparing the
    /// environment most of each experiment's stages ran in; empty when they match or either
    /// was not recorded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
}

/// What differs between the experiments `a` and `b`.
pub fn diff(root: &Path, a: &str, b: &str) -> Result<Diff> {
    let all = rows(root)?;
    let exps = list(&root.join("cache"))?;
    let (ea, eb) = (resolve(&exps, a)?, resolve(&exps, b)?);
    let find = |id: &str| all.iter().find(|r| r.id == id).expect("listed");
    let (ra, rb) = (find(&ea.id), find(&eb.id));
    let mut out = Diff {
        a: ra.id.clone(),
        b: rb.id.clone(),
        params: Vec::new(),
        metrics: Vec::new(),
        stages: Vec::new(),
        environment: environment_diff(ra, rb),
    };
    let names: BTreeSet<&String> = ra.params.keys().chain(rb.params.keys()).collect();
    for n in names {
        let (x, y) = (ra.params.get(n), rb.params.get(n));
        if x != y {
            out.params.push(Change {
                stage: None,
                name: n.clone(),
                a: x.cloned(),
                b: y.cloned(),
            });
        }
    }
    let stages: BTreeSet<&String> = ra.metrics.keys().chain(rb.metrics.keys()).collect();
    let empty = BTreeMap::new();
    for s in stages {
        let (ma, mb) = (
            ra.metrics.get(s).unwrap_or(&empty),
            rb.metrics.get(s).unwrap_or(&empty),
        );
        let names: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
        for n in names {
            let (x, y) = (ma.get(n), mb.get(n));
            if x != y {
                out.metrics.push(Change {
                    stage: Some(s.clone()),
                    name: n.clone(),
                    a: x.map(|v| serde_json::json!(v)),
                    b: y.map(|v| serde_json::json!(v)),
                });
            }
        }
    }
    let stages: BTreeSet<&String> = ra.stages.keys().chain(rb.stages.keys()).collect();
    for s in stages {
        let (x, y) = (ra.stages.get(s), rb.stages.get(s));
        if x != y {
            out.stages.push(Change {
                stage: Some(s.clone()),
                name: "key".into(),
                a: x.map(|k| Json::String(k.clone())),
                b: y.map(|k| Json::String(k.clone())),
            });
        }
    }
    Ok(out)
}

/// The differences between the environments `b` and `a` ran in (the first each lists).
fn environment_diff(a: &Row, b: &Row) -> Vec<String> {
    let first = |r: &Row| -> Option<crate::environment::Environment> {
        serde_json::from_value(r.environments.first()?.clone()).ok()
    };
    let (Some(ea), Some(eb)) = (first(a), first(b)) else {
        return Vec::new();
    };
    let mut out = eb.diff(&ea);
    for r in [a, b] {
        if r.environments.len() > 1 {
            out.push(format!(
                "{}'s stages ran in {} environments; compared: the first",
                r.id,
                r.environments.len()
            ));
        }
    }
    out
}

/// Print an `exp diff` as a table, Markdown or JSON.
pub fn print_diff(d: &Diff, fmt: Format) -> Result<()> {
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(d)?);
        return Ok(());
    }
    if d.params.is_empty()
        && d.metrics.is_empty()
        && d.stages.is_empty()
        && d.environment.is_empty()
    {
        println!("{} and {} are the same configuration", d.a, d.b);
        return Ok(());
    }
    let short = |v: Option<&Json>| match v {
        Some(Json::String(k)) if valid_key(k) => k[..k.len().min(8)].to_string(),
        other => cell(other),
    };
    let num = |v: Option<&Json>| num_cell(v.and_then(Json::as_f64));
    if !d.params.is_empty() {
        let cells: Vec<Vec<String>> = d
            .params
            .iter()
            .map(|c| vec![c.name.clone(), cell(c.a.as_ref()), cell(c.b.as_ref())])
            .collect();
        print!(
            "{}",
            render_table(&["param".into(), d.a.clone(), d.b.clone()], &cells, fmt)
        );
    }
    if !d.metrics.is_empty() {
        if !d.params.is_empty() {
            println!();
        }
        let cells: Vec<Vec<String>> = d
            .metrics
            .iter()
            .map(|c| {
                let change = match (
                    c.a.as_ref().and_then(Json::as_f64),
                    c.b.as_ref().and_then(Json::as_f64),
                ) {
                    (Some(x), Some(y)) if y >= x => format!("+{}", num_cell(Some(y - x))),
                    (Some(x), Some(y)) => num_cell(Some(y - x)),
                    _ => String::new(),
                };
                vec![
                    c.stage.clone().unwrap_or_default(),
                    c.name.clone(),
                    num(c.a.as_ref()),
                    num(c.b.as_ref()),
                    change,
                ]
            })
            .collect();
        let headers = [
            "stage".to_string(),
            "metric".into(),
            d.a.clone(),
            d.b.clone(),
            "change".into(),
        ];
        print!("{}", render_table(&headers, &cells, fmt));
    }
    if !d.stages.is_empty() {
        if !d.params.is_empty() || !d.metrics.is_empty() {
            println!();
        }
        let cells: Vec<Vec<String>> = d
            .stages
            .iter()
            .map(|c| {
                vec![
                    c.stage.clone().unwrap_or_default(),
                    short(c.a.as_ref()),
                    short(c.b.as_ref()),
                ]
            })
            .collect();
        print!(
            "{}",
            render_table(&["stage key".into(), d.a.clone(), d.b.clone()], &cells, fmt)
        );
    }
    if !d.environment.is_empty() {
        // Beside any difference: a reason the numbers may differ that no key records.
        println!("\nenvironment ({} against {}):", d.b, d.a);
        for line in &d.environment {
            println!("  {line}");
        }
    }
    Ok(())
}

/// `exp remove ID…`: delete these experiment records (their run-cache entries and objects
/// stay until `repro gc`). Returns the lines to print.
pub fn remove(root: &Path, ids: &[String]) -> Result<Vec<String>> {
    let cache_dir = root.join("cache");
    let _guard = crate::state::workspace::WorkspaceLock::acquire(&cache_dir, false)?;
    let all = list(&cache_dir)?;
    // Every name resolves before anything is deleted.
    let chosen = ids
        .iter()
        .map(|i| resolve(&all, i).map(|e| e.id.clone()))
        .collect::<Result<BTreeSet<String>>>()?;
    drop_records(&cache_dir, &chosen)?;
    Ok(chosen
        .iter()
        .map(|id| format!("removed experiment {id}"))
        .collect())
}

fn drop_records(cache_dir: &Path, ids: &BTreeSet<String>) -> Result<()> {
    let dir = exp_dir(cache_dir);
    for id in ids {
        let path = dir.join(format!("{id}.json"));
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    if read_last(&dir).is_some_and(|(id, _)| ids.contains(&id)) {
        let _ = std::fs::remove_file(dir.join(LAST));
    }
    Ok(())
}

/// For `repro gc` (which holds the workspace lock): the run-cache keys that the experiments
/// it keeps reference. `keep` empty: every experiment is kept; otherwise only those it names,
/// and the records of the others are removed. Returns the keys and how many were removed.
pub(crate) fn gc_keep(
    cache_dir: &Path,
    keep: &[String],
    keep_newest: Option<usize>,
) -> Result<(HashSet<String>, usize)> {
    let all = list(cache_dir)?;
    let kept: BTreeSet<String> = if keep.is_empty() {
        // `list` is newest first; without a count every experiment stays. A named experiment
        // is one the user chose to keep: only `--keep-exp` or `exp remove` drops it.
        let n = keep_newest.unwrap_or(usize::MAX);
        (all.iter().enumerate())
            .filter(|(i, e)| *i < n || e.name.is_some())
            .map(|(_, e)| e.id.clone())
            .collect()
    } else {
        keep.iter()
            .map(|k| resolve(&all, k).map(|e| e.id.clone()))
            .collect::<Result<_>>()?
    };
    let dropped: BTreeSet<String> = all
        .iter()
        .map(|e| e.id.clone())
        .filter(|id| !kept.contains(id))
        .collect();
    drop_records(cache_dir, &dropped)?;
    let keys = all
        .iter()
        .filter(|e| kept.contains(&e.id))
        .flat_map(|e| e.stages.values().cloned())
        .collect();
    Ok((keys, dropped.len()))
}

/// A stage of an experiment that `exp apply` will restore.
struct Planned {
    stage: String,
    key: String,
    rec: RunRecord,
    /// The outputs whose workspace content is not the recorded one.
    differ: Vec<String>,
}

/// `exp apply ID`: put every stage's outputs of the experiment back in the workspace from
/// the cache and record them in the lock. Every stage is checked first; when any cannot be
/// restored, nothing is changed and the error names each such stage and why. What outputs
/// held before is kept in the cache, so nothing is lost. Returns the lines to print.
pub fn apply(file: &Path, load: &LoadOptions, what: &str) -> Result<Vec<String>> {
    let root = crate::spec::workspace_root(file);
    let cache_dir = root.join("cache");
    let _guard = crate::state::workspace::WorkspaceLock::acquire(&cache_dir, false)?;
    let all = list(&cache_dir)?;
    let exp = resolve(&all, what)?.clone();
    apply_held(file, load, &exp)
}

/// [`apply`] of the experiment `exp`, by a caller that already holds the workspace lock
/// (`repro pull --exp`, which fetched its entries first).
pub(crate) fn apply_held(file: &Path, load: &LoadOptions, exp: &Experiment) -> Result<Vec<String>> {
    let root = crate::spec::workspace_root(file);
    let cache_dir = root.join("cache");
    // The pipeline as that run loaded it (its profile and --set values), so its stage names
    // and declared outputs are the experiment's.
    let mut opts = load.clone();
    opts.profile = exp.profile.clone().or(opts.profile);
    opts.overrides = exp.set.clone();
    let (p, _dag) = crate::session::load_pipeline(file, &opts)?;
    let mut ws = Workspace::open(&root, Duration::from_secs(10))?;
    let mut lock = crate::state::workspace::read_lock(&mut ws)?;
    let rules = crate::confine::Rules::new(&p);

    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut plan = Vec::new();
    for (stage, key) in &exp.stages {
        let Some(decl) = p.stages.iter().find(|s| &s.name == stage) else {
            notes.push(format!(
                "note: stage '{stage}' is no longer in the pipeline; its outputs were not restored"
            ));
            continue;
        };
        match check_stage(&ws, &rules, decl, key) {
            Ok(Some(planned)) => plan.push(planned),
            Ok(None) => {}
            Err(why) => problems.push(format!("stage '{stage}': {why}")),
        }
    }
    if !problems.is_empty() {
        bail!(
            "cannot restore experiment {}; nothing was changed:\n  {}",
            exp.id,
            problems.join("\n  ")
        );
    }
    let mut restored = 0;
    for pl in &plan {
        // Keep what the outputs hold now (unless it is already in the cache), then restore
        // only those that differ, through the run cache's own restore.
        let mut rec = pl.rec.clone();
        rec.outs.retain(|path, _| pl.differ.contains(path));
        for path in &pl.differ {
            let now = ws.hasher().content(path)?;
            if now.hash().is_some() && !ws.objects.is_uncached(path) {
                ws.objects
                    .store(&ws.root.join(path), &now)
                    .with_context(|| format!("saving the current {path} in the cache"))?;
            }
        }
        if !rec.outs.is_empty() {
            crate::cache::run_cache::restore(&ws, &rec)
                .with_context(|| format!("restoring the outputs of stage '{}'", pl.stage))?;
            restored += rec.outs.len();
        }
        if let Some(fp) = &pl.rec.fingerprint {
            lock.stages.insert(
                pl.stage.clone(),
                LockEntry {
                    key: pl.key.clone(),
                    fingerprint: fp.clone(),
                    out_hashes: pl.rec.outs.clone(),
                },
            );
        }
    }
    crate::state::workspace::write_lock(&ws, &lock)?;
    // The next run that finds this configuration records nothing new.
    write_last(&exp_dir(&cache_dir), &exp.id, &digest(&exp.stages))?;
    ws.close();
    let mut lines = vec![format!(
        "restored experiment {}{}: {restored} output{} of {} stage{} replaced, the rest already held it",
        exp.id,
        exp.name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        if restored == 1 { "" } else { "s" },
        plan.len(),
        if plan.len() == 1 { "" } else { "s" },
    )];
    lines.extend(notes);
    let mut args = Vec::new();
    if let Some(prof) = &exp.profile {
        args.push(format!("--profile {}", crate::compare::shell_word(prof)));
    }
    args.extend(
        exp.set
            .iter()
            .map(|(k, v)| format!("--set {}", crate::compare::shell_word(&format!("{k}={v}")))),
    );
    lines.push(if args.is_empty() {
        "it ran with the pipeline's own params: `repro run` keeps it".into()
    } else {
        format!("it ran as: repro run {}", args.join(" "))
    });
    Ok(lines)
}

/// Whether stage `decl`'s outputs of key `key` can be restored: `Ok(None)` when the
/// workspace already holds them, `Err(why)` when they cannot be.
fn check_stage(
    ws: &Workspace,
    rules: &crate::confine::Rules,
    decl: &crate::spec::Stage,
    key: &str,
) -> std::result::Result<Option<Planned>, String> {
    let db = ws.db().map_err(|e| format!("{e:#}"))?;
    let rec = db
        .get_run(key)
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| {
            format!(
                "the run cache has no entry for its key {}",
                &key[..key.len().min(8)]
            )
        })?;
    let mut differ = Vec::new();
    for (path, hash) in &rec.outs {
        // The record is data: only declared outputs of this stage, at safe paths, are written.
        check_rel_name(path.as_bytes()).map_err(|e| format!("{e:#}"))?;
        if !decl.outs.iter().any(|o| &o.path == path) {
            return Err(format!(
                "its record names {path}, which it does not declare"
            ));
        }
        rules.deletable(path)?;
        let now = ws.hasher().content(path).map_err(|e| format!("{e:#}"))?;
        if now.hash() == Some(hash.as_str()) {
            continue;
        }
        let present = if rec.dirs.contains(path) {
            ws.objects
                .manifest(hash)
                .is_ok_and(|files| files.iter().all(|f| ws.objects.has(&f.hash)))
        } else {
            ws.objects.has(hash)
        };
        if !present {
            return Err(format!(
                "output {path} is no longer in the cache ({})",
                if ws.objects.is_uncached(path) {
                    "declared `cache: false`".to_string()
                } else {
                    format!("object {} missing", &hash[..hash.len().min(8)])
                }
            ));
        }
        differ.push(path.clone());
    }
    if differ.is_empty() && rec.fingerprint.is_none() {
        return Ok(None);
    }
    Ok(Some(Planned {
        stage: decl.name.clone(),
        key: key.to_string(),
        rec,
        differ,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_in(id: &str, envs: Vec<Json>) -> Row {
        Row {
            id: id.into(),
            name: None,
            created: 0,
            commit: None,
            dirty: false,
            current: false,
            params: BTreeMap::new(),
            metrics: BTreeMap::new(),
            stages: BTreeMap::new(),
            profile: None,
            set: Vec::new(),
            environments: envs,
        }
    }

    #[test]
    fn diff_names_how_the_machines_differ_and_nothing_when_they_match() {
        let machine = |cpu: &str, flags: &[&str]| serde_json::json!({"format": 1, "cpu": cpu, "cpu_flags": flags, "cpus": 2});
        let a = row_in("aaaaaaaa", vec![machine("EPYC", &["avx2", "fma"])]);
        let b = row_in(
            "bbbbbbbb",
            vec![
                machine("Xeon", &["avx2", "avx512f", "fma"]),
                machine("EPYC", &["avx2", "fma"]),
            ],
        );
        let d = environment_diff(&a, &b);
        assert!(d.contains(&"cpu: Xeon (was EPYC)".to_string()), "{d:?}");
        assert!(d.contains(&"cpu_flags: +avx512f".to_string()), "{d:?}");
        assert!(
            d.iter()
                .any(|l| l.contains("bbbbbbbb's stages ran in 2 environments"))
        );
        assert!(environment_diff(&a, &a).is_empty());
        // Not recorded on one side: nothing is claimed.
        assert!(environment_diff(&a, &row_in("cccccccc", vec![])).is_empty());
    }

    fn exp(id: &str, name: Option<&str>, created: u64) -> Experiment {
        Experiment {
            version: VERSION,
            id: id.into(),
            name: name.map(str::to_string),
            created,
            commit: None,
            dirty: false,
            profile: None,
            set: Vec::new(),
            stages: BTreeMap::new(),
        }
    }

    #[test]
    fn resolve_by_id_name_and_prefix() {
        let all = vec![exp("abcd1234", Some("base"), 2), exp("abce5678", None, 1)];
        assert_eq!(resolve(&all, "abcd1234").unwrap().id, "abcd1234");
        assert_eq!(resolve(&all, "base").unwrap().id, "abcd1234");
        assert_eq!(resolve(&all, "abce").unwrap().id, "abce5678");
        assert!(resolve(&all, "abc").is_err(), "too short a prefix");
        assert!(resolve(&all, "abcd12").is_ok());
        let e = resolve(&all, "ab").unwrap_err().to_string();
        assert!(e.contains("no experiment"), "{e}");
        assert!(check_name("base").is_ok());
        assert!(check_name("beef").is_err(), "reads as an id");
        assert!(check_name("").is_err());
    }

    #[test]
    fn digest_is_of_names_and_keys() {
        let a: BTreeMap<String, String> = [("s".to_string(), "ab".to_string())].into();
        let b: BTreeMap<String, String> = [("s".to_string(), "ac".to_string())].into();
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a), digest(&a.clone()));
    }

    #[test]
    fn adopt_keeps_a_same_record_and_refuses_another_under_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let key = "ab".repeat(32);
        let mut e = exp("abcd1234", Some("base"), 1);
        e.stages.insert("s".into(), key.clone());
        adopt(dir.path(), &e).unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![e.clone()]);
        // The same stages and keys again (another name): kept as it is.
        let mut same = e.clone();
        same.name = Some("other".into());
        adopt(dir.path(), &same).unwrap();
        assert_eq!(list(dir.path()).unwrap()[0].name.as_deref(), Some("base"));
        // Other keys under the same id: someone else's experiment, refused.
        let mut other = e.clone();
        other.stages.insert("s".into(), "cd".repeat(32));
        let err = adopt(dir.path(), &other).unwrap_err().to_string();
        assert!(err.contains("different experiment"), "{err}");
        assert_eq!(list(dir.path()).unwrap(), vec![e.clone()]);
        // A record that does not check is refused before anything is written.
        let mut bad = exp("abcd5678", None, 1);
        bad.stages.insert("s".into(), "../x".into());
        let err = adopt(dir.path(), &bad).unwrap_err().to_string();
        assert!(err.contains("not a hex key"), "{err}");
        assert!(!exp_dir(dir.path()).join("abcd5678.json").exists());
    }

    #[test]
    fn hostile_records_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = exp_dir(dir.path());
        std::fs::create_dir_all(&d).unwrap();
        let mut e = exp("abcd1234", None, 1);
        e.stages.insert("s".into(), "../../etc".into());
        std::fs::write(d.join("abcd1234.json"), serde_json::to_vec(&e).unwrap()).unwrap();
        // An id that does not match its file name.
        let f = exp("ffff0000", None, 1);
        std::fs::write(d.join("abcd9999.json"), serde_json::to_vec(&f).unwrap()).unwrap();
        // A name that would write a terminal escape.
        let g = exp("abcd7777", Some("\u{1b}[2J"), 1);
        std::fs::write(d.join("abcd7777.json"), serde_json::to_vec(&g).unwrap()).unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
    }
}
