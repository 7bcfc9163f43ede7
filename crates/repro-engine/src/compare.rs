//! Comparing configurations: `repro params diff`, `repro metrics show|diff`, `repro exp show`
//! and `repro exp apply`.
//!
//! Everything needed is already recorded: a stage's fingerprint (its params and `with:`
//! values) is in `repro.lock` and in each run-cache record, and its metrics files are outputs,
//! so their content is in the cache under the hash the lock or record names. A *source* is
//! one such record of the whole pipeline or of one stage:
//!
//! - `workspace`: the pipeline as it is now (params as the file, profile and `--set` give
//!   them) and the metrics files as they are in the workspace;
//! - `lock`: `repro.lock`, what each stage last produced;
//! - a git revision: its committed `repro.lock` (`git show REV:repro.lock`);
//! - a run-cache entry, by the id `repro exp show` prints (a prefix of the stage key).
//!
//! A metric is a number in a metrics file (JSON, YAML, TOML, CSV or TSV: see
//! [`crate::metrics_file`]), named by its key (`accuracy`), nested keys joined by dots
//! (`softmax.a_uni`); lists are not metrics.
//! `exp show` also attaches to a configuration the metrics of the run-cache entries that
//! consumed its outputs (an evaluate stage reading a train stage's logits, matched by content
//! hash), so one row of `exp show 'gamma_sweep@*'` carries the A_Uni of its own model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value as Json;

use crate::spec::{LoadOptions, Pipeline, Stage};
use crate::state::db::RunRecord;
use crate::state::fingerprint::Fingerprint;
use crate::state::lockfile::LockFile;
use crate::state::workspace::Workspace;

/// The params of a stage as compared: its declared params by variable name, and for a
/// built-in kind its `with:` values as `with.NAME` (nested mappings joined by dots).
pub(crate) fn params_of(fp_params: &BTreeMap<String, Json>, with: &Json) -> BTreeMap<String, Json> {
    let mut out = fp_params.clone();
    fn walk(prefix: &str, v: &Json, out: &mut BTreeMap<String, Json>) {
        match v {
            Json::Object(m) => m
                .iter()
                .for_each(|(k, v)| walk(&format!("{prefix}.{k}"), v, out)),
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    if let Json::Object(m) = with {
        for (k, v) in m {
            walk(&format!("with.{k}"), v, &mut out);
        }
    }
    out
}

/// One stage's configuration in a source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    /// The stage's declared params and `with:` values, by name.
    pub params: BTreeMap<String, Json>,
    /// The numbers of its metrics files, flattened to dotted names.
    pub metrics: BTreeMap<String, f64>,
    /// Declared metrics files that exist but could not be read, each with the reason
    /// (see [`check_metrics`]).
    #[serde(skip)]
    pub unreadable: Vec<String>,
}

/// Where a snapshot comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The workspace as it is now (the pipeline and its metrics files).
    Workspace,
    /// `repro.lock` as committed in the workspace.
    Lock,
    /// `repro.lock` at a git revision.
    Git(String),
    /// A run-cache entry, by its key.
    Run(String),
}

impl Source {
    /// How a diff's column header names this source.
    pub fn label(&self) -> String {
        match self {
            Source::Workspace => "workspace".into(),
            Source::Lock => "lock".into(),
            Source::Git(r) => r.clone(),
            Source::Run(k) => short(k).to_string(),
        }
    }
}

/// The id `exp show` prints for a run-cache entry.
pub(crate) fn short(key: &str) -> &str {
    &key[..key.len().min(8)]
}

/// What a command comparing configurations reads: the pipeline as it is now, the workspace
/// with its cache and run cache, and the lock.
pub struct Records {
    pub(crate) p: Pipeline,
    pub(crate) ws: Workspace,
    pub(crate) lock: LockFile,
    runs: Vec<(String, RunRecord)>,
}

