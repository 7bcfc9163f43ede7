//! Built-in stage kinds (`uses:` in pipeline.yaml) behind one small trait.
//!
//! The engine runs a built-in stage as a child process (`repro internal run-kind`), so a kind
//! is ordinary code that reads its resolved parameters, reads its deps from the workspace, and
//! writes its declared outputs. A kind knows nothing about hashing, caching or scheduling; the
//! engine knows nothing about tensors. `version()` enters the stage key: bump it whenever a
//! change to the kind could change its outputs, so that cached results are not reused wrongly.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;

pub mod download;
pub mod evaluate;
pub mod import_weights;
pub mod preprocess;
pub mod progress;
pub mod report;
pub mod train;

/// What a kind gets to run one stage.
pub struct StageContext {
    /// Stage name as expanded (`train@bce-nu`), for messages.
    pub stage: String,
    /// The resolved `with:` parameters (all `${…}` interpolated).
    pub params: serde_json::Value,
    /// Workspace root; the child's working directory is set to it, and every path in `params`
    /// is relative to it.
    pub workspace: PathBuf,
    /// A directory that survives interruption, excluded from the stage key and outputs, for
    /// resuming long stages (declared with `checkpoint:`). `None` when not declared.
    pub checkpoint: Option<PathBuf>,
    /// CPU threads this stage may use (from its `resources: {cpus: N}`), so parallel stages do
    /// not oversubscribe the cores.
    pub threads: usize,
    /// GPUs assigned to this stage (also exported as `CUDA_VISIBLE_DEVICES`); empty for CPU.
    pub gpus: Vec<usize>,
}

impl StageContext {
    /// Deserialise the `with:` parameters into the kind's own typed struct; unknown fields are
    /// rejected by `#[serde(deny_unknown_fields)]` on that struct.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.params.clone())
            .with_context(|| format!("stage '{}': invalid `with:` parameters", self.stage))
    }

    /// A workspace-relative path made absolute.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.workspace.join(rel)
    }
}

/// One built-in stage kind.
pub trait StageKind: Send + Sync {
    /// The name used in `uses:`.
    fn name(&self) -> &'static str;
    /// Implementation version; part of the stage key.
    fn version(&self) -> u32;
    /// Check the `with:` parameters without running (called during validation, before
    /// anything runs). Return a message naming the offending parameter.
    fn validate(&self, params: &serde_json::Value) -> Result<()>;
    /// Run the stage: read deps, write outputs. Errors end the stage as failed.
    fn run(&self, ctx: &StageContext) -> Result<()>;
    /// Kinds that need libtorch run in the `repro-torch` binary: `repro internal run-kind`
    /// hands them over (exec, same pid) so that no other command pays libtorch's start-up.
    fn needs_libtorch(&self) -> bool {
        false
    }
    /// Outputs (workspace-relative) that hold this stage's metrics as JSON numbers, for
    /// `repro metrics` and `repro exp show`; a kind that measures something declares them here.
    fn metrics(&self, _params: &serde_json::Value) -> Vec<String> {
        Vec::new()
    }
    /// Every path the kind writes, as (parameter it comes from, workspace-relative path as
    /// given), for the engine's confinement check (`crate::confine`): each must be one of the
    /// stage's declared outputs or lie inside one. Parameters that do not parse give none
    /// (`validate` reports them). Required, so that no kind can write without saying where.
    fn written_paths(&self, params: &serde_json::Value) -> Vec<(&'static str, PathBuf)>;
}

/// `params[key]` as a path, if it is a string.
pub fn path_param(params: &serde_json::Value, key: &str) -> Option<PathBuf> {
    params.get(key)?.as_str().map(PathBuf::from)
}

/// All built-in kinds, by name.
pub fn registry() -> Vec<Box<dyn StageKind>> {
    vec![
        // Each concern registers its kind here.
        Box::new(report::Report),
        Box::new(evaluate::Evaluate),
        Box::new(download::Download),
        Box::new(preprocess::Preprocess),
        Box::new(train::Train),
        Box::new(import_weights::ImportWeights),
    ]
}

/// The self-contained specification of one built-in stage, as the engine writes it for the
/// child (and for a Slurm job).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct KindSpec {
    pub stage: String,
    pub kind: String,
    pub params: serde_json::Value,
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    #[serde(default = "one")]
    pub threads: usize,
    #[serde(default)]
    pub gpus: Vec<usize>,
}

