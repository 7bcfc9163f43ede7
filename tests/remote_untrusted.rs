//! A remote's bytes are untrusted: a run-cache entry that is malformed, or huge (a sparse
//! 5 GB file, an HTTP body that never ends), and an object whose body goes past its declared
//! size, cost bounded memory and disk and are skipped with a warning naming the entry, while the
//! remote stays in use for every other stage; and a server that refuses writes is reported in
//! one line per failure, not with its error page.
//!
//! The HTTP server here is a small one in this process, on 127.0.0.1: it serves a directory
//! read-only, answers every write with an HTML error page (as nginx does), and can stream an
//! endless body for entries or objects. Each connection is bounded in what it sends, and the
//! server stops when dropped.
// Needs the remote cache in the binary under test.
#![cfg(feature = "remote")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Ws, both};

/// Two deterministic stages, b reading a's output: recomputing a leaves b's key as it was, so
/// b stays restorable from the remote after a's entry is found bad.
const PAIR: &str = r#"stages:
  a:
    cmd: echo a >> executions.log && echo one > a.txt
    outs: [a.txt]
  b:
    cmd: echo b >> executions.log && cat a.txt > b.txt && echo two >> b.txt
    deps: [a.txt]
    outs: [b.txt]
"#;

/// Run repro in `ws` (no remote from the environment); returns (exit code, stdout + stderr).
fn repro(ws: &Ws, args: &[&str]) -> (Option<i32>, String) {
    let o = ws.cmd(args).env_remove("REPRO_REMOTE").output().unwrap();
    (o.status.code(), both(&o))
}

fn ok(ws: &Ws, args: &[&str]) -> String {
    let (code, text) = repro(ws, args);
    assert_eq!(code, Some(0), "repro {args:?} failed:\n{text}");
    text
}

/// Run repro and also return the child's peak resident memory in KiB (from `wait4`).
// `wait4` reaps the child: std's `wait` cannot report its resource usage.
#[allow(clippy::zombie_processes)]
fn repro_measured(ws: &Ws, args: &[&str]) -> (Option<i32>, String, i64) {
    let out = tempfile::NamedTempFile::new().unwrap();
    // Both streams append to one file: two plain descriptors would each write from offset 0
    // over the other's lines (warnings go to stderr, the rest to stdout).
    let append = || {
        let f = std::fs::OpenOptions::new().append(true).open(out.path());
        Stdio::from(f.unwrap())
    };
    let child = ws
        .cmd(args)
        .env_remove("REPRO_REMOTE")
        .stdout(append())
        .stderr(append())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: plain libc call on a child this test spawned and has not waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let text = std::fs::read_to_string(out.path()).unwrap();
    (code, text, usage.ru_maxrss)
}

/// A file:// remote holding a and b, pushed from a first workspace. Returns the remote's
/// directory (kept alive), its URL, and the key of a's entry.
fn pair_remote() -> (tempfile::TempDir, String, String) {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().display());
    let w = Ws::new(PAIR);
    ok(&w, &["run"]);
    let out = ok(&w, &["push", "--remote", &url]);
    assert!(out.contains("pushed 2 stages"), "{out}");
    let key = entry_of(shared.path(), "a");
    (shared, url, key)
}

/// The key of the entry under `remote/ac/` written for `stage`.
fn entry_of(remote: &Path, stage: &str) -> String {
    for e in std::fs::read_dir(remote.join("ac")).unwrap() {
        let e = e.unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        if v["stage"] == stage {
            return e.file_name().into_string().unwrap();
        }
    }
    panic!("no entry for {stage} in {}", remote.display());
}

/// After a's entry was found bad: a ran here, b came from the remote, with one warning that
/// names a's entry, and the remote was never turned off.
fn assert_a_ran_b_restored(ws: &Ws, out: &str, url: &str, key: &str) {
    let named = format!("ac/{key} on {url}");
    assert_eq!(
        out.matches(&named).count(),
        1,
        "one warning naming a's entry:\n{out}"
    );
    assert!(out.contains("warning:"), "{out}");
    assert!(
        !out.contains("unavailable"),
        "the remote was turned off:\n{out}"
    );
    assert!(
        out.contains("1 ran") && out.contains("1 restored (remote)"),
        "{out}"
    );
    assert!(out.contains("restored b from the remote cache"), "{out}");
    assert_eq!(ws.executions(), vec!["a".to_string()]);
    assert_eq!(ws.read("b.txt"), "one\ntwo\n");
}

#[test]
fn a_malformed_entry_is_skipped_with_a_warning_and_the_remote_stays_in_use() {
    let (shared, url, key) = pair_remote();
    std::fs::write(shared.path().join("ac").join(&key), "{ not an entry").unwrap();

    let ws = Ws::new(PAIR);
    let out = ok(&ws, &["run", "--remote", &url]);
    assert_a_ran_b_restored(&ws, &out, &url, &key);
    assert!(out.contains("malformed run-cache entry"), "{out}");

    // pull restores nothing of a, says which entry is at fault, and exits as a failed pull.
    let ws = Ws::new(PAIR);
    let (code, out) = repro(&ws, &["pull", "--remote", &url]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("ac/{key} on {url}")), "{out}");
    assert!(ws.executions().is_empty());
}

