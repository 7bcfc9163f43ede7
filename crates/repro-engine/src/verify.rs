//! `repro verify`: prove that a recorded result reproduces, or say where it does not.
//!
//! Each selected stage that is fresh in the lock is run again in a scratch copy of the
//! workspace, `cache/verify/tmp-…` (removed afterwards): its deps are put there from the cache
//! objects by their recorded hashes (the restore of [`crate::cache`], each byte checked), a
//! source file (one no stage produces) copied from the workspace and checked against the hash
//! the stage was keyed with. The stage runs there through the runner's own job
//! ([`crate::runner::make_job`]) and the local executor, so it sees what `repro run` would give
//! it, and nothing in the workspace is written: not its outputs, its log, nor the lock.
//!
//! The new outputs are then compared with the recorded ones: identical (same hashes); within
//! tolerance (`--tolerance T`: every differing file is a declared metrics file or a
//! `.safetensors` array file whose numbers are each within `T` of the recorded ones, all else
//! equal); differs (which files, the first differing byte and line, the numeric deltas of the
//! declared metrics, and the environment differences from the recorded run); or could not run
//! (why). Each result is appended to `cache/verify/results.jsonl` under the stage key and the
//! environment it was verified in; `exp show` and, through `--write FILE`, the report read it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::cache::CorruptObject;
use crate::executor::{Event, Executor, Outcome};
use crate::progress::Phases;
use crate::session::{Access, Open, Opened, Session, UpToDate};
use crate::spec::{LoadOptions, Stage};
use crate::state::hashing::{Content, Hasher, StatCache};
use crate::state::lockfile::LockEntry;
use crate::state::workspace::{Assessment, Workspace, assess, file_safe};

/// Bumped when a field of [`StageResult`] changes meaning.
pub(crate) const FORMAT: u32 = 1;

/// What `repro verify` is to do.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The pipeline file.
    pub file: PathBuf,
    /// How to load it.
    pub load: LoadOptions,
    /// Stage names, base names, globs or output paths; only these (not their upstream). All
    /// when empty.
    pub targets: Vec<String>,
    /// `--sample K`: K of the fresh selected stages, picked at random.
    pub sample: Option<usize>,
    /// `--seed S` for `--sample`; `None`: from the clock (printed, so the pick can be repeated).
    pub seed: Option<u64>,
    /// `--tolerance T`: numbers in metrics and array files may differ by at most T.
    pub tolerance: Option<f64>,
    /// `--ignore FIELD`: JSON fields that measure the run rather than its result (a duration,
    /// a throughput); a JSON file whose only differences are in them counts as identical.
    pub ignore: Vec<String>,
    /// `--json`: print the results as JSON.
    pub json: bool,
    /// `--write FILE`: the latest result of every stage as the lock has it, as JSON (for the
    /// report).
    pub write: Option<PathBuf>,
}

/// How one stage's rerun compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    Identical,
    WithinTolerance,
    Differs,
    CouldNotRun,
}

impl Verdict {
    pub(crate) fn words(self) -> &'static str {
        match self {
            Verdict::Identical => "identical",
            Verdict::WithinTolerance => "within tolerance",
            Verdict::Differs => "differs",
            Verdict::CouldNotRun => "could not run",
        }
    }
}

/// One output file that is not byte-identical in the rerun.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileDiff {
    /// Workspace-relative path (inside an output directory: `dir/file`).
    pub path: String,
    /// What differs, in words: `first difference at byte 17 (line 2)`, `missing in the rerun`.
    pub what: String,
    /// The first differing byte, when both have the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte: Option<u64>,
    /// The largest |a − b| of its numbers, for a metrics or array file of the same shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_delta: Option<f64>,
    /// Within `--tolerance`.
    #[serde(default)]
    pub within_tolerance: bool,
}

/// A number of a declared metrics file that differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetricDelta {
    pub file: String,
    pub name: String,
    pub recorded: Option<f64>,
    pub rerun: Option<f64>,
}

/// The result of verifying one stage: a line of `cache/verify/results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StageResult {
    #[serde(default)]
    pub format: u32,
    pub stage: String,
    /// The stage key the recorded outputs belong to.
    pub key: String,
    pub verdict: Verdict,
    /// The id of the environment it was rerun in (`cache/environments/<id>.json`).
    #[serde(default)]
    pub environment: String,
    /// How that environment differs from the one the recorded run was made in (`None`: the
    /// recorded run's environment is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_changes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileDiff>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricDelta>,
    /// Differences left out by `--ignore`: `file: field, field`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// Why it could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The stage's declared outputs (what the report matches its runs against).
    #[serde(default)]
    pub outs: Vec<String>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub at: u64,
    #[serde(default)]
    pub seconds: f64,
}

impl StageResult {
    fn could_not_run(stage: &Stage, key: &str, reason: String) -> StageResult {
        StageResult {
            format: FORMAT,
            stage: stage.name.clone(),
            key: key.to_string(),
            verdict: Verdict::CouldNotRun,
            environment: String::new(),
            environment_changes: None,
            tolerance: None,
            files: Vec::new(),
            metrics: Vec::new(),
            ignored: Vec::new(),
            reason: Some(reason),
            outs: stage.outs.iter().map(|o| o.path.clone()).collect(),
            at: now_ms(),
            seconds: 0.0,
        }
    }

    /// The verdict as `exp show` prints it (`identical`, `within 1e-06`, …).
    pub(crate) fn short(&self) -> String {
        match (self.verdict, self.tolerance) {
            (Verdict::WithinTolerance, Some(t)) => format!("within {t:e}"),
            (v, _) => v.words().to_string(),
        }
    }
}

