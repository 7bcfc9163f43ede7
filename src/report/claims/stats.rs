//! Values over seeds and the noise rule the verdicts use: Welch's t-test on the seeds.
//!
//! A difference between two cells (each a mean over seeds) is tested against the claim's
//! margin with Welch's unequal-variance t-test, two-sided, at [`ALPHA`]: when p ≥ α the
//! difference is "within noise", else the sign decides. Unlike a fixed "2 × pooled sd" band,
//! the test narrows with more seeds (its standard error is s/√n). A cell of one run has no
//! noise estimate; its verdicts say "single seed" in the verdict word.

/// The significance level of every verdict on our runs.
pub const ALPHA: f64 = 0.05;

/// The standard error of a mean and its degrees of freedom (Welch–Satterthwaite for
/// combinations of cells).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Noise {
    pub se: f64,
    pub df: f64,
}

/// A value over repeated runs (seeds): mean, sample standard deviation (n ≥ 2), count, and
/// the noise of the mean.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub mean: f64,
    pub sd: Option<f64>,
    pub n: usize,
    pub noise: Option<Noise>,
}

impl Stat {
    pub fn of(xs: &[f64]) -> Option<Stat> {
        let xs: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        if xs.is_empty() {
            return None;
        }
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let sd = (n >= 2).then(|| {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt()
        });
        let noise = sd.map(|s| Noise {
            se: s / (n as f64).sqrt(),
            df: n as f64 - 1.0,
        });
        Some(Stat { mean, sd, n, noise })
    }

    /// `a − b`, its noise combined by Welch–Satterthwaite (none when either side has none).
    pub fn diff(a: Stat, b: Stat) -> Stat {
        Stat {
            mean: a.mean - b.mean,
            sd: pooled(&[a, b]),
            n: a.n.min(b.n),
            noise: combine(&[(a.noise, 1.0), (b.noise, 1.0)]),
        }
    }

    /// The mean of several cells' means (e.g. the mean over a group of losses).
    pub fn mean_of(stats: &[Stat]) -> Option<Stat> {
        if stats.is_empty() {
            return None;
        }
        let k = stats.len() as f64;
        let w: Vec<(Option<Noise>, f64)> = stats.iter().map(|s| (s.noise, 1.0 / k)).collect();
        Some(Stat {
            mean: stats.iter().map(|s| s.mean).sum::<f64>() / k,
            sd: pooled(stats),
            n: stats.iter().map(|s| s.n).min().unwrap_or(1),
            noise: combine(&w),
        })
    }

    /// The same value with its sign flipped and shifted: `c − self` (for bounds).
    pub fn below(self, c: f64) -> Stat {
        Stat {
            mean: c - self.mean,
            ..self
        }
    }
}

/// Noise of Σ wᵢ·xᵢ: se² = Σ wᵢ²·seᵢ², df by Welch–Satterthwaite.
fn combine(parts: &[(Option<Noise>, f64)]) -> Option<Noise> {
    let mut var = 0.0;
    let mut denom = 0.0;
    for (n, w) in parts {
        let n = (*n)?;
        let v = w * w * n.se * n.se;
        var += v;
        denom += v * v / n.df;
    }
    let df = if denom > 0.0 {
        var * var / denom
    } else {
        // Every part has zero variance: the degrees of freedom are the parts' own.
        parts.iter().filter_map(|p| p.0).map(|n| n.df).sum()
    };
    Some(Noise { se: var.sqrt(), df })
}

/// Pooled standard deviation √(mean of s²) of cells (for display); `None` when one of them has
/// a single run.
pub(super) fn pooled(stats: &[Stat]) -> Option<f64> {
    let mut s2 = 0.0;
    for s in stats {
        s2 += s.sd?.powi(2);
    }
    (!stats.is_empty()).then(|| (s2 / stats.len() as f64).sqrt())
}

/// Two-sided p-value of Welch's t-test of `d = margin`, given the noise of `d`.
pub fn welch_p(d: f64, margin: f64, noise: Noise) -> f64 {
    let t = (d - margin) / noise.se;
    if t.is_nan() {
        // 0/0: the difference equals the margin exactly, with no spread.
        return 1.0;
    }
    if t.is_infinite() {
        return 0.0;
    }
    student_t_two_sided(t, noise.df)
}

/// P(|T| ≥ |t|) for Student's t with `df` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2).
pub fn student_t_two_sided(t: f64, df: f64) -> f64 {
    let x = df / (df + t * t);
    reg_inc_beta(x, df / 2.0, 0.5).clamp(0.0, 1.0)
}

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularised incomplete beta function I_x(a, b), by its continued fraction (evaluated
/// with the modified Lentz method), using the symmetry I_x(a,b) = 1 − I_{1−x}(b,a) where the
/// fraction converges slowly.
pub fn reg_inc_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - reg_inc_beta(1.0 - x, b, a);
    }
    const TINY: f64 = 1e-300;
    let mut f = 1.0f64;
    let mut c = 1.0f64;
    let mut d = 0.0f64;
    for i in 0..400 {
        let m = (i / 2) as f64;
        let num = if i == 0 {
            1.0
        } else if i % 2 == 0 {
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m))
        } else {
            -((a + m) * (a + b + m) * x) / ((a + 2.0 * m) * (a + 2.0 * m + 1.0))
        };
        d = 1.0 + num * d;
        if d.abs() < TINY {
            d = TINY;
        }
        d = 1.0 / d;
        c = 1.0 + num / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let cd = c * d;
        f *= cd;
        if (cd - 1.0).abs() < 1e-14 {
            break;
        }
    }
    ln_front.exp() * (f - 1.0) / a
}
