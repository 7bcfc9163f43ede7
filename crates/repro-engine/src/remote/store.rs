//! Opening a remote and its layout.
//!
//! A URL becomes an `object_store` client: `s3://bucket/prefix` (endpoint, region and
//! credentials from the `AWS_*` environment variables), `http(s)://host/path` (WebDAV), or
//! `file:///path` (a shared file system). Under the URL's prefix the layout follows Bazel's
//! remote cache: `cas/<blake3>` holds content-addressed objects (files and directory
//! manifests, byte-identical to the local cache's), `ac/<stage key>` a run-cache entry, the
//! JSON [`Entry`] naming the outputs that key produced. Everything read back from a remote is
//! checked before use: hashes and output paths of an entry, paths of a manifest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use crate::state::db::RunRecord;
use crate::state::hashing::FileEntry;

/// The entry format this build writes and reads.
pub(crate) const ENTRY_VERSION: u32 = 1;

/// The largest `ac/` entry read. An entry is a small JSON object: per declared output one
/// path, one 64-digit hash and one size, and a few numbers, about 3 × path + 120 bytes per
/// output pretty-printed. 4 MiB holds some 10,000 outputs with 100-character paths, far beyond
/// any real stage (many files go in one directory output, whose listing is its manifest), and
/// costs nothing to hold in memory.
pub(crate) const ENTRY_CAP: u64 = 4 << 20;

/// The largest directory manifest fetched from a remote. A manifest line is a file's hash,
/// mode, size and relative path, about 100–130 bytes: 256 MiB holds some two million files,
/// an ImageNet-sized training directory (1.3 million files) with room to spare, while the
/// manifest and its parsed form stay within about a gigabyte of memory.
pub(crate) const MANIFEST_CAP: u64 = 256 << 20;

#[cfg(test)]
use crate::remote_url::normalise;
pub(crate) use crate::remote_url::{Kind, check_url};

/// A connected remote: the client and the runtime its requests run on.
pub(crate) struct Store {
    /// The URL as configured (it never holds credentials: those come from the environment).
    pub url: String,
    pub kind: Kind,
    pub inner: Arc<dyn ObjectStore>,
    pub rt: tokio::runtime::Runtime,
}

/// A run-cache entry as stored under `ac/<key>`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct Entry {
    pub version: u32,
    pub key: String,
    pub stage: String,
    /// Output path → content hash (file hash, or directory manifest hash).
    pub outs: BTreeMap<String, String>,
    /// Which outputs are directories.
    #[serde(default)]
    pub dirs: Vec<String>,
    /// Size in bytes of each output's object (the file, or the manifest of a directory).
    #[serde(default)]
    pub sizes: BTreeMap<String, u64>,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub seconds: f64,
    /// Mode of each file output whose mode is not 0644 (see `RunRecord::modes`; masked with
    /// `MODE_BITS` when used, so a remote cannot make a file setuid or world-writable).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modes: BTreeMap<String, u32>,
}

impl Entry {
    pub(crate) fn record(&self) -> RunRecord {
        RunRecord {
            stage: self.stage.clone(),
            outs: self.outs.clone(),
            dirs: self.dirs.clone(),
            created: self.created,
            seconds: self.seconds,
            // Not carried by the remote (untrusted): `exp show` lists a configuration restored
            // from it without its params or metrics until it runs here.
            fingerprint: None,
            metrics: Vec::new(),
            modes: self.modes.clone(),
            // Not carried by the remote either: where it ran is this machine's record.
            environment: None,
        }
    }

    /// Parse and check an entry read from `ac/<key>` for a stage that declares `outs`: a
    /// remote is not trusted to name paths or hashes, so anything but exactly the declared
    /// outputs with well-formed hashes is refused.
    pub(crate) fn parse(bytes: &[u8], key: &str, outs: &[&str]) -> Result<Entry> {
        let e = Entry::parse_any(bytes, key)?;
        let named: Vec<&str> = e.outs.keys().map(String::as_str).collect();
        let mut declared = outs.to_vec();
        declared.sort_unstable();
        if named != declared {
            bail!("entry names outputs {named:?}, the stage declares {declared:?}");
        }
        Ok(e)
    }

