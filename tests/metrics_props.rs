//! Property tests of the uniform classification metrics against a brute-force evaluation of
//! the paper's definitions (Eqs. 7, 11–22), plus invariances and hand-worked examples.
//!
//! The brute force knows nothing of sweeps: for every candidate threshold (every metric value
//! in the matrix, and one below them all) it counts the samples with c_y(x) > t ≥ max_{j≠y}
//! c_j(x) directly from the matrix. The count is a step function whose steps sit at metric
//! values and which is constant on [v_k, v_{k+1}), so these candidates attain its maximum.
//! Matrices use small integer metrics so that ties are frequent.

use proptest::prelude::*;
use repro::metrics::{self, Matrix};

/// A metric matrix with its labels.
#[derive(Clone, Debug)]
struct Case {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
    labels: Vec<u32>,
}

impl Case {
    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
    fn eval(&self) -> metrics::Evaluation {
        let m = Matrix::new(&self.data, self.rows, self.cols).unwrap();
        metrics::evaluate(&m, &self.labels)
    }
}

/// Integer metrics in [lo, lo + width], N in 1..=max_cols, n in 1..=max_rows.
fn cases(max_rows: usize, max_cols: usize, width: i32) -> impl Strategy<Value = Case> {
    (1..=max_rows, 1..=max_cols, -3i32..=3).prop_flat_map(move |(rows, cols, lo)| {
        (
            proptest::collection::vec(lo..=lo + width, rows * cols),
            proptest::collection::vec(0..cols as u32, rows),
        )
            .prop_map(move |(d, labels)| Case {
                rows,
                cols,
                data: d.into_iter().map(|v| v as f32).collect(),
                labels,
            })
    })
}

/// The brute-force view of one matrix in one domain: per sample (positive, max negative) as
/// f64, or None when a metric is not finite.
fn pairs(case: &Case, softmax: bool) -> Vec<Option<(f64, f64)>> {
    (0..case.rows)
        .map(|i| {
            let row: Vec<f64> = case.row(i).iter().map(|&v| v as f64).collect();
            if row.iter().any(|v| !v.is_finite()) {
                return None;
            }
            let vals: Vec<f64> = if softmax {
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let mut e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
                let mut sorted = e.clone();
                sorted.sort_by(f64::total_cmp); // a fixed summation order
                let s: f64 = sorted.iter().sum();
                e.iter_mut().for_each(|v| *v /= s);
                e
            } else {
                row
            };
            let y = case.labels[i] as usize;
            let neg = vals
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != y)
                .map(|(_, &v)| v)
                .fold(f64::NEG_INFINITY, f64::max);
            Some((vals[y], neg))
        })
        .collect()
}

fn count_at(pairs: &[Option<(f64, f64)>], members: &[usize], t: f64) -> usize {
    members
        .iter()
        .filter(|&&i| matches!(pairs[i], Some((p, q)) if p > t && t >= q))
        .count()
}

fn candidates(pairs: &[Option<(f64, f64)>], members: &[usize]) -> Vec<f64> {
    let mut c: Vec<f64> = members
        .iter()
        .filter_map(|&i| pairs[i])
        .flat_map(|(p, q)| [p, q])
        .filter(|v| v.is_finite())
        .collect();
    let min = c.iter().cloned().fold(f64::INFINITY, f64::min);
    c.push(if min.is_finite() { min - 1.0 } else { 0.0 });
    c.sort_by(f64::total_cmp);
    c.dedup();
    c
}

