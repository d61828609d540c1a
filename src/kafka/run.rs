//! Starting and stopping the router: builds the clients, the pipeline and
//! the resolver from the config, runs the consume loop (`event_loop.rs`)
//! until shutdown, then leaves the group.
//!
//! The Kafka edge is split by role: `event_loop.rs` (the loop's phases and
//! the per-record verdicts), `schema_wait.rs` (partitions waiting on the
//! registry), `retry.rs` (produces sent again), `topics.rs` (output topic
//! creation), `headers.rs` (dead-letter and mirror headers), `context.rs`
//! (librdkafka callbacks), `state.rs` and `ledger.rs` (settlement).

use super::changelog::Changelog;
use super::context::{ConsumerCtx, ProducerCtx, Shared, WriteSettings};
use super::event_loop::Loop;
use super::topic_handles::TopicHandles;
use crate::bench::procstat::{self, Reading, ThreadGroup};
use crate::config::{Config, TopicCreation};
use crate::pipeline::schema::SchemaMode;
use crate::pipeline::{Pipeline, Reason};
use crate::registry::{Registry, Resolver, SchemaCache};
use crate::stats::Stats;
use anyhow::Context as _;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseProducer;
use rdkafka::ClientConfig;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

/// Handles to steer and watch a running router.
#[derive(Clone, Default)]
pub struct RunControl {
    /// Counters.
    pub stats: Arc<Stats>,
    /// Set to stop: the router drains, commits and returns.
    pub shutdown: Arc<AtomicBool>,
    /// True while the router is subscribed and consuming (for `/ready`).
    pub ready: Arc<AtomicBool>,
    /// Set when a client hits a fatal error: `/health` answers 503 with
    /// the cause, and [`run`] returns it as an error.
    pub fatal: Arc<OnceLock<String>>,
    /// The config in effect, replaced by [`RunControl::reload`].
    pub live: Arc<super::reload::LiveConfig>,
    /// Stop once this many records have settled (benchmarks).
    pub exit_after: Arc<ExitAfter>,
}

/// A record count to stop at (`run --exit-after-records`). The consume
/// loops check it after serving delivery reports, so the stop costs no
/// polling thread and is stamped at the turn that settled the last record,
/// with a reading of the process's threads taken while its clients still
/// run (the benchmark's per-thread CPU). CPU is counted from a reading at
/// the first record polled: start-up, the group join and a dedup restore
/// are not the records' cost.
#[derive(Default)]
pub struct ExitAfter {
    records: OnceLock<u64>,
    started: OnceLock<Reading>,
    reached: OnceLock<Instant>,
    threads: OnceLock<Vec<ThreadGroup>>,
}

impl ExitAfter {
    /// Stop once `records` have settled.
    pub fn set(&self, records: u64) {
        let _ = self.records.set(records);
    }

    /// When the count was reached, if it was.
    pub fn reached(&self) -> Option<Instant> {
        self.reached.get().copied()
    }

    /// The process's threads when the count was reached, if it was, less
    /// their reading at the first record.
    pub fn threads(&self) -> Vec<ThreadGroup> {
        let threads = self.threads.get().cloned().unwrap_or_default();
        match self.started.get() {
            Some(start) => start.threads_since(threads),
            None => threads,
        }
    }

    /// The process's CPU seconds since the first record (since it started
    /// if no record came).
    pub fn cpu_seconds(&self) -> f64 {
        match self.started.get() {
            Some(start) => start.cpu_since(),
            None => procstat::cpu_seconds().unwrap_or(0.0),
        }
    }

    /// A record was polled: the first one takes the starting reading
    /// (only when a count is set, i.e. in a benchmark).
    pub(super) fn record_polled(&self) {
        if self.records.get().is_some() {
            self.started.get_or_init(Reading::now);
        }
    }

    /// Whether `settled` reaches the count (stamping the first time).
    pub(super) fn check(&self, settled: u64) -> bool {
        match self.records.get() {
            Some(&n) if settled >= n => {
                if self.reached.set(Instant::now()).is_ok() {
                    let _ = self.threads.set(procstat::threads());
                }
                true
            }
            _ => false,
        }
    }
}

