//! Distribution statistics of positive and negative metrics, for the paper's Fig. 2 and 3.
//!
//! Following the paper, only samples that are correctly (sample-wise) classified by the model
//! with its bias enter these statistics; the same set of samples is used for the metrics
//! without bias, so the two views show the same samples. For class i:
//! * minimum positive metric: min c_i(x) over its correct samples x;
//! * maximum type-I negative metric: max c_j(x), j ≠ i, over its correct samples x;
//! * maximum type-II negative metric: max c_i(x) over correct samples x of other classes.
//!
//! The "maximum negative" whose mean and standard deviation are reported is the type-I one
//! (the negatives of Eq. 17). Means and standard deviations are over the classes that have at
//! least one correct sample (population standard deviation). The overlap range is
//! [min positive, max negative] over all correct samples, present only when the positives and
//! negatives are not separated (Eq. 12 fails). The histograms cover [min, max] of all
//! metrics of correct samples with a fixed number of equal bins (the last one closed): `pos`
//! counts one positive per sample, `neg` all N − 1 negatives per sample.

use rayon::prelude::*;

use super::input::Matrix;
use super::rows::{max_of, min_of};

/// Statistics of one matrix (with or without bias).
#[derive(Clone, Debug, PartialEq)]
pub struct Dist {
    /// Per class; `None` where the class has no correct sample (or no negatives at all).
    pub min_pos: Vec<Option<f32>>,
    pub max_neg_type1: Vec<Option<f32>>,
    pub max_neg_type2: Vec<Option<f32>>,
    pub mean_min_pos: Option<f64>,
    pub std_min_pos: Option<f64>,
    pub mean_max_neg: Option<f64>,
    pub std_max_neg: Option<f64>,
    /// [min positive, max negative] when they overlap.
    pub overlap: Option<(f32, f32)>,
    /// Its width; 0 when there is no overlap.
    pub overlap_width: f64,
    pub hist: Hist,
    /// Number of samples the statistics are taken over.
    pub samples: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hist {
    pub lo: f32,
    pub hi: f32,
    pub bins: usize,
    pub pos: Vec<u64>,
    pub neg: Vec<u64>,
}

fn finite(v: f32) -> Option<f32> {
    v.is_finite().then_some(v)
}

fn mean_std(v: &[Option<f32>]) -> (Option<f64>, Option<f64>) {
    let xs: Vec<f64> = v.iter().flatten().map(|&x| x as f64).collect();
    if xs.is_empty() {
        return (None, None);
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / xs.len() as f64;
    (Some(mean), Some(var.sqrt()))
}

/// Bin mapping for [lo, hi] with `bins` equal bins; values at hi go in the last bin.
#[derive(Clone, Copy)]
struct Binner {
    lo: f64,
    scale: f64,
    last: usize,
}

impl Binner {
    fn new(lo: f32, hi: f32, bins: usize) -> Self {
        let width = hi as f64 - lo as f64;
        let scale = if width > 0.0 {
            bins as f64 / width
        } else {
            0.0
        };
        Self {
            lo: lo as f64,
            scale,
            last: bins - 1,
        }
    }
    #[inline]
    fn bin(&self, x: f32) -> usize {
        (((x as f64 - self.lo) * self.scale) as usize).min(self.last)
    }
}

/// Compute the statistics of `m` over the samples with `include[i]` (the correct ones).
/// `bins` must be at least 1. Rows of `m` with a non-finite metric are skipped.
pub fn distribution(m: &Matrix<'_>, labels: &[u32], include: &[bool], bins: usize) -> Dist {
    assert!(bins >= 1, "at least one histogram bin");
    let classes = m.cols;
    // Pass 1: per included finite row, (row, class, positive, max negative, row minimum).
    let rows: Vec<(usize, u32, f32, f32, f32)> = (0..m.rows)
        .into_par_iter()
        .with_min_len(256)
        .filter(|&i| include[i])
        .filter_map(|i| {
            let row = m.row(i);
            if !row.iter().all(|x| x.is_finite()) {
                return None;
            }
            let y = labels[i] as usize;
            let neg = max_of(&row[..y]).max(max_of(&row[y + 1..]));
            Some((i, y as u32, row[y], neg, min_of(row)))
        })
        .collect();

    let mut min_pos = vec![f32::INFINITY; classes];
    let mut max_t1 = vec![f32::NEG_INFINITY; classes];
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    let (mut pmin, mut qmax) = (f32::INFINITY, f32::NEG_INFINITY);
    for &(_, y, p, q, rmin) in &rows {
        let y = y as usize;
        min_pos[y] = min_pos[y].min(p);
        max_t1[y] = max_t1[y].max(q);
        lo = lo.min(rmin);
        hi = hi.max(p.max(q));
        pmin = pmin.min(p);
        qmax = qmax.max(q);
    }
    if rows.is_empty() {
        (lo, hi) = (0.0, 0.0);
    }
    let binner = Binner::new(lo, hi, bins);

    // Pass 2: type-II maxima (column maxima over other classes' rows) and histograms.
    let identity = || {
        (
            vec![f32::NEG_INFINITY; classes],
            vec![0u64; bins],
            vec![0u64; bins],
        )
    };
    let (max_t2, hist_pos, hist_neg) = rows
        .par_iter()
        .with_min_len(64)
        .fold(
            identity,
            |(mut colmax, mut hp, mut hn), &(i, y, p, _, _)| {
                let row = m.row(i);
                let y = y as usize;
                let keep = colmax[y];
                for (c, &x) in colmax.iter_mut().zip(row) {
                    *c = if x > *c { x } else { *c };
                }
                colmax[y] = keep;
                for &x in row {
                    hn[binner.bin(x)] += 1;
                }
                hn[binner.bin(p)] -= 1;
                hp[binner.bin(p)] += 1;
                (colmax, hp, hn)
            },
        )
        .reduce(identity, |(mut a, mut ap, mut an), (b, bp, bn)| {
            for (x, y) in a.iter_mut().zip(&b) {
                *x = x.max(*y);
            }
            for (x, y) in ap.iter_mut().zip(&bp) {
                *x += y;
            }
            for (x, y) in an.iter_mut().zip(&bn) {
                *x += y;
            }
            (a, ap, an)
        });

    let min_pos: Vec<Option<f32>> = min_pos.into_iter().map(finite).collect();
    let max_neg_type1: Vec<Option<f32>> = max_t1.into_iter().map(finite).collect();
    let max_neg_type2: Vec<Option<f32>> = max_t2.into_iter().map(finite).collect();
    let (mean_min_pos, std_min_pos) = mean_std(&min_pos);
    let (mean_max_neg, std_max_neg) = mean_std(&max_neg_type1);
    let overlap = (pmin <= qmax && pmin.is_finite() && qmax.is_finite()).then_some((pmin, qmax));
    let overlap_width = overlap.map_or(0.0, |(a, b)| b as f64 - a as f64);
    Dist {
        min_pos,
        max_neg_type1,
        max_neg_type2,
        mean_min_pos,
        std_min_pos,
        mean_max_neg,
        std_max_neg,
        overlap,
        overlap_width,
        hist: Hist {
            lo,
            hi,
            bins,
            pos: hist_pos,
            neg: hist_neg,
        },
        samples: rows.len(),
    }
}
