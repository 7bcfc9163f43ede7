//! Stage kinds as the engine sees them: a small typed trait, and the [`Registry`] the program
//! hands the engine at start-up.
//!
//! Every stage is a stage of a kind. `uses: NAME` names one the program registered; `cmd: …`
//! is the engine's one built-in kind ([`cmd::Cmd`], registered in every [`Registry`]), whose
//! body is a shell command. The engine asks the registry to resolve a stage once, at load
//! time, into a [`Resolved`] (the action's part of the stage key, written paths for the
//! confinement check, metric files for `repro metrics`), and at run time where the body lives
//! ([`Host`]): a shell command line, this program (`<program> internal run-kind SPEC`, a child
//! that reads a [`StageContext`] back), or another program. A kind knows nothing about
//! hashing, caching or scheduling; the engine knows nothing about tensors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;

pub(crate) mod cmd;
pub mod progress;

/// One stage kind: its typed parameters and what the engine needs to know about them.
///
/// `version()` enters the stage key: bump it whenever a change to the kind could change its
/// outputs, so that cached results are not reused wrongly.
pub trait Kind: Send + Sync + 'static {
    /// The `with:` parameters; `#[serde(deny_unknown_fields)]` makes a typo an error.
    type Params: DeserializeOwned;
    /// The name used in `uses:`.
    fn name(&self) -> &'static str;
    /// Implementation version; part of the stage key.
    fn version(&self) -> u32;
    /// Checks beyond the parameters' types, before anything runs. An error about one
    /// parameter is a [`ParamError`] ([`bail_param!`], [`ensure_param!`]): the spec error then
    /// points at that parameter's line.
    fn check(&self, _params: &Self::Params) -> Result<()> {
        Ok(())
    }
    /// Every path the kind writes, as (parameter it comes from, workspace-relative path), for
    /// the confinement check: each must be a declared output of the stage or lie inside one.
    /// Required, so that no kind can write without saying where.
    fn written_paths(&self, params: &Self::Params) -> Vec<(&'static str, PathBuf)>;
    /// Outputs that hold this stage's metrics as JSON numbers (`repro metrics`, `exp show`).
    fn metrics(&self, _params: &Self::Params) -> Vec<String> {
        Vec::new()
    }
    /// Fields of JSON outputs that measure the run rather than its result (wall time,
    /// images/s): `repro verify` ignores them when it compares a rerun with the recorded run,
    /// and says so. As (output file, workspace-relative; its field patterns: `train_seconds`,
    /// `epochs.*.seconds`). Never a field that makes the result, such as the CPU model.
    fn volatile(&self, _params: &Self::Params) -> Vec<(String, Vec<String>)> {
        Vec::new()
    }
    /// The action's part of the stage key when the parameters are written into it rather than
    /// hashed beside it. `None` (the default) keys on `uses: NAME@VERSION` and the parameters.
    fn key_text(&self, _params: &Self::Params) -> Option<String> {
        None
    }
}

/// A kind whose body runs in this program.
pub trait Run: Kind {
    /// Run the stage: read deps, write outputs. An error ends the stage as failed.
    fn run(&self, params: Self::Params, ctx: &StageContext) -> Result<()>;
}

/// A kind whose body is a shell command line (`sh -c`), started by the engine itself.
pub trait Shell: Kind {
    /// The command line the stage runs.
    fn command_line(&self, params: Self::Params) -> String;
}

/// What the engine keeps of a stage's kind once its parameters are checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resolved {
    /// The kind's version, for the stage key.
    pub version: u32,
    /// The action's part of the stage key, when the kind writes its own ([`Kind::key_text`]).
    pub key: Option<String>,
    /// (parameter, path) for every path the kind writes.
    pub writes: Vec<(String, PathBuf)>,
    /// Output files holding metrics.
    pub metrics: Vec<String>,
    /// (output file, JSON field patterns) that `repro verify` ignores ([`Kind::volatile`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volatile: Vec<(String, Vec<String>)>,
}