/// Check one threshold search (uniform over `members`) against the brute force.
fn check_best(
    pairs: &[Option<(f64, f64)>],
    members: &[usize],
    got: &metrics::sweep::Best,
    what: &str,
    snap: bool,
) -> Result<(), TestCaseError> {
    let cands = candidates(pairs, members);
    // SoftMax values are computed independently here and in the library (different exp), so
    // interval ends are compared after snapping to the nearest brute-force value.
    let snap_to = |v: f64| -> Result<f64, TestCaseError> {
        if !snap || !v.is_finite() {
            return Ok(v);
        }
        let c = cands
            .iter()
            .cloned()
            .min_by(|a, b| (a - v).abs().total_cmp(&(b - v).abs()))
            .unwrap();
        prop_assert!(
            (c - v).abs() <= 1e-5 * c.abs().max(1e-3),
            "{what}: end {v} is no metric value (nearest {c})"
        );
        Ok(c)
    };
    let best = cands
        .iter()
        .map(|&t| count_at(pairs, members, t))
        .max()
        .unwrap_or(0);
    prop_assert_eq!(got.count, best, "{}: best count", what);
    if best == 0 {
        prop_assert_eq!(
            got.interval,
            None,
            "{}: no interval when nothing is classified",
            what
        );
        prop_assert_eq!(got.t_star(), None);
        return Ok(());
    }
    let (lo, hi) = got.interval.expect("interval when best > 0");
    let (lo, hi) = (snap_to(lo)?, snap_to(hi)?);
    prop_assert!(lo < hi, "{what}: empty interval [{lo}, {hi})");
    // hi is finite and counts fewer; everything below lo counts fewer (first interval).
    prop_assert!(hi.is_finite());
    prop_assert!(
        count_at(pairs, members, hi) < best,
        "{what}: t = hi still maximal"
    );
    for &t in cands.iter().filter(|&&t| t < lo) {
        prop_assert!(
            count_at(pairs, members, t) < best,
            "{what}: t = {t} < lo is maximal"
        );
    }
    for &t in cands.iter().filter(|&&t| t >= lo && t < hi) {
        prop_assert_eq!(
            count_at(pairs, members, t),
            best,
            "{}: t = {} inside interval",
            what,
            t
        );
    }
    if lo.is_finite() {
        prop_assert_eq!(count_at(pairs, members, lo), best);
        let t = got.t_star().expect("t* for a bounded interval");
        let (glo, ghi) = got.interval.unwrap();
        prop_assert!(glo <= t && t < ghi);
        prop_assert_eq!(count_at(pairs, members, t), best, "{}: count at t*", what);
    } else {
        prop_assert_eq!(
            got.t_star(),
            None,
            "{}: unbounded interval has no midpoint",
            what
        );
    }
    Ok(())
}

fn check_domain(case: &Case, a: &metrics::Accuracies, softmax: bool) -> Result<(), TestCaseError> {
    let pr = pairs(case, softmax);
    let all: Vec<usize> = (0..case.rows).collect();
    let sw = pr
        .iter()
        .filter(|p| matches!(p, Some((p, q)) if p > q))
        .count();
    prop_assert_eq!(a.count_sw, sw, "A_SW count");
    check_best(&pr, &all, &a.uni, "uniform", softmax)?;
    prop_assert_eq!(a.count_uni, a.uni.count);
    let mut cw = 0;
    for c in 0..case.cols {
        let members: Vec<usize> = all
            .iter()
            .cloned()
            .filter(|&i| case.labels[i] as usize == c)
            .collect();
        check_best(&pr, &members, &a.class[c], &format!("class {c}"), softmax)?;
        cw += a.class[c].count;
    }
    prop_assert_eq!(a.count_cw, cw, "A_CW is the sum over classes");
    prop_assert!(a.ordering_holds(), "Eq. 26");
    prop_assert!(a.count_uni <= a.count_cw && a.count_cw <= a.count_sw);
    Ok(())
}

proptest! {
    // PROPTEST_CASES overrides the default 400 for longer runs.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400)
    ))]

    #[test]
    fn raw_matches_brute_force(case in cases(12, 6, 6)) {
        let ev = case.eval();
        check_domain(&case, &ev.raw, false)?;
    }

    #[test]
    fn softmax_matches_brute_force(case in cases(12, 6, 6)) {
        let ev = case.eval();
        check_domain(&case, &ev.softmax, true)?;
        prop_assert_eq!(ev.softmax.count_sw, ev.raw.count_sw, "SoftMax leaves A_SW unchanged");
    }

    #[test]
    fn wide_rows_match_brute_force(case in cases(8, 40, 4)) {
        // More classes than the kernels' lane width, so the vectorised paths are exercised.
        let ev = case.eval();
        check_domain(&case, &ev.raw, false)?;
        check_domain(&case, &ev.softmax, true)?;
    }

    #[test]
    fn real_valued_metrics_match_brute_force(
        (rows, cols, data, labels) in (1usize..30, 1usize..20).prop_flat_map(|(r, c)| (
            Just(r), Just(c),
            proptest::collection::vec(-50f32..50f32, r * c),
            proptest::collection::vec(0..c as u32, r),
        ))
    ) {
        let case = Case { rows, cols, data, labels };
        let ev = case.eval();
        check_domain(&case, &ev.raw, false)?;
        prop_assert_eq!(ev.softmax.count_sw, ev.raw.count_sw);
    }

    #[test]
    fn adding_a_constant_shifts_thresholds(case in cases(12, 6, 6), shift in -20i32..20) {
        let a = case.eval();
        let shifted = Case { data: case.data.iter().map(|v| v + shift as f32).collect(), ..case.clone() };
        let b = shifted.eval();
        let s = shift as f64;
        prop_assert_eq!((a.raw.count_sw, a.raw.count_cw, a.raw.count_uni),
                        (b.raw.count_sw, b.raw.count_cw, b.raw.count_uni));
        prop_assert_eq!(a.raw.uni.t_star().map(|t| t + s), b.raw.uni.t_star());
        prop_assert_eq!(a.raw.uni.interval.map(|(l, h)| (l + s, h + s)), b.raw.uni.interval);
        for (x, y) in a.raw.class.iter().zip(&b.raw.class) {
            prop_assert_eq!(x.t_star().map(|t| t + s), y.t_star());
        }
        // SoftMax is shift invariant: everything identical.
        prop_assert_eq!(&a.softmax, &b.softmax);
    }

    #[test]
    fn permuting_samples_changes_nothing(case in cases(12, 6, 6), seed in any::<u64>()) {
        let mut order: Vec<usize> = (0..case.rows).collect();
        // A deterministic shuffle from the seed (Fisher–Yates with an LCG).
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (x >> 33) as usize % (i + 1));
        }
        let permuted = Case {
            data: order.iter().flat_map(|&i| case.row(i).to_vec()).collect(),
            labels: order.iter().map(|&i| case.labels[i]).collect(),
            ..case.clone()
        };
        let (a, b) = (case.eval(), permuted.eval());
        prop_assert_eq!(&a.raw, &b.raw);
        prop_assert_eq!(&a.softmax, &b.softmax);
    }
}

