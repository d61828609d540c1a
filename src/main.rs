//! The `envelope-router` binary; each subcommand lives in `cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
