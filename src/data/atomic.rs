//! Atomic placement of outputs: everything is written under a temporary name in the same
//! directory and renamed into place, so an interrupted run never leaves a complete-looking
//! partial file or directory behind. (A single file from bytes: `fsutil::write_atomic`.)

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The directory that holds `path` (created if missing); `.` for a bare file name.
pub fn parent_dir(path: &Path) -> Result<PathBuf> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)
        .with_context(|| format!("creating directory {}", parent.display()))?;
    Ok(parent)
}

/// A directory being built next to its final place; [`StagedDir::promote`] renames it over
/// the destination. Dropped without promoting, it is removed.
pub struct StagedDir {
    tmp: Option<tempfile::TempDir>,
    dest: PathBuf,
}

impl StagedDir {
    pub fn new(dest: &Path) -> Result<Self> {
        let parent = parent_dir(dest)?;
        let tmp = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&parent)
            .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
        Ok(Self {
            tmp: Some(tmp),
            dest: dest.to_path_buf(),
        })
    }

    /// Where to write the contents.
    pub fn path(&self) -> &Path {
        self.tmp
            .as_ref()
            .expect("staged directory already promoted")
            .path()
    }

    /// Replace `dest` by the staged contents. A previous `dest` is removed first (a directory
    /// cannot be renamed over a non-empty one), so `dest` is at all times absent or complete.
    pub fn promote(mut self) -> Result<()> {
        let tmp = self
            .tmp
            .take()
            .expect("staged directory already promoted")
            .keep();
        if self.dest.is_dir() {
            fs::remove_dir_all(&self.dest)
                .with_context(|| format!("removing the previous {}", self.dest.display()))?;
        } else if self.dest.exists() {
            fs::remove_file(&self.dest)
                .with_context(|| format!("removing the previous {}", self.dest.display()))?;
        }
        fs::rename(&tmp, &self.dest)
            .with_context(|| format!("renaming into place: {}", self.dest.display()))?;
        Ok(())
    }
}

/// Place an existing file at `dest` without copying when possible (hard link, then a copy to
/// a temporary name and a rename). Used for verified local sources.
pub fn place_copy(src: &Path, dest: &Path) -> Result<()> {
    let dir = parent_dir(dest)?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let tmp_path = tmp.into_temp_path();
    fs::remove_file(&tmp_path).ok();
    if fs::hard_link(src, &tmp_path).is_err() {
        fs::copy(src, &tmp_path)
            .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    }
    tmp_path
        .persist(dest)
        .with_context(|| format!("renaming into place: {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_dir_replaces_destination_and_cleans_up_when_dropped() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("out");
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("old"), b"old").unwrap();
        let s = StagedDir::new(&dest).unwrap();
        fs::write(s.path().join("new"), b"new").unwrap();
        s.promote().unwrap();
        assert!(dest.join("new").exists() && !dest.join("old").exists());

        let dropped = StagedDir::new(&root.path().join("other")).unwrap();
        let p = dropped.path().to_path_buf();
        drop(dropped);
        assert!(!p.exists() && !root.path().join("other").exists());
    }
}
