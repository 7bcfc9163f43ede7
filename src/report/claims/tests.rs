use std::collections::BTreeMap;

use super::*;

/// The shared difference verdict: Welch's t-test on the seeds, and on our runs a single seed
/// says so in the verdict word.
#[test]
fn a_difference_is_judged_by_welch_and_a_single_seed_says_so() {
    let data = |ours| Data {
        recs: Vec::new(),
        classes: BTreeMap::new(),
        bias: Vec::new(),
        ours,
    };
    let unit = |ours, a: &[f64], b: &[f64], ties| {
        let (a, b) = (Stat::of(a).unwrap(), Stat::of(b).unwrap());
        Unit::difference(&data(ours), "s".into(), (a, b), 1.0, ties, |d| {
            format!("d={d}")
        })
    };
    let u = unit(true, &[3.0], &[1.0], false);
    assert_eq!(u.verdict, Verdict::HoldsSingleSeed);
    assert_eq!(u.verdict.as_str(), "holds (single seed)");
    assert_eq!(u.evidence, "d=2; single seed, noise not estimated");
    let u = unit(true, &[1.0], &[1.5], false);
    assert_eq!(u.verdict, Verdict::FailsSingleSeed);
    // The paper's cells never had seeds to count: no note, plain word.
    let u = unit(false, &[3.0], &[1.0], false);
    assert_eq!((u.verdict, u.evidence.as_str()), (Verdict::Holds, "d=2"));
    // Three seeds each, d − margin = 1 with se ≈ 0.41: p ≈ 0.07 ≥ α, within noise.
    let u = unit(true, &[2.5, 3.0, 3.5], &[0.5, 1.0, 1.5], false);
    assert_eq!(u.verdict, Verdict::WithinNoise, "{}", u.evidence);
    assert!(u.evidence.contains("Welch p = 0.0"), "{}", u.evidence);
    // The same means with ten seeds each: the test narrows, the difference is real.
    let more = |c: f64| -> Vec<f64> { (0..10).map(|i| c - 0.5 + (i % 3) as f64 * 0.5).collect() };
    let u = unit(true, &more(3.0), &more(1.0), false);
    assert_eq!(u.verdict, Verdict::Holds, "{}", u.evidence);
    // And a clearly negative difference fails.
    let u = unit(true, &more(0.0), &more(1.0), false);
    assert_eq!(u.verdict, Verdict::Fails, "{}", u.evidence);
    // A difference of exactly the margin holds only where ties count.
    assert_eq!(unit(false, &[2.0], &[1.0], false).verdict, Verdict::Fails);
    assert_eq!(unit(false, &[2.0], &[1.0], true).verdict, Verdict::Holds);
    let u = Unit::not_measured("s".into(), "why");
    assert_eq!(
        (u.verdict, u.evidence.as_str()),
        (Verdict::NotMeasured, "why")
    );
}

/// Student's t against printed quantiles: t₀.₉₇₅ is 12.706 (df 1), 2.228 (df 10), 1.960 (∞).
#[test]
fn the_t_distribution_matches_its_tables() {
    use stats::student_t_two_sided as p;
    assert!((p(12.706, 1.0) - 0.05).abs() < 1e-4);
    assert!((p(2.228, 10.0) - 0.05).abs() < 1e-4);
    assert!((p(1.960, 1e6) - 0.05).abs() < 1e-4);
    assert!((p(0.0, 5.0) - 1.0).abs() < 1e-12);
    assert!((p(4.604, 4.0) - 0.01).abs() < 1e-4);
    // Welch–Satterthwaite df of two cells of 3 with equal sd is 4.
    let a = Stat::of(&[1.0, 2.0, 3.0]).unwrap();
    let d = Stat::diff(a, a);
    assert!((d.noise.unwrap().df - 4.0).abs() < 1e-12);
}

fn builtin() -> Vec<ClaimSpec> {
    parse("stages/claims.yaml", BUILTIN).unwrap()
}

/// Every claim, checked on the paper's own tables, holds — unless the claims file names
/// the printed cells that contradict it, and then it must indeed fail there.
#[test]
fn every_claim_holds_on_the_published_tables_or_is_marked_contradicted() {
    let p = Published::builtin().unwrap();
    let res = evaluate(&builtin(), &p, &[]);
    assert!(res.len() >= 14, "claims missing: {}", res.len());
    for r in &res {
        if r.contradicted_by.is_empty() {
            assert_eq!(
                r.paper.verdict,
                Verdict::Holds,
                "claim {} does not hold on the published tables: {}",
                r.id,
                r.paper.summary
            );
        } else {
            assert_eq!(
                r.paper.verdict,
                Verdict::Fails,
                "claim {} is marked contradicted but holds on the published tables: {}",
                r.id,
                r.paper.summary
            );
        }
        // Without runs nothing is measured, and the reason names what is missing.
        assert_eq!(r.ours.verdict, Verdict::NotMeasured, "{}", r.id);
        assert!(
            r.ours.summary.starts_with("not measured: "),
            "{}",
            r.ours.summary
        );
    }
}

#[test]
fn the_contradicting_cells_are_the_ones_named() {
    let p = Published::builtin().unwrap();
    let res = evaluate(&builtin(), &p, &[]);
    let sw = res.iter().find(|r| r.id == "bce-higher-sw").unwrap();
    let failing: Vec<&str> = sw
        .paper
        .units
        .iter()
        .filter(|u| u.verdict == Verdict::Fails)
        .map(|u| u.scope.as_str())
        .collect();
    assert_eq!(failing.len(), 2, "{failing:?}");
    assert!(
        failing
            .iter()
            .any(|s| s.contains("Aircraft") && s.contains("DenseNet161"))
    );
    assert!(
        failing
            .iter()
            .any(|s| s.contains("Dogs") && s.contains("DenseNet161"))
    );
    let bc = res.iter().find(|r| r.id == "bias-change-small").unwrap();
    let failing: Vec<&Unit> = bc
        .paper
        .units
        .iter()
        .filter(|u| u.verdict == Verdict::Fails)
        .collect();
    assert_eq!(failing.len(), 1);
    assert!(
        failing[0].scope.contains("soft-nd, mode 1"),
        "{}",
        failing[0].scope
    );
}

#[test]
fn bad_claim_files_are_rejected_with_the_place() {
    let e = parse(
        "c.yaml",
        "claims:\n  - id: x\n    quote: q\n    where: w\n    check: {kind: nope}\n",
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("c.yaml") && msg.contains("line"), "{msg}");
    let twice = "claims:\n  - {id: x, quote: q, where: w, check: {kind: bias_change, losses: [a], bound: 1}}\n  - {id: x, quote: q, where: w, check: {kind: bias_change, losses: [a], bound: 1}}\n";
    assert!(format!("{:#}", parse("c.yaml", twice).unwrap_err()).contains("twice"));
}

/// The quotes are the paper's words: each occurs in the paper's text where that is at hand
/// (the project's shared copy; the repository does not ship the paper).
#[test]
fn quotes_are_verbatim_where_the_paper_text_is_present() {
    let p = std::path::Path::new(
        "/work/shared/paper/rediscovering-bce-loss-for-uniform-classification.txt",
    );
    let Ok(text) = std::fs::read_to_string(p) else {
        eprintln!("paper text not present; quotes not compared");
        return;
    };
    for c in builtin() {
        // " [...] " marks text skipped where the paper's text flows around a table.
        for part in c.quote.split(" [...] ") {
            assert!(
                text.contains(part),
                "claim {}: quote not in the paper: {part}",
                c.id
            );
        }
    }
}
