//! What a training run *is*, as plain data: the twelve loss names of Table I, the model names
//! and the `train` stage's parameters with their checks. No libtorch here: the engine (this
//! crate) validates and fingerprints `train` stages with it, and only the `repro-torch` binary,
//! which links libtorch, runs them. Keeping libtorch out of `repro` keeps every engine command
//! free of its ~0.5 s start-up.

pub mod config;
pub mod loss;
pub mod model;