/// Runs the router until `ctl.shutdown` is set, then drains, commits and
/// returns. Blocks the calling thread; `runtime` hosts registry lookups and
/// admin calls.
///
/// With `workers: N` the process runs N consume loops, each on its own
/// thread with its own consumer (all in the group) and producer; they share
/// the schema cache, the resolver, the admin client and the metrics. The
/// group gives each partition to one consumer, so each partition's records,
/// dedup window and settlement stay in one loop, as with one worker.
pub fn run(cfg: &Config, ctl: &RunControl, runtime: tokio::runtime::Handle) -> anyhow::Result<()> {
    ctl.live.install(cfg);
    ctl.stats.dedup_budget(cfg.dedup.max_entries);
    let subject_mode = cfg.schema.mode == SchemaMode::Subject;
    let cache = Arc::new(SchemaCache::new(cfg.schema.registry.unknown_ttl));
    let registry = Registry::from_config(&cfg.schema.registry, subject_mode)?;
    let resolver = Resolver::new(
        registry,
        cache.clone(),
        &cfg.schema.registry,
        runtime.clone(),
    );
    let admin = match cfg.output.create_topics {
        TopicCreation::Admin => {
            let mut ac = ClientConfig::new();
            for (k, v) in cfg.client_properties(&Default::default()) {
                ac.set(k, v);
            }
            Some(Arc::new(
                ac.create::<AdminClient<DefaultClientContext>>()
                    .context("creating the admin client")?,
            ))
        }
        _ => None,
    };
    let changelog_partitions = if cfg.dedup.changelog.enabled {
        Some(super::changelog::prepare(cfg, admin.as_deref(), &runtime)?)
    } else {
        None
    };
    let common = Common {
        cache,
        resolver,
        admin,
        runtime,
        consuming: AtomicUsize::new(0),
        changelog_partitions,
    };
    let workers = cfg.workers.max(1);
    tracing::info!(topics = ?cfg.input.topics, group = %cfg.input.group_id, workers, "router started");
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
        let others: Vec<_> = (1..workers)
            .map(|w| {
                let common = &common;
                std::thread::Builder::new()
                    .name(format!("router-worker-{w}"))
                    .spawn_scoped(s, move || worker(w, cfg, ctl, common))
            })
            .collect();
        let mut results = vec![worker(0, cfg, ctl, &common)];
        for h in others {
            results.push(match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a router worker panicked"))),
                Err(e) => Err(anyhow::anyhow!("starting a router worker: {e}")),
            });
        }
        results
    });
    let stats = &ctl.stats;
    let dropped_or_dead: u64 = Reason::ALL.iter().map(|r| stats.reason(*r)).sum();
    tracing::info!(
        records_in = stats.records_in(),
        routed = stats.records_routed(),
        dropped_or_dead_lettered = dropped_or_dead,
        delivery_errors = stats.delivery_errors(),
        "router stopped"
    );
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    match ctl.fatal.get() {
        Some(cause) => anyhow::bail!("stopped on a fatal client error: {cause}"),
        None => Ok(()),
    }
}

/// What the process's consume loops share.
struct Common {
    cache: Arc<SchemaCache>,
    resolver: Arc<Resolver>,
    admin: Option<Arc<AdminClient<DefaultClientContext>>>,
    runtime: tokio::runtime::Handle,
    /// Loops subscribed and consuming; `/ready` once all are.
    consuming: AtomicUsize,
    /// The dedup changelog's partition count (None: changelog off).
    changelog_partitions: Option<i32>,
}

