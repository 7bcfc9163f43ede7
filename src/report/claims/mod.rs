//! The paper's claims, read from `stages/claims.yaml` (data: the paper's words, where it says
//! them, and a machine check), each judged twice: on the paper's own published tables and on
//! our runs.
//!
//! Both sources are first turned into the same flat list of [`Rec`]ords (one per printed
//! cell, or per group of runs that differ only in their seed), so one evaluator judges both.
//! On our runs a difference that Welch's t-test on the seeds cannot tell from the margin
//! (two-sided, p ≥ α = 0.05; see [`stats`]) is "within noise"; a cell of one run says
//! "single seed" in its verdict; a claim whose runs are missing is "not measured" and names them. Nothing
//! is softened: one failing scope makes the claim fail.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::findings;
use super::names;
use super::published::Published;
use super::runs::Run;

/// The built-in copy of `stages/claims.yaml` (a workspace's own file takes precedence).
pub const BUILTIN: &str = include_str!("../../../stages/claims.yaml");

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
    /// The bias's start b₀, where the paper gives it.
    #[serde(default)]
    pub start: Option<f64>,
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
    /// Every listed loss's value of each metric at most its bound.
    Bound {
        losses: Vec<String>,
        max: BTreeMap<String, f64>,
        #[serde(default)]
        datasets: Option<Vec<String>>,
    },
    /// Over the γ sweep, at every γ in [from, to] run for both: a − b > margin per metric.
    GammaCompare {
        a: String,
        b: String,
        from: f64,
        to: f64,
        margins: BTreeMap<String, f64>,
        #[serde(default)]
        datasets: Option<Vec<String>>,
    },
    /// A distribution statistic of the first loss of each pair below the second's (Fig. 2).
    Smaller {
        metric: String,
        pairs: Vec<[String; 2]>,
        #[serde(default)]
        text: Vec<TextMetric>,
    },
    /// Fig. 3: the share of classes whose learned bias separates the positive from the type II
    /// negative metrics is larger for the first loss of each pair (bias-initialisation runs).
    TypeTwo {
        pairs: Vec<[String; 2]>,
        modes: Vec<u32>,
        #[serde(default)]
        datasets: Option<Vec<String>>,
    },
}

