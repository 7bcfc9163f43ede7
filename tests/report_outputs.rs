//! End-to-end tests of the `report` stage kind: the real binary (`repro internal run-kind`)
//! renders the fixture runs; the LaTeX compiles with `pdflatex`; the HTML opens in headless
//! Chromium without console errors (a screenshot is taken) and its table cells equal the
//! `metrics.json` values they come from.
//!
//! The pdflatex and Chromium tests fail with a message when the tool is missing; install
//! them with `scripts/setup.sh --tests` (CI does).

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture_ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/ws")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let q = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &q)
        } else {
            std::fs::copy(&p, &q).unwrap();
        }
    }
}

/// A fresh workspace holding the fixture runs, and the report rendered into `out/` by the
/// binary.
fn run_kind(pdf: &str) -> (tempfile::TempDir, PathBuf) {
    let ws = tempfile::tempdir().unwrap();
    copy_dir(&fixture_ws(), ws.path());
    std::fs::write(ws.path().join("repro.lock"), "lock contents\n").unwrap();
    let spec = serde_json::json!({
        "stage": "report",
        "kind": "report",
        "params": {
            "runs": ["runs/**/metrics.json", "runs/cub/resnet50/bce-n0"],
            "out": "out",
            "pdf": pdf,
            "title": "End-to-end fixture report",
        },
    });
    let spec_path = ws.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["internal", "run-kind"])
        .arg(&spec_path)
        .current_dir(ws.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "run-kind failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = ws.path().join("out");
    (ws, out)
}

#[test]
fn kind_writes_html_tex_svgs_and_hashes_the_lock() {
    let (_ws, out) = run_kind("never");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(out.join("report.tex").is_file());
    assert!(!out.join("report.pdf").exists(), "pdf: never wrote a PDF");
    let svgs: Vec<_> = std::fs::read_dir(out.join("figures"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        svgs.len() >= 3,
        "expected Fig. 1, 2 and 3 SVGs, got {}",
        svgs.len()
    );
    let lock = blake3::hash(b"lock contents\n").to_hex().to_string();
    assert!(html.contains(&lock), "provenance lacks the repro.lock hash");
    // no temporary files left behind
    for e in std::fs::read_dir(&out).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(
            [
                "report.html",
                "report.tex",
                "summary.md",
                "summary-runs.json",
                "figures"
            ]
            .contains(&n.as_str()),
            "stray file {n} in out/"
        );
    }
}

#[test]
fn bad_params_and_inputs_are_clear_errors() {
    let ws = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({"stage": "r", "kind": "report", "params": {"runs": ["nope/**/metrics.json"], "out": "out", "colour": 1}});
    std::fs::write(ws.path().join("spec.json"), spec.to_string()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["internal", "run-kind", "spec.json"])
        .current_dir(ws.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("colour"), "unknown parameter not named: {err}");

    std::fs::create_dir_all(ws.path().join("runs/a")).unwrap();
    std::fs::write(ws.path().join("runs/a/metrics.json"), "{ not json").unwrap();
    let spec = serde_json::json!({"stage": "r", "kind": "report", "params": {"runs": ["runs/*"], "out": "out"}});
    std::fs::write(ws.path().join("spec.json"), spec.to_string()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["internal", "run-kind", "spec.json"])
        .current_dir(ws.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("runs/a/metrics.json"),
        "bad file not named: {err}"
    );
    assert!(!ws.path().join("out/report.html").exists());
}

#[test]
fn latex_compiles_with_pdflatex() {
    assert!(
        Command::new("pdflatex")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "pdflatex is not installed: run scripts/setup.sh --tests (texlive-latex-base, texlive-latex-recommended, texlive-latex-extra, texlive-pictures)"
    );
    let (_ws, out) = run_kind("always");
    let pdf = std::fs::read(out.join("report.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "report.pdf is not a PDF");
    assert!(
        pdf.len() > 20_000,
        "report.pdf is suspiciously small ({} bytes)",
        pdf.len()
    );
    // Same inputs, another workspace and time: the same bytes (the engine's cache relies on it).
    let (_ws2, out2) = run_kind("always");
    assert!(
        std::fs::read(out2.join("report.pdf")).unwrap() == pdf,
        "the PDF differs between two identical runs"
    );
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Run headless Chromium on `html` with `extra` arguments; returns (stdout, stderr).
fn headless(html: &Path, extra: &[&str]) -> (String, String) {
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

/// Lines where Chromium reports a page console message or a failed load.
fn console_errors(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            l.contains(":CONSOLE")
                || l.contains("Uncaught")
                || l.contains("ERR_FILE_NOT_FOUND")
                || l.contains("Failed to load resource")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn html_opens_in_chromium_without_console_errors_and_shows_the_metrics() {
    let (ws, out) = run_kind("never");
    let html = out.join("report.html");
    let shot = out.join("screenshot.png");
    let (_, err) = headless(
        &html,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,2000",
            "--hide-scrollbars",
        ],
    );
    assert!(
        console_errors(&err).is_empty(),
        "console errors: {:?}",
        console_errors(&err)
    );
    let png = std::fs::read(&shot).expect("no screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot is not a real PNG ({} bytes)",
        png.len()
    );
    // keep it for a human to look at
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_screenshot.png");
    std::fs::copy(&shot, &keep).unwrap();

    let (dom, err) = headless(&html, &["--dump-dom"]);
    assert!(
        console_errors(&err).is_empty(),
        "console errors: {:?}",
        console_errors(&err)
    );
    // Every accuracy cell of a single run shows that run's metrics.json value (the SoftMax
    // tables its `softmax` block).
    let cells = |metric: &str, run: &str| -> Vec<(bool, String)> {
        let key = format!("data-metric=\"{metric}\"");
        let runs = format!("data-runs=\"{run}\"");
        dom.split("<td")
            .filter(|c| c.contains(&key) && c.contains(&runs))
            .map(|c| {
                let softmax = c.contains("data-table=\"softmax-");
                let text = &c[c.find('>').unwrap() + 1..];
                (softmax, text[..text.find('<').unwrap()].to_string())
            })
            .collect()
    };
    let mut checked = 0;
    for run in [
        "runs/cub/resnet50/bce-nu",
        "runs/cub/resnet50/soft-d",
        "runs/imagenet/gamma/bce-nu-g16",
        "runs/cub/bias-init/bce-nd-mode7",
    ] {
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(ws.path().join(run).join("metrics.json")).unwrap(),
        )
        .unwrap();
        for metric in ["a_sw", "a_cw", "a_uni"] {
            let found = cells(metric, run);
            assert!(!found.is_empty(), "no {metric} cell for {run} in the HTML");
            for (softmax, text) in found {
                let v = if softmax {
                    &m["softmax"][metric]
                } else {
                    &m[metric]
                };
                assert_eq!(
                    text,
                    format!("{:.2}", v.as_f64().unwrap()),
                    "{run} {metric} (softmax table: {softmax})"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 12);
}
