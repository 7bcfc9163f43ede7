//! Small file-system helpers shared by the engine and the kinds: one way to replace a file
//! atomically and durably, and one way to turn a stage name into a file name.
//!
//! [`write_atomic`] is the only place that decides how a finished file reaches its final name
//! (temporary sibling, fsync, rename, fsync of the directory), so the lock file, the stage
//! specifications, Slurm batch scripts, metrics, reports and training outputs all survive a
//! crash or power loss the same way: the old content or the new, never a torn file.
//! [`write_atomic_unsynced`] is the same without the fsyncs, for the engine's own caches that
//! a checksum guards and whose loss costs only time.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Replace `path` with `bytes` atomically and durably: write a temporary file in the same
/// directory (created if missing), fsync it, rename it over `path`, fsync the directory.
/// The file gets the mode a plain `File::create` would give it (0666 less the umask), not
/// the private 0600 of a temporary file. Every error names the path it concerns.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// [`write_atomic`] without its two fsyncs: readers never see a partial file, but after a
/// power loss the file may be empty or old. Only for a cache whose reader checks what it reads
/// (a checksum) and treats damage as a miss; the fsyncs would cost more than it saves.
pub(crate) fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false)
}

/// [`write_atomic`] for a writer that wants a path rather than bytes (a library that saves to a
/// file name, such as libtorch's safetensors writer): `write` fills the temporary file at the
/// path it is given; then the same fsync, rename and directory fsync follow.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    replace_with(path, true, |tmp| {
        write(tmp.path()).with_context(|| {
            format!(
                "cannot write {} (via {})",
                path.display(),
                tmp.path().display()
            )
        })
    })
}

fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    replace_with(path, durable, |tmp| {
        tmp.write_all(bytes).with_context(|| {
            format!(
                "cannot write {} (via {})",
                path.display(),
                tmp.path().display()
            )
        })
    })
}

fn replace_with(
    path: &Path,
    durable: bool,
    fill: impl FnOnce(&mut tempfile::NamedTempFile) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    fill(&mut tmp)?;
    if durable {
        tmp.as_file().sync_all().with_context(|| {
            format!(
                "cannot sync {} (via {})",
                path.display(),
                tmp.path().display()
            )
        })?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename a temporary file onto {}", path.display()))?;
    if !durable {
        return Ok(());
    }
    sync_dir(dir).with_context(|| {
        format!(
            "cannot sync the directory {} after writing {}",
            dir.display(),
            path.display()
        )
    })
}

/// Make a rename in `dir` durable. File systems that cannot fsync a directory (some network
/// and FUSE file systems answer EINVAL) are accepted: there is nothing more to do on them.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let d = std::fs::File::open(dir)?;
    match d.sync_all() {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP)) => Ok(()),
        other => other,
    }
}

/// A stage name as a file name (for its log, its specification, its Slurm script). Expanded
/// names such as `train@dataset=cifar10,loss=bce` keep their readable characters; anything
/// else (`/`, spaces, quotes, `%`, which Slurm treats as a pattern) becomes `_`. A name too
/// long for a file name is cut and suffixed with a hash of the whole name, so that it stays
/// distinct from its siblings.
pub(crate) fn stage_file_name(name: &str) -> String {
    /// Well under the usual 255-byte limit, leaving room for suffixes such as `-12-3456.out`.
    const MAX: usize = 150;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@=,.-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() {
        return "stage".to_string();
    }
    if safe.len() <= MAX {
        return safe;
    }
    let hash = blake3::hash(name.as_bytes()).to_hex();
    format!("{}~{}", &safe[..MAX - 17], &hash[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_atomic_replaces_creates_parents_and_leaves_no_temporaries() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("a/b/out.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(root.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.txt"]);
        // Readable by others like any created file (umask permitting), not 0600.
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        // The umask, read without changing it (other tests run in parallel threads).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap();
        assert_eq!(mode, 0o666 & !umask, "mode {mode:o}");
    }

    #[test]
    fn write_atomic_with_places_what_the_writer_wrote_or_nothing() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("model.bin");
        std::fs::write(&p, b"old").unwrap();
        // A writer that fails halfway: the old file stays, no temporary is left.
        let e = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"half")?;
            anyhow::bail!("disk full")
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("model.bin"), "{e:#}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
        // One that succeeds by writing to the path it is given (as libtorch's savers do).
        write_atomic_with(&p, |tmp| Ok(std::fs::write(tmp, b"new")?)).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_atomic_errors_name_the_path() {
        let root = tempfile::tempdir().unwrap();
        // The "directory" is a file: nothing can be created in it.
        std::fs::write(root.path().join("f"), b"").unwrap();
        let p = root.path().join("f/out.txt");
        let e = format!("{:#}", write_atomic(&p, b"x").unwrap_err());
        assert!(
            e.contains(&root.path().join("f").display().to_string()),
            "{e}"
        );
        // Renaming onto a directory fails, and says which path.
        let d = root.path().join("dir");
        std::fs::create_dir_all(d.join("inside")).unwrap();
        let e = format!("{:#}", write_atomic(&d, b"x").unwrap_err());
        assert!(e.contains(&d.display().to_string()), "{e}");
    }

    #[test]
    fn stage_file_names_are_safe_readable_and_bounded() {
        assert_eq!(
            stage_file_name("train@loss=bce,lr=0.1"),
            "train@loss=bce,lr=0.1"
        );
        assert_eq!(stage_file_name("a b/c%d'e"), "a_b_c_d_e");
        assert_eq!(stage_file_name(""), "stage");
        let long_a = format!("{}a", "x".repeat(300));
        let long_b = format!("{}b", "x".repeat(300));
        let (a, b) = (stage_file_name(&long_a), stage_file_name(&long_b));
        assert!(a.len() <= 150 && b.len() <= 150, "{a}");
        assert_ne!(a, b);
        assert!(a.starts_with("xxxx"));
    }
}