/// A value the paper prints only in its text.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TextMetric {
    pub dataset: String,
    pub model: String,
    pub loss: String,
    pub value: f64,
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
        if let Check::BiasThreshold { losses, .. } = &c.check {
            for l in losses {
                anyhow::ensure!(
                    names::loss_info(l).is_some_and(|i| i.bias == 'u'),
                    "{name}: claim '{}': {l} has no learned unified bias to read as a threshold",
                    c.id
                );
            }
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

mod checks;
mod data;
mod distribution;
pub mod stats;

use checks::*;
use data::{Data, Rec, published_data, runs_data};
pub use stats::{ALPHA, Stat};

// ---------------------------------------------------------------------------------------------
// Verdicts.

/// A verdict. On our runs a cell of one run has no noise estimate: its verdict says "single
/// seed" in the word itself, so no reader takes it for a tested difference. Ordered from best
/// to worst (a claim takes its worst scope's verdict).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    #[serde(rename = "holds")]
    Holds,
    #[serde(rename = "holds (single seed)")]
    HoldsSingleSeed,
    #[serde(rename = "within noise")]
    WithinNoise,
    #[serde(rename = "fails (single seed)")]
    FailsSingleSeed,
    #[serde(rename = "fails")]
    Fails,
    #[serde(rename = "not measured")]
    NotMeasured,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::HoldsSingleSeed => "holds (single seed)",
            Verdict::WithinNoise => "within noise",
            Verdict::FailsSingleSeed => "fails (single seed)",
            Verdict::Fails => "fails",
            Verdict::NotMeasured => "not measured",
        }
    }

    /// The same verdict, marked as resting on a single seed.
    fn single_seed(self) -> Verdict {
        match self {
            Verdict::Holds => Verdict::HoldsSingleSeed,
            Verdict::Fails => Verdict::FailsSingleSeed,
            v => v,
        }
    }

    pub fn holds(self) -> bool {
        matches!(self, Verdict::Holds | Verdict::HoldsSingleSeed)
    }

    pub fn fails(self) -> bool {
        matches!(self, Verdict::Fails | Verdict::FailsSingleSeed)
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

    /// `a − b` judged against `margin` by Welch's t-test on the seeds; `evidence` states
    /// the values (it is handed the difference), and the test's p is appended.
    fn difference(
        data: &Data,
        scope: String,
        (a, b): (Stat, Stat),
        margin: f64,
        ties: bool,
        evidence: impl FnOnce(f64) -> String,
    ) -> Unit {
        let d = Stat::diff(a, b);
        let evidence = evidence(d.mean);
        Unit::tested(data, scope, d, margin, ties, evidence)
    }

    /// A value (with its noise) judged against `margin`: holds when above it.
    fn tested(
        data: &Data,
        scope: String,
        d: Stat,
        margin: f64,
        ties: bool,
        mut evidence: String,
    ) -> Unit {
        let (verdict, note) = judge_stat(data.ours, d, margin, ties);
        evidence.push_str(&note);
        Unit {
            scope,
            evidence,
            verdict,
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

/// `d` against `margin` without noise: holds when `d > margin` (`d ≥ margin` with `ties`).
fn judge(d: f64, margin: f64, ties: bool) -> Verdict {
    if d > margin || (ties && d >= margin) {
        Verdict::Holds
    } else {
        Verdict::Fails
    }
}

/// A value with its noise against `margin`, and the note that says how it was judged: within
/// noise when Welch's test cannot tell it from the margin (p ≥ α); on our runs without a noise
/// estimate the verdict says "single seed". The paper's cells never had seeds: no note.
fn judge_stat(ours: bool, d: Stat, margin: f64, ties: bool) -> (Verdict, String) {
    let plain = judge(d.mean, margin, ties);
    match d.noise {
        Some(n) if ours || d.n > 1 => {
            let p = stats::welch_p(d.mean, margin, n);
            let note = format!("; Welch p = {} (α = {ALPHA})", fmt_p(p));
            if p >= ALPHA {
                (Verdict::WithinNoise, note)
            } else {
                (plain, note)
            }
        }
        _ if ours => (
            plain.single_seed(),
            "; single seed, noise not estimated".into(),
        ),
        _ => (plain, String::new()),
    }
}

fn fmt_p(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
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
        "gap_cw" => "A_SW − A_CW",
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
    // The worst measured scope decides (a failure on one seed is still a failure).
    let verdict = measured
        .iter()
        .map(|u| u.verdict)
        .max()
        .unwrap_or(Verdict::NotMeasured);
    let mut parts = Vec::new();
    for v in [
        Verdict::Holds,
        Verdict::HoldsSingleSeed,
        Verdict::WithinNoise,
        Verdict::FailsSingleSeed,
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
        .filter(|u| u.verdict.fails() || u.verdict == Verdict::WithinNoise)
        .take(4)
        .map(|u| format!("{} [{}]: {}", u.scope, u.verdict.as_str(), u.evidence))
        .collect();
    if !bad.is_empty() {
        summary.push_str(" — ");
        summary.push_str(&bad.join("; "));
        let more = units
            .iter()
            .filter(|u| u.verdict.fails() || u.verdict == Verdict::WithinNoise)
            .count()
            .saturating_sub(4);
        if more > 0 {
            summary.push_str(&format!("; and {more} more"));
        }
    } else if let Some(u) = units.iter().find(|u| u.verdict.holds()) {
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
            let only: Vec<Stat> = stats.iter().map(|s| s.1).collect();
            Some((format!("mean of {}", stats.len()), Stat::mean_of(&only)?))
        }
    }
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
        Check::Bound {
            losses,
            max,
            datasets,
        } => check_bound(data, losses, max, datasets),
        Check::GammaCompare {
            a,
            b,
            from,
            to,
            margins,
            datasets,
        } => check_gamma_compare(data, a, b, (*from, *to), margins, datasets),
        Check::Smaller {
            metric,
            pairs,
            text,
        } => distribution::check_smaller(data, metric, pairs, text),
        Check::TypeTwo {
            pairs,
            modes,
            datasets,
        } => distribution::check_type_two(data, pairs, modes, datasets),
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
mod tests;
