//! A file system with 1-second timestamps for the racy-clean tests: an ext4 image with
//! 128-byte inodes (no room for nanoseconds), loop-mounted. Needs root, a loop device and
//! `mkfs.ext4` (e2fsprogs); CI has them. Where any is missing, [`CoarseFs::mount`] says why and
//! the test prints "skipped: ..." and returns.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct CoarseFs {
    /// Holds the image file; removed after the unmount (fields drop after `drop`).
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

impl CoarseFs {
    /// Mount a fresh 64 MiB image, or why it cannot be.
    pub fn mount() -> Result<CoarseFs, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root: cannot loop-mount a file system".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let img = dir.path().join("img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        sh(Command::new("truncate").args(["-s", "64M"]).arg(&img))?;
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-I", "128"])
            .arg(&img))
        .map_err(|e| format!("mkfs.ext4 (e2fsprogs) failed or is missing: {e}"))?;
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt))?;
        let fs = CoarseFs { _dir: dir, mnt };
        // Check the premise: whole-second timestamps.
        let probe = fs.mnt.join("probe");
        std::fs::write(&probe, "x").map_err(|e| e.to_string())?;
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&probe).map_err(|e| e.to_string())?;
        if m.mtime_nsec() != 0 || m.ctime_nsec() != 0 {
            return Err("the image has sub-second timestamps".into());
        }
        std::fs::remove_file(&probe).map_err(|e| e.to_string())?;
        Ok(fs)
    }

    /// Mount, or print why not ("skipped: ...") and give `None`.
    pub fn mount_or_skip(test: &str) -> Option<CoarseFs> {
        match CoarseFs::mount() {
            Ok(fs) => Some(fs),
            Err(why) => {
                eprintln!("skipped: {test} needs a 1-second file system: {why}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for CoarseFs {
    fn drop(&mut self) {
        // Lazily if something still holds it: the image goes with the temporary directory.
        if sh(Command::new("umount").arg(&self.mnt)).is_err() {
            let _ = sh(Command::new("umount").arg("-l").arg(&self.mnt));
        }
    }
}
