//! Confinement: the one place that decides what the engine may write or delete.
//!
//! The rule: `repro` writes and deletes only (a) the declared outputs of stages (a built-in
//! kind only inside them), (b) `checkpoint:` directories, (c) its own `cache/` internals and
//! (d) `repro.lock`. Outputs and checkpoints must resolve — after following the symlinks of
//! every component that exists — inside the workspace, and outside `cache/` (a checkpoint may
//! live under `cache/checkpoints/`), any `.git/`, `repro.lock`, the pipeline file and its vars
//! files. Everything else the engine may only read.
//!
//! [`check_pipeline`] applies the rule to every path of a pipeline before anything runs (each
//! violation names file:line:col and the stage); [`check_lock_path`] applies its lexical part
//! to the paths of `repro.lock`, which is shared and therefore untrusted; [`Rules::deletable`]
//! re-checks a lock path before a retired stage's output is removed; [`Ownership`] decides at
//! run time whether what already lies at an output path may be replaced: only what the engine
//! produced there (the lock, its claims, its cache), or anything with `--force`.
//!
//! Cost: the workspace root is canonicalised once; each distinct output directory costs one
//! `lstat` (memoised), each output one more.

use crate::graph::ancestors;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::spec::{PathRef, Pipeline, SpecError, SpecErrors, Stage, normalise};
use crate::state::hashing::Content;
use crate::state::lockfile::LockFile;
use crate::state::workspace::{Assessment, Workspace};

pub(crate) use crate::confine_rule::{CHECKPOINT_MARKER, check_lock_path, reserved};

/// The engine's record of output paths it cleared for a stage to write (see [`Ownership`]).
const CLAIMS_FILE: &str = "claimed";

/// Check what a finished stage left at its output path `rel` (in the workspace `root`): a
/// stage may itself make the path, or a directory above it, a symlink leading out of the
/// workspace (`ln -sf /elsewhere/secret out.txt`) or into the engine's own files. Such an
/// output must not be hashed or stored — that would copy what it points to into the cache —
/// so this says, in words, where it leads.
pub(crate) fn check_produced(root: &Path, rel: &str) -> Result<(), String> {
    let r = Resolver::new(root);
    match r.resolve(rel) {
        Ok(None) => Ok(()),
        Ok(Some(real)) => match reserved(&real, &["repro.lock".to_string()], false) {
            Some(why) => Err(format!(
                "output '{rel}' is a symlink to '{real}', which is {why}"
            )),
            None => Ok(()),
        },
        Err(outside) => {
            let target = std::fs::read_link(root.join(rel)).map_or_else(
                |_| outside.display().to_string(),
                |t| t.display().to_string(),
            );
            Err(format!(
                "output '{rel}' is a symlink to {target}, outside the workspace"
            ))
        }
    }
}

/// [`check_produced`] for every output of a stage that just succeeded, before its outputs are
/// hashed and stored. An output that leads out is refused, nothing of the stage is stored,
/// and a symlink at the output path itself is removed: it is the stage's own output, and left
/// there it would stop every later command from loading the pipeline (the stage is then
/// stale, its output missing).
pub(crate) fn check_outputs_produced(root: &Path, stage: &Stage) -> anyhow::Result<()> {
    let escaped: Vec<String> = stage
        .outs
        .iter()
        .filter_map(|o| {
            let why = check_produced(root, &o.path).err()?;
            let path = root.join(&o.path);
            let removed = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.file_type().is_symlink())
                && std::fs::remove_file(&path).is_ok();
            Some(if removed {
                format!("{why}; nothing was stored and the link was removed")
            } else {
                format!("{why}; nothing was stored")
            })
        })
        .collect();
    if escaped.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} (a stage's outputs must be files or directories inside the workspace)",
        escaped.join("; ")
    )
}

/// The pipeline's rule set: its protected files and a resolver for its workspace.
pub(crate) struct Rules {
    protected: Vec<String>,
    resolver: Resolver,
}

impl Rules {
    pub(crate) fn new(p: &Pipeline) -> Rules {
        let mut protected = vec!["repro.lock".to_string()];
        if let Ok(rel) = p.file.strip_prefix(&p.root) {
            protected.push(rel.to_string_lossy().into_owned());
        }
        protected.extend(p.vars_files.iter().cloned());
        protected.sort();
        protected.dedup();
        Rules {
            protected,
            resolver: Resolver::new(&p.root),
        }
    }

