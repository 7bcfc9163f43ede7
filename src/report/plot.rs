//! The report's generic plotting layer: curves in data coordinates go in ([`Curve`], grouped
//! into [`Axes`]), a laid-out [`Figure`] comes out — panels side by side with their margins,
//! linear or log₂ [`Scale`]s with nice ticks, every series mapped to pixels (for the SVG
//! template) and written as pgfplots coordinates (for the LaTeX one), legend positions, the
//! named colours both templates know, and the SVG's `<desc>` text. It knows nothing of the
//! paper: [`super::figures`] decides what each figure shows.
//!
//! Nothing here draws or escapes: `figure.svg` and `figure.tex` do (tera escapes the SVG's
//! text, the `tex` filter the LaTeX's).

use serde::Serialize;

/// A colour as the SVG writes it (hex, no `#`) and as the LaTeX template names it
/// (`\definecolor` in `report.tex`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Color {
    pub hex: &'static str,
    pub tex: &'static str,
}

pub const BLUE: Color = Color {
    hex: "1f77b4",
    tex: "negblue",
};
pub const RED: Color = Color {
    hex: "d62728",
    tex: "posred",
};
pub const YELLOW: Color = Color {
    hex: "e6a800",
    tex: "biasyellow",
};
pub const GREEN: Color = Color {
    hex: "2ca02c",
    tex: "c3green",
};
pub const PURPLE: Color = Color {
    hex: "9467bd",
    tex: "c4purple",
};

/// The colours given in turn to series that stand for categories (losses, models).
pub const PALETTE: [Color; 4] = [BLUE, RED, GREEN, PURPLE];

/// The `k`-th category colour, cycling through [`PALETTE`].
pub fn palette(k: usize) -> Color {
    PALETTE[k % PALETTE.len()]
}

/// How a series is drawn.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A polyline, optionally dashed and with markers.
    Line,
    /// A filled polygon.
    Area,
}

/// A series before layout, in data coordinates.
#[derive(Clone, Debug)]
pub struct Curve {
    /// Empty: not in the legend.
    pub label: String,
    pub kind: Kind,
    pub color: Color,
    pub dash: bool,
    pub marks: bool,
    pub opacity: f64,
    pub pts: Vec<[f64; 2]>,
}

impl Curve {
    /// A solid line without markers.
    pub fn line(label: impl Into<String>, color: Color, pts: Vec<[f64; 2]>) -> Curve {
        Curve {
            label: label.into(),
            kind: Kind::Line,
            color,
            dash: false,
            marks: false,
            opacity: 1.0,
            pts,
        }
    }

    /// A translucent filled polygon through `pts`.
    pub fn area(label: impl Into<String>, color: Color, pts: Vec<[f64; 2]>) -> Curve {
        Curve {
            label: label.into(),
            kind: Kind::Area,
            color,
            dash: false,
            marks: false,
            opacity: 0.3,
            pts,
        }
    }

    /// A solid horizontal line at `y` from `x.0` to `x.1`.
    pub fn hline(label: impl Into<String>, color: Color, x: (f64, f64), y: f64) -> Curve {
        Curve::line(label, color, vec![[x.0, y], [x.1, y]])
    }

    pub fn dashed(self, dash: bool) -> Curve {
        Curve { dash, ..self }
    }

    /// With a marker at every point.
    pub fn marked(self) -> Curve {
        Curve {
            marks: true,
            ..self
        }
    }
}

/// The polygon between a step curve and the horizontal line at `edge` (the region above or
/// below the curve, whichever side `edge` is on); empty for an empty curve.
pub fn fill_to(steps: &[[f64; 2]], edge: f64) -> Vec<[f64; 2]> {
    if steps.is_empty() {
        return Vec::new();
    }
    let mut pts = steps.to_vec();
    pts.push([steps[steps.len() - 1][0], edge]);
    pts.push([steps[0][0], edge]);
    pts
}

/// An axis's range and how values are placed along it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Linear(f64, f64),
    /// Logarithmic, base 2 (ticks at powers of two); only positive values can be shown.
    Log2(f64, f64),
}

impl Scale {
    pub fn bounds(self) -> (f64, f64) {
        match self {
            Scale::Linear(lo, hi) | Scale::Log2(lo, hi) => (lo, hi),
        }
    }