    /// Parse an entry and check all but its output names (which need the stage).
    pub(crate) fn parse_any(bytes: &[u8], key: &str) -> Result<Entry> {
        let e: Entry = serde_json::from_slice(bytes).context("malformed run-cache entry")?;
        if e.version != ENTRY_VERSION {
            bail!(
                "run-cache entry format version {} (this repro reads version {ENTRY_VERSION})",
                e.version
            );
        }
        if e.key != key {
            bail!("entry is for key {}, not {key}", e.key);
        }
        if let Some(h) = e.outs.values().find(|h| !is_hash(h)) {
            bail!("entry holds a malformed hash '{h}'");
        }
        if let Some(d) = e.dirs.iter().find(|d| !e.outs.contains_key(*d)) {
            bail!("entry marks '{d}' a directory but does not name it as an output");
        }
        Ok(e)
    }
}

/// A remote run-cache entry that cannot be used: malformed, over [`ENTRY_CAP`], naming other
/// outputs, or whose directory manifest is bad. Only that entry is skipped (the stage is
/// computed); the remote stays in use for every other stage.
#[derive(Debug)]
pub(crate) struct BadRemoteEntry {
    pub key: String,
    pub url: String,
    pub reason: String,
}

impl std::fmt::Display for BadRemoteEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "remote run-cache entry ac/{} on {} is unusable: {}",
            self.key, self.url, self.reason
        )
    }
}
impl std::error::Error for BadRemoteEntry {}

/// An object larger than a limit on what is read of it (its declared size, or a cap).
#[derive(Debug)]
pub(crate) struct TooLarge {
    pub limit: u64,
    /// What the server declared, when that alone was over the limit.
    pub declared: Option<u64>,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.declared {
            Some(d) => write!(f, "{d} bytes, over the limit of {} bytes", self.limit),
            None => write!(f, "more than the limit of {} bytes", self.limit),
        }
    }
}
impl std::error::Error for TooLarge {}

/// Collect a body of at most `cap` bytes, chunk by chunk: reading stops at the first byte past
/// the cap (a [`TooLarge`] error), so an endless body costs at most `cap` bytes of memory.
pub(crate) async fn read_capped<S, E>(mut body: S, cap: u64) -> Result<bytes::Bytes>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    use futures_util::StreamExt;
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if (buf.len() + chunk.len()) as u64 > cap {
            return Err(TooLarge {
                limit: cap,
                declared: None,
            }
            .into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}

/// One line for a failed request: an HTTP error becomes `HTTP <status> on <METHOD> <URL>`
/// instead of object_store's chain, each level of which repeats the server's whole error page.
/// Anything else keeps its chain.
pub(crate) fn request_error(e: object_store::Error, what: String) -> anyhow::Error {
    let mut method_uri = None;
    let mut status = None;
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        let text = s.to_string();
        // object_store's request error reads "Error performing PUT http://… in 1ms - …", its
        // cause "Server returned non-2xx status code: 403 Forbidden: <body>".
        if let Some(rest) = text.strip_prefix("Error performing ") {
            let mut w = rest.split(' ');
            if let (Some(m), Some(u)) = (w.next(), w.next()) {
                method_uri = Some(format!("{m} {u}"));
            }
        }
        if let Some(rest) = text.strip_prefix("Server returned non-2xx status code: ") {
            status = Some(rest.split(':').next().unwrap_or(rest).trim().to_string());
        }
        src = s.source();
    }
    match (status, method_uri) {
        (Some(status), Some(req)) => anyhow::anyhow!("{what}: HTTP {status} on {req}"),
        _ => anyhow::Error::new(e).context(what),
    }
}

/// A blake3 hash as the cache names objects: 64 lowercase hex digits.
pub(crate) fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Check a directory manifest fetched from a remote: every file hash well formed. Its paths
/// were checked, decoded, when it was parsed (`hashing::parse_manifest_full`, which every
/// manifest reader goes through); checked again here for entries built by hand.
pub(crate) fn check_manifest(files: &[FileEntry]) -> Result<()> {
    for f in files {
        if !is_hash(&f.hash) {
            bail!("manifest holds a malformed hash '{}'", f.hash);
        }
        crate::state::hashing::check_rel_name(&crate::state::hashing::decode_name(&f.path))?;
    }
    Ok(())
}

pub(crate) fn cas_path(hash: &str) -> ObjPath {
    ObjPath::from(format!("cas/{hash}"))
}

pub(crate) fn ac_path(key: &str) -> ObjPath {
    ObjPath::from(format!("ac/{key}"))
}

/// Requests are retried a few times with back-off, then fail: a dead server must end a
/// transfer in seconds, not in object_store's default of minutes.
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