#[test]
fn a_sparse_5gb_entry_is_not_read_into_memory_and_is_skipped() {
    let (shared, url, key) = pair_remote();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shared.path().join("ac").join(&key))
        .unwrap();
    f.set_len(5 << 30).unwrap(); // a hole: no disk

    let ws = Ws::new(PAIR);
    let (code, out, rss_kib) = repro_measured(&ws, &["run", "--remote", &url]);
    assert_eq!(code, Some(0), "{out}");
    assert_a_ran_b_restored(&ws, &out, &url, &key);
    assert!(out.contains("over the limit"), "{out}");
    assert!(
        rss_kib < 256 << 10,
        "run peaked at {} MiB of memory",
        rss_kib >> 10
    );

    let ws = Ws::new(PAIR);
    let (code, out, rss_kib) = repro_measured(&ws, &["pull", "--remote", &url]);
    assert_eq!(
        code,
        Some(1),
        "pull should fail as a pull, not abort:\n{out}"
    );
    assert!(out.contains(&format!("ac/{key} on {url}")), "{out}");
    assert!(rss_kib < 256 << 10, "pull peaked at {} MiB", rss_kib >> 10);

    // verify reports the entry and removes it.
    let (code, out) = repro(&ws, &["cache", "verify", "--remote", &url]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("incomplete: ac/{key}")) && out.contains("over the limit"),
        "{out}"
    );
    assert!(!shared.path().join("ac").join(&key).exists());
}

// ---------------------------------------------------------------------------------------
// A small HTTP server

/// What the test server does for a GET.
#[derive(Clone, Copy, PartialEq)]
enum Serve {
    /// Serve the file.
    Files,
    /// Under this prefix (`ac/`, `cas/`), declare a terabyte and send zeros until the client
    /// goes away (at most 256 MiB); serve other files.
    EndlessUnder(&'static str),
}

/// nginx's page for a refused method, which a client must not print.
const ERROR_PAGE: &str = "<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n<center><h1>403 Forbidden</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// A read-only HTTP server for `root` on 127.0.0.1, stopped when dropped.
struct HttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start(root: PathBuf, mode: Serve) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let t = Instant::now();
            // Bounded: stops when dropped, and after two minutes whatever happens.
            while !flag.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(120) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let root = root.clone();
                        std::thread::spawn(move || answer(s, &root, mode));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/c", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request per connection (every answer says `Connection: close`).
fn answer(s: TcpStream, root: &Path, mode: Serve) {
    s.set_nonblocking(false).unwrap();
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let (method, target) = (
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or("").to_string(),
    );
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    // Read (and drop) a request body so the client sees the answer, not a reset.
    let _ = std::io::copy(&mut r.by_ref().take(length as u64), &mut std::io::sink());
    let mut s = s;
    let rel = target.strip_prefix("/c/").unwrap_or("");
    if method != "GET" && method != "HEAD" {
        let _ = write!(
            s,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ERROR_PAGE}",
            ERROR_PAGE.len()
        );
        return;
    }
    if let Serve::EndlessUnder(prefix) = mode
        && rel.starts_with(prefix)
        && method == "GET"
    {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            1u64 << 40
        );
        let zeros = vec![0u8; 1 << 16];
        for _ in 0..(1 << 12) {
            if s.write_all(&zeros).is_err() {
                return;
            }
        }
        return;
    }
    let file = (!rel.is_empty() && !rel.contains(".."))
        .then(|| std::fs::read(root.join(rel)).ok())
        .flatten();
    match file {
        Some(body) => {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if method == "GET" {
                let _ = s.write_all(&body);
            }
        }
        None => {
            let _ = write!(
                s,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
}

#[test]
fn an_endless_http_body_for_an_entry_is_cut_and_the_remote_stays_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path().to_path_buf(), Serve::EndlessUnder("ac/"));
    let url = server.url();

    // pull: every entry is refused at its declared size, each named; no abort.
    let ws = Ws::new(PAIR);
    let (code, out, rss_kib) = repro_measured(&ws, &["pull", "--remote", &url]);
    assert_eq!(
        code,
        Some(1),
        "pull should fail as a pull, not abort:\n{out}"
    );
    assert!(
        out.contains("over the limit") && out.contains(&url),
        "{out}"
    );
    assert!(rss_kib < 256 << 10, "pull peaked at {} MiB", rss_kib >> 10);

    // run: both stages are looked up (the remote is not turned off after the first), and run.
    let (code, out) = repro(&ws, &["run", "--remote", &url]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("run-cache entry ac/").count(), 2, "{out}");
    assert!(!out.contains("unavailable"), "{out}");
    assert!(out.contains("2 ran"), "{out}");
}

#[test]
fn an_endless_object_body_is_refused_past_its_declared_size() {
    let (shared, _, _) = pair_remote();
    let server = HttpServer::start(shared.path().to_path_buf(), Serve::EndlessUnder("cas/"));
    let url = server.url();
    // The entries are good; each names a few-byte object that the server says is a terabyte.
    let ws = Ws::new(PAIR);
    let (code, out) = repro(&ws, &["run", "--remote", &url]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("is too large").count(), 2, "{out}");
    assert_eq!(out.matches("run-cache entry ac/").count(), 2, "{out}");
    assert!(!out.contains("unavailable"), "{out}");
    assert!(out.contains("2 ran"), "{out}");
    let left: u64 = std::fs::read_dir(ws.path("cache/remote-tmp"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(left, 0, "a partial download was left behind");
}

#[test]
fn a_push_refused_by_a_get_only_server_says_status_method_and_url_once_per_object() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path().to_path_buf(), Serve::Files);
    let url = server.url();
    let ws = Ws::new(PAIR);
    ok(&ws, &["run"]);
    let (code, out) = repro(&ws, &["push", "--remote", &url]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        !out.contains("<html") && !out.contains("403 Forbidden</"),
        "the server's error page was printed:\n{out}"
    );
    // Two objects (a.txt, b.txt), one line each, naming status, method and URL.
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 2, "{out}");
    for e in errors {
        assert!(
            e.contains(&format!("HTTP 403 Forbidden on PUT {url}/cas/")),
            "{out}"
        );
    }
}
