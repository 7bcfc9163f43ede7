//! The timeline of the last run for the report's provenance section: one bar per stage run
//! (from its start to its end, coloured by kind) and the run's total compute, read from the
//! run trace `cache/trace.jsonl` (see `repro_engine::trace_file`).
//!
//! "The last run" is the newest `repro run` invocation that ran a stage other than a report:
//! a run that only re-rendered the report (or the very run rendering it, whose report stage
//! is not traced until it ends) would otherwise hide the compute behind the results. The
//! trace is an input like the runs: the same trace gives the same bytes, and a workspace
//! without one says so instead of drawing anything.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use repro_engine::trace_file::Entry;

/// Kind → (SVG colour, legend order). Unknown kinds (and lines from before kinds were
/// traced) share the last colour.
const KIND_COLORS: &[(&str, &str)] = &[
    ("cmd", "7f7f7f"),
    ("download", "1f77b4"),
    ("preprocess", "17becf"),
    ("import_weights", "8c564b"),
    ("train", "d62728"),
    ("evaluate", "2ca02c"),
    ("report", "9467bd"),
];
const OTHER_COLOR: &str = "bcbd22";

/// Pixel layout of the SVG.
const LABEL_W: f64 = 200.0;
const AREA_W: f64 = 640.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 12.0;
const ROW: f64 = 16.0;
const BAR_H: f64 = 11.0;
/// Below the bars: tick labels, axis label, legend.
const BOTTOM: f64 = 62.0;
/// Longest stage name printed in full next to its bar (the bar's tooltip has all of it).
const NAME_CHARS: usize = 30;

#[derive(Serialize, Clone, Debug)]
pub struct Bar {
    pub stage: String,
    /// `stage`, shortened to fit the label column.
    pub label: String,
    pub kind: String,
    pub color: &'static str,
    /// Seconds after the run's first stage started.
    pub start_s: f64,
    pub wall_s: f64,
    pub cpu_s: Option<f64>,
    pub peak_mem: String,
    pub gpus: usize,
    pub status: String,
    pub executor: String,
    /// `start_s` and `wall_s` as text ("12.3 s", "4.1 min", "2.05 h").
    pub start_text: String,
    pub wall_text: String,
    pub cpu_text: String,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    /// Offset and length in the LaTeX table's bar column, in cm.
    pub tex_x: f64,
    pub tex_w: f64,
}

/// The stage runs of one stage family (the name before `@`: `finetune`, `evaluate_gamma`, …)
/// as one row of the PDF's table: a run of hundreds of stages reads as its dozen families.
#[derive(Serialize, Clone, Debug)]
pub struct Family {
    pub name: String,
    /// The kinds of its stages, joined (one, nearly always).
    pub kind: String,
    pub color: &'static str,
    pub stages: usize,
    /// First start and last end, after the run's first stage started.
    pub start_text: String,
    pub end_text: String,
    /// Wall time of its stage runs, summed (more than end − start when they ran side by side).
    pub wall_text: String,
    pub cpu_text: String,
    pub peak_mem: String,
    pub gpus: usize,
    pub failed: usize,
    /// Offset and length of its span in the LaTeX table's bar column, in cm.
    pub tex_x: f64,
    pub tex_w: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Legend {
    pub kind: String,
    pub color: &'static str,
    pub stages: usize,
    pub x: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Tick {
    pub x: f64,
    pub label: String,
}

#[derive(Serialize, Clone, Debug)]
pub struct Totals {
    pub stage_runs: usize,
    /// First start to last end.
    pub wall_s: f64,
    pub wall_text: String,
    pub cpu_hours: f64,
    /// Stage runs whose CPU time the trace lacks (the measuring wrapper was killed).
    pub cpu_missing: usize,
    /// GPUs × wall time, summed.
    pub gpu_hours: f64,
    /// Largest peak resident set of any one stage run.
    pub peak_mem: String,
    pub failed: usize,
}

#[derive(Serialize, Clone, Debug)]
pub struct Timeline {
    /// UTC start of the run's first stage.
    pub started: String,
    pub bars: Vec<Bar>,
    /// The bars grouped by stage family, in order of first start.
    pub families: Vec<Family>,
    pub legend: Vec<Legend>,
    pub ticks: Vec<Tick>,
    /// Axis unit: `s`, `min` or `h`.
    pub unit: &'static str,
    pub totals: Totals,
    pub width: f64,
    pub height: f64,
    /// Where the time axis ends, as text ("50 s"): the right end of every bar column.
    pub axis_text: String,
    /// Geometry for the template: top of the bars, left edge and width of the bar area, axis
    /// line y.
    pub top: f64,
    pub area_x: f64,
    pub area_w: f64,
    pub axis_y: f64,
    pub legend_y: f64,
    /// The SVG's `<desc>`: what the figure plots, from its data.
    pub desc: String,
    /// Width of the LaTeX table's bar column, in cm.
    pub tex_width: f64,
}

/// The timeline of the workspace's last run, or `None` when no stage run is traced.
pub fn load(workspace: &Path) -> Result<Option<Timeline>> {
    Ok(build(repro_engine::trace_file::read(
        &workspace.join("cache"),
    )?))
}

/// The entries of the newest run that ran anything but report stages (see the module
/// header), else of the newest run.
pub fn last_run(entries: Vec<Entry>) -> Vec<Entry> {
    let substantive = entries
        .iter()
        .filter(|e| e.kind.as_deref() != Some("report"))
        .map(|e| e.run)
        .max();
    match substantive {
        Some(run) => entries.into_iter().filter(|e| e.run == run).collect(),
        None => repro_engine::trace_file::last_run(entries),
    }
}

fn color(kind: &str) -> &'static str {
    KIND_COLORS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(OTHER_COLOR, |(_, c)| c)
}

fn kind_rank(kind: &str) -> usize {
    KIND_COLORS
        .iter()
        .position(|(k, _)| *k == kind)
        .unwrap_or(KIND_COLORS.len())
}

/// A duration for people: seconds, minutes or hours.
pub fn duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.2} h", s / 3600.0)
    }
}

