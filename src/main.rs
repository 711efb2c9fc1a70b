//! The `mamori` binary: parse the command line, dispatch, exit.

fn main() -> std::process::ExitCode {
    mamori::cli::main()
}
