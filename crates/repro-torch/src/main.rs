//! `repro-torch internal run-kind SPEC` runs a libtorch stage kind (`repro` execs it);
//! `repro-torch doctor` reports the libtorch this binary runs on; `repro-torch bench-train`
//! times training steps on synthetic data (see `bench`).

use std::path::Path;

use repro_engine::kinds::Registry;

const USAGE: &str = "usage: repro-torch internal run-kind SPEC.json | repro-torch doctor | repro-torch bench-train [OPTIONS] | repro-torch --version";

fn run(args: &[String]) -> anyhow::Result<i32> {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["doctor"] => repro_torch::ml::doctor(),
        ["bench-train", ..] => repro_torch::bench::run(&args[1..]),
        ["internal", "run-kind", spec] => {
            // Only libtorch's kinds run here; `repro` hands over nothing else.
            let registry = Registry::default()
                .with_body(repro::kinds::train::Train, repro_torch::train_kind::body);
            repro::kinds::run_spec(&registry, Path::new(spec))?;
            Ok(0)
        }
        ["--version" | "-V"] => {
            println!("repro-torch {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(2)
        }
    }
}

fn main() {
    repro::cli::ignore_file_size_signal();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = run(&args).unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        1
    });
    std::process::exit(code);
}
