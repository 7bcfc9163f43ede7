//! The `train` stage kind: pre-train or fine-tune a feature extractor and classifier head under
//! one of the twelve losses, and write `model.safetensors`, `logits.safetensors` (the input of
//! `evaluate`) and `train.json` into the `out` directory.
//!
//! Parameters are [`crate::ml::train::TrainConfig`] (unknown fields rejected); CPU threads come
//! from the stage's `resources: {cpus: N}`, the checkpoint directory from `checkpoint:`.
//! A non-finite loss is never a stage failure: it is recorded in `train.json` (`diverged`).

use anyhow::{Context, Result};

use super::{StageContext, StageKind, progress};
use crate::ml::train::{RunEnv, TrainConfig, run};

pub struct Train;

impl StageKind for Train {
    fn name(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        1
    }

    fn validate(&self, params: &serde_json::Value) -> Result<()> {
        let cfg: TrainConfig =
            serde_json::from_value(params.clone()).context("invalid `with:` parameters of a `train` stage")?;
        cfg.validate()?;
        Ok(())
    }

    fn run(&self, ctx: &StageContext) -> Result<()> {
        let cfg: TrainConfig = ctx.params()?;
        let env = RunEnv {
            base: ctx.workspace.clone(),
            checkpoint: ctx.checkpoint.as_ref().map(|c| ctx.path(c)),
            threads: ctx.threads,
            progress: Box::new(progress::report),
        };
        run(&cfg, &env)?;
        Ok(())
    }
}
