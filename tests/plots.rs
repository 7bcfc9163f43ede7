//! `repro plots show|diff` on real runs: the page is written, opened in headless Chromium
//! (every series point is in the browser's DOM, no console error, no network), and the same
//! charts come out as `--json`; bad declarations and files are errors that name them.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::PathBuf;

use common::Ws;
use serde_json::Value;

/// Two configurations of `train` each write a loss curve; `figure` publishes an image.
const SWEEP: &str = r#"vars:
  scale: 2
  ks: [1, 2]
stages:
  train:
    foreach: ${ks}
    cmd: >-
      awk -v k=${item} -v s=${scale} 'BEGIN { print "epoch,loss,acc";
      for (e = 1; e <= 3; e++) printf "%d,%g,%g\n", e, k * s / e, e / 4 }' > loss${item}.csv
    params: [scale]
    plots:
      - {path: "loss${item}.csv", x: epoch, y: loss, title: Training loss}
  figure:
    cmd: cp fig.png out.png
    deps: [fig.png]
    plots: [out.png]
"#;

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

fn sweep() -> Ws {
    let ws = Ws::new(SWEEP);
    std::fs::write(ws.path("fig.png"), PNG).unwrap();
    ws
}

fn stdout(ws: &Ws, args: &[&str]) -> String {
    let o = ws.output(args);
    assert!(o.status.success(), "repro {args:?}: {}", common::both(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn json(ws: &Ws, args: &[&str]) -> Value {
    let text = stdout(ws, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The points of the line labelled `label` in the chart of stage `stage`.
fn points(plots: &Value, stage: &str, label: &str) -> Vec<(f64, f64)> {
    let chart = plots["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["stage"] == stage)
        .unwrap_or_else(|| panic!("no chart of {stage}: {plots}"));
    let line = chart["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == label)
        .unwrap_or_else(|| panic!("no line {label}: {chart}"));
    line["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

/// How many times `needle` occurs in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn plots_show_overlays_the_configurations_and_chromium_draws_every_point() {
    let ws = sweep();
    ws.ok(&["run", "-q"]);
    let page = PathBuf::from(stdout(&ws, &["plots", "show"]).trim());
    assert_eq!(page, ws.path("cache/plots/show.html"));
    let html = std::fs::read_to_string(&page).unwrap();
    // Offline: nothing to fetch, nothing to run.
    for needle in ["http://", "https://", "<script", "<link"] {
        assert!(!html.contains(needle), "the page has {needle}");
    }

    let dom = browser::dom(&page);
    // Both configurations on one chart, three points each, with their values.
    assert_eq!(count(&dom, "<svg class=\"plot\""), 1, "{dom}");
    assert_eq!(count(&dom, "class=\"point\""), 6, "{dom}");
    for (label, pts) in [
        ("train@1", [("1", "2"), ("2", "1"), ("3", "0.666667")]),
        ("train@2", [("1", "4"), ("2", "2"), ("3", "1.33333")]),
    ] {
        let at = dom.find(&format!("data-label=\"{label}\"")).unwrap();
        let series = &dom[at..at + dom[at..].find("</g>").unwrap()];
        assert!(series.contains("data-points=\"3\""), "{series}");
        for (x, y) in pts {
            assert!(
                series.contains(&format!("data-x=\"{x}\" data-y=\"{y}\"")),
                "{label} lacks ({x}, {y}): {series}"
            );
        }
    }
    assert!(dom.contains("<img src=\"data:image/png;base64,iVBORw0KGgo"));

    let shot = ws.path("shot.png");
    let (_, err) = browser::headless(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=900,1200",
        ],
    );
    assert!(
        browser::console_errors(&err).is_empty(),
        "{:?}",
        browser::console_errors(&err)
    );
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));

    let j = json(&ws, &["plots", "show", "--json"]);
    assert_eq!(j["page"], page.to_str().unwrap());
    assert_eq!(
        points(&j, "train", "train@2"),
        [(1.0, 4.0), (2.0, 2.0), (3.0, 1.33333)]
    );
    let charts = j["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 2);
    let fig = charts.iter().find(|c| c["stage"] == "figure").unwrap();
    assert_eq!(fig["images"][0]["file"], "out.png");

    // A target selects stages (or plot files); a page can go elsewhere.
    let out = ws.path("one/page.html");
    let j = json(
        &ws,
        &[
            "plots",
            "show",
            "train@2",
            "--json",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(j["charts"].as_array().unwrap().len(), 1);
    assert_eq!(j["charts"][0]["lines"].as_array().unwrap().len(), 1);
    assert!(out.is_file());
}

#[test]
fn plots_diff_compares_experiments_a_git_revision_and_a_run_cache_entry() {
    let ws = sweep();
    ws.sh("git init -q && git config user.email t@t && git config user.name t");
    ws.ok(&["run", "-q", "--name", "base"]);
    ws.sh("git add pipeline.yaml repro.lock && git commit -qm base");
    ws.ok(&["run", "-q", "--set", "scale=3"]);

    let j = json(
        &ws,
        &[
            "plots",
            "diff",
            "HEAD",
            "workspace",
            "-t",
            "train@1",
            "--json",
        ],
    );
    assert_eq!(j["sources"], serde_json::json!(["HEAD", "workspace"]));
    assert_eq!(points(&j, "train", "HEAD train@1")[0], (1.0, 2.0));
    assert_eq!(points(&j, "train", "workspace train@1")[0], (1.0, 3.0));
    assert_eq!(j["charts"].as_array().unwrap().len(), 1);
    let page = PathBuf::from(j["page"].as_str().unwrap());
    assert_eq!(page, ws.path("cache/plots/diff.html"));
    let dom = browser::dom(&page);
    assert_eq!(count(&dom, "class=\"series\""), 2, "{dom}");
    assert!(dom.contains("data-label=\"HEAD train@1\""));

    // Experiments, by name or by the id `exp show` prints.
    let exps = json(&ws, &["exp", "show", "--json"]);
    let newest = exps[0]["id"].as_str().unwrap().to_string();
    assert_eq!(exps[1]["name"], "base", "{exps}");
    let j = json(&ws, &["plots", "diff", "base", &newest, "--json"]);
    assert_eq!(j["sources"], serde_json::json!(["base", newest]));
    assert_eq!(points(&j, "train", "base train@2")[0], (1.0, 4.0));
    assert_eq!(
        points(&j, "train", &format!("{newest} train@2"))[0],
        (1.0, 6.0)
    );
    assert_eq!(j["charts"].as_array().unwrap().len(), 2, "the figure too");

    // A run-cache entry as `exp show --stages` names it, against the workspace.
    let rows = json(&ws, &["exp", "show", "train@2", "--json"]);
    let id = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["params"]["scale"] == 2)
        .unwrap_or_else(|| panic!("no scale=2 entry: {rows}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let j = json(&ws, &["plots", "diff", &id, "--json"]);
    assert_eq!(points(&j, "train", &format!("{id} train@2"))[0], (1.0, 4.0));
    assert_eq!(points(&j, "train", "workspace train@2")[0], (1.0, 6.0));
}

#[test]
fn bad_plot_declarations_and_files_are_errors_that_name_them() {
    let ws = Ws::new("stages:\n  a:\n    cmd: echo x > notes.txt\n    plots: [notes.txt]\n");
    let err = ws.fail(&["status"]);
    assert!(
        err.contains("pipeline.yaml:4") && err.contains("'notes.txt' is not a plot file"),
        "{err}"
    );
    let ws = Ws::new("stages:\n  a:\n    cmd: echo x > p.csv\n    plots: [{path: p.csv, z: 1}]\n");
    assert!(ws.fail(&["status"]).contains("unknown key `z` in a plot"));

    let ws = Ws::new(
        "stages:\n  a:\n    cmd: printf 'e,l\\n1,2\\n' > p.csv\n    plots: [{path: p.csv, x: e, y: loss}]\n",
    );
    // Not produced yet: a warning, not an error.
    assert!(
        ws.ok(&["plots", "show"])
            .contains("plot file not there: workspace a p.csv")
    );
    ws.ok(&["run", "-q"]);
    let err = ws.fail(&["plots", "show"]);
    assert!(
        err.contains("plot file p.csv of stage 'a'")
            && err.contains("no column 'loss' (columns: e, l)"),
        "{err}"
    );
    assert!(
        ws.fail(&["plots", "show", "nosuch"])
            .contains("no stage matching nosuch")
    );
}

/// Two configurations of a one-stage pipeline with a metric and a loss curve.
const SCORED: &str = r#"vars:
  scale: 2
stages:
  train:
    cmd: >-
      awk -v s=${scale} 'BEGIN { print "epoch,loss"; for (e = 1; e <= 3; e++) printf "%d,%g\n", e, s / e;
      printf "{\"score\": %g}\n", s * 10 > "score.json" }' > loss.csv
    params: [scale]
    metrics: [score.json]
    plots:
      - {path: loss.csv, x: epoch, y: loss}
"#;

/// The `<td>` texts of the `<tr ...>` rows of the DOM's experiments table.
fn table_rows(dom: &str) -> Vec<(String, Vec<String>)> {
    let start = dom
        .find("<table class=\"experiments\">")
        .unwrap_or_else(|| panic!("no experiments table: {dom}"));
    let table = &dom[start..start + dom[start..].find("</table>").unwrap()];
    let body = &table[table.find("<tbody>").unwrap()..];
    body.split("<tr ")
        .skip(1)
        .map(|tr| {
            let head = &tr[..tr.find('>').unwrap()];
            let cells = tr
                .split("<td")
                .skip(1)
                .map(|td| {
                    let inner = &td[td.find('>').unwrap() + 1..td.find("</td>").unwrap()];
                    // The text alone: the `(current)` mark is a span of its own.
                    inner.split("<span").next().unwrap().trim().to_string()
                })
                .collect();
            (head.to_string(), cells)
        })
        .collect()
}

#[test]
fn the_plots_page_has_the_experiments_table_escaped_and_as_exp_show_json_says() {
    let ws = Ws::new(SCORED);
    ws.ok(&["run", "-q", "--name", "<script>alert(1)</script>"]);
    ws.ok(&["run", "-q", "--set", "scale=3", "--name", "three & more"]);
    let page = PathBuf::from(stdout(&ws, &["plots", "show"]).trim());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script"), "a name is text, not markup");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    let dom = browser::dom(&page);
    assert!(!dom.contains("<script"), "{dom}");
    let exps = json(&ws, &["exp", "show", "--json"]);
    let exps = exps.as_array().unwrap();
    assert_eq!(exps.len(), 2);
    let head = {
        let s = dom.find("<table class=\"experiments\">").unwrap();
        &dom[s..s + dom[s..].find("</thead>").unwrap()]
    };
    for h in ["id", "name", "ran (UTC)", "commit", "scale", "score"] {
        assert!(
            head.contains(&format!(">{h}</th>")),
            "no {h} column: {head}"
        );
    }
    let rows = table_rows(&dom);
    assert_eq!(rows.len(), 2, "one row per experiment: {rows:?}");
    // Newest first, as `exp show --json`; the same ids, params and metric.
    for ((tr, cells), e) in rows.iter().zip(exps) {
        let id = e["id"].as_str().unwrap();
        assert_eq!(cells[0], id, "{cells:?}");
        assert!(tr.contains(&format!("data-id=\"{id}\"")), "{tr}");
        assert_eq!(tr.contains("class=\"current\""), e["current"] == true);
        let scale = e["params"]["scale"].to_string();
        let score = e["metrics"]["train"]["score"].as_f64().unwrap();
        assert_eq!(cells[4], scale, "{cells:?}");
        assert_eq!(cells[5], format!("{score}"), "{cells:?}");
    }
    assert_eq!(rows[0].1[1], "three &amp; more");
    assert_eq!(rows[1].1[1], "&lt;script&gt;alert(1)&lt;/script&gt;");
    assert_eq!(rows[0].1[5], "30");
    assert_eq!(rows[1].1[5], "20");
    assert!(rows[0].0.contains("current") && !rows[1].0.contains("current"));
    assert!(dom.contains("(current)</span>"));
}
