//! `repro`: a make-like pipeline engine that reproduces "Rediscovering BCE Loss for Uniform
//! Classification" and runs your own experiments.
//!
//! Data flows one way through the modules (docs/architecture.md draws it):
//! `spec` (parse + expand pipeline.yaml) → `graph` (DAG) → state (`hashing`, `fingerprint`,
//! `lockfile`, `db`, `engine::assess`) → `plan` (one verdict per stage, for `run`, `--dry-run`
//! and `status`) → `run` (the scheduler) → `executor` (local or Slurm) → `cache`
//! (content-addressed outputs). Built-in stage kinds live in `kinds`; the science in
//! `metrics`, `data`, `report` knows nothing about the engine.

// Stages are supervised with Linux interfaces (prctl, process groups, wait4, /proc).
#[cfg(not(target_os = "linux"))]
compile_error!(
    "repro runs on Linux only (it supervises stages with prctl, wait4 and process groups)"
);

pub mod cache;
pub mod cli;
pub mod compare;
pub mod confine;
pub mod db;
pub mod engine;
pub mod executor;
pub mod fingerprint;
pub mod fsutil;
pub mod graph;
pub mod hashing;
pub mod init;
pub mod kinds;
pub mod lockfile;
pub mod maintenance;
pub mod plan;
pub mod plan_cache;
pub mod progress;
pub mod remote;
pub mod run;
pub mod spec;
pub mod status;
pub mod submit;
pub mod targets;
pub mod trace;
pub mod trace_file;
pub mod ui;

pub mod data;
pub mod metrics;
pub mod ml_spec;
pub mod report;
pub mod weights;
