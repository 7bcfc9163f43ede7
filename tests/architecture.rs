//! The one layout rule of docs/architecture.md that the build does not enforce yet (it will
//! once the engine is its own crate): the science modules (`data`, `metrics`, `report`,
//! `ml_spec`) name nothing of the engine, the kinds or the command line. What they need from
//! the engine (progress, paths) comes in as arguments and callbacks.

use std::path::Path;

/// Modules the science code may name with `crate::…`.
// `trace_file` is the trace's file format (written by the engine, read by the report); it is
// scanned with the science modules, so it cannot name the engine either.
const ALLOWED: &[&str] = &[
    "data",
    "metrics",
    "report",
    "ml_spec",
    "fsutil",
    "trace_file",
];

/// Every module named after `crate::` in `code` (comments stripped), including each name of a
/// `crate::{a, b::c}` group.
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
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
    for module in ["data", "metrics", "report", "ml_spec"] {
        rust_files(&src.join(module), &mut files);
    }
    files.push(src.join("trace_file.rs"));
    assert!(files.len() > 20, "found only {files:?}");
    let mut bad = Vec::new();
    for f in &files {
        let code = std::fs::read_to_string(f).unwrap();
        assert!(
            !code.contains("use crate::{\n"),
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
    let code = "use crate::kinds::progress;\nuse crate::{data::x, cli};\n// crate::run in a comment\nlet a = crate::engine::f();";
    assert_eq!(crate_paths(code), ["kinds", "data", "cli", "engine"]);
}
