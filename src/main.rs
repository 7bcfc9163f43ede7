//! The `repro` binary: the command line (`repro::cli`) on mimalloc, which allocates a large
//! pipeline's many small strings faster than the system allocator.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(repro::cli::main());
}
