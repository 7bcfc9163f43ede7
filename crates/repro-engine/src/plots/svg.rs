//! One chart as an inline SVG line plot: axes with round ticks, one coloured line per series
//! with a marker per point (each carrying its values in `data-x`/`data-y`, and a tooltip),
//! and a legend below.

use std::fmt::Write;

use super::Chart;

const W: f64 = 640.0;
const H: f64 = 360.0;
/// Plot area margins: left (tick labels), right, top, bottom (tick labels and axis name).
const ML: f64 = 64.0;
const MR: f64 = 16.0;
const MT: f64 = 16.0;
const MB: f64 = 44.0;
/// Colour-blind-safe palette (Okabe–Ito), cycled.
const COLOURS: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442", "#000000",
];

/// Text for XML content and attributes.
pub(super) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A number as short text (no trailing zeros, at most 6 significant digits).
fn num(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let s = format!("{:.*}", decimals(x), x);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn decimals(x: f64) -> usize {
    let mag = x.abs().log10().floor() as i32;
    (5 - mag).clamp(0, 12) as usize
}

/// Round tick positions covering [lo, hi]: about five, at 1, 2 or 5 times a power of ten.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    let raw = span / 5.0;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * p);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// The range of values, widened when all are equal so the scale is defined.
fn range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - pad, hi + pad);
    }
    (lo, hi)
}

/// The chart's SVG element (an empty string when it has no line).
pub(super) fn chart(c: &Chart) -> String {
    if c.lines.is_empty() {
        return String::new();
    }
    let pts = || c.lines.iter().flat_map(|l| l.points.iter());
    let (x0, x1) = range(pts().map(|p| p[0]));
    let (y0, y1) = range(pts().map(|p| p[1]));
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let sx = |x: f64| ML + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| MT + ph - (y - y0) / (y1 - y0) * ph;
    let legend_h = 18.0 * c.lines.len() as f64 + 8.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="plot" role="img" viewBox="0 0 {W} {h}" width="{W}" height="{h}" data-title="{t}" aria-label="{t}">"#,
        h = H + legend_h,
        t = esc(&c.title),
    );
    let _ = write!(
        s,
        r##"<rect class="area" x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#bbb"/>"##
    );
    for t in ticks(x0, x1) {
        let x = sx(t);
        let _ = write!(
            s,
            r##"<line x1="{x:.2}" y1="{MT}" x2="{x:.2}" y2="{b}" stroke="#e4e4e4"/><text x="{x:.2}" y="{ty}" font-size="11" text-anchor="middle" fill="#444">{}</text>"##,
            num(t),
            b = MT + ph,
            ty = MT + ph + 15.0,
        );
    }
    for t in ticks(y0, y1) {
        let y = sy(t);
        let _ = write!(
            s,
            r##"<line x1="{ML}" y1="{y:.2}" x2="{r}" y2="{y:.2}" stroke="#e4e4e4"/><text x="{tx}" y="{ty:.2}" font-size="11" text-anchor="end" fill="#444">{}</text>"##,
            num(t),
            r = ML + pw,
            tx = ML - 6.0,
            ty = y + 4.0,
        );
    }
    let _ = write!(
        s,
        r##"<text class="x-name" x="{cx}" y="{y}" font-size="12" text-anchor="middle" fill="#222">{}</text>"##,
        esc(&c.x),
        cx = ML + pw / 2.0,
        y = MT + ph + 34.0,
    );
    // The y axis names the columns drawn (one name for most charts).
    let mut ys: Vec<&str> = c.lines.iter().map(|l| l.y.as_str()).collect();
    ys.sort_unstable();
    ys.dedup();
    let _ = write!(
        s,
        r##"<text class="y-name" transform="translate(14 {cy}) rotate(-90)" font-size="12" text-anchor="middle" fill="#222">{}</text>"##,
        esc(&ys.join(", ")),
        cy = MT + ph / 2.0,
    );
    for (i, l) in c.lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let _ = write!(
            s,
            r#"<g class="series" data-label="{}" data-y="{}" data-points="{}">"#,
            esc(&l.label),
            esc(&l.y),
            l.points.len()
        );
        let path: Vec<String> = l
            .points
            .iter()
            .map(|p| format!("{:.2},{:.2}", sx(p[0]), sy(p[1])))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for p in &l.points {
            let _ = write!(
                s,
                r#"<circle class="point" cx="{:.2}" cy="{:.2}" r="3" fill="{colour}" data-x="{}" data-y="{}"><title>{}: {} = {}, {} = {}</title></circle>"#,
                sx(p[0]),
                sy(p[1]),
                p[0],
                p[1],
                esc(&l.label),
                esc(&c.x),
                num(p[0]),
                esc(&l.y),
                num(p[1]),
            );
        }
        s.push_str("</g>");
        let ly = H + 8.0 + 18.0 * i as f64;
        let _ = write!(
            s,
            r##"<g class="legend"><rect x="{ML}" y="{ly}" width="12" height="12" fill="{colour}"/><text x="{tx}" y="{ty}" font-size="12" fill="#222">{}</text></g>"##,
            esc(&l.label),
            tx = ML + 18.0,
            ty = ly + 10.0,
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside() {
        assert_eq!(
            ticks(0.0, 1.0),
            [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(ticks(3.0, 47.0), [10.0, 20.0, 30.0, 40.0]);
        assert_eq!(range([2.0, 2.0].into_iter()), (1.8, 2.2));
        assert_eq!(num(0.25), "0.25");
        assert_eq!(num(1200.0), "1200");
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
