//! Pipeline specification: reads `pipeline.yaml` (and the vars files it names), expands
//! `foreach:` / `matrix:` stages, interpolates `${…}`, and checks every field, reporting each
//! problem with file:line:col, the stage, and the quoted line. Nothing here touches the
//! workspace's data; the DAG checks that need all stages at once live in `graph`.

pub(crate) mod cache_decl;
pub(crate) mod environ;
pub(crate) mod error;
mod expand;
pub(crate) mod interp;
pub(crate) mod plot_decl;
mod resources;
mod running;
mod shell;
pub(crate) mod slurm_decl;
mod stage;
pub(crate) mod yaml;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value as Json;

pub use error::{SpecError, SpecErrors};
use expand::{Limit, expand_stage, max_stages};
use interp::{Scope, interpolate_node, used_variables};
pub use resources::Resources;
use resources::parse_resources;
pub(crate) use running::Retry;
use stage::build_stage;
pub use stage::normalise;
use yaml::{Mark, Node, Value};

use crate::kinds::{Registry, Resolved};

/// The kind `cmd:` stages resolve to (`kinds::cmd` implements it).
pub(crate) const CMD_KIND: &str = "cmd";

/// A parsed, expanded, validated pipeline. Serialisable so that the checked plan can be kept
/// in the state database and reused while its inputs are unchanged (`crate::state::plan_cache`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Pipeline {
    /// Workspace root: the directory holding the pipeline file.
    pub root: PathBuf,
    /// The pipeline file, absolute.
    pub file: PathBuf,
    /// Merged variables (pipeline `vars:`, then the profile's).
    pub vars: Json,
    /// The profile applied (`--profile`), if any.
    pub profile: Option<String>,
    /// `executor:` (`local` or `slurm`), if set in the file or the profile's vars.
    pub executor: Option<String>,
    /// `slurm:` defaults (partition, …), passed to the Slurm executor.
    pub slurm: Json,
    /// `remote:`: the remote cache's URL (or a shared directory), see `crate::remote`.
    pub remote: Option<String>,
    /// `cache:`: link modes and a shared cache directory, see `crate::cache::links`.
    #[serde(default)]
    pub cache: cache_decl::CacheConfig,
    /// Every stage, expanded, in file order.
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

/// What a stage runs: a registered kind with its interpolated parameters, and what the
/// registry made of them at load time (key text or version, written paths, metric files).
/// `cmd: …` is the built-in kind `cmd` with the command line as its one parameter.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Action {
    pub kind: String,
    pub with: Json,
    pub resolved: Resolved,
}

impl Action {
    /// The action's part of the stage key: its text, and the parameters hashed beside it.
    pub fn key(&self) -> (String, Json) {
        match &self.resolved.key {
            Some(text) => (text.clone(), Json::Null),
            None => (
                format!("uses: {}@{}", self.kind, self.resolved.version),
                self.with.clone(),
            ),
        }
    }

    /// The command line of a `cmd:` stage (without what `env:` or `container:` wrap it in).
    pub fn command(&self) -> Option<&str> {
        (self.kind == CMD_KIND)
            .then(|| {
                self.with
                    .as_str()
                    .or_else(|| self.with.get("cmd")?.as_str())
            })
            .flatten()
    }
}

/// A path named by a stage, normalised relative to the workspace (or absolute, for deps
/// outside it such as `/usr/share/datasets/...`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PathRef {
    pub path: String,
    pub mark: Mark,
}

