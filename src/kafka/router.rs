//! The consume loop: the Kafka edge around [`Pipeline`].
//!
//! One thread owns the consumer and polls the producer, so librdkafka's
//! callbacks (delivery reports, rebalances) run here too. Per iteration:
//! consume a batch and act on each verdict without waiting for deliveries,
//! serve delivery reports, resume partitions whose schema id was resolved,
//! resend failed produces, store settled watermarks (auto-commit commits
//! them), and housekeep dedup windows and gauges.
//!
//! A partition waiting on the schema registry is paused; its records keep
//! their order in a backlog of borrowed messages (no copy) until the id
//! resolves. An outage therefore stops that partition, never dead-letters or
//! drops its records.

use super::context::{serve_deliveries, ConsumerCtx, ProducerCtx, Shared};
use super::state::{encode_opaque, RouterState};
use crate::config::{Config, TopicCreation};
use crate::pipeline::route::Routes;
use crate::pipeline::schema::SchemaMode;
use crate::pipeline::template::Template;
use crate::pipeline::{Pipeline, PipelineConfig, Reason, Verdict};
use crate::registry::{Registry, Resolver, SchemaCache};
use crate::stats::Stats;
use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

/// Most records taken from the consumer per loop iteration.
const BATCH: usize = 2048;
/// How often settled watermarks are stored for auto-commit.
const STORE_INTERVAL: Duration = Duration::from_millis(100);
/// How often dedup windows are expired and gauges refreshed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// A partition waiting on the registry is paused once it has waited this
/// long or buffered this many records: quick lookups cost no pause/resume
/// cycle (which restarts fetching), an outage still stops consumption.
const PAUSE_AFTER: Duration = Duration::from_millis(500);
const PAUSE_BACKLOG: usize = 10_000;

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

/// Records of one partition waiting, in order, for a schema id.
struct Backlog<'c> {
    schema_id: u32,
    since: Instant,
    queue: VecDeque<BorrowedMessage<'c>>,
}

struct Loop<'c, 'a> {
    cfg: &'a Config,
    consumer: &'c BaseConsumer<ConsumerCtx>,
    producer: Arc<BaseProducer<ProducerCtx>>,
    shared: Arc<Shared>,
    pipeline: Pipeline,
    cache: Arc<SchemaCache>,
    resolver: Arc<Resolver>,
    admin: Option<Arc<AdminClient<DefaultClientContext>>>,
    runtime: tokio::runtime::Handle,
    started: Instant,
    /// By `(slot, epoch)`, so a revoked assignment's backlog is never resumed.
    backlogs: HashMap<(usize, u16), Backlog<'c>>,
    /// Partitions paused for backpressure, by `(topic, partition)`.
    paused: HashSet<(String, i32)>,
    known_topics: HashSet<Arc<str>>,
    resolved: (mpsc::Sender<u32>, mpsc::Receiver<u32>),
}

/// Why a record could not be acted on yet.
struct WaitForSchema(u32);

