//! A_SW, A_CW and A_Uni with their thresholds (Eqs. 11, 13–22), from per-sample statistics.
//!
//! Sample-wise (Eq. 11): a sample counts iff p > q (some threshold separates its positive from
//! its negatives). Uniform (Eqs. 13–16): the best single threshold over all samples.
//! Class-wise (Eqs. 17–22): the best threshold per class, counts summed. Each is computed on
//! the metrics as given ([`Domain::Raw`]) and after SoftMax over each sample's metric vector
//! ([`Domain::Softmax`], Supplement S.IV). SoftMax is monotone within a row, so a sample's
//! SoftMax positive and maximum negative are exp(p − m − s) and exp(q − m − s), with m the row
//! maximum and s = log Σ_j exp(c_j − m); the sweep runs on their logarithms (f64, no underflow
//! to 0) and the thresholds are mapped back with exp. Samples whose row has a non-finite metric count as wrong everywhere.

use rayon::prelude::*;

use super::rows::RowStat;
use super::sweep::{self, Best};

/// Which metric values the thresholds act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    Raw,
    Softmax,
}

/// The three accuracies (as counts) and thresholds in one domain.
#[derive(Clone, Debug, PartialEq)]
pub struct Accuracies {
    pub n: usize,
    pub count_sw: usize,
    pub count_cw: usize,
    pub count_uni: usize,
    /// Uniform threshold: best count and first maximising interval, in the domain's units.
    pub uni: Best,
    /// Per class: best count and interval (count 0 and no interval for an empty class).
    pub class: Vec<Best>,
}

impl Accuracies {
    pub fn pct(&self, count: usize) -> f64 {
        100.0 * count as f64 / self.n as f64
    }
    /// Eq. 26: A_Uni ≤ A_CW ≤ A_SW (holds by construction; checked, never assumed).
    pub fn ordering_holds(&self) -> bool {
        self.count_uni <= self.count_cw && self.count_cw <= self.count_sw
    }
}

/// The (start, end) of the interval of thresholds that count a sample, in the given domain.
/// Non-finite rows yield an empty interval.
#[inline]
fn interval(s: &RowStat, domain: Domain) -> (f64, f64) {
    if !s.finite {
        return (f64::NAN, f64::NAN);
    }
    match domain {
        Domain::Raw => (s.neg as f64, s.pos as f64),
        Domain::Softmax => {
            // f32 differences are exact in f64, so equal shifted rows give equal values.
            let m = s.pos.max(s.neg) as f64;
            ((s.neg as f64 - m) - s.ln_sum, (s.pos as f64 - m) - s.ln_sum)
        }
    }
}

/// Map a log-domain threshold interval back to SoftMax values. A lower end of −∞ (no
/// negatives: a single class) stays −∞, since every t < hi then counts, negative t included.
fn exp_best(b: Best) -> Best {
    let exp = |v: f64| if v == f64::NEG_INFINITY { v } else { v.exp() };
    Best {
        count: b.count,
        interval: b.interval.map(|(lo, hi)| (exp(lo), exp(hi))),
    }
}

/// Evaluate one domain. `classes` is N; `labels[i]` < N.
///
/// One sequential pass over the samples writes the interval keys twice: in sample order for
/// the uniform sweep, and grouped by class (offsets from counting the labels) for the
/// class-wise sweeps, so that no sweep reads samples scattered through memory.
pub fn accuracies(stats: &[RowStat], labels: &[u32], classes: usize, domain: Domain) -> Accuracies {
    assert_eq!(stats.len(), labels.len());
    let n = stats.len();
    let mut offsets = vec![0usize; classes + 1];
    for &y in labels {
        offsets[y as usize + 1] += 1;
    }
    for c in 0..classes {
        offsets[c + 1] += offsets[c];
    }
    let mut fill = offsets[..classes].to_vec();
    // Written without a branch on the sample's correctness (unpredictable, and this loop is
    // short): every sample's keys are written and the positions advance only for correct ones.
    let (mut starts, mut ends) = (vec![0u64; n], vec![0u64; n]);
    let (mut class_starts, mut class_ends) = (vec![0u64; n], vec![0u64; n]);
    let mut count_sw = 0;
    for (s, &y) in stats.iter().zip(labels) {
        let (q, p) = interval(s, domain);
        let correct = (q < p) as usize;
        let (q, p) = (sweep::key(q), sweep::key(p));
        starts[count_sw] = q;
        ends[count_sw] = p;
        count_sw += correct;
        let at = &mut fill[y as usize];
        class_starts[*at] = q;
        class_ends[*at] = p;
        *at += correct;
    }
    starts.truncate(count_sw);
    ends.truncate(count_sw);

    // Each class's keys as its own pair of slices, so that classes are swept in parallel.
    let mut per_class = Vec::with_capacity(classes);
    let (mut rest_starts, mut rest_ends) = (&mut class_starts[..], &mut class_ends[..]);
    for c in 0..classes {
        let size = offsets[c + 1] - offsets[c];
        let (st, more_starts) = rest_starts.split_at_mut(size);
        let (en, more_ends) = rest_ends.split_at_mut(size);
        let correct = fill[c] - offsets[c];
        per_class.push((&mut st[..correct], &mut en[..correct]));
        (rest_starts, rest_ends) = (more_starts, more_ends);
    }
    let (mut uni, mut class) = rayon::join(
        || sweep::best_of_unsorted(&mut starts, &mut ends),
        || {
            per_class
                .into_par_iter()
                .with_min_len(64)
                .map(|(st, en)| sweep::sort_and_sweep(st, en))
                .collect::<Vec<Best>>()
        },
    );
    let count_cw = class.iter().map(|b| b.count).sum();

    if domain == Domain::Softmax {
        uni = exp_best(uni);
        class = class.into_iter().map(exp_best).collect();
    }
    Accuracies {
        n,
        count_sw,
        count_cw,
        count_uni: uni.count,
        uni,
        class,
    }
}
