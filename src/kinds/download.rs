//! The `download` stage kind: obtain files from URLs or local paths, verify their checksums,
//! optionally extract archives, and place the result atomically at `out`.
//!
//! Two forms of `with:` parameters:
//! - one file: `sources`, one of `sha256` / `md5` / `content_sha256`, optional `extract`,
//!   and `out` (the file, or the directory to extract into);
//! - a dataset: `recipe: stages/datasets/<name>.yaml` and `out` (a directory that receives every
//!   file of the recipe, archives extracted), plus `local_dir` for datasets that cannot be
//!   downloaded (ImageNet-1K).
//!
//! Transfers resume from the stage's checkpoint directory when one is declared.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::data::atomic::{self, StagedDir};
use crate::data::extract::{self, Format};
use crate::data::fetch::{self, FetchOptions, Fetched};
use crate::data::recipe::{FileSpec, Recipe};
use repro_engine::kinds::{Kind, Run, StageContext, param_error, progress};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Dataset recipe (YAML) whose `files` are downloaded.
    #[serde(default)]
    recipe: Option<PathBuf>,
    /// Single-file form: where to get it.
    #[serde(default)]
    sources: Option<Vec<String>>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    md5: Option<String>,
    #[serde(default)]
    content_sha256: Option<String>,
    /// The first 8+ hex digits of the sha256 (all that torchvision's file names state).
    #[serde(default)]
    sha256_prefix: Option<String>,
    #[serde(default)]
    extract: Option<Format>,
    /// Where the result goes (workspace-relative).
    out: PathBuf,
    /// A directory holding the files by name (tried before the recipe's sources); required for
    /// licensed data such as ImageNet-1K.
    #[serde(default)]
    local_dir: Option<PathBuf>,
    /// Accept files whose checksum is unknown (null in the recipe).
    #[serde(default)]
    allow_unverified: bool,
    /// Attempts per HTTP source.
    #[serde(default = "default_attempts")]
    attempts: u32,
    /// First retry delay in milliseconds (doubles each retry).
    #[serde(default = "default_backoff_ms")]
    backoff_ms: u64,
    /// Connect/read timeout in seconds.
    #[serde(default = "default_timeout_s")]
    timeout_s: u64,
}

fn default_attempts() -> u32 {
    5
}
fn default_backoff_ms() -> u64 {
    2000
}
fn default_timeout_s() -> u64 {
    60
}

impl Params {
    /// The checksum parameter of the single-file form, when exactly one is given.
    fn checksum_param(&self) -> Option<&'static str> {
        let given: Vec<&'static str> = [
            ("sha256", &self.sha256),
            ("md5", &self.md5),
            ("content_sha256", &self.content_sha256),
            ("sha256_prefix", &self.sha256_prefix),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_ref().map(|_| name))
        .collect();
        match given[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The files to obtain, and whether `out` is one file (single-file form, not extracted).
    fn files(&self, ws: &Path) -> Result<(Vec<FileSpec>, Option<Recipe>)> {
        match (&self.recipe, &self.sources) {
            (Some(_), Some(_)) => bail!("`download`: give either `recipe` or `sources`, not both"),
            (None, None) => bail!("`download`: give `recipe` (a dataset) or `sources` (one file)"),
            (Some(r), None) => {
                if self.sha256.is_some()
                    || self.md5.is_some()
                    || self.content_sha256.is_some()
                    || self.sha256_prefix.is_some()
                {
                    bail!(
                        "`download`: checksums come from the recipe; remove sha256/md5/content_sha256/sha256_prefix"
                    );
                }
                let recipe = Recipe::load(&ws.join(r))?;
                Ok((recipe.files.clone(), Some(recipe)))
            }
            (None, Some(sources)) => {
                let name = self
                    .out
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "download".into());
                Ok((
                    vec![FileSpec {
                        name,
                        sources: sources.clone(),
                        sha256: self.sha256.clone(),
                        md5: self.md5.clone(),
                        content_sha256: self.content_sha256.clone(),
                        sha256_prefix: self.sha256_prefix.clone(),
                        extract: self.extract.unwrap_or(Format::None),
                    }],
                    None,
                ))
            }
        }
    }
}

