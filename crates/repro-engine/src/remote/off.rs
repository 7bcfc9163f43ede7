//! The remote cache in a build without the `remote` feature (`cargo install --path .
//! --no-default-features`): the same names as the real one, so the run loop and the CLI
//! compile unchanged, but a configured remote (`--remote`, `REPRO_REMOTE`, the pipeline's
//! `remote:`), `repro pull`, `repro push` and `repro cache verify --remote` stop with one
//! error that says how to get it, rather than a run that silently ignores the remote.

use std::path::Path;

use anyhow::{Result, bail};

use super::RemoteArgs;
use crate::progress::Progress;
use crate::spec::{Pipeline, Stage};
use crate::state::db::RunRecord;
use crate::state::workspace::{Assessment, Workspace};

/// What every remote operation says in this build.
pub(super) const NOT_BUILT: &str =
    "this repro was built without the remote cache; rebuild with --features remote";

/// The error for `what` (the command or setting that asked for a remote).
fn not_built(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {NOT_BUILT}")
}

/// The remote as `repro run` sees it in this build: never configured.
pub struct RunRemote(());

impl RunRemote {
    /// Fails when a remote is asked for (or `repro pull` runs), names where it came from.
    pub fn new(args: &RemoteArgs, p: &Pipeline) -> Result<RunRemote> {
        if args.pull_only {
            return Err(not_built("repro pull"));
        }
        if args.no_remote {
            return Ok(RunRemote(()));
        }
        let what = if args.remote.is_some() {
            "--remote".to_string()
        } else if std::env::var("REPRO_REMOTE").is_ok_and(|s| !s.is_empty()) {
            "REPRO_REMOTE".to_string()
        } else if p.remote.is_some() {
            format!("`remote:` in {}", p.file.display())
        } else {
            return Ok(RunRemote(()));
        };
        Err(anyhow::anyhow!(
            "{what}: {NOT_BUILT} (or pass --no-remote to run without it)"
        ))
    }

    /// Always `false`: [`RunRemote::new`] refuses a configured remote.
    pub fn is_configured(&self) -> bool {
        false
    }

    /// Always `false`: nothing is prefetched.
    pub(crate) fn take_prefetched(&self, _key: &str) -> bool {
        false
    }

    /// Always `false`: `repro pull` is refused.
    pub(crate) fn pull_only(&self) -> bool {
        false
    }

    /// Nothing to fetch from.
    pub(crate) fn fetch(
        &self,
        _ws: &Workspace,
        _stage: &Stage,
        _id: usize,
        _key: &str,
        _progress: &mut Progress,
    ) -> Result<Option<RunRecord>> {
        Ok(None)
    }

    /// Nothing to prefetch.
    pub(crate) fn prefetch(&self, _ws: &Workspace, _planned: &[(&Stage, &Assessment)]) {}
}

/// `repro push` in this build.
pub mod push {
    use super::*;
    use crate::spec::LoadOptions;

    /// Refused: see [`NOT_BUILT`].
    pub fn push(
        _file: &Path,
        _load: &LoadOptions,
        _targets: &[String],
        _args: &RemoteArgs,
        _all: bool,
    ) -> Result<i32> {
        bail!(not_built("repro push"))
    }
}

/// `repro pull --exp` in this build.
pub mod exp {
    use super::*;
    use crate::spec::LoadOptions;

    /// Refused: see [`NOT_BUILT`].
    pub fn pull(
        _file: &Path,
        _load: &LoadOptions,
        _args: &RemoteArgs,
        _what: &str,
        _apply: bool,
    ) -> Result<i32> {
        bail!(not_built("repro pull --exp"))
    }
}

/// `repro cache verify --remote` in this build.
pub mod verify {
    use super::*;

    /// Refused: see [`NOT_BUILT`].
    pub fn verify(_file: &Path, _args: &RemoteArgs) -> Result<i32> {
        bail!(not_built("repro cache verify --remote"))
    }
}

/// The partial downloads directory: there are none in this build.
pub(crate) mod transfer {
    use super::*;

    /// Nothing to clear (never called: no remote is configured in this build).
    pub(crate) fn clear_tmp(_cache_dir: &Path) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_verify_say_how_to_get_the_remote() {
        let args = RemoteArgs::default();
        let e = push::push(Path::new("p.yaml"), &Default::default(), &[], &args, false);
        let e = format!("{:#}", e.unwrap_err());
        assert!(
            e.starts_with("repro push: ") && e.contains("--features remote"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            verify::verify(Path::new("p.yaml"), &args).unwrap_err()
        );
        assert!(e.contains(NOT_BUILT), "{e}");
    }
}
