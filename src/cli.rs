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
    /// Run the pipeline (or TARGETs and what they need), skipping fresh stages.
    Run(RunArgs),
    /// Show, per stage, whether it is fresh or stale and exactly why.
    Status(StatusArgs),
    /// Print the stage graph.
    Dag(DagArgs),
    /// Cache maintenance.
    Cache {
        #[command(subcommand)]
        what: CacheCmd,
    },
    /// Remove cache objects that no lock entry or kept run-cache entry references.
    Gc(GcArgs),
    /// Evaluate a logits file: A_SW, A_CW, A_Uni, t* (and after SoftMax).
    Eval(EvalArgs),
    /// Print libtorch version, CUDA/cuDNN availability and devices.
    Doctor,
    /// Pre-trained weights: `repro weights import ARCH IN.pth OUT.safetensors`.
    Weights {
        #[command(subcommand)]
        what: WeightsCmd,
    },
    /// Internal: run one built-in stage kind (the engine spawns this as a child).
    #[command(hide = true)]
    Internal {
        #[command(subcommand)]
        what: Internal,
    },
}

/// Options shared by commands that read the pipeline.
#[derive(Args, Clone)]
pub struct PipelineArgs {
    /// Pipeline file.
    #[arg(short = 'f', long = "file", default_value = "pipeline.yaml")]
    pub file: PathBuf,
    /// Profile (a named set of vars files in the pipeline's `profiles:`).
    #[arg(long)]
    pub profile: Option<String>,
    /// Override a variable: --set train.lr=0.01 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl PipelineArgs {
    pub fn load_options(&self) -> anyhow::Result<crate::spec::LoadOptions> {
        let overrides = self
            .set
            .iter()
            .map(|s| {
                s.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--set expects KEY=VALUE, got '{s}'"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(crate::spec::LoadOptions { profile: self.profile.clone(), overrides })
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// Stage names or globs (`train@*`); their upstream runs as needed. Default: all.
    pub targets: Vec<String>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Stages to run at once (default: number of cores).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Show what would run, and why, without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Run the selected stages even if fresh (no cache restore).
    #[arg(long)]
    pub force: bool,
    /// After a failure, keep running stages that do not depend on it.
    #[arg(short = 'k', long)]
    pub keep_going: bool,
    /// Resource slots, e.g. --resources gpu=2.
    #[arg(long, value_name = "NAME=N")]
    pub resources: Vec<String>,
    /// Where stages run: local (default) or slurm.
    #[arg(long)]
    pub executor: Option<String>,
    /// If another run holds this workspace, wait for it instead of failing.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    pub targets: Vec<String>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// One JSON array of {stage, state, reasons, restorable}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DagArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// text, dot, mermaid or json (every stage with its kind or command, resolved `with:`,
    /// deps and outs).
    #[arg(long, default_value = "text")]
    pub format: String,
}

#[derive(Subcommand)]
pub enum CacheCmd {
    /// Re-hash every cache object; report and remove corrupt ones.
    Verify {
        #[arg(short = 'f', long = "file", default_value = "pipeline.yaml")]
        file: PathBuf,
    },
}

#[derive(Args)]
pub struct GcArgs {
    #[arg(short = 'f', long = "file", default_value = "pipeline.yaml")]
    pub file: PathBuf,
    /// Keep only the newest N run-cache entries per stage.
    #[arg(long)]
    pub keep_last: Option<usize>,
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
pub enum WeightsCmd {
    /// Convert a torchvision checkpoint (torch.save file) to safetensors with repro's names.
    Import {
        /// resnet50, resnet101 or densenet161.
        arch: String,
        input: PathBuf,
        output: PathBuf,
        /// Expected sha256 (or its first 8+ hex digits); default: the prefix in a torchvision
        /// file name such as resnet50-0676ba61.pth.
        #[arg(long)]
        sha256: Option<String>,
    },
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
/// A write past `ulimit -f` must fail with EFBIG (reported, nothing recorded), not kill the
/// process: each binary calls this first thing in `main`.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal disposition at start-up, before any thread exists.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

pub fn main() -> i32 {
    ignore_file_size_signal();
    let mut phases = crate::progress::Phases::start();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd_run(args),
        Command::Status(args) => cmd_status(args),
        Command::Dag(args) => cmd_dag(args),
        Command::Cache { what: CacheCmd::Verify { file } } => crate::maintenance::verify(&workspace_of(&file)),
        Command::Gc(args) => crate::maintenance::gc(&workspace_of(&args.file), args.keep_last),
        Command::Eval(args) => crate::metrics::cli_eval(&args),
        Command::Doctor => Err(crate::kinds::exec_torch(&["doctor".as_ref()])),
        Command::Weights { what: WeightsCmd::Import { arch, input, output, sha256 } } => {
            crate::weights::import(&arch, &input, &output, sha256.as_deref()).map(|r| {
                println!("{}: {} tensors, {} classes", output.display(), r.tensors, r.classes);
                0
            })
        }
        Command::Internal { what: Internal::RunKind { spec } } => run_kind(&spec),
    };
    phases.mark("whole command");
    match result {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}");
            // Spec errors are already rendered as `error: …` blocks.
            if text.starts_with("error:") { eprintln!("{text}") } else { eprintln!("error: {text}") }
            1
        }
    }
}

/// The workspace root: the directory of the pipeline file.
fn workspace_of(file: &std::path::Path) -> PathBuf {
    crate::spec::workspace_root(file)
}

fn cmd_run(args: RunArgs) -> anyhow::Result<i32> {
    let mut gpus = None;
    for r in &args.resources {
        match r.split_once('=') {
            Some(("gpu" | "gpus", n)) => gpus = Some(n.parse().map_err(|_| anyhow::anyhow!("--resources gpu=N: '{n}' is not a number"))?),
            _ => anyhow::bail!("unknown resource '{r}' (supported: gpu=N)"),
        }
    }
    let opts = crate::run::RunOptions {
        file: args.pipeline.file.clone(),
        load: args.pipeline.load_options()?,
        targets: args.targets,
        jobs: args.jobs,
        dry_run: args.dry_run,
        force: args.force,
        keep_going: args.keep_going,
        gpus,
        executor: args.executor,
        wait: args.wait,
    };
    crate::run::run(&opts)
}

fn cmd_status(args: StatusArgs) -> anyhow::Result<i32> {
    let st = crate::status::status(&args.pipeline.file, &args.pipeline.load_options()?, &args.targets)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        crate::status::print(&st);
    }
    Ok(0)
}

fn cmd_dag(args: DagArgs) -> anyhow::Result<i32> {
    let (p, dag) = crate::run::load(&args.pipeline.file, &args.pipeline.load_options()?)?;
    print!("{}", crate::graph::render(&p, &dag, &args.format)?);
    Ok(0)
}

/// The child side of a built-in stage: read the spec the engine wrote, run the kind (or hand
/// it to `repro-torch` when it needs libtorch).
fn run_kind(spec_path: &std::path::Path) -> anyhow::Result<i32> {
    let spec = crate::kinds::KindSpec::read(spec_path)?;
    let kind = crate::kinds::lookup(&spec.kind)?;
    if kind.needs_libtorch() {
        return Err(crate::kinds::exec_torch(&["internal".as_ref(), "run-kind".as_ref(), spec_path.as_os_str()]));
    }
    crate::kinds::run_spec(kind.as_ref(), &spec)?;
    Ok(0)
}