    pub fn is_log2(self) -> bool {
        matches!(self, Scale::Log2(..))
    }

    /// Where `v` lies along the axis: 0 at the low end, 1 at the high end, outside [0, 1]
    /// beyond them; the middle for an empty range (low end = high end).
    pub fn fraction(self, v: f64) -> f64 {
        let (lo, hi) = self.bounds();
        if lo == hi {
            return 0.5;
        }
        match self {
            Scale::Linear(..) => (v - lo) / (hi - lo),
            Scale::Log2(..) => (v.log2() - lo.log2()) / (hi.log2() - lo.log2()),
        }
    }

    /// Whether `v` can be placed on this axis at all.
    pub fn shows(self, v: f64) -> bool {
        v.is_finite() && (!self.is_log2() || v > 0.0)
    }

    /// The tick values: round numbers for a linear axis ([`nice_ticks`]), the powers of two
    /// inside the range for a log₂ one (none when the range is not positive).
    pub fn ticks(self) -> Vec<f64> {
        match self {
            Scale::Linear(lo, hi) => nice_ticks(lo, hi),
            Scale::Log2(lo, hi) => {
                let mut t = Vec::new();
                if !(lo > 0.0 && hi.is_finite()) {
                    return t;
                }
                let mut v = 2f64.powf(lo.log2().ceil());
                while v <= hi * (1.0 + 1e-9) {
                    t.push(v);
                    v *= 2.0;
                }
                t
            }
        }
    }
}

/// At most about six round ticks (steps of 1, 2 or 5 times a power of ten) from `lo` to
/// `hi`, at most 20 in any case; a tick near zero is exactly zero.
pub fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
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

