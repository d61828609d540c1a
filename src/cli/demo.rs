//! `demo`: the whole pipeline on an embedded mock cluster, with a report.

use super::{init_logging, runtime};
use clap::Args;
use envelope_router::config::LogFormat;
use envelope_router::{demo, http};
use std::process::ExitCode;

#[derive(Args)]
pub struct DemoArgs {
    /// Records to generate.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Input partitions.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let DemoArgs {
        records,
        partitions,
        seed,
    } = args;
    init_logging(LogFormat::Human, "warn");
    let runtime = runtime()?;
    let _metrics = http::install_recorder(runtime.handle())?;
    eprintln!("envelope-router demo: embedded mock Kafka cluster, file-backed schema registry, {records} records");
    let report = demo::run(
        &demo::DemoOptions {
            records,
            partitions,
            seed,
            progress: true,
        },
        runtime.handle().clone(),
    )?;
    report.print(&mut std::io::stdout())?;
    Ok(if report.mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
