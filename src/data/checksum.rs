//! File checksums: sha256 or md5 of the bytes as published, or sha256 of the decompressed
//! content of a gzip file (for mirrors that re-compress, such as Debian's Fashion-MNIST).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use md5::Md5;
use sha2::{Digest, Sha256};

/// What a file is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// sha256 of the file bytes (lower-case hex).
    Sha256(String),
    /// md5 of the file bytes, where that is all the publisher gives.
    Md5(String),
    /// sha256 of the gunzipped content (the file itself may also be uncompressed).
    ContentSha256(String),
    /// The first 8 or more hex digits of the file's sha256, where that is all the publisher
    /// states (torchvision's weight files carry the first 8 in their names).
    Sha256Prefix(String),
    /// Not checked (only with `allow_unverified: true`).
    Unverified,
}

impl Checksum {
    /// Build from the optional fields of a file description; at most one may be set.
    pub fn from_fields(
        sha256: Option<&str>,
        md5: Option<&str>,
        content_sha256: Option<&str>,
        allow_unverified: bool,
        what: &str,
    ) -> Result<Self> {
        Self::from_fields_with_prefix(sha256, md5, content_sha256, None, allow_unverified, what)
    }

    /// As [`Checksum::from_fields`], with a `sha256_prefix` field as well.
    pub fn from_fields_with_prefix(
        sha256: Option<&str>,
        md5: Option<&str>,
        content_sha256: Option<&str>,
        sha256_prefix: Option<&str>,
        allow_unverified: bool,
        what: &str,
    ) -> Result<Self> {
        let set: Vec<Checksum> = [
            sha256.map(|s| Checksum::Sha256(s.to_ascii_lowercase())),
            md5.map(|s| Checksum::Md5(s.to_ascii_lowercase())),
            content_sha256.map(|s| Checksum::ContentSha256(s.to_ascii_lowercase())),
            sha256_prefix.map(|s| Checksum::Sha256Prefix(s.to_ascii_lowercase())),
        ]
        .into_iter()
        .flatten()
        .collect();
        match set.len() {
            0 if allow_unverified => Ok(Checksum::Unverified),
            0 => bail!(
                "{what}: no checksum is known (sha256/md5/content_sha256/sha256_prefix are all \
                 null); fill one in from the publisher, or set `allow_unverified: true` to \
                 accept whatever the source serves"
            ),
            1 => {
                let c = set.into_iter().next().unwrap();
                let (hex, len) = match &c {
                    Checksum::Md5(h) => (h, 32..=32),
                    Checksum::Sha256(h) | Checksum::ContentSha256(h) => (h, 64..=64),
                    Checksum::Sha256Prefix(h) => (h, 8..=64),
                    Checksum::Unverified => unreachable!(),
                };
                if !len.contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let n = if len.start() == len.end() {
                        len.start().to_string()
                    } else {
                        "8 to 64".into()
                    };
                    bail!("{what}: checksum '{hex}' is not {n} hex digits");
                }
                Ok(c)
            }
            _ => bail!("{what}: give only one of sha256, md5, content_sha256, sha256_prefix"),
        }
    }

    /// Check a file; `Ok(None)` when it matches, `Ok(Some(message))` when it does not.
    pub fn verify(&self, path: &Path) -> Result<Option<String>> {
        let (want, got, what) = match self {
            Checksum::Unverified => return Ok(None),
            Checksum::Sha256(want) => (want, hash_reader::<Sha256>(open(path)?)?, "sha256"),
            Checksum::Sha256Prefix(want) => {
                let got = hash_reader::<Sha256>(open(path)?)?;
                return Ok((!got.starts_with(want.as_str())).then(|| {
                    format!("sha256 is {got}, which does not start with the pinned {want}")
                }));
            }
            Checksum::Md5(want) => (want, hash_reader::<Md5>(open(path)?)?, "md5"),
            Checksum::ContentSha256(want) => {
                let mut head = [0u8; 2];
                let n = open(path)?.read(&mut head)?;
                let got = if n == 2 && head == [0x1f, 0x8b] {
                    hash_reader::<Sha256>(Box::new(flate2::read::MultiGzDecoder::new(open(path)?)))
                        .with_context(|| format!("decompressing {}", path.display()))?
                } else {
                    hash_reader::<Sha256>(open(path)?)?
                };
                (want, got, "sha256 of the decompressed content")
            }
        };
        Ok((&got != want).then(|| format!("{what} is {got}, expected {want}")))
    }
}

fn open(path: &Path) -> Result<Box<dyn Read>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
}

fn hash_reader<D: Digest>(mut r: Box<dyn Read + '_>) -> Result<String> {
    let mut h = D::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn content_checksum_sees_through_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, b"hello").unwrap();
        let gz = dir.path().join("raw.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(b"hello").unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let want = hex::encode(Sha256::digest(b"hello"));
        let c = Checksum::ContentSha256(want.clone());
        assert_eq!(c.verify(&raw).unwrap(), None);
        assert_eq!(c.verify(&gz).unwrap(), None);
        assert!(Checksum::Sha256(want).verify(&gz).unwrap().is_some());
        assert_eq!(
            Checksum::Md5("5d41402abc4b2a76b9719d911017c592".into())
                .verify(&raw)
                .unwrap(),
            None
        );
    }

    #[test]
    fn null_checksum_needs_allow_unverified() {
        let e = Checksum::from_fields(None, None, None, false, "x").unwrap_err();
        assert!(e.to_string().contains("allow_unverified"));
        assert_eq!(
            Checksum::from_fields(None, None, None, true, "x").unwrap(),
            Checksum::Unverified
        );
        assert!(Checksum::from_fields(Some("ab"), None, None, false, "x").is_err());
    }

    #[test]
    fn a_sha256_prefix_is_checked_as_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("resnet50-2cf24dba.pth");
        std::fs::write(&f, b"hello").unwrap();
        // sha256("hello") = 2cf24dba5fb0a30e…
        let c = Checksum::from_fields_with_prefix(None, None, None, Some("2CF24DBA"), false, "w")
            .unwrap();
        assert_eq!(c.verify(&f).unwrap(), None);
        let bad = Checksum::from_fields_with_prefix(None, None, None, Some("0676ba61"), false, "w")
            .unwrap();
        assert!(
            bad.verify(&f)
                .unwrap()
                .unwrap()
                .contains("does not start with the pinned 0676ba61")
        );
        assert!(
            Checksum::from_fields_with_prefix(None, None, None, Some("2cf24d"), false, "w")
                .is_err()
        );
        assert!(
            Checksum::from_fields_with_prefix(
                Some(&"0".repeat(64)),
                None,
                None,
                Some("2cf24dba"),
                false,
                "w"
            )
            .is_err()
        );
    }
}
