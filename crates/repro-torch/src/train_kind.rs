//! The body of the `train` stage kind, in libtorch. The kind itself (parameters, version,
//! written paths) is declared once, by `repro::kinds::train::Train`; `repro-torch` registers
//! that declaration with this body (`Registry::with_body`).

use anyhow::Result;
use repro_engine::kinds::{StageContext, progress};

use crate::ml::train::{Checkpoint, RunEnv, TrainConfig, run};

/// Train as `cfg` says, in the stage's workspace, resuming from its checkpoint directory.
pub fn body(cfg: TrainConfig, ctx: &StageContext) -> Result<()> {
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
