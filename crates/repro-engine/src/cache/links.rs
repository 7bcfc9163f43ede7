//! How outputs are placed in the workspace (the link modes) and where the objects live (the
//! workspace's own `cache/objects/` or a directory shared by several workspaces).
//!
//! The link modes are an ordered list, tried in turn for each file until one works:
//! `reflink` (a copy sharing blocks, on btrfs/XFS), `hardlink`, `symlink` (to the object's
//! absolute path) and `copy`. The default is reflink → copy: every output is a file of its
//! own. With hard or symbolic links an output is the cache object itself, stored once; such
//! files are read-only (objects are mode 0444), a stage never writes through them (its
//! outputs are removed before it runs), and only files of the ordinary mode 0644 are linked
//! (one inode cannot carry two modes; an executable is copied).
//!
//! Configuration: `cache: {link: [...], dir: ...}` in `pipeline.yaml`; `REPRO_CACHE_LINK`
//! (comma-separated) and `REPRO_CACHE_DIR` override it. A shared directory must exist already
//! (it is the user's declared choice, never created on a guess); the workspace records the
//! one in use in `cache/objects-dir` so that commands that do not read the pipeline (`gc`,
//! `cache verify`, `status`) find the same objects, and registers itself under the shared
//! directory's `workspaces/` so that `gc` can say whose objects they are.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::Cache;
use crate::state::hashing::{FILE_MODE, MODE_BITS};

// Declared in spec (which parses `cache:`), so that the pipeline names nothing of the cache;
// the names here keep working.
pub(crate) use crate::spec::cache_decl::{LinkMode, default_links, parse_list};

/// `REPRO_CACHE_LINK` when set: a comma-separated list of link modes.
pub(crate) fn env_links() -> Option<Result<Vec<LinkMode>>> {
    let v = std::env::var("REPRO_CACHE_LINK").ok()?;
    Some(parse_list(v.split(',')).map_err(|bad| {
        anyhow::anyhow!(
            "REPRO_CACHE_LINK: unknown link mode '{bad}' (known: {})",
            LinkMode::NAMES.join(", ")
        )
    }))
}

/// The file recording the shared directory a workspace's objects are in.
fn record_file(cache_dir: &Path) -> PathBuf {
    cache_dir.join("objects-dir")
}

/// The shared cache directory in use: `REPRO_CACHE_DIR`, else the one the last run recorded.
pub(crate) fn recorded_shared_dir(cache_dir: &Path) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("REPRO_CACHE_DIR").filter(|d| !d.is_empty()) {
        return std::fs::canonicalize(&d).ok().or(Some(PathBuf::from(d)));
    }
    let text = std::fs::read_to_string(record_file(cache_dir)).ok()?;
    let d = PathBuf::from(text.trim_end_matches('\n'));
    d.is_absolute().then_some(d)
}