/// Where a registered kind's body runs.
pub enum Host<'a> {
    /// As a shell command line, made from the stage's parameters.
    Shell(&'a (dyn Fn(&serde_json::Value) -> Result<String> + Send + Sync)),
    /// In this program.
    Here(&'a (dyn Fn(&StageContext) -> Result<()> + Send + Sync)),
    /// In the named program, which answers the same `internal run-kind SPEC`; the program
    /// that embeds the engine knows how to start it (libtorch's kinds live in `repro-torch`).
    Program(&'static str),
}

/// The object-safe face of a [`Kind`], for the registry.
trait Declared: Send + Sync {
    fn name(&self) -> &'static str;
    fn resolve(&self, params: &serde_json::Value) -> Result<Resolved>;
}

/// An error about one `with:` parameter, which it names by type rather than in its message's
/// words: the spec error points at that parameter's line (or at the profile or vars line that
/// set its value). A kind's [`Kind::check`] returns it through `anyhow` ([`bail_param!`],
/// [`ensure_param!`], or `.context(param_error(..))` over a lower error), and
/// [`ParamError::find`] finds it again under any context; a deserialization error of `with:`
/// (unknown, missing or mistyped field) carries one too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The parameter: a `with:` key, or a dotted path to a nested one (`optim.lr`, or
    /// `sources.0` for a list's first item).
    pub param: String,
    /// The message, shown as it is (it may name the parameter in its own words).
    pub message: String,
}

/// A [`ParamError`] about `param` (a `with:` key or a dotted path to a nested one).
pub fn param_error(param: impl Into<String>, message: impl Into<String>) -> ParamError {
    ParamError {
        param: param.into(),
        message: message.into(),
    }
}

impl ParamError {
    /// The parameter error that `e` is or carries as a context, however many contexts were
    /// added around it.
    pub fn find(e: &anyhow::Error) -> Option<&ParamError> {
        e.downcast_ref()
    }
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParamError {}

/// Return early from a function returning `anyhow::Result` with a
/// [`ParamError`](crate::kinds::ParamError) about a parameter: the parameter (a `with:` key or
/// dotted path), then the message as for `format!`.
///
/// ```
/// # fn f(gamma: f64) -> anyhow::Result<()> {
/// if gamma <= 0.0 {
///     repro_engine::bail_param!("gamma", "parameter `gamma` must be positive, got {gamma}");
/// }
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! bail_param {
    ($param:expr, $($fmt:tt)+) => {
        return ::core::result::Result::Err(
            $crate::kinds::param_error($param, ::std::format!($($fmt)+)).into(),
        )
    };
}

/// [`bail_param!`] unless the condition holds: `ensure_param!(cond, param, format…)`.
#[macro_export]
macro_rules! ensure_param {
    ($cond:expr, $param:expr, $($fmt:tt)+) => {
        // `match`, not `if !…`: a negated float comparison reads badly (and clippy says so).
        match $cond {
            true => {}
            false => $crate::bail_param!($param, $($fmt)+),
        }
    };
}

pub use crate::{bail_param, ensure_param};

/// `with:` parsed into `K::Params`; the message names the kind. An error at a parameter (not
/// at `with:` as a whole, such as a missing top-level field) carries its path as a
/// [`ParamError`].
fn parse<K: Kind>(kind: &K, params: &serde_json::Value) -> Result<K::Params> {
    serde_path_to_error::deserialize(params)
        .map_err(|e| {
            let param = param_path(e.path());
            let inner = e.into_inner();
            if param.is_empty() {
                anyhow::Error::new(inner)
            } else {
                param_error(param, inner.to_string()).into()
            }
        })
        .with_context(|| format!("`{}`: invalid `with:` parameters", kind.name()))
}

/// A deserialization error's path as dotted segments: map keys, list indices, enum variants
/// (written as keys in YAML), up to the first segment serde could not name.
fn param_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut segments = Vec::new();
    for s in path {
        segments.push(match s {
            Segment::Map { key } => key.clone(),
            Segment::Seq { index } => index.to_string(),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => break,
        });
    }
    segments.join(".")
}

impl<K: Kind> Declared for Arc<K> {
    fn name(&self) -> &'static str {
        K::name(self)
    }

    fn resolve(&self, params: &serde_json::Value) -> Result<Resolved> {
        let p = parse(self.as_ref(), params)?;
        self.check(&p)?;
        Ok(Resolved {
            version: self.version(),
            key: self.key_text(&p),
            writes: self
                .written_paths(&p)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            metrics: self.metrics(&p),
            volatile: self.volatile(&p),
        })
    }
}

