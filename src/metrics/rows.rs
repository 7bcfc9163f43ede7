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
//! are sample-wise correct (the others have no SoftMax threshold either), the exp-sum loop,
//! which meanwhile prefetches the next row so that memory works while the core computes. The
//! inner loops use fixed-width lane arrays so the compiler vectorises them, with a branch-free
//! single-precision exp written with fused multiply-adds. On x86-64 CPUs with AVX2 and FMA the
//! same code is compiled a second time for them and chosen at run time, the exp-sum loop
//! written with intrinsics; it performs the same operations in the same order, and `mul_add`
//! is exactly rounded everywhere (in hardware there, in software elsewhere), so both paths
//! give bit-identical results (tested).

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
const EXP_LANES: usize = 32;

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

/// exp(x) for x ≤ 0, single precision, branch-free so that it vectorises: x = k·ln 2 + r with
/// |r| ≤ ln 2 / 2 (one fused multiply-add with ln 2 rounded to f32, which errs by k·1.9e-9),
/// e^r from a degree-6 polynomial fitted for least maximum relative error (2e-9 in exact
/// arithmetic), and 2^k put straight into the exponent bits by an integer add: 8
/// multiply-class operations per value. Relative error: below 1.2e-7 (1 ulp) for x ≥ −17,
/// i.e. for every term that can reach an f32 sum containing exp(0) = 1, and below 3.2e-7
/// further out (tested). The sum's own f32 rounding is larger than either. Inputs below
/// −87.3 are clamped (exp ≈ 1e-38).
#[inline(always)]
fn exp_nonpos(x: f32) -> f32 {
    let x = if x < -87.3 { -87.3 } else { x };
    // kf = MAGIC + k: its low mantissa bits hold k, so kf's bits shifted by 23 are k << 23
    // (MAGIC's own bits shift out), the exponent increment of 2^k.
    let kf = x.mul_add(LOG2E, MAGIC);
    let k = kf - MAGIC;
    let r = (-k).mul_add(LN2, x);
    let mut q = EXP_Q[5];
    for c in EXP_Q[..5].iter().rev() {
        q = q.mul_add(r, *c);
    }
    let y = r.mul_add(q, 1.0);
    // y in [0.70, 1.42] and k ≥ −126, so the exponent field stays ≥ 0: no wrap into the sign.
    f32::from_bits(y.to_bits().wrapping_add(kf.to_bits() << 23))
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
const LN2: f32 = std::f32::consts::LN_2;
/// q(r) = Σ EXP_Q[i]·r^i with e^r ≈ 1 + r·q(r).
const EXP_Q: [f32; 6] = [
    1.0,
    0.499_999_94,
    0.166_664_32,
    0.041_668,
    0.008_374_155_5,
    0.001_384_365_4,
];

/// The lanes of Σ exp(s_j − m) with AVX2 intrinsics: exactly [`exp_sum`]'s operations in
/// the same order (fnmadd(k, c, x) = fma(−k, c, x) exactly), so both give the same bits.
/// Hand-written because the compiler's own vectorisation of [`exp_sum`] ran about 1.4× slower.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_sum_avx2(s: &[f32], m: f32, ahead: *const f32) -> [f32; EXP_LANES] {
    use std::arch::x86_64::*;
    const V: usize = EXP_LANES / 8;
    /// exp(d − m) lane by lane, written stage by stage across the W vectors: each stage
    /// then issues W independent operations in a row, which the out-of-order core overlaps
    /// (one vector at a time ran ~45% slower).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn exp_v<const W: usize>(d: [__m256; W], mm: __m256) -> [__m256; W] {
        let (mut x, mut kf, mut r) = (d, d, d);
        for v in 0..W {
            x[v] = _mm256_max_ps(_mm256_sub_ps(d[v], mm), _mm256_set1_ps(-87.3));
        }
        for v in 0..W {
            kf[v] = _mm256_fmadd_ps(x[v], _mm256_set1_ps(LOG2E), _mm256_set1_ps(MAGIC));
        }
        for v in 0..W {
            let k = _mm256_sub_ps(kf[v], _mm256_set1_ps(MAGIC));
            r[v] = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2), x[v]);
        }
        let mut q = [_mm256_set1_ps(EXP_Q[5]); W];
        for c in EXP_Q[..5].iter().rev() {
            for v in 0..W {
                q[v] = _mm256_fmadd_ps(q[v], r[v], _mm256_set1_ps(*c));
            }
        }
        let mut e = q;
        for v in 0..W {
            let y = _mm256_castps_si256(_mm256_fmadd_ps(r[v], q[v], _mm256_set1_ps(1.0)));
            e[v] = _mm256_castsi256_ps(_mm256_add_epi32(
                y,
                _mm256_slli_epi32::<23>(_mm256_castps_si256(kf[v])),
            ));
        }
        e
    }
    /// V vectors from EXP_LANES values.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn load(c: &[f32]) -> [__m256; V] {
        let mut d = [_mm256_setzero_ps(); V];
        for (d, c) in d.iter_mut().zip(c[..EXP_LANES].chunks_exact(8)) {
            // SAFETY: c holds 8 values.
            *d = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        }
        d
    }
    let mm = _mm256_set1_ps(m);
    let mut acc = [_mm256_setzero_ps(); V];
    let chunks = s.chunks_exact(EXP_LANES);
    let rest = chunks.remainder();
    for (i, c) in chunks.enumerate() {
        prefetch_chunk(ahead, i);
        let e = exp_v(load(c), mm);
        for v in 0..V {
            acc[v] = _mm256_add_ps(acc[v], e[v]);
        }
    }
    /// The values after the last whole chunk, eight lanes at a time, the last eight padded
    /// with −∞ (whose clamped exp is finite) and masked to zero. Kept out of line: inlined,
    /// its registers crowded the main loop's and the accumulators went through the stack.
    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    fn tail(acc: &mut [__m256; V], rest: &[f32], mm: __m256) {
        for (acc, piece) in acc.iter_mut().zip(rest.chunks(8)) {
            let e = if piece.len() == 8 {
                // SAFETY: piece holds 8 values.
                exp_v([unsafe { _mm256_loadu_ps(piece.as_ptr()) }], mm)[0]
            } else {
                let mut pad = [f32::NEG_INFINITY; 8];
                pad[..piece.len()].copy_from_slice(piece);
                let keep: [f32; 8] = std::array::from_fn(|k| {
                    f32::from_bits(if k < piece.len() { u32::MAX } else { 0 })
                });
                // SAFETY: pad and keep hold 8 values each.
                let (d, keep) = unsafe {
                    (
                        _mm256_loadu_ps(pad.as_ptr()),
                        _mm256_loadu_ps(keep.as_ptr()),
                    )
                };
                _mm256_and_ps(exp_v([d], mm)[0], keep)
            };
            *acc = _mm256_add_ps(*acc, e);
        }
    }
    if !rest.is_empty() {
        tail(&mut acc, rest, mm);
    }
    // SAFETY: V vectors of 8 lanes are EXP_LANES floats, laid out in lane order.
    unsafe { std::mem::transmute::<[__m256; V], [f32; EXP_LANES]>(acc) }
}

