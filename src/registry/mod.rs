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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    Known {
        info: Arc<SchemaInfo>,
        fetched: Instant,
    },
    Unknown {
        until: Instant,
    },
}

/// Most 404s remembered at once. A producer sending ever new unknown ids
/// cannot grow the cache past it: expired entries are swept first, then the
/// negative cache starts over (`envelope_router_bounds_reached_total`).
pub const MAX_UNKNOWN_IDS: usize = 100_000;

/// Verdicts by schema id. Known ids are kept for good (ids are immutable;
/// in `subject` mode a mismatch may fetch an id again, at most once per
/// `unknown_ttl`, since its subject list can grow); 404s for `unknown_ttl`,
/// then removed.
pub struct SchemaCache {
    entries: DashMap<u32, Entry>,
    unknown_ttl: Duration,
    unknown: AtomicUsize,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl SchemaCache {
    /// An empty cache.
    pub fn new(unknown_ttl: Duration) -> Self {
        SchemaCache {
            entries: DashMap::new(),
            unknown_ttl,
            unknown: AtomicUsize::new(0),
            hits: metrics::counter!("envelope_router_schema_cache_hits_total"),
            misses: metrics::counter!("envelope_router_schema_cache_misses_total"),
        }
    }

    /// Records the registry's answer for `id` (`None`: not registered).
    pub fn store(&self, id: u32, verdict: Option<SchemaInfo>) {
        let now = Instant::now();
        let entry = match verdict {
            Some(info) => Entry::Known {
                info: Arc::new(info),
                fetched: now,
            },
            None => {
                if self.unknown.load(Ordering::Relaxed) >= MAX_UNKNOWN_IDS {
                    self.sweep_expired();
                    if self.unknown.load(Ordering::Relaxed) >= MAX_UNKNOWN_IDS {
                        self.entries.retain(|_, e| matches!(e, Entry::Known { .. }));
                        self.unknown.store(0, Ordering::Relaxed);
                        crate::stats::bound_reached("schema_unknown_ids");
                    }
                }
                Entry::Unknown {
                    until: now + self.unknown_ttl,
                }
            }
        };
        let new_unknown = matches!(entry, Entry::Unknown { .. });
        let old = self.entries.insert(id, entry);
        let old_unknown = matches!(old, Some(Entry::Unknown { .. }));
        match (old_unknown, new_unknown) {
            (false, true) => self.unknown.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.unknown.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Removes 404s older than `unknown_ttl` (housekeeping).
    pub fn sweep_expired(&self) {
        let now = Instant::now();
        let mut removed = 0;
        self.entries.retain(|_, e| match e {
            Entry::Unknown { until } if *until <= now => {
                removed += 1;
                false
            }
            _ => true,
        });
        self.unknown.fetch_sub(removed, Ordering::Relaxed);
    }

    /// 404s remembered.
    pub fn unknown_len(&self) -> usize {
        self.unknown.load(Ordering::Relaxed)
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
            Some(Entry::Known { info, .. }) => SchemaState::Known(info.clone()),
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

    fn memo_hits(&self, n: u64) {
        self.hits.increment(n);
    }

    fn refresh(&self, id: u32) -> bool {
        let stale = self.entries.get(&id).is_some_and(
            |e| matches!(&*e, Entry::Known { fetched, .. } if fetched.elapsed() >= self.unknown_ttl),
        );
        if stale {
            self.entries.remove(&id);
        }
        stale
    }
}

/// A caller of [`Resolver::resolve`] waiting for its id.
type Waiter = Box<dyn FnOnce(u32) + Send + Sync>;

/// Fetches missing ids in the background and reports each resolved id.
///
/// During an outage (an unreachable registry, a 5xx, a timeout) one lookup
/// probes the registry with backoff (`retry_backoff_min` doubling to
/// `retry_backoff_max`) and every other waiting id waits for its answer, so
/// a registry that is down sees one request at a time however many ids
/// wait, and once it answers every waiting id is asked at once: output
/// resumes within `retry_backoff_max` of its return.
pub struct Resolver {
    registry: Arc<Registry>,
    cache: Arc<SchemaCache>,
    /// Ids being fetched, with everyone waiting for each (several consume
    /// loops can ask for the same id: each is told).
    in_flight: DashMap<u32, Vec<Waiter>>,
    backoff_min: Duration,
    backoff_max: Duration,
    runtime: tokio::runtime::Handle,
    /// The last answer was an outage.
    down: AtomicBool,
    /// A lookup is probing the registry during an outage.
    probing: AtomicBool,
    /// Woken when the registry answers again.
    recovered: tokio::sync::Notify,
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
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            recovered: tokio::sync::Notify::new(),
        })
    }

    /// The cache this resolver fills.
    pub fn cache(&self) -> &Arc<SchemaCache> {
        &self.cache
    }

    /// Starts fetching `id` unless a fetch is already under way; `done` is
    /// called with the id once the cache holds a verdict (a caller that
    /// joins a fetch under way is called when it ends).
    pub fn resolve(self: &Arc<Self>, id: u32, done: impl FnOnce(u32) + Send + Sync + 'static) {
        match self.in_flight.entry(id) {
            dashmap::Entry::Occupied(mut waiting) => {
                waiting.get_mut().push(Box::new(done));
                return;
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(vec![Box::new(done)]);
            }
        }
        let this = self.clone();
        self.runtime.spawn(async move {
            this.fetch_until_answered(id).await;
            if let Some((_, waiters)) = this.in_flight.remove(&id) {
                waiters.into_iter().for_each(|done| done(id));
            }
        });
    }

    async fn fetch_until_answered(&self, id: u32) {
        let mut backoff = self.backoff_min;
        let mut probe = false;
        loop {
            if !probe && self.down.load(Ordering::Acquire) {
                // An outage: probe, or wait for the probe's answer.
                let recovered = self.recovered.notified();
                tokio::pin!(recovered);
                recovered.as_mut().enable();
                if !self.probing.swap(true, Ordering::AcqRel) {
                    probe = true;
                } else if self.down.load(Ordering::Acquire) {
                    recovered.await;
                    continue;
                }
            }
            let started = Instant::now();
            let result = self.registry.fetch(id).await;
            metrics::histogram!("envelope_router_schema_registry_request_seconds")
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(verdict) => {
                    tracing::debug!(schema_id = id, known = verdict.is_some(), "schema resolved");
                    self.cache.store(id, verdict);
                    if self.down.swap(false, Ordering::AcqRel) {
                        tracing::info!(schema_id = id, "schema registry answers again");
                    }
                    if probe {
                        self.probing.store(false, Ordering::Release);
                    }
                    self.recovered.notify_waiters();
                    return;
                }
                Err(e) => {
                    metrics::counter!("envelope_router_schema_registry_errors_total").increment(1);
                    tracing::warn!(schema_id = id, error = %e, retry_in = ?backoff, "schema registry outage: partitions waiting on it stay paused; one lookup probes it");
                    self.down.store(true, Ordering::Release);
                    if !probe {
                        continue; // probe, or wait for the probe
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.backoff_max);
                }
            }
        }
    }
}
