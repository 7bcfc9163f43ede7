//! The check kinds of the claims file, each judging one claim on one source.

use super::*;

pub(super) fn check_compare(
    data: &Data,
    metrics: &[String],
    a: &Side,
    b: &Side,
    margin: f64,
    datasets: &Option<Vec<String>>,
) -> Judgement {
    let mut units = Vec::new();
    for (d, m) in data.units("finetune", datasets) {
        for metric in metrics {
            let side = |s: &Side| -> (Vec<(String, Stat)>, Vec<String>) {
                let mut have = Vec::new();
                let mut missing = Vec::new();
                for l in &s.losses {
                    match data.finetune(&d, &m, l, metric) {
                        Some(st) => have.push((l.clone(), st)),
                        None => missing.push(l.clone()),
                    }
                }
                (have, missing)
            };
            let (ha, ma) = side(a);
            let (hb, mb) = side(b);
            let sc = format!("{}, {}", scope(&d, &m), metric_name(metric));
            if !ma.is_empty() || !mb.is_empty() {
                let mut miss = ma;
                miss.extend(mb);
                units.push(Unit::not_measured(
                    sc,
                    format!("missing runs of {}", miss.join(", ")),
                ));
                continue;
            }
            let (Some((la, sa)), Some((lb, sb))) = (aggregate(&ha, a.agg), aggregate(&hb, b.agg))
            else {
                continue;
            };
            units.push(Unit::difference(data, sc, (sa, sb), margin, false, |d| {
                format!(
                    "{la} {} − {lb} {} = {d:+.2} (needs > {margin})",
                    fmt_stat(&sa, 2),
                    fmt_stat(&sb, 2),
                )
            }));
        }
    }
    combine(
        units,
        &format!("no fine-tuning runs{}", scope_text(datasets)),
    )
}

pub(super) fn check_best(
    data: &Data,
    metrics: &[String],
    winners: &[String],
    datasets: &Option<Vec<String>>,
    except: &[Except],
) -> Judgement {
    let mut units = Vec::new();
    for (d, m) in data.units("finetune", datasets) {
        for metric in metrics {
            if except
                .iter()
                .any(|e| e.dataset == d && e.model == m && &e.metric == metric)
            {
                continue;
            }
            let mut all: Vec<(String, Stat)> = names::LOSSES
                .iter()
                .filter_map(|l| Some((l.to_string(), data.finetune(&d, &m, l, metric)?)))
                .collect();
            all.sort_by(|a, b| b.1.mean.total_cmp(&a.1.mean));
            let sc = format!("{}, {}", scope(&d, &m), metric_name(metric));
            let inn = all.iter().find(|x| winners.contains(&x.0));
            let out = all.iter().find(|x| !winners.contains(&x.0));
            let (Some((li, si)), Some((lo, so))) = (inn, out) else {
                units.push(Unit::not_measured(
                    sc,
                    "needs runs of a listed loss and of another loss",
                ));
                continue;
            };
            units.push(Unit::difference(data, sc, (*si, *so), 0.0, true, |_| {
                format!(
                    "best listed {li} {} vs best other {lo} {} ({} losses)",
                    fmt_stat(si, 2),
                    fmt_stat(so, 2),
                    all.len()
                )
            }));
        }
    }
    combine(
        units,
        &format!("no fine-tuning runs{}", scope_text(datasets)),
    )
}

