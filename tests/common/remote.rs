//! Helpers shared by the remote cache's tests: repro with extra environment (and no
//! `REPRO_REMOTE` from the caller's), and the local servers they start (moto for S3).
//! Included with `#[path = "common/remote.rs"] mod servers;` beside `mod common;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Ws, both};

/// Run repro in `ws` with extra environment; returns (success, stdout + stderr).
pub fn repro(ws: &Ws, env: &[(&str, String)], args: &[&str]) -> (bool, String) {
    let mut c = ws.cmd(args);
    c.env_remove("REPRO_REMOTE");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (o.status.success(), both(&o))
}

/// [`repro`], expecting success; returns stdout + stderr.
pub fn ok(ws: &Ws, env: &[(&str, String)], args: &[&str]) -> String {
    let (s, text) = repro(ws, env, args);
    assert!(s, "repro {args:?} failed:\n{text}");
    text
}

/// [`repro`], expecting failure; returns stdout + stderr.
pub fn fail(ws: &Ws, env: &[(&str, String)], args: &[&str]) -> String {
    let (s, text) = repro(ws, env, args);
    assert!(!s, "repro {args:?} should have failed:\n{text}");
    text
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until `child` listens on `port` (20 s at most; it must not exit first).
pub fn wait_for_port(port: u16, child: &mut Child) {
    // A connect to a port nobody listens on can meet itself (TCP self-connect, when the
    // kernel picks that very port as the local one): such a connection is not the server.
    let listening = || {
        TcpStream::connect(("127.0.0.1", port))
            .is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
    };
    let t = Instant::now();
    while !listening() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("server exited before listening: {st}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server process killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto's S3 server: the one `scripts/setup.sh --tests` installs, else one on PATH; `None`
/// (said loudly, the test then skips) when there is none.
pub fn moto_binary() -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/moto/bin/moto_server");
    if local.exists() {
        return Some(local);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.exists())
    });
    if found.is_none() {
        eprintln!(
            "\n!!!!! SKIPPED: no S3-compatible server: moto_server is not installed \
             (scripts/setup.sh --tests installs it into .tools/moto) !!!!!\n"
        );
    }
    found
}

/// moto listening on `port`.
pub fn start_moto(bin: &Path, port: u16) -> Server {
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    serve(cmd, port)
}

/// Start a server quietly and wait until it listens on `port`.
pub fn serve(mut cmd: Command, port: u16) -> Server {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child);
    Server(child)
}

/// moto on a free port, when installed.
pub fn moto() -> Option<(Server, u16)> {
    let bin = moto_binary()?;
    let port = free_port();
    Some((start_moto(&bin, port), port))
}

/// Create a bucket (moto accepts the unsigned request).
pub fn create_bucket(port: u16, bucket: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}
