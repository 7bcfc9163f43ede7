//! The `train` stage kind with its libtorch body; `repro::kinds::train` is the same kind as the
//! engine sees it (name, version, parameter checks), and this one delegates those to it.

use anyhow::Result;
use repro::kinds::{StageContext, StageKind, progress};

use crate::ml::train::{Checkpoint, RunEnv, TrainConfig, run};

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

    fn written_paths(&self, params: &serde_json::Value) -> Vec<(&'static str, std::path::PathBuf)> {
        repro::kinds::train::Train.written_paths(params)
    }

    fn run(&self, ctx: &StageContext) -> Result<()> {
        let cfg: TrainConfig = ctx.params()?;
        let env = RunEnv {
            base: ctx.workspace.clone(),
            checkpoint: match &ctx.checkpoint {
                Some(c) => Some(Checkpoint {
                    dir: ctx.path(c),
                    key: stage_key()?,
                }),
                None => None,
            },
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

/// The engine's key for this stage (`REPRO_KEY`, exported to every stage it runs, locally and
/// under Slurm): the checkpoint belongs to it.
fn stage_key() -> Result<String> {
    match std::env::var("REPRO_KEY") {
        Ok(k) if !k.is_empty() => Ok(k),
        _ => anyhow::bail!(
            "a `checkpoint:` directory belongs to one stage key, and REPRO_KEY is not set \
             (it is set by `repro run`; set it yourself to run this stage by hand)"
        ),
    }
}
