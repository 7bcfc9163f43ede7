//! The `download` kind against a local HTTP server: resume after a cut transfer, checksum
//! mismatch with nothing placed, 404 falling through to the next source, timeouts, and
//! archives that try to escape the output directory.

#[path = "data_http.rs"]
mod http;

use std::io::Write;
use std::path::Path;

use http::{Route, Server};
use repro_engine::kinds::StageContext;

/// Run a `uses: KIND` stage's body as `repro internal run-kind` would.
fn run_kind(kind: &str, ctx: &StageContext) -> anyhow::Result<()> {
    let ctx = StageContext {
        kind: kind.into(),
        ..ctx.clone()
    };
    repro::kinds::registry().run(&ctx)
}
use sha2::{Digest, Sha256};

fn ctx(ws: &Path, checkpoint: Option<&str>, params: serde_json::Value) -> StageContext {
    StageContext {
        checkpoint: checkpoint.map(Into::into),
        ..StageContext::new("download", params, ws)
    }
}

fn run(ws: &Path, checkpoint: Option<&str>, params: serde_json::Value) -> anyhow::Result<()> {
    run_kind("download", &ctx(ws, checkpoint, params))
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn payload(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i * 31 % 251) as u8 ^ (i >> 9) as u8)
        .collect()
}

/// Files left in a directory (recursively), for "nothing was placed" checks.
fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_in(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn a_cut_transfer_resumes_with_a_range_request() {
    let srv = Server::start();
    let body = payload(300_000);
    let url = srv.add(
        "/big.bin",
        Route::CutOnce {
            body: body.clone(),
            cut: 120_000,
            times: 1,
        },
    );
    let ws = tempfile::tempdir().unwrap();
    let params = serde_json::json!({
        "sources": [url], "sha256": sha(&body), "out": "raw/big.bin",
        "attempts": 1, "backoff_ms": 10,
    });
    // First run: one attempt, cut mid-way: fails, keeps the partial transfer in the checkpoint.
    let err = run(ws.path(), Some("ckpt"), params.clone()).unwrap_err();
    assert!(format!("{err:#}").contains(&url), "{err:#}");
    assert!(!ws.path().join("raw/big.bin").exists());
    let part = ws.path().join("ckpt/.big.bin.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 120_000);
    // Second run resumes from byte 120000 rather than starting again.
    run(ws.path(), Some("ckpt"), params).unwrap();
    assert_eq!(std::fs::read(ws.path().join("raw/big.bin")).unwrap(), body);
    let reqs = srv.requests("/big.bin");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=120000-"));
    assert!(!part.exists());
}

#[test]
fn retries_within_one_run_resume_too() {
    let srv = Server::start();
    let body = payload(200_000);
    let url = srv.add(
        "/f",
        Route::CutOnce {
            body: body.clone(),
            cut: 50_000,
            times: 2,
        },
    );
    let ws = tempfile::tempdir().unwrap();
    run(
        ws.path(),
        None,
        serde_json::json!({"sources": [url], "sha256": sha(&body), "out": "f", "attempts": 4, "backoff_ms": 5}),
    )
    .unwrap();
    assert_eq!(std::fs::read(ws.path().join("f")).unwrap(), body);
    let ranges: Vec<_> = srv.requests("/f").into_iter().map(|r| r.range).collect();
    assert_eq!(
        ranges,
        vec![
            None,
            Some("bytes=50000-".into()),
            Some("bytes=100000-".into())
        ]
    );
}

#[test]
fn a_wrong_checksum_fails_naming_the_source_and_places_nothing() {
    let srv = Server::start();
    let url = srv.add("/data.bin", Route::Bytes(payload(10_000)));
    let ws = tempfile::tempdir().unwrap();
    let err = run(
        ws.path(),
        None,
        serde_json::json!({"sources": [url], "sha256": sha(b"something else"), "out": "raw/data.bin", "backoff_ms": 1}),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&url) && msg.contains("checksum mismatch"),
        "{msg}"
    );
    assert!(
        files_in(ws.path()).is_empty(),
        "left behind: {:?}",
        files_in(ws.path())
    );
    // md5 mismatches are reported the same way.
    let err = run(
        ws.path(),
        None,
        serde_json::json!({"sources": [url], "md5": "0123456789abcdef0123456789abcdef", "out": "x"}),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("md5 is "), "{err:#}");
    assert!(files_in(ws.path()).is_empty());
}

#[test]
fn a_404_falls_through_to_the_next_source_without_retrying() {
    let srv = Server::start();
    let body = payload(5_000);
    let missing = format!("{}/missing.bin", srv.base);
    let good = srv.add("/good.bin", Route::Bytes(body.clone()));
    let ws = tempfile::tempdir().unwrap();
    run(
        ws.path(),
        None,
        serde_json::json!({"sources": [missing, good], "sha256": sha(&body), "out": "f.bin", "attempts": 5, "backoff_ms": 1}),
    )
    .unwrap();
    assert_eq!(std::fs::read(ws.path().join("f.bin")).unwrap(), body);
    assert_eq!(
        srv.requests("/missing.bin").len(),
        1,
        "a 404 is not retried"
    );
    // All sources missing: the error lists each with its status.
    let err = run(
        ws.path(),
        None,
        serde_json::json!({"sources": [format!("{}/a", srv.base), "no/such/local/file"], "sha256": sha(&body), "out": "g"}),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("HTTP 404") && msg.contains("no/such/local/file: no such file"),
        "{msg}"
    );
    assert!(!ws.path().join("g").exists());
}

#[test]
fn a_timeout_is_a_clear_error() {
    let srv = Server::start();
    let url = srv.add("/slow", Route::Hang);
    let ws = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let err = run(
        ws.path(),
        None,
        serde_json::json!({"sources": [url], "sha256": sha(b"x"), "out": "f", "attempts": 1, "timeout_s": 1}),
    )
    .unwrap_err();
    assert!(t.elapsed().as_secs() < 10);
    let msg = format!("{err:#}").to_lowercase();
    assert!(
        msg.contains("/slow") && (msg.contains("timed out") || msg.contains("timeout")),
        "{msg}"
    );
    assert!(!ws.path().join("f").exists());
}

#[test]
fn a_null_checksum_is_refused_unless_allowed() {
    let srv = Server::start();
    let url = srv.add("/u", Route::Bytes(b"hello".to_vec()));
    let ws = tempfile::tempdir().unwrap();
    let err = run(
        ws.path(),
        None,
        serde_json::json!({"sources": [url], "out": "u"}),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("allow_unverified"), "{err:#}");
    assert!(
        srv.requests("/u").is_empty(),
        "nothing is fetched before the checksum is known"
    );
    run(
        ws.path(),
        None,
        serde_json::json!({"sources": [url], "out": "u", "allow_unverified": true}),
    )
    .unwrap();
    assert_eq!(std::fs::read(ws.path().join("u")).unwrap(), b"hello");
}

// ---- archives ----

/// A tar with one entry whose name, type and link target are written raw (the tar crate's
/// builder refuses unsafe names, which is exactly what we need to produce here).
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn extract_local(ws: &Path, name: &str, bytes: &[u8], format: &str) -> anyhow::Result<()> {
    std::fs::write(ws.join(name), bytes).unwrap();
    run(
        ws,
        None,
        serde_json::json!({"sources": [name], "sha256": sha(bytes), "extract": format, "out": "out"}),
    )
}

#[test]
fn a_safe_archive_extracts_with_inside_links() {
    use tar::EntryType as T;
    let ws = tempfile::tempdir().unwrap();
    let t = raw_tar(&[
        ("top/", T::Directory, "", b""),
        ("top/a.txt", T::Regular, "", b"alpha"),
        ("top/sub/link", T::Symlink, "../a.txt", b""),
        ("top/hard", T::Link, "top/a.txt", b""),
    ]);
    extract_local(ws.path(), "ok.tgz", &gz(&t), "tgz").unwrap();
    let out = ws.path().join("out/top");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(out.join("sub/link")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(out.join("hard")).unwrap(), b"alpha");
}

#[test]
fn escaping_tar_entries_are_rejected_and_nothing_is_placed() {
    use tar::EntryType as T;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            raw_tar(&[
                ("ok.txt", T::Regular, "", b"x"),
                ("../evil.txt", T::Regular, "", b"x"),
            ]),
            "'..'",
        ),
        (
            "absolute",
            raw_tar(&[("/tmp/evil.txt", T::Regular, "", b"x")]),
            "absolute path",
        ),
        (
            "symlink",
            raw_tar(&[("d/link", T::Symlink, "../../etc", b"")]),
            "points outside",
        ),
        (
            "abs-symlink",
            raw_tar(&[("link", T::Symlink, "/etc/passwd", b"")]),
            "points outside",
        ),
        (
            "hardlink",
            raw_tar(&[("h", T::Link, "../outside", b"")]),
            "points outside",
        ),
        (
            "device",
            raw_tar(&[("dev", T::Char, "", b"")]),
            "device file",
        ),
        (
            "through-link",
            raw_tar(&[("l", T::Symlink, ".", b""), ("l/x", T::Regular, "", b"x")]),
            "symbolic link",
        ),
    ];
    for (what, bytes, why) in cases {
        let ws = tempfile::tempdir().unwrap();
        let err = extract_local(ws.path(), "a.tar", &bytes, "tar").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("refusing entry") && msg.contains(why),
            "{what}: {msg}"
        );
        assert!(!ws.path().join("out").exists(), "{what}: output placed");
        let left: Vec<_> = files_in(ws.path())
            .into_iter()
            .filter(|f| !f.ends_with("a.tar"))
            .collect();
        assert!(left.is_empty(), "{what}: left behind {left:?}");
        assert!(!ws.path().parent().unwrap().join("evil.txt").exists());
    }
}