pub(super) fn check_gamma(
    data: &Data,
    loss: &str,
    metric: &str,
    at: &At,
    margin: f64,
    datasets: &Option<Vec<String>>,
) -> Judgement {
    let mut units = Vec::new();
    for (d, m) in data.units("gamma-sweep", datasets) {
        let recs: Vec<&Rec> = data
            .recs
            .iter()
            .filter(|r| {
                r.role == "gamma-sweep"
                    && r.dataset == d
                    && r.model == m
                    && r.loss == loss
                    && r.metric == metric
                    && r.gamma.is_some()
            })
            .collect();
        if recs.is_empty() {
            continue;
        }
        let best = recs
            .iter()
            .filter_map(|r| Some((r.gamma?, Stat::of(&r.values)?)))
            .max_by(|a, b| a.1.mean.total_cmp(&b.1.mean));
        let Some((gbest, sbest)) = best else { continue };
        let n_classes = data.classes.get(&d).copied();
        let mut variants: Vec<String> = recs.iter().map(|r| r.numerics.clone()).collect();
        variants.sort();
        variants.dedup();
        for var in variants {
            let sc = if data.ours {
                format!("{}, {loss}, {var} loss evaluation", scope(&d, &m))
            } else {
                format!("{}, {loss}", scope(&d, &m))
            };
            let selected = |g: f64| -> Option<bool> {
                match at {
                    At::Min { min } => Some(g >= *min),
                    At::Named(_) => {
                        let n = n_classes? as f64;
                        Some(n >= ((2.0 * g).exp() + 3.0) / 2.0)
                    }
                }
            };
            if matches!(at, At::Named(_)) && n_classes.is_none() {
                units.push(Unit::not_measured(
                    sc,
                    "number of classes unknown (metrics.json has no `classes`)",
                ));
                continue;
            }
            let mut worst: Option<Verdict> = None;
            let mut parts = Vec::new();
            let mut gs: Vec<(f64, Stat)> = recs
                .iter()
                .filter(|r| r.numerics == var)
                .filter_map(|r| Some((r.gamma?, Stat::of(&r.values)?)))
                .filter(|(g, _)| selected(*g) == Some(true))
                .collect();
            gs.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (g, s) in &gs {
                let dst = Stat::diff(sbest, *s);
                let (v, note) = judge_stat(data.ours, dst, margin, false);
                worst = Some(worst.map_or(v, |w| w.max(v)));
                parts.push(format!(
                    "γ={g}: {} {} ({:.2} below the best{note})",
                    metric_name(metric),
                    fmt_stat(s, 2),
                    dst.mean
                ));
            }
            let what = match at {
                At::Min { min } => format!("γ ≥ {min}"),
                At::Named(_) => "γ violating inequality (42)".into(),
            };
            match worst {
                None => units.push(Unit::not_measured(
                    sc,
                    format!("no run at {what} in the sweep"),
                )),
                Some(v) => units.push(Unit {
                    scope: sc,
                    evidence: format!(
                        "best {} {} at γ={gbest}; {}; needs > {margin} below",
                        metric_name(metric),
                        fmt_stat(&sbest, 2),
                        parts.join("; ")
                    ),
                    verdict: v,
                }),
            }
        }
    }
    combine(
        units,
        &format!("no γ-sweep runs of {loss}{}", scope_text(datasets)),
    )
}

pub(super) fn init_stat(
    data: &Data,
    d: &str,
    m: &str,
    l: &str,
    metric: &str,
    stat: InitStat,
) -> Option<(Stat, String)> {
    let at = |mode: u32| {
        data.stat(|r| {
            r.role == "bias-init"
                && r.dataset == d
                && r.model == m
                && r.loss == l
                && r.metric == metric
                && r.mode == Some(mode)
        })
    };
    // Mode 0 is the default initialisation: the fine-tuning run unless a bias-init run has it.
    let m0 = at(0).or_else(|| data.finetune(d, m, l, metric));
    let others: Vec<(u32, Stat)> = (1..=7).filter_map(|k| Some((k, at(k)?))).collect();
    if others.is_empty() {
        return None;
    }
    match stat {
        InitStat::Drop => {
            let m0 = m0?;
            let (kw, w) = others
                .iter()
                .min_by(|a, b| a.1.mean.total_cmp(&b.1.mean))
                .copied()?;
            Some((
                Stat::diff(m0, w),
                format!("{l}: mode 0 {:.2} − mode {kw} {:.2}", m0.mean, w.mean),
            ))
        }
        InitStat::Mean => {
            let v: Vec<Stat> = others.iter().map(|x| x.1).collect();
            let st = Stat::mean_of(&v)?;
            Some((
                st,
                format!(
                    "{l}: mean over modes {:?} {:.2}",
                    others.iter().map(|x| x.0).collect::<Vec<_>>(),
                    st.mean
                ),
            ))
        }
    }
}

