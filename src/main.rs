//! The `envelope-router` command line: `run`, `demo`, `check-config`,
//! `inspect`. Signals, logging and the HTTP endpoint are wired here; the
//! work lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use envelope_router::bench::workload::{Shape, Sizes};
use envelope_router::bench::{self, procstat, relay};
use envelope_router::config::{is_secret_property, Config, LogFormat};
use envelope_router::kafka::{self, RunControl};
use envelope_router::{demo, http, inspect};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
    Run {
        /// The YAML config (see config.example.yaml).
        #[arg(short, long, env = "ENVELOPE_ROUTER_CONFIG")]
        config: PathBuf,
        /// Stop once this many records are settled (benchmarks).
        #[arg(long, hide = true)]
        exit_after_records: Option<u64>,
        /// Print a JSON summary line on stdout at exit (benchmarks).
        #[arg(long, hide = true)]
        summary: bool,
    },
    /// A ceiling for `bench`: copy the config's input topics unchanged to
    /// one topic (bare relay) or to each record's routed topics (`--routing`).
    #[command(hide = true)]
    Relay {
        #[arg(short, long)]
        config: PathBuf,
        #[arg(long, required_unless_present = "routing")]
        output: Option<String>,
        #[arg(long, conflicts_with = "output")]
        routing: bool,
        #[arg(long)]
        group: String,
        #[arg(long)]
        exit_after: u64,
    },
    /// Measure end-to-end throughput of the router against two relays on the same data.
    Bench {
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
    },
    /// Run the whole pipeline on an embedded mock Kafka cluster and print a report.
    Demo {
        /// Records to generate.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// Input partitions.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Load a config, compile its routes and print the result (secrets redacted).
    CheckConfig {
        /// The YAML config.
        #[arg(short, long, env = "ENVELOPE_ROUTER_CONFIG")]
        config: PathBuf,
    },
    /// Print envelope headers as JSON lines, from a topic or a file.
    Inspect {
        /// Read this topic (all partitions).
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        topic: Option<String>,
        /// Brokers for --topic.
        #[arg(long, short = 'b', default_value = "localhost:9092")]
        bootstrap: String,
        /// Extra librdkafka properties for --topic, as key=value.
        #[arg(long = "property", short = 'X', value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Start at the beginning (default: only new records).
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many records.
        #[arg(long, short = 'c')]
        count: Option<usize>,
        /// Stop after this long without a new record.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        idle: Duration,
        /// Read envelopes from this file instead.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The file holds varint-length-prefixed envelopes (protobuf delimited framing).
        #[arg(long, requires = "file")]
        delimited: bool,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            exit_after_records,
            summary,
        } => {
            let cfg = Config::load(&config)?;
            init_logging(cfg.log.format, &cfg.log.level);
            let runtime = runtime()?;
            let metrics = http::install_recorder()?;
            let ctl = RunControl::default();
            let done_at = exit_after_records.map(|n| stop_after(&ctl, n));
            let addr = runtime.block_on(http::serve(
                cfg.metrics.listen,
                metrics,
                ctl.ready.clone(),
                ctl.fatal.clone(),
            ))?;
            tracing::info!(%addr, "metrics on /metrics, health on /health and /ready");
            let shutdown = ctl.shutdown.clone();
            runtime.spawn(async move {
                wait_for_signal().await;
                tracing::info!("signal received: stopping");
                shutdown.store(true, Ordering::Relaxed);
            });
            kafka::run(&cfg, &ctl, runtime.handle().clone())?;
            let finished = done_at.and_then(|h| h.join().ok().flatten());
            if summary {
                let s = &ctl.stats;
                let (loop_profile, producer_digest) = s.profile();
                let active = match (s.first_record_at(), finished) {
                    (Some(first), Some(done)) => done.duration_since(first).as_secs_f64(),
                    _ => 0.0,
                };
                let reasons: std::collections::BTreeMap<&str, u64> =
                    envelope_router::pipeline::Reason::ALL
                        .iter()
                        .map(|r| (r.code(), s.reason(*r)))
                        .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "records": s.records_in(),
                        "routed": s.records_routed(),
                        "settled": s.records_settled(),
                        "reasons": reasons,
                        "active_s": active,
                        "cpu_s": procstat::cpu_seconds().unwrap_or(0.0),
                        "peak_rss_bytes": procstat::peak_rss_bytes().unwrap_or(0),
                        "loop": loop_profile,
                        "producer": producer_digest,
                    })
                );
            }
            if exit_after_records.is_some() && finished.is_none() {
                anyhow::bail!(
                    "stopped before {} records were settled",
                    exit_after_records.unwrap_or(0)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Relay {
            config,
            output,
            routing,
            group,
            exit_after,
        } => {
            let mut cfg = Config::load(&config)?;
            init_logging(cfg.log.format, &cfg.log.level);
            cfg.input.group_id = group;
            let mode = match output {
                Some(output) if !routing => relay::Mode::Bare { output },
                _ => relay::Mode::Routing,
            };
            let s = relay::run(&cfg, &mode, exit_after, child_timeout())?;
            println!(
                "{}",
                serde_json::json!({
                    "records": s.records,
                    "writes": s.writes,
                    "bytes": s.bytes,
                    "active_s": s.active_s,
                    "cpu_s": procstat::cpu_seconds().unwrap_or(0.0),
                    "peak_rss_bytes": procstat::peak_rss_bytes().unwrap_or(0),
                    "producer": s.producer,
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
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
        } => {
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
                timeout,
                output_partitions,
                brokers,
                runs: if quick { 1 } else { runs },
                workers,
                changelog: !no_changelog,
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
        Command::Demo {
            records,
            partitions,
            seed,
        } => {
            init_logging(LogFormat::Human, "warn");
            let runtime = runtime()?;
            let _metrics = http::install_recorder()?;
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
        Command::CheckConfig { config } => {
            let cfg = Config::load(&config)?;
            check_config(&cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            topic,
            bootstrap,
            mut properties,
            from_beginning,
            count,
            idle,
            file,
            delimited,
        } => {
            let mut out = std::io::stdout().lock();
            let n = match (topic, file) {
                (_, Some(path)) => inspect::file(&path, delimited, &mut out)?,
                (Some(topic), None) => {
                    properties.insert(0, ("bootstrap.servers".into(), bootstrap));
                    inspect::topic(&properties, &topic, from_beginning, count, idle, &mut out)?
                }
                (None, None) => unreachable!("clap requires --topic or --file"),
            };
            eprintln!("{n} records");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Compiles everything `run` would and prints a summary.
fn check_config(cfg: &Config) -> anyhow::Result<()> {
    use envelope_router::pipeline::route::Routes;
    use envelope_router::pipeline::template::Template;
    let subject =
        Template::parse(&cfg.schema.subject_template).context("schema.subject_template")?;
    Routes::new(
        &cfg.routes,
        cfg.default_route,
        &cfg.output.topic_template,
        Some(subject),
    )?;
    if let Some(file) = &cfg.schema.registry.file {
        envelope_router::registry::FileRegistry::load(file)?;
    }
    println!("config OK");
    println!(
        "  input topics: {:?} (group {})",
        cfg.input.topics, cfg.input.group_id
    );
    println!(
        "  routes: {} rules, default {:?}",
        cfg.routes.len(),
        cfg.default_route
    );
    println!("  dead letters: {}", cfg.dead_letter.topic);
    println!(
        "  schema: {:?} via {}",
        cfg.schema.mode,
        cfg.schema.registry.url.clone().unwrap_or_else(|| format!(
            "file {}",
            cfg.schema
                .registry
                .file
                .as_ref()
                .map_or(String::new(), |f| f.display().to_string())
        ))
    );
    println!(
        "  dedup: {:?} window, {} ids max",
        cfg.dedup.window, cfg.dedup.max_entries
    );
    for (k, v) in cfg.client_properties(&Default::default()) {
        let shown = if is_secret_property(&k) {
            "<redacted>".to_owned()
        } else {
            v
        };
        println!("  kafka {k} = {shown}");
    }
    Ok(())
}

/// Stops the router once `n` records are settled (or the child timeout
/// passes); the thread returns when that happened, `None` on timeout.
fn stop_after(ctl: &RunControl, n: u64) -> std::thread::JoinHandle<Option<std::time::Instant>> {
    let ctl = ctl.clone();
    let deadline = std::time::Instant::now() + child_timeout();
    std::thread::spawn(move || {
        let done = loop {
            if ctl.stats.records_settled() >= n {
                break Some(std::time::Instant::now());
            }
            if std::time::Instant::now() >= deadline || ctl.shutdown.load(Ordering::Relaxed) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        ctl.shutdown.store(true, Ordering::Relaxed);
        done
    })
}

/// How long a benchmark child may run (`ENVELOPE_ROUTER_TIMEOUT_S`, set by `bench`).
fn child_timeout() -> Duration {
    std::env::var("ENVELOPE_ROUTER_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("envelope-router-io")
        .enable_all()
        .build()?)
}

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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
