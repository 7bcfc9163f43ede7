//! The layout rules of docs/architecture.md.
//!
//! 1. The engine (`crates/repro-engine`) cannot name the paper's code: the build enforces it as
//!    long as its manifest depends on neither `repro` nor libtorch, which the first test checks.
//! 2. The science modules (`data`, `metrics`, `report`, `ml_spec`, `weights`) name nothing of the
//!    kinds or the command line, and of the engine only its leaf helpers: what they need (progress,
//!    paths) comes in as arguments and callbacks.

use std::path::Path;

/// What the science code may name with `crate::…` or `repro_engine::…`.
// `trace_file` is the trace's file format (written by the engine, read by the report's
// timeline); `fsutil` is atomic, durable file writing. Both name nothing else of the engine.
const ALLOWED: &[&str] = &[
    "data",
    "metrics",
    "report",
    "ml_spec",
    "weights",
    "fsutil",
    "trace_file",
];

#[test]
fn the_engine_crate_depends_on_no_science() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/repro-engine/Cargo.toml"),
    )
    .unwrap();
    let mut section = "";
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section.contains("dependencies")
            && let Some((name, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            deps.push(name.trim().to_string());
        }
    }
    assert!(
        deps.iter().any(|d| d == "redb"),
        "read no dependencies: {deps:?}"
    );
    for banned in [
        "repro",
        "repro-torch",
        "tch",
        "torch-sys",
        "image",
        "safetensors",
        "tera",
    ] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "crates/repro-engine depends on `{banned}`: the engine must not reach the science"
        );
    }
}

/// Every module named after `crate::` or `repro_engine::` in `code` (comments stripped),
/// including each name of a `crate::{a, b::c}` group.
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(i) = ["crate::", "repro_engine::"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
            .min()
            .map(|(i, n)| i + n)
        {
            rest = &rest[i..];
            if let Some(group) = rest.strip_prefix('{') {
                // First-level names of the group (a group spanning lines is rare here; its
                // remaining lines have no `crate::` and are checked by the caller's count).
                let body = group.split('}').next().unwrap_or("");
                for item in body.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        names.push(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn science_modules_name_nothing_of_the_engine() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for module in ["data", "metrics", "report", "ml_spec", "weights"] {
        rust_files(&src.join(module), &mut files);
    }
    assert!(files.len() > 20, "found only {files:?}");
    let mut bad = Vec::new();
    for f in &files {
        let code = std::fs::read_to_string(f).unwrap();
        assert!(
            !code.contains("use crate::{\n") && !code.contains("use repro_engine::{\n"),
            "{}: split `use crate::{{…}}` over lines; this check reads one line at a time",
            f.display()
        );
        for name in crate_paths(&code) {
            if !ALLOWED.contains(&name.as_str()) {
                bad.push(format!(
                    "{}: crate::{name}",
                    f.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "science code names the engine:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_sees_imports() {
    let code = "use crate::kinds::progress;\nuse crate::{data::x, cli};\n// crate::run in a comment\nlet a = crate::engine::f(repro_engine::run::x);";
    assert_eq!(crate_paths(code), ["kinds", "data", "cli", "engine", "run"]);
}
