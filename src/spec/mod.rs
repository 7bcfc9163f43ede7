//! Pipeline specification: reads `pipeline.yaml` (and the vars files it names), expands
//! `foreach:` / `matrix:` stages, interpolates `${…}`, and checks every field, reporting each
//! problem with file:line:col, the stage, and the quoted line. Nothing here touches the
//! workspace's data; the DAG checks that need all stages at once live in `graph`.

pub mod error;
pub mod interp;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value as Json;

pub use error::{SpecError, SpecErrors};
use interp::{Scope, interpolate_node, used_variables};
use yaml::{Mark, Node, Value};

use crate::executor::Resources;

/// A parsed, expanded, validated pipeline.
#[derive(Debug)]
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
    pub stages: Vec<Stage>,
}

/// What a stage runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A shell command (`sh -c`).
    Cmd(String),
    /// A built-in kind with its resolved `with:` parameters.
    Uses { kind: String, with: Json },
}

/// A path named by a stage, normalised relative to the workspace (or absolute, for deps
/// outside it such as `/usr/share/datasets/...`).
#[derive(Debug, Clone)]
pub struct PathRef {
    pub path: String,
    pub mark: Mark,
}

#[derive(Debug, Clone)]
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
    pub desc: Option<String>,
    /// Where the stage is defined (its name in the file).
    pub mark: Mark,
}

const TOP_KEYS: &[&str] = &["vars", "stages", "profiles", "profile", "executor", "slurm"];
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
];
const RESOURCE_KEYS: &[&str] = &["cpus", "gpu", "gpus", "mem", "time", "partition"];

/// Options that select what to load.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// `--profile NAME`; falls back to the file's `profile:`.
    pub profile: Option<String>,
    /// `--set a.b=value` overrides applied last.
    pub overrides: Vec<(String, String)>,
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
    absolute(file).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Load and validate a pipeline file. Every problem found is reported at once.
