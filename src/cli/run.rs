//! `run` (the router as a service) and the hidden `relay` (a benchmark ceiling).

use super::{init_logging, runtime};
use clap::Args;
use envelope_router::bench::{procstat, relay};
use envelope_router::config::Config;
use envelope_router::kafka::{self, RunControl};
use envelope_router::{http, pipeline::Reason};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct RunArgs {
    /// The YAML config (see config.example.yaml).
    #[arg(short, long, env = "ENVELOPE_ROUTER_CONFIG")]
    config: PathBuf,
    /// Stop once this many records are settled (benchmarks).
    #[arg(long, hide = true)]
    exit_after_records: Option<u64>,
    /// Print a JSON summary line on stdout at exit (benchmarks).
    #[arg(long, hide = true)]
    summary: bool,
    /// Also reload when the config file changes (checked at this interval,
    /// e.g. `2s`); SIGHUP always reloads.
    #[arg(long, value_parser = humantime::parse_duration)]
    watch_config: Option<Duration>,
}

#[derive(Args)]
pub struct RelayArgs {
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
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&args.config)?;
    init_logging(cfg.log.format, &cfg.log.level);
    let runtime = runtime()?;
    let metrics = http::install_recorder(runtime.handle())?;
    let ctl = RunControl::default();
    let done_at = args.exit_after_records.map(|n| stop_after(&ctl, n));
    let addr = runtime.block_on(http::serve(
        cfg.metrics.listen,
        metrics,
        ctl.stats.clone(),
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
    runtime.spawn(reload_on_hangup(ctl.clone(), args.config.clone()));
    if let Some(every) = args.watch_config {
        runtime.spawn(reload_on_change(ctl.clone(), args.config.clone(), every));
    }
    kafka::run(&cfg, &ctl, runtime.handle().clone())?;
    let finished = done_at.and_then(|h| h.join().ok().flatten());
    if args.summary {
        print_summary(&ctl, finished);
    }
    if let (Some(n), None) = (args.exit_after_records, finished) {
        anyhow::bail!("stopped before {n} records were settled");
    }
    Ok(ExitCode::SUCCESS)
}

/// The benchmark's view of a finished run, as one JSON line on stdout.
fn print_summary(ctl: &RunControl, finished: Option<Instant>) {
    let s = &ctl.stats;
    let (loop_profile, producer_digest) = s.profile();
    let active = match (s.first_record_at(), finished) {
        (Some(first), Some(done)) => done.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    let reasons: std::collections::BTreeMap<&str, u64> = Reason::ALL
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
            "cpu_s": ctl.exit_after.cpu_seconds(),
            "peak_rss_bytes": procstat::peak_rss_bytes().unwrap_or(0),
            "restored_ids": s.changelog_totals().1,
            "restore_s": s.changelog_restore_seconds(),
            "loop": loop_profile,
            "producer": producer_digest,
            "threads": ctl.exit_after.threads(),
        })
    );
}

pub fn relay(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(&args.config)?;
    init_logging(cfg.log.format, &cfg.log.level);
    cfg.input.group_id = args.group;
    let mode = match args.output {
        Some(output) if !args.routing => relay::Mode::Bare { output },
        _ => relay::Mode::Routing,
    };
    let s = relay::run(&cfg, &mode, args.exit_after, child_timeout())?;
    println!(
        "{}",
        serde_json::json!({
            "records": s.records,
            "writes": s.writes,
            "bytes": s.bytes,
            "active_s": s.active_s,
            "cpu_s": s.cpu_s,
            "peak_rss_bytes": procstat::peak_rss_bytes().unwrap_or(0),
            "producer": s.producer,
            "threads": s.threads,
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// Stops the router once `n` records are settled (the consume loops check
/// it: `ExitAfter`) or the child timeout passes; the thread returns when
/// the count was reached, `None` on timeout. It wakes every 50 ms: a 1 ms
/// poll here cost ~3% of the router's CPU in the benchmark.
fn stop_after(ctl: &RunControl, n: u64) -> std::thread::JoinHandle<Option<Instant>> {
    ctl.exit_after.set(n);
    let ctl = ctl.clone();
    let deadline = Instant::now() + child_timeout();
    std::thread::spawn(move || {
        while !ctl.shutdown.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        ctl.shutdown.store(true, Ordering::Relaxed);
        ctl.exit_after.reached()
    })
}

/// How long a benchmark child may run (`ENVELOPE_ROUTER_TIMEOUT_S`, set by `bench`).
fn child_timeout() -> Duration {
    std::env::var("ENVELOPE_ROUTER_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs)
}

/// Reloads routes and schema settings on each SIGHUP.
async fn reload_on_hangup(ctl: RunControl, path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    while hangup.recv().await.is_some() {
        tracing::info!(path = %path.display(), "SIGHUP: reloading the config");
        let _ = ctl.reload(&path);
    }
}

/// Reloads when the config file's modification time or size changes.
async fn reload_on_change(ctl: RunControl, path: PathBuf, every: Duration) {
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut last = stamp(&path);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now != last && now.is_some() {
            last = now;
            tracing::info!(path = %path.display(), "config file changed: reloading");
            let _ = ctl.reload(&path);
        }
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
