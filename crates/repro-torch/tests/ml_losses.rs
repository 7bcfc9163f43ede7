//! The twelve losses against direct implementations of Eqs. 48–59, their gradients against
//! finite differences, the identities of Section IV-D, Corollary 1, the bias initialisations of
//! Section V-B, and numerical stability for large γ·cos.

use repro_torch::ml::loss::{
    BiasInit, BiasMode, Classifier, Formula, Head, LOSS_NAMES, LossKind, diverse_bias_init,
};
use tch::{Device, Kind, Tensor, nn};

const N: usize = 5; // classes
const M: usize = 4; // feature length
const B: usize = 3; // batch

/// Deterministic test values in a modest range.
fn vals(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// Table I, written out per equation (f64, naive exponentials: the values are small).
/// `w` is N×M row-major (row i = W_i), `x` is B×M, `b` is the bias vector (len N, 1 or 0).
fn direct(kind: &str, w: &[f64], x: &[f64], b: &[f64], gamma: f64, y: &[usize]) -> f64 {
    let dot = |i: usize, s: usize| (0..M).map(|k| w[i * M + k] * x[s * M + k]).sum::<f64>();
    let norm_w = |i: usize| (0..M).map(|k| w[i * M + k].powi(2)).sum::<f64>().sqrt();
    let norm_x = |s: usize| (0..M).map(|k| x[s * M + k].powi(2)).sum::<f64>().sqrt();
    let cos = |i: usize, s: usize| dot(i, s) / (norm_w(i) * norm_x(s));
    let bi = |i: usize| match b.len() {
        0 => 0.0,
        1 => b[0],
        _ => b[i],
    };
    let lin = |i: usize, s: usize| dot(i, s);
    let nor = |i: usize, s: usize| gamma * cos(i, s);
    let ln1p_exp = |z: f64| (1.0 + z.exp()).ln();
    let mut total = 0.0;
    for (s, &yi) in y.iter().enumerate() {
        let l = match kind {
            // (48) −log[exp(W_iᵀx) / Σ exp(W_jᵀx)]
            "soft-0" => -(lin(yi, s).exp() / (0..N).map(|j| lin(j, s).exp()).sum::<f64>()).ln(),
            // (49) with + b_i, (50) with + b
            "soft-d" | "soft-u" => -((lin(yi, s) + bi(yi)).exp()
                / (0..N).map(|j| (lin(j, s) + bi(j)).exp()).sum::<f64>())
            .ln(),
            // (51)
            "soft-n0" => -(nor(yi, s).exp() / (0..N).map(|j| nor(j, s).exp()).sum::<f64>()).ln(),
            // (52) with − b_i, (53) with − b
            "soft-nd" | "soft-nu" => -((nor(yi, s) - bi(yi)).exp()
                / (0..N).map(|j| (nor(j, s) - bi(j)).exp()).sum::<f64>())
            .ln(),
            // (54) log(1+e^{−W_iᵀx}) + Σ_{j≠i} log(1+e^{W_jᵀx})
            "bce-0" => {
                ln1p_exp(-lin(yi, s))
                    + (0..N)
                        .filter(|&j| j != yi)
                        .map(|j| ln1p_exp(lin(j, s)))
                        .sum::<f64>()
            }
            // (55), (56): −W_iᵀx − b_i, W_jᵀx + b_j
            "bce-d" | "bce-u" => {
                ln1p_exp(-lin(yi, s) - bi(yi))
                    + (0..N)
                        .filter(|&j| j != yi)
                        .map(|j| ln1p_exp(lin(j, s) + bi(j)))
                        .sum::<f64>()
            }
            // (57)
            "bce-n0" => {
                ln1p_exp(-nor(yi, s))
                    + (0..N)
                        .filter(|&j| j != yi)
                        .map(|j| ln1p_exp(nor(j, s)))
                        .sum::<f64>()
            }
            // (58), (59): −γcos + b_i, γcos − b_j
            "bce-nd" | "bce-nu" => {
                ln1p_exp(-nor(yi, s) + bi(yi))
                    + (0..N)
                        .filter(|&j| j != yi)
                        .map(|j| ln1p_exp(nor(j, s) - bi(j)))
                        .sum::<f64>()
            }
            _ => unreachable!(),
        };
        total += l;
    }
    total / y.len() as f64
}

/// A double-precision head with the given W and bias values.
fn head(kind: LossKind, w: &[f64], b: &[f64], gamma: f64) -> (nn::VarStore, Head) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let h = Head::new(
        &(vs.root() / "head"),
        M as i64,
        N as i64,
        kind,
        gamma,
        &BiasInit::default(),
    )
    .unwrap();
    vs.double();
    tch::no_grad(|| {
        h.weight
            .shallow_clone()
            .copy_(&Tensor::from_slice(w).view([N as i64, M as i64]));
        if let Some(t) = &h.bias {
            t.shallow_clone().copy_(&Tensor::from_slice(b));
        }
    });
    (vs, h)
}