/// Ask for the cache line at `p` ahead of use. Prefetching never faults, so `p` may point
/// past the matrix.
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it reads nothing and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetch the `i`th EXP_LANES-value chunk from `ahead`: one 64-byte line per 16 values.
#[inline(always)]
fn prefetch_chunk(ahead: *const f32, i: usize) {
    for line in 0..EXP_LANES / 16 {
        prefetch(ahead.wrapping_add(i * EXP_LANES + line * 16));
    }
}

/// The lanes of Σ exp(s_j − m): lane k sums the values at positions ≡ k (mod EXP_LANES).
#[inline(always)]
fn exp_sum(s: &[f32], m: f32, ahead: *const f32) -> [f32; EXP_LANES] {
    let mut acc = [0f32; EXP_LANES];
    let chunks = s.chunks_exact(EXP_LANES);
    let rest = chunks.remainder();
    for (i, c) in chunks.enumerate() {
        prefetch_chunk(ahead, i);
        for k in 0..EXP_LANES {
            acc[k] += exp_nonpos(c[k] - m);
        }
    }
    for (a, &x) in acc.iter_mut().zip(rest) {
        *a += exp_nonpos(x - m);
    }
    acc
}

/// log Σ exp(s_j − m), given m = max_j s_j (finite). The loop is compute-bound on data
/// already in L1, so it prefetches the next row (`ahead`, one 64-byte line per 16 values)
/// meanwhile: otherwise memory would sit idle here and the next row would then wait for it.
#[inline(always)]
fn log_sum_exp_rel<const AVX2: bool>(s: &[f32], m: f32, ahead: *const f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2 is true only on the path chosen after detecting AVX2 and FMA.
    let acc = if AVX2 {
        unsafe { exp_sum_avx2(s, m, ahead) }
    } else {
        exp_sum(s, m, ahead)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let acc = exp_sum(s, m, ahead);
    // Lanes summed pairwise in f64: a short dependency chain, and no f32 rounding here.
    let mut sum = [0f64; EXP_LANES];
    for (s, &a) in sum.iter_mut().zip(&acc) {
        *s = a as f64;
    }
    let mut width = EXP_LANES / 2;
    while width > 0 {
        for k in 0..width {
            sum[k] += sum[k + width];
        }
        width /= 2;
    }
    sum[0].ln()
}

/// The statistics of one row with true class `y`.
#[inline(always)]
pub fn row_stat(row: &[f32], y: usize, with_lse: bool) -> RowStat {
    row_stat_ahead::<false>(row, y, with_lse, row.as_ptr().wrapping_add(row.len()))
}

/// [`row_stat`], prefetching from `ahead` (the next row) while computing the exp-sum.
#[inline(always)]
fn row_stat_ahead<const AVX2: bool>(
    row: &[f32],
    y: usize,
    with_lse: bool,
    ahead: *const f32,
) -> RowStat {
    let (a, wa) = max_and_witness(&row[..y]);
    let (b, wb) = max_and_witness(&row[y + 1..]);
    let pos = row[y];
    let finite = wa + wb + pos * 0.0 == 0.0;
    let neg = if a > b { a } else { b };
    let ln_sum = if with_lse && finite && pos > neg {
        log_sum_exp_rel::<AVX2>(row, pos, ahead)
    } else {
        f64::NAN
    };
    RowStat {
        pos,
        neg,
        ln_sum,
        finite,
    }
}

/// Rows of `data` (`cols` wide) into `out`, one per label.
#[inline(always)]
fn fill<const AVX2: bool>(
    data: &[f32],
    cols: usize,
    labels: &[u32],
    with_lse: bool,
    out: &mut [RowStat],
) {
    for ((row, &y), o) in data.chunks_exact(cols).zip(labels).zip(out) {
        let next = row.as_ptr().wrapping_add(cols);
        *o = row_stat_ahead::<AVX2>(row, y as usize, with_lse, next);
    }
}

/// [`fill`] compiled for AVX2 and FMA (same operations, wider vectors, hardware FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fill_avx2(
    data: &[f32],
    cols: usize,
    labels: &[u32],
    with_lse: bool,
    out: &mut [RowStat],
) {
    fill::<true>(data, cols, labels, with_lse, out)
}

fn fill_best(data: &[f32], cols: usize, labels: &[u32], with_lse: bool, out: &mut [RowStat]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { fill_avx2(data, cols, labels, with_lse, out) };
    }
    fill::<false>(data, cols, labels, with_lse, out)
}

/// One parallel pass over the matrix.
pub fn row_stats(m: &Matrix<'_>, labels: &[u32], with_lse: bool) -> Vec<RowStat> {
    assert_eq!(labels.len(), m.rows, "one label per row");
    const ROWS: usize = 32; // rows per task: enough work to amortise scheduling
    let blank = RowStat {
        pos: 0.0,
        neg: 0.0,
        ln_sum: f64::NAN,
        finite: false,
    };
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
            let bound = if x >= -17.0 { 1.2e-7 } else { 3.2e-7 };
            assert!(
                ((got - want) / want).abs() < bound,
                "exp({x}): {got} vs {want}"
            );
            x += 0.000_37;
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
            let blank = RowStat {
                pos: 0.0,
                neg: 0.0,
                ln_sum: 0.0,
                finite: false,
            };
            let (mut a, mut b) = (vec![blank; rows], vec![blank; rows]);
            fill::<false>(&data, cols, &labels, true, &mut a);
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
