//! Link libtorch so that the `repro-torch` binary finds it without `LD_LIBRARY_PATH` (an rpath to the
//! directory torch-sys built against) and really links `libtorch` (and through it CUDA, when the
//! wheel carries it) even though no symbol of it is referenced directly: `--no-as-needed`.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
