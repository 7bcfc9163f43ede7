//! Golden tests of the report templates on the fixture runs in `tests/fixtures/report/ws`
//! (CUB fine-tuning with a diverged and an unevaluated run, an ImageNet γ sweep, CUB bias
//! initialisation runs, a dataset the paper lacks). Regenerate the golden files after an
//! intended change with `UPDATE_GOLDEN=1 cargo test --test report_golden`, and review the diff.

use std::path::{Path, PathBuf};

use repro::report::{self, figures::Choice};

fn fixture_ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/ws")
}

fn options(runs: Vec<String>) -> report::Options {
    report::Options {
        workspace: fixture_ws(),
        runs,
        // The workspace has no stages/published: the built-in copy is used.
        published: None,
        templates: None,
        title: "Fixture report: BCE & SoftMax (50%)".into(),
        lock: None,
        revision: Some("0123456789abcdef".into()),
        figures: Choice { dataset: None, model: None, modes: vec![3, 7] },
    }
}

fn render_all() -> report::Rendered {
    report::render(&options(vec!["runs/**/metrics.json".into(), "runs/cub/resnet50/bce-n0".into()])).unwrap()
}

fn golden(name: &str, actual: &str) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&p)
        .unwrap_or_else(|_| panic!("missing golden file {}; run with UPDATE_GOLDEN=1", p.display()));
    if expected != actual {
        let line = expected.lines().zip(actual.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{name} differs from {} at line {}:\n  golden: {:?}\n  actual: {:?}\n(UPDATE_GOLDEN=1 to accept)",
            p.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

#[test]
fn html_tex_and_svg_match_golden() {
    let r = render_all();
    golden("report.html", &r.html);
    golden("report.tex", &r.tex);
    for (id, svg) in &r.svgs {
        golden(&format!("figures/{id}.svg"), svg);
    }
    let mut ids: Vec<_> = r.svgs.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    golden("figures.txt", &(ids.join("\n") + "\n"));
}

#[test]
fn rendering_is_deterministic() {
    let a = render_all();
    let b = render_all();
    assert_eq!(a.html, b.html);
    assert_eq!(a.tex, b.tex);
    assert_eq!(a.svgs, b.svgs);
}
