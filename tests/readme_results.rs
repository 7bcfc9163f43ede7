//! The README's results are generated: the block between its markers must equal what the
//! report renders (templates/summary.md, stages/claims.yaml, the published tables) from the
//! committed runs snapshot docs/results/quick-summary-runs.json, which the quick profile's
//! report stage wrote and scripts/update-readme.sh copied. A hand edit of the block, a changed
//! claim or template without re-running the script, or a stale snapshot fails here.

use std::path::Path;

const BEGIN: &str = "<!-- BEGIN GENERATED RESULTS -->\n";
const END: &str = "<!-- END GENERATED RESULTS -->";
/// The block while no quick-profile run has been committed: a note, and no result.
const NOT_YET: &str =
    "<!-- No quick-profile run committed yet: run it, then scripts/update-readme.sh. -->\n";
const SNAPSHOT: &str = "docs/results/quick-summary-runs.json";

fn snapshot() -> Option<String> {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(SNAPSHOT)).ok()
}

fn repo(p: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn readme_results_are_what_the_report_renders_from_the_committed_runs() {
    let readme = repo("README.md");
    let start = readme
        .find(BEGIN)
        .expect("README.md has no BEGIN GENERATED RESULTS marker")
        + BEGIN.len();
    let stop = readme[start..]
        .find(END)
        .expect("README.md has no END GENERATED RESULTS marker")
        + start;
    let block = &readme[start..stop];
    let Some(snap) = snapshot() else {
        assert_eq!(
            block, NOT_YET,
            "README.md's generated block holds text but {SNAPSHOT} (its source) is not committed"
        );
        return;
    };
    let claims =
        repro::report::claims::parse("stages/claims.yaml", &repo("stages/claims.yaml")).unwrap();
    let rendered = repro::report::summary_from_snapshot(&snap, SNAPSHOT, &claims).unwrap();
    if std::env::var_os("UPDATE_README").is_some() && block != rendered {
        // Re-render the block from the committed runs (a changed claim or template, same
        // runs): nothing typed by hand.
        let out = format!("{}{rendered}{}", &readme[..start], &readme[stop..]);
        std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"), out).unwrap();
        return;
    }
    if block != rendered {
        let line = block
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(block.lines().count().min(rendered.lines().count()));
        panic!(
            "README.md's generated block differs from the report's summary at line {} of the block:\n  README:   {:?}\n  rendered: {:?}\n(run the quick profile, then scripts/update-readme.sh; for a changed claim or template with the same runs: UPDATE_README=1 cargo test --test readme_results)",
            line + 1,
            block.lines().nth(line),
            rendered.lines().nth(line)
        );
    }
    // The snapshot is a real quick-profile run: several seeds per fine-tuning cell.
    assert!(rendered.contains(" ± "), "no mean ± sd in the summary");
}

#[test]
fn the_summary_changes_when_a_result_changes() {
    // A committed snapshot, or else a small one made here from the report fixtures.
    let snap = snapshot().unwrap_or_else(|| {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/ws");
        let runs = repro::report::runs::load(&ws, &["runs/**/metrics.json".into()]).unwrap();
        serde_json::to_string(&repro::report::runs::snapshot(&ws, &runs).unwrap()).unwrap()
    });
    let claims =
        repro::report::claims::parse("stages/claims.yaml", &repo("stages/claims.yaml")).unwrap();
    let a = repro::report::summary_from_snapshot(&snap, "snap", &claims).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&snap).unwrap();
    let first = v
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| {
            r["metrics"]["a_uni"].is_number()
                && matches!(
                    r["metrics"]["run"]["role"].as_str(),
                    None | Some("finetune")
                )
        })
        .unwrap();
    first["metrics"]["a_uni"] =
        serde_json::json!(first["metrics"]["a_uni"].as_f64().unwrap() - 7.0);
    let b = repro::report::summary_from_snapshot(&v.to_string(), "snap", &claims).unwrap();
    assert_ne!(a, b, "a changed A_Uni must change the rendered summary");
}

/// The snapshot keeps everything the summary reads: rendering from it equals rendering from
/// the run directories themselves.
#[test]
fn a_snapshot_renders_the_same_summary_as_its_runs() {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/ws");
    let runs = repro::report::runs::load(&ws, &["runs/**/metrics.json".into()]).unwrap();
    let claims =
        repro::report::claims::parse("stages/claims.yaml", &repo("stages/claims.yaml")).unwrap();
    let direct = repro::report::summary_of_runs(&runs, &claims).unwrap();
    let snap = serde_json::to_string(&repro::report::runs::snapshot(&ws, &runs).unwrap()).unwrap();
    let via = repro::report::summary_from_snapshot(&snap, "snap", &claims).unwrap();
    assert_eq!(direct, via);
    assert!(direct.contains("**The paper's claims**"));
}