/// The file `repro verify --write` writes (and the report reads): `docs/reproducibility.md`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Written {
    pub format: u32,
    /// The latest result of each stage whose lock key it verified, by stage name.
    pub stages: Vec<StageResult>,
}

/// Where results are kept.
pub(crate) fn results_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("verify").join("results.jsonl")
}

/// Every recorded result, oldest first (lines that do not parse are skipped: a line cut by a
/// killed process must not hide the others).
pub(crate) fn results(cache_dir: &Path) -> Vec<StageResult> {
    let Ok(text) = std::fs::read_to_string(results_path(cache_dir)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The newest result for each stage key.
pub(crate) fn latest_by_key(cache_dir: &Path) -> BTreeMap<String, StageResult> {
    let mut m = BTreeMap::new();
    for r in results(cache_dir) {
        m.insert(r.key.clone(), r);
    }
    m
}

/// Run `repro verify`; returns the exit code: 0 when every verified stage is identical or
/// within tolerance, 1 when any differs, 2 when none differs but one could not run (or there
/// was nothing to verify).
pub fn verify(opts: &VerifyOptions) -> Result<i32> {
    let mut phases = Phases::start();
    let open = Open {
        file: &opts.file,
        load: &opts.load,
        targets: &opts.targets,
        downstream: false,
        // The run lock: no `gc` may drop the objects a rerun is being built from, and no run
        // may change what is being compared against.
        access: Access::Run { wait: false },
        up_to_date: UpToDate::Ignore,
        interrupts: true,
    };
    let s = match Session::open(&open, &mut phases)? {
        Opened::Ready(s) => *s,
        Opened::UpToDate(_) => unreachable!("verify does not ask for the up-to-date record"),
    };
    anyhow::ensure!(
        s.holds_run_lock(),
        "the workspace cannot be written, so repro verify has nowhere to run (it works in cache/verify/)"
    );
    let verify_dir = s.ws.cache_dir.join("verify");
    // We hold the run lock: no other verify is using what a killed one left.
    remove_scratch_leftovers(&verify_dir);
    let matched = crate::targets::matched(&s.p, &s.dag, &opts.targets)?;
    let mut todo: Vec<(usize, Result<Assessment, String>)> = Vec::new();
    for &i in &matched {
        let stage = &s.p.stages[i];
        let a = match s.lock.stages.get(&stage.name) {
            None => Err("it has never run (no lock entry)".to_string()),
            Some(e) => match assess(&s.ws, stage, Some(e)) {
                Ok(a) if a.fresh() => Ok(a),
                Ok(a) => Err(format!(
                    "it is not fresh ({}); `repro run` it first",
                    a.reasons.join("; ")
                )),
                Err(e) => Err(format!("{e:#}")),
            },
        };
        todo.push((i, a));
    }
    if let Some(k) = opts.sample {
        let seed = opts
            .seed
            .unwrap_or_else(|| now_ms() ^ u64::from(std::process::id()));
        let fresh: Vec<(usize, Result<Assessment, String>)> =
            todo.into_iter().filter(|(_, a)| a.is_ok()).collect();
        let n = fresh.len();
        let mut picked = sample(n, k, seed);
        picked.sort_unstable();
        todo = fresh
            .into_iter()
            .enumerate()
            .filter(|(j, _)| picked.binary_search(j).is_ok())
            .map(|(_, x)| x)
            .collect();
        if !opts.json {
            println!(
                "sampled {} of {n} fresh stage{} (--seed {seed})",
                todo.len(),
                if n == 1 { "" } else { "s" }
            );
        }
    }
    let kinds = opts.load.kinds.clone();
    let program = std::env::current_exe().context("cannot find the repro binary")?;
    let mut out = Vec::new();
    for (i, a) in todo {
        let stage = &s.p.stages[i];
        let interrupted =
            crate::session::interrupt_flag().load(std::sync::atomic::Ordering::SeqCst);
        if interrupted != 0 {
            break;
        }
        let result = match a {
            Err(why) => {
                let key = s
                    .lock
                    .stages
                    .get(&stage.name)
                    .map_or("", |e| e.key.as_str());
                StageResult::could_not_run(stage, key, why)
            }
            Ok(a) => {
                let entry = &s.lock.stages[&stage.name];
                let site = Site {
                    ws: &s.ws,
                    p: &s.p,
                    kinds: &kinds,
                    program: &program,
                    verify_dir: &verify_dir,
                };
                if !opts.json {
                    eprintln!("verifying {} ...", stage.name);
                }
                let declared = stage.volatile_fields();
                let rules = Rules {
                    tolerance: opts.tolerance,
                    ignore: &opts.ignore,
                    declared: &declared,
                };
                site.verify_stage(stage, entry, &a, &rules)
            }
        };
        // A rerun cut short by Ctrl-C says nothing about the stage: not recorded.
        if crate::session::interrupt_flag().load(std::sync::atomic::Ordering::SeqCst) != 0 {
            break;
        }
        record(&s.ws.cache_dir, &result)?;
        if !opts.json {
            print_result(&result);
        }
        out.push(result);
    }
    if let Some(path) = &opts.write {
        write_results(&s.ws.cache_dir, &s.lock, path)?;
    }
    let count = |v: Verdict| out.iter().filter(|r| r.verdict == v).count();
    let (same, within, differ, failed) = (
        count(Verdict::Identical),
        count(Verdict::WithinTolerance),
        count(Verdict::Differs),
        count(Verdict::CouldNotRun),
    );
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if out.is_empty() {
        println!("nothing to verify: no selected stage is fresh in the lock");
    } else {
        println!(
            "verified {} stage{}: {same} identical, {within} within tolerance, {differ} differ, {failed} could not run",
            out.len(),
            if out.len() == 1 { "" } else { "s" }
        );
    }
    s.close();
    let signal = crate::session::interrupt_flag().load(std::sync::atomic::Ordering::SeqCst);
    Ok(if signal != 0 {
        128 + signal
    } else if differ > 0 {
        1
    } else if failed > 0 || out.is_empty() {
        2
    } else {
        0
    })
}

/// `k` distinct indices of `0..n` (all of them when `k >= n`), picked by a partial
/// Fisher–Yates shuffle driven by splitmix64 from `seed`: the same seed picks the same
/// stages on every machine.
pub(crate) fn sample(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        // splitmix64 (Steele, Lea, Flood 2014): a full-period, well-mixed 64-bit sequence.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut idx: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    for j in 0..k {
        // Modulo bias is at most n / 2^64: irrelevant for picking stages.
        let r = j + (next() % (n - j) as u64) as usize;
        idx.swap(j, r);
    }
    idx.truncate(k);
    idx
}

/// What a rerun needs from the session.
struct Site<'a> {
    ws: &'a Workspace,
    p: &'a crate::spec::Pipeline,
    kinds: &'a crate::kinds::Registry,
    program: &'a Path,
    verify_dir: &'a Path,
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        crate::cache::remove_any(&self.0);
    }
}

