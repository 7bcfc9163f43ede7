//! Run-level evidence for the claims of [`super::claims`]: whether the unified bias learned by
//! bce-u / bce-nu sits at the optimal unified threshold (Sec. V-A, Fig. 2), judged per run.
//!
//! In the metrics without bias the bias acts as the threshold τ_b (−b for W·x + b, +b for
//! γcos − b); the optimal threshold there is t*₀ = t* shifted by the same bias, so |τ_b − t*₀|
//! equals |t*| of the metrics with bias. It holds when that distance is within one standard
//! deviation of the per-class extremes (the spread the paper quotes for Fig. 2: max of std of
//! minimum positive and of maximum negative metrics) **and** training brought the bias there:
//! the learned bias must be at most half as far from t*₀ as its start was. A bias that starts
//! near the threshold and barely moves shows nothing learned ("fails"); a run without its
//! initial bias is not judged.

use serde::Serialize;

use super::names;
use super::runs::Run;
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
    /// `bias-threshold`.
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
pub fn bias_threshold(r: &Run) -> Option<Finding> {
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
    let b0 = r
        .bias_init()
        .and_then(|b| if b.len() == 1 { b[0] } else { None });
    let sign = bias_sign(r, info);
    let tau = -sign * b;
    let t0 = t - sign * b;
    let dist = (tau - t0).abs();
    let start_dist = b0.map(|b0| (-sign * b0 - t0).abs());
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
        ev("b0", b0, 3),
        ev("|start difference|", start_dist, 3),
    ];
    match (spread, start_dist) {
        (Some(s), Some(sd)) => {
            f.verdict = verdict(dist <= s && dist <= sd / 2.0);
            if dist <= s && dist > sd / 2.0 {
                f.note = format!(
                    "close to t*₀, but its start b₀ = {:.3} was already {sd:.3} from it: not learned",
                    b0.unwrap_or(f64::NAN)
                );
            }
        }
        (None, _) => f.note = "no distribution statistics to judge 'close' against".into(),
        (_, None) => {
            f.note = "needs the initial bias to tell a learned threshold from its start".into()
        }
    }
    Some(f)
}
