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
// timeline); `write_atomic` is atomic, durable file writing. Both name nothing else of the
// engine.
const ALLOWED: &[&str] = &[
    "data",
    "metrics",
    "report",
    "ml_spec",
    "weights",
    "write_atomic",
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

/// The engine's modules, one per file (`a/mod.rs` is `a`, `a/b.rs` is `a::b`), each with the
/// modules its `crate::…` paths name: a path names the longest module prefix that is a file.
fn engine_module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/repro-engine/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let module_of = |f: &Path| -> String {
        let rel = f.strip_prefix(&src).unwrap().with_extension("");
        let parts: Vec<String> = rel
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        match parts.last().map(String::as_str) {
            Some("mod") | Some("lib") => parts[..parts.len() - 1].join("::"),
            _ => parts.join("::"),
        }
    };
    let modules: std::collections::BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph = std::collections::BTreeMap::new();
    for f in &files {
        let me = module_of(f);
        let code = std::fs::read_to_string(f).unwrap();
        let mut deps = std::collections::BTreeSet::new();
        for path in crate_module_paths(&code) {
            // The longest prefix of the path that is a module file.
            let segs: Vec<&str> = path.split("::").collect();
            let target = (1..=segs.len())
                .rev()
                .map(|n| segs[..n].join("::"))
                .find(|m| modules.contains(m));
            if let Some(t) = target
                && t != me
            {
                deps.insert(t);
            }
        }
        graph.insert(me, deps);
    }
    graph
}

/// Every full path after `crate::` in `code` (comments stripped), a `{…}` group (on one line,
/// nested or not) expanded into one path per member: `crate::a::{b::c, d}` gives `a::b::c`
/// and `a::d`.
fn crate_module_paths(code: &str) -> Vec<String> {
    fn expand(prefix: &str, rest: &str, out: &mut Vec<String>) {
        let head: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = format!("{prefix}{head}");
        let after = &rest[head.len()..];
        if head.ends_with("::") && after.starts_with('{') {
            // Split the group's members at top-level commas.
            let (mut depth, mut start) = (0, 1);
            for (i, c) in after.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        expand(&path, after[start..i].trim(), out);
                        start = i + 1;
                        if c == '}' {
                            return;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
        } else if !head.is_empty() {
            out.push(path.trim_end_matches("::").to_string());
        }
    }
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            expand("", rest, &mut out);
        }
    }
    out
}

/// Tarjan's strongly connected components of `graph` with more than one module: each is an
/// import loop.
fn import_loops(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        index: std::collections::HashMap<&'a str, (usize, usize)>,
        stack: Vec<&'a str>,
        on_stack: std::collections::HashSet<&'a str>,
        loops: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, (n, n));
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.index[w].1.min(self.index[v].1);
                    self.index.get_mut(v).unwrap().1 = low;
                } else if self.on_stack.contains(w) {
                    let low = self.index[w].0.min(self.index[v].1);
                    self.index.get_mut(v).unwrap().1 = low;
                }
            }
            if self.index[v].0 == self.index[v].1 {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.loops.push(scc);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: Default::default(),
        stack: Vec::new(),
        on_stack: Default::default(),
        loops: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.loops
}