impl Site<'_> {
    fn verify_stage(
        &self,
        stage: &Stage,
        entry: &LockEntry,
        a: &Assessment,
        rules: &Rules,
    ) -> StageResult {
        let t0 = std::time::Instant::now();
        let env = crate::environment::current();
        let env_id = crate::environment::save(&self.ws.cache_dir);
        let recorded_env = self
            .ws
            .db()
            .ok()
            .and_then(|db| db.get_run(&a.key).ok().flatten())
            .and_then(|rec| rec.environment)
            .and_then(|v| serde_json::from_value::<crate::environment::Environment>(v).ok());
        let mut result = match self.rerun(stage, entry, a, rules) {
            Ok(r) => r,
            Err(why) => StageResult::could_not_run(stage, &a.key, why),
        };
        result.environment = env_id;
        result.environment_changes = recorded_env.map(|r| env.diff(&r));
        result.seconds = t0.elapsed().as_secs_f64();
        result
    }

    /// Materialise, run and compare; `Err`: why it could not run.
    fn rerun(
        &self,
        stage: &Stage,
        entry: &LockEntry,
        a: &Assessment,
        rules: &Rules,
    ) -> Result<StageResult, String> {
        let root = self.verify_dir.join(format!(
            "tmp-{}-{}",
            std::process::id(),
            crate::cache::unique()
        ));
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let scratch = Scratch(root);
        let root = &scratch.0;
        self.materialise_deps(stage, entry, root)?;
        for o in &stage.outs {
            if let Some(parent) = root.join(&o.path).parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
        }
        if let Some(cp) = &stage.checkpoint {
            // A checkpoint starts empty, owned by this key (see run_cache::prepare_outputs).
            let dir = root.join(cp);
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join(crate::confine::CHECKPOINT_MARKER), &a.key))
                .map_err(|e| format!("cannot create checkpoint {}: {e}", dir.display()))?;
        }
        self.run_job(stage, a, root)?;
        Ok(compare_outputs(self.ws, stage, a, root, rules))
    }

    /// Put every dep where the stage expects it in `root`, as recorded in the lock.
    fn materialise_deps(
        &self,
        stage: &Stage,
        entry: &LockEntry,
        root: &Path,
    ) -> Result<(), String> {
        for d in &stage.deps {
            let path = d.path.as_str();
            if Path::new(path).is_absolute() {
                // Outside the workspace (a system-wide dataset): read where it is.
                continue;
            }
            let recorded = entry
                .fingerprint
                .deps
                .get(path)
                .ok_or_else(|| format!("dep {path} is not in its lock entry"))?;
            let now = self
                .ws
                .hasher()
                .content(path)
                .map_err(|e| format!("dep {path}: {e:#}"))?;
            let dest = root.join(path);
            let producer = self.producer_of(path);
            if let Some(producer) = producer {
                // An upstream output: from the cache objects, each byte checked on the way.
                let (is_dir, mode) = match &now {
                    Content::Dir { .. } => (true, 0),
                    Content::File { mode, .. } => (false, *mode),
                    Content::Missing => (
                        self.ws.objects.manifest(recorded).is_ok(),
                        crate::state::hashing::FILE_MODE,
                    ),
                };
                self.ws
                    .objects
                    .restore(recorded, is_dir, mode, &dest)
                    .map_err(|e| {
                        let what = match e.downcast_ref::<CorruptObject>() {
                            Some(c) => c.to_string(),
                            None => format!("{e:#}"),
                        };
                        format!(
                            "dep {path} (an output of '{producer}') cannot be restored from the cache: {what}"
                        )
                    })?;
            } else if let Content::Dir {
                files,
                empty_dirs,
                links,
                ..
            } = &now
            {
                // A directory holding outputs of other stages (or none): file by file, each
                // from its cache object when an output, else copied (a source file).
                self.assemble_dir(path, files, empty_dirs, links, &dest)?;
            } else {
                // A source file: nothing in the cache holds it; the workspace copy is the one
                // the stage was keyed with (it is fresh), checked below.
                copy_tree(&self.ws.root.join(path), &dest)
                    .map_err(|e| format!("cannot copy dep {path}: {e:#}"))?;
            }
            let stat = StatCache::default();
            let got = Hasher::new(root, &stat)
                .content(path)
                .map_err(|e| format!("dep {path}: {e:#}"))?;
            if got.hash() != Some(recorded.as_str()) {
                return Err(format!(
                    "dep {path} is not what the stage was run with (its hash in the scratch copy is {}, the lock has {})",
                    got.hash().map_or("missing", |h| &h[..h.len().min(12)]),
                    &recorded[..recorded.len().min(12)]
                ));
            }
        }
        Ok(())
    }

    /// The stage that writes `path` (an output, or inside an output directory), if any.
    fn producer_of(&self, path: &str) -> Option<&str> {
        self.p.stages.iter().find_map(|s| {
            s.outs
                .iter()
                .any(|o| o.path == path || path.starts_with(&format!("{}/", o.path)))
                .then_some(s.name.as_str())
        })
    }

    /// Build the dep directory `path` at `dest` from its manifest: a file some stage produced
    /// from its cache object (by its hash, through the cache's restore), any other copied
    /// from the workspace.
    fn assemble_dir(
        &self,
        path: &str,
        files: &[crate::state::hashing::FileEntry],
        empty_dirs: &[String],
        links: &[crate::state::hashing::LinkEntry],
        dest: &Path,
    ) -> Result<(), String> {
        use std::os::unix::ffi::OsStringExt;
        std::fs::create_dir_all(dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        for f in files {
            let rel = f.rel_path();
            let inside = format!("{path}/{}", rel.display());
            let to = dest.join(&rel);
            if let Some(producer) = self.producer_of(&inside) {
                self.ws
                    .objects
                    .restore(&f.hash, false, f.mode, &to)
                    .map_err(|e| {
                        format!(
                            "dep {inside} (an output of '{producer}') cannot be restored from the cache: {e:#}"
                        )
                    })?;
            } else {
                copy_tree(&self.ws.root.join(&inside), &to)
                    .map_err(|e| format!("cannot copy dep {inside}: {e:#}"))?;
            }
        }
        for d in empty_dirs {
            let d = std::ffi::OsString::from_vec(crate::state::hashing::decode_name(d));
            let _ = std::fs::create_dir_all(dest.join(d));
        }
        for l in links {
            let at = dest.join(l.rel_path());
            if let Some(parent) = at.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::os::unix::fs::symlink(l.target_path(), &at)
                .map_err(|e| format!("cannot create link {}: {e}", at.display()))?;
        }
        Ok(())
    }

    /// Run the stage's job in `root` with the local executor and wait for it.
    fn run_job(&self, stage: &Stage, a: &Assessment, root: &Path) -> Result<(), String> {
        let wants = stage.resources.gpus > 0;
        let gpu_ids = crate::executor::gpus::slots(None, wants);
        let gpus: Vec<usize> = (0..stage.resources.gpus.min(gpu_ids.len())).collect();
        let maker = crate::runner::JobMaker {
            kinds: self.kinds,
            program: self.program,
            gpu_ids: &gpu_ids,
            places_gpus: false,
        };
        let job = crate::runner::make_job(&maker, root, stage, 0, &a.key, &gpus)
            .map_err(|e| format!("{e:#}"))?;
        let log = job.log.clone();
        let mut ex =
            crate::executor::local::LocalExecutor::with_pid_dir(root.join("cache").join("running"))
                .map_err(|e| format!("{e:#}"))?;
        ex.submit(job)
            .map_err(|e| format!("cannot start it: {e:#}"))?;
        let outcome = loop {
            if crate::session::interrupt_flag().load(std::sync::atomic::Ordering::SeqCst) != 0 {
                ex.cancel_all();
                return Err("interrupted".into());
            }
            let events = ex
                .poll(Duration::from_millis(100))
                .map_err(|e| format!("{e:#}"))?;
            if let Some(o) = events.into_iter().find_map(|e| match e {
                Event::Finished { outcome, .. } => Some(outcome),
                Event::Progress { .. } => None,
            }) {
                break o;
            }
        };
        // The rerun's log outlives the scratch copy, beside (never over) the workspace's.
        let kept = self
            .verify_dir
            .join("logs")
            .join(format!("{}.log", file_safe(&stage.name)));
        let _ = std::fs::create_dir_all(kept.parent().expect("has parent"));
        let _ = std::fs::copy(&log, &kept);
        match outcome {
            Outcome::Succeeded => Ok(()),
            Outcome::Failed(why) => {
                Err(format!("the rerun failed: {why} (log: {})", kept.display()))
            }
        }
    }
}