    /// Check a path the engine would write or delete: lexically, then where it resolves.
    /// Returns the resolved workspace-relative path when symlinks make it another one.
    fn check(&self, rel: &str, checkpoint: bool) -> Result<Option<String>, String> {
        if let Some(why) = reserved(rel, &self.protected, checkpoint) {
            return Err(format!("'{rel}' is {why}"));
        }
        let real = self.resolver.resolve(rel).map_err(|outside| {
            format!(
                "'{rel}' resolves through a symlink to {}, outside the workspace",
                outside.display()
            )
        })?;
        if let Some(real) = &real
            && let Some(why) = reserved(real, &self.protected, checkpoint)
        {
            return Err(format!(
                "'{rel}' is a symlinked alias of '{real}', which is {why}"
            ));
        }
        Ok(real)
    }

    /// Whether a lock-file path (of a stage no longer in the pipeline) may be deleted.
    pub(crate) fn deletable(&self, rel: &str) -> Result<(), String> {
        check_lock_path(rel)?;
        self.check(rel, false).map(|_| ())
    }
}

/// Resolves workspace paths through the symlinks of their existing components.
struct Resolver {
    real_root: PathBuf,
    /// Resolved absolute path of each workspace-relative directory met so far.
    dirs: Mutex<HashMap<String, PathBuf>>,
    /// The object stores an output may be a symbolic link into (see `cache::links`); found
    /// when the first output that is a symbolic link is met.
    object_dirs: std::sync::OnceLock<Vec<PathBuf>>,
}

impl Resolver {
    fn new(root: &Path) -> Resolver {
        let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        Resolver {
            real_root,
            dirs: Mutex::default(),
            object_dirs: std::sync::OnceLock::new(),
        }
    }

    /// Whether `path` (an output's own path) is a symbolic link the cache placed there in
    /// `symlink` mode: an absolute link to an object (`objects/ab/cdef…`) of this workspace's
    /// object store or of the shared one it uses. The engine never writes through it (it is
    /// removed before its stage runs, replaced by a restore), and what it reads through it is
    /// a cache object, so it is the output itself rather than an alias.
    fn is_cache_link(&self, path: &Path) -> bool {
        let Ok(target) = std::fs::read_link(path) else {
            return false;
        };
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return false;
        };
        let hex = |s: &std::ffi::OsStr, n: usize| {
            s.len() == n && s.as_encoded_bytes().iter().all(u8::is_ascii_hexdigit)
        };
        if !target.is_absolute() || !hex(name, 62) || !dir.file_name().is_some_and(|d| hex(d, 2)) {
            return false;
        }
        let stores = self.object_dirs.get_or_init(|| {
            let cache = self.real_root.join("cache");
            let mut v = vec![cache.join("objects")];
            v.extend(crate::cache::links::recorded_shared_dir(&cache).map(|d| d.join("objects")));
            v.iter()
                .filter_map(|d| std::fs::canonicalize(d).ok())
                .collect()
        });
        dir.parent()
            .is_some_and(|store| stores.iter().any(|s| s == store))
    }

    /// The workspace-relative path `rel` resolves to (`None`: itself, the common case, which
    /// allocates nothing), or the absolute path outside the workspace (or the workspace
    /// itself) that it reaches.
    fn resolve(&self, rel: &str) -> Result<Option<String>, PathBuf> {
        let (parent, name) = match rel.rsplit_once('/') {
            Some((a, b)) => (self.dir(a), b),
            None => (self.real_root.clone(), rel),
        };
        if self.is_cache_link(&parent.join(name)) {
            return Ok(None);
        }
        let real = step(&parent, name);
        match real.strip_prefix(&self.real_root) {
            Ok(r) if r == Path::new(rel) => Ok(None),
            Ok(r) if !r.as_os_str().is_empty() => Ok(Some(r.to_string_lossy().into_owned())),
            _ => Err(real),
        }
    }

    /// The resolved absolute path of a workspace-relative directory (memoised, so a directory
    /// shared by many outputs costs one `lstat`).
    fn dir(&self, rel: &str) -> PathBuf {
        if let Some(d) = self.dirs.lock().unwrap().get(rel) {
            return d.clone();
        }
        let parent = match rel.rsplit_once('/') {
            Some((a, _)) => self.dir(a),
            None => self.real_root.clone(),
        };
        let name = rel.rsplit_once('/').map_or(rel, |(_, b)| b);
        let d = step(&parent, name);
        self.dirs.lock().unwrap().insert(rel.to_string(), d.clone());
        d
    }
}

