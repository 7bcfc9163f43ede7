//! Link libtorch so that the `repro-torch` binary finds it without `LD_LIBRARY_PATH` and really
//! links `libtorch` (and through it CUDA, when the wheel carries it) even though no symbol of it
//! is referenced directly: `--no-as-needed`.
//!
//! Two run-path entries, searched in order: `$ORIGIN/../../.venv/torch/lib`, which is the
//! checkout's own libtorch for `target/{debug,release}/repro-torch` wherever the checkout is
//! moved, then the absolute directory torch-sys built against (a binary copied elsewhere).
//! `REPRO_TORCH_LIB` (read by `repro`, see `repro::kinds::exec_torch`) overrides both.
fn main() {
    // `$ORIGIN` reaches the linker verbatim: rustc passes link arguments without a shell.
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../../.venv/torch/lib");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
