//! `cmd:`, the engine's built-in kind: a shell command line run with `sh -c`.
//!
//! Its one parameter is the command as interpolated (values spliced into it are quoted as
//! shell words, see `spec::interp`), so it is written `cmd: …` rather than `uses:` + `with:`,
//! whose values are not quoted. It keys on its text (`cmd: …`), as every lock file has.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::{Kind, Shell};

/// The name `cmd:` stages resolve to.
pub const NAME: &str = "cmd";

/// A shell command stage.
pub struct Cmd;

impl Kind for Cmd {
    type Params = String;

    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn check(&self, command: &String) -> Result<()> {
        if command.trim().is_empty() {
            bail!("`cmd:` is empty");
        }
        Ok(())
    }

    /// A command's writes are invisible to the engine: only its declared outputs are its own.
    fn written_paths(&self, _: &String) -> Vec<(&'static str, PathBuf)> {
        Vec::new()
    }

    fn key_text(&self, command: &String) -> Option<String> {
        Some(format!("cmd: {command}"))
    }
}

impl Shell for Cmd {
    fn command_line(&self, command: String) -> String {
        command
    }
}
