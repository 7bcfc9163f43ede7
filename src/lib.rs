//! `repro`: a make-like pipeline engine that reproduces "Rediscovering BCE Loss for Uniform
//! Classification" and runs your own experiments.
//!
//! Data flows one way through the modules:
//! `spec` (parse + expand pipeline.yaml) → `graph` (DAG) → `state` (hashes, stage keys, lock,
//! why-stale) → `scheduler` / `executor` (run children) → `cache` (content-addressed outputs).
//! Built-in stage kinds live in `kinds`; the science in `metrics`, `ml`, `data`, `report`
//! knows nothing about the engine.

pub mod cache;
pub mod cli;
pub mod db;
pub mod engine;
pub mod executor;
pub mod fingerprint;
pub mod graph;
pub mod hashing;
pub mod kinds;
pub mod lockfile;
pub mod maintenance;
pub mod progress;
pub mod run;
pub mod spec;
pub mod status;

pub mod data;
pub mod metrics;
pub mod ml_spec;
pub mod report;
pub mod weights;
