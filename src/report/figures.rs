//! The report's figures as plain data: series in data coordinates (for pgfplots in the LaTeX
//! report) and the same series mapped to pixels with axes and ticks (for the SVG template).
//!
//! - Fig. 1: A_SW and A_Uni against γ for the γ-sweep losses (soft-nu, bce-nu), ours and, where
//!   the paper has the setting, the paper's (Tables III and S.I) in a second panel.
//! - Fig. 2: per-class ranges of positive and negative metrics (without bias where available)
//!   with the mean minimum positive, mean maximum negative and the threshold the learned bias
//!   sets, and histograms of both, for soft-u, soft-nu, bce-u, bce-nu of one dataset and model.
//! - Fig. 3: positive vs type-I and type-II negative metrics with the learned per-class biases,
//!   and the metrics with bias, for the diverse-bias losses.
//!
//! Nothing here draws: the templates do (`figure.svg`, `figure.tex`).

use serde::Serialize;

use super::findings::bias_sign;
use super::names;
use super::published::Published;
use super::runs::{Dist, Role, Run};
use super::tables::{UNSPECIFIED, slug};

/// Classes beyond this many are grouped into buckets (their envelope: lowest minimum
/// positive, highest maximum negative), so that a 1000-class plot stays light.
pub const MAX_CLASS_POINTS: usize = 200;

const POS: (&str, &str) = ("d62728", "posred");
const NEG: (&str, &str) = ("1f77b4", "negblue");
const BIAS: (&str, &str) = ("e6a800", "biasyellow");
const PALETTE: [(&str, &str); 4] = [
    ("1f77b4", "negblue"),
    ("d62728", "posred"),
    ("2ca02c", "c3green"),
    ("9467bd", "c4purple"),
];

#[derive(Serialize, Clone, Debug)]
pub struct Tick {
    pub value: f64,
    pub px: f64,
    pub label: String,
}

#[derive(Serialize, Clone, Debug)]
pub struct Series {
    /// Empty: not in the legend.
    pub label: String,
    /// `line` or `area` (a filled polygon).
    pub kind: &'static str,
    pub color: &'static str,
    pub tex_color: &'static str,
    pub dash: bool,
    pub marks: bool,
    pub opacity: f64,
    /// Data coordinates, for pgfplots: `(x,y) (x,y) …`.
    pub tex: String,
    /// Pixel coordinates, for SVG: `x,y x,y …`.
    pub svg: String,
    /// Marker positions in pixels (when `marks`).
    pub mark_px: Vec<[f64; 2]>,
    /// Legend swatch position in pixels.
    pub legend_x: f64,
    pub legend_y: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub xlabel: String,
    pub ylabel: String,
    pub xlog2: bool,
    pub xmin: f64,
    pub xmax: f64,
    pub ymin: f64,
    pub ymax: f64,
    pub left: f64,
    pub top: f64,
    pub w: f64,
    pub h: f64,
    pub xticks: Vec<Tick>,
    pub yticks: Vec<Tick>,
    pub series: Vec<Series>,
    /// Fraction of the text width in LaTeX.
    pub tex_width: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Figure {
    pub id: String,
    /// `gamma`, `distribution`, `bias`.
    pub kind: &'static str,
    pub number: u32,
    pub title: String,
    pub caption: String,
    /// The SVG's `<desc>`: what each panel plots (axes, series, value range), from the data.
    pub desc: String,
    pub width: f64,
    pub height: f64,
    pub panels: Vec<Panel>,
}

/// A series before layout.
struct Raw {
    label: String,
    kind: &'static str,
    color: (&'static str, &'static str),
    dash: bool,
    marks: bool,
    opacity: f64,
    pts: Vec<[f64; 2]>,
}

fn line(
    label: &str,
    color: (&'static str, &'static str),
    dash: bool,
    marks: bool,
    pts: Vec<[f64; 2]>,
) -> Raw {
    Raw {
        label: label.into(),
        kind: "line",
        color,
        dash,
        marks,
        opacity: 1.0,
        pts,
    }
}

fn area(label: &str, color: (&'static str, &'static str), pts: Vec<[f64; 2]>) -> Raw {
    Raw {
        label: label.into(),
        kind: "area",
        color,
        dash: false,
        marks: false,
        opacity: 0.3,
        pts,
    }
}

struct RawPanel {
    title: String,
    xlabel: String,
    ylabel: String,
    xlog2: bool,
    x: (f64, f64),
    y: (f64, f64),
    w: f64,
    series: Vec<Raw>,
}

/// Compact, pgfplots-readable number.
fn tex_num(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-4 && v.abs() < 1e7) {
        let s = format!("{v:.5}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".to_string()
        } else {
            s.to_string()
        }
    } else {
        format!("{v:.5e}")
    }
}

fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 && out.len() < 20 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

fn tick_label(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

const MARGIN_L: f64 = 58.0;
const MARGIN_R: f64 = 16.0;
const MARGIN_T: f64 = 30.0;
const MARGIN_B: f64 = 44.0;
const LEGEND_ROW: f64 = 15.0;
const PANEL_H: f64 = 220.0;

/// Lay out panels side by side and map every series to pixels.
fn layout(
    id: String,
    kind: &'static str,
    number: u32,
    title: String,
    caption: String,
    raws: Vec<RawPanel>,
) -> Figure {
    let total_w: f64 = raws.iter().map(|p| p.w + MARGIN_L + MARGIN_R).sum();
    let legend_rows = raws
        .iter()
        .map(|p| p.series.iter().filter(|s| !s.label.is_empty()).count())
        .max()
        .unwrap_or(0);
    let height = MARGIN_T + PANEL_H + MARGIN_B + legend_rows as f64 * LEGEND_ROW + 6.0;
    let mut x0 = 0.0;
    let mut panels = Vec::new();
    let mut descs = Vec::new();
    for p in raws {
        let data_y = p
            .series
            .iter()
            .flat_map(|s| s.pts.iter().map(|q| q[1]))
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        descs.push(PanelDesc {
            title: p.title.clone(),
            xlabel: p.xlabel.clone(),
            ylabel: p.ylabel.clone(),
            labels: p
                .series
                .iter()
                .map(|s| s.label.clone())
                .filter(|l| !l.is_empty())
                .collect(),
            data_y,
        });
        let left = x0 + MARGIN_L;
        let top = MARGIN_T;
        let (w, h) = (p.w, PANEL_H);
        let (xmin, xmax) = p.x;
        let (ymin, ymax) = p.y;
        let fx = |v: f64| -> f64 {
            let t = if p.xlog2 {
                (v.log2() - xmin.log2()) / (xmax.log2() - xmin.log2())
            } else {
                (v - xmin) / (xmax - xmin)
            };
            left + t.clamp(-0.05, 1.05) * w
        };
        let fy = |v: f64| -> f64 { top + h - ((v - ymin) / (ymax - ymin)).clamp(-0.05, 1.05) * h };
        let xticks: Vec<Tick> = if p.xlog2 {
            let mut v = 2f64.powf(xmin.log2().ceil());
            let mut t = Vec::new();
            while v <= xmax * (1.0 + 1e-9) {
                t.push(v);
                v *= 2.0;
            }
            t
        } else {
            nice_ticks(xmin, xmax)
        }
        .into_iter()
        .map(|v| Tick {
            value: v,
            px: fx(v),
            label: tick_label(v),
        })
        .collect();
        let yticks = nice_ticks(ymin, ymax)
            .into_iter()
            .map(|v| Tick {
                value: v,
                px: fy(v),
                label: tick_label(v),
            })
            .collect();
        let mut row = 0;
        let series = p
            .series
            .into_iter()
            .map(|s| {
                let (legend_x, legend_y) = if s.label.is_empty() {
                    (0.0, 0.0)
                } else {
                    row += 1;
                    (
                        left,
                        top + h + MARGIN_B - 4.0 + (row - 1) as f64 * LEGEND_ROW,
                    )
                };
                let inside =
                    |q: &[f64; 2]| q[0].is_finite() && q[1].is_finite() && (!p.xlog2 || q[0] > 0.0);
                let pts: Vec<[f64; 2]> = s.pts.into_iter().filter(inside).collect();
                let px: Vec<[f64; 2]> = pts.iter().map(|q| [fx(q[0]), fy(q[1])]).collect();
                Series {
                    label: s.label,
                    kind: s.kind,
                    color: s.color.0,
                    tex_color: s.color.1,
                    dash: s.dash,
                    marks: s.marks,
                    opacity: s.opacity,
                    tex: pts
                        .iter()
                        .map(|q| format!("({},{})", tex_num(q[0]), tex_num(q[1])))
                        .collect::<Vec<_>>()
                        .join(" "),
                    svg: px
                        .iter()
                        .map(|q| format!("{:.1},{:.1}", q[0], q[1]))
                        .collect::<Vec<_>>()
                        .join(" "),
                    mark_px: if s.marks {
                        px.iter()
                            .map(|q| [(q[0] * 10.0).round() / 10.0, (q[1] * 10.0).round() / 10.0])
                            .collect()
                    } else {
                        Vec::new()
                    },
                    legend_x,
                    legend_y,
                }
            })
            .collect();
        panels.push(Panel {
            title: p.title,
            xlabel: p.xlabel,
            ylabel: p.ylabel,
            xlog2: p.xlog2,
            xmin,
            xmax,
            ymin,
            ymax,
            left,
            top,
            w,
            h,
            xticks,
            yticks,
            series,
            tex_width: 0.0,
        });
        x0 += w + MARGIN_L + MARGIN_R;
    }
    // LaTeX widths in proportion to the SVG panel widths (axis labels take a fixed share).
    let n = panels.len() as f64;
    let sum_w: f64 = panels.iter().map(|p| p.w).sum();
    for p in panels.iter_mut() {
        let share = 0.8 * p.w / sum_w + 0.15 / n;
        p.tex_width = (share * 100.0).floor() / 100.0;
    }
    let desc = describe(&title, &descs);
    Figure {
        id,
        kind,
        number,
        title,
        caption,
        desc,
        width: total_w,
        height,
        panels,
    }
}

/// What [`describe`] needs of a panel: its labels and the range of its data.
struct PanelDesc {
    title: String,
    xlabel: String,
    ylabel: String,
    labels: Vec<String>,
    data_y: (f64, f64),
}

/// A figure's `<desc>`: for every panel, what it plots against what, which series (the
/// models, losses or metrics in its legend) and the range of the values drawn.
fn describe(title: &str, panels: &[PanelDesc]) -> String {
    let mut parts = vec![format!("{title}.")];
    for p in panels {
        let labels = &p.labels;
        let (lo, hi) = p.data_y;
        let what = if p.ylabel.is_empty() {
            "values"
        } else {
            p.ylabel.as_str()
        };
        let mut s = format!("Panel \"{}\": {} against {}", p.title, what, p.xlabel);
        if !labels.is_empty() {
            s.push_str(&format!(" for {}", labels.join(", ")));
        }
        if lo <= hi {
            s.push_str(&format!(
                ", values from {} to {}",
                tick_label(lo),
                tick_label(hi)
            ));
        }
        s.push('.');
        parts.push(s);
    }
    parts.join(" ")
}

fn range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    if hi - lo < 1e-9 {
        return Some((lo - 1.0, hi + 1.0));
    }
    let pad = (hi - lo) * 0.05;
    Some((lo - pad, hi + pad))
}

