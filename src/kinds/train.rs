//! The `train` stage kind: pre-train or fine-tune a feature extractor and classifier head under
//! one of the twelve losses, and write `model.safetensors`, `logits.safetensors` (the input of
//! `evaluate`) and `train.json` into the `out` directory.
//!
//! Parameters are [`crate::ml_spec::config::TrainConfig`] (unknown fields rejected), checked
//! here before anything runs. The training itself needs libtorch and runs in the
//! `repro-torch` binary (`repro_torch::train_kind`), to which `repro internal run-kind` hands
//! the stage. A non-finite loss is never a stage failure: it is recorded in `train.json`.

use std::path::PathBuf;

use anyhow::Result;
use repro_engine::kinds::Kind;

use crate::ml_spec::config::TrainConfig;

/// The kind as the engine sees it: its parameters, version and outputs. Its body is
/// `repro_torch::train_kind`, registered where it runs (`crate::kinds::registry`).
pub struct Train;

/// Part of the stage key: bump when a change to training could change its outputs.
pub const TRAIN_VERSION: u32 = 1;

impl Kind for Train {
    type Params = TrainConfig;

    fn name(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        TRAIN_VERSION
    }

    fn written_paths(&self, cfg: &TrainConfig) -> Vec<(&'static str, PathBuf)> {
        // The files `repro-torch` writes into `out` (crates/repro-torch/src/ml/train.rs).
        let mut files = vec!["model.safetensors", "logits.safetensors", "train.json"];
        // The open-set study also scores the held-out classes' test images.
        if cfg.known_classes.is_some() {
            files.push("logits_unknown.safetensors");
        }
        files.iter().map(|f| ("out", cfg.out.join(f))).collect()
    }

    fn check(&self, cfg: &TrainConfig) -> Result<()> {
        cfg.validate().map(|_| ())
    }
}
