//! The paper's claims, checked on our own numbers, each marked as holding, not holding, or
//! not judged (with the reason) — never assumed.
//!
//! Claims checked:
//! - ordering (inequality 26): A_Uni ≤ A_CW ≤ A_SW, for every run;
//! - gap: the BCE losses' A_SW − A_Uni gap is smaller than the SoftMax losses' (mean over the
//!   losses of each kind), per dataset and model;
//! - bias ≈ threshold: the unified bias learned by bce-u / bce-nu sits at the optimal unified
//!   threshold (Sec. V-A, Fig. 2). In the metrics without bias the bias acts as the threshold
//!   τ_b (−b for W·x + b, +b for γcos − b); the optimal threshold there is t*₀ = t* shifted by
//!   the same bias, so |τ_b − t*₀| equals |t*| of the metrics with bias. It holds when that
//!   distance is within one standard deviation of the per-class extremes (the spread the paper
//!   quotes for Fig. 2: max of std of minimum positive and of maximum negative metrics);
//! - best on A_Uni: a normalized BCE loss has the highest A_Uni, per dataset and model.

use serde::Serialize;

use super::names;
use super::runs::{Role, Run};
use super::tables::UNSPECIFIED;

#[derive(Serialize, Clone, Debug)]
pub struct Evidence {
    pub label: String,
    pub value: Option<f64>,
    pub digits: usize,
}

