//! `repro-engine`: the make-like pipeline engine of `repro`, with no knowledge of the science.
//!
//! Data flows one way through the modules (docs/architecture.md draws it):
//! `spec` (parse + expand pipeline.yaml) → `graph` (DAG) → `state` (hashing, fingerprints,
//! lock file, state DB, assessment) → `plan` (one verdict per stage, for `run`, `--dry-run` and
//! `status`) → `session` (the start-up every command shares) → `run` + `runner` (the loop,
//! with `schedule`) → `executor` (local or Slurm) → `cache` (content-addressed outputs and the
//! run cache). Stage kinds come in through [`kinds::Registry`], handed over by
//! the program that embeds the engine; this crate cannot name the paper's modules (they live in
//! the `repro` package, which depends on this one).
//!
//! # The public surface
//!
//! Every module is private except a few *rooms*, public modules whose names read well only
//! beside the module's own name; everything else a user needs is re-exported here, in the
//! groups below (docs/architecture.md lists them). The rooms:
//!
//! - [`kinds`]: the trait a science crate implements ([`kinds::Kind`], [`kinds::Run`]), the
//!   [`kinds::Registry`] it hands over, the context a stage body gets and its progress lines.
//! - [`executor`]: the other plug of the run loop: the [`executor::Executor`] trait a
//!   [`Runner`] hands jobs to (tests drive the loop with their own), and the Slurm executor.
//! - [`remote`]: the remote cache's options and commands; its HTTP stack is the `remote`
//!   cargo feature, and without it the same names stand in and say how to get it.
//! - [`compare`] and [`experiments`]: the comparing commands, over run records and over
//!   named experiments; their verbs (`diff`, `apply`, `print_diff`, `keep_metrics`) repeat, so
//!   the module says which.
//! - [`trace_file`]: the line format of `cache/trace.jsonl`, which the engine writes and the
//!   report's timeline reads.
//!
//! tests/architecture.rs fails when a `pub mod` appears here that is not one of these.

#![warn(missing_docs)]
#![warn(unreachable_pub)]

// Stages are supervised with Linux interfaces (prctl, process groups, wait4, /proc).
#[cfg(not(target_os = "linux"))]
compile_error!(
    "repro runs on Linux only (it supervises stages with prctl, wait4 and process groups)"
);

// The rooms (see above).
pub mod compare;
pub mod executor;
pub mod experiments;
pub mod kinds;
pub mod remote;
pub mod trace_file;

mod cache;
mod completion;
mod confine;
mod confine_rule;
mod declared;
mod environment;
mod fsutil;
mod gitignore;
mod graph;
mod maintenance;
mod metrics_file;
mod plan;
mod plots;
mod progress;
mod remote_url;
mod run;
mod runner;
mod schedule;
mod schema;
mod session;
mod spec;
mod state;
mod status;
mod submit;
mod targets;
mod trace;
mod ui;
mod verify;

// Loading a pipeline: pipeline.yaml parsed, expanded and checked, its DAG, its JSON schema.
pub use graph::{Dag, render as render_dag};
pub use schema::pipeline_schema;
pub use session::load_pipeline;
pub use spec::{
    LoadOptions, Pipeline, SpecError, SpecErrors, Stage, load, normalise as normalise_path,
    workspace_root,
};

// Running: `repro run`, and the session and run loop it is made of (for a program or test
// that drives the loop with its own executor).
pub use progress::Phases;
pub use run::{RunOptions, run};
pub use runner::{Config as RunnerConfig, Finished, Runner, Summary};
pub use session::{Access, Open, Opened, Session, UpToDate};
pub use state::db::StateDb;
pub use state::workspace::write_lock;

// The other commands: one function per `repro` subcommand (the command line itself lives in
// the `repro` package).
pub use completion::{
    addition as completion_addition, stage_names as completion_stage_names,
    top_level_names as completion_top_level_names,
};
pub use maintenance::{gc, verify as verify_cache};
pub use plots::command as plots_command;
pub use status::{StageStatus, State as StageState, print as print_status, status};
pub use submit::{status_lines as submit_status_lines, submit};
pub use trace::print as print_trace;
pub use verify::{VerifyOptions, verify};

// Terminal output: verbosity and colour, set once at start-up.
pub use ui::{ColorChoice, Level as Verbosity, configure as configure_output};

// What the embedding program adds to the environment a run records.
pub use environment::{Facts, contribute as contribute_environment};

// File helpers the science uses too: durable atomic writes, the `.gitignore` block of outputs.
pub use fsutil::{write_atomic, write_atomic_with};
pub use gitignore::with_block as gitignore_with_block;

// `repro internal …`: the entry points of the engine's own child processes.
pub use executor::measure::measure as internal_measure;
pub use executor::supervise::main as internal_supervise;
