//! The `preprocess` stage kind: turn a downloaded dataset into its training-ready form and
//! check it against the recipe's split sizes (Table IV of the paper).
//!
//! `with:` parameters: `recipe` (stages/datasets/<name>.yaml), `input` (the `download`
//! output directory), `out` (a directory), and for image sets `short_side` (default 256),
//! `quality` (JPEG quality, default 90) and `shard_mb` (default 64).
//!
//! The work, and the output's layout, are [`crate::data::prepare`]'s.

use std::path::PathBuf;

use anyhow::{Result, bail};
use repro_engine::kinds::{Kind, Run, StageContext, ensure_param, progress};
use serde::Deserialize;

use crate::data::prepare::{self, Encoding};
use crate::data::recipe::Recipe;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Params {
    recipe: PathBuf,
    input: PathBuf,
    out: PathBuf,
    /// Short side of the stored images, in pixels (image sets).
    #[serde(default = "default_short_side")]
    short_side: u32,
    /// JPEG quality of the stored images (image sets).
    #[serde(default = "default_quality")]
    quality: u8,
    /// Target shard size in MiB (image sets).
    #[serde(default = "default_shard_mb")]
    shard_mb: u64,
}

fn default_short_side() -> u32 {
    256
}
fn default_quality() -> u8 {
    90
}
fn default_shard_mb() -> u64 {
    64
}

pub struct Preprocess;

impl Kind for Preprocess {
    type Params = Params;

    fn name(&self) -> &'static str {
        "preprocess"
    }

    fn version(&self) -> u32 {
        1
    }

    fn written_paths(&self, p: &Params) -> Vec<(&'static str, PathBuf)> {
        vec![("out", p.out.clone())]
    }

    fn check(&self, p: &Params) -> Result<()> {
        ensure_param!(
            p.short_side >= 8,
            "short_side",
            "`preprocess`: short_side {} is too small (at least 8)",
            p.short_side
        );
        ensure_param!(
            (1..=100).contains(&p.quality),
            "quality",
            "`preprocess`: quality must be in 1..=100, got {}",
            p.quality
        );
        Ok(())
    }
}

impl Run for Preprocess {
    fn run(&self, p: Params, ctx: &StageContext) -> Result<()> {
        let recipe = Recipe::load(&ctx.path(&p.recipe))?;
        let input = ctx.path(&p.input);
        if !input.is_dir() {
            bail!(
                "`preprocess`: input {} is not a directory (run the download stage first)",
                input.display()
            );
        }
        let encoding = Encoding {
            short_side: p.short_side,
            quality: p.quality,
            shard_mb: p.shard_mb,
            threads: ctx.threads,
        };
        prepare::prepare(
            &recipe,
            &input,
            &ctx.path(&p.out),
            &encoding,
            &progress::report,
        )?;
        progress::report(&format!("preprocessed {}", recipe.name), Some(1.0));
        Ok(())
    }
}