fn ev(label: &str, value: Option<f64>, digits: usize) -> Evidence {
    Evidence {
        label: label.to_string(),
        value,
        digits,
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Finding {
    /// `ordering`, `gap`, `bias-threshold`, `best-uni`.
    pub claim: &'static str,
    pub dataset: String,
    pub model: String,
    /// Loss and run id for per-run claims; empty for per-group claims.
    pub loss: String,
    pub run: String,
    pub evidence: Vec<Evidence>,
    /// `holds`, `fails` or `not judged`.
    pub verdict: &'static str,
    pub note: String,
}

fn verdict(b: bool) -> &'static str {
    if b { "holds" } else { "fails" }
}

fn name(o: &Option<String>) -> String {
    o.clone().unwrap_or_else(|| UNSPECIFIED.to_string())
}

fn ordering(r: &Run) -> Option<Finding> {
    let a = r.acc(false)?;
    let (sw, cw, uni) = (a.get("a_sw"), a.get("a_cw"), a.get("a_uni"));
    let (v, note) = match (sw, cw, uni) {
        (Some(sw), Some(cw), Some(uni)) => {
            let ok = uni <= cw + 1e-9 && cw <= sw + 1e-9;
            let mut note = String::new();
            if let Some(h) = r.metrics.as_ref().and_then(|m| m.ordering_holds)
                && h != ok
            {
                note = format!(
                    "metrics.json says ordering_holds = {h} (computed on unrounded counts)"
                );
            }
            (verdict(ok), note)
        }
        _ => ("not judged", "an accuracy is missing".to_string()),
    };
    Some(Finding {
        claim: "ordering",
        dataset: name(&r.dataset),
        model: name(&r.model),
        loss: name(&r.loss),
        run: r.id.clone(),
        evidence: vec![ev("A_Uni", uni, 2), ev("A_CW", cw, 2), ev("A_SW", sw, 2)],
        verdict: v,
        note,
    })
}

/// How the learned bias enters the metric: +1 for `W·x + b` (linear classifiers), −1 for
/// `γcos − b` (normalized ones), as in Table I. Where both distributions are present the sign
/// is read off the data instead: each class's metrics shift by ±b_i, so the mean minimum
/// positive metric shifts by ± the mean bias.
pub fn bias_sign(r: &Run, info: names::LossInfo) -> f64 {
    let mut sign = if info.normalized { -1.0 } else { 1.0 };
    let mean_b = r.bias_final().and_then(|b| {
        let v: Vec<f64> = b
            .iter()
            .flatten()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.len() == b.len() && !v.is_empty() {
            Some(v.iter().sum::<f64>() / v.len() as f64)
        } else {
            None
        }
    });
    if let (Some(w), Some(wo), Some(mb)) = (r.dist(true), r.dist(false), mean_b)
        && let (Some(a), Some(c)) = (w.mean_min_pos, wo.mean_min_pos)
        && mb.abs() > 1e-12
    {
        let s = (a - c) / mb;
        if (s - 1.0).abs() < 0.05 {
            sign = 1.0;
        } else if (s + 1.0).abs() < 0.05 {
            sign = -1.0;
        }
    }
    sign
}

/// The unified bias as a threshold (see the module docs).
fn bias_threshold(r: &Run) -> Option<Finding> {
    let loss = r.loss.as_deref()?;
    let info = names::loss_info(loss)?;
    if !(info.bce && info.bias == 'u') {
        return None;
    }
    let mut f = Finding {
        claim: "bias-threshold",
        dataset: name(&r.dataset),
        model: name(&r.model),
        loss: loss.to_string(),
        run: r.id.clone(),
        evidence: Vec::new(),
        verdict: "not judged",
        note: String::new(),
    };
    let b = r
        .bias_final()
        .and_then(|b| if b.len() == 1 { b[0] } else { None });
    let t = r.acc(false).and_then(|a| a.get("t_star"));
    let (Some(b), Some(t)) = (b, t) else {
        f.note = "needs the learned unified bias (one value) and t*".into();
        f.evidence = vec![ev("b", b, 3), ev("t*", t, 3)];
        return Some(f);
    };
    let sign = bias_sign(r, info);
    let tau = -sign * b;
    let t0 = t - sign * b;
    let dist = (tau - t0).abs();
    let spread =
        r.dist(true)
            .or_else(|| r.dist(false))
            .and_then(|d| match (d.std_min_pos, d.std_max_neg) {
                (Some(x), Some(y)) if x.is_finite() && y.is_finite() => Some(x.max(y)),
                (Some(x), None) | (None, Some(x)) if x.is_finite() => Some(x),
                _ => None,
            });
    f.evidence = vec![
        ev("b", Some(b), 3),
        ev("threshold of b (no bias)", Some(tau), 3),
        ev("t*0 (no bias)", Some(t0), 3),
        ev("|difference|", Some(dist), 3),
        ev("spread", spread, 3),
    ];
    match spread {
        Some(s) => f.verdict = verdict(dist <= s),
        None => f.note = "no distribution statistics to judge 'close' against".into(),
    }
    Some(f)
}

/// The evaluated, non-diverged fine-tuning runs of one dataset and model. Diverged runs sit
/// at chance level, where every accuracy is equal, so they would shrink the gap for nothing;
/// they are counted and named in the note instead.
struct Group<'a> {
    dataset: String,
    model: String,
    runs: Vec<&'a Run>,
    diverged: usize,
}

impl Group<'_> {
    fn note(&self, s: String) -> String {
        if self.diverged == 0 {
            s
        } else {
            format!("{s}; {} diverged run(s) left out", self.diverged)
        }
    }
}

fn groups(runs: &[Run]) -> Vec<Group<'_>> {
    let mut keys: Vec<(String, String)> = runs
        .iter()
        .filter(|r| r.role == Role::Finetune && r.metrics.is_some())
        .map(|r| (name(&r.dataset), name(&r.model)))
        .collect();
    keys.sort_by(|a, b| {
        names::cmp_in(&names::DATASETS, &a.0, &b.0)
            .then_with(|| names::cmp_in(&names::MODELS, &a.1, &b.1))
    });
    keys.dedup();
    keys.into_iter()
        .map(|(d, m)| {
            let all: Vec<&Run> = runs
                .iter()
                .filter(|r| {
                    r.role == Role::Finetune
                        && r.metrics.is_some()
                        && name(&r.dataset) == d
                        && name(&r.model) == m
                })
                .collect();
            let diverged = all.iter().filter(|r| r.diverged()).count();
            Group {
                runs: all.into_iter().filter(|r| !r.diverged()).collect(),
                dataset: d,
                model: m,
                diverged,
            }
        })
        .collect()
}

fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        None
    } else {
        Some(xs.iter().sum::<f64>() / xs.len() as f64)
    }
}

fn gap(g: &Group) -> Finding {
    let gaps = |bce: bool| -> Vec<f64> {
        g.runs
            .iter()
            .filter(|r| {
                r.loss
                    .as_deref()
                    .and_then(names::loss_info)
                    .is_some_and(|i| i.bce == bce)
            })
            .filter_map(|r| {
                let a = r.acc(false)?;
                Some(a.get("a_sw")? - a.get("a_uni")?)
            })
            .collect()
    };
    let (b, s) = (gaps(true), gaps(false));
    let (mb, ms) = (mean(&b), mean(&s));
    let (verdict_s, note) = match (mb, ms) {
        (Some(x), Some(y)) => (
            verdict(x < y),
            format!("{} BCE and {} SoftMax runs", b.len(), s.len()),
        ),
        _ => (
            "not judged",
            "needs runs of both a BCE and a SoftMax loss".to_string(),
        ),
    };
    Finding {
        claim: "gap",
        dataset: g.dataset.clone(),
        model: g.model.clone(),
        loss: String::new(),
        run: String::new(),
        evidence: vec![ev("mean gap BCE", mb, 2), ev("mean gap SoftMax", ms, 2)],
        verdict: verdict_s,
        note: g.note(note),
    }
}

fn best_uni(g: &Group) -> Finding {
    // Mean A_Uni per loss, so repeated runs of one loss count once.
    let mut per_loss: Vec<(String, f64)> = Vec::new();
    let mut losses: Vec<String> = g.runs.iter().filter_map(|r| r.loss.clone()).collect();
    losses.sort();
    losses.dedup();
    for l in losses {
        let xs: Vec<f64> = g
            .runs
            .iter()
            .filter(|r| r.loss.as_deref() == Some(&l))
            .filter_map(|r| r.acc(false)?.get("a_uni"))
            .collect();
        if let Some(m) = mean(&xs) {
            per_loss.push((l, m));
        }
    }
    let is_nbce = |l: &str| names::loss_info(l).is_some_and(|i| i.bce && i.normalized);
    let best = per_loss
        .iter()
        .cloned()
        .fold(None::<(String, f64)>, |acc, x| match acc {
            Some(a) if a.1 >= x.1 => Some(a),
            _ => Some(x),
        });
    let best_nbce = per_loss
        .iter()
        .filter(|(l, _)| is_nbce(l))
        .map(|x| x.1)
        .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
    let (v, note) = match (&best, best_nbce) {
        (Some((bl, bv)), Some(nv)) if per_loss.len() >= 2 => (
            verdict(nv >= *bv),
            format!("best: {bl} of {} losses", per_loss.len()),
        ),
        _ => (
            "not judged",
            "needs a normalized BCE run and at least two losses".to_string(),
        ),
    };
    Finding {
        claim: "best-uni",
        dataset: g.dataset.clone(),
        model: g.model.clone(),
        loss: String::new(),
        run: String::new(),
        evidence: vec![
            ev("best A_Uni", best.as_ref().map(|b| b.1), 2),
            ev("best normalized BCE A_Uni", best_nbce, 2),
        ],
        verdict: v,
        note: g.note(note),
    }
}

/// All findings, in a stable order: per-group claims, then per-run claims by run id.
pub fn findings(runs: &[Run]) -> Vec<Finding> {
    let mut out = Vec::new();
    for g in groups(runs) {
        out.push(gap(&g));
        out.push(best_uni(&g));
    }
    for r in runs {
        out.extend(ordering(r));
        out.extend(bias_threshold(r));
    }
    out
}
