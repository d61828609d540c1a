//! The metrics and health endpoint: `/metrics` (Prometheus text format),
//! `/health` (the process is up and no client hit a fatal error) and
//! `/ready` (the router is consuming).

use crate::stats::{Stats, LATENCY_BOUNDS};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder for the `metrics` macros, and its
/// upkeep on `runtime`. Call once, before any metric is touched.
///
/// The recorder keeps every histogram sample until they are folded into
/// buckets, which `install_recorder` leaves to its caller: without the
/// upkeep task its histograms would grow without bound in a router nobody
/// scrapes. (The per-record latency histograms are not the recorder's:
/// they count in place, `stats::Histogram`.)
pub fn install_recorder(runtime: &tokio::runtime::Handle) -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BOUNDS)?
        .install_recorder()?;
    crate::stats::describe_metrics();
    let upkeep = handle.clone();
    runtime.spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    stats: Arc<Stats>,
    ready: Arc<AtomicBool>,
    fatal: Arc<OnceLock<String>>,
}

/// Serves the endpoints on `listen` until the runtime stops; returns the
/// bound address (useful with port 0). `/health` answers 503 with the
/// cause once `fatal` is set; `/metrics` writes `stats`' own histograms
/// after the recorder's metrics.
pub async fn serve(
    listen: SocketAddr,
    metrics: PrometheusHandle,
    stats: Arc<Stats>,
    ready: Arc<AtomicBool>,
    fatal: Arc<OnceLock<String>>,
) -> anyhow::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/health", get(health))
        .route("/ready", get(readiness))
        .with_state(AppState {
            metrics,
            stats,
            ready,
            fatal,
        });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (metrics.listen): {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

/// The recorder's metrics, then the histograms `stats` counts itself.
async fn render(State(s): State<AppState>) -> String {
    let mut out = s.metrics.render();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    s.stats.write_histograms(&mut out);
    out
}

async fn health(State(s): State<AppState>) -> (StatusCode, String) {
    match s.fatal.get() {
        Some(cause) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("fatal client error: {cause}\n"),
        ),
        None => (StatusCode::OK, "ok\n".into()),
    }
}

async fn readiness(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