/// Copy a file or a directory tree (links kept as links), modes included.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(from)
        .with_context(|| format!("cannot read {}", from.display()))?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if meta.file_type().is_symlink() {
        // The hasher follows a link at a dep's own path: so does the copy.
        let real = std::fs::canonicalize(from)?;
        return copy_tree(&real, to);
    }
    if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let (src, dst) = (e.path(), to.join(e.file_name()));
            if e.file_type()?.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
            } else {
                copy_tree(&src, &dst)?;
            }
        }
    } else {
        std::fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    }
    Ok(())
}

/// Remove scratch copies a killed verify left (`tmp-*` under `cache/verify/`).
fn remove_scratch_leftovers(verify_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(verify_dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with("tmp-") {
            crate::cache::remove_any(&e.path());
        }
    }
}

/// A file's recorded bytes: its cache object, else (an output not cached) the workspace copy,
/// which holds the recorded content since the stage is fresh.
fn recorded_bytes(ws: &Workspace, hash: &str, workspace_path: &Path) -> Option<Vec<u8>> {
    std::fs::read(ws.objects.object_path(hash))
        .ok()
        .or_else(|| std::fs::read(workspace_path).ok())
}

/// One file of an output: (display path, hash, where the rerun's copy is, where the
/// workspace's is).
type FileOf = (String, String, PathBuf, PathBuf);

