//! The `envelope-router` command line: `run`, `demo`, `check-config`,
//! `inspect`. Signals, logging and the HTTP endpoint are wired here; the
//! work lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
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
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            init_logging(cfg.log.format, &cfg.log.level);
            let runtime = runtime()?;
            let metrics = http::install_recorder()?;
            let ctl = RunControl::default();
            let addr =
                runtime.block_on(http::serve(cfg.metrics.listen, metrics, ctl.ready.clone()))?;
            tracing::info!(%addr, "metrics on /metrics, health on /health and /ready");
            let shutdown = ctl.shutdown.clone();
            runtime.spawn(async move {
                wait_for_signal().await;
                tracing::info!("signal received: stopping");
                shutdown.store(true, Ordering::Relaxed);
            });
            kafka::run(&cfg, &ctl, runtime.handle().clone())?;
            Ok(ExitCode::SUCCESS)
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
