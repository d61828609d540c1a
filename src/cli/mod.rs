//! The `envelope-router` command line. One module per subcommand; this one
//! parses the arguments, dispatches, and holds what they share (logging,
//! the async runtime, `key=value` properties).

mod bench;
mod check_config;
mod demo;
mod inspect;
mod replay;
mod run;

use clap::{Parser, Subcommand};
use envelope_router::config::LogFormat;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Routes protobuf envelopes between Kafka topics by their header"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router until SIGTERM/SIGINT, then flush, commit and exit.
    Run(run::RunArgs),
    /// A ceiling for `bench`: copy the config's input topics unchanged to
    /// one topic (bare relay) or to each record's routed topics (`--routing`).
    #[command(hide = true)]
    Relay(run::RelayArgs),
    /// Measure end-to-end throughput of the router against two relays on the same data.
    Bench(bench::BenchArgs),
    /// Run the whole pipeline on an embedded mock Kafka cluster and print a report.
    Demo(demo::DemoArgs),
    /// Load a config, compile its routes and print the result (secrets redacted).
    CheckConfig(check_config::CheckConfigArgs),
    /// Print envelope headers as JSON lines, from a topic or a file.
    Inspect(inspect::InspectArgs),
    /// Send dead letters back to their source topic (or `--to`), filtered by
    /// range, reason, stream and source topic; `--dry-run` only counts.
    Replay(replay::ReplayArgs),
}

/// Runs the command line; errors are printed with their causes.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run::run(args),
        Command::Relay(args) => run::relay(args),
        Command::Bench(args) => bench::bench(args),
        Command::Demo(args) => demo::demo(args),
        Command::CheckConfig(args) => check_config::check_config(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Replay(args) => replay::replay(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// Parses a `key=value` librdkafka property.
fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// The runtime hosting registry lookups, admin calls and the HTTP endpoint.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("envelope-router-io")
        .enable_all()
        .build()?)
}

/// Logs to stderr at `level` (`RUST_LOG` overrides it).
fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