/// One stage of a pipeline, expanded and checked.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stage {
    /// Full name (`train@cnn,bce-nu` for expanded stages).
    pub name: String,
    /// What it runs: a `cmd:` command line or a kind with its `with:`.
    pub action: Action,
    /// Declared inputs.
    pub deps: Vec<PathRef>,
    /// Declared outputs.
    pub outs: Vec<PathRef>,
    /// Declared params with their values (sorted by key).
    pub params: BTreeMap<String, Json>,
    /// `resources:` (threads, memory, GPUs, time).
    pub resources: Resources,
    /// Directory that survives interruption (excluded from key and outs).
    pub checkpoint: Option<String>,
    /// Where `checkpoint:` is written, for errors about it.
    pub checkpoint_mark: Option<Mark>,
    /// Where each top-level `with:` parameter is written, for errors about its value.
    pub with_marks: BTreeMap<String, Mark>,
    /// `desc:`, for `repro dag` and `status`.
    pub desc: Option<String>,
    /// `metrics:` outputs (JSON files whose numbers `repro metrics`/`exp show` compare); each
    /// is also in `outs`.
    pub metrics: Vec<PathRef>,
    /// `plots:` outputs (series or images that `repro plots` draws); each is also in `outs`.
    #[serde(default)]
    pub plots: Vec<plot_decl::PlotDecl>,
    /// Outputs declared `{path: …, cache: false}`: never stored in the cache.
    #[serde(default)]
    pub uncached: Vec<String>,
    /// Where the stage is defined (its name in the file).
    pub mark: Mark,
    /// `env:`, `tools:` and `container:` (see `spec::environ`); empty for most stages.
    #[serde(default, skip_serializing_if = "environ::StageEnv::is_empty")]
    pub env: environ::StageEnv,
    /// `retry:` (none by default); not part of the key.
    #[serde(default)]
    pub retry: Retry,
    /// `executor: local`: run on this machine whatever the pipeline's executor; not part of
    /// the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// `verify: {ignore: [FILE:FIELD]}`: (output file, JSON field pattern) that `repro verify`
    /// ignores; not part of the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_ignore: Vec<(String, String)>,
}

impl Stage {
    /// The JSON fields `repro verify` ignores in each output, as (file, pattern): the stage's
    /// `verify: {ignore:}` and those its kind declares ([`crate::kinds::Kind::volatile`]).
    pub fn volatile_fields(&self) -> Vec<(String, String)> {
        let mut v = self.verify_ignore.clone();
        for (file, fields) in &self.action.resolved.volatile {
            for f in fields {
                let pair = (file.clone(), f.clone());
                if !v.contains(&pair) {
                    v.push(pair);
                }
            }
        }
        v
    }

    /// The outputs that hold metrics: its `metrics:` and those its kind declares (read by
    /// `compare` and recorded by the run cache).
    pub fn metric_paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self.metrics.iter().map(|m| m.path.clone()).collect();
        for m in &self.action.resolved.metrics {
            if !v.contains(m) {
                v.push(m.clone());
            }
        }
        v
    }
}

pub(crate) const TOP_KEYS: &[&str] = &[
    "vars", "stages", "profiles", "profile", "executor", "slurm", "remote", "cache",
];
pub(crate) const STAGE_KEYS: &[&str] = &[
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
    "plots",
    "env",
    "tools",
    "container",
    "retry",
    "executor",
    "verify",
];
/// Longest stage name (after expansion): `cache/logs/<name>.log` must fit a file name (255 bytes).
const MAX_STAGE_NAME: usize = 200;
pub(crate) const RESOURCE_KEYS: &[&str] = &["cpus", "gpu", "gpus", "mem", "time", "partition"];

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
    let slurm = doc.get("slurm").map_or(Json::Null, |n| {
        slurm_decl::check(n, &mut errors);
        n.to_json()
    });
    let remote = doc.get("remote").and_then(|n| match n.as_str() {
        Some(url) => {
            match crate::remote_url::check_url(&crate::remote_url::normalise(url, &root_dir).ok()?)
            {
                Ok(_) => Some(url.to_string()),
                Err(msg) => {
                    errors.push(SpecError::at(&n.mark, msg));
                    None
                }
            }
        }
        None => {
            errors.push(SpecError::at(
                &n.mark,
                format!("`remote:` must be a URL string, found {}", n.type_name()),
            ));
            None
        }
    });

    let cache = doc
        .get("cache")
        .map(|n| parse_cache(n, &mut errors))
        .unwrap_or_default();

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
            cache,
            stages,
            vars_files,
            inputs,
        })
    } else {
        Err(SpecErrors(errors))
    }
}

