//! Command-line interface: parses arguments and hands off to the module that owns each command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "repro", version, about = "Reproducible, cached, parallel ML pipelines")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Evaluate a logits file: A_SW, A_CW, A_Uni, t* (and after SoftMax).
    Eval(EvalArgs),
    /// Print libtorch version, CUDA/cuDNN availability and devices.
    Doctor,
    /// Internal: run one built-in stage kind (the engine spawns this as a child).
    #[command(hide = true)]
    Internal {
        #[command(subcommand)]
        what: Internal,
    },
}

#[derive(Args)]
pub struct EvalArgs {
    /// safetensors file with `logits` [n, N] and `labels` [n].
    #[arg(long)]
    pub logits: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum Internal {
    /// Run a built-in kind from a stage specification file (JSON).
    RunKind {
        /// Path to the stage specification written by the engine.
        spec: PathBuf,
    },
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => crate::metrics::cli_eval(&args),
        Command::Doctor => crate::ml::doctor(),
        Command::Internal { what: Internal::RunKind { spec } } => run_kind(&spec),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// The child side of a built-in stage: read the spec the engine wrote, run the kind.
fn run_kind(spec: &std::path::Path) -> anyhow::Result<i32> {
    use anyhow::Context;
    let text = std::fs::read_to_string(spec)
        .with_context(|| format!("reading stage specification {}", spec.display()))?;
    let s: KindSpec = serde_json::from_str(&text)
        .with_context(|| format!("parsing stage specification {}", spec.display()))?;
    let kind = crate::kinds::lookup(&s.kind)?;
    let ctx = crate::kinds::StageContext {
        stage: s.stage,
        params: s.params,
        workspace: std::env::current_dir()?,
        checkpoint: s.checkpoint,
        threads: s.threads.max(1),
        gpus: s.gpus,
    };
    kind.run(&ctx).with_context(|| format!("stage '{}' ({})", ctx.stage, s.kind))?;
    Ok(0)
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