#[test]
fn escaping_zip_entries_are_rejected() {
    use zip::write::SimpleFileOptions;
    type Zip = zip::ZipWriter<std::io::Cursor<Vec<u8>>>;
    let make = |f: &dyn Fn(&mut Zip)| {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        f(&mut z);
        z.finish().unwrap().into_inner()
    };
    let opts = SimpleFileOptions::default();
    let dotdot = make(&|z| {
        z.start_file("../evil.txt", opts).unwrap();
        z.write_all(b"x").unwrap();
    });
    let link = make(&|z| z.add_symlink("link", "../../etc", opts).unwrap());
    let good = make(&|z| {
        z.start_file("d/a.txt", opts).unwrap();
        z.write_all(b"zip").unwrap();
    });
    for (what, bytes) in [("dotdot", dotdot), ("symlink", link)] {
        let ws = tempfile::tempdir().unwrap();
        let err = extract_local(ws.path(), "a.zip", &bytes, "zip").unwrap_err();
        assert!(
            format!("{err:#}").contains("refusing entry"),
            "{what}: {err:#}"
        );
        assert!(!ws.path().join("out").exists());
    }
    let ws = tempfile::tempdir().unwrap();
    extract_local(ws.path(), "a.zip", &good, "zip").unwrap();
    assert_eq!(
        std::fs::read(ws.path().join("out/d/a.txt")).unwrap(),
        b"zip"
    );
}

#[test]
fn a_licensed_recipe_needs_local_dir_and_validates_the_archives() {
    let ws = tempfile::tempdir().unwrap();
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("stages/datasets/imagenet-1k.yaml");
    let err = run(
        ws.path(),
        None,
        serde_json::json!({"recipe": recipe, "out": "raw"}),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("licence")
            && msg.contains("local_dir")
            && msg.contains("ILSVRC2012_img_val.tar"),
        "{msg}"
    );
    // Wrong archives in local_dir are refused by checksum.
    let local = ws.path().join("imagenet");
    std::fs::create_dir_all(&local).unwrap();
    for f in [
        "ILSVRC2012_img_train.tar",
        "ILSVRC2012_img_val.tar",
        "ILSVRC2012_devkit_t12.tar.gz",
    ] {
        std::fs::write(local.join(f), b"not the archive").unwrap();
    }
    let err = run(
        ws.path(),
        None,
        serde_json::json!({"recipe": recipe, "out": "raw", "local_dir": "imagenet"}),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("ILSVRC2012_img_train.tar") && msg.contains("checksum mismatch"),
        "{msg}"
    );
    assert!(!ws.path().join("raw").exists());
}
