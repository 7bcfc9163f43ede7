//! Large objects on S3 (moto's server on 127.0.0.1), with the part threshold lowered so that a
//! 13 MiB file counts as large: it goes up as a multipart upload (the stored ETag says how many
//! parts) and comes down in parallel ranges, byte-identical; a download resumes from the parts
//! an interrupted one left, and a partial file that is wrong is thrown away, never used; a push
//! killed mid-upload names nothing (no object, no `ac/` entry) and the next push completes; a
//! pull killed mid-download places nothing and the next pull completes from the parts it left.
//!
//! Skips, loudly, when moto is not installed (`scripts/setup.sh --tests`).
// Needs the remote cache in the binary under test.
#![cfg(feature = "remote")]

mod common;
#[path = "common/remote.rs"]
mod servers;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Ws;
use servers::{moto, ok as repro};

const MIB: usize = 1 << 20;

/// A 13 MiB file and a directory holding a 12 MiB file and a small one.
const PIPE: &str = r#"stages:
  big:
    cmd: echo big >> executions.log && head -c 13631488 /dev/urandom > big.bin && mkdir -p d && head -c 12582912 /dev/urandom > d/large.bin && echo small > d/small.txt
    outs: [big.bin, d]
"#;

/// One unsigned request to moto (which accepts them); returns the response head.
fn request(port: u16, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).to_string();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The cache object of `size` bytes (its name is its hash).
fn object_of_size(ws: &Ws, size: usize) -> (String, PathBuf) {
    for sub in std::fs::read_dir(ws.path("cache/objects"))
        .unwrap()
        .flatten()
    {
        for o in std::fs::read_dir(sub.path()).unwrap().flatten() {
            if o.metadata().unwrap().len() == size as u64 {
                let name = format!(
                    "{}{}",
                    sub.file_name().to_string_lossy(),
                    o.file_name().to_string_lossy()
                );
                return (name, o.path());
            }
        }
    }
    panic!("no object of {size} bytes");
}

