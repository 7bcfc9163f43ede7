//! A remote cache's URL, checked without connecting: a leaf that both the pipeline loader
//! (`remote:` in pipeline.yaml, reported at its key) and the remote store use. It needs no
//! network crate, so it is compiled without the `remote` feature too.

use anyhow::Result;

/// The kinds of remote the store connects to, by URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    S3,
    Http,
    File,
}

/// Turn what the user wrote into a URL: URLs pass through; a plain path (a shared
/// directory) becomes `file://`, relative to `base`.
pub(crate) fn normalise(spec: &str, base: &std::path::Path) -> Result<String> {
    if spec.contains("://") {
        return Ok(spec.to_string());
    }
    let p = std::path::Path::new(spec);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    Ok(format!("file://{}", abs.display()))
}

/// Check a remote URL without connecting (the pipeline loader reports problems at the key).
pub(crate) fn check_url(url: &str) -> Result<Kind, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "remote '{url}' is not a URL (s3://bucket/prefix, https://host/path or file:///path)"
        ));
    };
    let kind = match scheme {
        "s3" | "s3a" => Kind::S3,
        "http" | "https" => Kind::Http,
        "file" => Kind::File,
        other => {
            return Err(format!(
                "unsupported remote scheme '{other}://' (supported: s3://, http://, https://, file://)"
            ));
        }
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "remote '{url}' holds credentials: take them out of the URL and set them in the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3)"
        ));
    }
    match kind {
        Kind::S3 if authority.is_empty() => Err(format!("remote '{url}' names no bucket")),
        Kind::Http if authority.is_empty() => Err(format!("remote '{url}' names no host")),
        Kind::File if !rest.starts_with('/') => Err(format!(
            "remote '{url}': a file:// URL needs an absolute path (file:///shared/cache)"
        )),
        _ => Ok(kind),
    }
}