fn name(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or(UNSPECIFIED)
}

/// The distinct (dataset, model) pairs of `runs`, in the paper's order.
fn dataset_model_pairs(runs: &[&Run]) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = runs
        .iter()
        .map(|r| (name(&r.dataset).to_string(), name(&r.model).to_string()))
        .collect();
    keys.sort_by(|a, b| {
        names::cmp_in(&names::DATASETS, &a.0, &b.0)
            .then_with(|| names::cmp_in(&names::MODELS, &a.1, &b.1))
    });
    keys.dedup();
    keys
}

/// Fig. 1, one per (dataset, model) with γ-sweep runs.
pub fn gamma_figures(runs: &[Run], published: &Published) -> Vec<Figure> {
    let sweep: Vec<&Run> = runs
        .iter()
        .filter(|r| r.role == Role::GammaSweep && r.gamma.is_some())
        // Fig. 1 shows the stable loss; the direct-formula runs are in the γ table.
        .filter(|r| r.numerics.as_deref().is_none_or(|v| v == "stable"))
        .collect();
    let mut out = Vec::new();
    for (d, m) in dataset_model_pairs(&sweep) {
        let here: Vec<&Run> = sweep
            .iter()
            .copied()
            .filter(|r| name(&r.dataset) == d && name(&r.model) == m)
            .collect();
        let mut losses: Vec<String> = here.iter().map(|r| name(&r.loss).to_string()).collect();
        losses.sort_by(|a, b| names::cmp_in(&names::LOSSES, a, b));
        losses.dedup();
        let mut ours = Vec::new();
        for (k, l) in losses.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            for (metric, label, dash) in [("a_sw", "A_SW", false), ("a_uni", "A_Uni", true)] {
                let mut gs: Vec<f64> = here
                    .iter()
                    .filter(|r| name(&r.loss) == l)
                    .filter_map(|r| r.gamma)
                    .collect();
                gs.sort_by(|a, b| a.total_cmp(b));
                gs.dedup();
                let pts: Vec<[f64; 2]> = gs
                    .iter()
                    .filter_map(|g| {
                        let xs: Vec<f64> = here
                            .iter()
                            .filter(|r| name(&r.loss) == l && r.gamma == Some(*g))
                            .filter_map(|r| r.acc(false)?.get(metric))
                            .collect();
                        if xs.is_empty() {
                            None
                        } else {
                            Some([*g, xs.iter().sum::<f64>() / xs.len() as f64])
                        }
                    })
                    .collect();
                ours.push(line(&format!("{label} {l}"), color, dash, true, pts));
            }
        }
        let mut paper = Vec::new();
        for (k, l) in losses.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            for (metric, label, dash) in [("a_sw", "A_SW", false), ("a_uni", "A_Uni", true)] {
                let mut pts: Vec<[f64; 2]> = published
                    .cells
                    .iter()
                    .filter(|c| {
                        c.role == "gamma-sweep"
                            && c.dataset == d
                            && c.model == m
                            && &c.loss == l
                            && c.metric == metric
                            && !c.softmax
                    })
                    .filter_map(|c| Some([c.gamma?, c.value?]))
                    .collect();
                pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
                if !pts.is_empty() {
                    paper.push(line(&format!("{label} {l}"), color, dash, true, pts));
                }
            }
        }
        let xs = ours
            .iter()
            .chain(&paper)
            .flat_map(|s| s.pts.iter().map(|p| p[0]))
            .filter(|g| *g > 0.0);
        let Some((glo, ghi)) = range(xs) else {
            continue;
        };
        // Fit the axis to the γ values themselves (range() pads linearly).
        let gl: Vec<f64> = ours
            .iter()
            .chain(&paper)
            .flat_map(|s| s.pts.iter().map(|p| p[0]))
            .filter(|g| *g > 0.0)
            .collect();
        let (gmin, gmax) = gl.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, g| {
            (a.0.min(*g), a.1.max(*g))
        });
        let (gmin, gmax) = if gmax > gmin {
            (gmin / 1.15, gmax * 1.15)
        } else {
            (glo.max(1e-3), ghi)
        };
        let mut panels = vec![RawPanel {
            title: "this reproduction".into(),
            xlabel: "γ (log scale)".into(),
            ylabel: "accuracy (%)".into(),
            xlog2: true,
            x: (gmin, gmax),
            y: (0.0, 100.0),
            w: 300.0,
            series: ours,
        }];
        if !paper.is_empty() {
            panels.push(RawPanel {
                title: "paper (Tables III, S.I)".into(),
                xlabel: "γ (log scale)".into(),
                ylabel: "accuracy (%)".into(),
                xlog2: true,
                x: (gmin, gmax),
                y: (0.0, 100.0),
                w: 300.0,
                series: paper,
            });
        }
        out.push(layout(
            slug(&["fig1", &d, &m]),
            "gamma",
            1,
            format!("A_SW and A_Uni against γ, {} {}", names::model_display(&m), names::dataset_display(&d)),
            "Sample-wise (solid) and uniform (dashed) accuracy of the γ-sweep runs; missing points are runs without a value.".into(),
            panels,
        ));
    }
    out
}