/// Intervals [q, p) as keys, drawn so that ties, wide ranges and heavily skewed keys (most
/// values in a narrow band, a few far away) all occur.
fn interval_keys() -> impl Strategy<Value = (Vec<u64>, Vec<u64>)> {
    let value = prop_oneof![
        (-6i32..6).prop_map(|v| v as f64),
        -1e3f64..1e3,
        (0u32..1000).prop_map(|v| 1.0 + v as f64 * 1e-9),
        Just(-1e30),
        Just(1e30),
    ];
    proptest::collection::vec((value.clone(), value), 512..3000).prop_map(|pairs| {
        pairs
            .into_iter()
            .filter(|(a, b)| a != b)
            .map(|(a, b)| (metrics::sweep::key(a.min(b)), metrics::sweep::key(a.max(b))))
            .unzip()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400) / 8
    ))]

    #[test]
    fn bucketed_sweep_matches_sorting_everything((mut starts, mut ends) in interval_keys()) {
        // The sweep over fully sorted keys is the one the brute-force tests above check.
        let (mut s, mut e) = (starts.clone(), ends.clone());
        s.sort_unstable();
        e.sort_unstable();
        let want = metrics::sweep::best_of_sorted(&s, &e);
        prop_assert_eq!(metrics::sweep::best_of_unsorted(&mut starts, &mut ends), want);
    }

    #[test]
    fn large_matrices_match_brute_force(case in cases(1500, 4, 8).prop_filter("enough rows", |c| c.rows >= 600)) {
        // Enough samples for the bucketed uniform sweep.
        let ev = case.eval();
        check_domain(&case, &ev.raw, false)?;
        check_domain(&case, &ev.softmax, true)?;
    }
}

fn case(cols: usize, rows: &[&[f32]], labels: &[u32]) -> Case {
    Case {
        rows: rows.len(),
        cols,
        data: rows.concat(),
        labels: labels.to_vec(),
    }
}

