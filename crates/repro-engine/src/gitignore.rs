//! Keeping declared outputs out of git: a block in the workspace's `.gitignore`, between two
//! marker lines, that lists every output the pipeline declares (`/path`, anchored at the
//! workspace). `repro init` writes it and `repro run` keeps it current whenever it writes
//! `repro.lock` (so a no-op run costs nothing), and only where it already exists or the
//! workspace is in a git work tree. Everything outside the markers is the user's and is kept
//! byte for byte (a `.gitignore` need not be UTF-8); the file is rewritten only when the block
//! changes, atomically (a temporary file renamed over it).

use std::path::Path;

use anyhow::{Context, Result};

/// The block's first line.
pub(crate) const BEGIN: &[u8] =
    b"# >>> repro: declared outputs (kept current by `repro run`; edit outside this block) >>>";
/// The block's last line.
pub(crate) const END: &[u8] = b"# <<< repro: declared outputs <<<";

/// The `.gitignore` pattern for one output path: anchored, with the characters git reads
/// as wildcards or escapes taken literally. `None` for a path no pattern can name (a line
/// break).
fn pattern(path: &str) -> Option<String> {
    let path = path.trim_end_matches('/');
    if path.is_empty() || path.contains(['\n', '\r']) {
        return None;
    }
    let mut p = String::with_capacity(path.len() + 2);
    p.push('/');
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    // A trailing space would be stripped by git unless escaped.
    if p.ends_with(' ') {
        p.pop();
        p.push_str("\\ ");
    }
    Some(p)
}

/// The block for `outs` (sorted, without duplicates), markers included, ending in a newline.
pub(crate) fn block(outs: &[&str]) -> Vec<u8> {
    let mut pats: Vec<String> = outs.iter().filter_map(|o| pattern(o)).collect();
    pats.sort();
    pats.dedup();
    let mut b = Vec::new();
    b.extend_from_slice(BEGIN);
    b.push(b'\n');
    for p in pats {
        b.extend_from_slice(p.as_bytes());
        b.push(b'\n');
    }
    b.extend_from_slice(END);
    b.push(b'\n');
    b
}

/// Where the block is in `text`: the byte range from its first marker line to the end of
/// its last (the newline included where there is one).
fn find(text: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut start = None;
    let mut at = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if start.is_none() && bare == BEGIN {
            start = Some(at);
        } else if let Some(s) = start
            && bare == END
        {
            return Some(s..at + line.len());
        }
        at += line.len();
    }
    None
}

/// `old` with its block listing `outs` (replaced where there is one, else appended), or
/// `None` when it already lists exactly them.
pub fn with_block(old: &[u8], outs: &[&str]) -> Option<Vec<u8>> {
    let new_block = block(outs);
    match find(old) {
        Some(r) if old[r.clone()] == new_block[..] => None,
        Some(r) => {
            let mut t = old[..r.start].to_vec();
            t.extend_from_slice(&new_block);
            t.extend_from_slice(&old[r.end..]);
            Some(t)
        }
        None => {
            let mut t = old.to_vec();
            if !t.is_empty() && !t.ends_with(b"\n") {
                t.push(b'\n');
            }
            t.extend_from_slice(&new_block);
            Some(t)
        }
    }
}

/// Whether `root` is inside a git work tree (a `.git` in it or above it).
fn in_git(root: &Path) -> bool {
    root.ancestors().any(|d| d.join(".git").exists())
}

/// Keep `root/.gitignore`'s block listing `outs`, where the file has a block or `root` is
/// in a git work tree. Returns whether the file was written.
pub(crate) fn keep_current(root: &Path, outs: &[&str]) -> Result<bool> {
    let path = root.join(".gitignore");
    let old = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if find(&old).is_none() && !in_git(root) {
        return Ok(false);
    }
    let Some(new) = with_block(&old, outs) else {
        return Ok(false);
    };
    crate::fsutil::write_atomic(&path, &new)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// After `run` wrote `repro.lock`: keep the block listing every output `p` declares. A
/// failure is a warning (the run's results are already safe).
pub(crate) fn after_lock_written(p: &crate::spec::Pipeline) {
    let outs: Vec<&str> = p
        .stages
        .iter()
        .flat_map(|s| s.outs.iter().map(|o| o.path.as_str()))
        .collect();
    if let Err(e) = keep_current(&p.root, &outs) {
        eprintln!("warning: declared outputs not listed in .gitignore: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_appended_replaced_and_left_alone_with_user_lines_kept() {
        let user = b"*.pyc\n# mine\ncaf\xe9.log".to_vec();
        let t = with_block(&user, &["data", "models/m.pt", "data"]).unwrap();
        assert!(t.starts_with(b"*.pyc\n# mine\ncaf\xe9.log\n"));
        let s = String::from_utf8_lossy(&t);
        assert!(s.contains("\n/data\n/models/m.pt\n"), "{s}");
        assert_eq!(with_block(&t, &["models/m.pt", "data"]), None);
        // Lines after the block are the user's too.
        let mut t2 = t.clone();
        t2.extend_from_slice(b"after\n");
        let t3 = with_block(&t2, &["data"]).unwrap();
        assert!(t3.starts_with(&user));
        assert!(t3.ends_with(b"/data\n# <<< repro: declared outputs <<<\nafter\n"));
        assert!(!String::from_utf8_lossy(&t3).contains("models"));
    }

    #[test]
    fn patterns_take_wildcards_literally() {
        assert_eq!(pattern("a[1]*.txt").unwrap(), "/a\\[1\\]\\*.txt");
        assert_eq!(pattern("out/").unwrap(), "/out");
        assert_eq!(pattern("x ").unwrap(), "/x\\ ");
        assert_eq!(pattern("a\nb"), None);
    }
}