type Body = Box<dyn Fn(&StageContext) -> Result<()> + Send + Sync>;
type CommandLine = Box<dyn Fn(&serde_json::Value) -> Result<String> + Send + Sync>;

enum Place {
    Shell(CommandLine),
    Here(Body),
    Program(&'static str),
}

struct Entry {
    kind: Box<dyn Declared>,
    place: Place,
}

/// The stage kinds a program offers, by name: `cmd` always, then what the program adds. The
/// `repro` binary registers the paper's kinds; the engine's own tests register their own.
pub struct Registry {
    entries: Vec<Entry>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            entries: Vec::new(),
        }
        .with_shell(cmd::Cmd)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Registry {
    /// Add a kind whose body runs in this program.
    pub fn with<K: Run>(mut self, kind: K) -> Registry {
        let kind = Arc::new(kind);
        let body = kind.clone();
        let run: Body = Box::new(move |ctx: &StageContext| {
            let params = parse(body.as_ref(), &ctx.params)?;
            body.run(params, ctx)
        });
        self.push(Box::new(kind), Place::Here(run));
        self
    }

    /// Add a kind declared elsewhere (its parameters, version and written paths) with a body
    /// this program supplies: one declaration serves both the program that plans the stage and
    /// the one that runs it (`train` is planned by `repro` and run by `repro-torch`).
    pub fn with_body<K: Kind + 'static>(
        mut self,
        kind: K,
        body: fn(K::Params, &StageContext) -> Result<()>,
    ) -> Registry {
        let kind = Arc::new(kind);
        let declared = kind.clone();
        let run: Body =
            Box::new(move |ctx: &StageContext| body(parse(declared.as_ref(), &ctx.params)?, ctx));
        self.push(Box::new(kind), Place::Here(run));
        self
    }

    /// Add a kind whose body is a shell command line.
    pub fn with_shell<K: Shell>(mut self, kind: K) -> Registry {
        let kind = Arc::new(kind);
        let body = kind.clone();
        let line: CommandLine = Box::new(move |params: &serde_json::Value| {
            Ok(body.command_line(parse(body.as_ref(), params)?))
        });
        self.push(Box::new(kind), Place::Shell(line));
        self
    }

    /// Add a kind whose body runs in `program` (a binary next to this one).
    pub fn with_elsewhere<K: Kind>(mut self, kind: K, program: &'static str) -> Registry {
        self.push(Box::new(Arc::new(kind)), Place::Program(program));
        self
    }

    fn push(&mut self, kind: Box<dyn Declared>, place: Place) {
        let name = kind.name();
        assert!(
            self.entries.iter().all(|e| e.kind.name() != name),
            "stage kind '{name}' registered twice"
        );
        self.entries.push(Entry { kind, place });
    }

