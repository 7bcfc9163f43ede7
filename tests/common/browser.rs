//! Headless Chromium for the tests that open a generated page in a real browser (the report,
//! the plots page): include it with
//! `#[path = "common/browser.rs"] mod browser;`.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The Chromium executable, if one is installed.
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Run headless Chromium on `html` with `extra` arguments; returns (stdout, stderr). The
/// network is cut off (`--host-resolver-rules`), so a page that needs it shows that.
pub fn headless(html: &Path, extra: &[&str]) -> (String, String) {
    let exe = chromium().expect(
        "Chromium is not installed: run scripts/setup.sh --tests (Debian package chromium)",
    );
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The page's DOM after it loaded (what the browser made of it).
pub fn dom(html: &Path) -> String {
    headless(html, &["--dump-dom"]).0
}

/// Lines where Chromium reports a page console message or a failed load.
pub fn console_errors(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            l.contains(":CONSOLE")
                || l.contains("Uncaught")
                || l.contains("ERR_FILE_NOT_FOUND")
                || l.contains("ERR_NAME_NOT_RESOLVED")
                || l.contains("Failed to load resource")
        })
        .map(str::to_string)
        .collect()
}
