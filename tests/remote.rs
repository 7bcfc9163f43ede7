//! The remote cache against real servers started here on 127.0.0.1: a shared directory
//! (`file://`), nginx with WebDAV, and an S3-compatible server (moto). Two workspaces on one
//! machine: A runs and pushes; B, a fresh copy of the pipeline with an empty cache, restores
//! every stage from the remote with byte-identical outputs. A server killed mid-transfer and a
//! pull killed mid-transfer leave nothing that looks fresh, and the retry completes; a
//! corrupted remote object is detected, never placed, and repaired by verify + push.
//!
//! The nginx and S3 tests skip, loudly, only when their server binary is missing;
//! `scripts/setup.sh --tests` installs both.
// Needs the remote cache in the binary under test.
#![cfg(feature = "remote")]

mod common;
#[path = "common/remote.rs"]
mod servers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Ws, both};
use servers::{Server, create_bucket, fail, free_port, moto_binary, ok, serve, start_moto};

/// Three stages: a directory of several files, a file, and a directory with a nested one.
const PIPE: &str = r#"stages:
  gen:
    cmd: echo gen >> executions.log && mkdir -p data && seq 1 20000 > data/nums.txt && for i in 1 2 3 4 5 6; do head -c 300000 /dev/urandom > data/blob$i.bin; done && echo same > data/a.txt && echo same > data/b.txt
    outs: [data]
  sum:
    cmd: echo sum >> executions.log && cat data/*.bin | wc -c > sums.txt && head -c 1000 /dev/urandom | od -x | head -3 >> sums.txt
    deps: [data]
    outs: [sums.txt]
  report:
    cmd: echo report >> executions.log && mkdir -p rep/deep && cp sums.txt rep/deep/r.txt && cp data/blob1.bin rep/copy.bin
    deps: [sums.txt, data]
    outs: [rep]
"#;

const OUTPUTS: &[&str] = &["data", "sums.txt", "rep"];

/// Every file under the outputs, with its bytes.
fn snapshot(ws: &Ws) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, p: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        } else if p.exists() {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, std::fs::read(p).unwrap()));
        }
    }
    let mut out = Vec::new();
    for o in OUTPUTS {
        walk(ws.dir.path(), &ws.path(o), &mut out);
    }
    out.sort();
    out
}

/// Stages `repro status` calls fresh.
fn fresh_stages(ws: &Ws) -> Vec<String> {
    let text = ok(ws, &[], &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "fresh")
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect()
}

/// A runs the pipeline and pushes; B (same pipeline, empty cache) runs and restores every
/// stage from the remote without executing anything, byte-identical. Returns (A, B).
fn two_workspaces(url: &str, env: &[(&str, String)]) -> (Ws, Ws) {
    let a = Ws::new(PIPE);
    let out = ok(&a, env, &["run", "--remote", url]);
    assert!(out.contains("3 ran"), "{out}");
    let out = ok(&a, env, &["push", "--remote", url]);
    assert!(out.contains("pushed 3 stages"), "{out}");
    let out = ok(&a, env, &["push", "--remote", url]);
    assert!(
        out.contains("pushed 0 stages") && out.contains("3 already on the remote"),
        "{out}"
    );

    let b = Ws::new(PIPE);
    let out = ok(&b, env, &["run", "--remote", url]);
    assert!(
        out.contains("0 ran") && out.contains("3 restored (remote)"),
        "{out}"
    );
    // The look-ahead: sum's and report's keys follow from gen's entry (their deps are not
    // in B yet), so all three are found before the scheduler starts, one round per level.
    assert!(
        out.contains("remote: 3 stages found ahead of the run, in 3 rounds of look-ups"),
        "{out}"
    );
    for s in ["gen", "sum", "report"] {
        assert!(
            out.contains(&format!("restored {s} from the remote cache")),
            "{out}"
        );
    }
    assert!(b.executions().is_empty(), "B executed {:?}", b.executions());
    assert_eq!(snapshot(&a), snapshot(&b), "B's outputs differ from A's");
    assert_eq!(fresh_stages(&b).len(), 3);
    let out = ok(&b, env, &["run", "--remote", url]);
    assert!(out.contains("everything is up to date"), "{out}");
    (a, b)
}

// ---------------------------------------------------------------------------------------
// file://

#[test]
fn file_remote_shares_stages_between_workspaces_and_refuses_corrupt_objects() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().join("cache").display());
    let (a, _b) = two_workspaces(&url, &[]);
    let cas = shared.path().join("cache/cas");
    assert!(shared.path().join("cache/ac").read_dir().unwrap().count() == 3);

    // A third workspace names the remote in its pipeline (no flag): pull places everything.
    let c = Ws::new(&format!("remote: {url}\n{PIPE}"));
    let out = ok(&c, &[], &["pull"]);
    assert!(out.contains("3 restored (remote)"), "{out}");
    assert_eq!(snapshot(&a), snapshot(&c));
    // --no-remote turns it off: a fresh copy then runs its stages.
    let d = Ws::new(&format!("remote: {url}\n{PIPE}"));
    let out = ok(&d, &[], &["run", "--no-remote", "gen"]);
    assert!(out.contains("1 ran"), "{out}");

    // Corrupt one object of gen's directory (same size, other bytes).
    let blob = std::fs::read(a.path("data/blob3.bin")).unwrap();
    let hash = blake3::hash(&blob).to_hex().to_string();
    let obj = cas.join(&hash);
    let mut bad = blob.clone();
    bad[1000] ^= 0xff;
    std::fs::write(&obj, &bad).unwrap();

    // pull reports it, places nothing of gen (or what needs gen), and caches no bad byte.
    let e = Ws::new(PIPE);
    let out = fail(&e, &[], &["pull", "--remote", &url]);
    assert!(out.contains("corrupted") && out.contains(&hash), "{out}");
    assert!(
        !e.path("data").exists() && !e.path("rep").exists(),
        "a corrupt object was placed"
    );
    assert!(fresh_stages(&e).is_empty());
    let local = e.path(&format!("cache/objects/{}/{}", &hash[..2], &hash[2..]));
    assert!(!local.exists(), "a corrupt object entered the local cache");
    // run warns and computes gen itself instead.
    let out = ok(&e, &[], &["run", "--remote", &url]);
    assert!(out.contains("corrupted") && out.contains("ran"), "{out}");
    assert!(e.executions().contains(&"gen".to_string()), "{out}");

    // verify finds it, removes it and the entries that needed it; A's push repairs the remote.
    let out = fail(&a, &[], &["cache", "verify", "--remote", &url]);
    assert!(out.contains(&format!("corrupt: cas/{hash}")), "{out}");
    assert!(out.contains("incomplete: ac/"), "{out}");
    assert!(!obj.exists());
    let out = ok(&a, &[], &["push", "--remote", &url]);
    assert!(out.contains("pushed"), "{out}");
    let out = ok(&a, &[], &["cache", "verify", "--remote", &url]);
    assert!(
        out.contains("0 corrupt") && out.contains("0 incomplete"),
        "{out}"
    );
    let f = Ws::new(PIPE);
    let out = ok(&f, &[], &["pull", "--remote", &url]);
    assert!(out.contains("3 restored (remote)"), "{out}");
    assert_eq!(snapshot(&a), snapshot(&f));
}

#[test]
fn pull_reports_stages_the_remote_lacks_and_run_without_remote_pays_nothing() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().display());
    let a = Ws::new(PIPE);
    ok(&a, &[], &["run"]);
    // Only gen is pushed: pull places gen, reports sum, skips report.
    ok(&a, &[], &["push", "--remote", &url, "gen"]);
    let b = Ws::new(PIPE);
    let out = fail(&b, &[], &["pull", "--remote", &url]);
    assert!(out.contains("1 restored (remote)"), "{out}");
    assert!(
        out.contains("not in the local or the remote run cache"),
        "{out}"
    );
    assert!(b.executions().is_empty());
    assert_eq!(fresh_stages(&b), vec!["gen".to_string()]);
    // Stale stages are not pushed.
    a.write("data/extra.txt", "edited by hand");
    let out = ok(&a, &[], &["push", "--remote", &url]);
    assert!(out.contains("not pushed: gen"), "{out}");
    // No remote configured: pull says how to set one; a bad one is a spec error at its line.
    let out = fail(&b, &[], &["pull"]);
    assert!(out.contains("no remote cache configured"), "{out}");
    let c = Ws::new(&format!("remote: ftp://host/x\n{PIPE}"));
    let out = fail(&c, &[], &["run"]);
    assert!(
        out.contains("pipeline.yaml:1") && out.contains("unsupported remote scheme"),
        "{out}"
    );
    let c = Ws::new(&format!("remote: https://me:secret@host/x\n{PIPE}"));
    let out = fail(&c, &[], &["run"]);
    assert!(out.contains("credentials"), "{out}");
    // A configured but unreachable remote costs a warning, and the stages run.
    let d = Ws::new(PIPE);
    let out = ok(&d, &[], &["run", "--remote", "http://127.0.0.1:9/none"]);
    assert!(
        out.contains("unavailable") && out.contains("3 ran"),
        "{out}"
    );
    // With the remote configured, a no-op run makes no contact (the dead URL is never asked).
    let out = ok(&d, &[], &["run", "--remote", "http://127.0.0.1:9/none"]);
    assert!(
        out.contains("everything is up to date") && !out.contains("unavailable"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// nginx (WebDAV)

/// Two configurations of one pipeline: the parameter `scale` feeds `gen`, whose output `sum`
/// reads.
const SWEEP: &str = r#"vars:
  scale: 2
stages:
  gen:
    cmd: echo gen >> executions.log && mkdir -p out && echo ${scale} > out/v.txt && seq 1 ${scale}000 > out/n.txt
    params: [scale]
    outs: [out]
  sum:
    cmd: echo sum >> executions.log && wc -l < out/n.txt > total.txt
    deps: [out]
    outs: [total.txt]
"#;

/// `push` sends the configuration repro.lock records; `push --all` also every other one in the
/// local run cache (here an earlier `--set`), which a fresh workspace then pulls unrun.
#[test]
fn push_all_shares_every_configuration_in_the_run_cache() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().join("cache").display());
    let a = Ws::new(SWEEP);
    ok(&a, &[], &["run", "--no-remote", "--set", "scale=3"]);
    ok(&a, &[], &["run", "--no-remote"]);
    assert_eq!(a.read("total.txt").trim(), "2000");

    let out = ok(&a, &[], &["push", "--remote", &url]);
    assert!(out.contains("pushed 2 stages"), "{out}");
    let b = Ws::new(SWEEP);
    let out = fail(&b, &[], &["pull", "--remote", &url, "--set", "scale=3"]);
    assert!(
        out.contains("not in the local or the remote run cache"),
        "{out}"
    );

    let out = ok(&a, &[], &["push", "--all", "--remote", &url]);
    assert!(
        out.contains("pushed 2 stages") && out.contains("2 already on the remote"),
        "{out}"
    );
    let out = ok(&a, &[], &["push", "--all", "--remote", &url]);
    assert!(
        out.contains("pushed 0 stages") && out.contains("4 already on the remote"),
        "{out}"
    );
    let c = Ws::new(SWEEP);
    let out = ok(&c, &[], &["pull", "--remote", &url, "--set", "scale=3"]);
    assert!(out.contains("2 restored (remote)"), "{out}");
    assert_eq!(c.read("out/v.txt").trim(), "3");
    assert_eq!(c.read("total.txt").trim(), "3000");
    assert!(c.executions().is_empty(), "C executed {:?}", c.executions());
    assert_eq!(
        shared.path().join("cache/ac").read_dir().unwrap().count(),
        4
    );
}

const DAV_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so";

fn nginx_binary() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/sbin/nginx");
    if p.exists() && Path::new(DAV_MODULE).exists() {
        Some(p)
    } else {
        eprintln!(
            "\n!!!!! SKIPPED: nginx with the WebDAV extension module is not installed \
             (apt-get install nginx libnginx-mod-http-dav-ext; scripts/setup.sh --tests does it) !!!!!\n"
        );
        None
    }
}

/// nginx serving `dir/www` on `port`: `/cache/` read-write WebDAV (each connection limited
/// to `rate`, `0` = unlimited), `/ro/` the same files read-only.
fn start_nginx(bin: &Path, dir: &Path, port: u16, rate: &str) -> Server {
    std::fs::create_dir_all(dir.join("www/cache")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let d = dir.display();
    let conf = format!(
        r#"load_module {DAV_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port};
    root {d}/www;
    location /cache/ {{
      dav_methods PUT DELETE MKCOL;
      dav_ext_methods PROPFIND OPTIONS;
      create_full_put_path on;
      limit_rate {rate};
    }}
    location /ro/ {{
      alias {d}/www/cache/;
      limit_except GET {{ deny all; }}
    }}
  }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args([
        "-p",
        &d.to_string(),
        "-e",
        &format!("{d}/error.log"),
        "-c",
        &format!("{d}/nginx.conf"),
    ]);
    serve(cmd, port)
}

#[test]
fn webdav_remote_two_workspaces_read_only_pull_and_a_server_killed_mid_transfer() {
    let Some(bin) = nginx_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start_nginx(&bin, dir.path(), port, "0");
    let url = format!("http://127.0.0.1:{port}/cache");
    let (a, _b) = two_workspaces(&url, &[]);
    let out = ok(&a, &[], &["cache", "verify", "--remote", &url]);
    assert!(
        out.contains("0 corrupt") && out.contains("3 run-cache entries checked"),
        "{out}"
    );

    // Read-only use: GET only, no credentials.
    let ro = format!("http://127.0.0.1:{port}/ro");
    let c = Ws::new(PIPE);
    let out = ok(&c, &[], &["pull", "--remote", &ro]);
    assert!(out.contains("3 restored (remote)"), "{out}");
    assert_eq!(snapshot(&a), snapshot(&c));
    let out = fail(&c, &[], &["push", "--remote", &format!("{ro}/other")]);
    assert!(
        out.contains("403") || out.to_lowercase().contains("forbidden"),
        "{out}"
    );
    drop(server);

    // Slow the server down so that a transfer can be cut in the middle.
    let server = start_nginx(&bin, dir.path(), port, "400k");
    let d = Ws::new(PIPE);
    let pull = d
        .cmd(&["pull", "--remote", &url])
        .env_remove("REPRO_REMOTE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_partial_download(&d);
    drop(server); // the server dies mid-transfer
    let o = pull.wait_with_output().unwrap();
    let text = both(&o);
    assert!(
        !o.status.success(),
        "pull should fail when the server dies:\n{text}"
    );
    assert!(
        fresh_stages(&d).is_empty(),
        "a failed pull left a fresh-looking stage:\n{text}"
    );
    assert!(
        !d.path("data").exists(),
        "a failed pull placed a partial output"
    );

    // The pull itself killed mid-transfer: nothing fresh either.
    let server = start_nginx(&bin, dir.path(), port, "400k");
    let mut pull = d.spawn(&["pull", "--remote", &url]);
    wait_for_partial_download(&d);
    pull.kill().unwrap();
    pull.wait().unwrap();
    assert!(fresh_stages(&d).is_empty());
    assert!(!d.path("data").exists());
    drop(server);

    // The retry completes and leaves no temporary files. (An entry whose objects all arrived
    // before a failed pull is already in the local run cache: restored from there.)
    let _server = start_nginx(&bin, dir.path(), port, "0");
    let out = ok(&d, &[], &["pull", "--remote", &url]);
    assert!(out.contains("0 ran") && out.contains("0 failed"), "{out}");
    let restored = out.lines().filter(|l| l.starts_with("restored ")).count();
    assert_eq!(restored, 3, "{out}");
    assert_eq!(snapshot(&a), snapshot(&d));
    assert_eq!(
        std::fs::read_dir(d.path("cache/remote-tmp"))
            .unwrap()
            .count(),
        0
    );
}

/// Wait until a pull in `ws` has started writing a download (or give up after 20 s).
fn wait_for_partial_download(ws: &Ws) {
    let tmp = ws.path("cache/remote-tmp");
    let t = Instant::now();
    loop {
        let started = std::fs::read_dir(&tmp)
            .map(|d| {
                d.flatten()
                    .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
            })
            .unwrap_or(false);
        if started {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no download started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// S3 (moto)

#[test]
fn s3_remote_two_workspaces_and_a_dead_server() {
    let Some(bin) = moto_binary() else { return };
    let port = free_port();
    let server = start_moto(&bin, port);
    create_bucket(port, "lab");
    let env = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
    ];
    let url = "s3://lab/team/repro";
    let (a, _b) = two_workspaces(url, &env);
    let out = ok(&a, &env, &["cache", "verify", "--remote", url]);
    assert!(
        out.contains("0 corrupt") && out.contains("3 run-cache entries checked"),
        "{out}"
    );

    // The server goes away: push fails with the reason; run warns and computes instead.
    drop(server);
    let t = Instant::now();
    let out = fail(&a, &env, &["push", "--remote", url]);
    assert!(out.contains("error"), "{out}");
    let c = Ws::new(PIPE);
    let out = ok(&c, &env, &["run", "--remote", url]);
    assert!(
        out.contains("unavailable") && out.contains("3 ran"),
        "{out}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "a dead server took {:?}",
        t.elapsed()
    );
}