    /// The registered kinds' names, in registration order (`cmd` first).
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.kind.name()).collect()
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        if let Some(e) = self.entries.iter().find(|e| e.kind.name() == name) {
            return Ok(e);
        }
        // The kinds `uses:` can name: a shell kind has its own key (`cmd:`).
        let usable: Vec<&str> = (self.entries.iter())
            .filter(|e| !matches!(e.place, Place::Shell(_)))
            .map(|e| e.kind.name())
            .collect();
        if usable.is_empty() {
            bail!("unknown stage kind '{name}' (this program registers no kinds)")
        }
        bail!(
            "unknown stage kind '{name}' (known kinds: {})",
            usable.join(", ")
        )
    }

    /// Whether `name` is registered; the error lists the kinds that are.
    pub fn check_known(&self, name: &str) -> Result<()> {
        self.entry(name).map(|_| ())
    }

    /// Check `with:` for a `uses: name` stage and keep what the engine needs of it.
    pub fn resolve(&self, name: &str, params: &serde_json::Value) -> Result<Resolved> {
        self.entry(name)?.kind.resolve(params)
    }

    /// Run `ctx`'s kind here; an error if its body lives in another program.
    pub fn run(&self, ctx: &StageContext) -> Result<()> {
        match self.host(&ctx.kind)? {
            Host::Here(run) => run(ctx),
            Host::Program(p) => bail!("stage '{}': kind '{}' runs in {p}", ctx.stage, ctx.kind),
            Host::Shell(_) => bail!(
                "stage '{}': kind '{}' is a shell command, started by the engine",
                ctx.stage,
                ctx.kind
            ),
        }
    }

    /// Where the body of kind `name` runs.
    pub fn host(&self, name: &str) -> Result<Host<'_>> {
        Ok(match &self.entry(name)?.place {
            Place::Shell(line) => Host::Shell(line.as_ref()),
            Place::Here(run) => Host::Here(run.as_ref()),
            Place::Program(p) => Host::Program(p),
        })
    }
}

/// Everything one stage of a kind runs with. The engine writes it as JSON
/// (`cache/specs/<stage>.json`, also what a Slurm job reads); the child reads it back.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct StageContext {
    /// Stage name as expanded (`train@bce-nu`), for messages.
    pub stage: String,
    /// The kind's name (`uses:`).
    pub kind: String,
    /// The stage key the engine decided this run under: what a checkpoint or any other state a
    /// kind keeps between attempts belongs to. Empty when the kind is run by hand.
    #[serde(default)]
    pub key: String,
    /// The resolved `with:` parameters (all `${…}` interpolated).
    pub params: serde_json::Value,
    /// A directory that survives interruption, excluded from the stage key and outputs, for
    /// resuming long stages (declared with `checkpoint:`).
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// CPU threads this stage may use (its `resources: {cpus: N}`), so that parallel stages do
    /// not oversubscribe the cores.
    #[serde(default = "one")]
    pub threads: usize,
    /// GPUs assigned to this stage (also exported as `CUDA_VISIBLE_DEVICES`); empty for CPU.
    #[serde(default)]
    pub gpus: Vec<usize>,
    /// Workspace root, every relative path's base: the child's working directory, filled in
    /// when the file is read rather than stored in it.
    #[serde(skip)]
    pub workspace: PathBuf,
}

fn one() -> usize {
    1
}

impl StageContext {
    /// A context for running `kind` by hand (tests, tools): one thread, no GPU, no checkpoint,
    /// the stage named after the kind. The engine builds its own from the plan.
    pub fn new(kind: &str, params: serde_json::Value, workspace: impl Into<PathBuf>) -> Self {
        StageContext {
            stage: kind.to_string(),
            kind: kind.to_string(),
            key: String::new(),
            params,
            checkpoint: None,
            threads: 1,
            gpus: vec![],
            workspace: workspace.into(),
        }
    }

