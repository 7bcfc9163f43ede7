//! Pipeline specification: reads `pipeline.yaml` (and the vars files it names), expands
//! `foreach:` / `matrix:` stages, interpolates `${…}`, and checks every field, reporting each
//! problem with file:line:col, the stage, and the quoted line. Nothing here touches the
//! workspace's data; the DAG checks that need all stages at once live in `graph`.

pub mod error;
pub mod interp;
mod shell;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value as Json;

pub use error::{SpecError, SpecErrors};
use interp::{Scope, interpolate_node, used_variables};
use yaml::{Mark, Node, Value};

use crate::executor::Resources;
use crate::kinds::{Registry, Resolved};

/// A parsed, expanded, validated pipeline. Serialisable so that the checked plan can be kept
/// in the state database and reused while its inputs are unchanged (`crate::state::plan_cache`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Pipeline {
    /// Workspace root: the directory holding the pipeline file.
    pub root: PathBuf,
    pub file: PathBuf,
    /// Merged variables (pipeline `vars:`, then the profile's).
    pub vars: Json,
    pub profile: Option<String>,
    /// `executor:` (`local` or `slurm`), if set in the file or the profile's vars.
    pub executor: Option<String>,
    /// `slurm:` defaults (partition, …), passed to the Slurm executor.
    pub slurm: Json,
    /// `remote:`: the remote cache's URL (or a shared directory), see `crate::remote`.
    pub remote: Option<String>,
    pub stages: Vec<Stage>,
    /// Every vars file the pipeline names (top-level and every profile's), workspace-relative
    /// where inside it: the engine must never write or delete them (see `confine`).
    pub vars_files: Vec<String>,
    /// Every file this load read (the pipeline file first, then each vars file read), with
    /// the hash of the bytes parsed: what a cached plan must be checked against.
    pub inputs: Vec<InputFile>,
}

/// A file the pipeline was loaded from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputFile {
    /// Absolute path, as read.
    pub path: PathBuf,
    /// The path its marks name (what errors print).
    pub shown: PathBuf,
    /// blake3 of the bytes read, hex.
    pub hash: String,
}

impl InputFile {
    fn of(path: &Path, shown: &Path, bytes: &[u8]) -> InputFile {
        InputFile {
            path: path.to_path_buf(),
            shown: shown.to_path_buf(),
            hash: blake3::hash(bytes).to_hex().to_string(),
        }
    }
}

/// What a stage runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// A shell command (`sh -c`).
    Cmd(String),
    /// A registered kind with its interpolated `with:` parameters, and what the registry
    /// made of them at load time (version, written paths, metric files).
    Uses {
        kind: String,
        with: Json,
        resolved: Resolved,
    },
}

/// A path named by a stage, normalised relative to the workspace (or absolute, for deps
/// outside it such as `/usr/share/datasets/...`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PathRef {
    pub path: String,
    pub mark: Mark,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stage {
    /// Full name (`train@cnn,bce-nu` for expanded stages).
    pub name: String,
    pub action: Action,
    pub deps: Vec<PathRef>,
    pub outs: Vec<PathRef>,
    /// Declared params with their values (sorted by key).
    pub params: BTreeMap<String, Json>,
    pub resources: Resources,
    /// Directory that survives interruption (excluded from key and outs).
    pub checkpoint: Option<String>,
    /// Where `checkpoint:` is written, for errors about it.
    pub checkpoint_mark: Option<Mark>,
    /// Where each top-level `with:` parameter is written, for errors about its value.
    pub with_marks: BTreeMap<String, Mark>,
    pub desc: Option<String>,
    /// `metrics:` outputs (JSON files whose numbers `repro metrics`/`exp show` compare); each
    /// is also in `outs`.
    pub metrics: Vec<PathRef>,
    /// Where the stage is defined (its name in the file).
    pub mark: Mark,
}

const TOP_KEYS: &[&str] = &[
    "vars", "stages", "profiles", "profile", "executor", "slurm", "remote",
];
const STAGE_KEYS: &[&str] = &[
    "cmd",
    "uses",
    "with",
    "deps",
    "outs",
    "params",
    "resources",
    "foreach",
    "matrix",
    "checkpoint",
    "desc",
    "metrics",
];
/// Longest stage name (after expansion): `cache/logs/<name>.log` must fit a file name (255 bytes).
const MAX_STAGE_NAME: usize = 200;
const RESOURCE_KEYS: &[&str] = &["cpus", "gpu", "gpus", "mem", "time", "partition"];

/// Options that select what to load.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// The stage kinds `uses:` may name (the program's registry; empty by default).
    pub kinds: std::sync::Arc<Registry>,
    /// `--profile NAME`; falls back to the file's `profile:`.
    pub profile: Option<String>,
    /// `--set a.b=value` overrides applied last.
    pub overrides: Vec<(String, String)>,
    /// `--max-stages N`: most stages foreach/matrix may expand to (default: `REPRO_MAX_STAGES`,
    /// else [`DEFAULT_MAX_STAGES`]).
    pub max_stages: Option<usize>,
}

/// The pipeline file as an absolute path.
fn absolute(file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(file)
    }
}

