//! The report's generic plotting layer: curves in data coordinates go in ([`Curve`], grouped
//! into [`Axes`]), a laid-out [`Figure`] comes out — panels side by side with their margins,
//! linear or log₂ [`Scale`]s with nice ticks, every series mapped to pixels (for the SVG
//! template) and written as pgfplots coordinates (for the LaTeX one), legend positions, the
//! named colours both templates know, and the SVG's `<desc>` text; plus shapes to fill
//! (regions beside a step curve, sideways histograms). It knows nothing of the paper:
//! [`super::figures`] decides what each figure shows.
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

impl Color {
    pub const fn new(hex: &'static str, tex: &'static str) -> Color {
        Color { hex, tex }
    }
}

pub const BLUE: Color = Color::new("1f77b4", "negblue");
pub const RED: Color = Color::new("d62728", "posred");
pub const YELLOW: Color = Color::new("e6a800", "biasyellow");
pub const GREEN: Color = Color::new("2ca02c", "c3green");
pub const PURPLE: Color = Color::new("9467bd", "c4purple");

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

/// The outline of a histogram lying on its side, to fill: bins of equal height from `lo` up
/// to `hi` (y), each as wide as its count over the largest count (x from 0 to 1); empty when
/// there are no counts or none is positive.
pub fn sideways_histogram(counts: &[f64], lo: f64, hi: f64) -> Vec<[f64; 2]> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn all_close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(*x, *y))
    }

    #[test]
    fn nice_ticks_are_round_and_few() {
        assert_eq!(
            nice_ticks(0.0, 100.0),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        // Fig. 2's class axis: from 0.5, the first round tick is inside the range.
        assert_eq!(nice_ticks(0.5, 200.5), vec![50.0, 100.0, 150.0, 200.0]);
        let t = nice_ticks(-0.3, 0.7);
        assert!(all_close(&t, &[-0.2, 0.0, 0.2, 0.4, 0.6]), "{t:?}");
        // Stepping from -0.6 by 0.2 lands near zero, not on it: the tick is made exactly zero
        // (else it is printed "-0").
        let t = nice_ticks(-0.7, 0.3);
        assert!(t.contains(&0.0), "{t:?}");
        let labels: Vec<String> = t.into_iter().map(tick_label).collect();
        assert_eq!(labels, ["-0.6", "-0.4", "-0.2", "0", "0.2"]);
        for (lo, hi) in [(0.0, 1e9), (-3.7, 12.1), (1e-6, 3e-6), (-250.0, -249.0)] {
            let t = nice_ticks(lo, hi);
            assert!((2..=6).contains(&t.len()), "{lo}..{hi}: {t:?}");
            assert!(t.iter().all(|v| *v >= lo && *v <= hi), "{lo}..{hi}: {t:?}");
        }
    }

    #[test]
    fn nice_ticks_of_degenerate_ranges() {
        // An empty range: the one value itself.
        let t = nice_ticks(5.0, 5.0);
        assert_eq!(t.len(), 1, "{t:?}");
        assert!((t[0] - 5.0).abs() < 1e-9);
        assert_eq!(nice_ticks(0.0, 0.0), vec![0.0]);
        // Reversed or not a number: no ticks rather than a runaway loop.
        assert!(nice_ticks(3.0, 1.0).is_empty());
        assert!(nice_ticks(f64::NAN, 1.0).is_empty());
    }

    #[test]
    fn log2_ticks_are_the_powers_of_two_inside() {
        assert_eq!(Scale::Log2(3.0, 40.0).ticks(), vec![4.0, 8.0, 16.0, 32.0]);
        // Fig. 1's axis for γ = 4 … 208 (padded by a factor of 1.15 each way).
        assert_eq!(
            Scale::Log2(4.0 / 1.15, 208.0 * 1.15).ticks(),
            vec![4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
        );
        // Ends that are powers of two are ticks themselves.
        assert_eq!(Scale::Log2(1.0, 4.0).ticks(), vec![1.0, 2.0, 4.0]);
        assert_eq!(Scale::Log2(4.0, 4.0).ticks(), vec![4.0]);
        assert!(Scale::Log2(5.0, 6.0).ticks().is_empty());
        // A range reaching zero or below has no place on a log axis.
        assert!(Scale::Log2(0.0, 8.0).ticks().is_empty());
        assert!(Scale::Log2(-1.0, 8.0).ticks().is_empty());
        assert_eq!(Scale::Linear(0.0, 100.0).ticks(), nice_ticks(0.0, 100.0));
    }

    #[test]
    fn scales_place_values_along_the_axis() {
        let lin = Scale::Linear(0.0, 10.0);
        assert!(close(lin.fraction(2.5), 0.25));
        assert!(close(lin.fraction(-5.0), -0.5));
        let log = Scale::Log2(1.0, 16.0);
        assert!(close(log.fraction(4.0), 0.5));
        assert!(close(log.fraction(1.0), 0.0) && close(log.fraction(16.0), 1.0));
        // An empty range puts everything in the middle instead of dividing by zero.
        assert_eq!(Scale::Linear(3.0, 3.0).fraction(7.0), 0.5);
        assert!(lin.shows(-1.0) && !lin.shows(f64::NAN) && !lin.shows(f64::INFINITY));
        assert!(log.shows(0.5) && !log.shows(0.0) && !log.shows(-2.0));
        assert_eq!(log.bounds(), (1.0, 16.0));
        assert!(log.is_log2() && !lin.is_log2());
    }

    #[test]
    fn frames_map_data_to_pixels_with_y_downwards() {
        let f = Frame {
            left: 58.0,
            top: 30.0,
            w: 300.0,
            h: 220.0,
            x: Scale::Linear(0.0, 10.0),
            y: (0.0, 100.0),
        };
        assert!(close(f.px(0.0), 58.0) && close(f.px(10.0), 358.0) && close(f.px(5.0), 208.0));
        assert!(close(f.py(0.0), 250.0) && close(f.py(100.0), 30.0) && close(f.py(25.0), 195.0));
        // Far outside: held 5% beyond the plot area.
        assert!(close(f.px(100.0), 58.0 + 1.05 * 300.0));
        assert!(close(f.py(-1e6), 250.0 + 0.05 * 220.0));
        let g = Frame {
            x: Scale::Log2(1.0, 16.0),
            ..f
        };
        assert!(close(g.px(4.0), 208.0) && close(g.px(2.0), 133.0));
    }

    #[test]
    fn numbers_as_tick_labels_and_pgfplots_coordinates() {
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(100.0), "100");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(0.123456), "0.1235");
        assert_eq!(tick_label(-2.25), "-2.25");
        assert_eq!(tex_num(0.25), "0.25");
        assert_eq!(tex_num(42.0), "42");
        assert_eq!(tex_num(-0.0), "0");
        assert_eq!(tex_num(1e-5), "1.00000e-5");
        assert_eq!(tex_num(12345678.0), "1.23457e7");
    }

    #[test]
    fn padded_ranges_fills_and_histograms() {
        let (lo, hi) = padded_range([1.0, 3.0, f64::NAN].into_iter()).unwrap();
        assert!(close(lo, 0.9) && close(hi, 3.1));
        assert_eq!(padded_range([5.0].into_iter()), Some((4.0, 6.0)));
        assert_eq!(padded_range([f64::NAN, f64::INFINITY].into_iter()), None);
        assert_eq!(padded_range(std::iter::empty()), None);

        let steps = [[0.0, 1.0], [2.0, 1.0], [2.0, 3.0], [4.0, 3.0]];
        let mut want = steps.to_vec();
        want.extend([[4.0, 0.0], [0.0, 0.0]]);
        assert_eq!(fill_to(&steps, 0.0), want);
        assert!(fill_to(&[], 1.0).is_empty());
        assert_eq!(
            sideways_histogram(&[1.0, 4.0, 2.0], 0.0, 3.0),
            vec![
                [0.0, 0.0],
                [0.25, 0.0],
                [0.25, 1.0],
                [1.0, 1.0],
                [1.0, 2.0],
                [0.5, 2.0],
                [0.5, 3.0],
                [0.0, 3.0]
            ]
        );
        assert!(sideways_histogram(&[], 0.0, 1.0).is_empty());
        assert!(sideways_histogram(&[0.0, 0.0], 0.0, 1.0).is_empty());
        assert_eq!(palette(0), BLUE);
        assert_eq!(palette(5), RED);
        assert_eq!(palette(4), palette(0));
    }

    /// Two panels, 300 and 140 px wide, the first with two legend entries and one hidden curve.
    fn two_panels() -> Figure {
        let left = Axes {
            title: "left".into(),
            xlabel: "x".into(),
            ylabel: "accuracy (%)".into(),
            x: Scale::Linear(0.0, 10.0),
            y: (0.0, 100.0),
            width: 300.0,
            curves: vec![
                Curve::line("A", BLUE, vec![[0.0, 0.0], [10.0, 100.0]]).marked(),
                Curve::area("B", RED, vec![[2.0, 10.0], [f64::NAN, 5.0], [4.0, 30.0]]),
                Curve::hline("", YELLOW, (0.0, 10.0), 50.0).dashed(true),
            ],
        };
        let right = Axes {
            title: "right".into(),
            xlabel: "γ".into(),
            ylabel: String::new(),
            x: Scale::Log2(1.0, 16.0),
            y: (0.0, 1.0),
            width: 140.0,
            curves: vec![Curve::line(
                "C",
                GREEN,
                vec![[0.0, 0.5], [4.0, 0.5], [16.0, 1.0]],
            )],
        };
        figure(
            "fig-t".into(),
            "gamma",
            1,
            "Test".into(),
            "caption".into(),
            vec![left, right],
        )
    }

    #[test]
    fn figure_lays_panels_side_by_side() {
        let f = two_panels();
        assert_eq!(f.width, (300.0 + 58.0 + 16.0) + (140.0 + 58.0 + 16.0));
        // Room for the tallest legend (two rows).
        assert_eq!(f.height, 30.0 + 220.0 + 44.0 + 2.0 * 15.0 + 6.0);
        let (a, b) = (&f.panels[0], &f.panels[1]);
        assert_eq!((a.left, a.top, a.w, a.h), (58.0, 30.0, 300.0, 220.0));
        assert_eq!(b.left, 374.0 + 58.0);
        assert!(!a.xlog2 && b.xlog2);
        assert_eq!((b.xmin, b.xmax, b.ymin, b.ymax), (1.0, 16.0, 0.0, 1.0));
        // LaTeX widths follow the pixel widths.
        assert_eq!((a.tex_width, b.tex_width), (0.62, 0.32));
        let xt: Vec<(f64, &str)> = b.xticks.iter().map(|t| (t.px, t.label.as_str())).collect();
        assert_eq!(
            xt,
            vec![
                (432.0, "1"),
                (467.0, "2"),
                (502.0, "4"),
                (537.0, "8"),
                (572.0, "16")
            ]
        );
        let yt: Vec<&str> = a.yticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(yt, vec!["0", "20", "40", "60", "80", "100"]);
        assert_eq!(a.yticks[1].px, 250.0 - 44.0);
    }

    #[test]
    fn series_in_pixels_and_data_coordinates() {
        let f = two_panels();
        let [line, area, hidden] = &f.panels[0].series[..] else {
            panic!("three series")
        };
        assert_eq!(line.svg, "58.0,250.0 358.0,30.0");
        assert_eq!(line.tex, "(0,0) (10,100)");
        assert_eq!(line.mark_px, vec![[58.0, 250.0], [358.0, 30.0]]);
        assert_eq!((line.color, line.tex_color), ("1f77b4", "negblue"));
        // The point with no x is dropped from both.
        assert_eq!(area.svg, "118.0,228.0 178.0,184.0");
        assert_eq!(area.tex, "(2,10) (4,30)");
        assert!(area.mark_px.is_empty() && area.opacity == 0.3);
        let v = serde_json::to_value(area).unwrap();
        assert_eq!(v["kind"], "area");
        assert_eq!(serde_json::to_value(line).unwrap()["kind"], "line");
        // Legend rows under the panel, labelled curves only.
        assert_eq!((line.legend_x, line.legend_y), (58.0, 290.0));
        assert_eq!((area.legend_x, area.legend_y), (58.0, 305.0));
        assert_eq!((hidden.legend_x, hidden.legend_y), (0.0, 0.0));
        assert!(hidden.dash && hidden.label.is_empty());
        // On the log axis, x = 0 cannot be shown.
        assert_eq!(f.panels[1].series[0].tex, "(4,0.5) (16,1)");
    }

    #[test]
    fn desc_says_what_each_panel_plots() {
        let f = two_panels();
        assert_eq!(
            f.desc,
            "Test. Panel \"left\": accuracy (%) against x for A, B, values from 0 to 100. \
             Panel \"right\": values against γ for C, values from 0.5 to 1."
        );
        let empty = figure(
            "e".into(),
            "bias",
            3,
            "Empty".into(),
            String::new(),
            vec![Axes {
                title: "none".into(),
                xlabel: "class".into(),
                ylabel: "metric".into(),
                x: Scale::Linear(0.0, 1.0),
                y: (0.0, 1.0),
                width: 100.0,
                curves: vec![Curve::line("", BLUE, vec![[0.0, f64::NAN]])],
            }],
        );
        assert_eq!(empty.desc, "Empty. Panel \"none\": metric against class.");
    }

    /// The plot's text reaches the SVG escaped: tera escapes `.svg` templates (the plot
    /// itself keeps text raw, as the LaTeX side escapes differently).
    #[test]
    fn text_is_escaped_in_the_svg() {
        let nasty = "a<b & \"c\"";
        let f = figure(
            "fig-esc".into(),
            "gamma",
            1,
            nasty.into(),
            nasty.into(),
            vec![Axes {
                title: nasty.into(),
                xlabel: nasty.into(),
                ylabel: nasty.into(),
                x: Scale::Linear(0.0, 1.0),
                y: (0.0, 1.0),
                width: 100.0,
                curves: vec![Curve::line(nasty, RED, vec![[0.0, 0.0], [1.0, 1.0]])],
            }],
        );
        assert_eq!(f.title, nasty, "the plot layer keeps text raw");
        let tera = super::super::load_templates(None).unwrap();
        let mut ctx = tera::Context::new();
        ctx.insert("fig", &f);
        let svg = super::super::render_one(&tera, "figure.svg", &ctx).unwrap();
        assert!(!svg.contains("a<b"), "{svg}");
        assert!(!svg.contains("& \""), "{svg}");
        let escaped = "a&lt;b &amp; &quot;c&quot;";
        // Title, desc, panel title, x label, y label and legend entry.
        assert!(svg.matches(escaped).count() >= 6, "{svg}");
        assert!(svg.contains(&format!(
            "<title id=\"fig-esc-title\">Fig. 1: {escaped}</title>"
        )));
    }
}
