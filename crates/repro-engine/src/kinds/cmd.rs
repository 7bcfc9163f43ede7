//! `cmd:`, the engine's built-in kind: a shell command line run with `sh -c`.
//!
//! Its one parameter is the command as interpolated (values spliced into it are quoted as
//! shell words, see `spec::interp`), so it is written `cmd: …` rather than `uses:` + `with:`,
//! whose values are not quoted. It keys on its text (`cmd: …`), as every lock file has.
//! A stage that sets `env:` values or names a `container:` has the command and those as its
//! parameters ([`Wrapped`]); it keys on the same text (they enter the key as their own parts,
//! see `crate::declared`) and its command line is wrapped to set them.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::{Kind, Shell};

/// The name `cmd:` stages resolve to.
pub(crate) const NAME: &str = crate::spec::CMD_KIND;

/// A shell command stage.
pub(crate) struct Cmd;

/// The parameters of a `cmd:` stage: the command, or the command with what wraps it.
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum Params {
    Plain(String),
    Wrapped(Wrapped),
}

// Declared in spec (which builds it from a stage's `env:` and `container:`), so that the
// pipeline names nothing of the kinds; the name here keeps working.
pub(crate) use crate::spec::environ::Wrapped;

impl Params {
    fn command(&self) -> &str {
        match self {
            Params::Plain(c) => c,
            Params::Wrapped(w) => &w.cmd,
        }
    }
}

impl Kind for Cmd {
    type Params = Params;

    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn check(&self, params: &Params) -> Result<()> {
        if params.command().trim().is_empty() {
            bail!("`cmd:` is empty");
        }
        Ok(())
    }

    /// A command's writes are invisible to the engine: only its declared outputs are its own.
    fn written_paths(&self, _: &Params) -> Vec<(&'static str, PathBuf)> {
        Vec::new()
    }

    fn key_text(&self, params: &Params) -> Option<String> {
        Some(format!("cmd: {}", params.command()))
    }
}

impl Shell for Cmd {
    fn command_line(&self, params: Params) -> String {
        match params {
            Params::Plain(command) => command,
            Params::Wrapped(w) => {
                crate::declared::command_line(&w.cmd, &w.set, &w.pass, w.container.as_ref())
            }
        }
    }
}
