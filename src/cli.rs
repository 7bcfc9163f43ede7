//! Command-line interface: parses arguments and hands off to the module that owns each command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "repro",
    version,
    about = "Reproducible, cached, parallel ML pipelines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print only errors, failures and warnings.
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also show each stage's output, prefixed by its name (its log is written either way).
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    /// Colour output: auto (a terminal, and NO_COLOR unset), always or never.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: repro_engine::ColorChoice,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start a workspace: write a small runnable pipeline.yaml and ignore cache/ in .gitignore.
    Init(InitArgs),
    /// Run the pipeline (or TARGETs and what they need), skipping fresh stages.
    Run(RunArgs),
    /// Run the pipeline as a Slurm job (`repro run` with these options), so you can log out;
    /// its log goes to cache/submit/, and `repro status` shows how it is doing.
    Submit(RunArgs),
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
    /// Upload the outputs and run-cache entries of fresh stages to the remote cache.
    Push(PushArgs),
    /// Fetch what the current configuration needs from the remote cache and place it.
    Pull(PullArgs),
    /// Evaluate a logits file: A_SW, A_CW, A_Uni, t* (and after SoftMax).
    #[cfg(feature = "paper")]
    Eval(EvalArgs),
    /// Compare params between two sources: workspace, lock, a git revision, a run-cache id.
    Params {
        #[command(subcommand)]
        what: ParamsCmd,
    },
    /// Show or compare metrics (the numbers in stages' `metrics:` files).
    Metrics {
        #[command(subcommand)]
        what: MetricsCmd,
    },
    /// The configurations the run cache knows: compare them, bring one back.
    Exp {
        #[command(subcommand)]
        what: ExpCmd,
    },
    /// Draw stages' `plots:` (series and images) into one offline HTML page.
    Plots {
        #[command(subcommand)]
        what: PlotsCmd,
    },
    /// What each stage run cost: wall and CPU time, peak memory, GPUs, how it ended, where.
    Trace(TraceArgs),
    /// Rerun fresh stages in a scratch copy under cache/verify/ and compare their outputs with
    /// the recorded ones (identical, within tolerance, differs, could not run); exit 1 on any
    /// difference. See docs/reproducibility.md.
    Verify(VerifyArgs),
    /// Print libtorch version, CUDA/cuDNN availability and devices.
    #[cfg(feature = "paper")]
    Doctor,
    /// Print the JSON Schema of pipeline.yaml (for editors; see docs/pipeline.md#editor-support).
    Schema {
        /// Write it to this file instead of standard output.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print a shell completion script: repro completions bash > ~/.local/share/bash-completion/completions/repro
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Pre-trained weights: `repro weights import ARCH IN.pth OUT.safetensors`.
    #[cfg(feature = "paper")]
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

#[derive(Args)]
pub struct InitArgs {
    /// Directory to initialise (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
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
    /// Most stages foreach/matrix may expand to (default 100000, or REPRO_MAX_STAGES).
    #[arg(long, value_name = "N")]
    pub max_stages: Option<usize>,
}

impl PipelineArgs {
    pub fn load_options(&self) -> anyhow::Result<repro_engine::LoadOptions> {
        let overrides = self
            .set
            .iter()
            .map(|s| {
                s.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--set expects KEY=VALUE, got '{s}'"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(repro_engine::LoadOptions {
            profile: self.profile.clone(),
            overrides,
            max_stages: self.max_stages,
            kinds: std::sync::Arc::new(crate::kinds::registry()),
        })
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// Stage names, globs (`train@*`) or output paths (runs what produces them); their
    /// upstream runs as needed. Default: all.
    pub targets: Vec<String>,
    /// Also run every stage downstream of the targets.
    #[arg(long)]
    pub downstream: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Stages to run at once (default: number of cores).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Show what would run, and why, without running anything.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Run the selected stages even if fresh (no cache restore), and let them replace what
    /// lies at their outputs and checkpoints even if repro did not produce it.
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
    /// Name the experiment this run records (`repro exp show` lists it, `exp apply NAME`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub remote: repro_engine::remote::RemoteArgs,
}

/// `repro push` / `repro pull`.
#[derive(Args)]
pub struct TransferArgs {
    /// Stage names or globs; their upstream comes along. Default: all.
    pub targets: Vec<String>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[command(flatten)]
    pub remote: repro_engine::remote::RemoteArgs,
}

#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Also push every other configuration in the local run cache (other `--set` values,
    /// earlier parameters) whose objects are all in the local cache, not only what
    /// repro.lock records.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Pull one experiment (an id from `repro exp show`, a prefix of 4+ digits, or a name),
    /// found here or on the remote, and restore the workspace to it as `exp apply` does.
    #[arg(long, value_name = "ID|NAME", conflicts_with = "targets")]
    pub exp: Option<String>,
    /// With --exp: only fetch it into the cache; the workspace stays as it is.
    #[arg(long, requires = "exp")]
    pub no_apply: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Stage names, globs (`train@*`) or output paths, with what they need. Default: all.
    pub targets: Vec<String>,
    /// Also show every stage downstream of the targets.
    #[arg(long)]
    pub downstream: bool,
    /// Exit with status 1 when any selected stage is stale (for CI and scripts).
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// One JSON array of {stage, state, reasons, restorable} (every stage).
    #[arg(long)]
    pub json: bool,
    /// Every stage, fresh ones too (by default they are only counted).
    #[arg(long)]
    pub all: bool,
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
        /// Pipeline file (its directory is the workspace whose cache is checked).
        #[arg(short = 'f', long = "file", default_value = "pipeline.yaml")]
        file: PathBuf,
        /// Verify the remote cache instead (the configured one, or URL).
        #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
        remote: Option<String>,
    },
}

