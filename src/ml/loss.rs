//! The twelve losses of Table I (Eqs. 48–59): a classifier head (linear or normalized, with
//! zero, diverse or unified bias) that turns features into classification metrics, and the
//! SoftMax or BCE formula applied to those metrics.
//!
//! Sign conventions follow Table I exactly: the linear classifier's metric is `W_iᵀx + b_i`,
//! the normalized one's is `γ·cos(W_i, x) − b_i`. The metric *with* its bias is what the
//! evaluation sees (`logits`); the metric without it is kept as `logits_nobias`. Both formulas
//! are written on the metric `c` with bias, so every loss of the table is one of
//!
//! * SoftMax (48–53): `−log(e^{c_y} / Σ_j e^{c_j})`, via log-sum-exp;
//! * BCE (54–59): `log(1+e^{−c_y}) + Σ_{j≠y} log(1+e^{c_j})`, via softplus,
//!
//! summed over classes and averaged over the batch. Both are computed without overflow for any
//! finite metric (softplus(z) = z for large z, log-sum-exp subtracts the maximum).

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use tch::{Kind, Tensor, nn};

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
            bail!("unknown loss '{name}' (expected one of {})", LOSS_NAMES.join(", "))
        };
        let formula = match f {
            "soft" => Formula::Soft,
            "bce" => Formula::Bce,
            _ => bail!("unknown loss '{name}' (expected one of {})", LOSS_NAMES.join(", ")),
        };
        let (classifier, b) = match rest.strip_prefix('n') {
            Some(b) => (Classifier::Normalized, b),
            None => (Classifier::Linear, rest),
        };
        let bias = match b {
            "0" => BiasMode::Zero,
            "d" => BiasMode::Diverse,
            "u" => BiasMode::Unified,
            _ => bail!("unknown loss '{name}' (expected one of {})", LOSS_NAMES.join(", ")),
        };
        Ok(LossKind { formula, classifier, bias })
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let formula = match self.formula {
            Formula::Soft => "soft",
            Formula::Bce => "bce",
        };
        let n = if self.classifier == Classifier::Normalized { "n" } else { "" };
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
        6 => (1..=n).map(|i| if in_quarters(i) { (96.0 * nf).ln() } else { 0.0 }).collect(),
        7 => (1..=n).map(|i| if in_quarters(i) { 0.0 } else { (96.0 * nf).ln() }).collect(),
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

/// Default scale of the normalized classifier (Section V: γ = 96).
pub const DEFAULT_GAMMA: f64 = 96.0;

/// The classifier head: `W` [N, M] and the bias (none, [N] or [1]).
#[derive(Debug)]
pub struct Head {
    pub kind: LossKind,
    pub gamma: f64,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

/// How to initialise the head's bias.
#[derive(Clone, Debug, Default)]
pub struct BiasInit {
    /// 0–7 (diverse-bias losses only; 0 = random with mean zero).
    pub mode: u8,
    /// Initial unified bias; `None` = [`default_unified_bias`].
    pub unified: Option<f64>,
}

impl Head {
    /// A new head under `p` (`p/weight`, `p/bias`). The weight, and a mode-0 diverse bias, are
    /// drawn like PyTorch's `nn.Linear`: uniform in ±1/√M, which has mean zero.
    pub fn new(
        p: &nn::Path,
        features: i64,
        classes: i64,
        kind: LossKind,
        gamma: f64,
        init: &BiasInit,
    ) -> Result<Self> {
        if classes < 2 {
            bail!("a classifier needs at least 2 classes, got {classes}");
        }
        if !(gamma.is_finite() && gamma > 0.0) {
            bail!("gamma must be a positive number, got {gamma}");
        }
        let bound = 1.0 / (features as f64).sqrt();
        let weight = p.var(
            "weight",
            &[classes, features],
            nn::Init::Uniform { lo: -bound, up: bound },
        );
        let bias = match kind.bias {
            BiasMode::Zero => {
                if init.mode != 0 {
                    bail!("bias_mode {} applies to diverse-bias losses only, not {kind}", init.mode);
                }
                None
            }
            BiasMode::Diverse => Some(match diverse_bias_init(init.mode, classes as usize)? {
                None => p.var("bias", &[classes], nn::Init::Uniform { lo: -bound, up: bound }),
                Some(v) => {
                    let mut b = p.zeros("bias", &[classes]);
                    tch::no_grad(|| b.copy_(&Tensor::from_slice(&v).to_kind(b.kind())));
                    b
                }
            }),
            BiasMode::Unified => {
                if init.mode != 0 {
                    bail!("bias_mode {} applies to diverse-bias losses only, not {kind}", init.mode);
                }
                let v = init.unified.unwrap_or_else(|| default_unified_bias(kind, classes as usize));
                Some(p.var("bias", &[1], nn::Init::Const(v)))
            }
        };
        Ok(Head { kind, gamma, weight, bias })
    }

