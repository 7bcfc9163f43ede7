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

use anyhow::{Result, bail};
use tch::{Kind, Tensor, nn};

pub use repro::ml_spec::config::Numerics;
pub use repro::ml_spec::loss::*;

/// The classifier head: `W` [N, M] and the bias (none, [N] or [1]).
#[derive(Debug)]
pub struct Head {
    pub kind: LossKind,
    pub gamma: f64,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// How [`Head::loss`] evaluates the formula (stable unless set).
    pub numerics: Numerics,
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
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let bias = match kind.bias {
            BiasMode::Zero => {
                if init.mode != 0 {
                    bail!(
                        "bias_mode {} applies to diverse-bias losses only, not {kind}",
                        init.mode
                    );
                }
                None
            }
            BiasMode::Diverse => Some(match diverse_bias_init(init.mode, classes as usize)? {
                None => p.var(
                    "bias",
                    &[classes],
                    nn::Init::Uniform {
                        lo: -bound,
                        up: bound,
                    },
                ),
                Some(v) => {
                    let mut b = p.zeros("bias", &[classes]);
                    tch::no_grad(|| b.copy_(&Tensor::from_slice(&v).to_kind(b.kind())));
                    b
                }
            }),
            BiasMode::Unified => {
                if init.mode != 0 {
                    bail!(
                        "bias_mode {} applies to diverse-bias losses only, not {kind}",
                        init.mode
                    );
                }
                let v = init
                    .unified
                    .unwrap_or_else(|| default_unified_bias(kind, classes as usize));
                Some(p.var("bias", &[1], nn::Init::Const(v)))
            }
        };
        Ok(Head {
            kind,
            gamma,
            weight,
            bias,
            numerics: Numerics::Stable,
        })
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
        match self.numerics {
            Numerics::Stable => loss_from_metrics(self.kind.formula, &c, labels),
            Numerics::Direct => loss_direct(self.kind.formula, &c, labels),
        }
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
    let norm = x
        .norm_scalaropt_dim(2, [-1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

/// The paper's formulas evaluated as written, in fp32 (Eqs. 48–59 without the numerical
/// rewriting): BCE `log(1 + e^z)` per term, SoftMax `−log(e^{c_y} / Σ_j e^{c_j})`. `e^z` is
/// infinite for z > 88.7, so large metrics (γ ≳ 90 for the normalised classifiers) can make
/// the loss and its gradient non-finite — the overflow the paper reports at γ ≥ 208.
pub fn loss_direct(formula: Formula, c: &Tensor, labels: &Tensor) -> Tensor {
    let k = Kind::Float;
    let c = c.to_kind(k);
    match formula {
        Formula::Soft => {
            let e = c.exp();
            let p = e.gather(1, &labels.unsqueeze(1), false)
                / e.sum_dim_intlist([1i64].as_slice(), true, k);
            -p.log().mean(k)
        }
        Formula::Bce => {
            let n = c.size()[1];
            let sign = labels.onehot(n).to_kind(k) * (-2.0) + 1.0;
            ((c * sign).exp() + 1.0)
                .log()
                .sum_dim_intlist([1i64].as_slice(), false, k)
                .mean(k)
        }
    }
}

/// SoftMax or BCE on metrics `c` [B, N] (bias included) and labels [B] (i64), averaged over B.
pub fn loss_from_metrics(formula: Formula, c: &Tensor, labels: &Tensor) -> Tensor {
    // The loss is computed in f64 for f64 metrics and in f32 otherwise (also under mixed
    // precision, where the metrics may arrive in half precision).
    let k = if c.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    };
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
            (c * sign)
                .softplus()
                .sum_dim_intlist([1i64].as_slice(), false, k)
                .mean(k)
        }
    }
}

/// A small 1-D tensor's values as f32 (on the CPU).
pub fn tensor_to_vec(t: &Tensor) -> Vec<f32> {
    let t = t
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .flatten(0, -1);
    Vec::<f32>::try_from(&t).unwrap_or_default()
}
