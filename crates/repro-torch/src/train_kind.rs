//! The `train` stage kind with its libtorch body; `repro::kinds::train` is the same kind as the
//! engine sees it (name, version, parameter checks), and this one delegates those to it.

use anyhow::Result;
use repro::kinds::{StageContext, StageKind, progress};

use crate::ml::train::{RunEnv, TrainConfig, run};

pub struct Train;

impl StageKind for Train {
    fn name(&self) -> &'static str {
        repro::kinds::train::Train.name()
    }

    fn version(&self) -> u32 {
        repro::kinds::train::Train.version()
    }

    fn validate(&self, params: &serde_json::Value) -> Result<()> {
        repro::kinds::train::Train.validate(params)
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

    fn needs_libtorch(&self) -> bool {
        true
    }
}