fn bias_len(kind: LossKind) -> usize {
    match kind.bias {
        BiasMode::Zero => 0,
        BiasMode::Diverse => N,
        BiasMode::Unified => 1,
    }
}

const LABELS: [usize; B] = [0, 3, 4];

fn labels() -> Tensor {
    Tensor::from_slice(&LABELS.map(|y| y as i64))
}

#[test]
fn each_loss_value_matches_its_equation() {
    for (k, name) in LOSS_NAMES.iter().enumerate() {
        let kind: LossKind = name.parse().unwrap();
        let w = vals(N * M, 1 + k as u64);
        let x = vals(B * M, 100 + k as u64);
        let b = vals(bias_len(kind), 200 + k as u64);
        for gamma in [1.0, 3.5] {
            let (_vs, h) = head(kind, &w, &b, gamma);
            let xt = Tensor::from_slice(&x).view([B as i64, M as i64]);
            let got = h.loss(&xt, &labels()).double_value(&[]);
            let want = direct(name, &w, &x, &b, gamma, &LABELS);
            assert!(
                (got - want).abs() < 1e-12 * want.abs().max(1.0),
                "{name} γ={gamma}: {got} vs {want}"
            );
        }
    }
}

/// Central differences of the direct implementation, against autograd of the module, for the
/// gradients in W, x and the bias.
#[test]
fn each_loss_gradient_matches_finite_differences() {
    let eps = 1e-6;
    for (k, name) in LOSS_NAMES.iter().enumerate() {
        let kind: LossKind = name.parse().unwrap();
        let gamma = 2.5;
        let w = vals(N * M, 11 + k as u64);
        let x = vals(B * M, 111 + k as u64);
        let b = vals(bias_len(kind), 211 + k as u64);
        let (_vs, h) = head(kind, &w, &b, gamma);
        let xt = Tensor::from_slice(&x)
            .view([B as i64, M as i64])
            .set_requires_grad(true);
        h.loss(&xt, &labels()).backward();
        let grad_w = Vec::<f64>::try_from(h.weight.grad().flatten(0, -1)).unwrap();
        let grad_x = Vec::<f64>::try_from(xt.grad().flatten(0, -1)).unwrap();
        let grad_b = h
            .bias
            .as_ref()
            .map(|t| Vec::<f64>::try_from(t.grad()).unwrap())
            .unwrap_or_default();
        let fd = |which: usize, i: usize| {
            let (mut w1, mut x1, mut b1) = (w.clone(), x.clone(), b.clone());
            let (mut w2, mut x2, mut b2) = (w.clone(), x.clone(), b.clone());
            match which {
                0 => {
                    w1[i] += eps;
                    w2[i] -= eps
                }
                1 => {
                    x1[i] += eps;
                    x2[i] -= eps
                }
                _ => {
                    b1[i] += eps;
                    b2[i] -= eps
                }
            }
            (direct(name, &w1, &x1, &b1, gamma, &LABELS)
                - direct(name, &w2, &x2, &b2, gamma, &LABELS))
                / (2.0 * eps)
        };
        for (which, auto) in [(0, &grad_w), (1, &grad_x), (2, &grad_b)] {
            for (i, &a) in auto.iter().enumerate() {
                let f = fd(which, i);
                assert!(
                    (a - f).abs() < 1e-6,
                    "{name}: d/d{} [{i}] autograd {a} vs fd {f}",
                    ["W", "x", "b"][which]
                );
            }
        }
        assert_eq!(
            grad_b.len(),
            bias_len(kind),
            "{name}: bias gradient present iff the loss has a bias"
        );
    }
}