pub(super) fn check_init(
    data: &Data,
    metric: &str,
    stat: InitStat,
    pairs: &[[String; 2]],
    margin: f64,
    datasets: &Option<Vec<String>>,
) -> Judgement {
    let mut units = Vec::new();
    for (d, m) in data.units("bias-init", datasets) {
        for [a, b] in pairs {
            let sc = format!("{}, {a} vs {b}", scope(&d, &m));
            match (
                init_stat(data, &d, &m, a, metric, stat),
                init_stat(data, &d, &m, b, metric, stat),
            ) {
                (Some((sa, ea)), Some((sb, eb))) => {
                    units.push(Unit::difference(data, sc, (sa, sb), margin, false, |d| {
                        format!("{ea}; {eb}; difference {d:+.2} (needs > {margin})")
                    }))
                }
                _ => units.push(Unit::not_measured(
                    sc,
                    "needs bias-initialisation runs of both losses",
                )),
            }
        }
    }
    combine(
        units,
        &format!("no bias-initialisation runs{}", scope_text(datasets)),
    )
}

pub(super) fn check_bias_change(
    data: &Data,
    losses: &[String],
    bound: f64,
    datasets: &Option<Vec<String>>,
) -> Judgement {
    let mut units = Vec::new();
    for (d, m) in data.units("bias-init", datasets) {
        for l in losses {
            for mode in 1..=7u32 {
                let Some(s) = data.stat(|r| {
                    r.role == "bias-init"
                        && r.dataset == d
                        && r.model == m
                        && &r.loss == l
                        && r.mode == Some(mode)
                        && r.metric == "bias_change_mean"
                }) else {
                    continue;
                };
                // Table XI prints the mean and the standard deviation of the per-class
                // changes; the SoftMax losses' bias gradient sums to zero over the classes, so
                // their mean change is ~0 by construction: the spread is what can be large.
                let spread = data.stat(|r| {
                    r.role == "bias-init"
                        && r.dataset == d
                        && r.model == m
                        && &r.loss == l
                        && r.mode == Some(mode)
                        && r.metric == "bias_change_std"
                });
                let sc = format!("{}, {l}, mode {mode}", scope(&d, &m));
                let Some(sp) = spread else {
                    units.push(Unit::not_measured(
                        sc,
                        format!(
                            "mean change {} × 10⁻³, but the spread of the per-class changes is missing",
                            fmt_stat(&s, 1)
                        ),
                    ));
                    continue;
                };
                let (vm, nm) = judge_stat(data.ours, abs_stat(s).below(bound), 0.0, false);
                let (vs, ns) = judge_stat(data.ours, sp.below(bound), 0.0, false);
                let ns = if ns == nm { String::new() } else { ns };
                units.push(Unit {
                    scope: sc,
                    evidence: format!(
                        "change {} ± {} × 10⁻³ (mean ± sd over classes; needs both < {bound}){nm}{ns}",
                        fmt_stat(&s, 1),
                        fmt_stat(&sp, 1),
                    ),
                    verdict: vm.max(vs),
                });
            }
        }
    }
    combine(
        units,
        &format!(
            "no bias-initialisation runs with initial and final biases{}",
            scope_text(datasets)
        ),
    )
}

