//! The `train` stage kind with its libtorch body. `repro::kinds::train::Train` is the same kind
//! as the engine sees it (parameters, version, written paths); this one delegates those to it
//! and adds the body, so that `repro-torch`'s registry can run it.

use std::path::PathBuf;

use anyhow::Result;
use repro_engine::kinds::{Kind, Run, StageContext, progress};

use crate::ml::train::{Checkpoint, RunEnv, TrainConfig, run};

// What the engine sees of `train`, owned by the `repro` package.
use repro::kinds::train::Train as Declared;

pub struct Train;

impl Kind for Train {
    type Params = TrainConfig;

    fn name(&self) -> &'static str {
        Declared.name()
    }

    fn version(&self) -> u32 {
        Declared.version()
    }

    fn check(&self, cfg: &TrainConfig) -> Result<()> {
        Declared.check(cfg)
    }

    fn written_paths(&self, cfg: &TrainConfig) -> Vec<(&'static str, PathBuf)> {
        Declared.written_paths(cfg)
    }
}

impl Run for Train {
    fn run(&self, cfg: TrainConfig, ctx: &StageContext) -> Result<()> {
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