impl<'c> Loop<'c, '_> {
    fn run(&mut self, shutdown: &AtomicBool) {
        let mut last_store = Instant::now();
        let mut last_housekeeping = Instant::now();
        while !shutdown.load(Ordering::Relaxed) {
            let busy = self.shared.lock().in_flight() > 0;
            let mut first_wait = if busy {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(50)
            };
            for _ in 0..BATCH {
                match self.consumer.poll(first_wait) {
                    Some(Ok(m)) => self.handle(m),
                    Some(Err(e)) => {
                        let e = e.to_string();
                        if let Some(similar) = self.shared.failure_log.hit(&e) {
                            tracing::warn!(error = e, similar, "consumer error");
                        }
                    }
                    None => break,
                }
                first_wait = Duration::ZERO;
            }
            serve_deliveries(&self.producer, ProducerCtx::reports);
            self.resume_resolved();
            self.pause_long_waits();
            self.resend_due();
            if last_store.elapsed() >= STORE_INTERVAL {
                self.store_offsets();
                last_store = Instant::now();
            }
            if last_housekeeping.elapsed() >= HOUSEKEEPING_INTERVAL {
                self.housekeeping();
                last_housekeeping = Instant::now();
            }
        }
    }

    /// A fresh record: process it, or queue it behind its partition's backlog.
    fn handle(&mut self, m: BorrowedMessage<'c>) {
        let found = self.shared.lock().key_of(m.topic(), m.partition());
        let Some(key) = found else {
            // Not (or no longer) ours: it is not committed, its owner reads it.
            tracing::debug!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "record of an unassigned partition skipped"
            );
            return;
        };
        self.shared.stats.record_in();
        if let Some(b) = self.backlogs.get_mut(&key) {
            b.queue.push_back(m);
            if b.queue.len() == PAUSE_BACKLOG {
                let (topic, partition) = (b.queue[0].topic().to_owned(), b.queue[0].partition());
                self.pause(&topic, partition, "waiting for the schema registry");
            }
            return;
        }
        if let Err(WaitForSchema(id)) = self.process(&m, key) {
            self.wait_for_schema(key, id, m);
        }
    }

    fn wait_for_schema(&mut self, key: (usize, u16), id: u32, m: BorrowedMessage<'c>) {
        self.backlogs.insert(
            key,
            Backlog {
                schema_id: id,
                since: Instant::now(),
                queue: VecDeque::from([m]),
            },
        );
        self.request_schema(id);
    }

    /// Has the resolver fetch `id` and report it on `self.resolved`.
    fn request_schema(&self, id: u32) {
        let tx = self.resolved.0.clone();
        self.resolver.resolve(id, move |id| {
            let _ = tx.send(id);
        });
    }

    /// Runs the pipeline on one record and acts on the verdict.
    fn process(
        &mut self,
        m: &BorrowedMessage<'c>,
        (slot, epoch): (usize, u16),
    ) -> Result<(), WaitForSchema> {
        let record = m.payload().unwrap_or_default();
        let now_s = self.started.elapsed().as_secs() as u32;
        let arrived = Instant::now();
        let mut state = self.shared.lock();
        let Some(p) = state.get_mut(slot).filter(|p| p.epoch == epoch) else {
            return Ok(()); // revoked meanwhile
        };
        match self
            .pipeline
            .process(record, &mut p.dedup, now_s, &*self.cache)
        {
            Verdict::AwaitSchema(id) => Err(WaitForSchema(id)),
            Verdict::Drop { reason, rule } => {
                p.ledger.push(m.offset(), 0, arrived, None);
                drop(state);
                self.shared.stats.rejected(reason, rule.as_deref());
                self.shared.stats.settled(None, None);
                Ok(())
            }
            Verdict::DeadLetter { reason, detail } => {
                let seq = p.ledger.push(m.offset(), 1, arrived, None);
                drop(state);
                self.shared.stats.rejected(reason, None);
                tracing::debug!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, %detail, "dead-lettered");
                let headers = dead_letter_headers(m, reason, &detail);
                let topic = self.cfg.dead_letter.topic.clone();
                self.send(&topic, m, Some(headers), encode_opaque(slot, epoch, seq));
                Ok(())
            }
            Verdict::Publish { header, plan } => {
                let targets = plan.targets();
                let seq = p.ledger.push(
                    m.offset(),
                    targets.len() as u32,
                    arrived,
                    header.event_time_ms,
                );
                drop(state);
                self.shared.stats.routed();
                let headers = if self.cfg.output.mirror_headers {
                    Some(mirror_headers(m, &header))
                } else {
                    m.headers().map(|h| h.detach())
                };
                for t in targets {
                    if !self.known_topics.contains(&t.topic) {
                        self.ensure_topic(&t.topic);
                    }
                    self.send(
                        &t.topic,
                        m,
                        headers.clone(),
                        encode_opaque(slot, epoch, seq),
                    );
                }
                Ok(())
            }
        }
    }

    /// Enqueues one output; waits (serving deliveries) while librdkafka's
    /// queue is full; a refused record goes to the retry queue.
    fn send(
        &self,
        topic: &str,
        m: &BorrowedMessage<'_>,
        headers: Option<OwnedHeaders>,
        opaque: usize,
    ) {
        let payload = m.payload().unwrap_or_default();
        let mut rec =
            BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, opaque).payload(payload);
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Some(ts) = m.timestamp().to_millis() {
            rec = rec.timestamp(ts);
        }
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        self.enqueue(rec);
    }

    fn enqueue(&self, mut rec: BaseRecord<'_, [u8], [u8], usize>) {
        loop {
            match self.producer.send(rec) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, r)) => {
                    self.shared.stats.delivery_error(r.topic, &e.to_string());
                    if let Some(similar) = self.shared.failure_log.hit(r.topic) {
                        tracing::warn!(topic = r.topic, error = %e, similar, "produce refused; the record will be sent again and its input partition waits");
                    }
                    let mut state = self.shared.lock();
                    let attempts = state.failed_attempt(r.delivery_opaque, r.topic);
                    state.retries.push(super::state::Retry {
                        opaque: r.delivery_opaque,
                        topic: r.topic.to_owned(),
                        key: r.key.map(<[u8]>::to_vec),
                        payload: r.payload.map(<[u8]>::to_vec).unwrap_or_default(),
                        headers: r.headers,
                        timestamp: r.timestamp,
                        error: e.to_string(),
                        attempts,
                        due: Instant::now() + super::context::backoff(attempts),
                    });
                    return;
                }
            }
        }
    }

    /// Sends failed produces again once their backoff has passed; their
    /// input partitions stay paused until nothing is left to retry.
    fn resend_due(&mut self) {
        if self.paused.is_empty() && self.shared.lock().retries.is_empty() {
            return; // the common case: nothing failed, nothing waits
        }
        let now = Instant::now();
        // Partitions with any record still to resend (due now or later)
        // stay paused; the due ones are sent below.
        let (due, stalled): (Vec<_>, HashSet<(String, i32)>) = {
            let mut state = self.shared.lock();
            let stalled = state
                .retries
                .iter()
                .filter_map(|r| partition_of(&state, r.opaque))
                .collect();
            let (due, waiting) = std::mem::take(&mut state.retries)
                .into_iter()
                .partition(|r| r.due <= now);
            state.retries = waiting;
            (due, stalled)
        };
        for r in due {
            let mut rec = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&r.topic, r.opaque)
                .payload(&r.payload);
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            if let Some(h) = r.headers {
                rec = rec.headers(h);
            }
            self.enqueue(rec);
        }
        for (topic, partition) in &stalled {
            self.pause(topic, *partition, "an output keeps failing");
        }
        let to_resume: Vec<_> = self
            .paused
            .iter()
            .filter(|tp| !stalled.contains(*tp) && !self.is_waiting_on_schema(tp))
            .cloned()
            .collect();
        for (topic, partition) in to_resume {
            self.resume(&topic, partition);
        }
    }

    /// Pauses partitions whose backlog has waited past [`PAUSE_AFTER`].
    fn pause_long_waits(&mut self) {
        let long: Vec<(String, i32)> = self
            .backlogs
            .values()
            .filter(|b| b.since.elapsed() >= PAUSE_AFTER)
            .filter_map(|b| b.queue.front())
            .map(|m| (m.topic().to_owned(), m.partition()))
            .filter(|tp| !self.paused.contains(tp))
            .collect();
        for (topic, partition) in long {
            self.pause(&topic, partition, "waiting for the schema registry");
        }
    }

    fn is_waiting_on_schema(&self, (topic, partition): &(String, i32)) -> bool {
        let key = self.shared.lock().key_of(topic, *partition);
        key.is_some_and(|key| self.backlogs.contains_key(&key))
    }

    /// Processes the backlogs of partitions whose schema id is now cached.
    fn resume_resolved(&mut self) {
        let ids: HashSet<u32> = self.resolved.1.try_iter().collect();
        if ids.is_empty() {
            return;
        }
        let keys: Vec<_> = self
            .backlogs
            .iter()
            .filter(|(_, b)| ids.contains(&b.schema_id))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(mut backlog) = self.backlogs.remove(&key) else {
                continue;
            };
            while let Some(m) = backlog.queue.pop_front() {
                if let Err(WaitForSchema(id)) = self.process(&m, key) {
                    // Another unknown id further down: wait again, in order.
                    backlog.queue.push_front(m);
                    backlog.schema_id = id;
                    backlog.since = Instant::now();
                    self.request_schema(id);
                    break;
                }
            }
            if backlog.queue.is_empty() {
                let tp = self
                    .shared
                    .lock()
                    .get(key.0)
                    .map(|p| (p.topic.to_string(), p.partition));
                if let Some((topic, partition)) = tp {
                    self.resume(&topic, partition);
                }
            } else {
                self.backlogs.insert(key, backlog);
            }
        }
    }

    fn pause(&mut self, topic: &str, partition: i32, why: &str) {
        if self.paused.insert((topic.to_owned(), partition)) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(error = %e, topic, partition, "pause failed");
            }
            tracing::warn!(topic, partition, why, "partition paused");
            self.shared.stats.paused_partitions(self.paused.len());
        }
    }

    fn resume(&mut self, topic: &str, partition: i32) {
        if self.paused.remove(&(topic.to_owned(), partition)) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(error = %e, topic, partition, "resume failed");
            }
            tracing::info!(topic, partition, "partition resumed");
            self.shared.stats.paused_partitions(self.paused.len());
        }
    }

    /// Stores every moved watermark; librdkafka's auto-commit commits them.
    fn store_offsets(&self) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut state = self.shared.lock();
            for (_, p) in state.partitions_mut() {
                if let Some(next) = p.ledger.take_committable() {
                    let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(next));
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                tracing::warn!(error = %e, "storing offsets failed (partition revoked?)");
            }
        }
    }

    fn housekeeping(&mut self) {
        let now_s = self.started.elapsed().as_secs() as u32;
        let ttl = self.cfg.dedup.window.as_secs() as u32;
        let budget = self.cfg.dedup.max_entries;
        let (entries, bytes) = {
            let mut state = self.shared.lock();
            let mut total = 0;
            for (_, p) in state.partitions_mut() {
                p.dedup.expire(now_s, ttl);
                total += p.dedup.len();
            }
            // Over the instance budget: forget the oldest ids, spread over partitions.
            while total > budget {
                let mut evicted = false;
                for (_, p) in state.partitions_mut() {
                    if total > budget && p.dedup.evict_oldest() {
                        total -= 1;
                        evicted = true;
                    }
                }
                if !evicted {
                    break;
                }
            }
            let bytes: usize = state.partitions().map(|(_, p)| p.dedup.heap_bytes()).sum();
            // Forget backlogs of assignments that were revoked.
            self.backlogs
                .retain(|(slot, epoch), _| state.get(*slot).is_some_and(|p| p.epoch == *epoch));
            self.paused.retain(|(t, p)| state.find(t, *p).is_some());
            (total, bytes)
        };
        self.shared.stats.dedup(entries, bytes);
        self.shared.stats.paused_partitions(self.paused.len());
    }

    /// Creates an output topic through the admin API (in the background) the
    /// first time it is used; with `broker`/`none` creation only records it.
    fn ensure_topic(&mut self, topic: &str) {
        let topic: Arc<str> = topic.into();
        if !self.known_topics.insert(topic.clone()) {
            return;
        }
        let Some(admin) = self.admin.clone() else {
            return;
        };
        let (partitions, rf) = (
            self.cfg.output.partitions,
            self.cfg.output.replication_factor,
        );
        self.runtime.spawn(async move {
            let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(rf));
            match admin.create_topics([&new], &AdminOptions::new()).await {
                Ok(results) => {
                    for r in results {
                        match r {
                            Ok(name) => tracing::info!(topic = %name, "created output topic"),
                            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                                tracing::debug!(topic = %name, "output topic exists")
                            }
                            Err((name, code)) => tracing::warn!(topic = %name, error = %code, "could not create output topic; publishing waits until it exists"),
                        }
                    }
                }
                Err(e) => tracing::warn!(topic = %topic, error = %e, "could not create output topic; publishing waits until it exists"),
            }
        });
    }

    /// Stops consuming, waits for deliveries (bounded), commits, returns.
    fn shutdown(&mut self) {
        tracing::info!("shutting down: flushing deliveries and committing");
        let deadline = Instant::now() + self.cfg.shutdown_timeout;
        loop {
            let (in_flight, retries) = {
                let s = self.shared.lock();
                (s.in_flight(), s.retries.len())
            };
            if in_flight == 0 && retries == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    in_flight,
                    retries,
                    "shutdown timeout: unsettled records are not committed and will be read again"
                );
                break;
            }
            self.producer.poll(Duration::from_millis(10));
            self.resend_due();
        }
        self.store_offsets();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is reported as an error.
            tracing::debug!(error = %e, "final commit");
        }
        let _ = self.producer.flush(Duration::from_secs(1));
    }
}