/// Per-class values, bucketed when there are many classes; `lowest` picks the envelope side.
fn per_class(v: &[Option<f64>], lowest: bool) -> Vec<[f64; 2]> {
    let n = v.len();
    let k = n.div_ceil(MAX_CLASS_POINTS).max(1);
    let mut out = Vec::new();
    for (b, chunk) in v.chunks(k).enumerate() {
        let vals: Vec<f64> = chunk
            .iter()
            .flatten()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if vals.is_empty() {
            continue;
        }
        let y = if lowest {
            vals.iter().cloned().fold(f64::INFINITY, f64::min)
        } else {
            vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        };
        let x0 = (b * k) as f64 + 0.5;
        let x1 = (b * k + chunk.len()) as f64 + 0.5;
        out.push([x0, y]);
        out.push([x1, y]);
    }
    out
}

/// Region above the minimum positive metric (positive range) or below the maximum negative.
fn region(steps: &[[f64; 2]], edge: f64) -> Vec<[f64; 2]> {
    if steps.is_empty() {
        return Vec::new();
    }
    let mut pts = steps.to_vec();
    pts.push([steps[steps.len() - 1][0], edge]);
    pts.push([steps[0][0], edge]);
    pts
}

fn hline(
    label: &str,
    color: (&'static str, &'static str),
    dash: bool,
    x: (f64, f64),
    y: f64,
) -> Raw {
    line(label, color, dash, false, vec![[x.0, y], [x.1, y]])
}

