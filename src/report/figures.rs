//! The paper's three figures, as data for the templates: which runs and published values
//! each shows and how (series, ranges, titles, captions). Axes, ticks, layout and the mapping
//! to pixels (SVG) and coordinates (pgfplots) are [`super::plot`]'s.
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

use super::findings::bias_sign;
use super::names;
use super::plot::{self, Axes, Color, Curve, Figure, Scale, fill_to, padded_range};
use super::published::Published;
use super::runs::{Dist, Role, Run};
use super::tables::{UNSPECIFIED, slug};

/// Classes beyond this many are grouped into buckets (their envelope: lowest minimum
/// positive, highest maximum negative), so that a 1000-class plot stays light.
pub const MAX_CLASS_POINTS: usize = 200;

/// Positive metrics, negative metrics, and the learned biases (as thresholds).
const POS: Color = plot::RED;
const NEG: Color = plot::BLUE;
const BIAS: Color = plot::YELLOW;

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
            let color = plot::palette(k);
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
                ours.push(
                    Curve::line(format!("{label} {l}"), color, pts)
                        .dashed(dash)
                        .marked(),
                );
            }
        }
        let mut paper = Vec::new();
        for (k, l) in losses.iter().enumerate() {
            let color = plot::palette(k);
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
                    paper.push(
                        Curve::line(format!("{label} {l}"), color, pts)
                            .dashed(dash)
                            .marked(),
                    );
                }
            }
        }
        let xs = ours
            .iter()
            .chain(&paper)
            .flat_map(|s| s.pts.iter().map(|p| p[0]))
            .filter(|g| *g > 0.0);
        let Some((glo, ghi)) = padded_range(xs) else {
            continue;
        };
        // Fit the axis to the γ values themselves (padded_range() pads linearly).
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
        let mut panels = vec![Axes {
            title: "this reproduction".into(),
            xlabel: "γ (log scale)".into(),
            ylabel: "accuracy (%)".into(),
            x: Scale::Log2(gmin, gmax),
            y: (0.0, 100.0),
            width: 300.0,
            curves: ours,
        }];
        if !paper.is_empty() {
            panels.push(Axes {
                title: "paper (Tables III, S.I)".into(),
                xlabel: "γ (log scale)".into(),
                ylabel: "accuracy (%)".into(),
                x: Scale::Log2(gmin, gmax),
                y: (0.0, 100.0),
                width: 300.0,
                curves: paper,
            });
        }
        out.push(plot::figure(
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
    let (ylo, yhi) = padded_range(ys)?;
    let xr = (0.5, n.max(1) as f64 + 0.5);
    let mut s1 = vec![
        Curve::area("positive (above min)", POS, fill_to(&pos, yhi)),
        Curve::area("negative type I (below max)", NEG, fill_to(&neg, ylo)),
    ];
    let mut lines = Vec::new();
    if let Some(v) = d.mean_min_pos {
        lines.push(Curve::hline("mean min positive", POS, xr, v));
    }
    if let Some(v) = d.mean_max_neg {
        lines.push(Curve::hline("mean max negative", NEG, xr, v));
    }
    if let Some(v) = bias_t {
        lines.push(Curve::hline("learned bias (as threshold)", BIAS, xr, v));
    }
    // The same lines across the histograms, out of their legend.
    let hist_lines: Vec<Curve> = lines
        .iter()
        .map(|l| Curve::hline("", l.color, (0.0, 1.05), l.pts[0][1]).dashed(l.dash))
        .collect();
    s1.extend(lines);
    let mut panels = vec![Axes {
        title: "per-class ranges".into(),
        xlabel: "class".into(),
        ylabel: if without {
            "metric (without bias)".into()
        } else {
            "metric (with bias)".into()
        },
        x: Scale::Linear(xr.0, xr.1),
        y: (ylo, yhi),
        width: 300.0,
        curves: s1,
    }];
    if let Some(h) = hist {
        let (lo, hi) = (h.lo.unwrap_or(0.0), h.hi.unwrap_or(1.0));
        let steps = |counts: &[f64]| plot::sideways_histogram(counts, lo, hi);
        let mut s2 = vec![
            Curve::area("positive", POS, steps(&h.pos)),
            Curve::area("negative", NEG, steps(&h.neg)),
        ];
        s2.extend(hist_lines);
        panels.push(Axes {
            title: "histograms".into(),
            xlabel: "frequency / peak".into(),
            ylabel: String::new(),
            x: Scale::Linear(0.0, 1.05),
            y: (ylo, yhi),
            width: 140.0,
            curves: s2,
        });
    }
    Some(plot::figure(
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
        let Some((ylo, yhi)) = padded_range(ys) else {
            continue;
        };
        let xr = (0.5, d.min_pos.len() as f64 + 0.5);
        let mut s = vec![
            Curve::area("positive", POS, fill_to(&pos, yhi)),
            Curve::area(
                if type2 {
                    "negative type II"
                } else {
                    "negative type I"
                },
                NEG,
                fill_to(&neg, ylo),
            ),
        ];
        if let Some(c) = curve {
            s.push(Curve::line("learned biases (as thresholds)", BIAS, c));
        }
        if with_bias {
            if let Some(v) = d.mean_min_pos {
                s.push(Curve::hline("mean min positive", POS, xr, v));
            }
            if let Some(v) = d.mean_max_neg {
                s.push(Curve::hline("mean max negative", NEG, xr, v));
            }
        }
        panels.push(Axes {
            title: match (with_bias, type2) {
                (false, false) => "without bias: positive vs type I".into(),
                (false, true) => "without bias: positive vs type II".into(),
                _ => "with bias".into(),
            },
            xlabel: "class".into(),
            ylabel: "metric".into(),
            x: Scale::Linear(xr.0, xr.1),
            y: (ylo, yhi),
            width: 260.0,
            curves: s,
        });
    }
    if panels.is_empty() {
        return None;
    }
    let mode = r
        .bias_init_mode
        .map(|m| format!(", bias initialisation mode {m}"))
        .unwrap_or_default();
    Some(plot::figure(
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
