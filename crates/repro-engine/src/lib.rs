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

// Stages are supervised with Linux interfaces (prctl, process groups, wait4, /proc).
#[cfg(not(target_os = "linux"))]
compile_error!(
    "repro runs on Linux only (it supervises stages with prctl, wait4 and process groups)"
);

pub mod cache;
pub mod compare;
pub mod completion;
pub mod confine;
pub mod confine_rule;
pub mod declared;
pub mod environment;
pub mod executor;
pub mod experiments;
pub mod fsutil;
pub mod gitignore;
pub mod graph;
pub mod kinds;
pub mod maintenance;
pub mod metrics_file;
pub mod plan;
pub mod plots;
pub mod progress;
pub mod remote;
pub mod remote_url;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod schema;
pub mod session;
pub mod spec;
pub mod state;
pub mod status;
pub mod submit;
pub mod targets;
pub mod trace;
pub mod trace_file;
pub mod ui;
pub mod verify;
