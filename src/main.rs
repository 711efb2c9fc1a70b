//! The `mamori` binary: parse the command line, dispatch, exit.

/// mimalloc instead of the system allocator: see the dependency's note in Cargo.toml and
/// BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mamori::cli::main()
}