#[derive(Args)]
pub struct GcArgs {
    /// Pipeline file (its directory is the workspace whose cache is collected).
    #[arg(short = 'f', long = "file", default_value = "pipeline.yaml")]
    pub file: PathBuf,
    /// Keep only the newest N run-cache entries per stage (those an experiment uses stay).
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Keep only these experiments (ids or names, comma-separated) and the run-cache entries
    /// they and the lock use; the other experiments and entries go. Default: keep every one.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub keep_exp: Vec<String>,
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

/// How a comparison is printed.
#[derive(Args, Clone, Copy)]
pub struct FormatArgs {
    /// Print JSON.
    #[arg(long, conflicts_with = "md")]
    pub json: bool,
    /// Print a Markdown table.
    #[arg(long)]
    pub md: bool,
}

impl FormatArgs {
    fn format(self) -> repro_engine::compare::Format {
        use repro_engine::compare::Format;
        if self.json {
            Format::Json
        } else if self.md {
            Format::Markdown
        } else {
            Format::Text
        }
    }
}

fn cmd_metrics_show(
    source: Option<&str>,
    format: FormatArgs,
    pipeline: &PipelineArgs,
) -> anyhow::Result<i32> {
    let cx = repro_engine::compare::Records::load(&pipeline.file, &pipeline.load_options()?)?;
    let src = cx.source(source.unwrap_or("workspace"))?;
    repro_engine::compare::print_metrics(&cx.snapshot(&src)?, format.format())?;
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn cmd_exp_show(
    targets: &[String],
    stages: bool,
    sort: Option<&str>,
    ascending: bool,
    metrics: &[String],
    format: FormatArgs,
    pipeline: &PipelineArgs,
) -> anyhow::Result<i32> {
    if !stages && targets.is_empty() {
        use repro_engine::experiments as exp;
        let mut rows = exp::rows(&workspace_of(&pipeline.file))?;
        if let Some(m) = sort {
            exp::sort_rows(&mut rows, m, ascending)?;
        }
        if !metrics.is_empty() {
            exp::keep_metrics(&mut rows, metrics);
        }
        exp::print(&rows, format.format())?;
        return Ok(0);
    }
    let cx = repro_engine::compare::Records::load(&pipeline.file, &pipeline.load_options()?)?;
    let mut rows = repro_engine::compare::experiments(&cx, targets)?;
    if let Some(m) = sort {
        repro_engine::compare::sort_by_metric(&mut rows, m, ascending)?;
    }
    if !metrics.is_empty() {
        repro_engine::compare::keep_metrics(&mut rows, metrics);
    }
    repro_engine::compare::print_experiments(&rows, format.format())?;
    Ok(0)
}

fn cmd_exp_apply(id: &str, pipeline: &PipelineArgs) -> anyhow::Result<i32> {
    // An experiment (the whole pipeline), else a run-cache id of one stage (`--stages`).
    let load = pipeline.load_options()?;
    let lines = if repro_engine::experiments::exists(&workspace_of(&pipeline.file), id) {
        repro_engine::experiments::apply(&pipeline.file, &load, id)?
    } else {
        repro_engine::compare::apply(&pipeline.file, &load, id)?
    };
    for line in lines {
        println!("{line}");
    }
    Ok(0)
}

fn cmd_verify(args: VerifyArgs) -> anyhow::Result<i32> {
    if let Some(t) = args.tolerance {
        anyhow::ensure!(
            t >= 0.0 && t.is_finite(),
            "--tolerance must be a finite number >= 0"
        );
    }
    repro_engine::verify(&repro_engine::VerifyOptions {
        load: args.pipeline.load_options()?,
        file: args.pipeline.file,
        targets: args.targets,
        sample: args.sample,
        seed: args.seed,
        tolerance: args.tolerance,
        ignore: args.ignore,
        json: args.json,
        write: args.write,
    })
}

fn cmd_trace(args: &TraceArgs) -> anyhow::Result<i32> {
    let mut entries = repro_engine::trace_file::read(&workspace_of(&args.file).join("cache"))?;
    if args.last {
        entries = repro_engine::trace_file::last_run(entries);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        repro_engine::print_trace(&entries);
    }
    Ok(0)
}

/// `params diff` / `metrics diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// The "before": workspace, lock (what last ran), a git revision (its committed
    /// repro.lock) or a run-cache id. Default: HEAD when in git, else lock.
    pub a: Option<String>,
    /// The "after", same forms. Default: workspace.
    pub b: Option<String>,
    /// Also list what did not change.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Subcommand)]
pub enum ParamsCmd {
    /// Params (declared `params:` and built-in kinds' `with:` values) that differ.
    Diff(DiffArgs),
}

#[derive(Subcommand)]
pub enum MetricsCmd {
    /// Every metric of one source (default: workspace).
    Show {
        /// workspace, lock, a git revision or a run-cache id.
        source: Option<String>,
        #[command(flatten)]
        format: FormatArgs,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Metrics that differ between two sources.
    Diff(DiffArgs),
}

#[derive(Subcommand)]
pub enum PlotsCmd {
    /// The workspace's plots (the configurations of a foreach/matrix on the same axes):
    /// writes the page and prints its path.
    Show {
        /// Stage names, base names, globs (`train@*`) or plot files. Default: every plot.
        targets: Vec<String>,
        #[command(flatten)]
        out: PlotsOut,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// The plots of two or more sources on the same axes (an experiment's id or name, a
    /// run-cache id, workspace, lock, a git revision); one source is compared with the
    /// workspace.
    Diff {
        /// What to compare: an experiment's id or name, a run-cache id, `workspace`, `lock` or
        /// a git revision (two or more; one is compared with the workspace).
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
        /// Only these stages or plot files (names, base names, globs; repeatable).
        #[arg(short = 't', long = "target", value_name = "TARGET")]
        targets: Vec<String>,
        #[command(flatten)]
        out: PlotsOut,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
}

/// Where `repro plots` writes its page, and how it reports.
#[derive(Args)]
pub struct PlotsOut {
    /// The HTML file to write (default: cache/plots/show.html or diff.html).
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the page's path and every chart's data as JSON.
    #[arg(long)]
    pub json: bool,
}

fn cmd_plots(
    sources: &[String],
    targets: &[String],
    out: &PlotsOut,
    pipeline: &PipelineArgs,
) -> anyhow::Result<i32> {
    let (path, plots) = repro_engine::plots_command(
        &pipeline.file,
        &pipeline.load_options()?,
        sources,
        targets,
        out.out.as_deref(),
    )?;
    if out.json {
        let mut v = serde_json::to_value(&plots)?;
        v["page"] = serde_json::json!(path);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if plots.charts.is_empty() {
            eprintln!("no plots to draw: declare `plots:` on a stage, then run it");
        }
        for m in &plots.missing {
            eprintln!("warning: plot file not there: {m}");
        }
        println!("{}", path.display());
    }
    Ok(0)
}

#[derive(Subcommand)]
pub enum ExpCmd {
    /// One row per experiment (each `repro run` records the whole pipeline's configuration):
    /// id, name, time, commit, the params that differ and the metrics. With --stages or
    /// TARGETs: every configuration the run cache knows for the selected stages.
    Show {
        /// Stage names, base names or globs (`gamma_sweep@*`); implies --stages.
        targets: Vec<String>,
        /// One row per run-cache entry of each stage instead of one per experiment.
        #[arg(long)]
        stages: bool,
        /// Order by this metric, largest first (e.g. a_uni).
        #[arg(long, value_name = "METRIC")]
        sort: Option<String>,
        /// With --sort: smallest first.
        #[arg(long, requires = "sort")]
        ascending: bool,
        /// Show only these metrics (comma-separated names, e.g. a_uni,a_sw).
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        metrics: Vec<String>,
        #[command(flatten)]
        format: FormatArgs,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Restore an experiment's outputs (every stage's) from the cache, or none when any
    /// cannot be; or, given a run-cache id of `exp show --stages`, one stage's.
    Apply {
        /// An experiment id or name, or a run-cache id (a prefix of the stage key).
        id: String,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// The params, metrics and stage keys that differ between two experiments.
    Diff {
        /// Experiment id or name.
        a: String,
        /// Experiment id or name.
        b: String,
        #[command(flatten)]
        format: FormatArgs,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Forget experiments (their cache entries stay until `repro gc`).
    Remove {
        /// Experiment ids or names.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Stage names, globs or output paths to verify (only these, not their upstream).
    /// Default: every stage.
    pub targets: Vec<String>,
    /// Verify K of the selected fresh stages, picked at random (see --seed).
    #[arg(long, value_name = "K")]
    pub sample: Option<usize>,
    /// Seed of --sample's pick (default: from the clock, and printed).
    #[arg(long, value_name = "S", requires = "sample")]
    pub seed: Option<u64>,
    /// Numbers in declared metrics files and .safetensors arrays may differ by at most T.
    #[arg(long, value_name = "T")]
    pub tolerance: Option<f64>,
    /// A JSON field that measures the run, not its result (`train_seconds`, or a dotted path
    /// with `*`: `epochs.*.seconds`); a JSON file differing only in such fields counts as
    /// identical (repeatable).
    #[arg(long, value_name = "FIELD")]
    pub ignore: Vec<String>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the latest result of every stage in the lock to FILE (JSON; a report
    /// stage's `verified:` input).
    #[arg(long, value_name = "FILE")]
    pub write: Option<PathBuf>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Args)]
pub struct TraceArgs {
    /// Only the stages of the newest `repro run`.
    #[arg(long)]
    pub last: bool,
    /// Print the entries as a JSON array.
    #[arg(long)]
    pub json: bool,
    /// Pipeline file (its directory is the workspace whose trace is read).
    #[arg(short = 'f', long = "file", default_value = "pipeline.yaml")]
    pub file: PathBuf,
}

#[derive(Subcommand)]
pub enum WeightsCmd {
    /// Convert a torchvision checkpoint (torch.save file) to safetensors with repro's names.
    Import {
        /// resnet50, resnet101 or densenet161.
        arch: String,
        /// The torchvision checkpoint (a `torch.save` file: zip or legacy pickle).
        input: PathBuf,
        /// The safetensors file to write (replaced atomically).
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
    /// Run a stage's command under a supervisor that stops its whole process tree when the
    /// engine goes away (see `executor::supervise`).
    Supervise {
        /// Where to write the stage's wall/CPU time and peak memory (JSON) for the run trace.
        #[arg(long)]
        usage: Option<PathBuf>,
        /// The stage's command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<std::ffi::OsString>,
    },
    /// Print the pipeline's stage or profile names, one a line (for shell completion).
    Complete {
        /// `stages` or `profiles`.
        what: String,
        /// Pipeline file whose stages or profiles are listed.
        #[arg(short = 'f', long = "file", default_value = "pipeline.yaml")]
        file: PathBuf,
    },
    /// Run a command and write its wall/CPU time and peak memory (JSON) for the run trace.
    Measure {
        /// Where to write the measurement.
        out: PathBuf,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

/// Entry point; returns the process exit code.
/// A write past `ulimit -f` must fail with EFBIG (reported, nothing recorded), not kill the
/// process: each binary calls this first thing in `main`.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal disposition at start-up, before any thread exists.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// Whether the command only reads and prints (a table, JSON, a graph, a script): such a command
/// may end as soon as its reader goes away.
fn only_prints(c: &Command) -> bool {
    matches!(
        c,
        Command::Status(_)
            | Command::Dag(_)
            | Command::Params { .. }
            | Command::Metrics { .. }
            | Command::Trace(_)
            | Command::Completions { .. }
            | Command::Exp {
                what: ExpCmd::Show { .. } | ExpCmd::Diff { .. }
            }
    )
}

pub fn main() -> i32 {
    ignore_file_size_signal();
    let mut phases = repro_engine::Phases::start();
    let cli = Cli::parse();
    if only_prints(&cli.command) {
        // `repro exp show | head` ends quietly when head exits, as cat and git do, instead of
        // a panic on the closed pipe. Commands that change the workspace keep SIGPIPE ignored
        // (Rust's default), so a closed pipe can never stop them halfway.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => repro_engine::Verbosity::Quiet,
        (_, true) => repro_engine::Verbosity::Verbose,
        _ => repro_engine::Verbosity::Normal,
    };
    repro_engine::configure_output(level, cli.color);
    let result = match cli.command {
        Command::Init(args) => cmd_init(&args),
        Command::Run(args) => cmd_run(args),
        Command::Submit(args) => cmd_submit(args),
        Command::Status(args) => cmd_status(args),
        Command::Dag(args) => cmd_dag(args),
        Command::Cache {
            what: CacheCmd::Verify { file, remote: None },
        } => repro_engine::verify_cache(&workspace_of(&file)),
        Command::Cache {
            what:
                CacheCmd::Verify {
                    file,
                    remote: Some(url),
                },
        } => {
            let args = repro_engine::remote::RemoteArgs {
                remote: Some(url).filter(|u| !u.is_empty()),
                ..Default::default()
            };
            repro_engine::remote::verify::verify(&file, &args)
        }
        Command::Push(PushArgs {
            transfer: args,
            all,
        }) => args.pipeline.load_options().and_then(|load| {
            repro_engine::remote::push::push(
                &args.pipeline.file,
                &load,
                &args.targets,
                &args.remote,
                all,
            )
        }),
        Command::Pull(args) => cmd_pull(args),
        Command::Gc(args) => {
            repro_engine::gc(&workspace_of(&args.file), args.keep_last, &args.keep_exp)
        }
        #[cfg(feature = "paper")]
        Command::Eval(args) => crate::metrics::cli_eval(&args.logits, args.json),
        #[cfg(feature = "paper")]
        Command::Doctor => Err(crate::kinds::exec_torch(&["doctor".as_ref()])),
        Command::Schema { out } => cmd_schema(out.as_deref()),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "repro", &mut std::io::stdout());
            // Stage and profile names come from the pipeline at completion time.
            print!("{}", repro_engine::completion_addition(&shell.to_string()));
            Ok(0)
        }
        Command::Internal {
            what: Internal::Complete { what, file },
        } => cmd_complete(&what, &file),
        #[cfg(feature = "paper")]
        Command::Weights {
            what:
                WeightsCmd::Import {
                    arch,
                    input,
                    output,
                    sha256,
                },
        } => crate::weights::import(&arch, &input, &output, sha256.as_deref()).map(|r| {
            println!(
                "{}: {} tensors, {} classes",
                output.display(),
                r.tensors,
                r.classes
            );
            0
        }),
        Command::Internal {
            what: Internal::RunKind { spec },
        } => run_kind(&spec),
        // Straight out: nothing of the engine's (timings included) may reach the stage's log.
        Command::Internal {
            what: Internal::Supervise { usage, argv },
        } => std::process::exit(repro_engine::internal_supervise(&argv, usage.as_deref())),
        Command::Internal {
            what: Internal::Measure { out, argv },
        } => repro_engine::internal_measure(&out, &argv),
        Command::Params {
            what: ParamsCmd::Diff(args),
        } => cmd_diff(&args, false),
        Command::Metrics {
            what: MetricsCmd::Diff(args),
        } => cmd_diff(&args, true),
        Command::Metrics {
            what:
                MetricsCmd::Show {
                    source,
                    format,
                    pipeline,
                },
        } => cmd_metrics_show(source.as_deref(), format, &pipeline),
        Command::Exp {
            what:
                ExpCmd::Show {
                    targets,
                    stages,
                    sort,
                    ascending,
                    metrics,
                    format,
                    pipeline,
                },
        } => cmd_exp_show(
            &targets,
            stages,
            sort.as_deref(),
            ascending,
            &metrics,
            format,
            &pipeline,
        ),
        Command::Exp {
            what: ExpCmd::Apply { id, pipeline },
        } => cmd_exp_apply(&id, &pipeline),
        Command::Exp {
            what:
                ExpCmd::Diff {
                    a,
                    b,
                    format,
                    pipeline,
                },
        } => repro_engine::experiments::diff(&workspace_of(&pipeline.file), &a, &b)
            .and_then(|d| repro_engine::experiments::print_diff(&d, format.format()))
            .map(|()| 0),
        Command::Exp {
            what: ExpCmd::Remove { ids, pipeline },
        } => repro_engine::experiments::remove(&workspace_of(&pipeline.file), &ids).map(|lines| {
            lines.iter().for_each(|l| println!("{l}"));
            0
        }),
        Command::Plots {
            what:
                PlotsCmd::Show {
                    targets,
                    out,
                    pipeline,
                },
        } => cmd_plots(&[], &targets, &out, &pipeline),
        Command::Plots {
            what:
                PlotsCmd::Diff {
                    sources,
                    targets,
                    out,
                    pipeline,
                },
        } => cmd_plots(&sources, &targets, &out, &pipeline),
        Command::Trace(args) => cmd_trace(&args),
        Command::Verify(args) => cmd_verify(args),
    };
    phases.mark("whole command");
    match result {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}");
            // Spec errors are already rendered as `error: …` blocks.
            if text.starts_with("error:") {
                eprintln!("{text}")
            } else {
                eprintln!("error: {text}")
            }
            1
        }
    }
}

/// The workspace root: the directory of the pipeline file.
fn workspace_of(file: &std::path::Path) -> PathBuf {
    repro_engine::workspace_root(file)
}

/// `repro internal complete stages|profiles`: never an error (a shell is asking).
fn cmd_complete(what: &str, file: &std::path::Path) -> anyhow::Result<i32> {
    use repro_engine::{
        completion_stage_names as stage_names, completion_top_level_names as top_level_names,
    };
    let names = match what {
        "stages" => {
            let opts = repro_engine::LoadOptions {
                kinds: std::sync::Arc::new(crate::kinds::registry()),
                ..Default::default()
            };
            match repro_engine::load(file, &opts) {
                Ok(p) => stage_names(p.stages.into_iter().map(|s| s.name)),
                Err(_) => top_level_names(file, "stages"),
            }
        }
        "profiles" => top_level_names(file, "profiles"),
        _ => Vec::new(),
    };
    for n in names {
        println!("{n}");
    }
    Ok(0)
}

fn cmd_schema(out: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let text = crate::init::schema_text();
    match out {
        None => print!("{text}"),
        Some(path) => {
            repro_engine::write_atomic(path, text.as_bytes())?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(0)
}

fn cmd_init(args: &InitArgs) -> anyhow::Result<i32> {
    for line in crate::init::init(&args.dir)? {
        println!("{line}");
    }
    println!("next: repro run   (then repro status, repro exp show)");
    Ok(0)
}

/// `params diff` / `metrics diff`.
fn cmd_diff(args: &DiffArgs, metrics: bool) -> anyhow::Result<i32> {
    let cx =
        repro_engine::compare::Records::load(&args.pipeline.file, &args.pipeline.load_options()?)?;
    let a = match &args.a {
        Some(a) => cx.source(a)?,
        None => cx.default_base(),
    };
    let b = cx.source(args.b.as_deref().unwrap_or("workspace"))?;
    let (sa, sb) = (cx.snapshot(&a)?, cx.snapshot(&b)?);
    if metrics {
        repro_engine::compare::check_metrics(&sa)?;
        repro_engine::compare::check_metrics(&sb)?;
    }
    let rows = repro_engine::compare::diff(&sa, &sb, metrics, args.all);
    let what = if metrics { "metrics" } else { "params" };
    repro_engine::compare::print_diff(&rows, what, &a.label(), &b.label(), args.format.format())?;
    Ok(0)
}

fn cmd_run(args: RunArgs) -> anyhow::Result<i32> {
    if let Some(name) = &args.name {
        repro_engine::experiments::check_name(name)?;
    }
    let mut gpus = None;
    for r in &args.resources {
        match r.split_once('=') {
            Some(("gpu" | "gpus", n)) => {
                gpus = Some(
                    n.parse()
                        .map_err(|_| anyhow::anyhow!("--resources gpu=N: '{n}' is not a number"))?,
                )
            }
            _ => anyhow::bail!("unknown resource '{r}' (supported: gpu=N)"),
        }
    }
    let opts = repro_engine::RunOptions {
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
        downstream: args.downstream,
        remote: args.remote,
        name: args.name,
    };
    repro_engine::run(&opts)
}

/// `repro submit`: the same options, handed verbatim to the `repro run` of the Slurm job.
fn cmd_submit(args: RunArgs) -> anyhow::Result<i32> {
    if args.dry_run {
        anyhow::bail!("`repro submit` does not take --dry-run; use `repro run --dry-run`");
    }
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .skip_while(|a| a != "submit")
        .skip(1)
        .collect();
    repro_engine::submit(
        &args.pipeline.file,
        &args.pipeline.load_options()?,
        &raw,
        args.executor.is_some(),
    )
}

/// `repro pull` is a run that only restores: from the local run cache, else the remote.
fn cmd_pull(args: PullArgs) -> anyhow::Result<i32> {
    let PullArgs {
        transfer: args,
        exp,
        no_apply,
    } = args;
    if let Some(what) = exp {
        let load = args.pipeline.load_options()?;
        return repro_engine::remote::exp::pull(
            &args.pipeline.file,
            &load,
            &args.remote,
            &what,
            !no_apply,
        );
    }
    let opts = repro_engine::RunOptions {
        file: args.pipeline.file.clone(),
        load: args.pipeline.load_options()?,
        targets: args.targets,
        keep_going: true,
        remote: repro_engine::remote::RemoteArgs {
            pull_only: true,
            ..args.remote
        },
        ..Default::default()
    };
    repro_engine::run(&opts)
}

fn cmd_status(args: StatusArgs) -> anyhow::Result<i32> {
    let st = repro_engine::status(
        &args.pipeline.file,
        &args.pipeline.load_options()?,
        &args.targets,
        args.downstream,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        for line in repro_engine::submit_status_lines(&args.pipeline.file) {
            println!("{line}");
        }
        repro_engine::print_status(&st, args.all);
    }
    Ok(
        if args.check
            && st
                .iter()
                .any(|s| s.state != repro_engine::StageState::Fresh)
        {
            1
        } else {
            0
        },
    )
}

fn cmd_dag(args: DagArgs) -> anyhow::Result<i32> {
    let (p, dag) =
        repro_engine::load_pipeline(&args.pipeline.file, &args.pipeline.load_options()?)?;
    print!("{}", repro_engine::render_dag(&p, &dag, &args.format)?);
    Ok(0)
}

/// The child side of a built-in stage: read the spec the engine wrote, run the kind (or hand
/// it to `repro-torch` when it needs libtorch).
fn run_kind(spec_path: &std::path::Path) -> anyhow::Result<i32> {
    crate::kinds::run_spec(&crate::kinds::registry(), spec_path)?;
    Ok(0)
}