#[test]
fn large_objects_go_up_in_parts_and_come_down_in_ranges() {
    let Some((_server, port)) = moto() else {
        return;
    };
    assert!(request(port, "PUT", "/lab").starts_with("HTTP/1.1 200"));
    let env = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        // 6 MiB: both large files are over it; parts of 5 MiB (S3's smallest).
        ("REPRO_MULTIPART_THRESHOLD", (6 * MIB).to_string()),
        ("REPRO_PART_SIZE", (5 * MIB).to_string()),
    ];
    let url = "s3://lab/mp";
    let a = Ws::new(PIPE);
    repro(&a, &env, &["run"]);
    repro(&a, &env, &["push", "--remote", url]);
    // 13 MiB in parts of 5 MiB: a three-part upload, whose ETag ends in "-3".
    let (big, _) = object_of_size(&a, 13 * MIB);
    let head = request(port, "HEAD", &format!("/lab/mp/cas/{big}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let etag = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("etag:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        etag.trim_end().ends_with("-3\""),
        "not a 3-part upload: {etag}"
    );
    let (large, _) = object_of_size(&a, 12 * MIB);
    let head = request(port, "HEAD", &format!("/lab/mp/cas/{large}"));
    assert!(head.contains("-3\""), "{head}");

    // Down in ranges into a fresh workspace: byte-identical, nothing left in remote-tmp.
    let b = Ws::new(PIPE);
    let out = repro(&b, &env, &["run", "--remote", url]);
    assert!(out.contains("1 restored"), "{out}");
    assert!(b.executions().is_empty());
    for f in ["big.bin", "d/large.bin", "d/small.txt"] {
        assert!(
            std::fs::read(a.path(f)).unwrap() == std::fs::read(b.path(f)).unwrap(),
            "{f} differs"
        );
    }
    let left: Vec<_> = std::fs::read_dir(b.path("cache/remote-tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let v = repro(&b, &env, &["cache", "verify"]);
    assert!(v.contains(" 0 corrupt"), "{v}");

    // A partial file whose "finished" parts are wrong is never used: the hash of the whole
    // catches it and the object is fetched again from nothing.
    let d = Ws::new(PIPE);
    let tmp = d.path("cache/remote-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join(format!("{big}.part")), vec![7u8; 13 * MIB]).unwrap();
    std::fs::write(tmp.join(format!("{big}.done")), "0\n1\n").unwrap();
    let out = repro(&d, &env, &["run", "--remote", url]);
    assert!(out.contains("1 restored"), "{out}");
    assert!(std::fs::read(d.path("big.bin")).unwrap() == std::fs::read(a.path("big.bin")).unwrap());

    // An interrupted download left every part of big.bin: the next pull uses them and asks
    // the server for nothing (the object is gone from it, and the pull still succeeds).
    let c = Ws::new(PIPE);
    let tmp = c.path("cache/remote-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(a.path("big.bin"), tmp.join(format!("{big}.part"))).unwrap();
    std::fs::write(tmp.join(format!("{big}.done")), "0\n1\n2\n").unwrap();
    assert!(request(port, "DELETE", &format!("/lab/mp/cas/{big}")).starts_with("HTTP/1.1 204"));
    let out = repro(&c, &env, &["run", "--remote", url]);
    assert!(out.contains("1 restored"), "{out}");
    assert!(std::fs::read(c.path("big.bin")).unwrap() == std::fs::read(a.path("big.bin")).unwrap());
}

/// The whole answer (head and body) to one unsigned request to moto.
fn answer(port: u16, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    String::from_utf8_lossy(&resp).to_string()
}

/// The text between the first `<tag>` and `</tag>` of an XML answer.
fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..start + len].to_string())
}

/// A push killed in the middle of a multipart upload (parts already on the server) leaves no
/// object under the name and no entry in `ac/`; the next push sends the object again, whole,
/// and writes the entry; a fresh workspace restores it byte-identical.
#[test]
fn a_push_killed_mid_multipart_upload_names_nothing_and_the_next_push_completes() {
    let Some((_server, port)) = moto() else {
        return;
    };
    assert!(request(port, "PUT", "/lab").starts_with("HTTP/1.1 200"));
    let env = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("REPRO_MULTIPART_THRESHOLD", (6 * MIB).to_string()),
        ("REPRO_PART_SIZE", (5 * MIB).to_string()),
    ];
    // 160 MiB: 32 parts of 5 MiB, four in flight, so the push is killed with most to go.
    let pipe =
        "stages:\n  big:\n    cmd: head -c 167772160 /dev/urandom > big.bin\n    outs: [big.bin]\n";
    let url = "s3://lab/mpk";
    let a = Ws::new(pipe);
    repro(&a, &env, &["run"]);
    let (big, _) = object_of_size(&a, 160 * MIB);
    let key = format!("/lab/mpk/cas/{big}");

    let mut push = a.cmd(&["push", "--remote", url]);
    push.env_remove("REPRO_REMOTE")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &env {
        push.env(k, v);
    }
    let mut child = push.spawn().unwrap();
    // Kill it once the server holds an upload in progress with at least one part. The push is
    // stopped (SIGSTOP) while the server is asked, so that it cannot finish the upload between
    // the look and the kill (on a busy machine the look can take longer than the whole upload).
    let pid = child.id() as libc::pid_t;
    let t = Instant::now();
    loop {
        // SAFETY: signals to our own child, which has not been waited for.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        if let Some(id) = xml_field(&answer(port, "GET", "/lab?uploads"), "UploadId")
            && answer(port, "GET", &format!("{key}?uploadId={id}")).contains("<PartNumber>")
        {
            break;
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        assert!(
            child.try_wait().unwrap().is_none(),
            "the push ended before a part was seen on the server"
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no part was uploaded"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing is named: no object under the hash, no entry.
    let head = request(port, "HEAD", &key);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let ac = answer(port, "GET", "/lab?list-type=2&prefix=mpk/ac/");
    assert!(
        ac.starts_with("HTTP/1.1 200") && !ac.contains("<Key>"),
        "{ac}"
    );

    // The next push completes: the object whole (32 parts), then the entry.
    repro(&a, &env, &["push", "--remote", url]);
    let head = request(port, "HEAD", &key);
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("-32\""),
        "{head}"
    );
    let ac = answer(port, "GET", "/lab?list-type=2&prefix=mpk/ac/");
    assert_eq!(ac.matches("<Key>").count(), 1, "{ac}");
    let b = Ws::new(pipe);
    let out = repro(&b, &env, &["run", "--remote", url]);
    assert!(out.contains("1 restored"), "{out}");
    assert!(std::fs::read(b.path("big.bin")).unwrap() == std::fs::read(a.path("big.bin")).unwrap());
}

/// A pull killed while the ranges of a large object come down (some parts finished, noted in
/// `remote-tmp/<hash>.done`) leaves no output in place and nothing stale looking fresh; the next
/// pull keeps the finished parts, fetches the rest and places the object byte-identical.
#[test]
fn a_pull_killed_mid_ranged_download_resumes_and_places_the_object_whole() {
    let Some((_server, port)) = moto() else {
        return;
    };
    assert!(request(port, "PUT", "/lab").starts_with("HTTP/1.1 200"));
    let env = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("REPRO_MULTIPART_THRESHOLD", (6 * MIB).to_string()),
        ("REPRO_PART_SIZE", (5 * MIB).to_string()),
    ];
    // 160 MiB: 32 ranges of 5 MiB, four at once.
    let pipe =
        "stages:\n  big:\n    cmd: head -c 167772160 /dev/urandom > big.bin\n    outs: [big.bin]\n";
    let url = "s3://lab/mpd";
    let a = Ws::new(pipe);
    repro(&a, &env, &["run"]);
    repro(&a, &env, &["push", "--remote", url]);
    let (big, _) = object_of_size(&a, 160 * MIB);

    let b = Ws::new(pipe);
    let mut pull = b.cmd(&["pull", "--remote", url]);
    pull.env_remove("REPRO_REMOTE")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &env {
        pull.env(k, v);
    }
    let mut child = pull.spawn().unwrap();
    let done = b.path(&format!("cache/remote-tmp/{big}.done"));
    let t = Instant::now();
    while std::fs::read_to_string(&done)
        .unwrap_or_default()
        .lines()
        .count()
        == 0
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before a part was finished"
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no part was downloaded"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished = std::fs::read_to_string(&done).unwrap().lines().count();
    assert!(finished < 32, "every part was already down: {finished}");
    assert!(!b.path("big.bin").exists(), "an output was placed");
    assert!(
        !b.path(&format!("cache/objects/{}/{}", &big[..2], &big[2..]))
            .exists()
    );

    // The next pull completes; the partial file and its list are gone.
    let out = repro(&b, &env, &["pull", "--remote", url]);
    assert!(out.contains("restored (remote)"), "{out}");
    assert!(std::fs::read(b.path("big.bin")).unwrap() == std::fs::read(a.path("big.bin")).unwrap());
    let left: Vec<_> = std::fs::read_dir(b.path("cache/remote-tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