fn files_of(content: &Content, path: &str, root: &Path) -> Vec<FileOf> {
    match content {
        Content::Missing => Vec::new(),
        Content::File { hash, .. } => vec![(
            path.to_string(),
            hash.clone(),
            root.join(path),
            PathBuf::new(),
        )],
        Content::Dir { files, .. } => files
            .iter()
            .map(|f| {
                let rel = f.rel_path();
                (
                    format!("{path}/{}", f.path),
                    f.hash.clone(),
                    root.join(path).join(&rel),
                    PathBuf::from(path).join(rel),
                )
            })
            .collect(),
    }
}

/// Compare the rerun's outputs in `root` with the recorded ones (`a.outs`: the stage is fresh,
/// so these are the lock's).
fn compare_outputs(
    ws: &Workspace,
    stage: &Stage,
    a: &Assessment,
    root: &Path,
    rules: &Rules,
) -> StageResult {
    let stat = StatCache::default();
    let hasher = Hasher::new(root, &stat);
    let metric_files: BTreeSet<String> = stage.metric_paths().into_iter().collect();
    let mut files = Vec::new();
    let mut metrics = Vec::new();
    let mut ignored = Vec::new();
    for (path, recorded) in &a.outs {
        let new = match hasher.content(path) {
            Ok(c) => c,
            Err(e) => {
                files.push(FileDiff {
                    path: path.clone(),
                    what: format!("cannot be read in the rerun: {e:#}"),
                    byte: None,
                    max_abs_delta: None,
                    within_tolerance: false,
                });
                continue;
            }
        };
        if new.hash() == recorded.hash() {
            continue;
        }
        if matches!(new, Content::Missing) {
            files.push(FileDiff {
                path: path.clone(),
                what: "not produced by the rerun".into(),
                byte: None,
                max_abs_delta: None,
                within_tolerance: false,
            });
            continue;
        }
        let rec_files: BTreeMap<String, FileOf> = files_of(recorded, path, &ws.root)
            .into_iter()
            .map(|f| (f.0.clone(), f))
            .collect();
        let new_files: BTreeMap<String, FileOf> = files_of(&new, path, root)
            .into_iter()
            .map(|f| (f.0.clone(), f))
            .collect();
        let before = files.len() + ignored.len();
        for name in rec_files
            .keys()
            .chain(new_files.keys())
            .collect::<BTreeSet<_>>()
        {
            match (rec_files.get(name), new_files.get(name)) {
                (Some(_), None) => files.push(FileDiff {
                    path: name.clone(),
                    what: "missing in the rerun".into(),
                    byte: None,
                    max_abs_delta: None,
                    within_tolerance: false,
                }),
                (None, Some(_)) => files.push(FileDiff {
                    path: name.clone(),
                    what: "only in the rerun".into(),
                    byte: None,
                    max_abs_delta: None,
                    within_tolerance: false,
                }),
                (Some(r), Some(n)) if r.1 != n.1 => {
                    let ws_path = if r.3.as_os_str().is_empty() {
                        ws.root.join(&r.0)
                    } else {
                        ws.root.join(&r.3)
                    };
                    let old = recorded_bytes(ws, &r.1, &ws_path);
                    let newb = std::fs::read(&n.2).ok();
                    let is_metrics = metric_files.contains(name);
                    let d = diff_file(
                        name,
                        old.as_deref(),
                        newb.as_deref(),
                        is_metrics,
                        rules,
                        &mut metrics,
                    );
                    match d {
                        Ok(d) => files.push(d),
                        Err(fields) => ignored.push(format!("{name}: {}", fields.join(", "))),
                    }
                }
                _ => {}
            }
        }
        if files.len() + ignored.len() == before {
            // Same files, same bytes: modes, empty directories or links differ.
            files.push(FileDiff {
                path: path.clone(),
                what: "file modes, empty directories or links differ".into(),
                byte: None,
                max_abs_delta: None,
                within_tolerance: false,
            });
        }
    }
    let verdict = if files.is_empty() {
        Verdict::Identical
    } else if files.iter().all(|f| f.within_tolerance) {
        Verdict::WithinTolerance
    } else {
        Verdict::Differs
    };
    StageResult {
        format: FORMAT,
        stage: stage.name.clone(),
        key: a.key.clone(),
        verdict,
        environment: String::new(),
        environment_changes: None,
        tolerance: rules.tolerance,
        files,
        metrics,
        ignored,
        reason: None,
        outs: stage.outs.iter().map(|o| o.path.clone()).collect(),
        at: now_ms(),
        seconds: 0.0,
    }
}

/// How a rerun's outputs are compared besides byte for byte.
pub(crate) struct Rules<'a> {
    pub tolerance: Option<f64>,
    pub ignore: &'a [String],
    /// (output file, field pattern) the stage declares as measuring the run
    /// ([`Stage::volatile_fields`]): ignored in that file only, like `--ignore`.
    pub declared: &'a [(String, String)],
}

impl Rules<'_> {
    /// Whether field `field` of file `name` measures the run: `--ignore` names it, or the
    /// stage declares it for that file.
    fn ignores(&self, name: &str, field: &str) -> bool {
        self.ignore.iter().any(|i| field_matches(field, i))
            || self
                .declared
                .iter()
                .any(|(f, p)| f == name && field_matches(field, p))
    }
}

