//! `cache:` in pipeline.yaml (the link modes and a shared objects directory) as the pipeline
//! loader reads it: a leaf under spec, so that the pipeline names nothing of the cache that
//! acts on it (`crate::cache::links` re-exports these names and documents the modes).

/// One way of placing a cached file in the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    Reflink,
    Hardlink,
    Symlink,
    Copy,
}

impl LinkMode {
    pub const NAMES: &'static [&'static str] = &["reflink", "hardlink", "symlink", "copy"];

    pub fn parse(s: &str) -> Option<LinkMode> {
        Some(match s.trim() {
            "reflink" => LinkMode::Reflink,
            "hardlink" => LinkMode::Hardlink,
            "symlink" => LinkMode::Symlink,
            "copy" => LinkMode::Copy,
            _ => return None,
        })
    }

    /// Whether the placed file is the object itself (read-only, shared with the cache).
    pub fn is_link(self) -> bool {
        matches!(self, LinkMode::Hardlink | LinkMode::Symlink)
    }
}

/// `cache:` in `pipeline.yaml`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CacheConfig {
    /// `link:`, in order of preference.
    pub link: Option<Vec<LinkMode>>,
    /// `dir:` as written (relative to the workspace, or absolute).
    pub dir: Option<String>,
}

pub(crate) fn default_links() -> Vec<LinkMode> {
    vec![LinkMode::Reflink, LinkMode::Copy]
}

/// Parse link mode names; the unknown one is the error. An empty list is an error too.
pub(crate) fn parse_list<'a>(
    names: impl Iterator<Item = &'a str>,
) -> Result<Vec<LinkMode>, String> {
    let mut out = Vec::new();
    for n in names {
        let m = LinkMode::parse(n).ok_or_else(|| n.trim().to_string())?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err(String::new());
    }
    Ok(out)
}
