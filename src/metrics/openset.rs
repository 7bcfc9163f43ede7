//! Open-set rejection with one unified threshold: a model trained on the known classes sees
//! test images of known and of unseen classes; an image is rejected when no class metric
//! exceeds the threshold t (its maximum metric ≤ t).
//!
//! Per threshold: the share of unknown images rejected, and the known-class accuracy at that
//! threshold (accepted *and* its largest metric is its own class). Thresholds chosen per loss
//! (t*, the bias) leave the losses at different known-class acceptance, so they are compared
//! at a matched operating point as well: [`matched_threshold`] accepts [`MATCHED_ACCEPT`] of
//! the known images (the open-set literature's "TPR 95 %"), and the unknowns rejected there
//! are comparable across losses. Independent of any
//! threshold: the AUROC of the maximum metric as a known-vs-unknown score (Mann–Whitney, ties
//! counted half). Rows with a non-finite metric have no maximum: they count as rejected and as
//! wrong, and rank below every finite score.

use serde::Serialize;

use super::input::Matrix;

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct AtThreshold {
    /// Which threshold: `t_star` (the optimal unified threshold of the known classes),
    /// `bias` (0 on the metrics with bias: the learned bias as the threshold) or `known95`
    /// (the matched operating point: 95 % of the known images accepted).
    pub name: String,
    pub threshold: f64,
    /// Percent of unknown images rejected.
    pub unknown_rejected: f64,
    /// Percent of known images accepted and classified correctly.
    pub known_accuracy: f64,
    /// Percent of known images accepted (whatever their class).
    pub known_accepted: f64,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct OpenSet {
    pub known: usize,
    pub unknown: usize,
    pub at: Vec<AtThreshold>,
    /// AUROC (percent) of the maximum metric, known = positive.
    pub auroc: f64,
}

/// The maximum of a row and its index; `None` when the row has a non-finite value.
fn row_max(row: &[f32]) -> Option<(f32, usize)> {
    let mut best: Option<(f32, usize)> = None;
    for (j, &v) in row.iter().enumerate() {
        if !v.is_finite() {
            return None;
        }
        if best.is_none_or(|(b, _)| v > b) {
            best = Some((v, j));
        }
    }
    best
}

/// The matched operating point: the share of known images accepted.
pub const MATCHED_ACCEPT: f64 = 0.95;

/// The largest threshold that accepts at least `share` of the known rows (a row is accepted
/// when its maximum metric is above the threshold): midway between the maximum that must
/// still be accepted and the next lower one, so it does not sit on a score. Rows with a
/// non-finite metric are never accepted; when they are more than `1 − share` of the rows, the
/// threshold accepts every finite row (−∞). `None` without known rows.
pub fn matched_threshold(known: &Matrix<'_>, share: f64) -> Option<f64> {
    let mut s: Vec<f64> = (0..known.rows)
        .filter_map(|i| row_max(known.row(i)).map(|(v, _)| v as f64))
        .collect();
    if known.rows == 0 {
        return None;
    }
    s.sort_by(|a, b| b.total_cmp(a));
    // The number of rows that must be accepted.
    let need = ((share * known.rows as f64) - 1e-9).ceil().max(0.0) as usize;
    if need == 0 {
        return s.first().map(|&m| m + 1.0).or(Some(f64::INFINITY));
    }
    if need > s.len() {
        return Some(f64::NEG_INFINITY);
    }
    let last = s[need - 1];
    // The next score strictly below the last one accepted (ties with it are accepted too).
    Some(match s[need..].iter().find(|&&v| v < last) {
        Some(&next) => last - (last - next) / 2.0,
        None => f64::NEG_INFINITY,
    })
}

/// Open-set figures for `known` (rows with `labels`) against `unknown` rows, at each of
/// `thresholds` (name, t).
pub fn openset(
    known: &Matrix<'_>,
    labels: &[u32],
    unknown: &Matrix<'_>,
    thresholds: &[(&str, f64)],
) -> OpenSet {
    let k: Vec<Option<(f32, usize)>> = (0..known.rows).map(|i| row_max(known.row(i))).collect();
    let u: Vec<Option<(f32, usize)>> = (0..unknown.rows).map(|i| row_max(unknown.row(i))).collect();
    let pct = |c: usize, n: usize| {
        if n == 0 {
            f64::NAN
        } else {
            100.0 * c as f64 / n as f64
        }
    };
    let at = thresholds
        .iter()
        .map(|&(name, t)| {
            let accepted = |m: &Option<(f32, usize)>| m.is_some_and(|(v, _)| v as f64 > t);
            let rejected_u = u.iter().filter(|m| !accepted(m)).count();
            let accepted_k = k.iter().filter(|m| accepted(m)).count();
            let correct_k = k
                .iter()
                .zip(labels)
                .filter(|(m, y)| accepted(m) && m.is_some_and(|(_, j)| j == **y as usize))
                .count();
            AtThreshold {
                name: name.to_string(),
                threshold: t,
                unknown_rejected: pct(rejected_u, u.len()),
                known_accuracy: pct(correct_k, k.len()),
                known_accepted: pct(accepted_k, k.len()),
            }
        })
        .collect();
    // Mann–Whitney U over the scores (non-finite rows lowest), ties half.
    let score = |m: &Option<(f32, usize)>| m.map_or(f64::NEG_INFINITY, |(v, _)| v as f64);
    let mut all: Vec<(f64, bool)> = k
        .iter()
        .map(|m| (score(m), true))
        .chain(u.iter().map(|m| (score(m), false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut wins, mut unknown_below) = (0.0f64, 0usize);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let (kn, un) =
            all[i..j].iter().fold(
                (0usize, 0usize),
                |(a, b), x| if x.1 { (a + 1, b) } else { (a, b + 1) },
            );
        wins += kn as f64 * (unknown_below as f64 + 0.5 * un as f64);
        unknown_below += un;
        i = j;
    }
    let auroc = if k.is_empty() || u.is_empty() {
        f64::NAN
    } else {
        100.0 * wins / (k.len() as f64 * u.len() as f64)
    };
    OpenSet {
        known: k.len(),
        unknown: u.len(),
        at,
        auroc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_accuracy_and_auroc_by_hand() {
        // Known: class 0 with max 3 (correct), class 1 with max 1 at class 0 (wrong), class 1
        // with max 2 (correct). Unknown: maxima 0.5, 2 and a non-finite row.
        let kd = [3.0f32, 0.0, 1.0, 0.5, 0.0, 2.0];
        let ud = [0.5f32, 0.0, 2.0, 1.0, f32::NAN, 0.0];
        let known = Matrix::new(&kd, 3, 2).unwrap();
        let unknown = Matrix::new(&ud, 3, 2).unwrap();
        let o = openset(
            &known,
            &[0, 1, 1],
            &unknown,
            &[("t_star", 1.5), ("bias", 0.0)],
        );
        assert_eq!((o.known, o.unknown), (3, 3));
        let a = &o.at[0];
        // t = 1.5: unknown 0.5 and NaN rejected (2 of 3); known 3 and 2 accepted, both right.
        assert!((a.unknown_rejected - 200.0 / 3.0).abs() < 1e-9);
        assert!((a.known_accuracy - 200.0 / 3.0).abs() < 1e-9);
        assert!((a.known_accepted - 200.0 / 3.0).abs() < 1e-9);
        let b = &o.at[1];
        // t = 0: only the NaN row is rejected; the known row with max 1 is accepted but wrong.
        assert!((b.unknown_rejected - 100.0 / 3.0).abs() < 1e-9);
        assert!((b.known_accuracy - 200.0 / 3.0).abs() < 1e-9);
        assert!((b.known_accepted - 100.0).abs() < 1e-9);
        // Pairs (known, unknown) with known higher: 3 > all 3; 1 > 0.5, NaN; 2 > 0.5, NaN and
        // ties 2 → 3 + 2 + 2.5 = 7.5 of 9.
        assert!((o.auroc - 100.0 * 7.5 / 9.0).abs() < 1e-9, "{}", o.auroc);
    }

    #[test]
    fn matched_threshold_accepts_the_share_of_known_rows() {
        // Maxima 10, 9, …, 1 (one column: each row's own value); 95 % of 10 rows → 10 rows
        // (ceil 9.5): every row, so the threshold is below the smallest maximum.
        let kd: Vec<f32> = (1..=10).rev().map(|v| v as f32).collect();
        let k = Matrix::new(&kd, 10, 1).unwrap();
        assert_eq!(matched_threshold(&k, 0.95), Some(f64::NEG_INFINITY));
        // 80 % → 8 rows: between 3 and 2.
        assert_eq!(matched_threshold(&k, 0.8), Some(2.5));
        // 20 rows 1..=20: 95 % → 19 rows accepted, the threshold between 2 and 1.
        let kd: Vec<f32> = (1..=20).map(|v| v as f32).collect();
        let k = Matrix::new(&kd, 20, 1).unwrap();
        let t = matched_threshold(&k, 0.95).unwrap();
        assert_eq!(t, 1.5);
        let o = openset(&k, &[0; 20], &k, &[("known95", t)]);
        assert_eq!(o.at[0].known_accepted, 95.0);
        assert_eq!(o.at[0].unknown_rejected, 5.0);
        // Ties at the boundary are accepted together (at least the share, never fewer).
        let kd = [5.0f32, 4.0, 4.0, 4.0, 1.0];
        let k = Matrix::new(&kd, 5, 1).unwrap();
        assert_eq!(matched_threshold(&k, 0.5), Some(2.5));
        // Non-finite rows are never accepted: with 2 of 5 non-finite, 80 % cannot be reached
        // and every finite row is accepted.
        let kd = [5.0f32, f32::NAN, 3.0, f32::INFINITY, 1.0];
        let k = Matrix::new(&kd, 5, 1).unwrap();
        assert_eq!(matched_threshold(&k, 0.8), Some(f64::NEG_INFINITY));
        assert_eq!(matched_threshold(&k, 0.4), Some(2.0));
        assert_eq!(
            matched_threshold(&Matrix::new(&[], 0, 1).unwrap(), 0.95),
            None
        );
    }

    #[test]
    fn matched_point_compares_losses_at_equal_acceptance() {
        // Two "losses" on the same 20 known rows; loss A's unknowns score low, loss B's high.
        // At the matched point both accept 95 % of the known rows, and A rejects more.
        let kd: Vec<f32> = (1..=20).map(|v| v as f32).collect();
        let k = Matrix::new(&kd, 20, 1).unwrap();
        let ua: Vec<f32> = vec![0.5; 10];
        let ub: Vec<f32> = (11..=20).map(|v| v as f32).collect();
        let t = matched_threshold(&k, MATCHED_ACCEPT).unwrap();
        let a = openset(
            &k,
            &[0; 20],
            &Matrix::new(&ua, 10, 1).unwrap(),
            &[("known95", t)],
        );
        let b = openset(
            &k,
            &[0; 20],
            &Matrix::new(&ub, 10, 1).unwrap(),
            &[("known95", t)],
        );
        assert_eq!(a.at[0].known_accepted, b.at[0].known_accepted);
        assert_eq!(
            (a.at[0].unknown_rejected, b.at[0].unknown_rejected),
            (100.0, 0.0)
        );
    }

    #[test]
    fn separable_scores_give_full_auroc_and_identical_ones_half() {
        let kd = [5.0f32, 1.0, 1.0, 6.0];
        let ud = [0.0f32, 1.0, 2.0, 0.0];
        let o = openset(
            &Matrix::new(&kd, 2, 2).unwrap(),
            &[0, 1],
            &Matrix::new(&ud, 2, 2).unwrap(),
            &[],
        );
        assert_eq!(o.auroc, 100.0);
        let o = openset(
            &Matrix::new(&kd, 2, 2).unwrap(),
            &[0, 1],
            &Matrix::new(&kd, 2, 2).unwrap(),
            &[],
        );
        assert_eq!(o.auroc, 50.0);
    }
}
