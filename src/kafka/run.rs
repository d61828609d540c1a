//! Starting and stopping the router: builds the clients, the pipeline and
//! the resolver from the config, runs the consume loop (`event_loop.rs`)
//! until shutdown, then leaves the group.
//!
//! The Kafka edge is split by role: `event_loop.rs` (the loop's phases and
//! the per-record verdicts), `schema_wait.rs` (partitions waiting on the
//! registry), `retry.rs` (produces sent again), `topics.rs` (output topic
//! creation), `headers.rs` (dead-letter and mirror headers), `context.rs`
//! (librdkafka callbacks), `state.rs` and `ledger.rs` (settlement).

use super::context::{ConsumerCtx, ProducerCtx, Shared};
use super::event_loop::Loop;
use crate::config::{Config, TopicCreation};
use crate::pipeline::route::Routes;
use crate::pipeline::schema::SchemaMode;
use crate::pipeline::template::Template;
use crate::pipeline::{Pipeline, PipelineConfig, Reason};
use crate::registry::{Registry, Resolver, SchemaCache};
use crate::stats::Stats;
use anyhow::Context as _;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseProducer;
use rdkafka::ClientConfig;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
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
}

/// Runs the router until `ctl.shutdown` is set, then drains, commits and
/// returns. Blocks the calling thread; `runtime` hosts registry lookups and
/// admin calls.
pub fn run(cfg: &Config, ctl: &RunControl, runtime: tokio::runtime::Handle) -> anyhow::Result<()> {
    let stats = ctl.stats.clone();
    let subject_mode = cfg.schema.mode == SchemaMode::Subject;
    let subject = subject_mode
        .then(|| Template::parse(&cfg.schema.subject_template))
        .transpose()
        .context("schema.subject_template")?;
    let routes = Routes::new(
        &cfg.routes,
        cfg.default_route,
        &cfg.output.topic_template,
        subject,
    )?;
    let pipeline = Pipeline::new(PipelineConfig {
        routes,
        schema_mode: cfg.schema.mode,
        max_record_bytes: cfg.output.max_record_bytes,
    });
    let cache = Arc::new(SchemaCache::new(cfg.schema.registry.unknown_ttl));
    let registry = Registry::from_config(&cfg.schema.registry, subject_mode)?;
    let resolver = Resolver::new(
        registry,
        cache.clone(),
        &cfg.schema.registry,
        runtime.clone(),
    );

    let shared = Arc::new(Shared {
        state: Default::default(),
        stats: stats.clone(),
        drain_timeout: cfg.shutdown_timeout,
        failure_log: super::throttle::LogThrottle::new(Duration::from_secs(5)),
    });

    let pc = producer_config(cfg);
    let producer: Arc<BaseProducer<ProducerCtx>> = Arc::new(
        pc.create_with_context(ProducerCtx::new(shared.clone()))
            .context("creating the producer")?,
    );

    let cc = consumer_config(cfg);
    let consumer: BaseConsumer<ConsumerCtx> = cc
        .create_with_context(ConsumerCtx {
            shared: shared.clone(),
            producer: OnceLock::from(producer.clone()),
        })
        .context("creating the consumer")?;
    let topics: Vec<&str> = cfg.input.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).context("subscribing")?;

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

    tracing::info!(topics = ?cfg.input.topics, group = %cfg.input.group_id, "router started");
    let mut router = Loop {
        cfg,
        consumer: &consumer,
        producer,
        shared,
        pipeline,
        cache,
        resolver,
        admin,
        runtime,
        started: Instant::now(),
        backlogs: HashMap::new(),
        paused: HashSet::new(),
        known_topics: HashSet::new(),
        resolved: mpsc::channel(),
    };
    router.ensure_topic(&cfg.dead_letter.topic);
    ctl.ready.store(true, Ordering::Relaxed);
    router.run(&ctl.shutdown);
    ctl.ready.store(false, Ordering::Relaxed);
    router.shutdown();
    drop(router);
    drop(consumer); // leaves the group (revoke callback commits once more)
    let dropped_or_dead: u64 = Reason::ALL.iter().map(|r| stats.reason(*r)).sum();
    tracing::info!(
        records_in = stats.records_in(),
        routed = stats.records_routed(),
        dropped_or_dead_lettered = dropped_or_dead,
        delivery_errors = stats.delivery_errors(),
        "router stopped"
    );
    Ok(())
}

/// The producer settings the router uses (the bench's bare relay uses the
/// same): defaults, then the config's common and producer properties.
pub fn producer_config(cfg: &Config) -> ClientConfig {
    let mut pc = ClientConfig::new();
    pc.set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000");
    for (k, v) in cfg.client_properties(&cfg.kafka.producer) {
        pc.set(k, v);
    }
    pc
}

/// The consumer settings the router uses: defaults, then the config's
/// common and consumer properties, then the two at-least-once depends on.
pub fn consumer_config(cfg: &Config) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("group.id", &cfg.input.group_id)
        .set("auto.offset.reset", "earliest")
        // Incremental rebalancing: a member joining or leaving moves only
        // the partitions that change owner; the others keep being consumed
        // and are not revoked (no drain, no commit race, no re-reads).
        .set("partition.assignment.strategy", "cooperative-sticky")
        // Settled work is committed within a second: what a crash or a
        // rebalance can make the next owner read again stays small.
        .set("auto.commit.interval.ms", "1000")
        .set("statistics.interval.ms", "5000");
    for (k, v) in cfg.client_properties(&cfg.kafka.consumer) {
        cc.set(k, v);
    }
    // Offsets are stored only once settled, and auto-commit commits what was
    // stored. A config cannot change these.
    cc.set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true");
    cc
}