impl Records {
    /// Load the pipeline and read its workspace state, read-only.
    pub fn load(file: &Path, opts: &LoadOptions) -> Result<Records> {
        // These commands only read: on a read-only workspace, the state is read as it is.
        let open = crate::session::Open {
            file,
            load: opts,
            targets: &[],
            downstream: false,
            access: crate::session::Access::Read {
                wait_db: Duration::from_secs(10),
            },
            up_to_date: crate::session::UpToDate::Ignore,
            interrupts: false,
        };
        let crate::session::Opened::Ready(s) =
            crate::session::Session::open(&open, &mut crate::progress::Phases::start())?
        else {
            unreachable!("the up-to-date record is not asked");
        };
        let crate::session::Session { p, ws, lock, .. } = *s;
        let runs = match ws.db_if_open() {
            Some(db) => db.runs()?,
            // Never run here (a fresh checkout, read-only): nothing is recorded yet.
            None if !ws.cache_dir.join("state.redb").exists() => Vec::new(),
            None => bail!(
                "the state database {} is busy (a run is in progress); try again when it ends",
                ws.cache_dir.join("state.redb").display()
            ),
        };
        Ok(Records { p, ws, lock, runs })
    }

    /// Read a source named on the command line.
    pub fn source(&self, name: &str) -> Result<Source> {
        match name {
            "workspace" | "ws" => return Ok(Source::Workspace),
            "lock" => return Ok(Source::Lock),
            _ => {}
        }
        let hex = name.len() >= 4 && name.chars().all(|c| c.is_ascii_hexdigit());
        if hex {
            let hits: Vec<&String> = self
                .runs
                .iter()
                .map(|(k, _)| k)
                .filter(|k| k.starts_with(name))
                .collect();
            match hits.as_slice() {
                [one] => return Ok(Source::Run((*one).clone())),
                [] => {}
                _ => bail!(
                    "'{name}' names {} run-cache entries; give more of the id",
                    hits.len()
                ),
            }
        }
        if git_lock(&self.p.root, name).is_ok() {
            return Ok(Source::Git(name.to_string()));
        }
        bail!(
            "'{name}' is not `workspace`, `lock`, a run-cache id (repro exp show lists them) or a git revision with a committed repro.lock"
        )
    }

    /// The default "before" of a diff: HEAD's lock when the workspace is in git and HEAD has
    /// one, else the workspace's lock (what last ran).
    pub fn default_base(&self) -> Source {
        if git_lock(&self.p.root, "HEAD").is_ok() {
            Source::Git("HEAD".into())
        } else {
            Source::Lock
        }
    }

    /// Every stage's configuration in `src` (a run-cache source has one stage).
    pub fn snapshot(&self, src: &Source) -> Result<BTreeMap<String, Config>> {
        let mut out = BTreeMap::new();
        match src {
            Source::Workspace => {
                for s in &self.p.stages {
                    let (_, with) = s.action.key();
                    let mut metrics = BTreeMap::new();
                    let mut unreadable = Vec::new();
                    let paths = s.metric_paths();
                    for m in &paths {
                        let read =
                            crate::metrics_file::read(&self.p.root.join(m)).and_then(|text| {
                                text.map(|t| parse_metrics(&t, m, &paths)).transpose()
                            });
                        match read {
                            Ok(Some(found)) => metrics.extend(found),
                            // Not produced yet.
                            Ok(None) => {}
                            Err(why) => unreadable
                                .push(format!("metrics file {m} of stage '{}': {why}", s.name)),
                        }
                    }
                    out.insert(
                        s.name.clone(),
                        Config {
                            params: params_of(&s.params, &with),
                            metrics,
                            unreadable,
                        },
                    );
                }
            }
            Source::Lock | Source::Git(_) => {
                let lock = match src {
                    Source::Git(rev) => git_lock(&self.p.root, rev)?,
                    _ => self.lock.clone(),
                };
                for (name, e) in &lock.stages {
                    let paths = self.recorded_metric_paths(name, &e.key);
                    let mut metrics = BTreeMap::new();
                    let mut unreadable = Vec::new();
                    for m in &paths {
                        let Some(hash) = e.out_hashes.get(m) else {
                            continue;
                        };
                        let text = self.object_text(hash).or_else(|| match src {
                            Source::Git(rev) => git_show(&self.p.root, rev, m).ok(),
                            _ => None,
                        });
                        if let Some(text) = text {
                            match parse_metrics(&text, m, &paths) {
                                Ok(found) => metrics.extend(found),
                                Err(why) => unreadable.push(format!(
                                    "metrics file {m} of stage '{name}' in {}: {why}",
                                    src.label()
                                )),
                            }
                        }
                    }
                    let fp = &e.fingerprint;
                    out.insert(
                        name.clone(),
                        Config {
                            params: params_of(&fp.params, &fp.with),
                            metrics,
                            unreadable,
                        },
                    );
                }
            }
            Source::Run(key) => {
                let (_, rec) = self
                    .runs
                    .iter()
                    .find(|(k, _)| k == key)
                    .context("run-cache entry vanished")?;
                out.insert(rec.stage.clone(), self.run_config(key, rec, false));
            }
        }
        Ok(out)
    }