/// One consume loop, from its clients to its last commit. A worker that
/// cannot start stops the others (through `ctl.shutdown`).
fn worker(n: usize, cfg: &Config, ctl: &RunControl, common: &Common) -> anyhow::Result<()> {
    let clients = Clients::new(n, cfg, ctl, common.changelog_partitions);
    if clients.is_err() {
        ctl.shutdown.store(true, Ordering::Relaxed);
    }
    let Clients {
        shared,
        producer,
        consumer,
        pipeline,
        queue_capacity,
        changelog,
    } = clients?;
    let mut router = Loop {
        cfg,
        consumer: &consumer,
        topics: TopicHandles::new(producer),
        dead_letter_topic: cfg.dead_letter.topic.as_str().into(),
        shared: shared.clone(),
        pipeline,
        cache: common.cache.clone(),
        resolver: common.resolver.clone(),
        admin: common.admin.clone(),
        runtime: common.runtime.clone(),
        now_ns: 0, // set below
        now_s: 0,
        backlogs: HashMap::default(),
        paused: HashSet::new(),
        known_topics: Default::default(),
        resolved: mpsc::channel(),
        shutdown: ctl.shutdown.clone(),
        queue_capacity,
        throttled: None,
        queue_wait_left: Default::default(),
        changelog,
        live: ctl.live.clone(),
        generation: ctl.live.generation(),
        exit_after: ctl.exit_after.clone(),
        records_read: 0,
        routed: 0,
        rejections: Default::default(),
    };
    router.set_now(Instant::now());
    router.ensure_topic(&router.dead_letter_topic.clone());
    if common.consuming.fetch_add(1, Ordering::Relaxed) + 1 == cfg.workers.max(1) {
        ctl.ready.store(true, Ordering::Relaxed);
    }
    router.run();
    common.consuming.fetch_sub(1, Ordering::Relaxed);
    ctl.ready.store(false, Ordering::Relaxed);
    // After a fatal error too: flush what can be flushed and commit the
    // settled watermark, so a restart re-reads as little as possible.
    router.shutdown();
    drop(router);
    if consumer.client().fatal_error().is_some() {
        // librdkafka's close of a consumer in a fatal state (fenced, say)
        // waits for a group exit that never comes: skip it, the process is
        // about to exit and the broker expires the member.
        std::mem::forget(consumer);
    } else {
        // Leaves the group: the revoke callback settles what it serves
        // (`ProducerCtx::poll`, which adds the per-topic counts too) and
        // commits once more.
        drop(consumer);
    }
    Ok(())
}

/// One loop's own pieces: its state, clients and pipeline.
struct Clients {
    shared: Arc<Shared>,
    producer: Arc<BaseProducer<ProducerCtx>>,
    consumer: BaseConsumer<ConsumerCtx>,
    pipeline: Pipeline,
    queue_capacity: usize,
    changelog: Option<Arc<Changelog>>,
}

impl Clients {
    /// Builds loop `n`'s pipeline and clients, and subscribes.
    fn new(
        n: usize,
        cfg: &Config,
        ctl: &RunControl,
        changelog_partitions: Option<i32>,
    ) -> anyhow::Result<Clients> {
        let pipeline = Pipeline::new(
            super::reload::compile(cfg, std::path::Path::new("config"))
                .map_err(anyhow::Error::msg)?,
        );
        let pc = producer_config(cfg);
        let shared = Arc::new(Shared {
            state: Default::default(),
            stats: ctl.stats.clone(),
            drain_timeout: cfg.shutdown_timeout,
            failure_log: super::throttle::LogThrottle::new(Duration::from_secs(5)),
            settings: WriteSettings {
                dead_letter_topic: cfg.dead_letter.topic.clone(),
                create_topics: cfg.output.create_topics,
                mirror_headers: cfg.output.mirror_headers,
                acks_carry_offsets: acks_carry_offsets(&pc),
            },
            fatal: ctl.fatal.clone(),
            client_error_seen: Default::default(),
            worker: n,
            wall_clock: Default::default(),
            changelog_in_flight: Default::default(),
        });
        let changelog = changelog_partitions
            .map(|partitions| Changelog::new(cfg, partitions).map(Arc::new))
            .transpose()?;
        shared.lock().changelog = changelog.is_some();
        let queue_capacity = pc
            .get("queue.buffering.max.messages")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000usize)
            .max(1);
        let producer: Arc<BaseProducer<ProducerCtx>> = Arc::new(
            pc.create_with_context(ProducerCtx::new(shared.clone()))
                .context("creating the producer")?,
        );
        let consumer: BaseConsumer<ConsumerCtx> = consumer_config(cfg)
            .create_with_context(ConsumerCtx {
                shared: shared.clone(),
                producer: OnceLock::from(producer.clone()),
                changelog: changelog.clone(),
            })
            .context("creating the consumer")?;
        let topics: Vec<&str> = cfg.input.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).context("subscribing")?;
        Ok(Clients {
            shared,
            producer,
            consumer,
            pipeline,
            queue_capacity,
            changelog,
        })
    }
}