/// `dir` (already resolved) joined with one more component, following it if it is a symlink.
fn step(dir: &Path, name: &str) -> PathBuf {
    let cand = dir.join(name);
    match std::fs::symlink_metadata(&cand) {
        Ok(m) if m.file_type().is_symlink() => resolve_path(&cand),
        _ => cand,
    }
}

/// An absolute path with every symlink among its existing components followed (the part that
/// does not exist is kept as written). A symlink loop resolves to `/` (outside any workspace).
fn resolve_path(path: &Path) -> PathBuf {
    enum Part {
        Root,
        Up,
        Name(OsString),
    }
    let parts = |p: &Path| -> Vec<Part> {
        p.components()
            .filter_map(|c| match c {
                Component::RootDir | Component::Prefix(_) => Some(Part::Root),
                Component::CurDir => None,
                Component::ParentDir => Some(Part::Up),
                Component::Normal(n) => Some(Part::Name(n.to_os_string())),
            })
            .collect()
    };
    let mut pending: VecDeque<Part> = parts(path).into();
    let mut cur = PathBuf::from("/");
    let mut hops = 0;
    let mut missing = false;
    while let Some(part) = pending.pop_front() {
        match part {
            Part::Root => cur = PathBuf::from("/"),
            Part::Up => {
                cur.pop();
                missing = false;
            }
            Part::Name(n) => {
                let cand = cur.join(&n);
                if !missing {
                    match std::fs::symlink_metadata(&cand) {
                        Ok(m) if m.file_type().is_symlink() => {
                            hops += 1;
                            let Ok(target) = std::fs::read_link(&cand) else {
                                return PathBuf::from("/");
                            };
                            if hops > 40 {
                                return PathBuf::from("/");
                            }
                            for p in parts(&target).into_iter().rev() {
                                pending.push_front(p);
                            }
                            continue;
                        }
                        Ok(_) => {}
                        Err(_) => missing = true,
                    }
                }
                cur = cand;
            }
        }
    }
    cur
}

/// The first key of `set` that equals `path`, lies inside it, or holds it.
fn overlap<'a, V>(set: &'a BTreeMap<String, V>, path: &str) -> Option<(&'a String, &'a V)> {
    if let Some(kv) = set.get_key_value(path) {
        return Some(kv);
    }
    for a in ancestors(path) {
        if let Some(kv) = set.get_key_value(a) {
            return Some(kv);
        }
    }
    let prefix = format!("{path}/");
    set.range::<str, _>((
        std::ops::Bound::Excluded(prefix.as_str()),
        std::ops::Bound::Unbounded,
    ))
    .next()
    .filter(|(k, _)| k.starts_with(&prefix))
}