/// How one file differs: its first differing byte (and line), the JSON fields that differ,
/// and for a metrics or `.safetensors` file the largest numeric difference; the declared
/// metrics' deltas go to `metrics`. `Err`: a JSON file whose only differences are the fields
/// `--ignore` names (which it lists).
fn diff_file(
    name: &str,
    old: Option<&[u8]>,
    new: Option<&[u8]>,
    is_metrics: bool,
    rules: &Rules,
    metrics: &mut Vec<MetricDelta>,
) -> Result<FileDiff, Vec<String>> {
    let tolerance = rules.tolerance;
    let (Some(old), Some(new)) = (old, new) else {
        return Ok(FileDiff {
            path: name.to_string(),
            what: "differs (the recorded bytes are not in the cache, so where is unknown)".into(),
            byte: None,
            max_abs_delta: None,
            within_tolerance: false,
        });
    };
    let at = first_difference(old, new);
    let line = old[..at.min(old.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1;
    let mut what = if at >= old.len().min(new.len()) {
        format!(
            "first difference at byte {at} (line {line}): one is {} bytes, the other {}",
            old.len(),
            new.len()
        )
    } else {
        format!("first difference at byte {at} (line {line})")
    };
    if name.ends_with(".json")
        && let (Ok(a), Ok(b)) = (
            serde_json::from_slice::<Json>(old),
            serde_json::from_slice::<Json>(new),
        )
    {
        // The record that differs, by field: `epochs.0.seconds` says more than a byte offset.
        let mut fields = Vec::new();
        json_fields("", &a, &b, &mut fields);
        let (skipped, kept): (Vec<String>, Vec<String>) =
            fields.into_iter().partition(|f| rules.ignores(name, f));
        if kept.is_empty() && !skipped.is_empty() {
            return Err(skipped);
        }
        let shown: Vec<&str> = kept.iter().take(5).map(String::as_str).collect();
        what.push_str(&format!("; fields that differ: {}", shown.join(", ")));
        if kept.len() > shown.len() {
            what.push_str(&format!(" and {} more", kept.len() - shown.len()));
        }
        if !skipped.is_empty() {
            what.push_str(&format!(
                "; ignored (measures the run): {}",
                skipped.join(", ")
            ));
        }
    }
    let numeric: Option<Result<f64, String>> = if is_metrics {
        Some(metrics_delta(name, old, new, metrics))
    } else if name.ends_with(".safetensors") {
        Some(crate::verify::arrays::max_abs_delta(old, new))
    } else {
        None
    };
    let (max_abs_delta, within) = match numeric {
        Some(Ok(d)) => {
            what.push_str(&format!("; largest numeric difference {d:.3e}"));
            (Some(d), tolerance.is_some_and(|t| d <= t))
        }
        Some(Err(why)) => {
            what.push_str(&format!("; not comparable within a tolerance: {why}"));
            (None, false)
        }
        None => (None, false),
    };
    Ok(FileDiff {
        path: name.to_string(),
        what,
        byte: Some(at as u64),
        max_abs_delta,
        within_tolerance: within,
    })
}

/// The dotted paths of the leaves that differ between two JSON trees (array elements by
/// index; a field on one side only, or an array of another length, is its own path).
fn json_fields(path: &str, a: &Json, b: &Json, out: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            for k in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => json_fields(&join(k), p, q, out),
                    _ => out.push(join(k)),
                }
            }
        }
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                json_fields(&join(&i.to_string()), p, q, out);
            }
        }
        _ if a != b => out.push(if path.is_empty() {
            "(the whole file)".into()
        } else {
            path.to_string()
        }),
        _ => {}
    }
}

/// Whether the field `path` is what `--ignore` pattern `pat` names: a dotted path whose
/// segments match one by one (`*` matches any), or a single name matching the last segment.
fn field_matches(path: &str, pat: &str) -> bool {
    let segs: Vec<&str> = path.split('.').collect();
    if !pat.contains('.') {
        return segs.last() == Some(&pat);
    }
    let pats: Vec<&str> = pat.split('.').collect();
    pats.len() == segs.len() && pats.iter().zip(&segs).all(|(p, s)| *p == "*" || p == s)
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// The largest |a − b| over a metrics file's numbers, pushing each number that differs to
/// `metrics`. A JSON file is compared as a tree: numbers within the tolerance, everything
/// else exactly; other formats (YAML, TOML, CSV) by their numbers (`crate::metrics_file`).
fn metrics_delta(
    name: &str,
    old: &[u8],
    new: &[u8],
    metrics: &mut Vec<MetricDelta>,
) -> Result<f64, String> {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "not UTF-8".to_string());
    let (old_t, new_t) = (text(old)?, text(new)?);
    let (o, n) = (
        crate::metrics_file::parse(&old_t, name)?,
        crate::metrics_file::parse(&new_t, name)?,
    );
    let mut max = 0.0f64;
    let mut same_shape = o.len() == n.len();
    for k in o.keys().chain(n.keys()).collect::<BTreeSet<_>>() {
        let (a, b) = (o.get(k).copied(), n.get(k).copied());
        if a != b {
            metrics.push(MetricDelta {
                file: name.to_string(),
                name: k.clone(),
                recorded: a,
                rerun: b,
            });
        }
        match (a, b) {
            (Some(a), Some(b)) if a.is_nan() && b.is_nan() => {}
            (Some(a), Some(b)) => max = max.max((a - b).abs()),
            _ => same_shape = false,
        }
    }
    if !same_shape {
        return Err("its metrics are not the same names".into());
    }
    if name.ends_with(".json") {
        let parse = |t: &str| serde_json::from_str::<Json>(t).map_err(|e| e.to_string());
        if !same_but_numbers(&parse(&old_t)?, &parse(&new_t)?) {
            return Err("more than its numbers differ".into());
        }
    }
    Ok(max)
}

/// Whether two JSON trees are equal except for the values of numbers.
fn same_but_numbers(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(_), Json::Number(_)) => true,
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_but_numbers(p, q))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_but_numbers(v, w)))
        }
        _ => a == b,
    }
}

/// Numeric array files compared within a tolerance: safetensors (F32 and F64 tensors).
pub(crate) mod arrays {
    #[cfg(test)]
    use std::collections::BTreeMap;

