//! A tiny HTTP/1.1 file server for the data tests (loopback only), included by the other
//! `data_*` tests with `#[path]`. It serves byte routes, answers `Range: bytes=N-` with 206,
//! can cut a transfer mid-body, answer 404, or hang (for timeouts), and logs every request.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub enum Route {
    /// Serve the bytes.
    Bytes(Vec<u8>),
    /// Announce the full length but close after `cut` bytes, the first `times` requests.
    CutOnce {
        body: Vec<u8>,
        cut: usize,
        times: usize,
    },
    /// Accept and never answer.
    Hang,
}

/// One logged request: path and its Range header, if any.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
}

pub struct Server {
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    pub log: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let (r, l) = (routes.clone(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || serve(stream, &r, &l));
            }
        });
        Self { base, routes, log }
    }

    pub fn add(&self, path: &str, route: Route) -> String {
        self.routes.lock().unwrap().insert(path.to_string(), route);
        format!("{}{path}", self.base)
    }

    pub fn requests(&self, path: &str) -> Vec<Request> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

fn serve(stream: TcpStream, routes: &Mutex<HashMap<String, Route>>, log: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    log.lock().unwrap().push(Request {
        path: path.clone(),
        range: range.clone(),
    });
    let route = {
        let mut routes = routes.lock().unwrap();
        let r = routes.get(&path).cloned();
        // Count down the cuts.
        if let Some(Route::CutOnce { body, cut, times }) = &r {
            let next = if *times <= 1 {
                Route::Bytes(body.clone())
            } else {
                Route::CutOnce {
                    body: body.clone(),
                    cut: *cut,
                    times: times - 1,
                }
            };
            routes.insert(path.clone(), next);
        }
        r
    };
    let mut out = stream;
    let (body, cut) = match route {
        None => {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
            return;
        }
        Some(Route::Hang) => {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        Some(Route::Bytes(b)) => (b, None),
        Some(Route::CutOnce { body, cut, .. }) => (body, Some(cut)),
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n < body.len());
    let head = match start {
        Some(s) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {s}-{}/{}\r\nConnection: close\r\n\r\n",
            body.len() - s,
            body.len() - 1,
            body.len()
        ),
        None => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
    };
    let s = start.unwrap_or(0);
    let _ = out.write_all(head.as_bytes());
    let end = match cut {
        Some(c) => (s + c).min(body.len()),
        None => body.len(),
    };
    let _ = out.write_all(&body[s..end]);
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Both);
}