    /// Read the file the engine wrote; the workspace is the current directory.
    pub fn read(path: &Path) -> Result<StageContext> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading stage specification {}", path.display()))?;
        let mut ctx: StageContext = serde_json::from_str(&text)
            .with_context(|| format!("parsing stage specification {}", path.display()))?;
        ctx.workspace = std::env::current_dir()?;
        ctx.threads = ctx.threads.max(1);
        Ok(ctx)
    }

    /// A workspace-relative path made absolute.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.workspace.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TouchParams {
        out: PathBuf,
        #[serde(default)]
        times: u32,
    }

    struct Touch;

    impl Kind for Touch {
        type Params = TouchParams;
        fn name(&self) -> &'static str {
            "touch"
        }
        fn version(&self) -> u32 {
            3
        }
        fn check(&self, p: &TouchParams) -> Result<()> {
            ensure_param!(p.times <= 5, "times", "`times` is at most 5");
            Ok(())
        }
        fn written_paths(&self, p: &TouchParams) -> Vec<(&'static str, PathBuf)> {
            vec![("out", p.out.clone())]
        }
    }

    impl Run for Touch {
        fn run(&self, p: TouchParams, ctx: &StageContext) -> Result<()> {
            std::fs::write(ctx.path(&p.out), p.times.to_string())?;
            Ok(())
        }
    }

    fn ctx(dir: &Path, params: serde_json::Value) -> StageContext {
        StageContext::new("touch", params, dir)
    }

    #[test]
    fn resolve_parses_checks_and_reports_writes_once() {
        let reg = Registry::default().with(Touch);
        let r = reg
            .resolve("touch", &serde_json::json!({"out": "a/b", "times": 2}))
            .unwrap();
        assert_eq!(r.version, 3);
        assert_eq!(r.writes, vec![("out".to_string(), PathBuf::from("a/b"))]);
        let typo = reg
            .resolve("touch", &serde_json::json!({"out": "a", "tiems": 2}))
            .unwrap_err();
        assert!(
            format!("{typo:#}").contains("unknown field `tiems`"),
            "{typo:#}"
        );
        let checked = reg
            .resolve("touch", &serde_json::json!({"out": "a", "times": 9}))
            .unwrap_err();
        assert!(checked.to_string().contains("`times`"), "{checked:#}");
        let unknown = reg.resolve("tuch", &serde_json::json!({})).unwrap_err();
        assert!(
            unknown.to_string().contains("known kinds: touch"),
            "{unknown}"
        );
    }

    #[test]
    fn each_kind_says_where_its_body_runs_and_cmd_is_always_there() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::default()
            .with(Touch)
            .with_elsewhere(Elsewhere, "repro-other");
        match reg.host("touch").unwrap() {
            Host::Here(run) => run(&ctx(
                dir.path(),
                serde_json::json!({"out": "x", "times": 4}),
            ))
            .unwrap(),
            _ => panic!("touch runs here"),
        }
        assert_eq!(std::fs::read_to_string(dir.path().join("x")).unwrap(), "4");
        assert!(matches!(
            reg.host("far").unwrap(),
            Host::Program("repro-other")
        ));
        // `cmd` is registered in every registry: its body is the command line itself.
        assert_eq!(reg.names(), ["cmd", "touch", "far"]);
        match reg.host("cmd").unwrap() {
            Host::Shell(line) => {
                assert_eq!(
                    line(&serde_json::json!("echo 'a b'")).unwrap(),
                    "echo 'a b'"
                );
                assert!(line(&serde_json::json!({"not": "a string"})).is_err());
            }
            _ => panic!("cmd is a shell command"),
        }
        let r = reg.resolve("cmd", &serde_json::json!("echo hi")).unwrap();
        assert_eq!(r.key.as_deref(), Some("cmd: echo hi"), "keyed on its text");
        let empty = reg.resolve("cmd", &serde_json::json!("  ")).unwrap_err();
        assert!(empty.to_string().contains("`cmd:` is empty"), "{empty:#}");
        let mut shell = ctx(dir.path(), serde_json::json!("echo"));
        shell.kind = "cmd".into();
        let e = reg.run(&shell).unwrap_err();
        assert!(e.to_string().contains("started by the engine"), "{e:#}");
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Optim {
        lr: f64,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NestParams {
        optim: Optim,
        #[serde(default)]
        phases: Vec<Optim>,
    }

    /// A kind with nested parameters, for the paths that errors carry.
    struct Nest;

    impl Kind for Nest {
        type Params = NestParams;
        fn name(&self) -> &'static str {
            "nest"
        }
        fn version(&self) -> u32 {
            1
        }
        fn check(&self, p: &NestParams) -> Result<()> {
            ensure_param!(p.optim.lr > 0.0, "optim.lr", "`lr` must be positive");
            for (i, phase) in p.phases.iter().enumerate() {
                ensure_param!(
                    phase.lr > 0.0,
                    format!("phases.{i}.lr"),
                    "`lr` must be positive"
                );
            }
            Ok(())
        }
        fn written_paths(&self, _: &NestParams) -> Vec<(&'static str, PathBuf)> {
            Vec::new()
        }
    }

    #[test]
    fn parameter_errors_carry_the_parameter_path_by_type() {
        let reg = Registry::default().with_elsewhere(Nest, "elsewhere");
        let err = |with: serde_json::Value| {
            let e = reg.resolve("nest", &with).unwrap_err();
            (
                ParamError::find(&e).map(|p| p.param.clone()),
                format!("{e:#}"),
            )
        };
        let (param, msg) = err(serde_json::json!({"optim": {"lr": 1, "lrr": 2}}));
        assert_eq!(param.as_deref(), Some("optim.lrr"), "unknown field: {msg}");
        // The message is serde's, as before: the path is beside it, not in it.
        assert_eq!(
            msg,
            "`nest`: invalid `with:` parameters: unknown field `lrr`, expected `lr`"
        );
        let (param, msg) =
            err(serde_json::json!({"optim": {"lr": 1}, "phases": [{"lr": 1}, {"lr": "x"}]}));
        assert_eq!(param.as_deref(), Some("phases.1.lr"), "wrong type: {msg}");
        // A missing field is at the mapping that lacks it; at the top, at `with:` itself.
        let (param, msg) = err(serde_json::json!({"optim": {}}));
        assert_eq!(param.as_deref(), Some("optim"), "missing field: {msg}");
        let (param, msg) = err(serde_json::json!({}));
        assert_eq!(param, None, "{msg}");
        assert!(msg.ends_with("missing field `optim`"), "{msg}");
        let (param, _) =
            err(serde_json::json!({"optim": {"lr": 1}, "phases": [{"lr": 1}, {"lr": 0}]}));
        assert_eq!(
            param.as_deref(),
            Some("phases.1.lr"),
            "a path made at run time"
        );
        let (param, msg) = err(serde_json::json!({"optim": {"lr": -1}}));
        assert_eq!(
            (param.as_deref(), msg.as_str()),
            (Some("optim.lr"), "`lr` must be positive")
        );
        // A check's lower error under a parameter context, then more context: found, and the
        // message reads as any context chain does.
        let e = Err::<(), _>(anyhow::anyhow!("no such architecture"))
            .context(param_error("arch", "parameter `arch`"))
            .context("stage 'w'")
            .unwrap_err();
        assert_eq!(ParamError::find(&e).map(|p| p.param.as_str()), Some("arch"));
        assert_eq!(
            format!("{e:#}"),
            "stage 'w': parameter `arch`: no such architecture"
        );
        assert!(ParamError::find(&anyhow::anyhow!("`optim` is wrong")).is_none());
    }

    struct Elsewhere;

    impl Kind for Elsewhere {
        type Params = serde_json::Value;
        fn name(&self) -> &'static str {
            "far"
        }
        fn version(&self) -> u32 {
            1
        }
        fn written_paths(&self, _: &serde_json::Value) -> Vec<(&'static str, PathBuf)> {
            Vec::new()
        }
    }

    #[test]
    fn the_context_file_round_trips_without_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ctx(dir.path(), serde_json::json!({"out": "x"}));
        c.threads = 0;
        let file = dir.path().join("spec.json");
        std::fs::write(&file, serde_json::to_string(&c).unwrap()).unwrap();
        assert!(
            !std::fs::read_to_string(&file)
                .unwrap()
                .contains("workspace")
        );
        let back = StageContext::read(&file).unwrap();
        assert_eq!(back.threads, 1, "at least one thread");
        assert_eq!(back.workspace, std::env::current_dir().unwrap());
    }
}
