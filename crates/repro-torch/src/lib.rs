//! `repro-torch`: the part of repro that links libtorch — feature extractors, the twelve losses
//! of Table I as tensors, SGD training (`ml`), the prefetching image loader (`loader`) and the
//! `train` stage kind that runs them (`train_kind`).
//!
//! The engine (`repro`) never loads libtorch: it validates `train` stages with the plain-data
//! vocabulary in `repro::ml_spec` and runs them by handing `repro internal run-kind` over to
//! this crate's binary.

pub mod bench;
pub mod loader;
pub mod ml;
pub mod train_kind;