    /// The metrics without bias: `xWᵀ` or `γ·cos(W_i, x)`, shape [B, N].
    pub fn metrics_nobias(&self, x: &Tensor) -> Tensor {
        match self.kind.classifier {
            Classifier::Linear => x.matmul(&self.weight.tr()),
            Classifier::Normalized => {
                let xn = l2_normalize(x);
                let wn = l2_normalize(&self.weight);
                xn.matmul(&wn.tr()) * self.gamma
            }
        }
    }

    /// Metrics with their bias (Table I's signs) and without: `(logits, logits_nobias)`.
    pub fn metrics(&self, x: &Tensor) -> (Tensor, Tensor) {
        let raw = self.metrics_nobias(x);
        let with = match (&self.bias, self.kind.classifier) {
            (None, _) => raw.shallow_clone(),
            (Some(b), Classifier::Linear) => &raw + b,
            (Some(b), Classifier::Normalized) => &raw - b,
        };
        (with, raw)
    }

    /// The loss of a batch (mean over samples).
    pub fn loss(&self, x: &Tensor, labels: &Tensor) -> Tensor {
        let (c, _) = self.metrics(x);
        loss_from_metrics(self.kind.formula, &c, labels)
    }

    /// Current bias values as stored ([N] diverse, [1] unified, N zeros for zero bias).
    pub fn bias_values(&self) -> Vec<f32> {
        match &self.bias {
            Some(b) => tensor_to_vec(b),
            None => vec![0.0; self.weight.size()[0] as usize],
        }
    }
}

/// `x / max(‖x‖, ε)` row-wise, as `F.normalize` does (ε keeps a zero feature finite).
fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2, [-1i64].as_slice(), true).clamp_min(1e-12);
    x / norm
}

/// SoftMax or BCE on metrics `c` [B, N] (bias included) and labels [B] (i64), averaged over B.
pub fn loss_from_metrics(formula: Formula, c: &Tensor, labels: &Tensor) -> Tensor {
    // The loss is computed in f64 for f64 metrics and in f32 otherwise (also under mixed
    // precision, where the metrics may arrive in half precision).
    let k = if c.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let c = c.to_kind(k);
    match formula {
        // −log softmax(c)_y; log_softmax subtracts the row maximum (log-sum-exp).
        Formula::Soft => {
            let logp = c.log_softmax(1, k).gather(1, &labels.unsqueeze(1), false);
            -logp.mean(k)
        }
        // softplus(−c_y) + Σ_{j≠y} softplus(c_j): flip the sign of the positive column.
        Formula::Bce => {
            let n = c.size()[1];
            let sign = labels.onehot(n).to_kind(k) * (-2.0) + 1.0;
            (c * sign).softplus().sum_dim_intlist([1i64].as_slice(), false, k).mean(k)
        }
    }
}

/// A small 1-D tensor's values as f32 (on the CPU).
pub fn tensor_to_vec(t: &Tensor) -> Vec<f32> {
    let t = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float).flatten(0, -1);
    Vec::<f32>::try_from(&t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let s = if kind.classifier == Classifier::Linear { 1.0 } else { -1.0 };
            let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
            // positive: softplus(−s b), negatives: softplus(s b)
            let d = -s * sig(-s * b) + (n as f64 - 1.0) * s * sig(s * b);
            assert!(d.abs() < 1e-12, "{name}: {d}");
        }
    }
}
