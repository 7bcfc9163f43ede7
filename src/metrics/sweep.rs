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
//!
//! For large sets, [`best_of_unsorted`] first buckets the endpoints and sorts only the few
//! buckets that can hold the maximum, which makes the search linear in practice.

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
    if k >> 63 == 1 {
        f64::from_bits(k & !(1 << 63))
    } else {
        f64::from_bits(!k)
    }
}

/// The sweep's state: the running count and the first maximal run of pieces seen so far.
struct Sweep {
    best: usize,
    lo: u64,
    hi: u64,
    /// Whether the previous piece was part of the current best run (an equal count extends it).
    in_best_run: bool,
}

impl Sweep {
    fn new() -> Self {
        Self {
            best: 0,
            lo: 0,
            hi: 0,
            in_best_run: false,
        }
    }

    /// The piece [v, next) has `count`; close a best run that ends at v, or start a new one.
    #[inline]
    fn piece(&mut self, v: u64, count: usize) {
        if self.in_best_run && count != self.best {
            self.hi = v;
            self.in_best_run = false;
        }
        if count > self.best {
            self.best = count;
            self.lo = v;
            self.in_best_run = true;
        }
    }

    /// The endpoints of one stretch of values, each list sorted, all above the previous
    /// stretch's; `count` intervals are open just below it. Every value v is one event: the
    /// count at t = v includes the intervals starting at v and excludes those ending at v.
    fn stretch(&mut self, mut count: usize, starts: &[u64], ends: &[u64]) {
        let (mut i, mut j) = (0usize, 0usize);
        while i < starts.len() || j < ends.len() {
            let v = match (starts.get(i), ends.get(j)) {
                (Some(&s), Some(&e)) => s.min(e),
                (Some(&s), None) => s,
                (None, Some(&e)) => e,
                (None, None) => unreachable!(),
            };
            while i < starts.len() && starts[i] == v {
                count += 1;
                i += 1;
            }
            while j < ends.len() && ends[j] == v {
                count -= 1;
                j += 1;
            }
            self.piece(v, count);
        }
    }

    fn finish(self) -> Best {
        if self.best == 0 {
            return Best {
                count: 0,
                interval: None,
            };
        }
        // The last endpoint is an end, after which the count is 0 < best: the run was closed.
        debug_assert!(!self.in_best_run);
        Best {
            count: self.best,
            interval: Some((value(self.lo), value(self.hi))),
        }
    }
}

/// Best threshold for intervals [q_i, p_i) given as the sorted keys of every q_i (`starts`)
/// and of every p_i (`ends`), each interval non-empty.
pub fn best_of_sorted(starts: &[u64], ends: &[u64]) -> Best {
    let mut sweep = Sweep::new();
    sweep.stretch(0, starts, ends);
    sweep.finish()
}

/// [`best_of_sorted`] after sorting both lists in place.
pub fn sort_and_sweep(starts: &mut [u64], ends: &mut [u64]) -> Best {
    starts.sort_unstable();
    ends.sort_unstable();
    best_of_sorted(starts, ends)
}

/// Below this many intervals, sorting everything is cheaper than bucketing first.
const SORT_ALL_BELOW: usize = 512;

