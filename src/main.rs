//! The `envelope-router` binary; each subcommand lives in `cli/`.

mod cli;

/// jemalloc for the whole process: with `unprefixed_malloc_on_supported_platforms`
/// it also serves librdkafka's `malloc`/`free` (a few per record), not only Rust's.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