fn memory(kb: u64) -> String {
    if kb >= 1024 * 1024 {
        format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
    } else if kb >= 1024 {
        format!("{:.0} MiB", kb as f64 / 1024.0)
    } else {
        format!("{kb} KiB")
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= NAME_CHARS {
        s.to_string()
    } else {
        let head: String = s.chars().take(NAME_CHARS - 1).collect();
        format!("{head}…")
    }
}

/// Tick step (in `unit`s) giving at most about six ticks over `span`.
fn step(span: f64) -> f64 {
    let span = span.max(1e-9);
    let mag = 10f64.powf((span / 5.0).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag)
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The bars grouped by the stage name before `@`, in order of first start.
fn families(bars: &[Bar], entries: &[Entry], axis_end: f64, tex_width: f64) -> Vec<Family> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<(&Bar, &Entry)>> = BTreeMap::new();
    for (b, e) in bars.iter().zip(entries) {
        let name = b.stage.split('@').next().unwrap_or(&b.stage).to_string();
        if !by.contains_key(&name) {
            order.push(name.clone());
        }
        by.entry(name).or_default().push((b, e));
    }
    order
        .into_iter()
        .map(|name| {
            let xs = &by[&name];
            let start = xs
                .iter()
                .map(|(b, _)| b.start_s)
                .fold(f64::INFINITY, f64::min);
            let end = xs
                .iter()
                .map(|(b, _)| b.start_s + b.wall_s)
                .fold(0.0, f64::max);
            let mut kinds: Vec<&str> = xs.iter().map(|(b, _)| b.kind.as_str()).collect();
            kinds.sort();
            kinds.dedup();
            let cpus: Vec<f64> = xs.iter().filter_map(|(_, e)| e.cpu_s).collect();
            Family {
                kind: kinds.join(", "),
                color: xs[0].0.color,
                stages: xs.len(),
                start_text: format!("+{}", duration(start)),
                end_text: format!("+{}", duration(end)),
                wall_text: duration(xs.iter().map(|(b, _)| b.wall_s).sum()),
                cpu_text: if cpus.is_empty() {
                    "–".into()
                } else {
                    duration(cpus.iter().sum())
                },
                peak_mem: xs
                    .iter()
                    .filter_map(|(_, e)| e.max_rss_kb)
                    .max()
                    .map_or("–".into(), memory),
                gpus: xs.iter().map(|(b, _)| b.gpus).max().unwrap_or(0),
                failed: xs.iter().filter(|(b, _)| b.status != "ok").count(),
                tex_x: (start / axis_end * tex_width * 100.0).round() / 100.0,
                tex_w: ((end - start) / axis_end * tex_width * 100.0)
                    .round()
                    .max(2.0)
                    / 100.0,
                name,
            }
        })
        .collect()
}

/// Lay out the timeline of `entries` (already one run's); `None` when empty.
pub fn build(entries: Vec<Entry>) -> Option<Timeline> {
    let mut entries = last_run(entries);
    if entries.is_empty() {
        return None;
    }
    entries.sort_by(|a, b| {
        a.started
            .cmp(&b.started)
            .then_with(|| a.stage.cmp(&b.stage))
    });
    let t0 = entries.iter().map(|e| e.started).min()?;
    let end = |e: &Entry| (e.started - t0) as f64 / 1000.0 + e.wall_s.max(0.0);
    let span = entries.iter().map(end).fold(0.0, f64::max);
    let (unit, per) = if span < 120.0 {
        ("s", 1.0)
    } else if span < 7200.0 {
        ("min", 60.0)
    } else {
        ("h", 3600.0)
    };
    // The axis ends on a tick at or after the last end.
    let st = step(span / per);
    let axis_end = ((span / per / st).ceil() * st).max(st) * per;
    let px = |s: f64| LABEL_W + s / axis_end * AREA_W;
    // The PDF table's bar column (p{3.2cm}): the other nine columns take the rest of the text width.
    let tex_width = 3.1;
    let bars: Vec<Bar> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let kind = e.kind.clone().unwrap_or_else(|| "unknown".into());
            let start_s = (e.started - t0) as f64 / 1000.0;
            let wall = e.wall_s.max(0.0);
            Bar {
                label: shorten(&e.stage),
                stage: e.stage.clone(),
                color: color(&kind),
                kind,
                start_s,
                wall_s: wall,
                cpu_s: e.cpu_s,
                peak_mem: e.max_rss_kb.map_or("–".into(), memory),
                gpus: e.gpus,
                status: e.status.clone(),
                executor: e.executor.clone(),
                start_text: format!("+{}", duration(start_s)),
                wall_text: duration(wall),
                cpu_text: e.cpu_s.map_or("–".into(), duration),
                x: round1(px(start_s)),
                y: round1(TOP + i as f64 * ROW + (ROW - BAR_H) / 2.0),
                // Visible however short.
                w: round1((wall / axis_end * AREA_W).max(1.5)),
                tex_x: (start_s / axis_end * tex_width * 100.0).round() / 100.0,
                tex_w: (wall / axis_end * tex_width * 100.0).round().max(2.0) / 100.0,
            }
        })
        .collect();
    let families = families(&bars, &entries, axis_end, tex_width);
    let mut by_kind: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for b in &bars {
        *by_kind
            .entry((kind_rank(&b.kind), b.kind.clone()))
            .or_default() += 1;
    }
    let legend: Vec<Legend> = by_kind
        .into_iter()
        .enumerate()
        .map(|(i, ((_, kind), n))| Legend {
            color: color(&kind),
            kind,
            stages: n,
            x: LABEL_W + i as f64 * 110.0,
        })
        .collect();
    let n_ticks = (axis_end / per / st).round() as usize;
    let ticks = (0..=n_ticks)
        .map(|k| {
            let v = k as f64 * st;
            let label = format!("{}", (v * 1000.0).round() / 1000.0);
            Tick {
                x: round1(px(v * per)),
                label,
            }
        })
        .collect();
    let cpu: f64 = entries.iter().filter_map(|e| e.cpu_s).sum();
    let gpu: f64 = entries.iter().map(|e| e.gpu_s).sum();
    let totals = Totals {
        stage_runs: entries.len(),
        wall_s: span,
        wall_text: duration(span),
        cpu_hours: cpu / 3600.0,
        cpu_missing: entries.iter().filter(|e| e.cpu_s.is_none()).count(),
        gpu_hours: gpu / 3600.0,
        peak_mem: entries
            .iter()
            .filter_map(|e| e.max_rss_kb)
            .max()
            .map_or("not recorded".into(), memory),
        failed: entries.iter().filter(|e| e.status != "ok").count(),
    };
    let started = repro_engine::trace_file::utc_seconds(t0);
    let longest = bars
        .iter()
        .max_by(|a, b| a.wall_s.total_cmp(&b.wall_s))
        .expect("not empty");
    let kinds: Vec<String> = legend
        .iter()
        .map(|l| format!("{} {}", l.stages, l.kind))
        .collect();
    let desc = format!(
        "Timeline of the run started {started} UTC: one bar per stage run ({}), from its start \
         to its end on a time axis in {unit}, coloured by kind. The run took {} of wall time; \
         the longest stage was {} ({}). Total compute: {:.3} CPU-hours, {:.3} GPU-hours, peak \
         memory {}.",
        kinds.join(", "),
        totals.wall_text,
        longest.stage,
        longest.wall_text,
        totals.cpu_hours,
        totals.gpu_hours,
        totals.peak_mem,
    );
    let rows_h = bars.len() as f64 * ROW;
    Some(Timeline {
        started,
        families,
        legend,
        ticks,
        unit,
        width: LABEL_W + AREA_W + RIGHT,
        height: TOP + rows_h + BOTTOM,
        axis_text: format!("{} {unit}", (axis_end / per * 1000.0).round() / 1000.0),
        top: TOP,
        area_x: LABEL_W,
        area_w: AREA_W,
        axis_y: TOP + rows_h + 2.0,
        legend_y: TOP + rows_h + 48.0,
        desc,
        tex_width,
        totals,
        bars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace line as the engine writes it (parsed, so fields the engine adds later with a
    /// default need no change here).
    fn entry(run: u64, stage: &str, kind: Option<&str>, started: u64, wall: f64) -> Entry {
        serde_json::from_value(serde_json::json!({
            "run": run,
            "stage": stage,
            "kind": kind,
            "key": "k",
            "started": started,
            "wall_s": wall,
            "cpu_s": wall * 2.0,
            "max_rss_kb": 2048,
            "gpus": usize::from(kind == Some("train")),
            "gpu_s": if kind == Some("train") { wall } else { 0.0 },
            "status": "ok",
            "executor": "local",
        }))
        .expect("a trace line")
    }

    #[test]
    fn bars_span_start_to_end_and_totals_add_up() {
        let t = build(vec![
            entry(1, "old", Some("cmd"), 0, 5.0),
            entry(2, "train@a", Some("train"), 10_000, 30.0),
            entry(2, "download", Some("download"), 1_000, 8.0),
            entry(2, "evaluate@a", Some("evaluate"), 40_500, 10.0),
        ])
        .unwrap();
        // Only run 2, ordered by start; the first start is t = 0.
        let names: Vec<_> = t.bars.iter().map(|b| b.stage.as_str()).collect();
        assert_eq!(names, ["download", "train@a", "evaluate@a"]);
        assert_eq!(t.bars[1].start_s, 9.0);
        assert_eq!(t.totals.wall_s, 49.5);
        assert!((t.totals.cpu_hours - 96.0 / 3600.0).abs() < 1e-12);
        assert!((t.totals.gpu_hours - 30.0 / 3600.0).abs() < 1e-12);
        assert_eq!(t.totals.peak_mem, "2 MiB");
        // 49.5 s on an axis to 50 s: the last bar ends at 99 % of the area.
        assert_eq!(t.ticks.last().unwrap().label, "50");
        let last = &t.bars[2];
        assert!((last.x + last.w - (LABEL_W + 0.99 * AREA_W)).abs() < 0.2);
        assert_ne!(t.bars[0].color, t.bars[1].color);
        assert!(
            t.desc.contains("1 download, 1 train, 1 evaluate"),
            "{}",
            t.desc
        );
        assert!(t.desc.contains("train@a"), "{}", t.desc);
    }

    #[test]
    fn a_report_only_run_does_not_hide_the_run_before_it() {
        let t = build(vec![
            entry(1, "train@a", Some("train"), 0, 100.0),
            entry(2, "report", Some("report"), 200_000, 1.0),
        ])
        .unwrap();
        assert_eq!(t.bars.len(), 1);
        assert_eq!(t.bars[0].stage, "train@a");
        assert_eq!(t.unit, "s");
        // Old lines without a kind still draw (as "unknown").
        let t = build(vec![entry(3, "x", None, 0, 7200.0)]).unwrap();
        assert_eq!((t.bars[0].kind.as_str(), t.unit), ("unknown", "h"));
        assert!(build(Vec::new()).is_none());
    }

    #[test]
    fn old_trace_lines_without_a_kind_still_parse() {
        let line = r#"{"run":1,"stage":"s","key":"k","started":5,"wall_s":1.0,"cpu_s":null,"max_rss_kb":null,"gpus":0,"gpu_s":0.0,"status":"ok","executor":"local"}"#;
        let e: Entry = serde_json::from_str(line).unwrap();
        assert!(e.kind.is_none());
        let t = build(vec![e]).unwrap();
        assert_eq!(t.totals.cpu_missing, 1);
        assert_eq!(t.totals.peak_mem, "not recorded");
    }

    /// Issue 28 item 12: the PDF lists stage families, not hundreds of stage runs.
    #[test]
    fn stage_runs_are_grouped_by_family() {
        let t = build(vec![
            entry(2, "download", Some("download"), 0, 2.0),
            entry(2, "finetune@a,0", Some("train"), 2_000, 10.0),
            entry(2, "finetune@a,1", Some("train"), 3_000, 20.0),
            entry(2, "evaluate_finetune@a,0", Some("evaluate"), 12_000, 1.0),
            entry(2, "finetune@b,0", Some("train"), 12_500, 5.0),
        ])
        .unwrap();
        let f: Vec<(&str, usize)> = t
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.stages))
            .collect();
        assert_eq!(
            f,
            [("download", 1), ("finetune", 3), ("evaluate_finetune", 1)]
        );
        let ft = &t.families[1];
        assert_eq!(
            (ft.start_text.as_str(), ft.end_text.as_str()),
            ("+2.0 s", "+23.0 s")
        );
        // Summed wall time of its runs, which overlapped.
        assert_eq!(ft.wall_text, "35.0 s");
        assert_eq!(ft.kind, "train");
        assert_eq!(ft.gpus, 1);
    }
}