/// Check every path a pipeline would make the engine write or delete. Nothing may run if
/// this fails.
pub(crate) fn check_pipeline(p: &Pipeline) -> Result<(), SpecErrors> {
    let rules = Rules::new(p);
    let mut errors = Vec::new();
    // Every output with the path it resolves to; `aliased`: whether any resolves elsewhere.
    let mut resolved: Vec<(usize, &PathRef, Option<String>)> = Vec::new();
    let mut aliased = false;
    for (i, s) in p.stages.iter().enumerate() {
        for o in &s.outs {
            match rules.check(&o.path, false) {
                Err(why) => errors.push(
                    SpecError::at(&o.mark, format!("output {why}"))
                        .in_stage(&s.name)
                        .note("the engine writes and deletes only declared outputs inside the workspace; see docs/safety.md"),
                ),
                Ok(real) => {
                    aliased |= real.is_some();
                    resolved.push((i, o, real));
                }
            }
        }
        for (param, path) in &s.action.resolved.writes {
            let mark = s.with_marks.get(param.as_str()).unwrap_or(&s.mark);
            if let Err(why) = kind_path(&rules, s, path) {
                errors.push(
                    SpecError::at(mark, format!("`with: {param}`: {why}"))
                        .in_stage(&s.name)
                        .note("a built-in kind writes only its stage's declared outputs (`outs:`)"),
                );
            }
        }
    }
    let has_checkpoints = p.stages.iter().any(|s| s.checkpoint.is_some());
    if !aliased && !has_checkpoints {
        // Every output resolves to itself: duplicates and nesting are `graph`'s errors.
        return if errors.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors(errors))
        };
    }
    // Resolved output → (stage, declared output).
    let mut outs: BTreeMap<String, (usize, &PathRef)> = BTreeMap::new();
    for (i, o, real) in &resolved {
        let real = real.clone().unwrap_or_else(|| o.path.clone());
        match outs.get(&real) {
            // The same path declared twice is `graph`'s error; an alias is ours.
            Some((j, other)) if other.path != o.path => errors.push(
                SpecError::at(
                    &o.mark,
                    format!(
                        "output '{}' is the same file as output '{}' of stage '{}' (through a symlink, both are '{real}')",
                        o.path, other.path, p.stages[*j].name
                    ),
                )
                .in_stage(&p.stages[*i].name)
                .note("two stages writing one file would overwrite each other forever"),
            ),
            Some(_) => {}
            None => {
                outs.insert(real, (*i, *o));
            }
        }
    }
    // Nesting that only symlinks reveal (nesting as written is `graph`'s error).
    for (real, (i, o)) in &outs {
        for anc in ancestors(real) {
            if let Some((j, a)) = outs.get(anc)
                && !o.path.starts_with(&format!("{}/", a.path))
            {
                errors.push(
                    SpecError::at(
                        &o.mark,
                        format!(
                            "output '{}' lies, through a symlink, inside output '{}' of stage '{}'",
                            o.path, a.path, p.stages[*j].name
                        ),
                    )
                    .in_stage(&p.stages[*i].name),
                );
            }
        }
    }

    // Checkpoints: fresh paths of their own, never a dep, an output or another checkpoint.
    let mut deps: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in p.stages.iter().enumerate() {
        for d in &s.deps {
            let rel = match Path::new(&d.path).strip_prefix(&p.root) {
                Ok(r) => r.to_string_lossy().into_owned(),
                Err(_) if d.path.starts_with('/') => continue,
                Err(_) => d.path.clone(),
            };
            deps.entry(rel).or_insert(i);
        }
    }
    let lexical_outs: BTreeMap<String, usize> = p
        .stages
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.outs.iter().map(move |o| (o.path.clone(), i)))
        .collect();
    let mut checkpoints: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in p.stages.iter().enumerate() {
        let Some(cp) = &s.checkpoint else { continue };
        let mark = s.checkpoint_mark.as_ref().unwrap_or(&s.mark);
        let mut fail = |msg: String| {
            errors.push(
                SpecError::at(mark, format!("checkpoint: {msg}"))
                    .in_stage(&s.name)
                    .note("a checkpoint directory is wiped when its stage's configuration changes: it must be a path of its own"),
            )
        };
        let real = match rules.check(cp, true) {
            Ok(r) => r.unwrap_or_else(|| cp.clone()),
            Err(why) => {
                fail(why);
                continue;
            }
        };
        let with_stage = |j: usize| {
            if j == i {
                "this stage".to_string()
            } else {
                format!("stage '{}'", p.stages[j].name)
            }
        };
        if let Some((d, &j)) = overlap(&deps, cp).or_else(|| overlap(&deps, &real)) {
            fail(format!(
                "'{cp}' overlaps '{d}', a dependency of {}",
                with_stage(j)
            ));
        } else if let Some((o, &j)) = overlap(&lexical_outs, cp) {
            fail(format!(
                "'{cp}' overlaps '{o}', an output of {}",
                with_stage(j)
            ));
        } else if let Some((o, (j, _))) = overlap(&outs, &real) {
            fail(format!(
                "'{cp}' overlaps '{o}', an output of {} (through a symlink)",
                with_stage(*j)
            ));
        } else if let Some((c, &j)) = overlap(&checkpoints, &real) {
            fail(format!(
                "'{cp}' overlaps '{c}', the checkpoint of {}",
                with_stage(j)
            ));
        } else {
            checkpoints.insert(real, i);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(errors))
    }
}

/// A path a built-in kind writes: a declared output of its stage or inside one.
fn kind_path(rules: &Rules, s: &Stage, path: &Path) -> Result<(), String> {
    let text = path.to_string_lossy();
    let rel = normalise(&text, false)?;
    let Some(o) = s
        .outs
        .iter()
        .find(|o| rel == o.path || rel.starts_with(&format!("{}/", o.path)))
    else {
        return Err(format!(
            "writes '{rel}', which is not a declared output of this stage nor inside one (add it to `outs:`)"
        ));
    };
    if rel != o.path {
        // Inside a declared output: it must still resolve inside that output.
        let real = rules.check(&rel, false)?.unwrap_or_else(|| rel.clone());
        let out = rules
            .check(&o.path, false)?
            .unwrap_or_else(|| o.path.clone());
        if !real.starts_with(&format!("{out}/")) {
            return Err(format!(
                "'{rel}' leaves output '{}' through a symlink",
                o.path
            ));
        }
    }
    Ok(())
}

