//! Link the `repro` binary as a position-dependent executable on Linux. A position-independent
//! one carries about 76,000 relocations that the dynamic loader applies at every start,
//! copying the pages they touch: about 1.5 ms, a tenth of a no-op run of 1,000 stages, where a
//! position-dependent one has them resolved once by the linker (as Go links by default). Only
//! the binaries: the test executables are left as they are.
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