pub struct Download;

impl Kind for Download {
    type Params = Params;

    fn name(&self) -> &'static str {
        "download"
    }

    fn version(&self) -> u32 {
        1
    }

    fn written_paths(&self, p: &Params) -> Vec<(&'static str, PathBuf)> {
        vec![("out", p.out.clone())]
    }

    fn check(&self, p: &Params) -> Result<()> {
        if p.recipe.is_none() {
            let (files, _) = p.files(Path::new("."))?;
            for f in &files {
                // A malformed checksum is the one checksum parameter given; none or several
                // given is about `with:` as a whole.
                f.checksum(p.allow_unverified)
                    .map_err(|e| match p.checksum_param() {
                        Some(param) => param_error(param, format!("{e:#}")).into(),
                        None => e,
                    })?;
            }
        }
        Ok(())
    }
}

impl Run for Download {
    fn run(&self, p: Params, ctx: &StageContext) -> Result<()> {
        let (files, recipe) = p.files(&ctx.workspace)?;
        let opts = FetchOptions {
            attempts: p.attempts,
            backoff: Duration::from_millis(p.backoff_ms),
            timeout: Duration::from_secs(p.timeout_s),
        };
        let out = ctx.path(&p.out);
        let part_dir = match &ctx.checkpoint {
            Some(c) => ctx.path(c),
            None => atomic::parent_dir(&out)?,
        };
        std::fs::create_dir_all(&part_dir)
            .with_context(|| format!("creating {}", part_dir.display()))?;
        let local_only = recipe.as_ref().is_some_and(|r| r.local_only);
        if local_only && p.local_dir.is_none() {
            let note = recipe
                .as_ref()
                .and_then(|r| r.licence_note.clone())
                .unwrap_or_default();
            bail!(
                "dataset '{}' cannot be downloaded without a licence: obtain its files ({}) and \
                 set `local_dir:` to the directory that holds them. {note}",
                recipe.as_ref().map(|r| r.name.as_str()).unwrap_or("?"),
                files
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }

        // Verify every checksum field before touching the network.
        let checks: Vec<_> = files
            .iter()
            .map(|f| f.checksum(p.allow_unverified))
            .collect::<Result<_>>()?;

        let single_file = recipe.is_none() && files[0].extract == Format::None;
        let staged = if single_file {
            None
        } else {
            Some(StagedDir::new(&out)?)
        };
        let n = files.len();
        for (i, (f, check)) in files.iter().zip(&checks).enumerate() {
            let mut sources = Vec::new();
            if let Some(d) = &p.local_dir {
                sources.push(ctx.path(d).join(&f.name).to_string_lossy().into_owned());
            }
            if !local_only {
                sources.extend(f.sources.iter().cloned());
            }
            let label = format!("[{}/{n}] {}", i + 1, f.name);
            let part = part_dir.join(format!(".{}.part", f.name));
            let got = fetch::fetch(
                &sources,
                check,
                &part,
                &ctx.workspace,
                &label,
                &opts,
                &progress::report,
            )?;
            match (&staged, f.extract) {
                (None, _) => place(&got, &out)?,
                (Some(s), Format::None) => place(&got, &s.path().join(&f.name))?,
                (Some(s), fmt) => {
                    progress::report(&format!("{label}: extracting"), None);
                    extract::extract(got.path(), fmt, s.path())?;
                    if let Fetched::Downloaded(part) = &got {
                        std::fs::remove_file(part).ok();
                    }
                }
            }
        }
        if let Some(s) = staged {
            s.promote()?;
        }
        progress::report(&format!("placed {}", p.out.display()), Some(1.0));
        Ok(())
    }
}

fn place(got: &Fetched, dest: &Path) -> Result<()> {
    match got {
        Fetched::Downloaded(part) => {
            atomic::parent_dir(dest)?;
            std::fs::rename(part, dest)
                .with_context(|| format!("moving {} to {}", part.display(), dest.display()))
        }
        Fetched::Local(src) => atomic::place_copy(src, dest),
    }
}
