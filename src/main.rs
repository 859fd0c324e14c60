//! The `clawbus` command; see `clawbus help`.

fn main() -> std::process::ExitCode {
    clawbus::cli::main()
}