pub fn load(file: &Path, opts: &LoadOptions) -> Result<Pipeline, SpecErrors> {
    let file = absolute(file);
    let root_dir = workspace_root(&file);
    let display = file
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| file.clone());
    let text = std::fs::read_to_string(&file).map_err(|e| {
        SpecErrors(vec![SpecError::plain(format!(
            "cannot read {}: {e}",
            file.display()
        ))])
    })?;
    let doc = yaml::parse_str(&display, text).map_err(|e| SpecErrors(vec![e]))?;
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
        merge_vars_node(&mut vars, &mut origins, v, &root_dir, &mut errors);
    }
    let profile = opts.profile.clone().or_else(|| {
        doc.get("profile")
            .and_then(|p| p.as_str())
            .map(String::from)
    });
    if let Some(name) = &profile {
        match doc.get("profiles").and_then(|p| p.get(name)) {
            Some(p) => merge_vars_node(&mut vars, &mut origins, p, &root_dir, &mut errors),
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
        set_dotted(&mut vars, k, yaml::scalar_to_json(v));
        origins.insert(k.clone(), Origin::Set(v.clone()));
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

    let mut stages = Vec::new();
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
                        expand_stage(&name, k, body, &vars, &origins, &mut stages, &mut errors);
                    }
                }
            }
        }
    }

    let mut seen: BTreeMap<&str, &Mark> = BTreeMap::new();
    for s in &stages {
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

    let errors = collapse_repeats(errors, &display);
    if errors.is_empty() {
        Ok(Pipeline {
            root: root_dir,
            file,
            vars,
            profile,
            executor,
            slurm,
            stages,
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
            let path = if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") };
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
    let Some(with) = with else { return SpecError::at(fallback, msg) };
    let param = msg
        .split('`')
        .skip(1)
        .step_by(2)
        .find_map(|word| with.get(word).map(|n| (word.to_string(), n)));
    let Some((param, node)) = param else { return SpecError::at(&with.mark, msg) };
    let used = used_variables(node, scope);
    let source = used.iter().rev().find_map(|name| {
        let local = name.split('.').next().is_some_and(|h| scope.locals.iter().any(|(l, _)| *l == h));
        (!local).then(|| origin_of(origins, name).map(|o| (name, o))).flatten()
    });
    let here = format!("{}:{}:{}", node.mark.path().display(), node.mark.line, node.mark.col);
    match source {
        Some((name, Origin::At(m))) => SpecError::at(m, msg)
            .note(format!("the value of `${{{name}}}` is set here and used by `{param}:` at {here}")),
        Some((name, Origin::Set(v))) => SpecError::at(&node.mark, msg)
            .note(format!("the value comes from `--set {name}={v}`")),
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
        let key = e.mark.as_ref().filter(|m| m.path() != pipeline).map(|m| {
            (m.path().to_path_buf(), m.line, m.col, e.message.clone())
        });
        let prev = key.as_ref().and_then(|k| {
            out.iter().position(|o| {
                o.mark.as_ref().map(|m| (m.path().to_path_buf(), m.line, m.col, o.message.clone())).as_ref() == Some(k)
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
            let rest = if more.len() > 4 { format!(", … ({} in all)", more.len()) } else { String::new() };
            e.notes.push(format!("also in {} more stages: {}{rest}", more.len(), shown.join(", ")));
        }
    }
    out
}

/// `vars:` is a mapping, a file name, or a list of mappings and file names (merged in order).
fn merge_vars_node(vars: &mut Json, origins: &mut Origins, node: &Node, root: &Path, errors: &mut Vec<SpecError>) {
    match &node.value {
        Value::Map(_) => {
            record_origins(node, "", origins);
            deep_merge(vars, node.to_json())
        }
        Value::Scalar { text, .. } => {
            let path = root.join(text);
            match yaml::parse_file(&path) {
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
            .for_each(|i| merge_vars_node(vars, origins, i, root, errors)),
        Value::Null => {}
    }
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

fn set_dotted(vars: &mut Json, key: &str, value: Json) {
    let mut cur = vars;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Json::Object(Default::default());
        }
        let map = cur.as_object_mut().expect("object");
        if i + 1 == parts.len() {
            map.insert(p.to_string(), value);
            return;
        }
        cur = map
            .entry(p.to_string())
            .or_insert_with(|| Json::Object(Default::default()));
    }
}

/// Expand one stage definition (its foreach/matrix items) into concrete stages.
fn expand_stage(
    name: &str,
    key: &Node,
    body: &Node,
    vars: &Json,
    origins: &Origins,
    out: &mut Vec<Stage>,
    errors: &mut Vec<SpecError>,
) {
    let Some(entries) = body.as_map() else {
        errors.push(
            SpecError::at(
                &body.mark,
                format!("stage must be a mapping, found {}", body.type_name()),
            )
            .in_stage(name),
        );
        return;
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
                return;
            }
            (Some(f), None) => match interpolate_node(f, &base) {
                Err(e) => {
                    errors.push(e.in_stage(name));
                    return;
                }
                Ok(Json::Array(items)) => items
                    .into_iter()
                    .map(|item| {
                        (
                            format!("{name}@{}", item_label(&item)),
                            vec![("item", item)],
                        )
                    })
                    .collect(),
                Ok(Json::Object(map)) => map
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            format!("{name}@{k}"),
                            vec![("key", Json::String(k)), ("item", v)],
                        )
                    })
                    .collect(),
                Ok(_) => {
                    errors.push(
                        SpecError::at(&f.mark, "`foreach:` must be a list or a mapping")
                            .in_stage(name),
                    );
                    return;
                }
            },
            (None, Some(m)) => match interpolate_node(m, &base) {
                Err(e) => {
                    errors.push(e.in_stage(name));
                    return;
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
                    let mut combos: Vec<serde_json::Map<String, Json>> = vec![Default::default()];
                    for axis in &order {
                        let values = &axes[axis];
                        let Json::Array(values) = values else {
                            errors.push(
                                SpecError::at(
                                    &m.mark,
                                    format!("matrix axis '{axis}' must be a list"),
                                )
                                .in_stage(name),
                            );
                            return;
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
                    return;
                }
            },
            (None, None) => vec![(name.to_string(), Vec::new())],
        };
    for (full, locals) in instances {
        let scope = Scope { vars, locals };
        match build_stage(&full, key, body, &scope, origins) {
            Ok(s) => out.push(s),
            Err(mut es) => {
                for e in es.drain(..) {
                    errors.push(e.in_stage(&full));
                }
            }
        }
    }
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
    origins: &Origins,
) -> Result<Stage, Vec<SpecError>> {
    let mut errors = Vec::new();
    let mut string_of = |field: &str| -> Option<(String, Mark)> {
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
    };
    let cmd = string_of("cmd");
    let uses = string_of("uses");
    let checkpoint = string_of("checkpoint");
    let desc = string_of("desc").map(|(s, _)| s);

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
            match crate::kinds::lookup(&kind) {
                Err(e) => errors.push(SpecError::at(&m, e.to_string())),
                Ok(k) if with.is_object() => {
                    if let Err(e) = k.validate(&with) {
                        let msg = format!("invalid parameters for `{kind}`: {e:#}");
                        errors.push(locate_param_error(body.get("with"), &m, msg, scope, origins));
                    }
                }
                Ok(_) => {}
            }
            Some(Action::Uses { kind, with })
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
    let outs = path_list(body, "outs", scope, false, &mut errors);

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
            checkpoint: checkpoint.map(|(c, _)| normalise(&c, false).unwrap_or(c)),
            desc,
            mark: key.mark.clone(),
        }),
        _ => Err(errors),
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
            "time" => match parse_minutes(&value) {
                Some(m) => res.time_min = Some(m),
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

fn parse_minutes(v: &Json) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
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
    Some(secs.div_ceil(60))
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
    fn resources_parse() {
        let p = load_text("stages:\n  a:\n    cmd: echo\n    resources: {cpus: 2, gpu: 1, mem: 8G, time: '1:30:00'}\n").unwrap();
        let r = &p.stages[0].resources;
        assert_eq!(
            (r.cpus, r.gpus, r.mem_mb, r.time_min),
            (2, 1, Some(8192), Some(90))
        );
    }

    #[test]
    fn a_bad_value_from_a_profile_points_at_the_profile_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prof.yaml"), "models: [mlp]\ntrain: {epochs: 1, batch_size: 1}\n").unwrap();
        let f = dir.path().join("pipeline.yaml");
        std::fs::write(
            &f,
            "profile: p\nprofiles: {p: prof.yaml}\nstages:\n  t:\n    foreach: ${models}\n    uses: train\n    with:\n      data: d\n      out: o/${item}\n      loss: soft-d\n      model: ${item}\n      batch_size: ${train.batch_size}\n",
        )
        .unwrap();
        let e = load(&f, &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("`batch_size` must be at least 2"), "{e}");
        assert!(e.contains("prof.yaml:2:32"), "{e}");
        assert!(e.contains("used by `batch_size:` at"), "{e}");
        assert!(e.contains("pipeline.yaml:12:19"), "{e}");
        let e = load(&f, &LoadOptions { profile: None, overrides: vec![("train.batch_size".into(), "0".into())] })
            .unwrap_err()
            .to_string();
        assert!(e.contains("--set train.batch_size=0"), "{e}");
    }

    #[test]
    fn a_null_dep_is_no_dep() {
        let p = load_text("vars: {w: null}\nstages:\n  a:\n    cmd: echo\n    deps: [\"${w}\", x]\n").unwrap();
        let deps: Vec<_> = p.stages[0].deps.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(deps, ["x"]);
    }
}
