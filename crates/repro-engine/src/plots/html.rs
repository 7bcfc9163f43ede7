//! The plots page: one self-contained HTML file (inline CSS and SVG, images as `data:` URIs,
//! no script), so it opens offline and can be mailed or archived as it is.

use std::fmt::Write;

use super::Plots;
use super::svg::{chart, esc};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}\
h1{font-size:1.4em}h2{font-size:1.1em;margin:0 0 .3em}\
.chart{display:inline-block;vertical-align:top;margin:0 1.5em 2em 0}\
.files{font-size:.85em;color:#666;margin:0 0 .4em}\
figure{display:inline-block;margin:0 1em 1em 0}figure img{max-width:480px;border:1px solid #ddd}\
figcaption{font-size:.85em;color:#444}.missing{color:#a40}\
table.experiments{border-collapse:collapse;font-size:.9em;margin-bottom:2em}\
.experiments th,.experiments td{border-bottom:1px solid #ddd;padding:.25em .7em;text-align:left}\
.experiments td.num{text-align:right;font-variant-numeric:tabular-nums}\
.experiments tr.current{background:#eef6ee;font-weight:600}";

/// The page for `plots`, headed by `title`.
pub(super) fn page(plots: &Plots, title: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n<p class=\"sources\">Sources: {}</p>\n",
        esc(&plots.sources.join(", ")),
        t = esc(title),
    );
    if plots.charts.is_empty() {
        s.push_str("<p class=\"empty\">No plots to show: declare <code>plots:</code> on a stage, then run it.</p>\n");
    }
    for c in &plots.charts {
        let _ = write!(
            s,
            "<section class=\"chart\" data-stage=\"{}\"><h2>{}</h2>",
            esc(&c.stage),
            esc(&c.title)
        );
        let mut files: Vec<&str> = c
            .lines
            .iter()
            .map(|l| l.file.as_str())
            .chain(c.images.iter().map(|i| i.file.as_str()))
            .collect();
        files.dedup();
        let _ = write!(s, "<p class=\"files\">{}</p>", esc(&files.join(", ")));
        s.push_str(&chart(c));
        for i in &c.images {
            let _ = write!(
                s,
                "<figure><img src=\"{}\" alt=\"{a}\"><figcaption>{a}</figcaption></figure>",
                i.data_uri,
                a = esc(&format!("{} · {}", i.label, i.file)),
            );
        }
        s.push_str("</section>\n");
    }
    experiments(&mut s, &plots.experiments);
    if !plots.missing.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"missing\">Not produced (or not in the cache): {}</p>",
            esc(&plots.missing.join("; "))
        );
    }
    s.push_str("</body></html>\n");
    s
}

/// The experiments table: `exp show`'s columns (one [`crate::experiments::table`] for the text
/// and this), a row per experiment, the one in the workspace marked `current`.
fn experiments(s: &mut String, rows: &Result<Vec<crate::experiments::Row>, String>) {
    s.push_str("<h2>Experiments</h2>\n");
    let rows = match rows {
        Err(why) => {
            let _ = writeln!(s, "<p class=\"missing\">Experiments: {}</p>", esc(why));
            return;
        }
        Ok(r) if r.is_empty() => {
            s.push_str("<p class=\"empty\">No experiments yet: each <code>repro run</code> records one.</p>\n");
            return;
        }
        Ok(r) => r,
    };
    let t = crate::experiments::table(rows);
    s.push_str("<table class=\"experiments\"><thead><tr>");
    for (i, h) in t.headers.iter().enumerate() {
        let kind = if i >= t.fixed { "metric" } else { "col" };
        let _ = write!(s, "<th class=\"{kind}\">{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>\n");
    for (cells, &now) in t.cells.iter().zip(&t.current) {
        let _ = write!(
            s,
            "<tr data-id=\"{}\"{}>",
            esc(&cells[0]),
            if now { " class=\"current\"" } else { "" }
        );
        for (i, c) in cells.iter().enumerate() {
            let num = if i >= t.fixed { " class=\"num\"" } else { "" };
            let mark = if i == 0 && now {
                " <span class=\"now\" title=\"in the workspace now\">(current)</span>"
            } else {
                ""
            };
            let _ = write!(s, "<td{num}>{}{mark}</td>", esc(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
    if t.hidden > 0 {
        let _ = writeln!(
            s,
            "<p class=\"files\">{} more metric columns: <code>repro exp show --json</code> has them.</p>",
            t.hidden
        );
    }
}
