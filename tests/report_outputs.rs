//! End-to-end tests of the `report` stage kind: the real binary (`repro internal run-kind`)
//! renders the fixture runs; the LaTeX compiles with `pdflatex`; the HTML opens in headless
//! Chromium without console errors (a screenshot is taken) and its table cells equal the
//! `metrics.json` values they come from.
//!
//! The pdflatex and Chromium tests fail with a message when the tool is missing; install
//! them with `scripts/setup.sh --tests` (CI does).

#[path = "common/browser.rs"]
mod browser;

use browser::{console_errors, headless};
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

/// A synthetic run trace (`cache/trace.jsonl`): an older run, the last full run (download,
/// preprocess, two `train` stages on one GPU each, an `evaluate` that failed), a later run
/// that only rendered the report, and a line cut short.
const T0: u64 = 1_764_000_000_000;

fn trace() -> String {
    let line = |run: u64,
                stage: &str,
                kind: &str,
                at_s: u64,
                wall: f64,
                cpu: f64,
                kb: u64,
                gpus: usize,
                status: &str| {
        serde_json::json!({
            "run": run, "stage": stage, "kind": kind, "key": "k", "started": T0 + at_s * 1000,
            "wall_s": wall, "cpu_s": cpu, "max_rss_kb": kb, "gpus": gpus,
            "gpu_s": gpus as f64 * wall, "status": status, "executor": "local",
        })
        .to_string()
    };
    [
        line(1, "old-stage", "cmd", 0, 5.0, 1.0, 100, 0, "ok"),
        line(
            2, "download", "download", 86_400, 30.0, 6.0, 51_200, 0, "ok",
        ),
        line(
            2,
            "preprocess",
            "preprocess",
            86_430,
            60.0,
            114.0,
            1_048_576,
            0,
            "ok",
        ),
        line(
            2,
            "train@cnn,bce-nu",
            "train",
            86_490,
            1800.0,
            3600.0,
            2_097_152,
            1,
            "ok",
        ),
        line(
            2,
            "train@cnn,soft-nu",
            "train",
            86_490,
            1800.0,
            3600.0,
            2_097_152,
            1,
            "ok",
        ),
        line(
            2,
            "evaluate@cnn,bce-nu",
            "evaluate",
            88_290,
            120.0,
            90.0,
            409_600,
            0,
            "exit 1",
        ),
        line(3, "report-only", "report", 90_000, 2.0, 1.5, 9_000, 0, "ok"),
        r#"{"run":3,"stage":"cut"#.to_string(),
    ]
    .join("\n")
        + "\n"
}

/// A fresh workspace holding the fixture runs, and the report rendered into `out/` by the
/// binary.
fn run_kind(pdf: &str) -> (tempfile::TempDir, PathBuf) {
    run_kind_traced(pdf, false)
}