/// Whether a producer with these settings waits for the broker's
/// acknowledgement, so that a delivered write carries its offset (`acks` or
/// its alias `request.required.acks` is not 0; librdkafka's default is all).
pub fn acks_carry_offsets(pc: &ClientConfig) -> bool {
    let acks = pc.get("acks").or_else(|| pc.get("request.required.acks"));
    acks.is_none_or(|a| a.trim() != "0")
}

/// The producer settings the router uses (the bench's bare relay uses the
/// same): defaults, then the config's common and producer properties.
pub fn producer_config(cfg: &Config) -> ClientConfig {
    let mut pc = ClientConfig::new();
    pc.set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000");
    // Derived unless set: room for the largest record the router accepts
    // plus its key, headers and framing (check-config refuses less).
    pc.set(
        "message.max.bytes",
        cfg.producer_message_max_bytes().to_string(),
    );
    for (k, v) in cfg.client_properties(&cfg.kafka.producer) {
        pc.set(k, v);
    }
    pc
}

/// The consumer's default prefetch queue, in KiB
/// (`queued.max.messages.kbytes`; librdkafka's own default is 65536).
const PREFETCH_QUEUE_KIB: &str = "8192";

/// The consumer settings the router uses: defaults, then the config's
/// common and consumer properties, then the two at-least-once depends on.
pub fn consumer_config(cfg: &Config) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("group.id", &cfg.input.group_id)
        .set("auto.offset.reset", "earliest")
        // Settled work is committed within a second: what a crash or a
        // rebalance can make the next owner read again stays small.
        .set("auto.commit.interval.ms", "1000")
        .set("statistics.interval.ms", "5000")
        // When its prefetch queue is full (queued.max.messages.kbytes),
        // librdkafka postpones a partition's next fetch by this much; at
        // the default 1 s a loop that drained the queue sat idle for most
        // of that second (BENCHMARKS.md: 76k -> 177k records/s at 1 KB).
        .set("fetch.queue.backoff.ms", "10")
        // librdkafka prefetches up to 64 MiB by default: far more than the
        // CPU's caches, so a loop that is the bottleneck reads each record
        // from memory long after the fetcher wrote it. 8 MiB: at 256 B the
        // router went 518k -> 593k records/s (medians of alternated
        // invocations) with ~55 MiB less resident; 4 MiB did as well on
        // the mock broker but cost a slow real one (tansu) a fifth of its
        // throughput (BENCHMARKS.md, "the prefetch queue"). The queue must
        // hold a fetch response and a fetch round trip of data: raise it
        // for a broker many milliseconds away.
        .set("queued.max.messages.kbytes", PREFETCH_QUEUE_KIB);
    for (k, v) in cfg.client_properties(&cfg.kafka.consumer) {
        cc.set(k, v);
    }
    // Offsets are stored only once settled, and auto-commit commits what was
    // stored. A config cannot change these.
    cc.set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true");
    cc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefetch_queue_is_small_by_default_and_a_config_may_raise_it() {
        let parse = |consumer: &str| {
            let yaml = format!(
                "kafka: {{bootstrap.servers: 'b:9092', consumer: {{{consumer}}}}}\n\
                 input: {{topics: [raw]}}\nschema: {{registry: {{file: s.yaml}}}}\n"
            );
            Config::from_yaml(&yaml, std::path::Path::new("t.yaml"), |_| None).unwrap()
        };
        let cc = consumer_config(&parse(""));
        assert_eq!(
            cc.get("queued.max.messages.kbytes"),
            Some(PREFETCH_QUEUE_KIB)
        );
        assert_eq!(cc.get("fetch.queue.backoff.ms"), Some("10"));
        let cc = consumer_config(&parse("queued.max.messages.kbytes: 65536"));
        assert_eq!(cc.get("queued.max.messages.kbytes"), Some("65536"));
        assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn offsets_prove_writes_unless_acks_is_zero() {
        let mut pc = ClientConfig::new();
        assert!(acks_carry_offsets(&pc), "librdkafka's default is all");
        pc.set("acks", "all");
        assert!(acks_carry_offsets(&pc));
        pc.set("acks", "1");
        assert!(acks_carry_offsets(&pc));
        pc.set("acks", "0");
        assert!(!acks_carry_offsets(&pc));
        let mut alias = ClientConfig::new();
        alias.set("request.required.acks", "0");
        assert!(!acks_carry_offsets(&alias));
    }
}
