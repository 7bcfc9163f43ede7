//! The run cache: a stage key → the outputs it produced (a [`RunRecord`] in the state
//! database, the bytes in the content-addressed objects). Before a stage runs, what its
//! outputs hold is preserved and they are cleared; after it succeeds, its outputs are stored
//! and recorded; when its key is found, they are restored, each byte verified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::CorruptObject;
use crate::spec::Stage;
use crate::state::db::RunRecord;
use crate::state::hashing::{Content, FILE_MODE};
use crate::state::workspace::{Assessment, Workspace};

/// The assessment of a stage just restored: every restored byte was hashed while it was
/// copied and matched the record, so the record's hashes are the outputs' hashes; the stat
/// cache learns them, and nothing is read again.
pub(crate) fn restored_assessment(
    ws: &Workspace,
    a: &Assessment,
    rec: &RunRecord,
) -> Result<Assessment> {
    let mut outs = BTreeMap::new();
    for (path, hash) in &rec.outs {
        let content = if rec.dirs.contains(path) {
            let m = ws.objects.manifest_full(hash)?;
            let files = m.files;
            for f in &files {
                let rel = format!("{path}/{}", f.path);
                let on_disk = ws.root.join(path).join(f.rel_path());
                ws.stat.record(&rel, &std::fs::metadata(on_disk)?, &f.hash);
            }
            Content::Dir {
                hash: hash.clone(),
                files,
                empty_dirs: m.empty_dirs,
                links: m.links,
            }
        } else {
            let meta = std::fs::metadata(ws.root.join(path))?;
            ws.stat.record(path, &meta, hash);
            Content::File {
                hash: hash.clone(),
                size: meta.len(),
                mode: rec.file_mode(path),
            }
        };
        outs.insert(path.clone(), content);
    }
    Ok(Assessment {
        fingerprint: a.fingerprint.clone(),
        key: a.key.clone(),
        reasons: Vec::new(),
        changes: Vec::new(),
        outs,
    })
}

pub(crate) fn restore(ws: &Workspace, rec: &RunRecord) -> Result<()> {
    // Check every object first, so a damaged entry does not half-restore a stage. An output
    // whose objects are not here but whose workspace copy already holds the recorded content
    // (an output declared `cache: false`, say) needs nothing restored.
    let mut skip = Vec::new();
    for (path, hash) in &rec.outs {
        let is_dir = rec.dirs.contains(path);
        let missing = if is_dir {
            match ws.objects.manifest(hash) {
                Ok(files) => files
                    .iter()
                    .find(|f| !ws.objects.has(&f.hash))
                    .map(|f| ws.objects.object_path(&f.hash)),
                Err(_) if !ws.objects.has(hash) => Some(ws.objects.object_path(hash)),
                Err(e) => return Err(e),
            }
        } else {
            (!ws.objects.has(hash)).then(|| ws.objects.object_path(hash))
        };
        let Some(missing) = missing else {
            continue;
        };
        if ws
            .hasher()
            .content(path)
            .ok()
            .as_ref()
            .and_then(Content::hash)
            == Some(hash.as_str())
        {
            skip.push(path);
            continue;
        }
        if ws.objects.is_uncached(path) {
            anyhow::bail!(
                "output {path} is declared `cache: false`, so only its stage can make it again"
            );
        }
        return Err(CorruptObject {
            path: missing,
            detail: "missing".into(),
        }
        .into());
    }
    for (path, hash) in &rec.outs {
        if skip.contains(&path) {
            continue;
        }
        ws.objects.restore(
            hash,
            rec.dirs.contains(path),
            rec.file_mode(path),
            &ws.root.join(path),
        )?;
    }
    Ok(())
}

/// Put what a stage's outputs hold now into the cache (objects already there are skipped;
/// outputs declared `cache: false` are never stored).
pub(crate) fn preserve_outputs(ws: &Workspace, a: &Assessment) -> Result<()> {
    for (path, content) in &a.outs {
        if !matches!(content, Content::Missing) && !ws.objects.is_uncached(path) {
            ws.objects
                .store(&ws.root.join(path), content)
                .with_context(|| format!("saving the previous {path} in the cache"))?;
        }
    }
    Ok(())
}

/// Tell the stat cache what an output whose files were just replaced by links to their
/// objects holds (the bytes are those just hashed; only the inodes changed).
fn record_stats(ws: &Workspace, path: &str, content: &Content) -> Result<()> {
    match content {
        Content::File { hash, .. } => {
            ws.stat
                .record(path, &std::fs::metadata(ws.root.join(path))?, hash)
        }
        Content::Dir { files, .. } => {
            for f in files {
                let on_disk = ws.root.join(path).join(f.rel_path());
                ws.stat.record(
                    &format!("{path}/{}", f.path),
                    &std::fs::metadata(on_disk)?,
                    &f.hash,
                );
            }
        }
        Content::Missing => {}
    }
    Ok(())
}