    /// The run-cache entry of a full key.
    pub(crate) fn run(&self, key: &str) -> Option<&RunRecord> {
        self.runs.iter().find(|(k, _)| k == key).map(|(_, r)| r)
    }

    /// Metric paths of a recorded stage: as recorded in its run-cache entry, else as the
    /// pipeline declares them now.
    fn recorded_metric_paths(&self, stage: &str, key: &str) -> Vec<String> {
        if let Some((_, r)) = self.runs.iter().find(|(k, _)| k == key)
            && !r.metrics.is_empty()
        {
            return r.metrics.clone();
        }
        self.p
            .stages
            .iter()
            .find(|s| s.name == stage)
            .map(Stage::metric_paths)
            .unwrap_or_default()
    }

    fn object_text(&self, hash: &str) -> Option<String> {
        std::fs::read_to_string(self.ws.objects.object_path(hash)).ok()
    }

    /// A run-cache entry's params and metrics; `linked`: also the metrics of the entries
    /// that consumed its outputs.
    fn run_config(&self, key: &str, rec: &RunRecord, linked: bool) -> Config {
        let (params, _) = record_params(rec);
        let mut metrics = BTreeMap::new();
        let mut unreadable = Vec::new();
        let own = self.recorded_metric_paths(&rec.stage, key);
        for m in &own {
            if let Some(text) = rec.outs.get(m).and_then(|h| self.object_text(h)) {
                match parse_metrics(&text, m, &own) {
                    Ok(found) => metrics.extend(found),
                    Err(why) => unreadable.push(format!(
                        "metrics file {m} of stage '{}' in {}: {why}",
                        rec.stage,
                        short(key)
                    )),
                }
            }
        }
        if linked {
            let hashes: BTreeSet<&str> = rec.outs.values().map(String::as_str).collect();
            // The newest consumer of each of this entry's outputs that measured something.
            let mut consumers: Vec<&(String, RunRecord)> = self
                .runs
                .iter()
                .filter(|(k, r)| {
                    k != key
                        && r.fingerprint
                            .as_ref()
                            .is_some_and(|fp| fp.deps.values().any(|h| hashes.contains(h.as_str())))
                })
                .collect();
            consumers.sort_by_key(|(_, r)| std::cmp::Reverse(r.created));
            for (k, r) in consumers {
                for (name, v) in self.run_config(k, r, false).metrics {
                    metrics.entry(name).or_insert(v);
                }
            }
        }
        Config {
            params,
            metrics,
            unreadable,
        }
    }

    /// Whether every object a record names is in the cache.
    fn restorable(&self, rec: &RunRecord) -> bool {
        rec.outs.iter().all(|(path, hash)| {
            if rec.dirs.contains(path) {
                self.ws
                    .objects
                    .manifest(hash)
                    .is_ok_and(|files| files.iter().all(|f| self.ws.objects.has(&f.hash)))
            } else {
                self.ws.objects.has(hash)
            }
        })
    }
}

/// A record's params, and whether it knew them (records written before fingerprints were kept
/// did not).
fn record_params(rec: &RunRecord) -> (BTreeMap<String, Json>, bool) {
    match &rec.fingerprint {
        Some(fp) => (params_of(&fp.params, &fp.with), true),
        None => (BTreeMap::new(), false),
    }
}

/// Fail, naming each file and why, when a snapshot has declared metrics files that exist but
/// cannot be read (rather than reporting "no metrics" for them).
pub fn check_metrics(snap: &BTreeMap<String, Config>) -> Result<()> {
    let problems: Vec<&str> = snap
        .values()
        .flat_map(|c| c.unreadable.iter().map(String::as_str))
        .collect();
    if !problems.is_empty() {
        bail!("cannot read {}", problems.join("; cannot read "));
    }
    Ok(())
}

/// Metrics from one file, in the format its extension names; names are prefixed by the file
/// when a stage has several. The error says why, without the file (the caller names it).
fn parse_metrics(
    text: &str,
    path: &str,
    all: &[String],
) -> std::result::Result<BTreeMap<String, f64>, String> {
    crate::metrics_file::parse_named(text, path, all)
}

