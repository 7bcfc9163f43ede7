//! SGD with momentum and weight decay (PyTorch's `torch.optim.SGD` update, dampening 0, no
//! Nesterov) and the cosine learning-rate schedule.
//!
//! Written out rather than using `tch::nn::Optimizer` so that the momentum buffers are plain
//! named tensors: they go into the checkpoint, and a resumed run continues bit for bit.

use tch::Tensor;

/// One parameter: its name (for checkpoints), the tensor, whether weight decay applies, and
/// its momentum buffer (undefined until the first step, as in PyTorch).
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub decay: bool,
    pub momentum: Option<Tensor>,
}

pub struct Sgd {
    pub params: Vec<Param>,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Sgd {
    pub fn new(params: Vec<Param>, momentum: f64, weight_decay: f64) -> Self {
        Sgd {
            params,
            momentum,
            weight_decay,
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// A scalar tensor that is true when every gradient is finite (one device sync to read).
    pub fn grads_finite(&self) -> Tensor {
        let flags: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.tensor.grad())
            .filter(|g| g.defined())
            .map(|g| g.isfinite().all())
            .collect();
        if flags.is_empty() {
            return Tensor::from(true);
        }
        Tensor::stack(&flags, 0).all()
    }

    /// Multiply every gradient by `factor` in place (a loss scaler's unscaling).
    pub fn unscale_grads(&mut self, factor: f64) {
        if factor == 1.0 {
            return;
        }
        tch::no_grad(|| {
            for p in &mut self.params {
                let mut g = p.tensor.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(factor);
                }
            }
        });
    }

    /// `g ← g + wd·p; m ← μ·m + g (m ← g at the first step); p ← p − lr·m`.
    pub fn step(&mut self, lr: f64) {
        let (mu, wd) = (self.momentum, self.weight_decay);
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.tensor.grad();
                if !g.defined() {
                    continue;
                }
                let d = if p.decay && wd != 0.0 {
                    &g + &p.tensor * wd
                } else {
                    g.shallow_clone()
                };
                let d = if mu != 0.0 {
                    match &mut p.momentum {
                        Some(m) => {
                            let _ = m.g_mul_scalar_(mu).g_add_(&d);
                            m.shallow_clone()
                        }
                        None => {
                            let m = d.copy();
                            p.momentum = Some(m.shallow_clone());
                            m
                        }
                    }
                } else {
                    d
                };
                let _ = p.tensor.g_sub_(&(d * lr));
            }
        });
    }
}

/// Cosine decay from `lr0` to 0 over `total` steps: `lr0 · ½(1 + cos(π·t/total))`.
pub fn cosine_lr(lr0: f64, t: usize, total: usize) -> f64 {
    if total == 0 {
        return lr0;
    }
    let r = (t.min(total) as f64) / total as f64;
    lr0 * 0.5 * (1.0 + (std::f64::consts::PI * r).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn cosine_ends() {
        assert_eq!(cosine_lr(0.1, 0, 10), 0.1);
        assert!((cosine_lr(0.1, 5, 10) - 0.05).abs() < 1e-12);
        assert!(cosine_lr(0.1, 10, 10).abs() < 1e-12);
    }

    #[test]
    fn matches_pytorch_sgd_update() {
        // Two steps by hand: p=1, g=2 constant, lr=0.1, μ=0.9, wd=0.5.
        let t = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let mut opt = Sgd::new(
            vec![Param {
                name: "p".into(),
                tensor: t.shallow_clone(),
                decay: true,
                momentum: None,
            }],
            0.9,
            0.5,
        );
        let mut p = 1.0;
        let mut m = 0.0;
        for step in 0..2 {
            opt.zero_grad();
            (&t * 2.0).sum(Kind::Double).backward();
            opt.step(0.1);
            let d = 2.0 + 0.5 * p;
            m = if step == 0 { d } else { 0.9 * m + d };
            p -= 0.1 * m;
            assert!((t.double_value(&[0]) - p).abs() < 1e-12);
        }
    }
}