/// Before a stage runs: keep what its outputs hold now (in the cache, so nothing is lost),
/// clear them so a stage never builds on its own stale output, create their parents, and
/// ready the checkpoint directory (wiped if it belongs to another configuration).
pub(crate) fn prepare_outputs(ws: &Workspace, stage: &Stage, a: &Assessment) -> Result<()> {
    preserve_outputs(ws, a)?;
    for (path, content) in &a.outs {
        ws.stat.forget_recent(path);
        let full = ws.root.join(path);
        // A dangling symlink reads as missing, but a stage writing through it would create
        // its target, a path nobody declared: the link goes too.
        if !matches!(content, Content::Missing) || std::fs::symlink_metadata(&full).is_ok() {
            super::remove_any(&full);
        }
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
    }
    if let Some(cp) = &stage.checkpoint {
        let dir = ws.root.join(cp);
        let marker = dir.join(crate::confine::CHECKPOINT_MARKER);
        let owner = std::fs::read_to_string(&marker).unwrap_or_default();
        if owner.trim() != a.key {
            super::remove_any(&dir);
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create checkpoint directory {}", dir.display()))?;
        std::fs::write(&marker, &a.key)?;
    }
    Ok(())
}

/// Refuse symbolic links inside a stage's output directories that lead out of the workspace.
/// The hasher follows a link that leaves its directory (a restore makes it a copy: only links
/// that stay inside are kept as links), so one leaving the workspace would copy outside bytes (a
/// key, a secret) into the cache and on to a remote. Like an output that is such a link, it is
/// the stage's own doing: the stage fails, nothing is stored, and the links are removed so the
/// workspace stays usable. (Links inside a directory reached through a followed link are not
/// looked at.)
fn check_inner_links(ws: &Workspace, stage: &Stage) -> Result<()> {
    fn scan(root: &Path, dir: &Path, rel: &str, bad: &mut Vec<(String, PathBuf)>) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for e in entries {
            let e = e?;
            let rel = format!("{rel}/{}", e.file_name().to_string_lossy());
            let t = e.file_type()?;
            if t.is_symlink() {
                // A dangling link is the hasher's error (or an internal link, kept as is).
                if let Ok(real) = e.path().canonicalize()
                    && !real.starts_with(root)
                {
                    bad.push((rel, e.path()));
                }
            } else if t.is_dir() {
                scan(root, &e.path(), &rel, bad)?;
            }
        }
        Ok(())
    }
    let root = ws.root.canonicalize()?;
    let mut bad = Vec::new();
    for o in &stage.outs {
        let full = ws.root.join(&o.path);
        if std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
            scan(&root, &full, &o.path, &mut bad)?;
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = bad
        .iter()
        .map(|(rel, path)| {
            let target = std::fs::read_link(path).unwrap_or_default();
            let removed = std::fs::remove_file(path).is_ok();
            format!(
                "'{rel}' is a symlink to {}, outside the workspace{}",
                target.display(),
                if removed { " (removed)" } else { "" }
            )
        })
        .collect();
    anyhow::bail!(
        "output {}; nothing was stored (a stage's outputs must be files or directories inside the workspace)",
        named.join("; ")
    )
}

/// After a stage succeeded: check it produced every declared output, store them in the
/// objects, and remember the run under its key. Returns the stage's assessment now.
pub(crate) fn commit_outputs(
    ws: &Workspace,
    stage: &Stage,
    before: &Assessment,
    seconds: f64,
) -> Result<Assessment> {
    // Before anything reads through an output the stage made a symlink out of the workspace.
    crate::confine::check_outputs_produced(&ws.root, stage)?;
    check_inner_links(ws, stage)?;
    let missing: Vec<&str> = stage
        .outs
        .iter()
        .map(|o| o.path.as_str())
        .filter(|o| !ws.root.join(o).exists())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "exited 0 but did not produce declared output{} {}",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", ")
        );
    }
    let paths: Vec<&str> = stage.outs.iter().map(|o| o.path.as_str()).collect();
    let contents = ws.hasher().contents(&paths)?;
    let mut outs = BTreeMap::new();
    let mut dirs = Vec::new();
    let mut modes = BTreeMap::new();
    for (path, content) in paths.iter().zip(&contents) {
        if !stage.uncached.iter().any(|u| u == path) {
            let full = ws.root.join(path);
            ws.objects
                .store(&full, content)
                .with_context(|| format!("storing output {path} in the cache"))?;
            if ws
                .objects
                .link_output(&full, content)
                .with_context(|| format!("linking output {path} to the cache"))?
            {
                record_stats(ws, path, content)?;
            }
        }
        outs.insert(
            path.to_string(),
            content.hash().expect("exists").to_string(),
        );
        match content {
            Content::Dir { .. } => dirs.push(path.to_string()),
            Content::File { mode, .. } if *mode != FILE_MODE => {
                modes.insert(path.to_string(), *mode);
            }
            _ => {}
        }
    }
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let rec = RunRecord {
        stage: stage.name.clone(),
        outs,
        dirs,
        created,
        seconds,
        fingerprint: Some(before.fingerprint.clone()),
        metrics: stage.metric_paths(),
        modes,
        // Captured on the first stage this process records, then reused.
        environment: Some(crate::environment::of_stage(stage)),
    };
    ws.db()?.put_run(&before.key, &rec)?;
    if let Some(cp) = &stage.checkpoint {
        // Done: the checkpoint has served its purpose.
        super::remove_any(&ws.root.join(cp));
    }
    let mut a = before.clone();
    a.outs = paths.iter().map(|p| p.to_string()).zip(contents).collect();
    a.reasons.clear();
    Ok(a)
}