/// The workspace root of a pipeline file: its directory, absolute (what `Pipeline::root` is).
pub fn workspace_root(file: &Path) -> PathBuf {
    absolute(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Load and validate a pipeline file. Every problem found is reported at once.
pub fn load(file: &Path, opts: &LoadOptions) -> Result<Pipeline, SpecErrors> {
    let file = absolute(file);
    let root_dir = workspace_root(&file);
    let display = file
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| file.clone());
    let bytes = std::fs::read(&file).map_err(|e| {
        SpecErrors(vec![SpecError::plain(format!(
            "cannot read {}: {e}",
            file.display()
        ))])
    })?;
    let max_stages = max_stages(opts).map_err(|e| SpecErrors(vec![e]))?;
    let mut inputs = vec![InputFile::of(&file, &display, &bytes)];
    let doc = yaml::parse_bytes(&display, bytes).map_err(|e| SpecErrors(vec![e]))?;
    let mut errors = Vec::new();

    let Some(top) = doc.as_map() else {
        return Err(SpecErrors(vec![SpecError::at(
            &doc.mark,
            "a pipeline file must be a mapping with a `stages:` key",
        )]));
    };
    for (k, _) in top {
        let key = k.as_str().unwrap_or_default();
        if !TOP_KEYS.contains(&key) {
            errors.push(unknown_key(k, key, TOP_KEYS, "top-level key"));
        }
    }

    // vars, then the profile's vars, then --set overrides.
    let mut vars = Json::Object(Default::default());
    let mut origins = Origins::new();
    if let Some(v) = doc.get("vars") {
        merge_vars_node(
            &mut vars,
            &mut origins,
            v,
            (&root_dir, &mut inputs),
            &mut errors,
        );
    }
    let profile = opts.profile.clone().or_else(|| {
        doc.get("profile")
            .and_then(|p| p.as_str())
            .map(String::from)
    });
    if let Some(name) = &profile {
        match doc.get("profiles").and_then(|p| p.get(name)) {
            Some(p) => merge_vars_node(
                &mut vars,
                &mut origins,
                p,
                (&root_dir, &mut inputs),
                &mut errors,
            ),
            None => {
                let known: Vec<String> = doc
                    .get("profiles")
                    .and_then(|p| p.as_map())
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, _)| k.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let e = match doc.get("profile") {
                    Some(n) if opts.profile.is_none() => {
                        SpecError::at(&n.mark, format!("unknown profile '{name}'"))
                    }
                    _ => SpecError::plain(format!(
                        "unknown profile '{name}' in {}",
                        display.display()
                    )),
                };
                errors.push(e.note(format!(
                    "profiles defined: {}",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
    }
    for (k, v) in &opts.overrides {
        // Only variables that exist: a misspelled key would otherwise change nothing, silently.
        match check_override(&vars, k) {
            Ok(()) => {
                set_dotted(&mut vars, k, yaml::scalar_to_json(v));
                origins.insert(k.clone(), Origin::Set(v.clone()));
            }
            Err(e) => errors.push(e),
        }
    }

    let executor = doc
        .get("executor")
        .and_then(|n| n.as_str())
        .map(String::from)
        .or_else(|| {
            vars.get("executor")
                .and_then(|v| v.as_str())
                .map(String::from)
        });
    if let Some(ex) = &executor
        && !matches!(ex.as_str(), "local" | "slurm")
    {
        let mark = doc.get("executor").map(|n| n.mark.clone());
        let msg = format!("unknown executor '{ex}' (known: local, slurm)");
        errors.push(match mark {
            Some(m) => SpecError::at(&m, msg),
            None => SpecError::plain(msg),
        });
    }
    let slurm = doc.get("slurm").map(Node::to_json).unwrap_or(Json::Null);
    let remote = doc.get("remote").and_then(|n| match n.as_str() {
        Some(url) => match crate::remote::store::check_url(
            &crate::remote::store::normalise(url, &root_dir).ok()?,
        ) {
            Ok(_) => Some(url.to_string()),
            Err(msg) => {
                errors.push(SpecError::at(&n.mark, msg));
                None
            }
        },
        None => {
            errors.push(SpecError::at(
                &n.mark,
                format!("`remote:` must be a URL string, found {}", n.type_name()),
            ));
            None
        }
    });

    let mut stages = Vec::new();
    let mut expanded = 0;
    match doc.get("stages") {
        None => errors.push(SpecError::at(&doc.mark, "missing `stages:`")),
        Some(s) => {
            match s.as_map() {
                None => errors.push(SpecError::at(
                    &s.mark,
                    format!(
                        "`stages:` must be a mapping of name → stage, found {}",
                        s.type_name()
                    ),
                )),
                Some(entries) => {
                    for (k, body) in entries {
                        let name = k.as_str().unwrap_or_default().to_string();
                        if name.is_empty() || name.contains(['@', '*', '?', '[', ']', ' ', '/']) {
                            errors.push(SpecError::at(&k.mark, format!("invalid stage name '{name}': use letters, digits, '-', '_' and '.'")));
                            continue;
                        }
                        let limit = (Limit { max_stages }, &mut expanded);
                        if !expand_stage(
                            &name,
                            k,
                            body,
                            (&vars, &origins, &opts.kinds),
                            limit,
                            &mut stages,
                            &mut errors,
                        ) {
                            break; // over the stage limit: the rest would only repeat that
                        }
                    }
                }
            }
        }
    }

    let mut seen: BTreeMap<&str, &Mark> = BTreeMap::new();
    for s in &stages {
        // The name (expanded, with its `@item` part) names files under cache/ (logs, specs):
        // checked here rather than failing when the stage starts.
        let chars = s.name.chars().count();
        if chars > MAX_STAGE_NAME {
            let short: String = s.name.chars().take(40).collect();
            errors.push(SpecError::at(
                &s.mark,
                format!("stage name '{short}…' is {chars} characters long; at most {MAX_STAGE_NAME} are allowed (it names the stage's log file)"),
            ));
        }
        if let Some(prev) = seen.insert(&s.name, &s.mark) {
            errors.push(
                SpecError::at(&s.mark, format!("two stages are named '{}'", s.name)).note(format!(
                    "the other is at {}:{}",
                    prev.path().display(),
                    prev.line
                )),
            );
        }
    }

    let vars_files = vars_file_names(&doc, &root_dir);
    let errors = collapse_repeats(errors, &display);
    if errors.is_empty() {
        Ok(Pipeline {
            root: root_dir,
            file,
            vars,
            profile,
            executor,
            slurm,
            remote,
            stages,
            vars_files,
            inputs,
        })
    } else {
        Err(SpecErrors(errors))
    }
}

fn unknown_key(k: &Node, key: &str, known: &[&str], what: &str) -> SpecError {
    let mut e = SpecError::at(&k.mark, format!("unknown {what} '{key}'"));
    e = match error::suggest(key, known) {
        Some(s) => e.note(format!("did you mean '{s}'?")),
        None => e.note(format!("expected one of: {}", known.join(", "))),
    };
    e
}

/// Where a variable's value was written: a line of a vars (profile) file, or `--set`.
#[derive(Debug, Clone)]
enum Origin {
    At(Mark),
    Set(String),
}

/// The origin of every variable path (`pretrain.epochs`), last writer wins.
type Origins = BTreeMap<String, Origin>;

fn record_origins(node: &Node, prefix: &str, origins: &mut Origins) {
    if let Some(entries) = node.as_map() {
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            let path = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            origins.insert(path.clone(), Origin::At(v.mark.clone()));
            record_origins(v, &path, origins);
        }
    }
}

/// The origin of `name`, or of the nearest enclosing variable that has one.
fn origin_of<'o>(origins: &'o Origins, name: &str) -> Option<&'o Origin> {
    let mut n = name;
    loop {
        if let Some(o) = origins.get(n) {
            return Some(o);
        }
        n = &n[..n.rfind('.')?];
    }
}

/// Point an error about a `with:` parameter at where its value came from: the profile or vars
/// line that set the variable (the pipeline line is named in a note), else the parameter's own
/// line, else `with:`. The parameter is the first `with:` key named in backquotes in `msg`.
fn locate_param_error(
    with: Option<&Node>,
    fallback: &Mark,
    msg: String,
    scope: &Scope,
    origins: &Origins,
) -> SpecError {
    let Some(with) = with else {
        return SpecError::at(fallback, msg);
    };
    let param = msg
        .split('`')
        .skip(1)
        .step_by(2)
        .find_map(|word| with.get(word).map(|n| (word.to_string(), n)));
    let Some((param, node)) = param else {
        return SpecError::at(&with.mark, msg);
    };
    let used = used_variables(node, scope);
    let source = used.iter().rev().find_map(|name| {
        let local = name
            .split('.')
            .next()
            .is_some_and(|h| scope.locals.iter().any(|(l, _)| *l == h));
        (!local)
            .then(|| origin_of(origins, name).map(|o| (name, o)))
            .flatten()
    });
    let here = format!(
        "{}:{}:{}",
        node.mark.path().display(),
        node.mark.line,
        node.mark.col
    );
    match source {
        Some((name, Origin::At(m))) => SpecError::at(m, msg).note(format!(
            "the value of `${{{name}}}` is set here and used by `{param}:` at {here}"
        )),
        Some((name, Origin::Set(v))) => {
            SpecError::at(&node.mark, msg).note(format!("the value comes from `--set {name}={v}`"))
        }
        None => SpecError::at(&node.mark, msg),
    }
}

/// The same error reached from many expanded stages (a bad profile value used by every
/// `matrix:` instance) is reported once, with the stages that share it in a note. Only errors
/// pointing outside the pipeline file are merged: those are the ones repeated per instance.
fn collapse_repeats(errors: Vec<SpecError>, pipeline: &Path) -> Vec<SpecError> {
    let mut out: Vec<SpecError> = Vec::new();
    let mut also: Vec<Vec<String>> = Vec::new();
    for e in errors {
        let key = e
            .mark
            .as_ref()
            .filter(|m| m.path() != pipeline)
            .map(|m| (m.path().to_path_buf(), m.line, m.col, e.message.clone()));
        let prev = key.as_ref().and_then(|k| {
            out.iter().position(|o| {
                o.mark
                    .as_ref()
                    .map(|m| (m.path().to_path_buf(), m.line, m.col, o.message.clone()))
                    .as_ref()
                    == Some(k)
            })
        });
        match prev {
            Some(i) => also[i].extend(e.stage),
            None => {
                out.push(e);
                also.push(Vec::new());
            }
        }
    }
    for (e, more) in out.iter_mut().zip(also) {
        if !more.is_empty() {
            let shown: Vec<_> = more.iter().take(4).cloned().collect();
            let rest = if more.len() > 4 {
                format!(", … ({} in all)", more.len())
            } else {
                String::new()
            };
            e.notes.push(format!(
                "also in {} more stages: {}{rest}",
                more.len(),
                shown.join(", ")
            ));
        }
    }
    out
}

/// `vars:` is a mapping, a file name, or a list of mappings and file names (merged in order);
/// each file read is added to `inputs`.
fn merge_vars_node(
    vars: &mut Json,
    origins: &mut Origins,
    node: &Node,
    (root, inputs): (&Path, &mut Vec<InputFile>),
    errors: &mut Vec<SpecError>,
) {
    match &node.value {
        Value::Map(_) => {
            record_origins(node, "", origins);
            deep_merge(vars, node.to_json())
        }
        Value::Scalar { text, .. } => {
            let path = root.join(text);
            let parsed = std::fs::read(&path)
                .map_err(|e| SpecError::plain(format!("cannot read {}: {e}", path.display())))
                .and_then(|bytes| {
                    inputs.push(InputFile::of(&path, &path, &bytes));
                    yaml::parse_bytes(&path, bytes)
                });
            match parsed {
                Ok(doc) if doc.as_map().is_some() || doc.is_null() => {
                    record_origins(&doc, "", origins);
                    deep_merge(vars, doc.to_json())
                }
                Ok(doc) => errors.push(SpecError::at(&doc.mark, "a vars file must hold a mapping")),
                Err(e) if e.mark.is_some() => errors.push(e),
                Err(_) => errors.push(SpecError::at(
                    &node.mark,
                    format!("cannot read vars file '{text}'"),
                )),
            }
        }
        Value::Seq(items) => items
            .iter()
            .for_each(|i| merge_vars_node(vars, origins, i, (root, &mut *inputs), errors)),
        Value::Null => {}
    }
}

/// The vars files named by `vars:` and by every profile (selected or not), normalised relative
/// to the workspace where they lie inside it.
fn vars_file_names(doc: &Node, root: &Path) -> Vec<String> {
    fn collect(node: &Node, root: &Path, out: &mut Vec<String>) {
        match &node.value {
            Value::Scalar { text, .. } => {
                let rel = Path::new(text)
                    .strip_prefix(root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| text.clone());
                if let Ok(n) = normalise(&rel, false) {
                    out.push(n);
                }
            }
            Value::Seq(items) => items.iter().for_each(|i| collect(i, root, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(v) = doc.get("vars") {
        collect(v, root, &mut out);
    }
    for (_, p) in doc
        .get("profiles")
        .and_then(Node::as_map)
        .unwrap_or_default()
    {
        collect(p, root, &mut out);
    }
    out
}

/// Merge `src` into `dst`: mappings recursively, anything else replaces.
pub fn deep_merge(dst: &mut Json, src: Json) {
    match (dst, src) {
        (Json::Object(d), Json::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(&k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        d.insert(k, v);
                    }
                }
            }
        }
        (d, s) => *d = s,
    }
}

/// Set an existing variable (checked by [`check_override`]); list items are named by index.
fn set_dotted(vars: &mut Json, key: &str, value: Json) {
    let mut cur = vars;
    for p in key.split('.') {
        let next = match cur {
            Json::Object(m) => m.get_mut(p),
            Json::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    *cur = value;
}

/// A `--set KEY=…` must name a variable that exists and holds a single value.
fn check_override(vars: &Json, key: &str) -> Result<(), SpecError> {
    let what = format!("--set {key}=…");
    let mut cur = vars;
    for (i, p) in key.split('.').enumerate() {
        let next = match cur {
            Json::Object(m) => m.get(p),
            Json::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => {
                let parent = key.split('.').take(i).collect::<Vec<_>>().join(".");
                return Err(SpecError::plain(format!(
                    "{what}: `{parent}` is a single value, it has no `{p}`"
                )));
            }
        };
        let Some(next) = next else {
            let names = dotted_names(vars);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut e = SpecError::plain(format!("{what}: there is no variable `{key}`"));
            if let Some(s) = error::suggest(key, &refs) {
                e = e.note(format!("did you mean `{s}`?"));
            }
            return Err(e.note(
                "--set changes a variable defined under `vars:` (or in the profile's vars file); \
                 define it there first",
            ));
        };
        cur = next;
    }
    match cur {
        Json::Object(_) | Json::Array(_) => Err(SpecError::plain(format!(
            "{what}: `{key}` is a {}; --set replaces a single value such as `{}`",
            if cur.is_object() { "mapping" } else { "list" },
            dotted_names(cur)
                .first()
                .map(|n| format!("{key}.{n}"))
                .unwrap_or_else(|| format!("{key}.0")),
        ))),
        _ => Ok(()),
    }
}

/// Every single-valued variable's dotted name (`train.lr`, `datasets.0`), for suggestions.
fn dotted_names(v: &Json) -> Vec<String> {
    fn walk(v: &Json, prefix: &str, out: &mut Vec<String>) {
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            Json::Object(m) => m.iter().for_each(|(k, v)| walk(v, &join(k), out)),
            Json::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, &join(&i.to_string()), out)),
            _ if !prefix.is_empty() => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// How many stages a pipeline may expand to unless raised (`--max-stages`, `REPRO_MAX_STAGES`):
/// ten times the largest pipeline measured, small enough to fail long before memory runs out.
pub const DEFAULT_MAX_STAGES: usize = 100_000;

fn max_stages(opts: &LoadOptions) -> Result<usize, SpecError> {
    if let Some(n) = opts.max_stages {
        return Ok(n);
    }
    match std::env::var("REPRO_MAX_STAGES") {
        Err(_) => Ok(DEFAULT_MAX_STAGES),
        Ok(v) => v.trim().parse().map_err(|_| {
            SpecError::plain(format!(
                "REPRO_MAX_STAGES must be a whole number of stages, not '{v}'"
            ))
        }),
    }
}

/// Bounds on what expanding stages may produce.
#[derive(Clone, Copy)]
struct Limit {
    max_stages: usize,
}

impl Limit {
    /// Refuse `n` more stages when `have` exist already (checked before building any).
    fn check(self, n: usize, have: usize, mark: &Mark, what: &str) -> Result<(), SpecError> {
        if have.saturating_add(n) <= self.max_stages {
            return Ok(());
        }
        let n = if n == usize::MAX {
            "more than 2^64".to_string()
        } else {
            n.to_string()
        };
        Err(SpecError::at(
            mark,
            format!(
                "{what} expands to {n} stages, over the limit of {} for the whole pipeline{}",
                self.max_stages,
                if have > 0 {
                    format!(" ({have} before this one)")
                } else {
                    String::new()
                }
            ),
        )
        .note("if so many are really meant, raise the limit with --max-stages N or REPRO_MAX_STAGES=N"))
    }
}

/// Expand one stage definition (its foreach/matrix items) into concrete stages; `expanded`
/// counts the stages of the whole pipeline. False when that went over the limit.
fn expand_stage(
    name: &str,
    key: &Node,
    body: &Node,
    (vars, origins, kinds): (&Json, &Origins, &Registry),
    (limit, expanded): (Limit, &mut usize),
    out: &mut Vec<Stage>,
    errors: &mut Vec<SpecError>,
) -> bool {
    let Some(entries) = body.as_map() else {
        errors.push(
            SpecError::at(
                &body.mark,
                format!("stage must be a mapping, found {}", body.type_name()),
            )
            .in_stage(name),
        );
        return true;
    };
    for (k, _) in entries {
        let kk = k.as_str().unwrap_or_default();
        if !STAGE_KEYS.contains(&kk) {
            errors.push(unknown_key(k, kk, STAGE_KEYS, "stage key").in_stage(name));
        }
    }
    let base = Scope {
        vars,
        locals: Vec::new(),
    };
    // Limit errors point at the `foreach:` / `matrix:` key (a block mapping's own mark is odd).
    let key_mark = |field: &str| -> Mark {
        entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(field))
            .map_or(&key.mark, |(k, _)| &k.mark)
            .clone()
    };
    let instances: Vec<(String, Vec<(&'static str, Json)>)> =
        match (body.get("foreach"), body.get("matrix")) {
            (Some(f), Some(_)) => {
                errors.push(
                    SpecError::at(
                        &f.mark,
                        "a stage has either `foreach:` or `matrix:`, not both",
                    )
                    .in_stage(name),
                );
                return true;
            }
            (Some(f), None) => match interpolate_node(f, &base) {
                Err(e) => {
                    errors.push(e.in_stage(name));
                    return true;
                }
                Ok(Json::Array(items)) => {
                    if let Err(e) =
                        limit.check(items.len(), *expanded, &key_mark("foreach"), "`foreach:`")
                    {
                        errors.push(e.in_stage(name));
                        return false;
                    }
                    items
                        .into_iter()
                        .map(|item| {
                            (
                                format!("{name}@{}", item_label(&item)),
                                vec![("item", item)],
                            )
                        })
                        .collect()
                }
                Ok(Json::Object(map)) => {
                    if let Err(e) =
                        limit.check(map.len(), *expanded, &key_mark("foreach"), "`foreach:`")
                    {
                        errors.push(e.in_stage(name));
                        return false;
                    }
                    map.into_iter()
                        .map(|(k, v)| {
                            (
                                format!("{name}@{k}"),
                                vec![("key", Json::String(k)), ("item", v)],
                            )
                        })
                        .collect()
                }
                Ok(_) => {
                    errors.push(
                        SpecError::at(&f.mark, "`foreach:` must be a list or a mapping")
                            .in_stage(name),
                    );
                    return true;
                }
            },
            (None, Some(m)) => match interpolate_node(m, &base) {
                Err(e) => {
                    errors.push(e.in_stage(name));
                    return true;
                }
                Ok(Json::Object(axes)) => {
                    // Axes in the order written (the JSON map may be sorted).
                    let order: Vec<String> = match m.as_map() {
                        Some(entries) => entries
                            .iter()
                            .filter_map(|(k, _)| k.as_str().map(String::from))
                            .collect(),
                        None => axes.keys().cloned().collect(),
                    };
                    let mut total: usize = 1;
                    for axis in &order {
                        let Json::Array(values) = &axes[axis] else {
                            errors.push(
                                SpecError::at(
                                    &m.mark,
                                    format!("matrix axis '{axis}' must be a list"),
                                )
                                .in_stage(name),
                            );
                            return true;
                        };
                        total = total.saturating_mul(values.len());
                    }
                    // Counted before building: 8 axes of 10 values must not allocate 10^8.
                    if let Err(e) = limit.check(total, *expanded, &key_mark("matrix"), "`matrix:`")
                    {
                        errors.push(e.in_stage(name));
                        return false;
                    }
                    let mut combos: Vec<serde_json::Map<String, Json>> = vec![Default::default()];
                    for axis in &order {
                        let Json::Array(values) = &axes[axis] else {
                            continue;
                        };
                        combos = combos
                            .into_iter()
                            .flat_map(|c| {
                                values.iter().map(move |v| {
                                    let mut c = c.clone();
                                    c.insert(axis.clone(), v.clone());
                                    c
                                })
                            })
                            .collect();
                    }
                    combos
                        .into_iter()
                        .map(|c| {
                            let label: Vec<String> =
                                order.iter().map(|a| item_label(&c[a])).collect();
                            (
                                format!("{name}@{}", label.join(",")),
                                vec![("item", Json::Object(c))],
                            )
                        })
                        .collect()
                }
                Ok(_) => {
                    errors.push(
                        SpecError::at(&m.mark, "`matrix:` must be a mapping of axis → list")
                            .in_stage(name),
                    );
                    return true;
                }
            },
            (None, None) => {
                if let Err(e) = limit.check(1, *expanded, &key.mark, "this stage") {
                    errors.push(e.in_stage(name));
                    return false;
                }
                vec![(name.to_string(), Vec::new())]
            }
        };
    *expanded += instances.len();
    for (full, locals) in instances {
        let scope = Scope { vars, locals };
        match build_stage(&full, key, body, &scope, (origins, kinds)) {
            Ok(s) => out.push(s),
            Err(mut es) => {
                for e in es.drain(..) {
                    errors.push(e.in_stage(&full));
                }
            }
        }
    }
    true
}

/// How an item names its expanded stage: scalars as themselves, mappings by their values.
fn item_label(item: &Json) -> String {
    match item {
        Json::Object(m) => m.values().map(item_label).collect::<Vec<_>>().join(","),
        Json::Array(a) => a.iter().map(item_label).collect::<Vec<_>>().join(","),
        other => interp::scalar_text(other).unwrap_or_else(|| "null".into()),
    }
}

fn build_stage(
    name: &str,
    key: &Node,
    body: &Node,
    scope: &Scope,
    (origins, kinds): (&Origins, &Registry),
) -> Result<Stage, Vec<SpecError>> {
    let mut errors = Vec::new();
    let cmd = match body.get("cmd") {
        // Values spliced into a command are quoted as shell words (see `shell`).
        Some(
            node @ Node {
                value: Value::Scalar { text, plain },
                ..
            },
        ) => match interp::interpolate_cmd(text, &node.mark, !plain, scope) {
            Ok(c) => Some((c, node.mark.clone())),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        _ => string_field(body, "cmd", scope, &mut errors),
    };
    let uses = string_field(body, "uses", scope, &mut errors);
    let checkpoint = string_field(body, "checkpoint", scope, &mut errors);
    let desc = string_field(body, "desc", scope, &mut errors).map(|(s, _)| s);

    let action = match (cmd, uses) {
        (Some(_), Some((_, m))) => {
            errors.push(SpecError::at(
                &m,
                "a stage has either `cmd:` or `uses:`, not both",
            ));
            None
        }
        (Some((c, m)), None) => {
            if body.get("with").is_some() {
                errors.push(SpecError::at(
                    &body.get("with").unwrap().mark,
                    "`with:` only applies to `uses:` stages",
                ));
            }
            if c.trim().is_empty() {
                errors.push(SpecError::at(&m, "`cmd:` is empty"));
            }
            Some(Action::Cmd(c))
        }
        (None, Some((kind, m))) => {
            let with = match body.get("with") {
                None => Json::Object(Default::default()),
                Some(w) => match interpolate_node(w, scope) {
                    Ok(v @ Json::Object(_)) => v,
                    Ok(_) => {
                        errors.push(SpecError::at(
                            &w.mark,
                            "`with:` must be a mapping of parameters",
                        ));
                        Json::Null
                    }
                    Err(e) => {
                        errors.push(e);
                        Json::Null
                    }
                },
            };
            let mut resolved = Resolved {
                version: 0,
                writes: Vec::new(),
                metrics: Vec::new(),
            };
            if !kinds.names().contains(&kind.as_str()) {
                if let Err(e) = kinds.resolve(&kind, &with) {
                    errors.push(SpecError::at(&m, e.to_string()));
                }
            } else if with.is_object() {
                match kinds.resolve(&kind, &with) {
                    Ok(r) => resolved = r,
                    Err(e) => {
                        let msg = format!("invalid parameters for `{kind}`: {e:#}");
                        errors.push(locate_param_error(
                            body.get("with"),
                            &m,
                            msg,
                            scope,
                            origins,
                        ));
                    }
                }
            }
            Some(Action::Uses {
                kind,
                with,
                resolved,
            })
        }
        (None, None) => {
            errors.push(SpecError::at(
                &key.mark,
                "stage has neither `cmd:` nor `uses:`",
            ));
            None
        }
    };

    let deps = path_list(body, "deps", scope, true, &mut errors);
    let mut outs = path_list(body, "outs", scope, false, &mut errors);
    // A metrics file is an output: listing it under `outs:` as well is allowed, not needed.
    let metrics = path_list(body, "metrics", scope, false, &mut errors);
    for m in &metrics {
        if !outs.iter().any(|o| o.path == m.path) {
            outs.push(m.clone());
        }
    }

    let mut params = BTreeMap::new();
    if let Some(p) = body.get("params") {
        match p.as_seq() {
            None => errors.push(SpecError::at(
                &p.mark,
                "`params:` must be a list of variable names",
            )),
            Some(items) => {
                for item in items {
                    let Some(k) = item.as_str() else {
                        errors.push(SpecError::at(
                            &item.mark,
                            "a param must be a variable name such as `train.lr`",
                        ));
                        continue;
                    };
                    match scope.lookup(k) {
                        Some(v) => {
                            params.insert(k.to_string(), v.clone());
                        }
                        None => errors.push(SpecError::at(
                            &item.mark,
                            format!("param `{k}` is not defined in vars"),
                        )),
                    }
                }
            }
        }
    }

    let resources = match body.get("resources") {
        None => Resources {
            cpus: 1,
            ..Default::default()
        },
        Some(r) => parse_resources(r, scope, &mut errors),
    };

    if let Some((cp, m)) = &checkpoint
        && let Err(msg) = normalise(cp, false)
    {
        errors.push(SpecError::at(m, format!("checkpoint: {msg}")));
    }

    match (action, errors.is_empty()) {
        (Some(action), true) => Ok(Stage {
            name: name.to_string(),
            action,
            deps,
            outs,
            params,
            resources,
            checkpoint_mark: checkpoint.as_ref().map(|(_, m)| m.clone()),
            checkpoint: checkpoint.map(|(c, _)| normalise(&c, false).unwrap_or(c)),
            with_marks: body
                .get("with")
                .and_then(Node::as_map)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.mark.clone())))
                        .collect()
                })
                .unwrap_or_default(),
            desc,
            metrics,
            mark: key.mark.clone(),
        }),
        _ => Err(errors),
    }
}

/// A field that must interpolate to one scalar, as text with where it was written.
fn string_field(
    body: &Node,
    field: &str,
    scope: &Scope,
    errors: &mut Vec<SpecError>,
) -> Option<(String, Mark)> {
    let node = body.get(field)?;
    match interpolate_node(node, scope) {
        Ok(Json::String(s)) => Some((s, node.mark.clone())),
        Ok(other) => match interp::scalar_text(&other) {
            Some(s) => Some((s, node.mark.clone())),
            None => {
                errors.push(SpecError::at(
                    &node.mark,
                    format!("`{field}:` must be a string"),
                ));
                None
            }
        },
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

fn path_list(
    body: &Node,
    field: &str,
    scope: &Scope,
    allow_absolute: bool,
    errors: &mut Vec<SpecError>,
) -> Vec<PathRef> {
    let Some(node) = body.get(field) else {
        return Vec::new();
    };
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Scalar { .. } => vec![node],
        Value::Null => Vec::new(),
        Value::Map(_) => {
            errors.push(SpecError::at(
                &node.mark,
                format!("`{field}:` must be a list of paths"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for item in items {
        let values = match interpolate_node(item, scope) {
            Ok(Json::Array(a)) => a,
            // A dep that is a variable set to null is no dep (an optional input, such as
            // `init_from` weights that only some profiles have).
            Ok(Json::Null) if field == "deps" => continue,
            Ok(v) => vec![v],
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for v in values {
            let Some(text) = interp::scalar_text(&v) else {
                errors.push(SpecError::at(
                    &item.mark,
                    format!("`{field}:` entries must be paths"),
                ));
                continue;
            };
            match normalise(&text, allow_absolute) {
                Ok(path) => out.push(PathRef {
                    path,
                    mark: item.mark.clone(),
                }),
                Err(msg) => errors.push(SpecError::at(&item.mark, format!("{field}: {msg}"))),
            }
        }
    }
    out
}

/// Normalise a workspace path: no `.`, no trailing `/`, no escaping `..`.
pub fn normalise(p: &str, allow_absolute: bool) -> Result<String, String> {
    let path = Path::new(p);
    if path.is_absolute() {
        return if allow_absolute {
            Ok(p.trim_end_matches('/').to_string())
        } else {
            Err(format!(
                "'{p}' is absolute; outputs must be inside the workspace"
            ))
        };
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(format!("'{p}' points outside the workspace"));
                }
            }
            Component::Normal(s) => {
                parts.push(s.to_str().ok_or_else(|| format!("'{p}' is not UTF-8"))?)
            }
            _ => return Err(format!("'{p}' is not a plain relative path")),
        }
    }
    if parts.is_empty() {
        return Err(format!("'{p}' names the workspace itself"));
    }
    Ok(parts.join("/"))
}

fn parse_resources(r: &Node, scope: &Scope, errors: &mut Vec<SpecError>) -> Resources {
    let mut res = Resources {
        cpus: 1,
        ..Default::default()
    };
    let Some(entries) = r.as_map() else {
        errors.push(SpecError::at(
            &r.mark,
            "`resources:` must be a mapping such as {cpus: 2, gpu: 1}",
        ));
        return res;
    };
    for (k, v) in entries {
        let key = k.as_str().unwrap_or_default();
        if !RESOURCE_KEYS.contains(&key) {
            errors.push(unknown_key(k, key, RESOURCE_KEYS, "resource"));
            continue;
        }
        let value = match interpolate_node(v, scope) {
            Ok(x) => x,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let as_count = |value: &Json| value.as_u64().map(|n| n as usize);
        match key {
            "cpus" => match as_count(&value) {
                Some(n) if n >= 1 => res.cpus = n,
                _ => errors.push(SpecError::at(&v.mark, "`cpus:` must be a whole number ≥ 1")),
            },
            "gpu" | "gpus" => match as_count(&value) {
                Some(n) => res.gpus = n,
                None => errors.push(SpecError::at(
                    &v.mark,
                    format!("`{key}:` must be a whole number"),
                )),
            },
            "mem" => match parse_mem(&value) {
                Some(mb) => res.mem_mb = Some(mb),
                None => errors.push(SpecError::at(
                    &v.mark,
                    "`mem:` must be like 4096 (MiB), 512M or 8G",
                )),
            },
            "time" => match parse_seconds(&value) {
                Some(secs) => {
                    res.time_min = Some(secs.div_ceil(60));
                    res.time_s = Some(secs);
                }
                None => errors.push(SpecError::at(
                    &v.mark,
                    "`time:` must be minutes (90) or H:MM:SS",
                )),
            },
            "partition" => res.partition = interp::scalar_text(&value),
            _ => {}
        }
    }
    res
}

fn parse_mem(v: &Json) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1.0 / 1024.0),
        'M' | 'm' => (&s[..s.len() - 1], 1.0),
        'G' | 'g' => (&s[..s.len() - 1], 1024.0),
        'T' | 't' => (&s[..s.len() - 1], 1024.0 * 1024.0),
        _ => (s, 1.0),
    };
    let n: f64 = num.parse().ok()?;
    Some((n * mult).ceil() as u64)
}

/// `time:` in seconds: minutes (90), M:SS or H:MM:SS.
fn parse_seconds(v: &Json) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n * 60);
    }
    let parts: Vec<u64> = v
        .as_str()?
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let secs = match parts.as_slice() {
        [m] => m * 60,
        [h, m, s] => h * 3600 + m * 60 + s,
        [m, s] => m * 60 + s,
        _ => return None,
    };
    Some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Pipeline, SpecErrors> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pipeline.yaml");
        std::fs::write(&f, text).unwrap();
        load(&f, &LoadOptions::default())
    }

    #[test]
    fn foreach_and_matrix_expand_with_readable_names() {
        let p = load_text(
            "vars:\n  losses: [soft-d, bce-nu]\nstages:\n  a:\n    foreach: ${losses}\n    cmd: echo ${item} > out/${item}\n    outs: [\"out/${item}\"]\n  b:\n    matrix: {model: [cnn, mlp], loss: \"${losses}\"}\n    cmd: echo ${item.model} ${item.loss}\n",
        )
        .unwrap();
        let names: Vec<_> = p.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "a@soft-d",
                "a@bce-nu",
                "b@cnn,soft-d",
                "b@cnn,bce-nu",
                "b@mlp,soft-d",
                "b@mlp,bce-nu"
            ]
        );
        assert_eq!(
            p.stages[1].action,
            Action::Cmd("echo bce-nu > out/bce-nu".into())
        );
        assert_eq!(p.stages[1].outs[0].path, "out/bce-nu");
    }

    #[test]
    fn misspelled_key_is_reported_with_position_and_hint() {
        let e = load_text("stages:\n  a:\n    cmd: echo\n    dep: [x]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown stage key 'dep'"), "{e}");
        assert!(e.contains("pipeline.yaml:4:5"), "{e}");
        assert!(e.contains("did you mean 'deps'"), "{e}");
        assert!(e.contains("in stage 'a'"), "{e}");
        assert!(e.contains("    dep: [x]"), "{e}");
    }

    #[test]
    fn params_take_values_from_vars() {
        let p = load_text("vars:\n  train: {lr: 0.1, epochs: 2}\nstages:\n  a:\n    cmd: echo\n    params: [train.lr]\n").unwrap();
        assert_eq!(
            p.stages[0].params.get("train.lr"),
            Some(&serde_json::json!(0.1))
        );
        let e = load_text("vars: {}\nstages:\n  a:\n    cmd: echo\n    params: [nope]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("param `nope` is not defined"), "{e}");
    }

    #[test]
    fn conflicting_and_missing_fields() {
        let e = load_text("stages:\n  a:\n    cmd: echo\n    uses: train\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("either `cmd:` or `uses:`"), "{e}");
        let e = load_text("stages:\n  a:\n    deps: [x]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither `cmd:` nor `uses:`"), "{e}");
    }

    #[test]
    fn paths_are_normalised_and_outputs_stay_inside() {
        assert_eq!(normalise("./a/b/../c/", false).unwrap(), "a/c");
        assert!(normalise("../x", false).is_err());
        assert!(normalise("/abs", false).is_err());
        assert_eq!(normalise("/usr/share/x", true).unwrap(), "/usr/share/x");
    }

    #[test]
    fn metrics_are_outputs_too() {
        let p = load_text(
            "stages:\n  a:\n    cmd: echo\n    outs: [m.json]\n    metrics: [m.json, n.json]\n",
        )
        .unwrap();
        let s = &p.stages[0];
        let outs: Vec<_> = s.outs.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(outs, ["m.json", "n.json"]);
        assert_eq!(s.metrics.len(), 2);
        assert!(load_text("stages:\n  a:\n    cmd: echo\n    metrics: [../m.json]\n").is_err());
    }

    #[test]
    fn resources_parse() {
        let p = load_text("stages:\n  a:\n    cmd: echo\n    resources: {cpus: 2, gpu: 1, mem: 8G, time: '1:30:00'}\n").unwrap();
        let r = &p.stages[0].resources;
        assert_eq!(
            (r.cpus, r.gpus, r.mem_mb, r.time_min),
            (2, 1, Some(8192), Some(90))
        );
    }

    fn load_with(text: &str, opts: &LoadOptions) -> Result<Pipeline, SpecErrors> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pipeline.yaml");
        std::fs::write(&f, text).unwrap();
        load(&f, opts)
    }

    fn set(pairs: &[(&str, &str)]) -> LoadOptions {
        LoadOptions {
            overrides: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn set_must_name_an_existing_single_value() {
        let text = "vars:\n  train: {lr: 0.1, epochs: 2}\n  datasets: [a, b]\nstages:\n  a:\n    cmd: echo ${train.lr} ${datasets.1}\n";
        let p = load_with(text, &set(&[("train.lr", "0.5"), ("datasets.1", "c")])).unwrap();
        assert_eq!(p.stages[0].action, Action::Cmd("echo 0.5 c".into()));
        for (key, want) in [
            ("train.lrr", "did you mean `train.lr`?"),
            ("nothing", "there is no variable `nothing`"),
            ("train", "`train` is a mapping"),
            ("datasets", "`datasets` is a list"),
            ("train.lr.x", "`train.lr` is a single value"),
            ("datasets.5", "there is no variable `datasets.5`"),
        ] {
            let e = load_with(text, &set(&[(key, "1")]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{key}: {e}");
        }
    }

    #[test]
    fn expansion_is_bounded_before_anything_is_built() {
        let axes: String = (0..8)
            .map(|i| format!("      a{i}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"))
            .collect();
        let text =
            format!("stages:\n  one:\n    cmd: echo\n  big:\n    matrix:\n{axes}    cmd: echo\n");
        let t = std::time::Instant::now();
        let e = load_with(&text, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(t.elapsed().as_secs() < 2, "{:?}", t.elapsed());
        assert!(e.contains("`matrix:` expands to 100000000 stages"), "{e}");
        assert!(
            e.contains("(1 before this one)") && e.contains("in stage 'big'"),
            "{e}"
        );
        assert!(
            e.contains("pipeline.yaml:5:5") && e.contains("--max-stages"),
            "{e}"
        );

        let small =
            "vars: {l: [1, 2, 3]}\nstages:\n  s:\n    foreach: ${l}\n    cmd: echo ${item}\n";
        let limited = |n| LoadOptions {
            max_stages: Some(n),
            ..Default::default()
        };
        let e = load_with(small, &limited(2)).unwrap_err().to_string();
        assert!(
            e.contains("`foreach:` expands to 3 stages, over the limit of 2"),
            "{e}"
        );
        assert_eq!(load_with(small, &limited(3)).unwrap().stages.len(), 3);
    }

    /// A kind for these tests, in the shape of `train`: `batch_size` must be at least 2.
    struct Batches;

    #[derive(serde::Deserialize)]
    struct BatchParams {
        out: PathBuf,
        batch_size: u64,
    }

    impl crate::kinds::Kind for Batches {
        type Params = BatchParams;
        fn name(&self) -> &'static str {
            "train"
        }
        fn version(&self) -> u32 {
            1
        }
        fn check(&self, p: &BatchParams) -> anyhow::Result<()> {
            anyhow::ensure!(
                p.batch_size >= 2,
                "parameter `batch_size` must be at least 2"
            );
            Ok(())
        }
        fn written_paths(&self, p: &BatchParams) -> Vec<(&'static str, PathBuf)> {
            vec![("out", p.out.clone())]
        }
    }

    #[test]
    fn a_bad_value_from_a_profile_points_at_the_profile_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prof.yaml"),
            "models: [mlp]\ntrain: {epochs: 1, batch_size: 1}\n",
        )
        .unwrap();
        let f = dir.path().join("pipeline.yaml");
        std::fs::write(
            &f,
            "profile: p\nprofiles: {p: prof.yaml}\nstages:\n  t:\n    foreach: ${models}\n    uses: train\n    with:\n      data: d\n      out: o/${item}\n      loss: soft-d\n      model: ${item}\n      batch_size: ${train.batch_size}\n",
        )
        .unwrap();
        let kinds = std::sync::Arc::new(Registry::default().with_elsewhere(Batches, "elsewhere"));
        let opts = LoadOptions {
            kinds: kinds.clone(),
            ..Default::default()
        };
        let e = load(&f, &opts).unwrap_err().to_string();
        assert!(e.contains("`batch_size` must be at least 2"), "{e}");
        assert!(e.contains("prof.yaml:2:32"), "{e}");
        assert!(e.contains("used by `batch_size:` at"), "{e}");
        assert!(e.contains("pipeline.yaml:12:19"), "{e}");
        let e = load(
            &f,
            &LoadOptions {
                profile: None,
                overrides: vec![("train.batch_size".into(), "0".into())],
                kinds,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--set train.batch_size=0"), "{e}");
    }

    #[test]
    fn a_null_dep_is_no_dep() {
        let p =
            load_text("vars: {w: null}\nstages:\n  a:\n    cmd: echo\n    deps: [\"${w}\", x]\n")
                .unwrap();
        let deps: Vec<_> = p.stages[0].deps.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(deps, ["x"]);
    }
}