    use serde_json::Value as Json;

    /// The largest |a − b| over every element of every tensor, when both files hold the same
    /// tensors (names, dtypes, shapes) and the same metadata; else why not.
    pub(crate) fn max_abs_delta(old: &[u8], new: &[u8]) -> Result<f64, String> {
        let (ho, bo) = split(old)?;
        let (hn, bn) = split(new)?;
        let (Json::Object(mo), Json::Object(mn)) = (&ho, &hn) else {
            return Err("its header is not a JSON object".into());
        };
        if mo.get("__metadata__") != mn.get("__metadata__") {
            return Err("its metadata differs".into());
        }
        let names = |m: &serde_json::Map<String, Json>| -> Vec<String> {
            m.keys().filter(|k| *k != "__metadata__").cloned().collect()
        };
        if names(mo) != names(mn) {
            return Err("it holds other tensors".into());
        }
        let mut max = 0.0f64;
        for name in names(mo) {
            let (to, tn) = (tensor(&mo[&name], bo)?, tensor(&mn[&name], bn)?);
            if to.0 != tn.0 || to.1 != tn.1 {
                return Err(format!("tensor {name} has another dtype or shape"));
            }
            let (a, b) = (values(&to.0, to.2)?, values(&tn.0, tn.2)?);
            for (x, y) in a.iter().zip(&b) {
                if x.is_nan() && y.is_nan() {
                    continue;
                }
                let d = (x - y).abs();
                // NaN against a number is not within any tolerance.
                max = if d.is_nan() {
                    f64::INFINITY
                } else {
                    max.max(d)
                };
            }
        }
        Ok(max)
    }

    /// The header (JSON) and the data area.
    fn split(bytes: &[u8]) -> Result<(Json, &[u8]), String> {
        let n = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or("it is too short for safetensors")?;
        let header = bytes
            .get(8..8usize.saturating_add(n))
            .ok_or("its header length is past its end")?;
        let json: Json = serde_json::from_slice(header).map_err(|e| format!("header: {e}"))?;
        Ok((json, &bytes[8 + n..]))
    }

    /// (dtype, shape, bytes) of one tensor entry.
    fn tensor<'a>(entry: &Json, data: &'a [u8]) -> Result<(String, Vec<u64>, &'a [u8]), String> {
        let dtype = entry["dtype"].as_str().ok_or("a tensor without dtype")?;
        let shape: Vec<u64> = serde_json::from_value(entry["shape"].clone())
            .map_err(|_| "a tensor without shape".to_string())?;
        let offs: [usize; 2] = serde_json::from_value(entry["data_offsets"].clone())
            .map_err(|_| "a tensor without data_offsets".to_string())?;
        let bytes = data
            .get(offs[0]..offs[1])
            .ok_or("a tensor's data lies past the end")?;
        Ok((dtype.to_string(), shape, bytes))
    }

    fn values(dtype: &str, b: &[u8]) -> Result<Vec<f64>, String> {
        match dtype {
            "F32" => Ok(b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4")) as f64)
                .collect()),
            "F64" => Ok(b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
                .collect()),
            other => Err(format!("dtype {other} is compared byte for byte only")),
        }
    }

    /// A safetensors file of F32 tensors (for tests).
    #[cfg(test)]
    pub(crate) fn write_f32(tensors: &BTreeMap<String, (Vec<u64>, Vec<f32>)>) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, (shape, v)) in tensors {
            let start = data.len();
            for x in v {
                data.extend_from_slice(&x.to_le_bytes());
            }
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let h = serde_json::to_vec(&Json::Object(header)).expect("JSON");
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        out
    }
}

/// Append a result to `cache/verify/results.jsonl` (one line, one write).
fn record(cache_dir: &Path, r: &StageResult) -> Result<()> {
    let path = results_path(cache_dir);
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    let mut line = serde_json::to_string(r)?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(line.as_bytes())?;
    Ok(())
}