/// Apply the pipeline's `cache:` (and the environment, which wins) to a workspace's cache:
/// its link modes, its shared directory (checked to be one, registered, recorded) and its
/// `cache: false` outputs. Called by the commands that store or restore (`run`, `pull`,
/// `push`).
pub(crate) fn configure(
    cache: &mut Cache,
    p: &crate::spec::Pipeline,
    cache_dir: &Path,
) -> Result<()> {
    cache.links = match env_links() {
        Some(r) => r?,
        None => p.cache.link.clone().unwrap_or_else(default_links),
    };
    cache.uncached = p
        .stages
        .iter()
        .flat_map(|s| s.uncached.iter().cloned())
        .collect();
    let (declared, origin) = match std::env::var_os("REPRO_CACHE_DIR").filter(|d| !d.is_empty()) {
        Some(d) => (Some(PathBuf::from(d)), "REPRO_CACHE_DIR"),
        None => (
            p.cache.dir.as_ref().map(|d| p.root.join(d)),
            "`cache: dir:` in pipeline.yaml",
        ),
    };
    let shared = match declared {
        None => None,
        Some(d) => {
            let real = std::fs::canonicalize(&d).with_context(|| {
                format!(
                    "the shared cache directory {} ({origin}) does not exist; create it first",
                    d.display()
                )
            })?;
            if !real.is_dir() {
                bail!(
                    "the shared cache directory {} ({origin}) is not a directory",
                    d.display()
                );
            }
            // The workspace's own cache named as "shared" is just the default.
            let own = std::fs::canonicalize(cache_dir).ok();
            (own.as_ref() != Some(&real)).then_some(real)
        }
    };
    let record = record_file(cache_dir);
    match &shared {
        Some(d) => {
            std::fs::create_dir_all(d.join("objects"))
                .with_context(|| format!("cannot create {}", d.join("objects").display()))?;
            register(d, &p.root)?;
            let text = format!("{}\n", d.display());
            if std::fs::read_to_string(&record).ok().as_deref() != Some(text.as_str()) {
                std::fs::create_dir_all(cache_dir)?;
                crate::fsutil::write_atomic(&record, text.as_bytes())?;
            }
        }
        None => {
            if record.exists() {
                std::fs::remove_file(&record)
                    .with_context(|| format!("cannot remove {}", record.display()))?;
            }
        }
    }
    cache.dir = shared
        .as_ref()
        .map_or_else(|| cache_dir.join("objects"), |d| d.join("objects"));
    cache.shared = shared;
    Ok(())
}

/// Note a workspace as a user of a shared cache: `workspaces/<hash of its path>` holds its
/// path (written once).
fn register(shared: &Path, root: &Path) -> Result<()> {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let text = format!("{}\n", root.display());
    let id = blake3::hash(text.as_bytes()).to_hex();
    let file = shared.join("workspaces").join(&id.as_str()[..16]);
    if std::fs::read_to_string(&file).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    std::fs::create_dir_all(file.parent().expect("has a parent"))?;
    crate::fsutil::write_atomic(&file, text.as_bytes())
        .with_context(|| format!("cannot register this workspace in {}", shared.display()))
}

/// The workspaces registered as users of a shared cache (their paths; those gone included).
pub(crate) fn registered(shared: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(shared.join("workspaces"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|t| t.trim_end().to_string())
        .collect();
    out.sort();
    out
}

/// A regular file (not a link) of the ordinary mode: one a hard or symbolic link can stand
/// for without changing what the hasher reads.
pub(crate) fn plain_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.mode() & MODE_BITS == FILE_MODE)
}

/// A file with one name only: hard-linking it into the cache (and making it read-only) touches
/// nothing but this output.
pub(crate) fn single_name(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.nlink() == 1)
}

/// blake3 of a file's bytes, hex (the workspace's hasher: a large file mapped one window at a
/// time, so its pages do not stay in the resident set).
pub(crate) fn hash_of(p: &Path) -> Result<String> {
    let h = crate::state::hashing::hash_file_bytes(p)?;
    Ok(blake3::Hash::from_bytes(h).to_hex().to_string())
}

/// Flush a file just linked into the cache and hash it (what [`super::copy_hashing`] does
/// for a copy).
pub(crate) fn sync_and_hash(p: &Path) -> Result<String> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| super::disk_error(e, p))?;
    hash_of(p)
}

impl Cache {
    /// Put the object `obj` at `to` (which must not exist) by the first link mode that works
    /// for it; returns the mode used. Links are made only for files of the ordinary mode.
    pub(crate) fn place(&self, obj: &Path, to: &Path, mode: u32) -> Result<LinkMode> {
        let mut last: Option<anyhow::Error> = None;
        for &m in &self.links {
            if m.is_link() && mode & MODE_BITS != FILE_MODE {
                continue;
            }
            match self.place_as(m, obj, to) {
                Ok(true) => return Ok(m),
                Ok(false) => {}
                Err(e) => last = Some(e),
            }
            let _ = std::fs::remove_file(to);
        }
        if let Some(e) = last {
            return Err(e);
        }
        // Only links and reflinks were listed and none was possible here (hard links cannot
        // cross file systems, most cannot reflink): a copy, rather than no output.
        if self.place_as(LinkMode::Copy, obj, to)? {
            return Ok(LinkMode::Copy);
        }
        bail!("cannot place {}", to.display())
    }