#[test]
fn softmax_is_invariant_to_a_unified_bias() {
    // Section IV-D: soft-0 = soft-u and soft-n0 = soft-nu for any b.
    let w = vals(N * M, 5);
    let x = vals(B * M, 6);
    let xt = Tensor::from_slice(&x).view([B as i64, M as i64]);
    for (zero, unified) in [("soft-0", "soft-u"), ("soft-n0", "soft-nu")] {
        let (_v0, h0) = head(zero.parse().unwrap(), &w, &[], 7.0);
        let l0 = h0.loss(&xt, &labels()).double_value(&[]);
        for b in [-50.0, -1.0, 0.3, 12.0, 400.0] {
            let (_vu, hu) = head(unified.parse().unwrap(), &w, &[b], 7.0);
            let lu = hu.loss(&xt, &labels()).double_value(&[]);
            assert!(
                (l0 - lu).abs() < 1e-12,
                "{zero} {l0} vs {unified}(b={b}) {lu}"
            );
        }
    }
    // …whereas BCE is not (the bias is what makes bce-u differ from bce-0).
    let (_v0, h0) = head("bce-0".parse().unwrap(), &w, &[], 1.0);
    let (_vu, hu) = head("bce-u".parse().unwrap(), &w, &[1.0], 1.0);
    assert!(
        (h0.loss(&xt, &labels()).double_value(&[]) - hu.loss(&xt, &labels()).double_value(&[]))
            .abs()
            > 1e-3
    );
}

/// Eq. (45): the stationary bias when every positive metric is B and every negative is A.
fn eq45(n: f64, a: f64, b: f64) -> f64 {
    (((n - 2.0) * a.exp()
        + ((n - 2.0).powi(2) * (2.0 * a).exp() + 4.0 * (n - 1.0) * (a + b).exp()).sqrt())
        / 2.0)
        .ln()
}

#[test]
fn corollary_1_bias_gradient_vanishes_at_eq_45() {
    use repro_torch::ml::loss::loss_from_metrics;
    for (n, a, b_) in [
        (5usize, -1.0, 3.0),
        (10, -0.5, 4.0),
        (2, 0.0, 1.0),
        (100, -2.0, 6.0),
    ] {
        let nt = n as i64;
        let labels = Tensor::from_slice(&[0i64, 1, (n - 1) as i64]);
        let bsz = 3;
        // Metrics without bias: B at the label, A elsewhere.
        let raw = Tensor::full([bsz, nt], a, (Kind::Double, Device::Cpu))
            + labels.onehot(nt).to_kind(Kind::Double) * (b_ - a);
        let t = eq45(n as f64, a, b_);
        // Eq. (40) is the normalized sign convention (metric − b) …
        for (sign, bias) in [(-1.0, t), (1.0, -t)] {
            // … and the linear one (metric + b, Eq. 56) has its stationary point at −t.
            let bv = Tensor::from_slice(&[bias]).set_requires_grad(true);
            let c = &raw + &bv * sign;
            loss_from_metrics(Formula::Bce, &c, &labels).backward();
            let g = bv.grad().double_value(&[0]);
            assert!(
                g.abs() < 1e-10,
                "N={n} A={a} B={b_} sign={sign}: ∂L/∂b = {g} at b = {bias}"
            );
            // The threshold separates the metrics (A < t < B) when inequality (42) holds.
            if (n as f64) < ((b_ - a).exp() + 3.0) / 2.0 {
                assert!(a < t && t < b_, "N={n}: t={t} not in ({a}, {b_})");
            }
            // And it is a genuine stationary point: away from it the gradient does not vanish.
            let bv2 = Tensor::from_slice(&[bias + 0.5]).set_requires_grad(true);
            loss_from_metrics(Formula::Bce, &(&raw + &bv2 * sign), &labels).backward();
            assert!(bv2.grad().double_value(&[0]).abs() > 1e-3);
        }
    }
}