/// `--write FILE`: the newest result of each stage for the key the lock has now.
fn write_results(
    cache_dir: &Path,
    lock: &crate::state::lockfile::LockFile,
    path: &Path,
) -> Result<()> {
    let latest = latest_by_key(cache_dir);
    let stages = lock
        .stages
        .values()
        .filter_map(|e| latest.get(&e.key).cloned())
        .collect();
    let w = Written {
        format: FORMAT,
        stages,
    };
    let text = serde_json::to_string_pretty(&w)? + "\n";
    crate::fsutil::write_atomic(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn print_result(r: &StageResult) {
    let head = match r.verdict {
        Verdict::WithinTolerance => r.short(),
        Verdict::Differs => "DIFFERS".to_string(),
        Verdict::CouldNotRun => "COULD NOT RUN".to_string(),
        Verdict::Identical => "identical".to_string(),
    };
    println!("{head:<16} {}", r.stage);
    if let Some(why) = &r.reason {
        println!("  {why}");
    }
    for i in &r.ignored {
        println!("  ignored (measures the run: declared or --ignore): {i}");
    }
    for f in &r.files {
        println!("  {}: {}", f.path, f.what);
    }
    for m in &r.metrics {
        let show = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v}"));
        let delta = match (m.recorded, m.rerun) {
            (Some(a), Some(b)) => format!(" (Δ {:.3e})", b - a),
            _ => String::new(),
        };
        println!(
            "  metric {} in {}: {} -> {}{delta}",
            m.name,
            m.file,
            show(m.recorded),
            show(m.rerun)
        );
    }
    // Beside a difference, where the two runs were made (crate::environment).
    if matches!(r.verdict, Verdict::Differs | Verdict::WithinTolerance) {
        match &r.environment_changes {
            None => println!("  environment: the recorded run's is not known"),
            Some(c) if c.is_empty() => {
                println!("  environment: the same as the recorded run's")
            }
            Some(c) => {
                println!("  environment differs from the recorded run's:");
                for line in c {
                    println!("    {line}");
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(tolerance: Option<f64>) -> Rules<'static> {
        Rules {
            tolerance,
            ignore: &[],
            declared: &[],
        }
    }

    #[test]
    fn json_files_name_their_differing_fields_and_ignored_ones_pass() {
        let a = br#"{"loss": 1.0, "epochs": [{"seconds": 0.1, "loss": 2.0}], "train_seconds": 3}"#;
        let b = br#"{"loss": 1.0, "epochs": [{"seconds": 0.2, "loss": 2.0}], "train_seconds": 4}"#;
        let mut m = Vec::new();
        let d = diff_file("t.json", Some(a), Some(b), false, &rules(None), &mut m).unwrap();
        assert!(
            d.what
                .contains("fields that differ: epochs.0.seconds, train_seconds"),
            "{}",
            d.what
        );
        let ignore = ["epochs.*.seconds".to_string(), "train_seconds".to_string()];
        let r = Rules {
            tolerance: None,
            ignore: &ignore,
            declared: &[],
        };
        let skipped = diff_file("t.json", Some(a), Some(b), false, &r, &mut m).unwrap_err();
        assert_eq!(skipped, ["epochs.0.seconds", "train_seconds"]);
        // Ignoring one field does not hide another.
        let only = ["seconds".to_string()];
        let r = Rules {
            tolerance: None,
            ignore: &only,
            declared: &[],
        };
        let d = diff_file("t.json", Some(a), Some(b), false, &r, &mut m).unwrap();
        assert!(
            d.what.contains("fields that differ: train_seconds"),
            "{}",
            d.what
        );
    }

    /// A stage's declared fields are ignored in the file they are declared for only.
    #[test]
    fn declared_fields_are_ignored_in_their_own_file_only() {
        let a = br#"{"acc": 1.0, "train_seconds": 3}"#;
        let b = br#"{"acc": 1.0, "train_seconds": 4}"#;
        let declared = [("out/train.json".to_string(), "train_seconds".to_string())];
        let r = Rules {
            tolerance: None,
            ignore: &[],
            declared: &declared,
        };
        let mut m = Vec::new();
        let skipped = diff_file("out/train.json", Some(a), Some(b), false, &r, &mut m).unwrap_err();
        assert_eq!(skipped, ["train_seconds"]);
        let d = diff_file("other/train.json", Some(a), Some(b), false, &r, &mut m).unwrap();
        assert!(d.what.contains("train_seconds"), "{}", d.what);
    }

    #[test]
    fn sampling_is_seeded_distinct_and_bounded() {
        let a = sample(10, 3, 42);
        assert_eq!(a, sample(10, 3, 42));
        assert_eq!(a.len(), 3);
        assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 3);
        assert!(a.iter().all(|&i| i < 10));
        assert_eq!(sample(2, 5, 1).len(), 2);
        assert!(sample(0, 1, 1).is_empty());
        // Different seeds reach different picks.
        assert!((0..20).any(|s| sample(10, 3, s) != a));
    }

    #[test]
    fn first_difference_and_line() {
        let mut m = Vec::new();
        let d = diff_file(
            "x.txt",
            Some(b"ab\ncd"),
            Some(b"ab\nce"),
            false,
            &rules(None),
            &mut m,
        )
        .unwrap();
        assert_eq!(d.byte, Some(4));
        assert!(d.what.contains("byte 4 (line 2)"), "{}", d.what);
        let d = diff_file(
            "x.txt",
            Some(b"ab"),
            Some(b"abc"),
            false,
            &rules(Some(1.0)),
            &mut m,
        )
        .unwrap();
        assert_eq!(d.byte, Some(2));
        assert!(!d.within_tolerance);
    }

    #[test]
    fn metrics_within_tolerance_only_when_only_numbers_differ() {
        let mut m = Vec::new();
        let (a, b) = (
            br#"{"acc": 0.5, "name": "x"}"#.as_slice(),
            br#"{"acc": 0.500000001, "name": "x"}"#.as_slice(),
        );
        let d = diff_file("m.json", Some(a), Some(b), true, &rules(Some(1e-6)), &mut m).unwrap();
        assert!(d.within_tolerance, "{d:?}");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "acc");
        let d = diff_file("m.json", Some(a), Some(b), true, &rules(None), &mut m).unwrap();
        assert!(!d.within_tolerance);
        let c = br#"{"acc": 0.5, "name": "y"}"#.as_slice();
        let d = diff_file("m.json", Some(a), Some(c), true, &rules(Some(1.0)), &mut m).unwrap();
        assert!(!d.within_tolerance && d.what.contains("more than its numbers"));
    }

    #[test]
    fn safetensors_compared_element_wise() {
        let t = |v: Vec<f32>| {
            let mut m = BTreeMap::new();
            m.insert("logits".to_string(), (vec![v.len() as u64], v));
            arrays::write_f32(&m)
        };
        let (a, b) = (t(vec![1.0, 2.0]), t(vec![1.0, 2.0 + 1e-6]));
        let d = arrays::max_abs_delta(&a, &b).unwrap();
        assert!(d > 0.0 && d < 1e-5, "{d}");
        assert!(arrays::max_abs_delta(&a, &t(vec![1.0])).is_err());
        let mut m = Vec::new();
        let f = diff_file(
            "l.safetensors",
            Some(&a),
            Some(&b),
            false,
            &rules(Some(1e-5)),
            &mut m,
        )
        .unwrap();
        assert!(f.within_tolerance);
    }
}
