//! Claims about the distributions of the positive and negative metrics (Figs. 2 and 3): the
//! overlap of the two and the spread of the positive metrics, and the separation of the
//! positive from the type II negative metrics by the learned per-class biases.

use super::super::findings;
use super::super::names;
use super::super::runs::Run;
use super::*;

/// Fig. 3: the share (in %) of classes whose learned bias, read as a threshold on the metrics
/// without bias, lies strictly between the class's largest type II negative metric and its
/// smallest positive metric (it separates the two). `None` without per-class biases and
/// distribution statistics.
pub(super) fn type_two_separated(r: &Run) -> Option<f64> {
    let info = names::loss_info(r.loss.as_deref()?)?;
    let b = r.bias_final()?;
    let dist = r.dist(false)?;
    if b.len() < 2 || dist.min_pos.len() != b.len() || dist.max_neg_type2.len() != b.len() {
        return None;
    }
    let sign = findings::bias_sign(r, info);
    let mut judged = 0usize;
    let mut separated = 0usize;
    for ((bi, pos), neg) in b.iter().zip(&dist.min_pos).zip(&dist.max_neg_type2) {
        let (Some(bi), Some(pos), Some(neg)) = (bi, pos, neg) else {
            continue;
        };
        judged += 1;
        let tau = -sign * bi;
        if *neg < tau && tau < *pos {
            separated += 1;
        }
    }
    (judged > 0).then(|| 100.0 * separated as f64 / judged as f64)
}

fn stat_name(metric: &str) -> &str {
    match metric {
        "overlap_width" => "width of the overlap of positive and negative metrics",
        "pos_spread" => "spread (sd over classes) of the minimum positive metrics",
        other => other,
    }
}

/// a's `metric` below b's, for each pair: on our fine-tuning runs, or on the values the paper
/// prints in its text.
pub(super) fn check_smaller(
    data: &Data,
    metric: &str,
    pairs: &[[String; 2]],
    text: &[TextMetric],
) -> Judgement {
    let mut units = Vec::new();
    if !data.ours {
        let mut keys: Vec<(&str, &str)> = text
            .iter()
            .map(|t| (t.dataset.as_str(), t.model.as_str()))
            .collect();
        keys.dedup();
        for (d, m) in keys {
            for [a, b] in pairs {
                let val = |l: &str| {
                    text.iter()
                        .find(|t| t.dataset == d && t.model == m && t.loss == l)
                        .map(|t| t.value)
                };
                let sc = format!("{}, {a} vs {b} (paper text)", scope(d, m));
                match (val(a), val(b)) {
                    (Some(x), Some(y)) => units.push(Unit {
                        scope: sc,
                        evidence: format!("{}: {a} {x} < {b} {y}?", stat_name(metric)),
                        verdict: judge(y - x, 0.0, false),
                    }),
                    _ => units.push(Unit::not_measured(
                        sc,
                        format!("the paper prints no {} for them", stat_name(metric)),
                    )),
                }
            }
        }
        return combine(
            units,
            &format!("the paper prints no {} (figure only)", stat_name(metric)),
        );
    }
    for (d, m) in data.units("finetune", &None) {
        for [a, b] in pairs {
            let sc = format!("{}, {a} vs {b}", scope(&d, &m));
            match (
                data.finetune(&d, &m, a, metric),
                data.finetune(&d, &m, b, metric),
            ) {
                (Some(sa), Some(sb)) => {
                    units.push(Unit::difference(data, sc, (sb, sa), 0.0, false, |x| {
                        format!(
                            "{}: {a} {} vs {b} {} ({x:+.3} smaller; needs > 0)",
                            stat_name(metric),
                            fmt_stat(&sa, 3),
                            fmt_stat(&sb, 3)
                        )
                    }))
                }
                (None, None) => {}
                _ => units.push(Unit::not_measured(
                    sc,
                    format!("needs the {} of both", stat_name(metric)),
                )),
            }
        }
    }
    combine(
        units,
        &format!(
            "no fine-tuning runs with the {} of both losses",
            stat_name(metric)
        ),
    )
}

/// Fig. 3: for each pair and mode, the share of classes separated by their learned biases
/// (see [`type_two_separated`]) is larger for the first loss.
pub(super) fn check_type_two(
    data: &Data,
    pairs: &[[String; 2]],
    modes: &[u32],
    datasets: &Option<Vec<String>>,
) -> Judgement {
    let mut units = Vec::new();
    if !data.ours {
        return combine(units, "Fig. 3 prints no numbers (figure only)");
    }
    for (d, m) in data.units("bias-init", datasets) {
        for [a, b] in pairs {
            for &mode in modes {
                let at = |l: &str| {
                    data.stat(|r| {
                        r.role == "bias-init"
                            && r.dataset == d
                            && r.model == m
                            && r.loss == l
                            && r.mode == Some(mode)
                            && r.metric == "type2_sep"
                    })
                };
                let sc = format!("{}, {a} vs {b}, mode {mode}", scope(&d, &m));
                match (at(a), at(b)) {
                    (Some(sa), Some(sb)) => {
                        units.push(Unit::difference(data, sc, (sa, sb), 0.0, false, |x| {
                            format!(
                                "classes whose bias separates positive from type II negative metrics: {a} {} % vs {b} {} % ({x:+.1}; needs > 0)",
                                fmt_stat(&sa, 1),
                                fmt_stat(&sb, 1)
                            )
                        }))
                    }
                    _ => units.push(Unit::not_measured(
                        sc,
                        "needs bias-initialisation runs of both with per-class biases and type II negative metrics",
                    )),
                }
            }
        }
    }
    combine(
        units,
        &format!(
            "no bias-initialisation runs{} to measure it on",
            scope_text(datasets)
        ),
    )
}
