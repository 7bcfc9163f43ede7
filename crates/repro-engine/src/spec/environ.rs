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
    pub runtime: Runtime,
}

impl Container {
    /// Whether `image` names a file or directory rather than an image in a runtime's store:
    /// it starts with `/`, `./` or `../`, or ends with `.sif`.
    pub fn is_path(&self) -> bool {
        is_path(&self.image)
    }
}

pub(crate) fn is_path(image: &str) -> bool {
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
    match Runtime::find(&image) {
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
    serde_json::to_value(Wrapped {
        cmd: command,
        set: env.set.clone(),
        pass: env.pass.clone(),
        container: env.container.clone(),
    })
    .expect("plain data")
}

/// A command run with variables set for it and/or in a container.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Wrapped {
    pub cmd: String,
    /// `env:` values set for the command.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// `env:` names passed from repro's environment (into a container: outside one, the
    /// command inherits them anyway).
    #[serde(default)]
    pub pass: Vec<String>,
    #[serde(default)]
    pub container: Option<Container>,
}

/// The container runtimes repro can start, in the order it looks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Podman,
    Apptainer,
    Singularity,
}

impl Runtime {
    const ALL: [Runtime; 3] = [Runtime::Podman, Runtime::Apptainer, Runtime::Singularity];

    pub fn program(self) -> &'static str {
        match self {
            Runtime::Podman => "podman",
            Runtime::Apptainer => "apptainer",
            Runtime::Singularity => "singularity",
        }
    }

    /// The runtime for `image`: `$REPRO_CONTAINER_RUNTIME` if set, else the first of podman,
    /// apptainer, singularity on `PATH` that can run it. The error says what was looked for.
    pub fn find(image: &str) -> Result<Runtime, String> {
        Self::find_in(
            image,
            std::env::var("REPRO_CONTAINER_RUNTIME").ok().as_deref(),
            &|p| on_path(p).is_some(),
        )
    }

    pub(crate) fn find_in(
        image: &str,
        forced: Option<&str>,
        installed: &dyn Fn(&str) -> bool,
    ) -> Result<Runtime, String> {
        let candidates: Vec<Runtime> = match forced.filter(|f| !f.is_empty()) {
            Some(f) => match Self::ALL.into_iter().find(|r| r.program() == f) {
                Some(r) => vec![r],
                None => {
                    return Err(format!(
                        "REPRO_CONTAINER_RUNTIME={f} is not one of podman, apptainer, singularity"
                    ));
                }
            },
            None => Self::ALL.to_vec(),
        };
        let found: Vec<Runtime> = candidates
            .into_iter()
            .filter(|r| installed(r.program()))
            .collect();
        if found.is_empty() {
            let names: Vec<&str> = Self::ALL.iter().map(|r| r.program()).collect();
            return Err(match forced {
                Some(f) if !f.is_empty() => {
                    format!("REPRO_CONTAINER_RUNTIME={f}, but {f} is not on PATH")
                }
                _ => format!(
                    "no container runtime found: none of {} is on PATH; install one, or remove \
                     `container:` to run the stage on the host",
                    names.join(", ")
                ),
            });
        }
        // Apptainer and Singularity run images from files (a .sif, a sandbox directory);
        // podman runs images from its store, or a root file system directory.
        let path = is_path(image);
        let fits = |r: &Runtime| match r {
            Runtime::Podman => !image.ends_with(".sif"),
            Runtime::Apptainer | Runtime::Singularity => path,
        };
        match found.iter().copied().find(fits) {
            Some(r) => Ok(r),
            None if path => Err(format!(
                "{image} is a .sif image, which podman cannot run; install apptainer"
            )),
            None => Err(format!(
                "{} runs images from a file (a .sif or a sandbox directory, written as a path: \
                 ./image.sif); to run an image by name, install podman",
                found[0].program()
            )),
        }
    }
}

/// `program` on `PATH`, if there.
fn on_path(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
