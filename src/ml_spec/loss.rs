//! The names of the twelve losses of Table I and the parts of their definition that are plain
//! numbers (bias initialisations), without libtorch: the engine validates a `train` stage with
//! these, and `repro-torch` builds the tensors from them.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};

/// SoftMax (cross-entropy) or BCE (N binary tasks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Formula {
    Soft,
    Bce,
}

/// `W_iᵀx` or `γ·cos(W_i, x)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classifier {
    Linear,
    Normalized,
}

/// Zero bias, one bias per class (diverse), or one bias for all classes (unified).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasMode {
    Zero,
    Diverse,
    Unified,
}

/// One of the twelve losses, e.g. `bce-nu` = BCE, normalized classifier, unified bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossKind {
    pub formula: Formula,
    pub classifier: Classifier,
    pub bias: BiasMode,
}

/// The twelve names, in the order of Table I.
pub const LOSS_NAMES: [&str; 12] = [
    "soft-0", "soft-d", "soft-u", "soft-n0", "soft-nd", "soft-nu", "bce-0", "bce-d", "bce-u",
    "bce-n0", "bce-nd", "bce-nu",
];

impl FromStr for LossKind {
    type Err = anyhow::Error;
    fn from_str(name: &str) -> Result<Self> {
        let Some((f, rest)) = name.split_once('-') else {
            bail!(
                "unknown loss '{name}' (expected one of {})",
                LOSS_NAMES.join(", ")
            )
        };
        let formula = match f {
            "soft" => Formula::Soft,
            "bce" => Formula::Bce,
            _ => bail!(
                "unknown loss '{name}' (expected one of {})",
                LOSS_NAMES.join(", ")
            ),
        };
        let (classifier, b) = match rest.strip_prefix('n') {
            Some(b) => (Classifier::Normalized, b),
            None => (Classifier::Linear, rest),
        };
        let bias = match b {
            "0" => BiasMode::Zero,
            "d" => BiasMode::Diverse,
            "u" => BiasMode::Unified,
            _ => bail!(
                "unknown loss '{name}' (expected one of {})",
                LOSS_NAMES.join(", ")
            ),
        };
        Ok(LossKind {
            formula,
            classifier,
            bias,
        })
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let formula = match self.formula {
            Formula::Soft => "soft",
            Formula::Bce => "bce",
        };
        let n = if self.classifier == Classifier::Normalized {
            "n"
        } else {
            ""
        };
        let b = match self.bias {
            BiasMode::Zero => "0",
            BiasMode::Diverse => "d",
            BiasMode::Unified => "u",
        };
        write!(f, "{formula}-{n}{b}")
    }
}

/// The diverse-bias initialisations of Section V-B (Table X), for N classes; index `i-1` holds
/// `b_i`. Mode 0 (the default, random with mean zero) is drawn by [`Head::new`] and returns
/// `None` here. Class indices are 1-based in the paper; the interval conditions of modes 6 and
/// 7 are evaluated exactly (`i ≤ N/4` ⇔ `4i ≤ N`, `N/2 ≤ i ≤ 3N/4` ⇔ `N ≤ 2i ∧ 4i ≤ 3N`).
pub fn diverse_bias_init(mode: u8, n: usize) -> Result<Option<Vec<f64>>> {
    let nf = n as f64;
    let in_quarters = |i: usize| 4 * i <= n || (n <= 2 * i && 4 * i <= 3 * n);
    let v: Vec<f64> = match mode {
        0 => return Ok(None),
        1 => (1..=n).map(|i| i as f64).collect(),
        2 => (1..=n).map(|i| 64.0 * i as f64 / nf).collect(),
        3 => (1..=n).map(|i| 64.0 * (n - i) as f64 / nf).collect(),
        4 => (1..=n).map(|i| (96.0 * i as f64).ln()).collect(),
        5 => (1..=n).map(|i| (96.0 * (n + 1 - i) as f64).ln()).collect(),
        6 => (1..=n)
            .map(|i| {
                if in_quarters(i) {
                    (96.0 * nf).ln()
                } else {
                    0.0
                }
            })
            .collect(),
        7 => (1..=n)
            .map(|i| {
                if in_quarters(i) {
                    0.0
                } else {
                    (96.0 * nf).ln()
                }
            })
            .collect(),
        _ => bail!("bias_mode {mode} does not exist: use 0 (random, mean zero) or 1–7 (Table X)"),
    };
    Ok(Some(v))
}