pub(super) fn check_softmax(
    data: &Data,
    metrics: &[String],
    within: Option<f64>,
    above: Option<f64>,
    datasets: &Option<Vec<String>>,
) -> Judgement {
    let mut units = Vec::new();
    for (d, m) in data.units("finetune", datasets) {
        for metric in metrics {
            for l in names::LOSSES {
                let Some(s) = data.finetune(&d, &m, l, &format!("smdelta:{metric}")) else {
                    continue;
                };
                let ((v, note), need) = match (within, above) {
                    (Some(w), _) => (
                        judge_stat(data.ours, abs_stat(s).below(w), 0.0, true),
                        format!("|·| ≤ {w}"),
                    ),
                    (None, Some(a)) => (judge_stat(data.ours, s, a, false), format!("> {a}")),
                    _ => ((Verdict::NotMeasured, String::new()), String::new()),
                };
                units.push(Unit {
                    scope: format!("{}, {l}, {}", scope(&d, &m), metric_name(metric)),
                    evidence: format!(
                        "after SoftMax − without = {} (needs {need}){note}",
                        fmt_stat(&s, 2)
                    ),
                    verdict: v,
                });
            }
        }
    }
    combine(
        units,
        &format!(
            "no fine-tuning runs evaluated after SoftMax{}",
            scope_text(datasets)
        ),
    )
}

