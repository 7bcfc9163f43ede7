//! "Beyond the paper": open-set rejection with the unified threshold. Models trained on some
//! classes (role `openset`) are evaluated with the test images of the classes they never saw;
//! an image is rejected when no class metric exceeds the threshold. Per loss (mean ± sd over
//! seeds): A_SW and A_Uni on the known classes, the unknowns rejected and the known-class
//! accuracy at t* (the optimal unified threshold of the known classes) and at the learned
//! bias (0 on the metrics with bias), and the AUROC of the maximum metric.

use serde::Serialize;

use super::names;
use super::runs::{Role, Run};

#[derive(Serialize, Clone, Debug)]
pub struct Value {
    pub mean: Option<f64>,
    pub sd: Option<f64>,
    pub n: usize,
    /// Not applicable (a column "at the bias" of a loss without a learned bias).
    pub na: bool,
}

fn value(xs: Vec<f64>) -> Value {
    let xs: Vec<f64> = xs.into_iter().filter(|x| x.is_finite()).collect();
    let n = xs.len();
    if n == 0 {
        return Value {
            mean: None,
            sd: None,
            n,
            na: false,
        };
    }
    let m = xs.iter().sum::<f64>() / n as f64;
    let sd = (n >= 2)
        .then(|| (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt());
    Value {
        mean: Some(m),
        sd,
        n,
        na: false,
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub loss: String,
    pub bce: bool,
    /// a_sw, a_uni, rejected@t*, known acc@t*, rejected@bias, known acc@bias, auroc.
    pub values: Vec<Value>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Table {
    pub dataset: String,
    pub model: String,
    pub known: Option<u64>,
    pub unknown: Option<u64>,
    pub rows: Vec<Row>,
}

pub const COLUMNS: [&str; 7] = [
    "A_SW (known)",
    "A_Uni (known)",
    "unknowns rejected at t*",
    "known accuracy at t*",
    "unknowns rejected at the bias",
    "known accuracy at the bias",
    "AUROC of the max metric",
];

fn at(r: &Run, name: &str, f: impl Fn(&super::runs::OpenSetAt) -> Option<f64>) -> Option<f64> {
    let o = r.metrics.as_ref()?.openset.as_ref()?;
    o.at.iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(f)
}

/// One table per dataset and model with open-set runs.
pub fn tables(runs: &[Run]) -> Vec<Table> {
    let os: Vec<&Run> = runs
        .iter()
        .filter(|r| {
            r.role == Role::OpenSet && r.metrics.as_ref().is_some_and(|m| m.openset.is_some())
        })
        .collect();
    let mut keys: Vec<(String, String)> = os
        .iter()
        .map(|r| {
            (
                r.dataset.clone().unwrap_or_default(),
                r.model.clone().unwrap_or_default(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|(d, m)| {
            let here: Vec<&Run> = os
                .iter()
                .copied()
                .filter(|r| r.dataset.as_deref() == Some(&d) && r.model.as_deref() == Some(&m))
                .collect();
            let mut losses: Vec<String> = here.iter().filter_map(|r| r.loss.clone()).collect();
            losses.sort_by(|a, b| names::cmp_in(&names::LOSSES, a, b));
            losses.dedup();
            let first = here[0].metrics.as_ref().and_then(|m| m.openset.as_ref());
            Table {
                known: first.and_then(|o| o.known),
                unknown: first.and_then(|o| o.unknown),
                rows: losses
                    .into_iter()
                    .map(|l| {
                        let rs: Vec<&Run> = here
                            .iter()
                            .copied()
                            .filter(|r| r.loss.as_deref() == Some(&l))
                            .collect();
                        let col = |f: &dyn Fn(&Run) -> Option<f64>| {
                            value(rs.iter().filter_map(|r| f(r)).collect())
                        };
                        // "At the bias" needs a learned bias: n/a for the zero-bias losses.
                        let no_bias = names::loss_info(&l).is_some_and(|i| i.bias == '0');
                        let at_bias = |v: Value| {
                            if no_bias {
                                Value {
                                    mean: None,
                                    sd: None,
                                    n: 0,
                                    na: true,
                                }
                            } else {
                                v
                            }
                        };
                        Row {
                            bce: names::loss_info(&l).is_some_and(|i| i.bce),
                            values: vec![
                                col(&|r| r.acc(false)?.get("a_sw")),
                                col(&|r| r.acc(false)?.get("a_uni")),
                                col(&|r| at(r, "t_star", |a| a.unknown_rejected)),
                                col(&|r| at(r, "t_star", |a| a.known_accuracy)),
                                at_bias(col(&|r| at(r, "bias", |a| a.unknown_rejected))),
                                at_bias(col(&|r| at(r, "bias", |a| a.known_accuracy))),
                                col(&|r| r.metrics.as_ref()?.openset.as_ref()?.auroc),
                            ],
                            loss: l,
                        }
                    })
                    .collect(),
                dataset: d,
                model: m,
            }
        })
        .collect()
}

/// Plain-words reading of one table from its numbers: which family rejects more unknowns at
/// t*, and which ranks them better (AUROC), each judged against 2 × the pooled sd.
pub fn reading(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for (ci, what) in [
        (2usize, "rejects more unknowns at t*"),
        (
            6,
            "separates known from unknown better by the max metric (AUROC)",
        ),
    ] {
        let best = |bce: bool| {
            t.rows
                .iter()
                .filter(|r| r.bce == bce)
                .filter_map(|r| Some((r.loss.clone(), r.values[ci].mean?, r.values[ci].sd)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
        };
        let (Some(b), Some(s)) = (best(true), best(false)) else {
            continue;
        };
        let noise = match (b.2, s.2) {
            (Some(x), Some(y)) => Some(2.0 * ((x * x + y * y) / 2.0).sqrt()),
            _ => None,
        };
        let d = b.1 - s.1;
        let verdict = match noise {
            Some(n) if d.abs() <= n => {
                format!("within noise (difference {d:+.2}, 2 × pooled sd {n:.2})")
            }
            Some(n) => format!(
                "{} (difference {d:+.2} beyond 2 × pooled sd {n:.2})",
                if d > 0.0 { "BCE" } else { "SoftMax" }
            ),
            None => format!(
                "{} by {:.2} (single seed: noise not estimated)",
                if d > 0.0 { "BCE" } else { "SoftMax" },
                d.abs()
            ),
        };
        out.push(format!(
            "Which family {what}: best BCE {} {:.2} vs best SoftMax {} {:.2} — {verdict}.",
            b.0, b.1, s.0, s.1
        ));
    }
    out
}
