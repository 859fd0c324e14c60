//! The `clawbus` command; see `clawbus help`.

/// mimalloc rather than glibc's malloc: serving a message allocates and
/// frees many small buffers across worker threads, and glibc's arenas spent
/// about a fifth of the adapter's CPU on that (BENCHMARKS.md, "Profiling").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    clawbus::cli::main()
}
