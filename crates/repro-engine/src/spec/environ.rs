//! A stage's declared environment: `env:` (variables that enter its key, some set for it),
//! `tools:` (files or commands whose identity enters its key) and `container:` (the image it
//! runs in). Parsed and checked here, positioned like every spec error; what they are worth
//! at key time and how a containerised command is started live in `crate::declared`.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::interp::{self, Scope, interpolate_node};
use super::yaml::{Mark, Node, Value};
use super::{SpecError, normalise};

/// What a stage declares about its environment; empty for most stages.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageEnv {
    /// `env:` names without a value: read from repro's environment when the key is computed
    /// (the stage inherits them as they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass: Vec<String>,
    /// `env:` names with a value: set for the stage (and so known from the pipeline alone).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

/// A tool whose identity enters the key.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Tool {
    /// A file or directory (workspace-relative, or absolute), hashed like a dep.
    File(String),
    /// A shell command whose standard output identifies the tool (a version, say).
    Cmd(String),
    /// A Python environment (a venv's directory): the packages installed in it.
    Python(String),
}

impl Tool {
    /// How the tool is named in the fingerprint and in explanations.
    pub fn label(&self) -> String {
        match self {
            Tool::File(p) => format!("file: {p}"),
            Tool::Cmd(c) => format!("cmd: {c}"),
            Tool::Python(p) => format!("python: {p}"),
        }
    }
}

/// `container: IMAGE`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Container {
    /// As written: an image name (`localhost/tools:1`) or a path (`./env.sif`, `/opt/rootfs`).
    pub image: String,
    /// The runtime found at load time.
    pub runtime: crate::declared::Runtime,
}

impl Container {
    /// Whether `image` names a file or directory rather than an image in a runtime's store:
    /// it starts with `/`, `./` or `../`, or ends with `.sif`.
    pub fn is_path(&self) -> bool {
        is_path(&self.image)
    }
}

pub fn is_path(image: &str) -> bool {
    image.starts_with('/')
        || image.starts_with("./")
        || image.starts_with("../")
        || image.ends_with(".sif")
}

impl StageEnv {
    pub fn is_empty(&self) -> bool {
        self.pass.is_empty()
            && self.set.is_empty()
            && self.tools.is_empty()
            && self.container.is_none()
    }

    /// Whether the stage's key depends on something besides the plan and the files a run
    /// stats: a variable of repro's environment, a command's output, an image in a runtime's
    /// store. A run that finds every stage fresh then keeps no up-to-date record, so that the
    /// next run computes these keys again (`crate::state::up_to_date`).
    pub fn volatile(&self) -> bool {
        !self.pass.is_empty()
            || self
                .tools
                .iter()
                .any(|t| matches!(t, Tool::Cmd(_) | Tool::Python(_)))
            || self.container.as_ref().is_some_and(|c| !c.is_path())
    }
}

/// Variables the engine sets for every stage (from its scheduling, not the pipeline): a stage
/// cannot declare them.
const ENGINE_SET: &[&str] = &[
    "REPRO_STAGE",
    "REPRO_KEY",
    "REPRO_CHECKPOINT",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
];

fn check_name(name: &str, mark: &Mark, errors: &mut Vec<SpecError>) -> bool {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        errors.push(SpecError::at(
            mark,
            format!("env: '{name}' is not a variable name (letters, digits and _)"),
        ));
        return false;
    }
    if ENGINE_SET.contains(&name) {
        errors.push(SpecError::at(
            mark,
            format!(
                "env: {name} is set by repro for every stage (from the run and `resources:`), \
                 it cannot be declared"
            ),
        ));
        return false;
    }
    true
}