/// Whether what lies at a stage's output paths may be replaced: only what the engine itself
/// produced there — recorded in the lock, claimed by an earlier run of a stage (a run that
/// failed or was killed leaves its partial outputs behind), or identical to a cache object
/// (replacing it loses nothing) — unless the user passes `--force`. One per `repro run`.
pub(crate) struct Ownership {
    /// `--force`: the user lets the selected stages take over whatever is at their paths.
    pub force: bool,
    /// Output paths claimed so far (`cache/claimed`), read when first needed.
    claims: Mutex<Option<HashSet<String>>>,
}

impl Ownership {
    pub(crate) fn new(force: bool) -> Self {
        Ownership {
            force,
            claims: Mutex::default(),
        }
    }

    fn with_claims<R>(&self, ws: &Workspace, f: impl FnOnce(&mut HashSet<String>) -> R) -> R {
        let mut guard = self.claims.lock().unwrap();
        let set = guard.get_or_insert_with(|| read_claims(&ws.cache_dir.join(CLAIMS_FILE)));
        f(set)
    }

    fn owned(
        &self,
        ws: &Workspace,
        lock: &LockFile,
        stage: &str,
        path: &str,
        content: &Content,
    ) -> bool {
        let Some(hash) = content.hash() else {
            return true;
        };
        lock.stages
            .get(stage)
            .is_some_and(|e| e.out_hashes.contains_key(path))
            || ws.objects.has(hash)
            || self.with_claims(ws, |c| c.contains(path))
            || lock
                .stages
                .values()
                .any(|e| e.out_hashes.contains_key(path))
    }

    /// The outputs (and checkpoint directory) of `stage` that hold something the engine did
    /// not produce, as errors.
    pub(crate) fn unowned(
        &self,
        ws: &Workspace,
        lock: &LockFile,
        stage: &Stage,
        a: &Assessment,
    ) -> Vec<SpecError> {
        if self.force {
            return Vec::new();
        }
        let checkpoint = stage.checkpoint.as_ref().and_then(|cp| {
            let why = checkpoint_owned(&ws.root.join(cp), CHECKPOINT_MARKER).err()?;
            let mark = stage.checkpoint_mark.as_ref().unwrap_or(&stage.mark);
            Some(SpecError::at(mark, why).in_stage(&stage.name).note(format!(
                "move it away, or run `repro run --force {}` to let the stage take it over",
                stage.name
            )))
        });
        stage
            .outs
            .iter()
            .filter(|o| {
                a.outs
                    .get(&o.path)
                    .is_some_and(|c| !self.owned(ws, lock, &stage.name, &o.path, c))
            })
            .map(|o| {
                SpecError::at(
                    &o.mark,
                    format!(
                        "output '{}' already exists and was not produced by repro; it was left untouched",
                        o.path
                    ),
                )
                .in_stage(&stage.name)
                .note(format!(
                    "move it away, or run `repro run --force {}` to let the stage replace it (its current content is then kept in the cache)",
                    stage.name
                ))
            })
            .chain(checkpoint)
            .collect()
    }