fn client_options(allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(10))
        // A whole large object must fit in one request; a stalled one still ends.
        .with_timeout(Duration::from_secs(3600))
}

impl Store {
    /// Connect (no request is made yet): builds the runtime and the client.
    pub(crate) fn open(url: &str) -> Result<Store> {
        let kind = check_url(url).map_err(|e| anyhow::anyhow!(e))?;
        // reqwest's rustls is built without a bundled provider; ring is already in the tree.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("repro-remote")
            .enable_all()
            .build()
            .context("cannot start the remote-transfer runtime")?;
        let inner: Arc<dyn ObjectStore> = match kind {
            Kind::S3 => {
                let (bucket_url, prefix) = split_s3(url);
                let endpoint_http = std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .is_ok_and(|e| e.starts_with("http://"));
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(bucket_url)
                    .with_retry(retry())
                    .with_client_options(client_options(endpoint_http))
                    .build()
                    .with_context(|| format!("cannot open remote {url}"))?;
                prefixed(s3, &prefix)
            }
            Kind::Http => Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url(url.trim_end_matches('/'))
                    .with_retry(retry())
                    .with_client_options(client_options(url.starts_with("http://")))
                    .build()
                    .with_context(|| format!("cannot open remote {url}"))?,
            ),
            Kind::File => {
                // Writes here do not go through fsutil::write_atomic: object_store's local
                // store already stages each put in a temporary file and renames it into place,
                // so readers never see a torn object, and it is the one code path for every
                // remote kind. It does not fsync; a shared remote is a cache whose objects are
                // hashed when read back, so a loss after a crash costs a recomputation only.
                let dir = std::path::PathBuf::from(&url["file://".len()..]);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create remote directory {}", dir.display()))?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&dir)
                        .with_context(|| format!("cannot open remote {url}"))?,
                )
            }
        };
        Ok(Store {
            url: url.to_string(),
            kind,
            inner,
            rt,
        })
    }

    /// Read a whole object of at most `cap` bytes; `None` if absent. A body declared or found
    /// to be larger fails with [`TooLarge`] (downcast to tell it from a failed request) after
    /// at most `cap` bytes were read: the size a server claims is never allocated.
    pub(crate) async fn get_capped(
        &self,
        path: &ObjPath,
        cap: u64,
    ) -> Result<Option<bytes::Bytes>> {
        use object_store::ObjectStoreExt;
        let what = || format!("reading {path} from {}", self.url);
        match self.inner.get(path).await {
            Ok(r) if r.meta.size > cap => Err(anyhow::Error::new(TooLarge {
                limit: cap,
                declared: Some(r.meta.size),
            })),
            Ok(r) => read_capped(r.into_stream(), cap)
                .await
                .map(Some)
                .map_err(|e| match e.downcast::<object_store::Error>() {
                    Ok(e) => request_error(e, what()),
                    Err(e) => e,
                }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(request_error(e, what())),
        }
    }

    /// Size of an object; `None` if absent.
    pub(crate) async fn size_of(&self, path: &ObjPath) -> Result<Option<(u64, Option<String>)>> {
        use object_store::ObjectStoreExt;
        match self.inner.head(path).await {
            Ok(m) => Ok(Some((m.size, m.e_tag))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(request_error(
                e,
                format!("looking up {path} on {}", self.url),
            )),
        }
    }

    /// The run-cache entry for `key`, checked against the stage's declared outputs. An entry
    /// that is there but unusable (over [`ENTRY_CAP`], malformed) is a [`BadRemoteEntry`].
    pub(crate) async fn entry(&self, key: &str, outs: &[&str]) -> Result<Option<Entry>> {
        let bytes = match self.get_capped(&ac_path(key), ENTRY_CAP).await {
            Ok(None) => return Ok(None),
            Ok(Some(b)) => b,
            Err(e) if e.downcast_ref::<TooLarge>().is_some() => {
                return Err(self.bad_entry(key, format!("{e}")));
            }
            Err(e) => return Err(e),
        };
        Entry::parse(&bytes, key, outs)
            .map(Some)
            .map_err(|e| self.bad_entry(key, format!("{e:#}")))
    }

    pub(crate) fn bad_entry(&self, key: &str, reason: String) -> anyhow::Error {
        BadRemoteEntry {
            key: key.to_string(),
            url: self.url.clone(),
            reason,
        }
        .into()
    }

    /// Write an entry whole (a put replaces atomically on every backend, so two writers of
    /// one key leave one complete entry).
    pub(crate) async fn put_entry(&self, e: &Entry) -> Result<()> {
        use object_store::ObjectStoreExt;
        let body = serde_json::to_vec_pretty(e)?;
        self.inner
            .put(&ac_path(&e.key), body.into())
            .await
            .map_err(|err| request_error(err, format!("writing ac/{} to {}", e.key, self.url)))?;
        Ok(())
    }
}

/// `s3://bucket/a/b` → (`s3://bucket`, `a/b`).
fn split_s3(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("checked");
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (
        format!("{scheme}://{bucket}"),
        prefix.trim_matches('/').to_string(),
    )
}

fn prefixed<T: ObjectStore>(store: T, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn urls_are_checked_without_connecting() {
        assert_eq!(check_url("s3://b/p/q"), Ok(Kind::S3));
        assert_eq!(check_url("https://h.example/cache"), Ok(Kind::Http));
        assert_eq!(check_url("file:///shared/cache"), Ok(Kind::File));
        assert!(
            check_url("gs://b")
                .unwrap_err()
                .contains("unsupported remote scheme")
        );
        assert!(
            check_url("https://u:pw@h/c")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(
            check_url("file://rel/path")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(check_url("s3:///p").unwrap_err().contains("no bucket"));
        assert_eq!(split_s3("s3://b/x/y/"), ("s3://b".into(), "x/y".into()));
        assert_eq!(
            normalise("cache", std::path::Path::new("/ws")).unwrap(),
            "file:///ws/cache"
        );
    }

    fn entry(outs: &[(&str, &str)]) -> Vec<u8> {
        serde_json::to_vec(&Entry {
            version: ENTRY_VERSION,
            key: "k".into(),
            stage: "s".into(),
            outs: outs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            dirs: vec![],
            sizes: BTreeMap::new(),
            created: 0,
            seconds: 0.0,
            modes: BTreeMap::new(),
        })
        .unwrap()
    }

    #[test]
    fn entries_naming_other_paths_or_bad_hashes_are_refused() {
        assert!(Entry::parse(&entry(&[("out/a", H)]), "k", &["out/a"]).is_ok());
        let e = Entry::parse(&entry(&[("/etc/passwd", H)]), "k", &["out/a"]).unwrap_err();
        assert!(format!("{e:#}").contains("declares"), "{e:#}");
        let e = Entry::parse(&entry(&[("out/a", "../../x")]), "k", &["out/a"]).unwrap_err();
        assert!(format!("{e:#}").contains("malformed hash"), "{e:#}");
        assert!(Entry::parse(&entry(&[("out/a", H)]), "other", &["out/a"]).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&entry(&[("out/a", H)])).unwrap();
        v["version"] = 99.into();
        let e = Entry::parse(&serde_json::to_vec(&v).unwrap(), "k", &["out/a"]).unwrap_err();
        assert!(format!("{e:#}").contains("version 99"), "{e:#}");
    }

    #[test]
    fn a_capped_read_stops_at_the_first_byte_past_the_cap() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let chunk = || Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[7u8; 1000]));
        // An endless body: only the cap's worth is ever held.
        let endless = futures_util::stream::repeat_with(chunk);
        let e = rt.block_on(read_capped(endless, 4500)).unwrap_err();
        let t = e.downcast_ref::<TooLarge>().expect("too large");
        assert_eq!((t.limit, t.declared), (4500, None));
        let five = futures_util::stream::iter((0..5).map(|_| chunk()));
        assert_eq!(rt.block_on(read_capped(five, 5000)).unwrap().len(), 5000);
        let broken = futures_util::stream::iter(vec![chunk(), Err(std::io::Error::other("reset"))]);
        let e = rt.block_on(read_capped(broken, 5000)).unwrap_err();
        assert!(e.downcast_ref::<TooLarge>().is_none(), "{e:#}");
    }

    #[test]
    fn manifests_with_escaping_paths_are_refused() {
        let f = |p: &str| FileEntry {
            path: p.into(),
            hash: H.into(),
            size: 1,
            mode: crate::state::hashing::FILE_MODE,
        };
        assert!(check_manifest(&[f("a/b.txt")]).is_ok());
        // The escaped forms are what the restore decodes and writes to.
        for bad in [
            "../x",
            "a/../../x",
            "/abs",
            "a//b",
            "",
            "\\x2e\\x2e/x",
            "\\x2fetc/x",
            "a/\\x00b",
        ] {
            assert!(check_manifest(&[f(bad)]).is_err(), "{bad}");
        }
    }
}