    /// One attempt; `Ok(false)`: not possible here (no reflink support, another file system).
    fn place_as(&self, m: LinkMode, obj: &Path, to: &Path) -> Result<bool> {
        match m {
            LinkMode::Hardlink => {
                read_only(obj)?;
                Ok(std::fs::hard_link(obj, to).is_ok())
            }
            LinkMode::Symlink => {
                read_only(obj)?;
                let target = std::path::absolute(obj)?;
                Ok(std::os::unix::fs::symlink(target, to).is_ok())
            }
            LinkMode::Reflink | LinkMode::Copy => {
                let mut input = std::fs::File::open(obj)
                    .with_context(|| format!("cannot read {}", obj.display()))?;
                let mut out = std::fs::File::create(to)
                    .with_context(|| format!("cannot create {}", to.display()))?;
                if super::reflink(&input, &out) {
                    return Ok(true);
                }
                if m == LinkMode::Reflink {
                    return Ok(false);
                }
                std::io::copy(&mut input, &mut out).map_err(|e| super::disk_error(e, to))?;
                Ok(true)
            }
        }
    }

    /// After a stage's output was stored: where the first link mode that applies is a hard or
    /// symbolic link, replace the output's files by links to their objects (so they are not
    /// stored twice). Returns whether any file was replaced (its stat changed).
    pub fn link_output(
        &self,
        full: &Path,
        content: &crate::state::hashing::Content,
    ) -> Result<bool> {
        use crate::state::hashing::Content;
        let Some(&first) = self.links.first() else {
            return Ok(false);
        };
        if !first.is_link() {
            return Ok(false);
        }
        let mut changed = false;
        match content {
            Content::File { hash, .. } => changed |= self.link_file(full, hash)?,
            Content::Dir { files, .. } => {
                for f in files {
                    if f.mode == FILE_MODE {
                        changed |= self.link_file(&full.join(f.rel_path()), &f.hash)?;
                    }
                }
            }
            Content::Missing => {}
        }
        Ok(changed)
    }

    fn link_file(&self, file: &Path, hash: &str) -> Result<bool> {
        let obj = self.object_path(hash);
        let (Ok(here), Ok(there)) = (std::fs::symlink_metadata(file), std::fs::metadata(&obj))
        else {
            return Ok(false);
        };
        let already = (here.dev(), here.ino()) == (there.dev(), there.ino())
            || (here.file_type().is_symlink()
                && std::fs::read_link(file).ok() == std::path::absolute(&obj).ok());
        if already || !plain_file(file) {
            return Ok(false);
        }
        let parent = file.parent().expect("a file has a parent");
        let tmp = parent.join(format!(
            ".repro-link-{}-{}",
            std::process::id(),
            super::unique()
        ));
        for &m in &self.links {
            if !m.is_link() {
                // Next in the list is a copy of some kind: the file already is one.
                return Ok(false);
            }
            if self.place_as(m, &obj, &tmp).unwrap_or(false) {
                std::fs::rename(&tmp, file).inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })?;
                return Ok(true);
            }
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(false)
    }
}

/// Objects are stored read-only; one that arrived otherwise is made so before a link to it
/// is handed to the workspace.
fn read_only(obj: &Path) -> Result<()> {
    let m = std::fs::metadata(obj).with_context(|| format!("cannot stat {}", obj.display()))?;
    if m.mode() & 0o222 != 0 {
        std::fs::set_permissions(obj, std::fs::Permissions::from_mode(0o444))?;
    }
    Ok(())
}