fn bucket_note(n: usize) -> String {
    if n > MAX_CLASS_POINTS {
        format!(
            " The {n} classes are drawn in buckets of {} (lowest minimum positive, highest maximum negative per bucket).",
            n.div_ceil(MAX_CLASS_POINTS)
        )
    } else {
        String::new()
    }
}

/// Fig. 2 for one run.
fn distribution_figure(r: &Run) -> Option<Figure> {
    let (d, without) = match r.dist(false) {
        Some(d) => (d, true),
        None => (r.dist(true)?, false),
    };
    if d.min_pos.is_empty() && d.hist.is_none() {
        return None;
    }
    let n = d.min_pos.len().max(d.max_neg_type1.len());
    let pos = per_class(&d.min_pos, true);
    let neg = per_class(&d.max_neg_type1, false);
    let loss = name(&r.loss).to_string();
    let info = names::loss_info(&loss);
    // The threshold the unified bias sets in the bias-free metrics (see findings).
    let bias_t = match (without, info) {
        (true, Some(i)) if i.bias == 'u' => r
            .bias_final()
            .and_then(|b| if b.len() == 1 { b[0] } else { None })
            .map(|b| -bias_sign(r, i) * b),
        _ => None,
    };
    let hist = d
        .hist
        .as_ref()
        .filter(|h| h.lo.is_some() && h.hi.is_some() && (!h.pos.is_empty() || !h.neg.is_empty()));
    let ys = pos
        .iter()
        .chain(&neg)
        .map(|p| p[1])
        .chain(
            [d.mean_min_pos, d.mean_max_neg, bias_t]
                .into_iter()
                .flatten(),
        )
        .chain(
            hist.iter()
                .flat_map(|h| [h.lo.unwrap_or(f64::NAN), h.hi.unwrap_or(f64::NAN)]),
        );
    let (ylo, yhi) = range(ys)?;
    let xr = (0.5, n.max(1) as f64 + 0.5);
    let mut s1 = vec![
        area("positive (above min)", POS, region(&pos, yhi)),
        area("negative type I (below max)", NEG, region(&neg, ylo)),
    ];
    let mut lines = Vec::new();
    if let Some(v) = d.mean_min_pos {
        lines.push(hline("mean min positive", POS, false, xr, v));
    }
    if let Some(v) = d.mean_max_neg {
        lines.push(hline("mean max negative", NEG, false, xr, v));
    }
    if let Some(v) = bias_t {
        lines.push(hline("learned bias (as threshold)", BIAS, false, xr, v));
    }
    let hist_lines: Vec<Raw> = lines
        .iter()
        .map(|l| Raw {
            label: String::new(),
            kind: "line",
            color: l.color,
            dash: l.dash,
            marks: false,
            opacity: 1.0,
            pts: vec![[0.0, l.pts[0][1]], [1.05, l.pts[0][1]]],
        })
        .collect();
    s1.extend(lines);
    let mut panels = vec![RawPanel {
        title: "per-class ranges".into(),
        xlabel: "class".into(),
        ylabel: if without {
            "metric (without bias)".into()
        } else {
            "metric (with bias)".into()
        },
        xlog2: false,
        x: xr,
        y: (ylo, yhi),
        w: 300.0,
        series: s1,
    }];
    if let Some(h) = hist {
        let (lo, hi) = (h.lo.unwrap_or(0.0), h.hi.unwrap_or(1.0));
        let steps = |counts: &[f64]| -> Vec<[f64; 2]> {
            let peak = counts.iter().cloned().fold(0.0, f64::max);
            if counts.is_empty() || peak <= 0.0 {
                return Vec::new();
            }
            let w = (hi - lo) / counts.len() as f64;
            let mut pts = vec![[0.0, lo]];
            for (j, c) in counts.iter().enumerate() {
                let x = c / peak;
                pts.push([x, lo + j as f64 * w]);
                pts.push([x, lo + (j + 1) as f64 * w]);
            }
            pts.push([0.0, hi]);
            pts
        };
        let mut s2 = vec![
            area("positive", POS, steps(&h.pos)),
            area("negative", NEG, steps(&h.neg)),
        ];
        s2.extend(hist_lines);
        panels.push(RawPanel {
            title: "histograms".into(),
            xlabel: "frequency / peak".into(),
            ylabel: String::new(),
            xlog2: false,
            x: (0.0, 1.05),
            y: (ylo, yhi),
            w: 140.0,
            series: s2,
        });
    }
    Some(layout(
        slug(&["fig2", &r.id]),
        "distribution",
        2,
        format!(
            "Positive and negative metrics, {} {} L_{loss}",
            names::model_display(name(&r.model)),
            names::dataset_display(name(&r.dataset))
        ),
        format!(
            "Run {}. Shaded: per class, metrics above the minimum positive (red) and below the maximum type-I negative (blue); overlap shows as purple. Lines: means over classes{}.{}",
            r.id,
            if bias_t.is_some() {
                " and the threshold set by the learned unified bias"
            } else {
                ""
            },
            bucket_note(n)
        ),
        panels,
    ))
}

