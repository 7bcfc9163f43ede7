//! Safe extraction of tar, tar.gz/tgz and zip archives.
//!
//! Every entry is checked before anything is written for it: absolute paths, `..` components,
//! symbolic or hard links whose target would leave the output directory, and device files or
//! FIFOs are refused with an error naming the archive and the entry. Callers extract into a
//! staging directory, so a refused archive leaves nothing in place.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Archive formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Place the file as it is.
    None,
    Tar,
    #[serde(rename = "tar.gz", alias = "tgz")]
    TarGz,
    Zip,
}

/// Normalise a relative path lexically (resolving `.` and `..`); `None` if it is absolute or
/// climbs above its root.
fn normalise(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Where an entry named `name` goes inside the output directory, or why it may not.
fn entry_target(name: &Path) -> std::result::Result<PathBuf, &'static str> {
    if name.is_absolute() || name.has_root() {
        return Err("absolute path");
    }
    if name.components().any(|c| c == Component::ParentDir) {
        return Err("path contains '..'");
    }
    match normalise(name) {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        Some(_) => Err("empty path"),
        None => Err("path escapes the output directory"),
    }
}

/// Check that a symbolic link at `at` (relative to the root) pointing to `target` stays inside.
fn symlink_ok(at: &Path, target: &Path) -> bool {
    if target.is_absolute() || target.has_root() {
        return false;
    }
    let base = at.parent().unwrap_or(Path::new(""));
    normalise(&base.join(target)).is_some()
}

/// Whether a directory on the way to `rel` is a symbolic link already extracted: writing
/// through it could land outside even when every link was checked on its own.
fn through_symlink(dest: &Path, rel: &Path) -> bool {
    let mut p = dest.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        p.push(c);
        if fs::symlink_metadata(&p)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
        {
            return true;
        }
    }
    false
}

/// An entry replaces a link of the same name rather than writing through it.
fn remove_if_symlink(target: &Path) {
    if fs::symlink_metadata(target)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
    {
        fs::remove_file(target).ok();
    }
}

/// Extract `archive` into `dest` (which must exist).
pub fn extract(archive: &Path, format: Format, dest: &Path) -> Result<()> {
    match format {
        Format::None => bail!("extract: format 'none' has nothing to extract"),
        Format::Tar => {
            let f =
                File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
            extract_tar(
                tar::Archive::new(BufReader::with_capacity(1 << 20, f)),
                archive,
                dest,
            )
        }
        Format::TarGz => {
            let f =
                File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
            let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, f));
            extract_tar(tar::Archive::new(gz), archive, dest)
        }
        Format::Zip => extract_zip(archive, dest),
    }
}

fn extract_tar<R: io::Read>(mut ar: tar::Archive<R>, archive: &Path, dest: &Path) -> Result<()> {
    let refuse = |name: &Path, why: &str| -> anyhow::Error {
        anyhow::anyhow!(
            "{}: refusing entry '{}': {why}. The archive is unsafe or corrupt; nothing was placed",
            archive.display(),
            name.display()
        )
    };
    let entries = ar
        .entries()
        .with_context(|| format!("reading {}", archive.display()))?;
    for entry in entries {
        let mut entry =
            entry.with_context(|| format!("reading an entry of {}", archive.display()))?;
        let name = entry
            .path()
            .with_context(|| format!("entry name in {}", archive.display()))?;
        let name = name.into_owned();
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            continue;
        }
        let rel = entry_target(&name).map_err(|why| refuse(&name, why))?;
        if through_symlink(dest, &rel) {
            return Err(refuse(&name, "path passes through a symbolic link"));
        }
        let target = dest.join(&rel);
        remove_if_symlink(&target);
        match kind {
            T::Directory => {
                fs::create_dir_all(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                if let Some(p) = target.parent() {
                    fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
                }
                let mut out = File::create(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
                io::copy(&mut entry, &mut out).with_context(|| {
                    format!("extracting '{}' from {}", name.display(), archive.display())
                })?;
            }
            T::Symlink => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| refuse(&name, "symbolic link without a target"))?
                    .into_owned();
                if !symlink_ok(&rel, &link) {
                    return Err(refuse(
                        &name,
                        &format!("symbolic link to '{}' points outside", link.display()),
                    ));
                }
                if let Some(p) = target.parent() {
                    fs::create_dir_all(p)?;
                }
                std::os::unix::fs::symlink(&link, &target)
                    .with_context(|| format!("creating link {}", target.display()))?;
            }
            T::Link => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| refuse(&name, "hard link without a target"))?
                    .into_owned();
                // Hard-link targets are named from the archive root.
                let src = entry_target(&link).map_err(|_| {
                    refuse(
                        &name,
                        &format!("hard link to '{}' points outside", link.display()),
                    )
                })?;
                if let Some(p) = target.parent() {
                    fs::create_dir_all(p)?;
                }
                fs::hard_link(dest.join(&src), &target).with_context(|| {
                    format!(
                        "hard link '{}' -> '{}' in {}",
                        name.display(),
                        link.display(),
                        archive.display()
                    )
                })?;
            }
            T::Char | T::Block | T::Fifo => {
                return Err(refuse(&name, "device file or FIFO"));
            }
            other => return Err(refuse(&name, &format!("unsupported entry type {other:?}"))),
        }
    }
    Ok(())
}

fn extract_zip(archive: &Path, dest: &Path) -> Result<()> {
    let f = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f))
        .with_context(|| format!("{} is not a readable zip archive", archive.display()))?;
    for i in 0..zip.len() {
        let mut file = zip
            .by_index(i)
            .with_context(|| format!("reading {}", archive.display()))?;
        let name = PathBuf::from(file.name());
        let refuse = |why: &str| {
            anyhow::anyhow!(
                "{}: refusing entry '{}': {why}. The archive is unsafe or corrupt; nothing was placed",
                archive.display(),
                name.display()
            )
        };
        let rel = entry_target(&name).map_err(refuse)?;
        if through_symlink(dest, &rel) {
            return Err(refuse("path passes through a symbolic link"));
        }
        let target = dest.join(&rel);
        remove_if_symlink(&target);
        let mode = file.unix_mode().unwrap_or(0);
        let fmt = mode & 0o170000;
        if matches!(fmt, 0o020000 | 0o060000 | 0o010000 | 0o140000) {
            return Err(refuse("device file, FIFO or socket"));
        }
        if file.is_dir() {
            fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(p) = target.parent() {
            fs::create_dir_all(p)?;
        }
        if fmt == 0o120000 {
            let mut link = String::new();
            io::Read::read_to_string(&mut file, &mut link)?;
            if !symlink_ok(&rel, Path::new(&link)) {
                return Err(refuse(&format!("symbolic link to '{link}' points outside")));
            }
            std::os::unix::fs::symlink(&link, &target)?;
            continue;
        }
        let mut out =
            File::create(&target).with_context(|| format!("creating {}", target.display()))?;
        io::copy(&mut file, &mut out).with_context(|| {
            format!("extracting '{}' from {}", name.display(), archive.display())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_confined() {
        assert!(entry_target(Path::new("a/b.jpg")).is_ok());
        assert!(entry_target(Path::new("./a/b.jpg")).is_ok());
        assert!(entry_target(Path::new("../x")).is_err());
        assert!(entry_target(Path::new("a/../../x")).is_err());
        assert!(entry_target(Path::new("/etc/passwd")).is_err());
        assert!(symlink_ok(Path::new("a/link"), Path::new("../b")));
        assert!(!symlink_ok(Path::new("a/link"), Path::new("../../b")));
        assert!(!symlink_ok(Path::new("link"), Path::new("/etc")));
    }
}