#[test]
fn the_engine_has_no_import_loop() {
    let graph = engine_module_graph();
    assert!(graph.len() > 40, "found only {:?}", graph.keys());
    assert!(
        graph["run"].contains("executor") && graph["state::workspace"].contains("cache"),
        "the module graph reads no imports: {graph:?}"
    );
    let loops = import_loops(&graph);
    assert!(
        loops.is_empty(),
        "import loops in the engine (each group's modules reach each other through `crate::` paths):\n{}",
        loops
            .iter()
            .map(|l| l.join(" ↔ "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_engines_lower_layers_name_no_command() {
    const LOWER: &[&str] = &["state", "graph", "executor", "cache", "spec"];
    const COMMANDS: &[&str] = &[
        "run", "session", "runner", "compare", "trace", "status", "submit",
    ];
    let mut bad = Vec::new();
    for (module, deps) in engine_module_graph() {
        let top = module.split("::").next().unwrap();
        if !LOWER.contains(&top) {
            continue;
        }
        for d in deps {
            if COMMANDS.contains(&d.split("::").next().unwrap()) {
                bad.push(format!("{module} → {d}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "a lower layer of the engine names a command:\n{}",
        bad.join("\n")
    );
}

/// Executors are handed jobs and say how a stage is admitted (`Executor::admission`); they
/// never reach up into the loop that drives them, its scheduler or its plan.
#[test]
fn executors_do_not_reach_up() {
    const ABOVE: &[&str] = &[
        "run", "runner", "session", "schedule", "plan", "status", "compare", "submit", "targets",
    ];
    let graph = engine_module_graph();
    assert!(
        graph.contains_key("executor::gpus"),
        "GPU detection lives in executor/"
    );
    let bad: Vec<String> = graph
        .iter()
        .filter(|(m, _)| m.split("::").next() == Some("executor"))
        .flat_map(|(m, deps)| {
            deps.iter()
                .filter(|d| ABOVE.contains(&d.split("::").next().unwrap()))
                .map(move |d| format!("{m} → {d}"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "an executor reaches up:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_loop_check_sees_loops() {
    let code = "use crate::a::{b::{c, d}, e};\nlet x = crate::f::g(); // crate::h\n";
    assert_eq!(
        crate_module_paths(code),
        ["a::b::c", "a::b::d", "a::e", "f::g"]
    );
    let g = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(import_loops(&g), [["a", "b", "c"]]);
}

/// The engine's public modules, its "rooms" (crates/repro-engine/src/lib.rs says why each is
/// one): every other module is private, and what users need of it is re-exported from the
/// crate root. A new room is a decision about the public surface, so it is made here too.
const ENGINE_ROOMS: &[&str] = &[
    "compare",
    "executor",
    "executor::slurm",
    "experiments",
    "kinds",
    "kinds::progress",
    "remote",
    "remote::exp",
    "remote::push",
    "remote::verify",
    "trace_file",
];

/// What `code` (a module file of the engine, `prefix` its path: "" for lib.rs) makes public
/// that is a module: each `pub mod x` (`prefix::x`), and from lib.rs each `pub use` of a whole
/// module declared there (`pub use x;`, `pub use crate::x as y;`, `pub use x::*;`), which
/// would open a private module as wide as `pub mod` does.
fn public_modules(code: &str, prefix: &str) -> Vec<String> {
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '*'))
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect()
    };
    let mut declared = Vec::new();
    let mut out = Vec::new();
    for stmt in code.split([';', '{', '}']) {
        let w = words(stmt);
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        if let Some(i) = w.iter().position(|x| *x == "mod")
            && let Some(name) = w.get(i + 1)
        {
            declared.push(name.to_string());
            if i > 0 && w[i - 1] == "pub" {
                out.push(if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}::{name}")
                });
            }
        }
    }
    if prefix.is_empty() {
        // `pub use` statements, groups included: split at `;` only.
        for stmt in code.split(';') {
            let mut stmt = stmt.trim_start();
            while stmt.starts_with("#[") {
                stmt = stmt.split_once(']').map_or("", |(_, r)| r).trim_start();
            }
            let Some(rest) = stmt.strip_prefix("pub use ") else {
                continue;
            };
            // `a::{b, self, c::*}`: the paths `a::b`, `a`, `a::c::*` (one level of group).
            let (prefix, members) = match rest.split_once('{') {
                Some((p, m)) => (p, m.trim_end().trim_end_matches('}').split(',').collect()),
                None => ("", vec![rest]),
            };
            for member in members {
                let member = member.split(" as ").next().unwrap_or("").trim();
                let path = match member {
                    "self" => prefix.trim_end_matches("::").to_string(),
                    m => format!("{prefix}{m}"),
                };
                let path = path.strip_prefix("crate::").unwrap_or(&path);
                if path.ends_with('*') || declared.iter().any(|d| d == path) {
                    out.push(format!("{path} (pub use)"));
                }
            }
        }
    }
    out
}

/// The engine's public modules that are not in `allowed`: lib.rs's, and those declared in each
/// allowed room's own file (`read` gives a file's text by its path under src/, or `None`).
fn unlisted_rooms(read: &dyn Fn(&str) -> Option<String>, allowed: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(module) = todo.pop() {
        let file = if module.is_empty() {
            read("lib.rs")
        } else {
            let rel = module.replace("::", "/");
            read(&format!("{rel}.rs")).or_else(|| read(&format!("{rel}/mod.rs")))
        };
        let Some(code) = file else { continue };
        for m in public_modules(&code, &module) {
            if allowed.contains(&m.as_str()) {
                todo.push(m);
            } else {
                bad.push(m);
            }
        }
    }
    bad.sort();
    bad
}

#[test]
fn the_engine_opens_only_its_rooms() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/repro-engine/src");
    let read = |rel: &str| std::fs::read_to_string(src.join(rel)).ok();
    let lib = read("lib.rs").unwrap();
    assert!(
        public_modules(&lib, "").contains(&"kinds".to_string()) && lib.contains("\nmod spec;"),
        "read no module declarations from lib.rs"
    );
    let bad = unlisted_rooms(&read, ENGINE_ROOMS);
    assert!(
        bad.is_empty(),
        "public modules of the engine that are not rooms: {bad:?}. Make them private and \
         re-export what users need from lib.rs (grouped), or, if the module is meant to be \
         public as a whole, add it to ENGINE_ROOMS and say why in lib.rs's `//!`"
    );
}

#[test]
fn the_room_check_sees_a_new_pub_mod() {
    let lib = "//! pub mod in_a_doc;\n\
               pub mod kinds;\n\
               mod spec;\n\
               mod state;\n\
               mod graph;\n\
               #[cfg(feature = \"x\")]\n\
               pub mod cache; // a new public module\n\
               pub(crate) mod plan;\n\
               // pub mod commented_out;\n\
               pub use spec::{Stage, load, spec};\n\
               pub use graph::{self as g};\n\
               #[cfg(unix)]\n\
               pub use crate::state as st;\n\
               pub use graph::*;\n";
    let kinds = "pub mod progress;\nmod cmd;\npub mod extra {\n    pub fn f() {}\n}\n";
    let read = |rel: &str| match rel {
        "lib.rs" => Some(lib.to_string()),
        "kinds/mod.rs" => Some(kinds.to_string()),
        _ => None,
    };
    assert_eq!(
        unlisted_rooms(&read, &["kinds", "kinds::progress"]),
        [
            "cache",
            "graph (pub use)",
            "graph::* (pub use)",
            "kinds::extra",
            "state (pub use)"
        ]
    );
    let rooms = ["kinds", "kinds::progress", "kinds::extra", "cache"];
    assert_eq!(
        unlisted_rooms(&read, &rooms).len(),
        3,
        "only the `pub use`s are left"
    );
}
