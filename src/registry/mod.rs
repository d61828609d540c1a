//! Schema registries and the schema cache the pipeline reads.
//!
//! The pipeline asks the cache synchronously ([`SchemaCache`] implements
//! [`SchemaLookup`]); a miss makes the router pause the partition and call
//! [`Resolver::resolve`], which fetches in the background: one request per
//! id however many partitions wait for it, retried with backoff while the
//! registry is unreachable or answers 5xx (an outage is not a verdict), and
//! reported back so the waiting partitions resume.

mod file;
mod http;

pub use file::FileRegistry;
pub use http::HttpRegistry;

use crate::config::RegistryConfig;
use crate::pipeline::schema::{SchemaInfo, SchemaLookup, SchemaState};
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A failed lookup that says nothing about the id (retry later).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connection refused, DNS, TLS, timeout...
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// 5xx or another answer that is not a verdict.
    #[error("registry answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// A 200 whose body could not be understood.
    #[error("registry answer not understood: {0}")]
    Decode(String),
}

/// A source of schema verdicts.
pub enum Registry {
    /// Confluent Schema Registry REST API.
    Http(HttpRegistry),
    /// YAML file of ids and subjects.
    File(FileRegistry),
}

impl Registry {
    /// Builds the registry a config names.
    pub fn from_config(cfg: &RegistryConfig, with_subjects: bool) -> anyhow::Result<Self> {
        Ok(match (&cfg.url, &cfg.file) {
            (Some(url), _) => Registry::Http(HttpRegistry::new(url, cfg, with_subjects)?),
            (None, Some(path)) => Registry::File(FileRegistry::load(path)?),
            (None, None) => anyhow::bail!("schema.registry needs url or file"),
        })
    }

    /// `Ok(None)`: the registry says the id does not exist (404).
    pub async fn fetch(&self, id: u32) -> Result<Option<SchemaInfo>, RegistryError> {
        match self {
            Registry::Http(r) => r.fetch(id).await,
            Registry::File(r) => Ok(r.get(id)),
        }
    }
}

enum Entry {
    Known(Arc<SchemaInfo>),
    Unknown { until: Instant },
}

/// Verdicts by schema id. Known ids are kept for good (ids are immutable);
/// 404s for `unknown_ttl`.
pub struct SchemaCache {
    entries: DashMap<u32, Entry>,
    unknown_ttl: Duration,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl SchemaCache {
    /// An empty cache.
    pub fn new(unknown_ttl: Duration) -> Self {
        SchemaCache {
            entries: DashMap::new(),
            unknown_ttl,
            hits: metrics::counter!("envelope_router_schema_cache_hits_total"),
            misses: metrics::counter!("envelope_router_schema_cache_misses_total"),
        }
    }

    fn store(&self, id: u32, verdict: Option<SchemaInfo>) {
        let entry = match verdict {
            Some(info) => Entry::Known(Arc::new(info)),
            None => Entry::Unknown {
                until: Instant::now() + self.unknown_ttl,
            },
        };
        self.entries.insert(id, entry);
    }

    /// Ids cached (known and recently unknown).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl SchemaLookup for SchemaCache {
    fn lookup(&self, id: u32) -> SchemaState {
        let state = match self.entries.get(&id).as_deref() {
            Some(Entry::Known(info)) => SchemaState::Known(info.clone()),
            Some(Entry::Unknown { until }) if Instant::now() < *until => SchemaState::Unknown,
            _ => SchemaState::Miss,
        };
        if state == SchemaState::Miss {
            self.misses.increment(1);
        } else {
            self.hits.increment(1);
        }
        state
    }

    fn memo_hit(&self) {
        self.hits.increment(1);
    }
}

/// Fetches missing ids in the background and reports each resolved id.
pub struct Resolver {
    registry: Arc<Registry>,
    cache: Arc<SchemaCache>,
    in_flight: DashMap<u32, ()>,
    backoff_min: Duration,
    backoff_max: Duration,
    runtime: tokio::runtime::Handle,
}

impl Resolver {
    /// A resolver spawning on `runtime`.
    pub fn new(
        registry: Registry,
        cache: Arc<SchemaCache>,
        cfg: &RegistryConfig,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(Resolver {
            registry: Arc::new(registry),
            cache,
            in_flight: DashMap::new(),
            backoff_min: cfg.retry_backoff_min,
            backoff_max: cfg.retry_backoff_max,
            runtime,
        })
    }

    /// The cache this resolver fills.
    pub fn cache(&self) -> &Arc<SchemaCache> {
        &self.cache
    }

    /// Starts fetching `id` unless a fetch is already under way; `done` is
    /// called with the id once the cache holds a verdict.
    pub fn resolve(self: &Arc<Self>, id: u32, done: impl FnOnce(u32) + Send + 'static) {
        if self.in_flight.insert(id, ()).is_some() {
            return;
        }
        let this = self.clone();
        self.runtime.spawn(async move {
            let mut backoff = this.backoff_min;
            loop {
                let started = Instant::now();
                let result = this.registry.fetch(id).await;
                metrics::histogram!("envelope_router_schema_registry_request_seconds")
                    .record(started.elapsed().as_secs_f64());
                match result {
                    Ok(verdict) => {
                        tracing::debug!(schema_id = id, known = verdict.is_some(), "schema resolved");
                        this.cache.store(id, verdict);
                        break;
                    }
                    Err(e) => {
                        metrics::counter!("envelope_router_schema_registry_errors_total").increment(1);
                        tracing::warn!(schema_id = id, error = %e, retry_in = ?backoff, "schema registry outage: partitions waiting on this id stay paused");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(this.backoff_max);
                    }
                }
            }
            this.in_flight.remove(&id);
            done(id);
        });
    }
}