/// Default initial value of the unified bias: the stationary point of the BCE loss in `b` when
/// every metric without bias is 0 (the state of a fresh head, cos ≈ 0 or Wx ≈ 0). That is
/// Eq. (45) with A = B = 0, b = log(N−1), so training starts with balanced positive and
/// negative gradients instead of a bias pulled hard one way. The linear classifier adds the
/// bias (Eq. 56) where the normalized one subtracts it (Eq. 59), hence the sign. SoftMax is
/// invariant to a unified bias (Section IV-D), so 0 there.
pub fn default_unified_bias(kind: LossKind, classes: usize) -> f64 {
    let t = ((classes.max(2) - 1) as f64).ln();
    match (kind.formula, kind.classifier) {
        (Formula::Soft, _) => 0.0,
        (Formula::Bce, Classifier::Linear) => -t,
        (Formula::Bce, Classifier::Normalized) => t,
    }
}

/// Where the unified bias starts (`unified_bias_init`): a number, or a rule of the number of
/// classes N. `log10n` is the start of the UCE loss (the paper's reference [6], whose normalised
/// BCE loss is bce-nu): the bias that makes every sigmoid start at 1/(10·N) for a metric of 0,
/// i.e. b₀ = ln(10·N) subtracted by the normalized classifier (γcos − b); the linear classifier
/// (W·x + b) starts at 0, where Fig. 2's learned −0.08 points (docs/training.md has the
/// arithmetic from Table III, Fig. 2 and Section V-A).
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum BiasStart {
    Value(f64),
    Rule(BiasRule),
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub enum BiasRule {
    /// ln(10·N) for the normalized classifier, 0 for the linear one.
    #[serde(rename = "log10n")]
    Log10N,
    /// ±log(N−1): [`default_unified_bias`].
    #[serde(rename = "balanced")]
    Balanced,
}

impl BiasStart {
    /// The start for `kind` with `classes` classes.
    pub fn value(self, kind: LossKind, classes: usize) -> f64 {
        match self {
            BiasStart::Value(v) => v,
            BiasStart::Rule(BiasRule::Balanced) => default_unified_bias(kind, classes),
            BiasStart::Rule(BiasRule::Log10N) => match (kind.formula, kind.classifier) {
                (Formula::Bce, Classifier::Normalized) => (10.0 * classes.max(1) as f64).ln(),
                _ => 0.0,
            },
        }
    }
}

/// Default scale of the normalized classifier (Section V: γ = 96).
pub const DEFAULT_GAMMA: f64 = 96.0;

#[cfg(test)]
mod tests {
    use super::*;
    /// Table III's γ = 256/512 rows (no update): t* = γτ − b₀ solves to b₀ = 9.21 = ln(10·1000).
    #[test]
    fn log10n_is_the_start_table_iii_implies() {
        let nu: LossKind = "bce-nu".parse().unwrap();
        let b0 = BiasStart::Rule(BiasRule::Log10N).value(nu, 1000);
        let tau = (160.95 - 75.87) / (512.0 - 256.0);
        let from_table = 256.0 * tau - 75.87;
        assert!(
            (b0 - 9.2103).abs() < 1e-3 && (from_table - b0).abs() < 0.01,
            "{b0} {from_table}"
        );
        let u: LossKind = "bce-u".parse().unwrap();
        assert_eq!(BiasStart::Rule(BiasRule::Log10N).value(u, 1000), 0.0);
        assert_eq!(BiasStart::Value(1.5).value(nu, 1000), 1.5);
        let parsed: BiasStart = serde_json::from_str("\"log10n\"").unwrap();
        assert_eq!(parsed, BiasStart::Rule(BiasRule::Log10N));
        let parsed: BiasStart = serde_json::from_str("0").unwrap();
        assert_eq!(parsed, BiasStart::Value(0.0));
        assert!(serde_json::from_str::<BiasStart>("\"ln\"").is_err());
    }

    #[test]
    fn names_round_trip() {
        for name in LOSS_NAMES {
            let k: LossKind = name.parse().unwrap();
            assert_eq!(k.to_string(), name);
        }
        assert!("bce-x".parse::<LossKind>().is_err());
        assert!("soft".parse::<LossKind>().is_err());
    }

    #[test]
    fn unified_default_is_stationary_for_fresh_head() {
        // With all metrics 0, d/db of BCE vanishes at the default.
        let n = 10;
        for name in ["bce-u", "bce-nu"] {
            let kind: LossKind = name.parse().unwrap();
            let b = default_unified_bias(kind, n);
            let s = if kind.classifier == Classifier::Linear {
                1.0
            } else {
                -1.0
            };
            let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
            // positive: softplus(−s b), negatives: softplus(s b)
            let d = -s * sig(-s * b) + (n as f64 - 1.0) * s * sig(s * b);
            assert!(d.abs() < 1e-12, "{name}: {d}");
        }
    }
}