/// Fig. 3 for one run of a diverse-bias loss.
fn bias_figure(r: &Run) -> Option<Figure> {
    let loss = name(&r.loss).to_string();
    let info = names::loss_info(&loss)?;
    let bias_curve = r.bias_final().map(|b| {
        let s = bias_sign(r, info);
        // per-class threshold set by b_i in the bias-free metrics: -s·b_i
        let t: Vec<Option<f64>> = b.iter().map(|x| x.map(|x| -s * x)).collect();
        let steps = per_class(&t, true);
        // a curve through the bucket centres
        steps
            .chunks(2)
            .map(|c| [(c[0][0] + c[1][0]) / 2.0, c[0][1]])
            .collect::<Vec<_>>()
    });
    let mut panels = Vec::new();
    let mut n = 0;
    let mut specs: Vec<(&Dist, bool, bool)> = Vec::new(); // (dist, with bias, type II)
    if let Some(d) = r.dist(false) {
        specs.push((d, false, false));
        specs.push((d, false, true));
    }
    if let Some(d) = r.dist(true) {
        specs.push((d, true, false));
    }
    for (d, with_bias, type2) in specs {
        let negv = if type2 {
            &d.max_neg_type2
        } else {
            &d.max_neg_type1
        };
        if d.min_pos.is_empty() || negv.is_empty() {
            continue;
        }
        n = n.max(d.min_pos.len());
        let pos = per_class(&d.min_pos, true);
        let neg = per_class(negv, false);
        let curve = if with_bias { None } else { bias_curve.clone() };
        let ys = pos
            .iter()
            .chain(&neg)
            .map(|p| p[1])
            .chain(curve.iter().flatten().map(|p| p[1]));
        let Some((ylo, yhi)) = range(ys) else {
            continue;
        };
        let xr = (0.5, d.min_pos.len() as f64 + 0.5);
        let mut s = vec![
            area("positive", POS, region(&pos, yhi)),
            area(
                if type2 {
                    "negative type II"
                } else {
                    "negative type I"
                },
                NEG,
                region(&neg, ylo),
            ),
        ];
        if let Some(c) = curve {
            s.push(line(
                "learned biases (as thresholds)",
                BIAS,
                false,
                false,
                c,
            ));
        }
        if with_bias {
            if let Some(v) = d.mean_min_pos {
                s.push(hline("mean min positive", POS, false, xr, v));
            }
            if let Some(v) = d.mean_max_neg {
                s.push(hline("mean max negative", NEG, false, xr, v));
            }
        }
        panels.push(RawPanel {
            title: match (with_bias, type2) {
                (false, false) => "without bias: positive vs type I".into(),
                (false, true) => "without bias: positive vs type II".into(),
                _ => "with bias".into(),
            },
            xlabel: "class".into(),
            ylabel: "metric".into(),
            xlog2: false,
            x: xr,
            y: (ylo, yhi),
            w: 260.0,
            series: s,
        });
    }
    if panels.is_empty() {
        return None;
    }
    let mode = r
        .bias_init_mode
        .map(|m| format!(", bias initialisation mode {m}"))
        .unwrap_or_default();
    Some(layout(
        slug(&["fig3", &r.id]),
        "bias",
        3,
        format!(
            "Metrics and learned biases, {} {} L_{loss}{mode}",
            names::model_display(name(&r.model)),
            names::dataset_display(name(&r.dataset))
        ),
        format!(
            "Run {}. Red: above each class's minimum positive metric; blue: below its maximum negative metric; yellow: the learned per-class biases as thresholds.{}",
            r.id,
            bucket_note(n)
        ),
        panels,
    ))
}

