//! "Beyond the paper": open-set rejection with the unified threshold. Models trained on some
//! classes (role `openset`) are evaluated with the test images of the classes they never saw;
//! an image is rejected when no class metric exceeds the threshold. Per loss (mean ± sd over
//! seeds): A_SW and A_Uni on the known classes, the unknowns rejected and the known-class
//! accuracy at t* (the optimal unified threshold of the known classes) and at the learned
//! bias (0 on the metrics with bias), the unknowns rejected at the matched operating point
//! (the threshold that accepts 95 % of the known images, the same for every loss), and the
//! AUROC of the maximum metric.
//!
//! t* and the bias leave each loss at its own known-class acceptance, so a loss can reject
//! more unknowns there simply by rejecting more known images too; the reading compares the
//! families at the matched point, where they are comparable, with Welch's t-test on the seeds.

use serde::Serialize;

use super::claims::stats::{Noise, welch_p};
use super::claims::{ALPHA, Stat};
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
    /// a_sw, a_uni, rejected@t*, known acc@t*, rejected@bias, known acc@bias,
    /// rejected@95 % known accepted, auroc.
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

pub const COLUMNS: [&str; 8] = [
    "A_SW (known)",
    "A_Uni (known)",
    "unknowns rejected at t*",
    "known accuracy at t*",
    "unknowns rejected at the bias",
    "known accuracy at the bias",
    "unknowns rejected at 95 % known accepted",
    "AUROC of the max metric",
];

/// Column indexes of [`COLUMNS`] the reading uses.
const REJ_T_STAR: usize = 2;
const ACC_T_STAR: usize = 3;
const REJ_MATCHED: usize = 6;
const AUROC: usize = 7;

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
                                col(&|r| at(r, "known95", |a| a.unknown_rejected)),
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

fn stat(v: &Value) -> Option<Stat> {
    let mean = v.mean?;
    Some(Stat {
        mean,
        sd: v.sd,
        n: v.n,
        noise: v.sd.map(|sd| Noise {
            se: sd / (v.n as f64).sqrt(),
            df: v.n as f64 - 1.0,
        }),
    })
}

/// The best loss of a family (BCE or SoftMax) in column `ci`: (loss, its row).
fn best(t: &Table, bce: bool, ci: usize) -> Option<(&Row, Stat)> {
    t.rows
        .iter()
        .filter(|r| r.bce == bce)
        .filter_map(|r| Some((r, stat(&r.values[ci])?)))
        .max_by(|a, b| a.1.mean.total_cmp(&b.1.mean))
}

/// "BCE" / "SoftMax" / "within noise" for `b − s`, Welch's t-test on the seeds at α; a side
/// with one run says "single seed" in the word.
fn verdict(b: Stat, s: Stat) -> (Option<bool>, String) {
    let d = Stat::diff(b, s);
    let side = if d.mean > 0.0 { "BCE" } else { "SoftMax" };
    match d.noise {
        Some(n) => {
            let p = welch_p(d.mean, 0.0, n);
            if p >= ALPHA {
                (
                    None,
                    format!(
                        "within noise (difference {:+.2}, Welch p = {p:.3}, α = {ALPHA})",
                        d.mean
                    ),
                )
            } else {
                (
                    Some(d.mean > 0.0),
                    format!(
                        "{side} (difference {:+.2}, Welch p = {p:.3}, α = {ALPHA})",
                        d.mean
                    ),
                )
            }
        }
        None => (
            (d.mean != 0.0).then_some(d.mean > 0.0),
            format!(
                "{side}, single seed (difference {:+.2}; noise not estimated)",
                d.mean
            ),
        ),
    }
}

fn pm(s: &Stat) -> String {
    match s.sd {
        Some(sd) => format!("{:.2} ± {sd:.2}", s.mean),
        None => format!("{:.2}", s.mean),
    }
}

