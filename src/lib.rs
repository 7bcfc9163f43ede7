//! `repro`: reproduce "Rediscovering BCE Loss for Uniform Classification" with one command, and
//! run your own experiments.
//!
//! This package is the science and the wiring. The pipeline engine (spec, graph, state, plan,
//! schedule, executors, cache) is the `repro-engine` crate, which cannot name anything here;
//! `cli` hands it the registry of this package's stage kinds (`kinds::registry`). The science
//! — `data`, `metrics`, `report`, `ml_spec`, `weights` — knows nothing about the engine:
//! progress and paths come in as arguments and callbacks (docs/architecture.md).

pub mod cli;
pub mod init;
pub mod kinds;

// The paper's science (the `paper` feature, on by default).
#[cfg(feature = "paper")]
pub mod data;
#[cfg(feature = "paper")]
pub mod metrics;
#[cfg(feature = "paper")]
pub mod ml_spec;
#[cfg(feature = "paper")]
pub mod report;
#[cfg(feature = "paper")]
pub mod weights;