    /// Record that the engine is about to let `stage` write its outputs, so that what a
    /// failed or killed run leaves there counts as the engine's next time.
    pub(crate) fn claim(
        &self,
        ws: &Workspace,
        lock: &LockFile,
        stage: &Stage,
    ) -> anyhow::Result<()> {
        let entry = lock.stages.get(&stage.name);
        let fresh: Vec<&str> = stage
            .outs
            .iter()
            .map(|o| o.path.as_str())
            .filter(|p| !entry.is_some_and(|e| e.out_hashes.contains_key(*p)))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let new: Vec<&str> = self.with_claims(ws, |c| {
            fresh
                .into_iter()
                .filter(|p| c.insert(p.to_string()))
                .collect()
        });
        if new.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for p in new {
            text.push_str(&serde_json::to_string(p)?);
            text.push('\n');
        }
        let path = ws.cache_dir.join(CLAIMS_FILE);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        // One write: a kill leaves whole lines or one torn last line, which is skipped.
        f.write_all(text.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        Ok(())
    }
}

fn read_claims(path: &Path) -> HashSet<String> {
    std::fs::read(path)
        .map(|bytes| {
            bytes
                .split(|&b| b == b'\n')
                .filter_map(|l| serde_json::from_slice::<String>(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an existing checkpoint directory is the engine's: it holds the marker the engine
/// writes into every checkpoint directory it creates, or it is empty.
pub(crate) fn checkpoint_owned(dir: &Path, marker: &str) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Err(_) => Ok(()),
        Ok(m) if !m.is_dir() => Err(format!(
            "checkpoint {} exists and is not a directory; it was left untouched",
            dir.display()
        )),
        Ok(_) if dir.join(marker).is_file() => Ok(()),
        Ok(_) => match std::fs::read_dir(dir).map(|mut e| e.next().is_none()) {
            Ok(true) => Ok(()),
            _ => Err(format!(
                "checkpoint directory {} already exists and was not created by repro; it was left untouched",
                dir.display()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_paths() {
        let prot = vec![
            "repro.lock".to_string(),
            "pipeline.yaml".into(),
            "stages/vars.yaml".into(),
        ];
        for bad in [
            "repro.lock",
            "pipeline.yaml",
            "cache",
            "cache/objects",
            ".git/x",
            "a/.git",
            "stages",
            "stages/vars.yaml/x",
        ] {
            assert!(reserved(bad, &prot, false).is_some(), "{bad}");
        }
        for ok in ["out.txt", "stages/other.yaml", "cachex", "data/cache"] {
            assert!(reserved(ok, &prot, false).is_none(), "{ok}");
        }
        assert!(reserved("cache/checkpoints/a", &prot, true).is_none());
        assert!(reserved("cache/checkpoints", &prot, true).is_some());
        assert!(reserved("cache/checkpoints/a", &prot, false).is_some());
        assert!(reserved("cache", &prot, true).is_some());
    }

    #[test]
    fn lock_paths_must_be_plain() {
        assert!(check_lock_path("runs/a.txt").is_ok());
        for bad in [
            "../../victim.txt",
            "/etc/passwd",
            "a/../../b",
            "cache/state.redb",
            "repro.lock",
            "./a",
        ] {
            assert!(check_lock_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_produced_output_may_not_lead_out() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = ws.path();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        std::fs::create_dir_all(root.join("cache/objects")).unwrap();
        std::fs::write(root.join("data.txt"), "d").unwrap();
        std::fs::write(root.join("plain.txt"), "p").unwrap();
        std::os::unix::fs::symlink(&secret, root.join("out.txt")).unwrap();
        std::os::unix::fs::symlink("data.txt", root.join("alias.txt")).unwrap();
        std::os::unix::fs::symlink("cache/objects", root.join("objs")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("dir")).unwrap();
        assert!(check_produced(root, "plain.txt").is_ok());
        assert!(check_produced(root, "alias.txt").is_ok());
        let why = check_produced(root, "out.txt").unwrap_err();
        assert!(
            why.contains("out.txt") && why.contains(&secret.display().to_string()),
            "{why}"
        );
        assert!(check_produced(root, "objs").unwrap_err().contains("cache"));
        std::os::unix::fs::symlink("repro.lock", root.join("lock.txt")).unwrap();
        assert!(check_produced(root, "lock.txt").is_err());
        assert!(check_produced(root, "dir/x.txt").is_err());
    }

    #[test]
    fn symlinks_are_followed_to_where_they_lead() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = ws.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("ext")).unwrap();
        std::os::unix::fs::symlink("real", root.join("alias")).unwrap();
        std::os::unix::fs::symlink("../real/sub", root.join("real/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", root.join("dangling")).unwrap();
        let r = Resolver::new(root);
        assert_eq!(r.resolve("real/sub/f").unwrap(), None);
        assert_eq!(r.resolve("alias/sub/f").unwrap().unwrap(), "real/sub/f");
        assert_eq!(
            r.resolve("real/up/new/f").unwrap().unwrap(),
            "real/sub/new/f"
        );
        assert!(r.resolve("ext/o.txt").is_err());
        assert!(r.resolve("loop/x").is_err());
        assert!(r.resolve("dangling").is_err());
        assert_eq!(r.resolve("missing/a/b").unwrap(), None);
    }
}
