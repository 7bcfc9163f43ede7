//! The best single threshold for a set of samples, by sorting and one sweep.
//!
//! A sample with positive metric p and maximum negative metric q is counted at threshold t iff
//! p > t ≥ q (Eq. 7), i.e. iff t lies in the half-open interval [q, p). The number of samples
//! counted at t is therefore a step function that rises at every q and falls at every p; its
//! maximum over t (Eqs. 14–16) is found by sorting the 2n endpoints and sweeping once:
//! O(n log n). Every endpoint value v is handled as one event (all rises and falls at v
//! together), because the count at t = v already includes the samples starting at v and
//! excludes those ending at v. The count is constant on [v_k, v_{k+1}) between consecutive
//! distinct endpoints, so the maximisers are a union of such pieces; we report the first
//! maximal run of pieces as the interval [lo, hi) and its midpoint as t*.

/// The best threshold for one set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Best {
    /// The largest number of samples counted at one threshold.
    pub count: usize,
    /// The first maximising interval [lo, hi): every t in it counts `count` samples, t just
    /// below lo and t = hi count fewer. `None` when `count` is 0 (every t is a maximiser).
    /// `lo` is −∞ when a sample has no negatives (a single class).
    pub interval: Option<(f64, f64)>,
}

impl Best {
    /// The reported threshold: the midpoint of the first maximising interval, or `None` when
    /// that is undefined (no sample classifiable, or the interval is unbounded).
    pub fn t_star(&self) -> Option<f64> {
        let (lo, hi) = self.interval?;
        (lo.is_finite() && hi.is_finite()).then(|| lo + (hi - lo) / 2.0)
    }
}

/// An order-preserving integer image of a non-NaN f64 (−0 taken as +0, so that equal values
/// get equal keys): integer sorting is markedly faster than sorting with a float comparator.
#[inline]
pub fn key(v: f64) -> u64 {
    let b = (v + 0.0).to_bits();
    if b >> 63 == 1 { !b } else { b | 1 << 63 }
}

#[inline]
fn value(k: u64) -> f64 {
    if k >> 63 == 1 { f64::from_bits(k & !(1 << 63)) } else { f64::from_bits(!k) }
}

/// Best threshold for the intervals [q_i, p_i) whose keys are given: `starts` the sorted keys
/// of every q_i, `ends` the sorted keys of every p_i (each interval non-empty).
pub fn best_of_sorted(starts: &[u64], ends: &[u64]) -> Best {
    debug_assert_eq!(starts.len(), ends.len());
    if starts.is_empty() {
        return Best { count: 0, interval: None };
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut count = 0usize;
    let mut best = 0usize;
    let mut lo = 0u64;
    let mut hi = 0u64;
    // Whether the previous piece was part of the current best run (so an equal count extends it).
    let mut in_best_run = false;
    while j < ends.len() {
        // The next distinct endpoint value (an end always remains while a start does: q < p).
        let v = if i < starts.len() { starts[i].min(ends[j]) } else { ends[j] };
        while i < starts.len() && starts[i] == v {
            count += 1;
            i += 1;
        }
        while j < ends.len() && ends[j] == v {
            count -= 1;
            j += 1;
        }
        // The piece [v, next) has `count`; close a best run that ends at v.
        if in_best_run && count != best {
            hi = v;
            in_best_run = false;
        }
        if count > best {
            best = count;
            lo = v;
            in_best_run = true;
        }
    }
    // The last endpoint is an end, after which the count is 0 < best, so the run was closed.
    debug_assert!(!in_best_run);
    Best { count: best, interval: Some((value(lo), value(hi))) }
}

/// Best threshold for intervals [q_i, p_i). Pairs with q ≥ p (empty interval: not sample-wise
/// correct) or NaN are ignored.
pub fn best_threshold(pairs: impl Iterator<Item = (f64, f64)>) -> Best {
    let (mut starts, mut ends): (Vec<u64>, Vec<u64>) =
        pairs.filter(|(q, p)| q < p).map(|(q, p)| (key(q), key(p))).unzip();
    starts.sort_unstable();
    ends.sort_unstable();
    best_of_sorted(&starts, &ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_the_values() {
        let vals = [f64::NEG_INFINITY, -1e300, -2.5, -1e-300, -0.0, 0.0, 1e-300, 3.0, 1e300, f64::INFINITY];
        for w in vals.windows(2) {
            assert!(key(w[0]) <= key(w[1]), "{} {}", w[0], w[1]);
            assert_eq!(key(w[0]) == key(w[1]), w[0] == w[1], "{} {}", w[0], w[1]);
        }
        for v in vals {
            assert_eq!(value(key(v)), v + 0.0);
        }
    }

    fn best(pairs: &[(f64, f64)]) -> Best {
        best_threshold(pairs.iter().copied())
    }

    #[test]
    fn hand_worked() {
        // [0,2), [1,3), [2,4): t in [1,2) counts two, t = 2 counts two ([1,3),[2,4)) as well.
        let b = best(&[(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]);
        assert_eq!(b.count, 2);
        assert_eq!(b.interval, Some((1.0, 3.0)));
        assert_eq!(b.t_star(), Some(2.0));
        // Touching intervals [0,1) and [1,2) never overlap: the best count is 1 on [0, 2).
        let b = best(&[(0.0, 1.0), (1.0, 2.0)]);
        assert_eq!((b.count, b.interval), (1, Some((0.0, 2.0))));
        // Two separate maximal runs: the first is reported.
        let b = best(&[(0.0, 1.0), (0.0, 1.0), (5.0, 6.0), (5.0, 6.0)]);
        assert_eq!((b.count, b.interval), (2, Some((0.0, 1.0))));
        // Empty intervals count nothing.
        let b = best(&[(1.0, 1.0), (2.0, 0.0)]);
        assert_eq!((b.count, b.interval, b.t_star()), (0, None, None));
        // A single class: no negatives, lower end −∞, t* undefined.
        let b = best(&[(f64::NEG_INFINITY, 3.0), (f64::NEG_INFINITY, 1.0)]);
        assert_eq!((b.count, b.interval), (2, Some((f64::NEG_INFINITY, 1.0))));
        assert_eq!(b.t_star(), None);
    }
}