/// `git show REV:./repro.lock` from the workspace, parsed.
pub(crate) fn git_lock(root: &Path, rev: &str) -> Result<LockFile> {
    let text = git_show(root, rev, "repro.lock")?;
    serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{rev}:repro.lock is not a valid lock file"))
}

fn git_show(root: &Path, rev: &str, path: &str) -> Result<String> {
    if rev.starts_with('-') {
        bail!("'{rev}' is not a revision");
    }
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["show", &format!("{rev}:./{path}")])
        .stderr(std::process::Stdio::null())
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!("git has no {path} at '{rev}'");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A JSON value as a table cell.
fn cell(v: Option<&Json>) -> String {
    match v {
        None => "-".into(),
        Some(Json::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn num_cell(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.6}").trim_end_matches('0').to_string(),
    }
}

/// The change between two values, when both are numbers.
fn change(a: Option<&Json>, b: Option<&Json>) -> String {
    match (a.and_then(Json::as_f64), b.and_then(Json::as_f64)) {
        (Some(x), Some(y)) => {
            let d = y - x;
            if d >= 0.0 {
                format!("+{}", num_cell(Some(d)))
            } else {
                num_cell(Some(d))
            }
        }
        _ => String::new(),
    }
}

// The table renderer lives in `ui`, which `trace` uses too.
#[cfg(test)]
use crate::metrics_file::flatten as flatten_metrics;
pub use crate::ui::Format;
pub(crate) use crate::ui::render_table;

/// One row of a params or metrics diff.
#[derive(Serialize)]
pub struct DiffRow {
    /// The stage it is about.
    pub stage: String,
    /// The param or metric.
    pub name: String,
    /// Its value in the first source (`None`: absent there).
    pub a: Option<Json>,
    /// Its value in the second source.
    pub b: Option<Json>,
}

/// `params diff` (`metrics: false`) or `metrics diff` between two snapshots; unchanged rows
/// only with `all`.
pub fn diff(
    a: &BTreeMap<String, Config>,
    b: &BTreeMap<String, Config>,
    metrics: bool,
    all: bool,
) -> Vec<DiffRow> {
    let mut rows = Vec::new();
    let stages: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let empty = Config::default();
    for st in stages {
        let (ca, cb) = (a.get(st).unwrap_or(&empty), b.get(st).unwrap_or(&empty));
        let (ma, mb): (BTreeMap<String, Json>, BTreeMap<String, Json>) = if metrics {
            let j = |c: &Config| -> BTreeMap<String, Json> {
                c.metrics
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                    .collect()
            };
            (j(ca), j(cb))
        } else {
            (ca.params.clone(), cb.params.clone())
        };
        let names: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
        for n in names {
            let (va, vb) = (ma.get(n), mb.get(n));
            if all || va != vb {
                rows.push(DiffRow {
                    stage: st.clone(),
                    name: n.clone(),
                    a: va.cloned(),
                    b: vb.cloned(),
                });
            }
        }
    }
    rows
}

/// Print a diff in the chosen format.
pub fn print_diff(rows: &[DiffRow], what: &str, a: &str, b: &str, fmt: Format) -> Result<()> {
    if fmt == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "a": a, "b": b, "rows": rows }))?
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("no {what} differ between {a} and {b}");
        return Ok(());
    }
    let headers = [
        "stage".to_string(),
        what.trim_end_matches('s').to_string(),
        a.to_string(),
        b.to_string(),
        "change".into(),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.stage.clone(),
                r.name.clone(),
                cell(r.a.as_ref()),
                cell(r.b.as_ref()),
                change(r.a.as_ref(), r.b.as_ref()),
            ]
        })
        .collect();
    print!("{}", render_table(&headers, &cells, fmt));
    Ok(())
}