/// [`best_of_sorted`] for keys in any order, in linear time in practice: the keys are counted
/// into n/8 buckets of equal value width, which bounds the count inside every bucket by the
/// count before it plus the intervals starting in it. The largest count between buckets is a
/// count some threshold achieves, so only buckets whose bound reaches it can hold the maximum
/// or the start of the first maximising run; only those are sorted and swept exactly, each
/// starting from the count before it. Skewed keys degrade this to sorting everything, never
/// to a wrong answer.
pub fn best_of_unsorted(starts: &mut [u64], ends: &mut [u64]) -> Best {
    debug_assert_eq!(starts.len(), ends.len());
    let n = starts.len();
    if n < SORT_ALL_BELOW {
        return sort_and_sweep(starts, ends);
    }
    // The smallest endpoint is a start and the largest an end (q < p for every interval).
    let low = value(starts.iter().copied().min().unwrap_or(0));
    let high = value(ends.iter().copied().max().unwrap_or(0));
    let buckets = n / 8;
    let scale = buckets as f64 / (high - low);
    if !(scale.is_finite() && scale > 0.0) {
        // Infinite ends (a single class): no equal-width buckets.
        return sort_and_sweep(starts, ends);
    }
    // Equal widths in value, not in key (keys spread tiny magnitudes over most of their
    // range). Rounding keeps this monotone, so equal keys share a bucket and buckets are ordered.
    let bucket = |k: u64| (((value(k) - low) * scale) as usize).min(buckets - 1);

    // Each key's bucket, and the number of starts and of ends per bucket.
    let into_buckets = |keys: &[u64], per_bucket: &mut [u32]| -> Vec<u32> {
        keys.iter()
            .map(|&k| {
                let b = bucket(k);
                per_bucket[b] += 1;
                b as u32
            })
            .collect()
    };
    let (mut opened, mut closed) = (vec![0u32; buckets], vec![0u32; buckets]);
    let start_bucket = into_buckets(starts, &mut opened);
    let end_bucket = into_buckets(ends, &mut closed);

    // The count between buckets, and the largest of those: achieved, so a lower bound.
    let mut before = Vec::with_capacity(buckets);
    let mut count = 0usize;
    let mut floor = 0usize;
    for b in 0..buckets {
        before.push(count);
        count = count + opened[b] as usize - closed[b] as usize;
        floor = floor.max(count);
    }
    let exact: Vec<bool> = (0..buckets)
        .map(|b| opened[b] + closed[b] > 0 && before[b] + opened[b] as usize >= floor)
        .collect();

    // Gather the endpoints of the exact buckets, grouped by bucket.
    let gather = |keys: &[u64], key_bucket: &[u32], per_bucket: &[u32]| -> (Vec<u64>, Vec<u32>) {
        let mut at = vec![0u32; buckets + 1];
        for b in 0..buckets {
            at[b + 1] = at[b] + if exact[b] { per_bucket[b] } else { 0 };
        }
        let mut out = vec![0u64; at[buckets] as usize];
        let mut fill = at.clone();
        for (&k, &b) in keys.iter().zip(key_bucket) {
            if exact[b as usize] {
                out[fill[b as usize] as usize] = k;
                fill[b as usize] += 1;
            }
        }
        (out, at)
    };
    let (mut s_keys, start_at) = gather(starts, &start_bucket, &opened);
    let (mut e_keys, end_at) = gather(ends, &end_bucket, &closed);

    // Every other bucket has all its counts below `floor` (the count after it included), so
    // it can neither hold the maximum nor start the first maximising run.
    let mut sweep = Sweep::new();
    for b in (0..buckets).filter(|&b| exact[b]) {
        let st = &mut s_keys[start_at[b] as usize..start_at[b + 1] as usize];
        let en = &mut e_keys[end_at[b] as usize..end_at[b + 1] as usize];
        st.sort_unstable();
        en.sort_unstable();
        sweep.stretch(before[b], st, en);
    }
    sweep.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_the_values() {
        let vals = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -1e-300,
            -0.0,
            0.0,
            1e-300,
            3.0,
            1e300,
            f64::INFINITY,
        ];
        for w in vals.windows(2) {
            assert!(key(w[0]) <= key(w[1]), "{} {}", w[0], w[1]);
            assert_eq!(key(w[0]) == key(w[1]), w[0] == w[1], "{} {}", w[0], w[1]);
        }
        for v in vals {
            assert_eq!(value(key(v)), v + 0.0);
        }
    }

    /// Best threshold for intervals [q_i, p_i); pairs with q ≥ p are ignored.
    fn best(pairs: &[(f64, f64)]) -> Best {
        let (mut starts, mut ends): (Vec<u64>, Vec<u64>) = pairs
            .iter()
            .filter(|(q, p)| q < p)
            .map(|&(q, p)| (key(q), key(p)))
            .unzip();
        best_of_unsorted(&mut starts, &mut ends)
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
