//! The one pass over the metric matrix: each sample's positive metric, maximum negative metric
//! and log-sum-exp.
//!
//! Everything the accuracies need is a function of three numbers per sample: the positive
//! metric c_y(x), the largest negative metric max_{j≠y} c_j(x), and (for the SoftMax variant)
//! log Σ_j exp(c_j(x) − m) with m the row maximum, because SoftMax is monotone within a row.
//! Keeping the sum relative to the row maximum makes the SoftMax values of rows that differ by
//! a constant bit-for-bit identical, as they are mathematically. Rows are processed in
//! parallel with rayon straight from the (mapped) matrix; each row is read from memory once and
//! revisited only from L1 cache. The inner loops use fixed-width lane arrays so the compiler
//! vectorises them, and a branch-free single-precision exp.

use rayon::prelude::*;

use super::input::Matrix;

/// What one pass yields for one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowStat {
    /// c_y(x).
    pub pos: f32,
    /// max_{j≠y} c_j(x); −∞ when there is a single class.
    pub neg: f32,
    /// log Σ_j exp(c_j(x) − max_j c_j(x)), in [0, log N] (NaN when not computed or the row is
    /// not finite).
    pub ln_sum: f64,
    /// Every metric of the row is finite.
    pub finite: bool,
}

impl RowStat {
    /// Sample-wise correct (Eq. 7 has a solution): finite and c_y > max_{j≠y} c_j.
    pub fn correct(&self) -> bool {
        self.finite && self.pos > self.neg
    }
}

const LANES: usize = 16;

/// Maximum of a slice (−∞ for an empty one). NaN-unaware: callers check finiteness separately.
#[inline]
pub(crate) fn max_of(s: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = s.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in acc.iter().chain(rest) {
        m = if x > m { x } else { m };
    }
    m
}

/// Minimum of a slice (+∞ for an empty one).
#[inline]
pub(crate) fn min_of(s: &[f32]) -> f32 {
    let mut acc = [f32::INFINITY; LANES];
    let chunks = s.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] = if c[k] < acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = f32::INFINITY;
    for &x in acc.iter().chain(rest) {
        m = if x < m { x } else { m };
    }
    m
}

/// True iff every value is finite: x · 0 is ±0 for finite x and NaN for ±∞ and NaN.
#[inline]
fn all_finite(s: &[f32]) -> bool {
    let mut acc = [0f32; LANES];
    let chunks = s.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += c[k] * 0.0;
        }
    }
    let mut z = 0f32;
    for &x in acc.iter() {
        z += x;
    }
    for &x in rest {
        z += x * 0.0;
    }
    z == 0.0
}

/// exp(x) for x ≤ 0, single precision, branch-free so that it vectorises. Cephes' expf
/// reduction and polynomial (about 1 ulp); inputs below −87.3 give ~1e-38 instead of 0, which
/// is far below the precision of a sum that contains exp(0) = 1.
#[inline(always)]
fn exp_nonpos(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let x = if x < -87.3 { -87.3 } else { x };
    let kf = x * LOG2E + MAGIC;
    let k = (kf.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let kr = kf - MAGIC;
    let r = x - kr * C1 - kr * C2;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((k + 127) << 23) as u32)
}

/// log Σ exp(s_j − m), given m = max_j s_j (finite).
#[inline]
fn log_sum_exp_rel(s: &[f32], m: f32) -> f64 {
    let mut acc = [0f32; LANES];
    let chunks = s.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += exp_nonpos(c[k] - m);
        }
    }
    let mut sum = 0f64;
    for &a in &acc {
        sum += a as f64;
    }
    for &x in rest {
        sum += exp_nonpos(x - m) as f64;
    }
    sum.ln()
}

/// The statistics of one row with true class `y`.
#[inline]
pub fn row_stat(row: &[f32], y: usize, with_lse: bool) -> RowStat {
    let finite = all_finite(row);
    let pos = row[y];
    let neg = max_of(&row[..y]).max(max_of(&row[y + 1..]));
    let ln_sum = if finite && with_lse { log_sum_exp_rel(row, pos.max(neg)) } else { f64::NAN };
    RowStat { pos, neg, ln_sum, finite }
}

/// One parallel pass over the matrix.
pub fn row_stats(m: &Matrix<'_>, labels: &[u32], with_lse: bool) -> Vec<RowStat> {
    assert_eq!(labels.len(), m.rows, "one label per row");
    m.data
        .par_chunks_exact(m.cols)
        .zip(labels.par_iter())
        .with_min_len(256)
        .map(|(row, &y)| row_stat(row, y as usize, with_lse))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = (x as f64).exp();
            let got = exp_nonpos(x) as f64;
            assert!(((got - want) / want).abs() < 4e-7, "exp({x}): {got} vs {want}");
            x += 0.0137;
        }
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert!(exp_nonpos(-1000.0) < 1e-37);
    }

    #[test]
    fn row_stat_basics() {
        let r = row_stat(&[1.0, 3.0, 2.0], 1, true);
        assert_eq!((r.pos, r.neg, r.finite), (3.0, 2.0, true));
        let want = ((-2f64).exp() + 1.0 + (-1f64).exp()).ln();
        assert!((r.ln_sum - want).abs() < 1e-6);
        assert!(r.correct());
        let single = row_stat(&[5.0], 0, true);
        assert_eq!(single.neg, f32::NEG_INFINITY);
        assert_eq!(single.ln_sum, 0.0);
        let nan = row_stat(&[1.0, f32::NAN, 0.0], 0, true);
        assert!(!nan.finite && !nan.correct());
        let inf = row_stat(&[f32::INFINITY, 0.0], 0, true);
        assert!(!inf.correct());
        let long: Vec<f32> = (0..37).map(|i| (i % 7) as f32).collect();
        let r = row_stat(&long, 36, false);
        assert_eq!((r.pos, r.neg), (1.0, 6.0));
        assert!(!r.correct());
    }
}