/// [`run_kind`], with [`trace`] in the workspace's `cache/` when `traced`.
fn run_kind_traced(pdf: &str, traced: bool) -> (tempfile::TempDir, PathBuf) {
    let ws = tempfile::tempdir().unwrap();
    copy_dir(&fixture_ws(), ws.path());
    if traced {
        std::fs::create_dir_all(ws.path().join("cache")).unwrap();
        std::fs::write(ws.path().join("cache/trace.jsonl"), trace()).unwrap();
    }
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
    // No trace in this workspace: said, not drawn.
    assert!(html.contains("no trace recorded") && !html.contains("class=\"timeline\""));
    let tex = std::fs::read_to_string(out.join("report.tex")).unwrap();
    assert!(tex.contains("no trace recorded"));
    every_svg_describes_itself(&html);
    // The figure files too: each its own <title> and a <desc> naming it.
    for e in &svgs {
        let svg = std::fs::read_to_string(e.path()).unwrap();
        let texts = svg_texts(&svg);
        assert_eq!(texts.len(), 1);
        let (title, desc) = &texts[0];
        assert!(
            desc.contains(title.split_once(": ").unwrap().1),
            "{title}: {desc}"
        );
    }
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
    let (_ws, out) = run_kind_traced("always", true);
    let pdf = std::fs::read(out.join("report.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "report.pdf is not a PDF");
    assert!(
        pdf.len() > 20_000,
        "report.pdf is suspiciously small ({} bytes)",
        pdf.len()
    );
    // Same inputs, another workspace and time: the same bytes (the engine's cache relies on it).
    let (_ws2, out2) = run_kind_traced("always", true);
    assert!(
        std::fs::read(out2.join("report.pdf")).unwrap() == pdf,
        "the PDF differs between two identical runs"
    );
}

#[test]
fn html_opens_in_chromium_without_console_errors_and_shows_the_metrics() {
    let (ws, out) = run_kind_traced("never", true);
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

/// The `<title>` and `<desc>` of every `<svg>` in `html`; panics when one lacks either.
fn svg_texts(html: &str) -> Vec<(String, String)> {
    let inner = |svg: &str, tag: &str| -> String {
        let open = svg
            .find(&format!("<{tag}"))
            .unwrap_or_else(|| panic!("an <svg> without <{tag}>: {}", &svg[..svg.len().min(300)]));
        let body = &svg[open..];
        let body = &body[body.find('>').unwrap() + 1..];
        body[..body.find(&format!("</{tag}>")).unwrap()].to_string()
    };
    html.split("<svg")
        .skip(1)
        .map(|s| {
            let svg = &s[..s.find("</svg>").expect("unclosed <svg>")];
            (inner(svg, "title"), inner(svg, "desc"))
        })
        .collect()
}

/// Every SVG says what it plots: a `<desc>` that is not empty and names the figure's content
/// (its title's subject), and both media queries are in the page's CSS.
fn every_svg_describes_itself(html: &str) {
    let texts = svg_texts(html);
    assert!(
        texts.len() >= 3,
        "expected the figures' SVGs, got {}",
        texts.len()
    );
    for (title, desc) in &texts {
        assert!(
            desc.trim().len() > 40,
            "a thin <desc> for {title:?}: {desc:?}"
        );
        let subject = title.split_once(": ").map_or(title.as_str(), |(_, s)| s);
        assert!(
            desc.contains(subject),
            "<desc> of {title:?} does not name it: {desc}"
        );
    }
    // Fig. 1 of the fixture: the metrics and the losses of its legend, from the runs.
    let (_, fig1) = texts
        .iter()
        .find(|(t, _)| t.starts_with("Fig. 1:"))
        .expect("Fig. 1");
    for part in [
        "accuracy (%) against γ (log scale)",
        "A_SW bce-nu",
        "A_Uni soft-nu",
        "values from",
    ] {
        assert!(
            fig1.contains(part),
            "Fig. 1's <desc> lacks {part:?}: {fig1}"
        );
    }
    assert!(
        html.contains("@media print")
            && html.contains("@media screen and (prefers-color-scheme: dark)")
    );
    assert!(html.contains("details::details-content") && html.contains("beforeprint"));
}

#[test]
fn timeline_of_the_last_full_run_from_the_trace() {
    let (_ws, out) = run_kind_traced("never", true);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    every_svg_describes_itself(&html);
    let start = html
        .find("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\"")
        .expect("no timeline");
    let svg = &html[start..start + html[start..].find("</svg>").unwrap()];
    // One bar per stage run of run 2, in order of start: not the older run, not the later
    // report-only run, not the cut line.
    let bars: Vec<&str> = svg
        .split("<rect ")
        .filter(|r| r.contains("height=\"11\""))
        .collect();
    assert_eq!(bars.len(), 5, "{svg}");
    for name in [
        "download",
        "preprocess",
        "train@cnn,bce-nu",
        "train@cnn,soft-nu",
        "evaluate@cnn,bce-nu",
    ] {
        assert!(
            svg.contains(&format!(">{name}</text>")),
            "no bar label {name}"
        );
    }
    assert!(!html.contains("old-stage") && !html.contains("report-only"));
    // Coloured by kind; the failed run outlined.
    assert!(bars[0].contains("fill=\"#1f77b4\"") && bars[2].contains("fill=\"#d62728\""));
    assert!(bars[4].contains("stroke-dasharray") && !bars[2].contains("stroke-dasharray"));
    // Geometry: the run spans 2010 s on an axis to 40 min, 640 px wide from x = 200.
    // An attribute of the bar's own <rect> (the chunk goes on to the next label's <text>).
    let attr = |bar: &str, a: &str| -> f64 {
        let bar = format!(" {}", &bar[..bar.find('>').unwrap()]);
        let k = format!(" {a}=\"");
        let v = &bar[bar.find(&k).unwrap() + k.len()..];
        v[..v.find('"').unwrap()].parse().unwrap()
    };
    let (x, w) = (attr(bars[2], "x"), attr(bars[2], "width"));
    assert!(
        (x - (200.0 + 90.0 / 2400.0 * 640.0)).abs() < 0.2,
        "train starts at {x}"
    );
    assert!((w - 1800.0 / 2400.0 * 640.0).abs() < 0.2, "train lasts {w}");
    let end = attr(bars[4], "x") + attr(bars[4], "width");
    assert!(
        (end - (200.0 + 2010.0 / 2400.0 * 640.0)).abs() < 0.3,
        "evaluate ends at {end}"
    );
    assert!(svg.contains(">40</text>") && svg.contains("(min)"));
    // The totals: CPU (6 + 114 + 2 × 3600 + 90 s), GPU (2 × 1800 s on one GPU), wall, peak.
    for part in [
        "2.058 CPU-hours",
        "1.000 GPU-hours",
        "wall time: 33.5 min",
        "peak memory: 2.0 GiB",
        "5 stage run(s), 1 of them not ok",
    ] {
        assert!(html.contains(part), "the totals lack {part:?}");
    }
    let desc = &svg_texts(&html[start..])[0].1;
    assert!(
        desc.contains("1 download, 1 preprocess, 2 train, 1 evaluate") && desc.contains("33.5 min"),
        "{desc}"
    );
    // LaTeX: the same runs grouped by stage family (download, preprocess, train × 2,
    // evaluate), a bar per family.
    let tex = std::fs::read_to_string(out.join("report.tex")).unwrap();
    assert_eq!(tex.matches("\\rule{").count(), 4);
    assert!(
        tex.contains("2.058 CPU-hours")
            && tex.contains("by stage family")
            && tex.contains("0 to 40 min")
    );
}