/// `cache: {link: [hardlink, copy], dir: /shared/cache}` (see `crate::cache::links`).
fn parse_cache(n: &Node, errors: &mut Vec<SpecError>) -> cache_decl::CacheConfig {
    use cache_decl::{CacheConfig, LinkMode, parse_list};
    let mut cfg = CacheConfig::default();
    let Some(entries) = n.as_map() else {
        errors.push(SpecError::at(
            &n.mark,
            format!(
                "`cache:` must be a mapping (link:, dir:), found {}",
                n.type_name()
            ),
        ));
        return cfg;
    };
    for (k, v) in entries {
        match k.as_str().unwrap_or_default() {
            "link" => {
                let names: Vec<&Node> = match &v.value {
                    Value::Seq(items) => items.iter().collect(),
                    _ => vec![v],
                };
                let texts: Option<Vec<&str>> = names.iter().map(|n| n.as_str()).collect();
                match texts.map(|t| parse_list(t.into_iter())) {
                    Some(Ok(list)) => cfg.link = Some(list),
                    Some(Err(bad)) => errors.push(SpecError::at(
                        &v.mark,
                        format!(
                            "unknown link mode '{bad}' in `cache: link:` (known: {})",
                            LinkMode::NAMES.join(", ")
                        ),
                    )),
                    None => errors.push(SpecError::at(
                        &v.mark,
                        "`cache: link:` must be a list of link modes",
                    )),
                }
            }
            "dir" => match v.as_str() {
                Some(d) if !d.is_empty() => cfg.dir = Some(d.to_string()),
                _ => errors.push(SpecError::at(&v.mark, "`cache: dir:` must be a path")),
            },
            other => errors.push(unknown_key(k, other, &["link", "dir"], "`cache:` key")),
        }
    }
    cfg
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

/// The origin of `name`, or of the nearest enclosing variable that has one, with that
/// variable's path.
fn origin_of<'o>(origins: &'o Origins, name: &str) -> Option<(&'o str, &'o Origin)> {
    let mut n = name;
    loop {
        if let Some((k, o)) = origins.get_key_value(n) {
            return Some((k.as_str(), o));
        }
        n = &n[..n.rfind('.')?];
    }
}

/// Point an error about a `with:` parameter at where its value came from: the profile or vars
/// line that set the variable (the pipeline line is named in a note), else the parameter's own
/// line, else `with:`. The parameter is the one the kind's error names by type
/// ([`crate::kinds::ParamError`], `param`): a `with:` key or a dotted path to a nested one,
/// followed as deep as the `with:` node goes. An error without one points at `with:`, whatever
/// words its message quotes.
fn locate_param_error(
    with: Option<&Node>,
    fallback: &Mark,
    msg: String,
    param: Option<&str>,
    scope: &Scope,
    origins: &Origins,
) -> SpecError {
    let Some(with) = with else {
        return SpecError::at(fallback, msg);
    };
    // The deepest node of the path that `with:` spells out; the segments past it are inside a
    // value that came whole from a variable (`optim: ${train.optim}`).
    let (mut node, mut found) = (with, Vec::new());
    let mut segs = param.unwrap_or_default().split('.').peekable();
    while let Some(n) = segs.peek().and_then(|s| param_child(node, s)) {
        node = n;
        found.extend(segs.next());
    }
    let rest: Vec<&str> = segs.collect();
    if found.is_empty() {
        return SpecError::at(&with.mark, msg);
    }
    let param = found.join(".");
    let used = used_variables(node, scope);
    let source = used.iter().rev().find_map(|name| {
        let local = name
            .split('.')
            .next()
            .is_some_and(|h| scope.locals.iter().any(|(l, _)| *l == h));
        let full = match rest.is_empty() {
            true => name.clone(),
            false => format!("{name}.{}", rest.join(".")),
        };
        (!local)
            .then(|| origin_of(origins, &full).map(|(key, o)| (name, key, o)))
            .flatten()
    });
    let here = format!(
        "{}:{}:{}",
        node.mark.path().display(),
        node.mark.line,
        node.mark.col
    );
    match source {
        Some((name, _, Origin::At(m))) => SpecError::at(m, msg).note(format!(
            "the value of `${{{name}}}` is set here and used by `{param}:` at {here}"
        )),
        Some((_, key, Origin::Set(v))) => {
            SpecError::at(&node.mark, msg).note(format!("the value comes from `--set {key}={v}`"))
        }
        None => SpecError::at(&node.mark, msg),
    }
}