/// One `env:` value: a scalar, interpolated, as text.
fn env_value(node: &Node, scope: &Scope, errors: &mut Vec<SpecError>) -> Option<String> {
    match interpolate_node(node, scope) {
        Ok(v) => match interp::scalar_text(&v) {
            Some(t) => Some(t),
            None => {
                errors.push(SpecError::at(
                    &node.mark,
                    "env: a value must be a string or a number",
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

/// `env:` as a list of names and `NAME: value` pairs, or as a mapping (a null value: a name
/// read from the environment).
fn parse_env(node: &Node, scope: &Scope, env: &mut StageEnv, errors: &mut Vec<SpecError>) {
    let mut add = |key: &Node, value: Option<&Node>, errors: &mut Vec<SpecError>| {
        let Some(name) = key.as_str() else {
            errors.push(SpecError::at(&key.mark, "env: expected a variable name"));
            return;
        };
        if !check_name(name, &key.mark, errors) {
            return;
        }
        if env.pass.iter().any(|n| n == name) || env.set.contains_key(name) {
            errors.push(SpecError::at(
                &key.mark,
                format!("env: {name} is declared twice"),
            ));
            return;
        }
        match value.filter(|v| !v.is_null()) {
            None => env.pass.push(name.to_string()),
            Some(v) => {
                if let Some(text) = env_value(v, scope, errors) {
                    env.set.insert(name.to_string(), text);
                }
            }
        }
    };
    match &node.value {
        Value::Null => {}
        Value::Map(pairs) => {
            for (k, v) in pairs {
                add(k, Some(v), errors);
            }
        }
        Value::Seq(items) => {
            for item in items {
                match &item.value {
                    Value::Scalar { .. } => add(item, None, errors),
                    Value::Map(pairs) => {
                        for (k, v) in pairs {
                            add(k, Some(v), errors);
                        }
                    }
                    _ => errors.push(SpecError::at(
                        &item.mark,
                        "env: each entry is a variable name or `NAME: value`",
                    )),
                }
            }
        }
        Value::Scalar { .. } => add(node, None, errors),
    }
    env.pass.sort();
}

/// `tools:`: a list of `file: PATH`, `cmd: COMMAND` and `python: VENV`.
fn parse_tools(node: &Node, scope: &Scope, env: &mut StageEnv, errors: &mut Vec<SpecError>) {
    let items: &[Node] = match &node.value {
        Value::Null => &[],
        Value::Seq(items) => items,
        _ => std::slice::from_ref(node),
    };
    for item in items {
        let pair = match item.as_map() {
            Some([(k, v)]) => k.as_str().map(|k| (k, v)),
            _ => None,
        };
        let Some((what, value)) = pair.filter(|(k, _)| matches!(*k, "file" | "cmd" | "python"))
        else {
            errors.push(SpecError::at(
                &item.mark,
                "tools: each entry is `file: PATH` (a lock file, a binary), `cmd: COMMAND` \
                 (whose output names a version) or `python: VENV` (its installed packages)",
            ));
            continue;
        };
        let Some(text) = env_value(value, scope, errors) else {
            continue;
        };
        let tool = if what == "file" || what == "python" {
            match normalise(&text, true) {
                Ok(p) if what == "file" => Tool::File(p),
                Ok(p) => Tool::Python(p),
                Err(msg) => {
                    errors.push(SpecError::at(&value.mark, format!("tools: {msg}")));
                    continue;
                }
            }
        } else if text.trim().is_empty() {
            errors.push(SpecError::at(&value.mark, "tools: the command is empty"));
            continue;
        } else {
            Tool::Cmd(text)
        };
        if env.tools.contains(&tool) {
            errors.push(SpecError::at(
                &value.mark,
                format!("tools: {} is listed twice", tool.label()),
            ));
            continue;
        }
        env.tools.push(tool);
    }
}

/// `container: IMAGE`, with the runtime that will run it; none installed is an error here,
/// before anything runs.
fn parse_container(node: &Node, scope: &Scope, env: &mut StageEnv, errors: &mut Vec<SpecError>) {
    let Some(image) = env_value(node, scope, errors) else {
        return;
    };
    let image = image.trim().to_string();
    if image.is_empty() {
        errors.push(SpecError::at(&node.mark, "container: the image is empty"));
        return;
    }
    match crate::declared::Runtime::find(&image) {
        Ok(runtime) => env.container = Some(Container { image, runtime }),
        Err(msg) => errors.push(SpecError::at(&node.mark, format!("container: {msg}"))),
    }
}

/// The stage's `env:`, `tools:` and `container:`. `is_cmd`: whether it is a `cmd:` stage
/// (values are set, and containers entered, by wrapping its command line).
pub(super) fn parse(
    body: &Node,
    scope: &Scope,
    is_cmd: bool,
    errors: &mut Vec<SpecError>,
) -> StageEnv {
    let mut env = StageEnv::default();
    if let Some(n) = body.get("env") {
        parse_env(n, scope, &mut env, errors);
        if !is_cmd && !env.set.is_empty() {
            errors.push(SpecError::at(
                &n.mark,
                "env: values can only be set for `cmd:` stages; for a `uses:` stage list the \
                 name and set it in the environment repro runs in",
            ));
        }
    }
    if let Some(n) = body.get("tools") {
        parse_tools(n, scope, &mut env, errors);
    }
    if let Some(n) = body.get("container") {
        if is_cmd {
            parse_container(n, scope, &mut env, errors);
        } else {
            errors.push(SpecError::at(
                &n.mark,
                "container: only `cmd:` stages run in a container (a `uses:` stage runs in \
                 repro itself)",
            ));
        }
    }
    env
}

/// The `with:` of a `cmd:` stage that sets variables or runs in a container: the command and
/// what wraps it (see `kinds::cmd`); the plain command text otherwise.
pub(super) fn cmd_params(command: String, env: &StageEnv) -> Json {
    if env.set.is_empty() && env.container.is_none() {
        return Json::String(command);
    }
    serde_json::to_value(crate::kinds::cmd::Wrapped {
        cmd: command,
        set: env.set.clone(),
        pass: env.pass.clone(),
        container: env.container.clone(),
    })
    .expect("plain data")
}