fn one() -> usize {
    1
}

impl KindSpec {
    pub fn read(path: &Path) -> Result<KindSpec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading stage specification {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing stage specification {}", path.display()))
    }

    /// The context the kind runs with; the child's working directory is the workspace.
    pub fn context(&self) -> Result<StageContext> {
        Ok(StageContext {
            stage: self.stage.clone(),
            params: self.params.clone(),
            workspace: std::env::current_dir()?,
            checkpoint: self.checkpoint.clone(),
            threads: self.threads.max(1),
            gpus: self.gpus.clone(),
        })
    }
}

/// The child side of a built-in stage: run `kind` on the spec the engine wrote.
pub fn run_spec(kind: &dyn StageKind, spec: &KindSpec) -> Result<()> {
    let ctx = spec.context()?;
    kind.run(&ctx)
        .with_context(|| format!("stage '{}' ({})", ctx.stage, spec.kind))
}

/// The `repro-torch` binary: `$REPRO_TORCH`, else next to the running `repro`.
pub fn torch_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("REPRO_TORCH") {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().context("cannot locate the running repro binary")?;
            exe.with_file_name("repro-torch")
        }
    };
    if !path.is_file() {
        bail!(
            "this needs libtorch, which lives in the `repro-torch` binary, and {} does not exist; \
             build both binaries with `cargo build --release` at the workspace root (or set REPRO_TORCH)",
            path.display()
        );
    }
    Ok(path)
}

/// `LD_LIBRARY_PATH` for `repro-torch` when `$REPRO_TORCH_LIB` names libtorch's `lib/`
/// directory: it goes first, ahead of the binary's run path (which finds the checkout's own
/// `.venv/torch/lib`, or the directory it was built against). `None` when unset.
pub fn torch_library_path() -> Result<Option<std::ffi::OsString>> {
    let Some(lib) = std::env::var_os("REPRO_TORCH_LIB").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let dir = PathBuf::from(&lib);
    if !dir.join("libtorch_cpu.so").is_file() {
        bail!(
            "REPRO_TORCH_LIB={} has no libtorch_cpu.so; set it to the lib/ directory of a libtorch \
             2.11.0 (e.g. .venv/torch/lib), or unset it to use the run path of repro-torch",
            dir.display()
        );
    }
    let mut path = lib;
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
        path.push(":");
        path.push(old);
    }
    Ok(Some(path))
}

/// Replace this process by `repro-torch ARGS` (same pid, so the engine's process-group and
/// parent-death handling carry over). Returns only on failure.
pub fn exec_torch(args: &[&std::ffi::OsStr]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let (bin, lib) = match torch_binary().and_then(|b| Ok((b, torch_library_path()?))) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(args);
    if let Some(lib) = lib {
        cmd.env("LD_LIBRARY_PATH", lib);
    }
    let err = cmd.exec();
    anyhow::Error::new(err).context(format!("cannot start {}", bin.display()))
}

/// Look up a kind by name, with a message listing the known kinds.
pub fn lookup(name: &str) -> Result<Box<dyn StageKind>> {
    let mut all = registry();
    if let Some(i) = all.iter().position(|k| k.name() == name) {
        return Ok(all.swap_remove(i));
    }
    let known: Vec<_> = all.iter().map(|k| k.name()).collect();
    bail!(
        "unknown stage kind '{name}' (known kinds: {})",
        known.join(", ")
    )
}