/// One step of a parameter path: a mapping's key, or a list's index.
fn param_child<'n>(node: &'n Node, seg: &str) -> Option<&'n Node> {
    node.get(seg)
        .or_else(|| node.as_seq()?.get(seg.parse::<usize>().ok()?))
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
pub(crate) fn deep_merge(dst: &mut Json, src: Json) {
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
#[cfg(test)]
mod tests {
    use super::*;

    /// The message of a pipeline that must not load.
    fn load_err(text: &str) -> String {
        load_text(text).unwrap_err().to_string()
    }

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
            p.stages[1].action.command(),
            Some("echo bce-nu > out/bce-nu")
        );
        assert_eq!(p.stages[1].outs[0].path, "out/bce-nu");
    }

    #[test]
    fn misspelled_key_is_reported_with_position_and_hint() {
        let e = load_err("stages:\n  a:\n    cmd: echo\n    dep: [x]\n");
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
        let e = load_err("vars: {}\nstages:\n  a:\n    cmd: echo\n    params: [nope]\n");
        assert!(e.contains("param `nope` is not defined"), "{e}");
    }

    #[test]
    fn conflicting_and_missing_fields() {
        let e = load_err("stages:\n  a:\n    cmd: echo\n    uses: train\n");
        assert!(e.contains("either `cmd:` or `uses:`"), "{e}");
        let e = load_err("stages:\n  a:\n    deps: [x]\n");
        assert!(e.contains("neither `cmd:` nor `uses:`"), "{e}");
    }

    #[test]
    fn cmd_is_the_built_in_kind_keyed_on_its_text() {
        let p = load_text("stages:\n  a:\n    cmd: echo hi\n").unwrap();
        let a = &p.stages[0].action;
        assert_eq!(a.kind, "cmd");
        // The same key text as before `cmd` became a kind: existing locks stay fresh.
        assert_eq!(a.key(), ("cmd: echo hi".to_string(), Json::Null));
        let e = load_err("stages:\n  a:\n    cmd: '  '\n");
        assert!(
            e.contains("pipeline.yaml:3:10") && e.contains("`cmd:` is empty"),
            "{e}"
        );
        // Through `uses:`, spliced values would not be quoted as shell words.
        let e = load_err("stages:\n  a:\n    uses: cmd\n    with: {run: echo}\n");
        assert!(e.contains("write a shell command as `cmd: …`"), "{e}");
        let e = load_err("stages:\n  a:\n    uses: tarin\n");
        assert!(e.contains("this program registers no kinds"), "{e}");
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
        assert_eq!(p.stages[0].action.command(), Some("echo 0.5 c"));
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
            crate::ensure_param!(
                p.batch_size >= 2,
                "batch_size",
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

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Optim {
        lr: f64,
        momentum: f64,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NestParams {
        out: PathBuf,
        optim: Optim,
    }

    /// A kind with a nested parameter: `optim.lr` must be positive (a typed error); `out: bad`
    /// is refused by a message that quotes `out` but names no parameter by type.
    struct Nest;

    impl crate::kinds::Kind for Nest {
        type Params = NestParams;
        fn name(&self) -> &'static str {
            "nest"
        }
        fn version(&self) -> u32 {
            1
        }
        fn check(&self, p: &NestParams) -> anyhow::Result<()> {
            crate::ensure_param!(p.optim.lr > 0.0, "optim.lr", "`lr` must be positive");
            crate::ensure_param!(p.optim.momentum < 1.0, "optim.momentum", "`momentum` < 1");
            anyhow::ensure!(p.out != Path::new("bad"), "`out` may not be 'bad'");
            Ok(())
        }
        fn written_paths(&self, p: &NestParams) -> Vec<(&'static str, PathBuf)> {
            vec![("out", p.out.clone())]
        }
    }

    /// The one error of loading a `nest` stage whose `with:` lines are `with`, after `vars:`
    /// lines `vars`: (line, column, message, notes).
    fn nest_error(vars: &str, with: &str) -> (usize, usize, String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pipeline.yaml");
        let text = format!("vars:\n{vars}stages:\n  n:\n    uses: nest\n    with:\n{with}");
        std::fs::write(&f, text).unwrap();
        let opts = LoadOptions {
            kinds: std::sync::Arc::new(Registry::default().with_elsewhere(Nest, "elsewhere")),
            ..Default::default()
        };
        let mut errors = load(&f, &opts).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = errors.remove(0);
        let m = e.mark.expect("a line");
        assert_eq!(m.path(), Path::new("pipeline.yaml"), "{}", e.message);
        (m.line, m.col, e.message, e.notes)
    }

    #[test]
    fn a_typed_parameter_error_points_at_the_nested_line_and_quoted_words_do_not() {
        let vars = "  x: 1\n";
        // The with: lines start at line 7 (after vars:, x:, stages:, n:, uses: and with:).
        let (line, col, msg, _) = nest_error(
            vars,
            "      out: o\n      optim:\n        lr: -1\n        momentum: 0.9\n",
        );
        assert_eq!((line, col), (9, 13), "at `lr:`'s value: {msg}");
        assert!(msg.ends_with("`lr` must be positive"), "{msg}");
        // `out` is a with: key quoted in the message, but the error names no parameter by
        // type: it is at `with:` (yaml-rust2 marks a block mapping at its first key's colon,
        // 7:10), not at `out:`'s value (7:12) as when words were scraped from messages.
        let (line, col, msg, _) = nest_error(
            vars,
            "      out: bad\n      optim: {lr: 1, momentum: 0.9}\n",
        );
        assert!(msg.contains("`out` may not be 'bad'"), "{msg}");
        assert_eq!((line, col), (7, 10), "{msg}");
    }

    #[test]
    fn deserialization_errors_point_at_their_parameter() {
        let vars = "  x: 1\n";
        let at = |with: &str| {
            let (line, col, msg, _) = nest_error(vars, with);
            (line, col, msg)
        };
        // Unknown nested field: at its value.
        let (line, col, msg) =
            at("      out: o\n      optim:\n        lr: 1\n        momentun: 0.9\n");
        assert!(msg.contains("unknown field `momentun`"), "{msg}");
        assert_eq!((line, col), (10, 19), "{msg}");
        // Wrong type: at the value.
        let (line, col, msg) =
            at("      out: o\n      optim:\n        lr: fast\n        momentum: 0.9\n");
        assert!(msg.contains("invalid type"), "{msg}");
        assert_eq!((line, col), (9, 13), "{msg}");
        // A missing nested field: at the mapping that lacks it (marked at its first key's colon).
        let (line, col, msg) = at("      out: o\n      optim:\n        lr: 1\n");
        assert!(msg.contains("missing field `momentum`"), "{msg}");
        assert_eq!((line, col), (9, 11), "{msg}");
        // A missing top-level field: at `with:`.
        let (line, col, msg) = at("      optim: {lr: 1, momentum: 0.9}\n");
        assert!(msg.contains("missing field `out`"), "{msg}");
        assert_eq!((line, col), (7, 12), "{msg}");
    }

    #[test]
    fn a_nested_parameter_inside_a_variable_points_at_the_vars_line() {
        // `optim:` is one `${…}`: the error at `optim.lr` points at `lr:` under `vars:`.
        let (line, col, msg, notes) = nest_error(
            "  train:\n    optim: {momentum: 0.9,\n      lr: -1}\n",
            "      out: o\n      optim: ${train.optim}\n",
        );
        assert!(msg.ends_with("`lr` must be positive"), "{msg}");
        assert_eq!((line, col), (4, 11), "{msg}");
        assert!(
            notes[0]
                .starts_with("the value of `${train.optim}` is set here and used by `optim:` at")
                && notes[0].ends_with("pipeline.yaml:10:14"),
            "{notes:?}"
        );
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
