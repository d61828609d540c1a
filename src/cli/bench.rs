//! `bench`: the router end to end against the bare and routing relays.

use super::parse_property;
use anyhow::Context;
use clap::Args;
use envelope_router::bench;
use envelope_router::bench::workload::{Shape, Sizes};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct BenchArgs {
    /// Records in the workload.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Payload size: `mixed` (log-uniform 200 B–20 KB) or a fixed size in bytes.
    #[arg(long, default_value = "mixed")]
    payload: String,
    /// Input partitions (raised on the mock cluster when retention needs more).
    #[arg(long, default_value_t = 32)]
    partitions: i32,
    /// Duplicates per 10 000 records.
    #[arg(long, default_value_t = 1000)]
    duplicates: u64,
    /// Unknown schema ids per 10 000 records.
    #[arg(long, default_value_t = 100)]
    unknown_schema: u64,
    /// Malformed records per 10 000.
    #[arg(long, default_value_t = 10)]
    malformed: u64,
    /// Partitions of each pre-created output topic.
    #[arg(long, default_value_t = 1)]
    output_partitions: i32,
    /// Brokers of the embedded mock cluster.
    #[arg(long, default_value_t = 1)]
    brokers: i32,
    /// Runs of each side (interleaved); the report gives median, min and max.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Router worker loops (`workers` in the config).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Run the router without its dedup changelog (to measure what the
    /// changelog costs).
    #[arg(long)]
    no_changelog: bool,
    /// Start each router run (throughput and latency) with this many ids in its dedup windows,
    /// restored from its changelog: the state of a router that has run for
    /// a while (10000000, the default `dedup.max_entries`, is the steady
    /// state at high rates, where each new id evicts the oldest).
    #[arg(long, default_value_t = 0, conflicts_with = "no_changelog")]
    dedup_resident: u64,
    /// librdkafka consumer property for all sides, as key=value (repeatable).
    #[arg(long = "consumer-property", short = 'C', value_parser = parse_property)]
    consumer_properties: Vec<(String, String)>,
    /// librdkafka producer property for all sides, as key=value (repeatable).
    #[arg(long = "producer-property", short = 'P', value_parser = parse_property)]
    producer_properties: Vec<(String, String)>,
    /// Brokers to use instead of the embedded mock cluster.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A few seconds: 5 000 records, checks correctness, not speed.
    #[arg(long)]
    quick: bool,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Longest either side may run.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Also measure latency, at half the router throughput just measured.
    #[arg(long)]
    latency: bool,
    /// Measure latency at this rate (records/s) instead.
    #[arg(long)]
    latency_rate: Option<u64>,
    /// How long the latency run offers load.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Partitions of the latency run's input topics. Few by default: the
    /// mock cluster looks fetch offsets up by a linear walk over each
    /// partition's message sets, and many small partitions make that
    /// walk, not the router, the bottleneck (see BENCHMARKS.md).
    #[arg(long, default_value_t = 2)]
    latency_partitions: i32,
    /// Start each side's throughput runs under this command, split on
    /// whitespace, like cargo's `runner` (e.g. `valgrind --tool=callgrind
    /// --separate-threads=yes`, as `scripts/loop-instructions.sh` does).
    #[arg(long)]
    side_runner: Option<String>,
}

pub fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let BenchArgs {
        records,
        payload,
        partitions,
        duplicates,
        unknown_schema,
        malformed,
        output_partitions,
        brokers,
        runs,
        workers,
        no_changelog,
        dedup_resident,
        consumer_properties,
        producer_properties,
        bootstrap,
        json,
        quick,
        seed,
        timeout,
        latency,
        latency_rate,
        latency_seconds,
        latency_partitions,
        side_runner,
    } = args;
    let sizes = match payload.as_str() {
        "mixed" => Sizes::LogUniform(200, 20_000),
        n => Sizes::Fixed(
            n.parse()
                .context("--payload takes `mixed` or a size in bytes")?,
        ),
    };
    let opts = bench::BenchOptions {
        shape: Shape {
            records: if quick { 5_000 } else { records },
            seed,
            sizes,
            malformed,
            invalid: 0,
            duplicate: duplicates,
            unknown_schema,
        },
        partitions,
        bootstrap,
        exe: std::env::current_exe()?,
        runner: side_runner
            .iter()
            .flat_map(|r| r.split_whitespace())
            .map(str::to_owned)
            .collect(),
        timeout,
        output_partitions,
        brokers,
        runs: if quick { 1 } else { runs },
        workers,
        changelog: !no_changelog,
        dedup_resident,
        consumer: consumer_properties,
        producer: producer_properties,
    };
    let mut report = bench::run(&opts, &mut std::io::stderr())?;
    if latency || latency_rate.is_some() {
        let rate = latency_rate
            .unwrap_or((report.router.msgs_per_s.median / 2.0) as u64)
            .max(1);
        let payload = match sizes {
            Sizes::Fixed(n) => n,
            Sizes::LogUniform(..) => 1024,
        };
        report.latency = Some(bench::latency(
            &opts,
            rate,
            latency_seconds,
            payload,
            latency_partitions,
            &mut std::io::stderr(),
        )?);
    }
    report.print(&mut std::io::stdout())?;
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(if report.mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