/// A tick's text: up to four decimals, without trailing zeros.
pub fn tick_label(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Compact, pgfplots-readable number.
pub fn tex_num(v: f64) -> String {
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

/// The range of the finite `vals`, padded by 5% on each side (±1 around a single value), to
/// use as an axis range; `None` when there is no finite value.
pub fn padded_range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
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

/// One panel before layout: its labels, ranges, plot-area width in pixels and curves.
#[derive(Clone, Debug)]
pub struct Axes {
    pub title: String,
    pub xlabel: String,
    /// Empty: none drawn.
    pub ylabel: String,
    pub x: Scale,
    /// The y axis is always linear.
    pub y: (f64, f64),
    pub width: f64,
    pub curves: Vec<Curve>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Tick {
    pub value: f64,
    pub px: f64,
    pub label: String,
}

/// A curve after layout, as the templates read it.
#[derive(Serialize, Clone, Debug)]
pub struct Series {
    /// Empty: not in the legend.
    pub label: String,
    pub kind: Kind,
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

/// An [`Axes`] after layout.
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
    /// What the figure shows, for the templates (`gamma`, `distribution`, `bias`).
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

/// Space around each panel's plot area: tick labels and the y label on the left, the title
/// above, tick labels and the x label below (the legend comes under that).
pub const MARGIN_L: f64 = 58.0;
pub const MARGIN_R: f64 = 16.0;
pub const MARGIN_T: f64 = 30.0;
pub const MARGIN_B: f64 = 44.0;
pub const LEGEND_ROW: f64 = 15.0;
/// Every panel's plot-area height.
pub const PANEL_H: f64 = 220.0;

/// A panel's plot area on the canvas: maps data coordinates to pixels (y grows downwards).
/// Points are held to 5% beyond the area, so that what lies outside is cut by the clip
/// path rather than drawn far away.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frame {
    pub left: f64,
    pub top: f64,
    pub w: f64,
    pub h: f64,
    pub x: Scale,
    pub y: (f64, f64),
}

impl Frame {
    pub fn px(&self, v: f64) -> f64 {
        self.left + self.x.fraction(v).clamp(-0.05, 1.05) * self.w
    }

    pub fn py(&self, v: f64) -> f64 {
        let y = Scale::Linear(self.y.0, self.y.1);
        self.top + self.h - y.fraction(v).clamp(-0.05, 1.05) * self.h
    }
}

/// Lay `axes` out side by side into a figure, mapping every curve to pixels, placing the
/// legends under the panels and writing the `<desc>`.
pub fn figure(
    id: String,
    kind: &'static str,
    number: u32,
    title: String,
    caption: String,
    axes: Vec<Axes>,
) -> Figure {
    let total_w: f64 = axes.iter().map(|a| a.width + MARGIN_L + MARGIN_R).sum();
    let legend_rows = axes
        .iter()
        .map(|a| a.curves.iter().filter(|c| !c.label.is_empty()).count())
        .max()
        .unwrap_or(0);
    let height = MARGIN_T + PANEL_H + MARGIN_B + legend_rows as f64 * LEGEND_ROW + 6.0;
    let mut x0 = 0.0;
    let mut panels = Vec::new();
    let mut descs = Vec::new();
    for a in axes {
        descs.push(PanelDesc::of(&a));
        let w = a.width;
        panels.push(place(a, x0));
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

/// One panel whose margin box starts at `x0`; its `tex_width` is left to [`figure`].
fn place(a: Axes, x0: f64) -> Panel {
    let frame = Frame {
        left: x0 + MARGIN_L,
        top: MARGIN_T,
        w: a.width,
        h: PANEL_H,
        x: a.x,
        y: a.y,
    };
    let tick = |v: f64, px: f64| Tick {
        value: v,
        px,
        label: tick_label(v),
    };
    let xticks =
        a.x.ticks()
            .into_iter()
            .map(|v| tick(v, frame.px(v)))
            .collect();
    let yticks = nice_ticks(a.y.0, a.y.1)
        .into_iter()
        .map(|v| tick(v, frame.py(v)))
        .collect();
    let mut row = 0;
    let series = a
        .curves
        .into_iter()
        .map(|c| {
            let (legend_x, legend_y) = if c.label.is_empty() {
                (0.0, 0.0)
            } else {
                row += 1;
                (
                    frame.left,
                    frame.top + frame.h + MARGIN_B - 4.0 + (row - 1) as f64 * LEGEND_ROW,
                )
            };
            series(c, &frame, legend_x, legend_y)
        })
        .collect();
    let (xmin, xmax) = a.x.bounds();
    Panel {
        title: a.title,
        xlabel: a.xlabel,
        ylabel: a.ylabel,
        xlog2: a.x.is_log2(),
        xmin,
        xmax,
        ymin: a.y.0,
        ymax: a.y.1,
        left: frame.left,
        top: frame.top,
        w: frame.w,
        h: frame.h,
        xticks,
        yticks,
        series,
        tex_width: 0.0,
    }
}

/// A curve in both coordinate systems, without the points the axes cannot show.
fn series(c: Curve, frame: &Frame, legend_x: f64, legend_y: f64) -> Series {
    let pts: Vec<[f64; 2]> = c
        .pts
        .into_iter()
        .filter(|q| frame.x.shows(q[0]) && q[1].is_finite())
        .collect();
    let px: Vec<[f64; 2]> = pts
        .iter()
        .map(|q| [frame.px(q[0]), frame.py(q[1])])
        .collect();
    let round = |v: f64| (v * 10.0).round() / 10.0;
    Series {
        label: c.label,
        kind: c.kind,
        color: c.color.hex,
        tex_color: c.color.tex,
        dash: c.dash,
        marks: c.marks,
        opacity: c.opacity,
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
        mark_px: if c.marks {
            px.iter().map(|q| [round(q[0]), round(q[1])]).collect()
        } else {
            Vec::new()
        },
        legend_x,
        legend_y,
    }
}

/// What [`describe`] needs of a panel: its labels and the range of its data.
struct PanelDesc {
    title: String,
    xlabel: String,
    ylabel: String,
    labels: Vec<String>,
    /// (+∞, −∞) when the panel has no finite value.
    data_y: (f64, f64),
}

impl PanelDesc {
    fn of(a: &Axes) -> PanelDesc {
        let data_y = a
            .curves
            .iter()
            .flat_map(|c| c.pts.iter().map(|q| q[1]))
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        PanelDesc {
            title: a.title.clone(),
            xlabel: a.xlabel.clone(),
            ylabel: a.ylabel.clone(),
            labels: a
                .curves
                .iter()
                .map(|c| c.label.clone())
                .filter(|l| !l.is_empty())
                .collect(),
            data_y,
        }
    }
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