#[test]
fn hand_worked_three_classes() {
    // Sample (class): metrics           positive  max negative  counted for t in
    // 0 (0): [ 5, 1, 2]                 5         2             [2, 5)
    // 1 (0): [ 3, 0, 4]                 3         4             never (wrong)
    // 2 (1): [ 0, 6, 1]                 6         1             [1, 6)
    // 3 (1): [ 2, 3, 2]                 3         2             [2, 3)
    // 4 (2): [-1, 0, 1]                 1         0             [0, 1)
    // 5 (2): [ 1, 1, 7]                 7         1             [1, 7)
    // A_SW = 5/6. Uniform: t in [2, 3) counts samples 0, 2, 3, 5 = 4; that is the most
    // (t in [1,2) counts 2 and 5; t in [3,5) counts 0, 2, 5), so A_Uni = 4/6, t* = 2.5.
    // Class-wise: class 0 best 1 (sample 0, t in [2,5): t0* = 3.5); class 1 best 2 on [2,3)
    // (t1* = 2.5); class 2 best 1 on [0,1) and on [1,7), which touch, so the first maximising
    // interval is [0, 7) and t2* = 3.5. A_CW = 4/6.
    let c = case(
        3,
        &[
            &[5., 1., 2.],
            &[3., 0., 4.],
            &[0., 6., 1.],
            &[2., 3., 2.],
            &[-1., 0., 1.],
            &[1., 1., 7.],
        ],
        &[0, 0, 1, 1, 2, 2],
    );
    let ev = c.eval();
    let r = &ev.raw;
    assert_eq!((r.count_sw, r.count_cw, r.count_uni), (5, 4, 4));
    assert_eq!(r.uni.interval, Some((2.0, 3.0)));
    assert_eq!(r.uni.t_star(), Some(2.5));
    let t: Vec<_> = r.class.iter().map(|b| b.t_star()).collect();
    assert_eq!(t, vec![Some(3.5), Some(2.5), Some(3.5)]);
    assert_eq!(r.class[2].interval, Some((0.0, 7.0)));
    assert!((r.pct(r.count_sw) - 500.0 / 6.0).abs() < 1e-12);
    assert_eq!(ev.softmax.count_sw, 5);
}

#[test]
fn uniform_can_be_below_class_wise() {
    // Class 0 separates at t in [0, 1), class 1 only at t in [10, 11): no single threshold
    // serves both, so A_Uni = 50% < A_CW = A_SW = 100% (Eq. 26 strict).
    let c = case(2, &[&[1., 0.], &[10., 11.]], &[0, 1]);
    let r = c.eval().raw;
    assert_eq!((r.count_sw, r.count_cw, r.count_uni), (2, 2, 1));
    assert_eq!(r.uni.interval, Some((0.0, 1.0)));
    assert_eq!(r.class[1].interval, Some((10.0, 11.0)));
}

#[test]
fn single_class_one_sample_and_all_equal() {
    // N = 1: no negatives, every finite sample is correct, thresholds below the positive.
    let c = case(1, &[&[2.], &[-1.], &[5.]], &[0, 0, 0]);
    let r = c.eval().raw;
    assert_eq!((r.count_sw, r.count_cw, r.count_uni), (3, 3, 3));
    assert_eq!(r.uni.interval, Some((f64::NEG_INFINITY, -1.0)));
    assert_eq!(r.uni.t_star(), None);
    // One sample.
    let c = case(3, &[&[0., 2., 1.]], &[1]);
    let r = c.eval().raw;
    assert_eq!((r.count_sw, r.count_uni, r.uni.t_star()), (1, 1, Some(1.5)));
    assert_eq!(r.class[0].interval, None, "empty classes have no threshold");
    // All metrics equal: nothing is separable (Eq. 7 needs c_y > t ≥ c_j).
    let c = case(3, &[&[4., 4., 4.], &[4., 4., 4.]], &[0, 2]);
    let ev = c.eval();
    for a in [&ev.raw, &ev.softmax] {
        assert_eq!((a.count_sw, a.count_cw, a.count_uni), (0, 0, 0));
        assert_eq!(a.uni.t_star(), None);
    }
}

#[test]
fn non_finite_rows_count_as_wrong() {
    let c = case(
        2,
        &[
            &[f32::NAN, 0.],
            &[f32::INFINITY, 0.],
            &[3., f32::NEG_INFINITY],
            &[1., 0.],
        ],
        &[0, 0, 0, 0],
    );
    let ev = c.eval();
    assert_eq!(ev.non_finite_samples, 3);
    for a in [&ev.raw, &ev.softmax] {
        assert_eq!((a.count_sw, a.count_cw, a.count_uni), (1, 1, 1));
    }
}

#[test]
fn softmax_thresholds_are_probabilities() {
    // Two classes, rows [2, 0] (class 0) and [0, 1] (class 1): SoftMax positives
    // 1/(1+e^-2) ≈ 0.881 and 1/(1+e^-1) ≈ 0.731, negatives 0.119 and 0.269; one threshold in
    // [0.269, 0.731) separates both.
    let c = case(2, &[&[2., 0.], &[0., 1.]], &[0, 1]);
    let s = c.eval().softmax;
    assert_eq!(s.count_uni, 2);
    let (lo, hi) = s.uni.interval.unwrap();
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    assert!(
        (lo - sig(-1.0)).abs() < 1e-6 && (hi - sig(1.0)).abs() < 1e-6,
        "{lo} {hi}"
    );
    assert!((s.uni.t_star().unwrap() - 0.5).abs() < 1e-6);
}