#[test]
fn bias_init_modes_match_section_v_b() {
    let n = 10;
    let nf = n as f64;
    let close = |got: &[f64], want: &[f64]| {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    };
    let m = |k| diverse_bias_init(k, n).unwrap().unwrap();
    assert!(
        diverse_bias_init(0, n).unwrap().is_none(),
        "mode 0 is random"
    );
    close(&m(1), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
    close(&m(2), &(1..=10).map(|i| 6.4 * i as f64).collect::<Vec<_>>());
    close(
        &m(3),
        &(1..=10).map(|i| 6.4 * (10 - i) as f64).collect::<Vec<_>>(),
    );
    close(
        &m(4),
        &(1..=10).map(|i| (96.0 * i as f64).ln()).collect::<Vec<_>>(),
    );
    close(
        &m(5),
        &(1..=10)
            .map(|i| (96.0 * (11 - i) as f64).ln())
            .collect::<Vec<_>>(),
    );
    // N = 10: i ≤ 2.5 → i ∈ {1, 2}; 5 ≤ i ≤ 7.5 → i ∈ {5, 6, 7}.
    let l = (96.0 * nf).ln();
    close(&m(6), &[l, l, 0.0, 0.0, l, l, l, 0.0, 0.0, 0.0]);
    close(&m(7), &[0.0, 0.0, l, l, 0.0, 0.0, 0.0, l, l, l]);
    // N = 200 (CUB): the quarter boundaries are exact.
    let v = diverse_bias_init(6, 200).unwrap().unwrap();
    let l = (96.0f64 * 200.0).ln();
    for i in 1..=200usize {
        let inside = i <= 50 || (100..=150).contains(&i);
        assert_eq!(v[i - 1], if inside { l } else { 0.0 }, "mode 6, i = {i}");
    }
    assert!(diverse_bias_init(8, n).is_err());

    // The head really starts from these values (and they are trainable).
    let vs = nn::VarStore::new(Device::Cpu);
    let h = Head::new(
        &(vs.root() / "head"),
        4,
        10,
        "bce-nd".parse().unwrap(),
        96.0,
        &BiasInit {
            mode: 3,
            unified: None,
        },
    )
    .unwrap();
    let got: Vec<f64> = h.bias_values().iter().map(|&v| v as f64).collect();
    let want: Vec<f64> = m(3).iter().map(|&v| v as f32 as f64).collect();
    close(&got, &want);
    assert!(h.bias.as_ref().unwrap().requires_grad());
    // Mode 0 draws a random bias with mean zero: symmetric bounds ±1/√M.
    let h0 = Head::new(
        &(vs.root() / "h0"),
        4,
        1000,
        "soft-d".parse().unwrap(),
        96.0,
        &BiasInit::default(),
    )
    .unwrap();
    let b0 = h0.bias_values();
    assert!(b0.iter().all(|v| v.abs() <= 0.5));
    assert!((b0.iter().sum::<f32>() / 1000.0).abs() < 0.05);
    assert!(
        b0.iter().any(|&v| v != b0[0]),
        "mode 0 is random, not constant"
    );
}

#[test]
fn bce_is_finite_for_large_scaled_cosines() {
    // γ = 512 puts metrics at ±512: e^{512} overflows f32 and f64, the softplus form does not.
    for name in ["bce-n0", "bce-nu", "soft-nu"] {
        let kind: LossKind = name.parse().unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let h = Head::new(
            &(vs.root() / "head"),
            M as i64,
            N as i64,
            kind,
            512.0,
            &BiasInit::default(),
        )
        .unwrap();
        // Features aligned with W_0 give cos = 1 for class 0 and large |γ cos| elsewhere.
        let x = h
            .weight
            .detach()
            .narrow(0, 0, 1)
            .repeat([B as i64, 1])
            .set_requires_grad(true);
        let wrong = Tensor::from_slice(&[1i64, 2, 3]); // positive metrics far below the negatives
        let l = h.loss(&x, &wrong);
        assert!(l.double_value(&[]).is_finite(), "{name}: loss {l:?}");
        assert!(
            l.double_value(&[]) > 100.0,
            "{name}: loss should be large, got {}",
            l.double_value(&[])
        );
        l.backward();
        assert!(
            h.weight.grad().isfinite().all().int64_value(&[]) != 0,
            "{name}: gradient not finite"
        );
        assert!(
            x.grad().isfinite().all().int64_value(&[]) != 0,
            "{name}: gradient not finite"
        );
    }
}

#[test]
fn metrics_carry_the_table_i_sign_of_the_bias() {
    let w = vals(N * M, 9);
    let x = Tensor::from_slice(&vals(B * M, 10)).view([B as i64, M as i64]);
    for (name, sign) in [
        ("bce-d", 1.0),
        ("soft-u", 1.0),
        ("bce-nd", -1.0),
        ("soft-nu", -1.0),
    ] {
        let kind: LossKind = name.parse().unwrap();
        let b = vals(bias_len(kind), 3);
        let (_vs, h) = head(kind, &w, &b, 4.0);
        let (with, without) = h.metrics(&x);
        let bt = Tensor::from_slice(&b);
        let diff = (&with - &without - bt * sign).abs().max().double_value(&[]);
        assert!(
            diff < 1e-12,
            "{name}: logits − logits_nobias must be {sign}·b"
        );
        if kind.classifier == Classifier::Normalized {
            assert!(
                without.abs().max().double_value(&[]) <= 4.0 + 1e-9,
                "{name}: |γ cos| ≤ γ"
            );
        }
    }
}

/// `numerics: direct` is the same loss as the stable form where e^x is representable in fp32,
/// and overflows (non-finite loss) once a metric passes ~88.7, where the stable form stays
/// finite: the overflow is a property of the evaluation, not of the loss.
#[test]
fn direct_formula_equals_the_stable_one_until_fp32_overflows() {
    use repro_torch::ml::loss::{loss_direct, loss_from_metrics};
    let labels = Tensor::from_slice(&[0i64, 2, 1]);
    let small: Vec<f64> = vals(3 * N, 7).iter().map(|v| v * 20.0).collect();
    let c = Tensor::from_slice(&small)
        .view([3, N as i64])
        .to_kind(Kind::Float);
    for f in [Formula::Bce, Formula::Soft] {
        let s = loss_from_metrics(f, &c, &labels).double_value(&[]);
        let d = loss_direct(f, &c, &labels).double_value(&[]);
        assert!(
            (s - d).abs() <= 1e-4 * s.abs().max(1.0),
            "{f:?}: stable {s} vs direct {d}"
        );
    }
    // A negative class's metric at 100 (γ·cos with γ = 208, cos ≈ 0.48): e^100 = inf in fp32.
    let mut big = small.clone();
    big[1] = 100.0;
    let c = Tensor::from_slice(&big)
        .view([3, N as i64])
        .to_kind(Kind::Float);
    for f in [Formula::Bce, Formula::Soft] {
        let s = loss_from_metrics(f, &c, &labels).double_value(&[]);
        let d = loss_direct(f, &c, &labels).double_value(&[]);
        assert!(s.is_finite() && s > 20.0, "{f:?}: stable {s}");
        assert!(!d.is_finite(), "{f:?}: direct {d} should overflow");
    }
}

/// Issue 28 item 1: `unified_bias_init: log10n` starts bce-nu at ln(10·N) and the linear bce-u
/// at 0; the head takes it as given.
#[test]
fn the_log10n_start_is_ln_10n_for_the_normalised_bce() {
    use repro::ml_spec::loss::{BiasRule, BiasStart};
    for (name, want) in [("bce-nu", (10.0 * N as f64).ln()), ("bce-u", 0.0)] {
        let kind: LossKind = name.parse().unwrap();
        let b0 = BiasStart::Rule(BiasRule::Log10N).value(kind, N);
        assert!((b0 - want).abs() < 1e-12, "{name}: {b0}");
        let vs = nn::VarStore::new(Device::Cpu);
        let h = Head::new(
            &(vs.root() / "head"),
            M as i64,
            N as i64,
            kind,
            16.0,
            &BiasInit {
                mode: 0,
                unified: Some(b0),
            },
        )
        .unwrap();
        assert!((h.bias_values()[0] as f64 - want).abs() < 1e-5, "{name}");
    }
}

/// Issue 28 item 2: `head_init: pretrained` copies the pre-trained classifier into the head —
/// its rows normalised for the normalized classifier, its per-class bias for the diverse-bias
/// losses at mode 0 — and refuses a classifier of other classes.
#[test]
fn a_head_starts_from_the_pretrained_classifier() {
    use repro_torch::ml::train::start_head_from;
    let dir = tempfile::tempdir().unwrap();
    let w: Vec<f32> = vals(N * M, 7).iter().map(|v| (*v * 3.0) as f32).collect();
    let b: Vec<f32> = vals(N, 8).iter().map(|v| *v as f32).collect();
    let path = dir.path().join("model.safetensors");
    repro_torch::ml::io::write_safetensors(
        &path,
        &[
            (
                "head.weight".into(),
                Tensor::from_slice(&w).reshape([N as i64, M as i64]),
            ),
            ("head.bias".into(), Tensor::from_slice(&b)),
        ],
    )
    .unwrap();
    let new_head = |name: &str, classes: i64| {
        let vs = nn::VarStore::new(Device::Cpu);
        let h = Head::new(
            &(vs.root() / "head"),
            M as i64,
            classes,
            name.parse().unwrap(),
            16.0,
            &BiasInit::default(),
        )
        .unwrap();
        (vs, h)
    };
    // Linear, diverse bias: weight and bias as they are.
    let (_vs, h) = new_head("soft-d", N as i64);
    start_head_from(&h, &path, 0).unwrap();
    let got: Vec<f32> = Vec::try_from(h.weight.flatten(0, -1)).unwrap();
    assert_eq!(got, w);
    assert_eq!(h.bias_values(), b);
    // Normalized: unit rows in the direction of the pre-trained ones.
    let (_vs, h) = new_head("bce-nd", N as i64);
    start_head_from(&h, &path, 0).unwrap();
    let got: Vec<f32> = Vec::try_from(h.weight.flatten(0, -1)).unwrap();
    for i in 0..N {
        let row = &w[i * M..(i + 1) * M];
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        for k in 0..M {
            assert!((got[i * M + k] - row[k] / n).abs() < 1e-6);
        }
    }
    // A bias-mode study keeps its own start.
    let (_vs, h) = new_head("bce-d", N as i64);
    let before = h.bias_values();
    start_head_from(&h, &path, 3).unwrap();
    assert_eq!(h.bias_values(), before);
    // Other classes (an FGVC set): refused, with the reason.
    let (_vs, h) = new_head("soft-d", N as i64 + 1);
    let e = format!("{:#}", start_head_from(&h, &path, 0).unwrap_err());
    assert!(e.contains("head_init: new"), "{e}");
}
