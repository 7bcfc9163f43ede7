//! The one pass over the metric matrix: each sample's positive metric, maximum negative metric
//! and log-sum-exp.
//!
//! Everything the accuracies need is a function of three numbers per sample: the positive
//! metric c_y(x), the largest negative metric max_{j≠y} c_j(x), and (for the SoftMax variant)
//! log Σ_j exp(c_j(x) − m) with m the row maximum, because SoftMax is monotone within a row.
//! Keeping the sum relative to the row maximum makes the SoftMax values of rows that differ by
//! a constant bit-for-bit identical, as they are mathematically. Rows are processed in
//! parallel with rayon straight from the (mapped) matrix; each row is read from memory once and
//! revisited only from L1 cache: a fused max-and-finiteness loop, then, only for samples that
//! are sample-wise correct (the others have no SoftMax threshold either), the exp-sum loop. The
//! inner loops use fixed-width lane arrays so the compiler vectorises them, with a branch-free
//! single-precision exp written with fused multiply-adds. On x86-64 CPUs with AVX2 and FMA the
//! same code is compiled a second time for them and chosen at run time; it performs the same
//! operations in the same order, and `mul_add` is exactly rounded everywhere (in hardware
//! there, in software elsewhere), so both paths give bit-identical results.

use rayon::prelude::*;

use super::input::Matrix;

/// What one pass yields for one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowStat {
    /// c_y(x).
    pub pos: f32,
    /// max_{j≠y} c_j(x); −∞ when there is a single class.
    pub neg: f32,
    /// log Σ_j exp(c_j(x) − max_j c_j(x)), in [0, log N]. NaN when not requested or the sample
    /// is not sample-wise correct (then no SoftMax threshold counts it either).
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

/// Maximum of a slice (−∞ for an empty one) and a finiteness witness: the sum of x · 0 over
/// the slice, which is 0 when every value is finite and NaN otherwise (±∞ · 0 = NaN).
#[inline(always)]
fn max_and_witness(s: &[f32]) -> (f32, f32) {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut z = [0f32; LANES];
    let chunks = s.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
            z[k] += c[k] * 0.0;
        }
    }
    let (mut m, mut w) = (f32::NEG_INFINITY, 0f32);
    for k in 0..LANES {
        m = if acc[k] > m { acc[k] } else { m };
        w += z[k];
    }
    for &x in rest {
        m = if x > m { x } else { m };
        w += x * 0.0;
    }
    (m, w)
}

/// exp(x) for x ≤ 0, single precision, branch-free so that it vectorises. Cephes' expf
/// reduction and polynomial (about 1 ulp), in fused multiply-adds (half the instructions);
/// inputs below −87.3 give ~1e-38 instead of 0, which is far below the precision of a sum
/// that contains exp(0) = 1.
#[inline(always)]
fn exp_nonpos(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let x = if x < -87.3 { -87.3 } else { x };
    let kf = x.mul_add(LOG2E, MAGIC);
    let k = (kf.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let kr = kf - MAGIC;
    let r = (-kr).mul_add(C2, (-kr).mul_add(C1, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    y * f32::from_bits(((k + 127) << 23) as u32)
}

/// log Σ exp(s_j − m), given m = max_j s_j (finite).
#[inline(always)]
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
#[inline(always)]
pub fn row_stat(row: &[f32], y: usize, with_lse: bool) -> RowStat {
    let (a, wa) = max_and_witness(&row[..y]);
    let (b, wb) = max_and_witness(&row[y + 1..]);
    let pos = row[y];
    let finite = wa + wb + pos * 0.0 == 0.0;
    let neg = if a > b { a } else { b };
    let ln_sum = if with_lse && finite && pos > neg { log_sum_exp_rel(row, pos) } else { f64::NAN };
    RowStat { pos, neg, ln_sum, finite }
}

/// Rows of `data` (`cols` wide) into `out`, one per label.
#[inline(always)]
fn fill(data: &[f32], cols: usize, labels: &[u32], with_lse: bool, out: &mut [RowStat]) {
    for ((row, &y), o) in data.chunks_exact(cols).zip(labels).zip(out) {
        *o = row_stat(row, y as usize, with_lse);
    }
}

/// [`fill`] compiled for AVX2 and FMA (same operations, wider vectors, hardware FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fill_avx2(data: &[f32], cols: usize, labels: &[u32], with_lse: bool, out: &mut [RowStat]) {
    fill(data, cols, labels, with_lse, out)
}

fn fill_best(data: &[f32], cols: usize, labels: &[u32], with_lse: bool, out: &mut [RowStat]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { fill_avx2(data, cols, labels, with_lse, out) };
    }
    fill(data, cols, labels, with_lse, out)
}

/// One parallel pass over the matrix.
pub fn row_stats(m: &Matrix<'_>, labels: &[u32], with_lse: bool) -> Vec<RowStat> {
    assert_eq!(labels.len(), m.rows, "one label per row");
    const ROWS: usize = 32; // rows per task: enough work to amortise scheduling
    let blank = RowStat { pos: 0.0, neg: 0.0, ln_sum: f64::NAN, finite: false };
    let mut out = vec![blank; m.rows];
    out.par_chunks_mut(ROWS)
        .zip(m.data.par_chunks(ROWS * m.cols))
        .zip(labels.par_chunks(ROWS))
        .for_each(|((o, d), l)| fill_best(d, m.cols, l, with_lse, o));
    out
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
        let wrong = row_stat(&[3.0, 1.0, 2.0], 1, true);
        assert!(!wrong.correct() && wrong.ln_sum.is_nan());
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

    #[test]
    fn dispatched_path_is_bit_identical_to_generic() {
        // Random rows of several widths (remainders included), with ties and a non-finite row.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / 16_777_216.0) * 20.0 - 10.0
        };
        for cols in [1usize, 3, 15, 16, 17, 40, 1000] {
            let rows = 50;
            let mut data: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
            data[7 * cols] = f32::NAN;
            let labels: Vec<u32> = (0..rows).map(|i| (i * 7 % cols) as u32).collect();
            // Make the labelled entry the maximum in half of the rows so lse is computed.
            for i in (0..rows).step_by(2) {
                data[i * cols + labels[i] as usize] = 20.0;
            }
            let blank = RowStat { pos: 0.0, neg: 0.0, ln_sum: 0.0, finite: false };
            let (mut a, mut b) = (vec![blank; rows], vec![blank; rows]);
            fill(&data, cols, &labels, true, &mut a);
            fill_best(&data, cols, &labels, true, &mut b);
            for (p, q) in a.iter().zip(&b) {
                assert_eq!(p.pos.to_bits(), q.pos.to_bits());
                assert_eq!(p.neg.to_bits(), q.neg.to_bits());
                assert_eq!(p.ln_sum.to_bits(), q.ln_sum.to_bits(), "cols {cols}");
                assert_eq!(p.finite, q.finite);
            }
        }
    }
}
