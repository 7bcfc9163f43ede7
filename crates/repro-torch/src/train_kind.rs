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
                key: stage_key(ctx)?,
            }),
            None => None,
        },
        threads: ctx.threads,
        progress: Box::new(progress::report),
    };
    run(&cfg, &env)?;
    Ok(())
}

/// The engine's key for this stage, handed over in the stage's context (locally and under
/// Slurm): the checkpoint belongs to it.
fn stage_key(ctx: &StageContext) -> Result<String> {
    if ctx.key.is_empty() {
        anyhow::bail!(
            "stage '{}': a `checkpoint:` directory belongs to one stage key, and the stage's \
             context names none (`repro run` writes it; add `\"key\"` to the context file to \
             run this stage by hand)",
            ctx.stage
        )
    }
    Ok(ctx.key.clone())
}
