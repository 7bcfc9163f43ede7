//! The paper's stage kinds (`uses:` in pipeline.yaml) and the registry that hands them to the
//! engine.
//!
//! Each kind implements `repro_engine::kinds::Kind` (typed `with:` parameters, version, written
//! paths) and, where its body runs in this binary, `Run`. `train` needs libtorch: its body lives
//! in the `repro-torch` binary, which the registry names as the place it runs, so that no other
//! command pays libtorch's start-up.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use repro_engine::kinds::{Host, Registry, StageContext};

#[cfg(feature = "paper")]
pub mod download;
#[cfg(feature = "paper")]
pub mod evaluate;
#[cfg(feature = "paper")]
pub mod import_weights;
#[cfg(feature = "paper")]
pub mod preprocess;
#[cfg(feature = "paper")]
pub mod report;
#[cfg(feature = "paper")]
pub mod train;

/// The program that runs libtorch's kinds.
pub const TORCH_PROGRAM: &str = "repro-torch";

/// The paper's kinds, by name, with where each runs.
#[cfg(feature = "paper")]
pub fn registry() -> Registry {
    repro_engine::contribute_environment(torch_facts);
    Registry::default()
        .with(report::Report)
        .with(evaluate::Evaluate)
        .with(download::Download)
        .with(preprocess::Preprocess)
        .with(import_weights::ImportWeights)
        .with_elsewhere(train::Train, TORCH_PROGRAM)
}

/// libtorch's version and the CUDA it was built for, for the environment recorded with every
/// run (`repro_engine::contribute_environment`): read from the `version.py` of the torch package whose
/// `lib/` `repro-torch` loads (`$REPRO_TORCH_LIB`, else the checkout's `.venv/torch/lib`), so
/// recording them starts no libtorch.
#[cfg(feature = "paper")]
fn torch_facts() -> std::collections::BTreeMap<String, String> {
    let lib = match std::env::var_os("REPRO_TORCH_LIB").filter(|v| !v.is_empty()) {
        Some(l) => PathBuf::from(l),
        None => match std::env::current_exe() {
            // The run path of repro-torch: `$ORIGIN/../../.venv/torch/lib`.
            Ok(exe) => exe.with_file_name("../../.venv/torch/lib"),
            Err(_) => return Default::default(),
        },
    };
    let text = std::fs::read_to_string(lib.join("../version.py")).unwrap_or_default();
    let mut facts = std::collections::BTreeMap::new();
    for (var, name) in [("__version__", "libtorch"), ("cuda", "libtorch_cuda")] {
        let value = text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            let k = k.split(':').next()?.trim();
            (k == var).then(|| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        });
        if let Some(v) = value.filter(|v| v != "None") {
            facts.insert(name.to_string(), v);
        }
    }
    facts
}

/// Without the `paper` feature: the engine's own kinds only (`cmd`).
#[cfg(not(feature = "paper"))]
pub fn registry() -> Registry {
    Registry::default()
}

/// The child side of a `uses:` stage (`repro internal run-kind SPEC`): run the kind's body
/// here, or hand the stage to the program that holds it (exec, same pid). Returns only on
/// failure or after the body ran here.
pub fn run_spec(registry: &Registry, spec_path: &std::path::Path) -> Result<()> {
    let ctx = StageContext::read(spec_path)?;
    if let Host::Program(TORCH_PROGRAM) = registry.host(&ctx.kind)? {
        return Err(exec_torch(&[
            "internal".as_ref(),
            "run-kind".as_ref(),
            spec_path.as_os_str(),
        ]));
    }
    // A body here, or an error naming the program it needs.
    registry
        .run(&ctx)
        .with_context(|| format!("stage '{}' ({})", ctx.stage, ctx.kind))
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