/// Which dataset and model Figs. 2 and 3 are drawn for.
pub struct Choice {
    pub dataset: Option<String>,
    pub model: Option<String>,
    /// Bias initialisation modes for Fig. 3 (the paper shows 3 and 7).
    pub modes: Vec<u32>,
}

fn pick<'a>(
    runs: &'a [Run],
    choice: &Choice,
    losses: &[&str],
) -> Option<(String, String, Vec<&'a Run>)> {
    let cands: Vec<&Run> = runs
        .iter()
        .filter(|r| r.loss.as_deref().is_some_and(|l| losses.contains(&l)))
        .filter(|r| {
            choice
                .dataset
                .as_ref()
                .is_none_or(|d| name(&r.dataset) == names::dataset(d))
        })
        .filter(|r| {
            choice
                .model
                .as_ref()
                .is_none_or(|m| name(&r.model) == names::model(m))
        })
        .collect();
    let (d, m) = dataset_model_pairs(&cands).into_iter().next()?;
    let rs = cands
        .into_iter()
        .filter(|r| name(&r.dataset) == d && name(&r.model) == m)
        .collect();
    Some((d, m, rs))
}

/// Fig. 2: one figure per loss among soft-u, soft-nu, bce-u, bce-nu (first fine-tuning run).
pub fn distribution_figures(runs: &[Run], choice: &Choice) -> Vec<Figure> {
    const L: [&str; 4] = ["soft-u", "soft-nu", "bce-u", "bce-nu"];
    let ft: Vec<Run> = runs
        .iter()
        .filter(|r| r.role == Role::Finetune)
        .cloned()
        .collect();
    let Some((_, _, rs)) = pick(&ft, choice, &L) else {
        return Vec::new();
    };
    L.iter()
        .filter_map(|l| rs.iter().find(|r| r.loss.as_deref() == Some(l)))
        .filter_map(|r| distribution_figure(r))
        .collect()
}

/// Fig. 3: the diverse-bias runs at the chosen initialisation modes (else the fine-tuning
/// runs), at most eight.
pub fn bias_figures(runs: &[Run], choice: &Choice) -> Vec<Figure> {
    const L: [&str; 4] = ["soft-d", "soft-nd", "bce-d", "bce-nd"];
    let init: Vec<Run> = runs
        .iter()
        .filter(|r| {
            r.role == Role::BiasInit && r.bias_init_mode.is_some_and(|m| choice.modes.contains(&m))
        })
        .cloned()
        .collect();
    let src = if pick(&init, choice, &L).is_some() {
        init
    } else {
        runs.iter()
            .filter(|r| r.role == Role::Finetune)
            .cloned()
            .collect()
    };
    let Some((_, _, mut rs)) = pick(&src, choice, &L) else {
        return Vec::new();
    };
    rs.sort_by(|a, b| {
        a.bias_init_mode
            .cmp(&b.bias_init_mode)
            .then_with(|| names::cmp_in(&names::LOSSES, name(&a.loss), name(&b.loss)))
            .then_with(|| a.id.cmp(&b.id))
    });
    rs.into_iter().filter_map(bias_figure).take(8).collect()
}