pub(super) fn check_bias_threshold(
    data: &Data,
    losses: &[String],
    text: &[TextValue],
) -> Judgement {
    let mut units = Vec::new();
    if !data.ours {
        for t in text {
            let dist = (t.bias - t.threshold).abs();
            let sc = format!("{}, {} (paper text)", scope(&t.dataset, &t.model), t.loss);
            match t.spread {
                Some(s) => {
                    // Where the start is given, the learned bias must also be at most half as
                    // far from t*₀ as its start was (see `findings`).
                    let (learned, start) = match t.start {
                        Some(b0) => {
                            let sd = (b0 - t.threshold).abs();
                            (
                                dist <= sd / 2.0,
                                format!("; start b₀ = {b0} was {sd:.3} from it (needs ≥ 2 × {dist:.3})"),
                            )
                        }
                        None => (true, "; the paper prints no start".to_string()),
                    };
                    units.push(Unit {
                        scope: sc,
                        evidence: format!(
                            "|b − t*₀| = |{} − ({})| = {dist:.3} ≤ spread {s}?{start}",
                            t.bias, t.threshold
                        ),
                        verdict: if learned {
                            judge(s - dist, 0.0, true)
                        } else {
                            Verdict::Fails
                        },
                    })
                }
                None => units.push(Unit::not_measured(
                    sc,
                    format!(
                        "|b − t*₀| = {dist:.3}; the paper prints no class-wise spread to judge it against"
                    ),
                )),
            }
        }
        return combine(units, "the paper prints these values only in the text");
    }
    // Ours: per (dataset, model, loss), every seed's run judged; mixed seeds are within noise.
    let mut keys: Vec<(String, String, String)> = data
        .bias
        .iter()
        .filter(|f| losses.contains(&f.loss))
        .map(|f| (f.dataset.clone(), f.model.clone(), f.loss.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    for (d, m, l) in keys {
        let fs: Vec<&findings::Finding> = data
            .bias
            .iter()
            .filter(|f| f.dataset == d && f.model == m && f.loss == l)
            .collect();
        let judged: Vec<&findings::Finding> = fs
            .iter()
            .copied()
            .filter(|f| f.verdict != "not judged")
            .collect();
        let holds = judged.iter().filter(|f| f.verdict == "holds").count();
        let dists: Vec<f64> = judged
            .iter()
            .filter_map(|f| ev_of(f, "|difference|"))
            .collect();
        let spreads: Vec<f64> = judged.iter().filter_map(|f| ev_of(f, "spread")).collect();
        let starts: Vec<f64> = judged
            .iter()
            .filter_map(|f| ev_of(f, "|start difference|"))
            .collect();
        let v = if judged.is_empty() {
            Verdict::NotMeasured
        } else if holds == judged.len() {
            Verdict::Holds
        } else if holds == 0 {
            Verdict::Fails
        } else {
            Verdict::WithinNoise
        };
        let v = if judged.len() == 1 {
            v.single_seed()
        } else {
            v
        };
        let evidence = if judged.is_empty() {
            fs.iter()
                .map(|f| f.note.clone())
                .find(|n| !n.is_empty())
                .unwrap_or_else(|| {
                    "needs the learned and initial unified bias, t* and the distribution statistics"
                        .into()
                })
        } else {
            format!(
                "holds for {holds} of {} seeds; |b − t*₀| {} vs class-wise spread {} and vs its start's |b₀ − t*₀| {}",
                judged.len(),
                Stat::of(&dists).map_or("—".into(), |s| fmt_stat(&s, 3)),
                Stat::of(&spreads).map_or("—".into(), |s| fmt_stat(&s, 3)),
                Stat::of(&starts).map_or("—".into(), |s| fmt_stat(&s, 3)),
            )
        };
        units.push(Unit {
            scope: format!("{}, {l}", scope(&d, &m)),
            evidence,
            verdict: v,
        });
    }
    combine(units, "no fine-tuning runs of bce-u / bce-nu")
}

pub(super) fn ev_of(f: &findings::Finding, label: &str) -> Option<f64> {
    f.evidence
        .iter()
        .find(|e| e.label == label)
        .and_then(|e| e.value)
}

/// |x| of a cell, its noise kept (for bounds on a magnitude).
pub(super) fn abs_stat(s: Stat) -> Stat {
    Stat {
        mean: s.mean.abs(),
        ..s
    }
}

pub(super) fn check_bound(
    data: &Data,
    losses: &[String],
    max: &BTreeMap<String, f64>,
    datasets: &Option<Vec<String>>,
) -> Judgement {
    let mut units = Vec::new();
    for (d, m) in data.units("finetune", datasets) {
        for (metric, bound) in max {
            for l in losses {
                let sc = format!("{}, {l}, {}", scope(&d, &m), metric_name(metric));
                let Some(s) = data.finetune(&d, &m, l, metric) else {
                    units.push(Unit::not_measured(sc, format!("missing runs of {l}")));
                    continue;
                };
                units.push(Unit::tested(
                    data,
                    sc,
                    s.below(*bound),
                    0.0,
                    true,
                    format!("{} (needs ≤ {bound})", fmt_stat(&s, 2)),
                ));
            }
        }
    }
    combine(
        units,
        &format!("no fine-tuning runs{}", scope_text(datasets)),
    )
}

pub(super) fn check_gamma_compare(
    data: &Data,
    a: &str,
    b: &str,
    (from, to): (f64, f64),
    margins: &BTreeMap<String, f64>,
    datasets: &Option<Vec<String>>,
) -> Judgement {
    let mut units = Vec::new();
    for (d, m) in data.units("gamma-sweep", datasets) {
        let at = |loss: &str, metric: &str, g: f64| {
            data.stat(|r| {
                r.role == "gamma-sweep"
                    && r.dataset == d
                    && r.model == m
                    && r.loss == loss
                    && r.metric == metric
                    && r.gamma == Some(g)
                    && r.numerics != "direct"
            })
        };
        let mut gammas: Vec<f64> = data
            .recs
            .iter()
            .filter(|r| r.role == "gamma-sweep" && r.dataset == d && r.model == m)
            .filter_map(|r| r.gamma)
            .filter(|g| (from..=to).contains(g))
            .collect();
        gammas.sort_by(|x, y| x.total_cmp(y));
        gammas.dedup();
        for (metric, margin) in margins {
            for &g in &gammas {
                let sc = format!("{}, γ={g}, {}", scope(&d, &m), metric_name(metric));
                match (at(a, metric, g), at(b, metric, g)) {
                    (Some(sa), Some(sb)) => {
                        units.push(Unit::difference(data, sc, (sa, sb), *margin, false, |x| {
                            format!(
                                "{a} {} − {b} {} = {x:+.2} (needs > {margin})",
                                fmt_stat(&sa, 2),
                                fmt_stat(&sb, 2)
                            )
                        }))
                    }
                    (sa, _) => units.push(Unit::not_measured(
                        sc,
                        format!(
                            "missing the γ-sweep run of {}",
                            if sa.is_none() { a } else { b }
                        ),
                    )),
                }
            }
        }
    }
    combine(
        units,
        &format!(
            "no γ-sweep runs of {a} and {b} in γ ∈ [{from}, {to}]{}",
            scope_text(datasets)
        ),
    )
}