fn partition_of(state: &RouterState, opaque: usize) -> Option<(String, i32)> {
    let (slot, epoch, _) = super::state::decode_opaque(opaque);
    state
        .get(slot)
        .filter(|p| p.epoch == epoch)
        .map(|p| (p.topic.to_string(), p.partition))
}

/// The input record's headers plus `dlq.*` headers saying why and whence.
fn dead_letter_headers(m: &BorrowedMessage<'_>, reason: Reason, detail: &str) -> OwnedHeaders {
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    let h = m.headers().map(|h| h.detach()).unwrap_or_default();
    h.insert(Header {
        key: "dlq.reason",
        value: Some(reason.code()),
    })
    .insert(Header {
        key: "dlq.detail",
        value: Some(detail),
    })
    .insert(Header {
        key: "dlq.source.topic",
        value: Some(m.topic()),
    })
    .insert(Header {
        key: "dlq.source.partition",
        value: Some(&partition),
    })
    .insert(Header {
        key: "dlq.source.offset",
        value: Some(&offset),
    })
}

/// The input record's headers plus `envelope.*` headers mirroring the
/// envelope, so downstream consumers can filter without protobuf.
fn mirror_headers(m: &BorrowedMessage<'_>, h: &crate::envelope::HeaderView<'_>) -> OwnedHeaders {
    let version = h.version.to_string();
    let schema_id = h.schema_id.to_string();
    let headers = m.headers().map(|h| h.detach()).unwrap_or_default();
    let headers = headers
        .insert(Header {
            key: "envelope.message_id",
            value: Some(h.message_id),
        })
        .insert(Header {
            key: "envelope.env",
            value: Some(h.env),
        })
        .insert(Header {
            key: "envelope.source",
            value: Some(h.source),
        })
        .insert(Header {
            key: "envelope.title",
            value: Some(h.title),
        })
        .insert(Header {
            key: "envelope.category",
            value: Some(h.category),
        })
        .insert(Header {
            key: "envelope.version",
            value: Some(&version),
        })
        .insert(Header {
            key: "envelope.schema_id",
            value: Some(&schema_id),
        });
    match h.content_type {
        Some(ct) => headers.insert(Header {
            key: "envelope.content_type",
            value: Some(ct),
        }),
        None => headers,
    }
}
