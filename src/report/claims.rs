//! The paper's claims, read from `stages/claims.yaml` (data: the paper's words, where it says
//! them, and a machine check), each judged twice: on the paper's own published tables and on
//! our runs.
//!
//! Both sources are first turned into the same flat list of [`Rec`]ords (one per printed
//! cell, or per group of runs that differ only in their seed), so one evaluator judges both.
//! On our runs a difference within 2 × the pooled standard deviation over seeds of the margin
//! is "within noise"; a claim whose runs are missing is "not measured" and names them. Nothing
//! is softened: one failing scope makes the claim fail.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::findings;
use super::names;
use super::published::Published;
use super::runs::{Role, Run};
use super::tables;

/// The built-in copy of `stages/claims.yaml` (a workspace's own file takes precedence).
pub const BUILTIN: &str = include_str!("../../stages/claims.yaml");

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ClaimFile {
    pub claims: Vec<ClaimSpec>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ClaimSpec {
    pub id: String,
    pub quote: String,
    #[serde(rename = "where")]
    pub location: String,
    pub check: Check,
    /// The printed cells that contradict the claim, where the paper's own numbers do.
    #[serde(default)]
    pub contradicted_by: Vec<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Side {
    pub losses: Vec<String>,
    pub agg: Agg,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    Min,
    Max,
    Mean,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Except {
    pub dataset: String,
    pub model: String,
    pub metric: String,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum At {
    Min { min: f64 },
    Named(String),
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum InitStat {
    Drop,
    Mean,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TextValue {
    pub dataset: String,
    pub model: String,
    pub loss: String,
    pub bias: f64,
    pub threshold: f64,
    pub spread: Option<f64>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    Compare {
        metrics: Vec<String>,
        a: Side,
        b: Side,
        margin: f64,
        #[serde(default)]
        datasets: Option<Vec<String>>,
    },
    Best {
        metrics: Vec<String>,
        winners: Vec<String>,
        #[serde(default)]
        datasets: Option<Vec<String>>,
        #[serde(default)]
        except: Vec<Except>,
    },
    GammaDrop {
        loss: String,
        metric: String,
        at: At,
        margin: f64,
        #[serde(default)]
        datasets: Option<Vec<String>>,
    },
    Init {
        metric: String,
        stat: InitStat,
        pairs: Vec<[String; 2]>,
        margin: f64,
        #[serde(default)]
        datasets: Option<Vec<String>>,
    },
    BiasChange {
        losses: Vec<String>,
        bound: f64,
        #[serde(default)]
        datasets: Option<Vec<String>>,
    },
    Softmax {
        metrics: Vec<String>,
        #[serde(default)]
        within: Option<f64>,
        #[serde(default)]
        above: Option<f64>,
        #[serde(default)]
        datasets: Option<Vec<String>>,
    },
    BiasThreshold {
        losses: Vec<String>,
        text: Vec<TextValue>,
    },
}

/// Parse a claims file; `name` is shown in errors (serde's line and column follow it).
pub fn parse(name: &str, text: &str) -> Result<Vec<ClaimSpec>> {
    let f: ClaimFile = serde_yaml_ng::from_str(text).with_context(|| {
        format!("{name}: not a claims file (claims: [{{id, quote, where, check}}])")
    })?;
    let mut seen = std::collections::BTreeSet::new();
    for c in &f.claims {
        anyhow::ensure!(
            seen.insert(c.id.clone()),
            "{name}: claim id '{}' appears twice",
            c.id
        );
        if let Check::GammaDrop {
            at: At::Named(s), ..
        } = &c.check
        {
            anyhow::ensure!(
                s == "eq42_fails",
                "{name}: claim '{}': `at` is '{s}'; expected eq42_fails or {{min: γ}}",
                c.id
            );
        }
        if let Check::Softmax { within, above, .. } = &c.check {
            anyhow::ensure!(
                within.is_some() != above.is_some(),
                "{name}: claim '{}': give exactly one of `within` and `above`",
                c.id
            );
        }
    }
    Ok(f.claims)
}

/// `stages/claims.yaml` of the workspace if present, else the built-in copy.
pub fn load(ws: &Path, path: Option<&Path>) -> Result<Vec<ClaimSpec>> {
    let p = match path {
        Some(p) => Some(ws.join(p)),
        None => Some(ws.join("stages/claims.yaml")).filter(|p| p.is_file()),
    };
    match p {
        Some(p) => {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            parse(&p.display().to_string(), &text)
        }
        None => parse("(built-in) stages/claims.yaml", BUILTIN),
    }
}

// ---------------------------------------------------------------------------------------------
// The common data of both sources.

/// A value over repeated runs (seeds): mean, sample standard deviation (n ≥ 2), count.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub mean: f64,
    pub sd: Option<f64>,
    pub n: usize,
}

impl Stat {
    fn of(xs: &[f64]) -> Option<Stat> {
        let xs: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        if xs.is_empty() {
            return None;
        }
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let sd = (n >= 2).then(|| {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt()
        });
        Some(Stat { mean, sd, n })
    }
}

/// Pooled standard deviation √(mean of s²) of the cells a verdict rests on; `None` when one
/// of them has a single run (no noise estimate).
fn pooled(stats: &[Stat]) -> Option<f64> {
    let mut s2 = 0.0;
    for s in stats {
        s2 += s.sd?.powi(2);
    }
    (!stats.is_empty()).then(|| (s2 / stats.len() as f64).sqrt())
}

/// One cell: a metric of one (dataset, model, loss, role, …), with its values over seeds.
#[derive(Clone, Debug)]
struct Rec {
    dataset: String,
    model: String,
    loss: String,
    role: &'static str,
    /// `a_sw`, `a_cw`, `a_uni`, `gap`, `sm:<metric>` (after SoftMax), `smdelta:<metric>`
    /// (after SoftMax minus without, per run), `bias_change_mean`.
    metric: String,
    gamma: Option<f64>,
    mode: Option<u32>,
    /// `stable` (default) or `direct` (see the train option `numerics`); `paper` for
    /// published cells.
    numerics: String,
    values: Vec<f64>,
}

struct Data {
    recs: Vec<Rec>,
    classes: BTreeMap<String, usize>,
    /// Run-level bias-threshold findings (ours only).
    bias: Vec<findings::Finding>,
    ours: bool,
}

impl Data {
    fn stat(&self, f: impl Fn(&Rec) -> bool) -> Option<Stat> {
        let v: Vec<f64> = self
            .recs
            .iter()
            .filter(|r| f(r))
            .flat_map(|r| r.values.iter().copied())
            .collect();
        Stat::of(&v)
    }

    fn units(&self, role: &str, datasets: &Option<Vec<String>>) -> Vec<(String, String)> {
        let mut u: Vec<(String, String)> = self
            .recs
            .iter()
            .filter(|r| r.role == role)
            .filter(|r| datasets.as_ref().is_none_or(|d| d.contains(&r.dataset)))
            .map(|r| (r.dataset.clone(), r.model.clone()))
            .collect();
        u.sort_by(|a, b| {
            names::cmp_in(&names::DATASETS, &a.0, &b.0)
                .then_with(|| names::cmp_in(&names::MODELS, &a.1, &b.1))
        });
        u.dedup();
        u
    }

    fn finetune(&self, d: &str, m: &str, loss: &str, metric: &str) -> Option<Stat> {
        self.stat(|r| {
            r.role == "finetune"
                && r.dataset == d
                && r.model == m
                && r.loss == loss
                && r.metric == metric
        })
    }
}

fn published_data(p: &Published) -> Data {
    let recs = p
        .cells
        .iter()
        .filter_map(|c| {
            let v = c.value?;
            let value = v * c.unit.map(|u| u / 1e-3).unwrap_or(1.0);
            let metric = if c.softmax {
                format!("sm:{}", c.metric)
            } else {
                c.metric.clone()
            };
            let role: &'static str = match c.role.as_str() {
                "finetune" => "finetune",
                "gamma-sweep" => "gamma-sweep",
                "bias-init" => "bias-init",
                _ => "other",
            };
            Some(Rec {
                dataset: c.dataset.clone(),
                model: c.model.clone(),
                loss: c.loss.clone(),
                role,
                metric,
                gamma: c.gamma,
                mode: c.bias_init_mode,
                numerics: "paper".into(),
                values: vec![value],
            })
        })
        .collect::<Vec<_>>();
    let mut data = Data {
        recs,
        // Table IV of the paper.
        classes: [
            ("imagenet-1k", 1000),
            ("cub", 200),
            ("aircraft", 100),
            ("flowers102", 102),
            ("cars", 196),
            ("dogs", 120),
        ]
        .iter()
        .map(|(d, n)| (d.to_string(), *n))
        .collect(),
        bias: Vec::new(),
        ours: false,
    };
    // Derived cells, as for our runs: the gap and the SoftMax deltas.
    let mut extra = Vec::new();
    for r in data.recs.iter().filter(|r| r.metric == "a_sw") {
        let other = |metric: &str| {
            data.recs.iter().find(|x| {
                x.metric == metric
                    && x.dataset == r.dataset
                    && x.model == r.model
                    && x.loss == r.loss
                    && x.role == r.role
                    && x.gamma == r.gamma
                    && x.mode == r.mode
            })
        };
        if let Some(u) = other("a_uni") {
            extra.push(Rec {
                metric: "gap".into(),
                values: vec![r.values[0] - u.values[0]],
                ..r.clone()
            });
        }
    }
    for r in data.recs.iter().filter(|r| r.metric.starts_with("sm:")) {
        let base = &r.metric[3..];
        if let Some(x) = data.recs.iter().find(|x| {
            x.metric == base
                && x.dataset == r.dataset
                && x.model == r.model
                && x.loss == r.loss
                && x.role == r.role
        }) {
            extra.push(Rec {
                metric: format!("smdelta:{base}"),
                values: vec![r.values[0] - x.values[0]],
                ..r.clone()
            });
        }
    }
    data.recs.extend(extra);
    data
}

fn runs_data(runs: &[Run]) -> Data {
    // Group runs that differ only in their seed.
    let mut groups: BTreeMap<String, (Rec, Vec<&Run>)> = BTreeMap::new();
    let mut classes = BTreeMap::new();
    for r in runs.iter().filter(|r| r.metrics.is_some()) {
        let (Some(d), Some(m), Some(l)) = (&r.dataset, &r.model, &r.loss) else {
            continue;
        };
        if let Some(n) = r.metrics.as_ref().and_then(|m| m.classes) {
            classes.insert(d.clone(), n as usize);
        }
        let role: &'static str = match r.role {
            Role::Finetune => "finetune",
            Role::GammaSweep => "gamma-sweep",
            Role::BiasInit => "bias-init",
            Role::Pretrain => "pretrain",
            Role::OpenSet => "openset",
        };
        let numerics = r.numerics.clone().unwrap_or_else(|| "stable".into());
        let key = format!(
            "{d}|{m}|{l}|{role}|{:?}|{:?}|{numerics}",
            r.gamma.filter(|_| role == "gamma-sweep"),
            r.bias_init_mode
        );
        let e = groups.entry(key).or_insert_with(|| {
            (
                Rec {
                    dataset: d.clone(),
                    model: m.clone(),
                    loss: l.clone(),
                    role,
                    metric: String::new(),
                    gamma: r.gamma,
                    mode: r.bias_init_mode,
                    numerics,
                    values: Vec::new(),
                },
                Vec::new(),
            )
        });
        e.1.push(r);
    }
    let mut recs = Vec::new();
    type Getter = Box<dyn Fn(&Run) -> Option<f64>>;
    let mut getters: Vec<(String, Getter)> = Vec::new();
    for m in ["a_sw", "a_cw", "a_uni", "t_star"] {
        getters.push((m.into(), Box::new(move |r: &Run| r.acc(false)?.get(m))));
        getters.push((
            format!("sm:{m}"),
            Box::new(move |r: &Run| r.acc(true)?.get(m)),
        ));
        getters.push((
            format!("smdelta:{m}"),
            Box::new(move |r: &Run| Some(r.acc(true)?.get(m)? - r.acc(false)?.get(m)?)),
        ));
    }
    getters.push((
        "gap".into(),
        Box::new(|r: &Run| {
            let a = r.acc(false)?;
            Some(a.get("a_sw")? - a.get("a_uni")?)
        }),
    ));
    getters.push((
        "bias_change_mean".into(),
        Box::new(|r: &Run| tables::bias_change(r).map(|x| x.0)),
    ));
    for (rec, rs) in groups.values() {
        for (metric, g) in &getters {
            let values: Vec<f64> = rs.iter().filter_map(|r| g(r)).collect();
            if !values.is_empty() {
                recs.push(Rec {
                    metric: metric.clone(),
                    values,
                    ..rec.clone()
                });
            }
        }
    }
    let bias = runs
        .iter()
        .filter(|r| r.role == Role::Finetune)
        .filter_map(findings::bias_threshold)
        .collect();
    Data {
        recs,
        classes,
        bias,
        ours: true,
    }
}

// ---------------------------------------------------------------------------------------------
// Verdicts.

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    #[serde(rename = "holds")]
    Holds,
    #[serde(rename = "within noise")]
    WithinNoise,
    #[serde(rename = "fails")]
    Fails,
    #[serde(rename = "not measured")]
    NotMeasured,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::WithinNoise => "within noise",
            Verdict::Fails => "fails",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One scope (dataset, model, metric, …) of a claim.
#[derive(Serialize, Clone, Debug)]
pub struct Unit {
    pub scope: String,
    pub evidence: String,
    pub verdict: Verdict,
}

impl Unit {
    fn not_measured(scope: String, why: impl Into<String>) -> Unit {
        Unit {
            scope,
            evidence: why.into(),
            verdict: Verdict::NotMeasured,
        }
    }

    /// `a − b` judged against `margin` with the two sides' pooled noise; `evidence` states
    /// the values (it is handed the difference). On our runs a missing noise estimate is
    /// said, since a verdict from one seed each cannot tell a real gap from luck.
    fn difference(
        data: &Data,
        scope: String,
        (a, b): (Stat, Stat),
        margin: f64,
        ties: bool,
        evidence: impl FnOnce(f64) -> String,
    ) -> Unit {
        let d = a.mean - b.mean;
        let sd = pooled(&[a, b]);
        let mut evidence = evidence(d);
        if data.ours && sd.is_none() {
            evidence.push_str("; single seed, noise not estimated");
        }
        Unit {
            scope,
            evidence,
            verdict: judge(d, margin, sd, ties),
        }
    }
}

/// A claim judged on one source.
#[derive(Serialize, Clone, Debug)]
pub struct Judgement {
    pub verdict: Verdict,
    /// One line: counts of the scopes' verdicts, or what is missing.
    pub summary: String,
    pub units: Vec<Unit>,
}

#[derive(Serialize, Clone, Debug)]
pub struct ClaimResult {
    pub id: String,
    pub quote: String,
    pub location: String,
    pub contradicted_by: Vec<String>,
    pub paper: Judgement,
    pub ours: Judgement,
}

/// `d` against `margin`: holds when `d > margin` (`d ≥ margin` with `ties`), within noise
/// when `|d − margin| ≤ 2·sd`.
fn judge(d: f64, margin: f64, sd: Option<f64>, ties: bool) -> Verdict {
    if let Some(s) = sd
        && (d - margin).abs() <= 2.0 * s
    {
        return Verdict::WithinNoise;
    }
    if d > margin || (ties && d >= margin) {
        Verdict::Holds
    } else {
        Verdict::Fails
    }
}

fn fmt_stat(s: &Stat, digits: usize) -> String {
    match s.sd {
        Some(sd) => format!("{:.*} ± {:.*} (n={})", digits, s.mean, digits, sd, s.n),
        None if s.n > 1 => format!("{:.*} (n={})", digits, s.mean, s.n),
        None => format!("{:.*}", digits, s.mean),
    }
}

fn metric_name(m: &str) -> &str {
    match m {
        "a_sw" => "A_SW",
        "a_cw" => "A_CW",
        "a_uni" => "A_Uni",
        "gap" => "A_SW − A_Uni",
        "t_star" => "t*",
        other => other,
    }
}

fn scope(d: &str, m: &str) -> String {
    format!("{}, {}", names::dataset_display(d), names::model_display(m))
}

fn combine(units: Vec<Unit>, missing: &str) -> Judgement {
    let measured: Vec<&Unit> = units
        .iter()
        .filter(|u| u.verdict != Verdict::NotMeasured)
        .collect();
    if measured.is_empty() {
        let summary = if units.is_empty() {
            format!("not measured: {missing}")
        } else {
            format!(
                "not measured: {}",
                units
                    .iter()
                    .map(|u| format!("{} ({})", u.scope, u.evidence))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        return Judgement {
            verdict: Verdict::NotMeasured,
            summary,
            units,
        };
    }
    let count = |v: Verdict| units.iter().filter(|u| u.verdict == v).count();
    let verdict = if count(Verdict::Fails) > 0 {
        Verdict::Fails
    } else if count(Verdict::WithinNoise) > 0 {
        Verdict::WithinNoise
    } else {
        Verdict::Holds
    };
    let mut parts = Vec::new();
    for v in [
        Verdict::Holds,
        Verdict::WithinNoise,
        Verdict::Fails,
        Verdict::NotMeasured,
    ] {
        let n = count(v);
        if n > 0 {
            parts.push(format!("{n} {}", v.as_str()));
        }
    }
    let mut summary = format!(
        "{} of {} scopes: {}",
        measured.len(),
        units.len(),
        parts.join(", ")
    );
    // Name the scopes that do not hold (the ones a reader must see).
    let bad: Vec<String> = units
        .iter()
        .filter(|u| matches!(u.verdict, Verdict::Fails | Verdict::WithinNoise))
        .take(4)
        .map(|u| format!("{} [{}]: {}", u.scope, u.verdict.as_str(), u.evidence))
        .collect();
    if !bad.is_empty() {
        summary.push_str(" — ");
        summary.push_str(&bad.join("; "));
        let more = units
            .iter()
            .filter(|u| matches!(u.verdict, Verdict::Fails | Verdict::WithinNoise))
            .count()
            .saturating_sub(4);
        if more > 0 {
            summary.push_str(&format!("; and {more} more"));
        }
    } else if let Some(u) = units.iter().find(|u| u.verdict == Verdict::Holds) {
        summary.push_str(&format!(" — e.g. {}: {}", u.scope, u.evidence));
    }
    Judgement {
        verdict,
        summary,
        units,
    }
}

fn scope_text(datasets: &Option<Vec<String>>) -> String {
    match datasets {
        Some(d) => format!(
            " on {}",
            d.iter()
                .map(|x| names::dataset_display(x))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => String::new(),
    }
}

fn aggregate(stats: &[(String, Stat)], agg: Agg) -> Option<(String, Stat)> {
    if stats.is_empty() {
        return None;
    }
    match agg {
        Agg::Max => stats
            .iter()
            .cloned()
            .reduce(|a, b| if b.1.mean > a.1.mean { b } else { a }),
        Agg::Min => stats
            .iter()
            .cloned()
            .reduce(|a, b| if b.1.mean < a.1.mean { b } else { a }),
        Agg::Mean => {
            let k = stats.len() as f64;
            let mean = stats.iter().map(|s| s.1.mean).sum::<f64>() / k;
            let only: Vec<Stat> = stats.iter().map(|s| s.1).collect();
            Some((
                format!("mean of {}", stats.len()),
                Stat {
                    mean,
                    sd: pooled(&only),
                    n: only.iter().map(|s| s.n).min().unwrap_or(1),
                },
            ))
        }
    }
}

fn check_compare(
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

fn check_best(
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

fn check_gamma(
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
                let dval = sbest.mean - s.mean;
                let sd = pooled(&[sbest, *s]);
                let v = judge(dval, margin, sd, false);
                worst = Some(worst.map_or(v, |w| w.max(v)));
                parts.push(format!(
                    "γ={g}: {} {} ({:.2} below the best)",
                    metric_name(metric),
                    fmt_stat(s, 2),
                    dval
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

fn init_stat(
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
                Stat {
                    mean: m0.mean - w.mean,
                    sd: pooled(&[m0, w]),
                    n: m0.n.min(w.n),
                },
                format!("{l}: mode 0 {:.2} − mode {kw} {:.2}", m0.mean, w.mean),
            ))
        }
        InitStat::Mean => {
            let v: Vec<Stat> = others.iter().map(|x| x.1).collect();
            let mean = v.iter().map(|s| s.mean).sum::<f64>() / v.len() as f64;
            Some((
                Stat {
                    mean,
                    sd: pooled(&v),
                    n: v.iter().map(|s| s.n).min().unwrap_or(1),
                },
                format!(
                    "{l}: mean over modes {:?} {:.2}",
                    others.iter().map(|x| x.0).collect::<Vec<_>>(),
                    mean
                ),
            ))
        }
    }
}

fn check_init(
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

fn check_bias_change(
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
                units.push(Unit {
                    scope: format!("{}, {l}, mode {mode}", scope(&d, &m)),
                    evidence: format!(
                        "mean change {} × 10⁻³ (needs |·| < {bound})",
                        fmt_stat(&s, 1)
                    ),
                    verdict: judge(bound - s.mean.abs(), 0.0, s.sd, false),
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

fn check_softmax(
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
                let (v, need) = match (within, above) {
                    (Some(w), _) => (
                        judge(w - s.mean.abs(), 0.0, s.sd, true),
                        format!("|·| ≤ {w}"),
                    ),
                    (None, Some(a)) => (judge(s.mean, a, s.sd, false), format!("> {a}")),
                    _ => (Verdict::NotMeasured, String::new()),
                };
                units.push(Unit {
                    scope: format!("{}, {l}, {}", scope(&d, &m), metric_name(metric)),
                    evidence: format!(
                        "after SoftMax − without = {} (needs {need})",
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

fn check_bias_threshold(data: &Data, losses: &[String], text: &[TextValue]) -> Judgement {
    let mut units = Vec::new();
    if !data.ours {
        for t in text {
            let dist = (t.bias - t.threshold).abs();
            let sc = format!("{}, {} (paper text)", scope(&t.dataset, &t.model), t.loss);
            match t.spread {
                Some(s) => units.push(Unit {
                    scope: sc,
                    evidence: format!(
                        "|b − t*₀| = |{} − ({})| = {dist:.3} ≤ spread {s}?",
                        t.bias, t.threshold
                    ),
                    verdict: judge(s - dist, 0.0, None, true),
                }),
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
        let v = if judged.is_empty() {
            Verdict::NotMeasured
        } else if holds == judged.len() {
            Verdict::Holds
        } else if holds == 0 {
            Verdict::Fails
        } else {
            Verdict::WithinNoise
        };
        let evidence = if judged.is_empty() {
            "needs the learned unified bias, t* and the distribution statistics".to_string()
        } else {
            format!(
                "holds for {holds} of {} seeds; |b − t*₀| {} vs class-wise spread {}",
                judged.len(),
                Stat::of(&dists).map_or("—".into(), |s| fmt_stat(&s, 3)),
                Stat::of(&spreads).map_or("—".into(), |s| fmt_stat(&s, 3)),
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

fn ev_of(f: &findings::Finding, label: &str) -> Option<f64> {
    f.evidence
        .iter()
        .find(|e| e.label == label)
        .and_then(|e| e.value)
}

fn judge_on(data: &Data, c: &ClaimSpec) -> Judgement {
    match &c.check {
        Check::Compare {
            metrics,
            a,
            b,
            margin,
            datasets,
        } => check_compare(data, metrics, a, b, *margin, datasets),
        Check::Best {
            metrics,
            winners,
            datasets,
            except,
        } => check_best(data, metrics, winners, datasets, except),
        Check::GammaDrop {
            loss,
            metric,
            at,
            margin,
            datasets,
        } => check_gamma(data, loss, metric, at, *margin, datasets),
        Check::Init {
            metric,
            stat,
            pairs,
            margin,
            datasets,
        } => check_init(data, metric, *stat, pairs, *margin, datasets),
        Check::BiasChange {
            losses,
            bound,
            datasets,
        } => check_bias_change(data, losses, *bound, datasets),
        Check::Softmax {
            metrics,
            within,
            above,
            datasets,
        } => check_softmax(data, metrics, *within, *above, datasets),
        Check::BiasThreshold { losses, text } => check_bias_threshold(data, losses, text),
    }
}

/// Every claim judged on the published tables and on the runs.
pub fn evaluate(specs: &[ClaimSpec], published: &Published, runs: &[Run]) -> Vec<ClaimResult> {
    let paper = published_data(published);
    let ours = runs_data(runs);
    specs
        .iter()
        .map(|c| ClaimResult {
            id: c.id.clone(),
            quote: c.quote.clone(),
            location: c.location.clone(),
            contradicted_by: c.contradicted_by.clone(),
            paper: judge_on(&paper, c),
            ours: judge_on(&ours, c),
        })
        .collect()
}

/// The construction-only check of inequality (26), A_Uni ≤ A_CW ≤ A_SW, as a sanity line
/// (the metric tests cover it; it is no finding about the paper).
#[derive(Serialize, Clone, Debug)]
pub struct Sanity {
    pub runs: usize,
    pub holding: usize,
    pub failing: Vec<String>,
}

pub fn ordering_sanity(runs: &[Run]) -> Sanity {
    let mut s = Sanity {
        runs: 0,
        holding: 0,
        failing: Vec::new(),
    };
    for r in runs {
        let Some(a) = r.acc(false) else { continue };
        let (Some(sw), Some(cw), Some(uni)) = (a.get("a_sw"), a.get("a_cw"), a.get("a_uni")) else {
            continue;
        };
        s.runs += 1;
        if uni <= cw + 1e-9 && cw <= sw + 1e-9 {
            s.holding += 1;
        } else {
            s.failing.push(r.id.clone());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared difference verdict: judged on the pooled noise, and on our runs it says
    /// when there is none to judge by.
    #[test]
    fn a_difference_is_judged_on_pooled_noise_and_says_when_there_is_none() {
        let data = |ours| Data {
            recs: Vec::new(),
            classes: BTreeMap::new(),
            bias: Vec::new(),
            ours,
        };
        let stat = |mean, sd| Stat { mean, sd, n: 3 };
        let unit = |ours, a, b, ties| {
            Unit::difference(&data(ours), "s".into(), (a, b), 1.0, ties, |d| {
                format!("d={d}")
            })
        };
        let u = unit(true, stat(3.0, None), stat(1.0, None), false);
        assert_eq!(u.verdict, Verdict::Holds);
        assert_eq!(u.evidence, "d=2; single seed, noise not estimated");
        // The paper's cells never had seeds to count: no note.
        let u = unit(false, stat(3.0, None), stat(1.0, None), false);
        assert_eq!((u.verdict, u.evidence.as_str()), (Verdict::Holds, "d=2"));
        // |2 − 1| ≤ 2·0.5: within noise, and no note when the noise is known.
        let u = unit(true, stat(3.0, Some(0.5)), stat(1.0, Some(0.5)), false);
        assert_eq!(
            (u.verdict, u.evidence.as_str()),
            (Verdict::WithinNoise, "d=2")
        );
        // A difference of exactly the margin holds only where ties count.
        assert_eq!(
            unit(false, stat(2.0, None), stat(1.0, None), false).verdict,
            Verdict::Fails
        );
        assert_eq!(
            unit(false, stat(2.0, None), stat(1.0, None), true).verdict,
            Verdict::Holds
        );
        let u = Unit::not_measured("s".into(), "why");
        assert_eq!(
            (u.verdict, u.evidence.as_str()),
            (Verdict::NotMeasured, "why")
        );
    }

    fn builtin() -> Vec<ClaimSpec> {
        parse("stages/claims.yaml", BUILTIN).unwrap()
    }

    /// Every claim, checked on the paper's own tables, holds — unless the claims file names
    /// the printed cells that contradict it, and then it must indeed fail there.
    #[test]
    fn every_claim_holds_on_the_published_tables_or_is_marked_contradicted() {
        let p = Published::builtin().unwrap();
        let res = evaluate(&builtin(), &p, &[]);
        assert!(res.len() >= 14, "claims missing: {}", res.len());
        for r in &res {
            if r.contradicted_by.is_empty() {
                assert_eq!(
                    r.paper.verdict,
                    Verdict::Holds,
                    "claim {} does not hold on the published tables: {}",
                    r.id,
                    r.paper.summary
                );
            } else {
                assert_eq!(
                    r.paper.verdict,
                    Verdict::Fails,
                    "claim {} is marked contradicted but holds on the published tables: {}",
                    r.id,
                    r.paper.summary
                );
            }
            // Without runs nothing is measured, and the reason names what is missing.
            assert_eq!(r.ours.verdict, Verdict::NotMeasured, "{}", r.id);
            assert!(
                r.ours.summary.starts_with("not measured: "),
                "{}",
                r.ours.summary
            );
        }
    }

    #[test]
    fn the_contradicting_cells_are_the_ones_named() {
        let p = Published::builtin().unwrap();
        let res = evaluate(&builtin(), &p, &[]);
        let sw = res.iter().find(|r| r.id == "bce-higher-sw").unwrap();
        let failing: Vec<&str> = sw
            .paper
            .units
            .iter()
            .filter(|u| u.verdict == Verdict::Fails)
            .map(|u| u.scope.as_str())
            .collect();
        assert_eq!(failing.len(), 2, "{failing:?}");
        assert!(
            failing
                .iter()
                .any(|s| s.contains("Aircraft") && s.contains("DenseNet161"))
        );
        assert!(
            failing
                .iter()
                .any(|s| s.contains("Dogs") && s.contains("DenseNet161"))
        );
        let bc = res.iter().find(|r| r.id == "bias-change-small").unwrap();
        let failing: Vec<&Unit> = bc
            .paper
            .units
            .iter()
            .filter(|u| u.verdict == Verdict::Fails)
            .collect();
        assert_eq!(failing.len(), 1);
        assert!(
            failing[0].scope.contains("soft-nd, mode 1"),
            "{}",
            failing[0].scope
        );
    }

    #[test]
    fn a_check_can_fail_and_noise_is_respected() {
        assert_eq!(judge(0.5, 0.0, None, false), Verdict::Holds);
        assert_eq!(judge(-0.5, 0.0, None, false), Verdict::Fails);
        assert_eq!(judge(0.0, 0.0, None, false), Verdict::Fails);
        assert_eq!(judge(0.0, 0.0, None, true), Verdict::Holds);
        assert_eq!(judge(0.5, 0.0, Some(0.3), false), Verdict::WithinNoise);
        assert_eq!(judge(0.7, 0.0, Some(0.3), false), Verdict::Holds);
        assert_eq!(judge(-0.7, 0.0, Some(0.3), false), Verdict::Fails);
        let p = pooled(&[
            Stat {
                mean: 0.0,
                sd: Some(3.0),
                n: 3,
            },
            Stat {
                mean: 0.0,
                sd: Some(4.0),
                n: 3,
            },
        ])
        .unwrap();
        assert!((p - 12.5f64.sqrt()).abs() < 1e-12);
        assert!(
            pooled(&[Stat {
                mean: 0.0,
                sd: None,
                n: 1
            }])
            .is_none()
        );
    }

    #[test]
    fn bad_claim_files_are_rejected_with_the_place() {
        let e = parse(
            "c.yaml",
            "claims:\n  - id: x\n    quote: q\n    where: w\n    check: {kind: nope}\n",
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("c.yaml") && msg.contains("line"), "{msg}");
        let twice = "claims:\n  - {id: x, quote: q, where: w, check: {kind: bias_change, losses: [a], bound: 1}}\n  - {id: x, quote: q, where: w, check: {kind: bias_change, losses: [a], bound: 1}}\n";
        assert!(format!("{:#}", parse("c.yaml", twice).unwrap_err()).contains("twice"));
    }

    /// The quotes are the paper's words: each occurs in the paper's text where that is at hand
    /// (the project's shared copy; the repository does not ship the paper).
    #[test]
    fn quotes_are_verbatim_where_the_paper_text_is_present() {
        let p = std::path::Path::new(
            "/work/shared/paper/rediscovering-bce-loss-for-uniform-classification.txt",
        );
        let Ok(text) = std::fs::read_to_string(p) else {
            eprintln!("paper text not present; quotes not compared");
            return;
        };
        for c in builtin() {
            // " [...] " marks text skipped where the paper's text flows around a table.
            for part in c.quote.split(" [...] ") {
                assert!(
                    text.contains(part),
                    "claim {}: quote not in the paper: {part}",
                    c.id
                );
            }
        }
    }
}
