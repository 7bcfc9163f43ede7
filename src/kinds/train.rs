//! The `train` stage kind: pre-train or fine-tune a feature extractor and classifier head under
//! one of the twelve losses, and write `model.safetensors`, `logits.safetensors` (the input of
//! `evaluate`) and `train.json` into the `out` directory.
//!
//! Parameters are [`crate::ml_spec::config::TrainConfig`] (unknown fields rejected), checked
//! here before anything runs. The training itself needs libtorch and runs in the
//! `repro-torch` binary (`repro_torch::train_kind`), to which `repro internal run-kind` hands
//! the stage. A non-finite loss is never a stage failure: it is recorded in `train.json`.

use anyhow::{Context, Result, bail};

use super::{StageContext, StageKind};
use crate::ml_spec::config::TrainConfig;

pub struct Train;

/// Part of the stage key: bump when a change to training could change its outputs.
pub const TRAIN_VERSION: u32 = 1;

impl StageKind for Train {
    fn name(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        TRAIN_VERSION
    }

    fn written_paths(&self, params: &serde_json::Value) -> Vec<(&'static str, std::path::PathBuf)> {
        // The files `repro-torch` writes into `out` (crates/repro-torch/src/ml/train.rs).
        match super::path_param(params, "out") {
            Some(out) => {
                let mut files = vec!["model.safetensors", "logits.safetensors", "train.json"];
                // The open-set study also scores the held-out classes' test images.
                if params.get("known_classes").is_some_and(|k| !k.is_null()) {
                    files.push("logits_unknown.safetensors");
                }
                files.iter().map(|f| ("out", out.join(f))).collect()
            }
            None => Vec::new(),
        }
    }

    fn validate(&self, params: &serde_json::Value) -> Result<()> {
        let cfg: TrainConfig = serde_json::from_value(params.clone())
            .context("invalid `with:` parameters of a `train` stage")?;
        cfg.validate()?;
        Ok(())
    }

    fn run(&self, ctx: &StageContext) -> Result<()> {
        bail!(
            "stage '{}': `train` runs in the repro-torch binary (libtorch), not in repro",
            ctx.stage
        )
    }

    fn needs_libtorch(&self) -> bool {
        true
    }
}
