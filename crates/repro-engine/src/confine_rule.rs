//! The confinement rule's lexical part, a leaf that the state layer can use without the rest
//! of `confine` (which reads the lock and the workspace): which workspace paths are reserved,
//! whether a path read from `repro.lock` is acceptable, and which paths of a pipeline
//! `confine::check_pipeline` resolves through symlinks.

use crate::spec::{Pipeline, normalise};

/// Where checkpoint directories may live inside `cache/` (the engine's own area for them).
pub(crate) const CHECKPOINT_AREA: &str = "cache/checkpoints";

/// The file the engine writes into every checkpoint directory it creates (the stage key).
pub(crate) const CHECKPOINT_MARKER: &str = ".repro-key";

/// Why a normalised workspace-relative path may not be written, if it may not. `protected`:
/// files the engine never writes (the pipeline file, its vars files, `repro.lock`); an output
/// may be neither one of them, nor inside one, nor a directory holding one.
pub(crate) fn reserved(rel: &str, protected: &[String], checkpoint: bool) -> Option<String> {
    if rel.split('/').any(|c| c == ".git") {
        return Some("inside a .git directory".into());
    }
    if rel == "cache" || rel.starts_with("cache/") {
        let area = format!("{CHECKPOINT_AREA}/");
        if checkpoint && rel.starts_with(&area) && rel.len() > area.len() {
            return None;
        }
        return Some(if checkpoint {
            format!(
                "the engine's cache (a checkpoint may live in {CHECKPOINT_AREA}/NAME, or outside cache/)"
            )
        } else {
            "the engine's cache (cache/ holds its objects, state database and logs)".into()
        });
    }
    for p in protected {
        if rel == p {
            return Some("a file the engine never writes (the pipeline file, its vars files and repro.lock are protected)".into());
        }
        if p.len() > rel.len() && p.starts_with(rel) && p.as_bytes()[rel.len()] == b'/' {
            return Some(format!(
                "a directory holding {p}, which the engine never writes"
            ));
        }
        if rel.len() > p.len() && rel.starts_with(p.as_str()) && rel.as_bytes()[p.len()] == b'/' {
            return Some(format!("inside {p}, which the engine never writes"));
        }
    }
    None
}

/// The lexical part of the rule for a path read from `repro.lock`: normalised, relative,
/// not reserved. (The lock is shared with others: its paths are untrusted input.)
pub(crate) fn check_lock_path(path: &str) -> Result<(), String> {
    // What `spec::normalise` produces, checked without allocating (a lock has one path per
    // output of every stage, read on every run).
    if path.starts_with('/') {
        return Err(format!("'{path}' is absolute: outside the workspace"));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("'{path}' points outside the workspace"));
    }
    if path.split('/').any(|c| c.is_empty() || c == ".") {
        return Err(format!("'{path}' is not a normalised workspace path"));
    }
    if path == "repro.lock" {
        return Err(format!("'{path}' is the lock file itself"));
    }
    match reserved(path, &[], false) {
        Some(why) => Err(format!("'{path}' is {why}")),
        None => Ok(()),
    }
}

/// Every workspace path [`check_pipeline`] resolves through symlinks — outputs, checkpoints
/// and the paths kinds write — as it checks them; its verdict depends on nothing else on
/// disk (besides the workspace root), which is what `state::up_to_date` relies on.
pub(crate) fn resolved_paths(p: &Pipeline) -> Vec<String> {
    let mut paths = Vec::new();
    for s in &p.stages {
        paths.extend(s.outs.iter().map(|o| o.path.clone()));
        paths.extend(s.checkpoint.iter().cloned());
        for (_, w) in &s.action.resolved.writes {
            paths.extend(normalise(&w.to_string_lossy(), false));
        }
    }
    paths
}