/// Plain-words reading of one table from its numbers. First the matched operating point (95 %
/// of the known images accepted, the same for every loss): which family rejects more unknowns
/// there, and — when it is SoftMax beyond noise — that this goes against the paper's
/// motivation for one unified threshold. Then t* (each loss at its own known-class accuracy,
/// named) and the AUROC. Verdicts: Welch's t-test on the seeds, α = [`ALPHA`].
pub fn reading(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some((b, bs)), Some((s, ss))) =
        (best(t, true, REJ_MATCHED), best(t, false, REJ_MATCHED))
    {
        let (winner, v) = verdict(bs, ss);
        let mut line = format!(
            "At the matched operating point (the threshold that accepts 95 % of the known images, so every loss keeps the same share of them), the family that rejects more unknowns: best BCE {} {} vs best SoftMax {} {} — {v}.",
            b.loss,
            pm(&bs),
            s.loss,
            pm(&ss)
        );
        if winner == Some(false) {
            line.push_str(
                " Here our numbers go against the paper's motivation: a SoftMax loss rejects more unknown images than any BCE loss at the same known-class acceptance.",
            );
        }
        out.push(line);
    }
    if let (Some((b, bs)), Some((s, ss))) = (best(t, true, REJ_T_STAR), best(t, false, REJ_T_STAR))
    {
        let (_, v) = verdict(bs, ss);
        let acc = |r: &Row| stat(&r.values[ACC_T_STAR]).map_or_else(|| "—".to_string(), |a| pm(&a));
        out.push(format!(
            "At t* (each loss at its own threshold and so its own known-class accuracy: {} {}, {} {}; not a matched comparison), unknowns rejected: best BCE {} {} vs best SoftMax {} {} — {v}.",
            b.loss,
            acc(b),
            s.loss,
            acc(s),
            b.loss,
            pm(&bs),
            s.loss,
            pm(&ss)
        ));
    }
    if let (Some((b, bs)), Some((s, ss))) = (best(t, true, AUROC), best(t, false, AUROC)) {
        let (_, v) = verdict(bs, ss);
        out.push(format!(
            "Which family separates known from unknown better by the max metric (AUROC, no threshold): best BCE {} {} vs best SoftMax {} {} — {v}.",
            b.loss,
            pm(&bs),
            s.loss,
            pm(&ss)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[f64]) -> Value {
        value(xs.to_vec())
    }

    /// A table of one BCE and one SoftMax loss; `matched` and `t_star` give each loss's
    /// per-seed values of the unknowns rejected there.
    fn table(bce: (&[f64], &[f64]), soft: (&[f64], &[f64])) -> Table {
        let row = |loss: &str, is_bce: bool, (matched, t_star): (&[f64], &[f64])| Row {
            loss: loss.into(),
            bce: is_bce,
            values: vec![
                v(&[90.0]),
                v(&[80.0]),
                v(t_star),
                v(&[70.0, 71.0, 72.0]),
                v(&[]),
                v(&[]),
                v(matched),
                v(&[80.0, 81.0, 82.0]),
            ],
        };
        Table {
            dataset: "d".into(),
            model: "m".into(),
            known: Some(8000),
            unknown: Some(2000),
            rows: vec![row("bce-u", true, bce), row("soft-d", false, soft)],
        }
    }

    #[test]
    fn softmax_ahead_at_the_matched_point_is_said_plainly() {
        let t = table(
            (&[32.0, 33.0, 33.1], &[50.0, 51.0, 52.0]),
            (&[39.0, 38.8, 39.2], &[40.0, 41.0, 42.0]),
        );
        let r = reading(&t);
        assert!(r[0].starts_with("At the matched operating point"), "{r:?}");
        assert!(r[0].contains("— SoftMax (difference"), "{}", r[0]);
        assert!(
            r[0].contains("go against the paper's motivation"),
            "{}",
            r[0]
        );
        // At t* BCE rejects more, but that line says the accuracies differ.
        assert!(r[1].contains("not a matched comparison"), "{}", r[1]);
        assert!(r[1].contains("— BCE (difference"), "{}", r[1]);
        assert!(r[1].contains("Welch p = "), "{}", r[1]);
    }

    #[test]
    fn bce_ahead_or_noise_is_not_called_against_the_paper() {
        let t = table(
            (&[45.0, 46.0, 45.5], &[50.0]),
            (&[39.0, 38.8, 39.2], &[40.0]),
        );
        let r = reading(&t);
        assert!(r[0].contains("— BCE (difference"), "{}", r[0]);
        assert!(!r[0].contains("go against"), "{}", r[0]);
        // Single runs at t*: the verdict word says so.
        assert!(r[1].contains("BCE, single seed"), "{}", r[1]);
        let t = table((&[30.0, 40.0, 35.0], &[1.0]), (&[36.0, 31.0, 38.0], &[1.0]));
        let r = reading(&t);
        assert!(r[0].contains("within noise"), "{}", r[0]);
        assert!(!r[0].contains("go against"), "{}", r[0]);
    }

    #[test]
    fn at_the_bias_is_na_without_a_learned_bias() {
        use crate::report::runs::{Metrics, Run};
        let run = |loss: &str| -> Run {
            let metrics: Metrics = serde_json::from_value(serde_json::json!({
                "openset": {"known": 10, "unknown": 5, "auroc": 70.0, "at": [
                    {"name": "t_star", "threshold": 1.0, "unknown_rejected": 20.0, "known_accuracy": 80.0},
                    {"name": "bias", "threshold": 0.0, "unknown_rejected": 30.0, "known_accuracy": 70.0},
                    {"name": "known95", "threshold": 0.5, "unknown_rejected": 25.0, "known_accuracy": 85.0}
                ]}
            }))
            .unwrap();
            Run {
                id: format!("runs/{loss}"),
                metrics: Some(metrics),
                train: None,
                dataset: Some("d".into()),
                model: Some("m".into()),
                loss: Some(loss.into()),
                gamma: None,
                role: Role::OpenSet,
                bias_init_mode: None,
                seed: Some("0".into()),
                numerics: None,
            }
        };
        let ts = tables(&[run("bce-0"), run("bce-u")]);
        let rows = &ts[0].rows;
        assert_eq!(rows[0].loss, "bce-0");
        assert!(rows[0].values[4].na && rows[0].values[5].na);
        assert_eq!(rows[1].values[4].mean, Some(30.0));
        assert_eq!(rows[0].values[REJ_MATCHED].mean, Some(25.0));
    }
}
