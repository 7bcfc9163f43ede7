//! The `import_weights` stage kind: a torchvision checkpoint (`torch.save` file, typically
//! placed by a `download` stage) converted to safetensors with repro's variable names, for
//! `train`'s `init_from`. See [`crate::weights`].
//!
//! Parameters: `arch` (resnet50 | resnet101 | densenet161), `input` (the .pth), `out` (the
//! .safetensors), and optionally `sha256` (a full digest or a prefix of at least 8 hex digits;
//! by default the prefix in a torchvision file name, `resnet50-0676ba61.pth`, is checked).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

use repro_engine::kinds::{Kind, Run, StageContext, bail_param, param_error, progress};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Params {
    arch: String,
    input: PathBuf,
    out: PathBuf,
    #[serde(default)]
    sha256: Option<String>,
}

pub struct ImportWeights;

impl Kind for ImportWeights {
    type Params = Params;

    fn name(&self) -> &'static str {
        "import_weights"
    }

    fn version(&self) -> u32 {
        1
    }

    fn written_paths(&self, p: &Params) -> Vec<(&'static str, PathBuf)> {
        vec![("out", p.out.clone())]
    }

    fn check(&self, p: &Params) -> Result<()> {
        crate::weights::expected_names(&p.arch).context(param_error("arch", "parameter `arch`"))?;
        if let Some(h) = &p.sha256
            && (h.len() < 8 || h.len() > 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            bail_param!(
                "sha256",
                "parameter `sha256` must be 8 to 64 hex digits, got '{h}'"
            );
        }
        Ok(())
    }
}

impl Run for ImportWeights {
    fn run(&self, p: Params, ctx: &StageContext) -> Result<()> {
        progress::report(
            &format!("importing {} as {}", p.input.display(), p.arch),
            None,
        );
        let done = crate::weights::import(
            &p.arch,
            &ctx.path(&p.input),
            &ctx.path(&p.out),
            p.sha256.as_deref(),
        )?;
        progress::report(
            &format!(
                "wrote {} ({} tensors, {} classes)",
                p.out.display(),
                done.tensors,
                done.classes
            ),
            Some(1.0),
        );
        Ok(())
    }
}