/// `metrics show`: every metric of a snapshot.
pub fn print_metrics(snap: &BTreeMap<String, Config>, fmt: Format) -> Result<()> {
    check_metrics(snap)?;
    let with: BTreeMap<&String, &BTreeMap<String, f64>> = snap
        .iter()
        .filter(|(_, c)| !c.metrics.is_empty())
        .map(|(s, c)| (s, &c.metrics))
        .collect();
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(&with)?);
        return Ok(());
    }
    if with.is_empty() {
        println!("no metrics found (declare `metrics:` outputs in the pipeline, then run it)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = with
        .iter()
        .flat_map(|(s, m)| {
            m.iter()
                .map(move |(k, v)| vec![s.to_string(), k.clone(), num_cell(Some(*v))])
        })
        .collect();
    print!(
        "{}",
        render_table(
            &["stage".into(), "metric".into(), "value".into()],
            &rows,
            fmt
        )
    );
    Ok(())
}

/// One configuration in `exp show`.
#[derive(Serialize, Clone)]
pub struct ExpRow {
    /// The short id `exp apply` takes (the key's first 8 digits).
    pub id: String,
    /// The stage key of the run-cache entry.
    pub key: String,
    /// The stage that ran.
    pub stage: String,
    /// Milliseconds since the epoch when it ran.
    pub created: u64,
    /// How long it ran, in seconds.
    pub seconds: f64,
    /// Its params and `with:` values.
    pub params: BTreeMap<String, Json>,
    /// Its metrics, flattened.
    pub metrics: BTreeMap<String, f64>,
    /// Its outputs are all in the cache (`repro exp apply` can bring them back).
    pub restorable: bool,
    /// It is what the workspace holds now (its key is the lock's).
    pub current: bool,
    /// The machine it ran on (see `crate::environment`), when its record has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Json>,
    /// What `repro verify` last found for this key (`identical`, `within 1e-06`, `differs`,
    /// `could not run`); `None`: never verified.
    pub verified: Option<String>,
}

/// Every run-cache configuration of the stages `targets` select (names, base names, globs;
/// all when empty), newest first.
pub fn experiments(cx: &Records, targets: &[String]) -> Result<Vec<ExpRow>> {
    let matchers = targets
        .iter()
        .map(|t| {
            Ok((
                t.clone(),
                globset::Glob::new(t)
                    .map_err(|e| anyhow::anyhow!("invalid pattern '{t}': {e}"))?
                    .compile_matcher(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let selected = |stage: &str| {
        matchers.is_empty()
            || matchers.iter().any(|(t, m)| {
                stage == t || m.is_match(stage) || stage.split('@').next() == Some(t.as_str())
            })
    };
    let verified = crate::verify::latest_by_key(&cx.ws.cache_dir);
    let mut rows: Vec<ExpRow> = cx
        .runs
        .iter()
        .filter(|(_, r)| selected(&r.stage))
        .map(|(k, r)| {
            let c = cx.run_config(k, r, true);
            ExpRow {
                id: short(k).to_string(),
                key: k.clone(),
                stage: r.stage.clone(),
                created: r.created,
                seconds: r.seconds,
                params: c.params,
                metrics: c.metrics,
                restorable: cx.restorable(r),
                current: cx.lock.stages.get(&r.stage).is_some_and(|e| &e.key == k),
                environment: r.environment.clone(),
                verified: verified.get(k).map(|v| v.short()),
            }
        })
        .collect();
    if rows.is_empty() && !targets.is_empty() {
        bail!(
            "the run cache has no configuration of a stage matching {}",
            targets.join(", ")
        );
    }
    rows.sort_by(|a, b| b.created.cmp(&a.created).then(a.stage.cmp(&b.stage)));
    Ok(rows)
}

/// Order rows by a metric (`NAME` or the end of a dotted/prefixed name), best (largest)
/// first unless `ascending`; rows without it last.
pub fn sort_by_metric(rows: &mut [ExpRow], metric: &str, ascending: bool) -> Result<()> {
    let find = |r: &ExpRow| {
        r.metrics.get(metric).copied().or_else(|| {
            r.metrics
                .iter()
                .find(|(k, _)| metric_matches(k, metric))
                .map(|(_, v)| *v)
        })
    };
    if !rows.iter().any(|r| find(r).is_some()) {
        let known: BTreeSet<&String> = rows.iter().flat_map(|r| r.metrics.keys()).collect();
        bail!(
            "no configuration has a metric '{metric}' (metrics: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.into_iter().cloned().collect::<Vec<_>>().join(", ")
            }
        );
    }
    rows.sort_by(|a, b| match (find(a), find(b)) {
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

/// Whether the metric `name` is what `wanted` names: equal, or its last dotted/prefixed part.
fn metric_matches(name: &str, wanted: &str) -> bool {
    name == wanted || name.ends_with(&format!(".{wanted}")) || name.ends_with(&format!(":{wanted}"))
}

/// Keep only the metrics named in `wanted` (`exp show --metrics a_uni,a_sw`).
pub fn keep_metrics(rows: &mut [ExpRow], wanted: &[String]) {
    for r in rows {
        r.metrics
            .retain(|k, _| wanted.iter().any(|w| metric_matches(k, w)));
    }
}

/// The params whose values are not the same in every row (what tells configurations apart).
pub(crate) fn differing_params(rows: &[ExpRow]) -> Vec<String> {
    let names: BTreeSet<&String> = rows.iter().flat_map(|r| r.params.keys()).collect();
    names
        .into_iter()
        .filter(|n| {
            let first = rows.first().and_then(|r| r.params.get(*n));
            rows.iter().any(|r| r.params.get(*n) != first)
        })
        .cloned()
        .collect()
}

/// `exp show` as a table (text or Markdown): id, stage, the params that differ, metrics,
/// when it ran, restorable; `*` marks what the workspace holds.
pub fn print_experiments(rows: &[ExpRow], fmt: Format) -> Result<()> {
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("the run cache is empty: run the pipeline first");
        return Ok(());
    }
    let params = differing_params(rows);
    let metrics: Vec<String> = rows
        .iter()
        .flat_map(|r| r.metrics.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut headers = vec!["id".to_string(), "stage".into()];
    headers.extend(params.iter().cloned());
    headers.extend(metrics.iter().cloned());
    headers.extend([
        "ran (UTC)".to_string(),
        "took".into(),
        "restorable".into(),
        "verified".into(),
    ]);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                format!("{}{}", r.id, if r.current { "*" } else { "" }),
                r.stage.clone(),
            ];
            c.extend(params.iter().map(|p| cell(r.params.get(p))));
            c.extend(metrics.iter().map(|m| num_cell(r.metrics.get(m).copied())));
            c.push(utc(r.created));
            c.push(format!("{:.1}s", r.seconds));
            c.push(if r.restorable {
                "yes".into()
            } else {
                "no".into()
            });
            c.push(r.verified.clone().unwrap_or_else(|| "-".into()));
            c
        })
        .collect();
    print!("{}", render_table(&headers, &cells, fmt));
    if fmt == Format::Text {
        println!(
            "* = in the workspace now; repro exp apply ID restores a configuration from the cache"
        );
    }
    Ok(())
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM` (UTC).
fn utc(ms: u64) -> String {
    crate::trace_file::utc_seconds(ms)[..16].to_string()
}

/// `exp apply ID`: put a cached configuration's outputs back in the workspace (nothing is
/// recomputed; what the outputs held is saved in the cache first), record it in the lock, and
/// say which params make it current. Returns the lines to print.
pub fn apply(file: &Path, opts: &LoadOptions, id: &str) -> Result<Vec<String>> {
    let root = crate::spec::workspace_root(file);
    let _guard = crate::state::workspace::WorkspaceLock::acquire(&root.join("cache"), false)?;
    let cx = Records::load(file, opts)?;
    let Source::Run(key) = cx.source(id)? else {
        bail!("'{id}' is not a run-cache id (repro exp show lists them)");
    };
    let (_, rec) = cx
        .runs
        .iter()
        .find(|(k, _)| *k == key)
        .expect("found by source()");
    if !cx.restorable(rec) {
        bail!(
            "{} of stage '{}' cannot be restored: some of its outputs are no longer in the cache",
            short(&key),
            rec.stage
        );
    }
    let mut lines = Vec::new();
    for (path, hash) in &rec.outs {
        let full = cx.ws.root.join(path);
        let is_dir = rec.dirs.contains(path);
        if full.exists() || full.is_symlink() {
            let now = cx.ws.hasher().content(path)?;
            if now.hash() == Some(hash.as_str()) {
                continue;
            }
            if now.hash().is_some() {
                cx.ws
                    .objects
                    .store(&full, &now)
                    .with_context(|| format!("saving the current {path} in the cache"))?;
            }
        }
        cx.ws
            .objects
            .restore(hash, is_dir, rec.file_mode(path), &full)
            .with_context(|| format!("restoring {path}"))?;
        lines.push(format!("restored {path}"));
    }
    if lines.is_empty() {
        lines.push(format!(
            "the outputs of {} already hold {}",
            rec.stage,
            short(&key)
        ));
    }
    let mut lock = cx.lock.clone();
    match &rec.fingerprint {
        Some(fp) => {
            lock.stages.insert(
                rec.stage.clone(),
                crate::state::lockfile::LockEntry {
                    key: key.clone(),
                    fingerprint: fp.clone(),
                    out_hashes: rec.outs.clone(),
                },
            );
            lock.write(&cx.ws.lock_path)?;
        }
        None => {
            lines.push("note: this entry predates recorded params; repro.lock is unchanged".into())
        }
    }
    lines.extend(params_to_set(&cx, &rec.stage, rec.fingerprint.as_ref()));
    Ok(lines)
}

/// How the pipeline's params differ from a configuration's: what to set to make it current.
fn params_to_set(cx: &Records, stage: &str, fp: Option<&Fingerprint>) -> Vec<String> {
    let Some(fp) = fp else { return Vec::new() };
    let Some(now) = cx.p.stages.iter().find(|s| s.name == stage) else {
        return vec![format!(
            "note: stage '{stage}' is no longer in the pipeline"
        )];
    };
    let (_, now_with) = now.action.key();
    let (want, have) = (
        params_of(&fp.params, &fp.with),
        params_of(&now.params, &now_with),
    );
    let mut sets = Vec::new();
    let mut others = Vec::new();
    for (k, v) in &want {
        if have.get(k) == Some(v) {
            continue;
        }
        if fp.params.contains_key(k) {
            let text = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            sets.push(format!("--set {k}={}", shell_word(&text)));
        } else {
            others.push(format!(
                "{k} = {} (now {})",
                cell(Some(v)),
                cell(have.get(k))
            ));
        }
    }
    let mut lines = Vec::new();
    if sets.is_empty() && others.is_empty() {
        lines.push(format!(
            "the pipeline's params already match; `repro status {stage}` shows whether its deps do"
        ));
    }
    if !sets.is_empty() {
        lines.push(format!("to make it current: repro run {}", sets.join(" ")));
    }
    if !others.is_empty() {
        lines.push(format!(
            "in the pipeline, set for '{stage}': {}",
            others.join("; ")
        ));
    }
    lines
}

/// A value quoted for a POSIX shell when needed (also for the `--set` lines `exp apply` prints).
pub(crate) fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+/:=,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_flatten_at_any_depth_and_skip_lists() {
        let m = flatten_metrics(
            &json!({"acc": 0.5, "n": 3, "softmax": {"a_uni": 0.25, "deep": {"x": 1}},
            "hist": [1, 2], "name": "x", "ok": true}),
        );
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(keys, ["acc", "n", "softmax.a_uni", "softmax.deep.x"]);
    }

    #[test]
    fn params_include_with_values_by_dotted_name() {
        let p = params_of(
            &[("lr".to_string(), json!(0.1))].into(),
            &json!({"gamma": 4, "meta": {"role": "x"}}),
        );
        assert_eq!(p["lr"], json!(0.1));
        assert_eq!(p["with.gamma"], json!(4));
        assert_eq!(p["with.meta.role"], json!("x"));
    }

    #[test]
    fn dates_and_cells() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_764_620_700_000), "2025-12-01 20:25");
        assert_eq!(num_cell(Some(0.125)), "0.125");
        assert_eq!(num_cell(Some(20.0)), "20");
        assert_eq!(change(Some(&json!(3)), Some(&json!(5))), "+2");
        assert_eq!(shell_word("a b"), "'a b'");
    }

    #[test]
    fn diff_lists_changed_added_and_removed() {
        let c = |p: &[(&str, Json)]| Config {
            params: p.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            metrics: BTreeMap::new(),
            unreadable: Vec::new(),
        };
        let a: BTreeMap<String, Config> =
            [("s".to_string(), c(&[("n", json!(3)), ("k", json!(1))]))].into();
        let b: BTreeMap<String, Config> = [
            ("s".to_string(), c(&[("n", json!(5)), ("k", json!(1))])),
            ("t".to_string(), c(&[("m", json!(2))])),
        ]
        .into();
        let rows = diff(&a, &b, false, false);
        let got: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.stage.clone(), r.name.clone()))
            .collect();
        assert_eq!(got, [("s".into(), "n".into()), ("t".into(), "m".into())]);
        assert_eq!(diff(&a, &b, false, true).len(), 3);
    }
}
