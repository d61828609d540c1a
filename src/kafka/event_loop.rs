//! The consume loop: the Kafka edge around [`Pipeline`].
//!
//! One thread owns the consumer and polls the producer, so librdkafka's
//! callbacks (delivery reports, rebalances) run here too. Per iteration:
//! consume a batch in phases of [`POLL_PHASE`] records (poll them, handle
//! each, then send the phase's published ones) without waiting for
//! deliveries, serve delivery reports, resume partitions whose schema id
//! was resolved, resend failed produces, store settled watermarks
//! (auto-commit commits them), and housekeep dedup windows and gauges.

use super::changelog::Changelog;
use super::context::{unix_seconds, ConsumerCtx, ProducerCtx, Shared};
use super::failed_write::FailedWrite;
use super::headers::{dead_letter_headers, mirror_headers};
use super::lookahead::{Held, Lookahead, POLL_PHASE};
use super::profile::{LoopProfile, TurnTimes};
use super::reload::{compile, LiveConfig};
use super::schema_wait::{Backlog, WaitForSchema, PAUSE_BACKLOG};
use super::state::{encode_opaque, RouterState};
use super::topic_handles::TopicHandles;
use crate::config::Config;
use crate::envelope::EnvelopeView;
use crate::pipeline::dedup::eviction_shares;
use crate::pipeline::route::StreamPlan;
use crate::pipeline::{EarlyId, Pipeline, Verdict};
use crate::registry::{Resolver, SchemaCache};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A published record's outputs, entered in its partition's ledger and
/// not yet sent.
pub(super) struct Publish {
    /// The plan holding the targets.
    plan: Arc<StreamPlan>,
    /// The ledger entry their delivery reports settle (`encode_opaque`).
    opaque: usize,
}

/// What a handled record still has to write, at the end of its phase.
pub(super) enum Write {
    /// Its outputs: it is published.
    Publish(Publish),
    /// Its dead letter, entered in its partition's ledger: it was rejected.
    DeadLetter {
        /// Why it was rejected, for the dead-letter topic's readers.
        headers: OwnedHeaders,
        /// The ledger entry its delivery report settles.
        opaque: usize,
    },
}

/// A handled record and what it still has to write, waiting for the end
/// of its phase.
pub(super) struct Outgoing<'c> {
    pub(super) m: BorrowedMessage<'c>,
    pub(super) write: Write,
}

/// Most records taken from the consumer per loop turn.
pub const TURN_RECORDS: usize = 2048;
/// Records between two reads of the loop's clock (`Loop::set_now`): its
/// error stays well under a millisecond (a record takes a few µs).
const CLOCK_EVERY: usize = 64;
/// How often settled watermarks are stored for auto-commit.
const STORE_INTERVAL: Duration = Duration::from_millis(100);
/// How often dedup windows are expired and gauges refreshed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// Longest one loop turn waits in `send` for room in librdkafka's queue;
/// once spent, writes are parked for a retry and the turn stops taking
/// records, so signals and rebalance callbacks are served.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(100);

pub(super) struct Loop<'c, 'a> {
    pub(super) cfg: &'a Config,
    pub(super) consumer: &'c BaseConsumer<ConsumerCtx>,
    /// The producer, with a librdkafka topic handle per output topic:
    /// records are sent through it ([`Loop::producer`] for the rest).
    pub(super) topics: TopicHandles<ProducerCtx>,
    /// `dead_letter.topic`, in the `Arc` its handle is found by.
    pub(super) dead_letter_topic: Arc<str>,
    pub(super) shared: Arc<Shared>,
    pub(super) pipeline: Pipeline,
    pub(super) cache: Arc<SchemaCache>,
    pub(super) resolver: Arc<Resolver>,
    pub(super) admin: Option<Arc<AdminClient<DefaultClientContext>>>,
    pub(super) runtime: tokio::runtime::Handle,
    /// The loop's clock for records, read at each turn's start and every
    /// [`CLOCK_EVERY`] records, not once per record ([`Loop::set_now`]):
    /// in nanoseconds on the wall clock's base, the ledger's arrival time
    /// (`WallClock::nanos_at`).
    pub(super) now_ns: u64,
    /// The same reading in unix seconds: the dedup windows' arrival time.
    pub(super) now_s: u32,
    /// By `(slot, epoch)`, so a revoked assignment's backlog is never resumed.
    /// Looked up for every record while any partition waits: hashed with
    /// foldhash, not SipHash (~60 instructions a record in a count).
    pub(super) backlogs: HashMap<(usize, u16), Backlog<'c>, foldhash::fast::FixedState>,
    /// Partitions paused for backpressure, by `(topic, partition)`.
    pub(super) paused: HashSet<(String, i32)>,
    pub(super) known_topics: super::topics::KnownTopics,
    pub(super) resolved: (mpsc::Sender<u32>, mpsc::Receiver<u32>),
    /// Set by a signal: drain, commit, return.
    pub(super) shutdown: Arc<AtomicBool>,
    /// librdkafka's queue size (`queue.buffering.max.messages`).
    pub(super) queue_capacity: usize,
    /// While the producer queue is nearly full: every assigned partition
    /// is paused (as of this assignment count).
    pub(super) throttled: Option<u64>,
    /// What is left of this loop turn's [`QUEUE_FULL_WAIT`].
    pub(super) queue_wait_left: std::cell::Cell<Duration>,
    /// The dedup changelog (None when off).
    pub(super) changelog: Option<Arc<Changelog>>,
    /// The config in effect (replaced by a reload).
    pub(super) live: Arc<LiveConfig>,
    /// The generation of `live` this loop's pipeline was built from.
    pub(super) generation: u64,
    /// A settled-record count to stop at (benchmarks).
    pub(super) exit_after: Arc<super::run::ExitAfter>,
    /// Records read this turn, added to the stats at its end.
    pub(super) records_read: u64,
    /// Records published this turn, added to the stats at its end.
    pub(super) routed: u64,
    /// Records rejected this turn, added to the stats at its end.
    pub(super) rejections: crate::stats::RejectionTally,
}

impl<'c> Loop<'c, '_> {
    pub(super) fn run(&mut self) {
        let mut last_store = Instant::now();
        let mut last_housekeeping = Instant::now();
        let mut last_changelog = Instant::now();
        let mut profile = LoopProfile::default();
        let generation = self.shared.lock().generation_handle();
        // Records are polled a phase at a time, then handled
        // (`lookahead.rs`). Empty between phases; kept across them so its
        // staging capacity and remembered assignment serve the next one.
        let mut held = Lookahead::default();
        // Records handled in a phase whose writes are sent at its end.
        let mut outbox: Vec<Outgoing<'c>> = Vec::with_capacity(POLL_PHASE);
        while !self.stopping() {
            let turn_start = Instant::now();
            self.take_reload();
            self.queue_wait_left.set(QUEUE_FULL_WAIT);
            self.throttle_on_full_queue();
            let busy = self.shared.lock().in_flight() > 0;
            let mut first_wait = if busy {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(50)
            };
            let mut t = TurnTimes::default();
            let mut records = 0u64;
            let mut idle = false;
            let mut queue_full = false;
            let mut mark = Instant::now();
            let upkeep_before = mark - turn_start;
            // Its own handle on the state, so a phase's lock can be held
            // across `&mut self` calls (`handle_staged`).
            let shared = Arc::clone(&self.shared);
            for i in 0..TURN_RECORDS {
                let polled = self.consumer.poll(first_wait);
                if i == 0 {
                    if polled.is_some() {
                        self.exit_after.record_polled();
                    }
                    let now = Instant::now();
                    t.wait = now - mark;
                    mark = now;
                    self.set_now(now);
                    idle = polled.is_none();
                } else if i % CLOCK_EVERY == 0 {
                    self.set_now(Instant::now());
                }
                match polled {
                    Some(Ok(m)) => {
                        records += 1;
                        held.stage(&shared, &generation, m);
                        if held.staged() == POLL_PHASE {
                            self.handle_staged(&shared, &mut held, &mut outbox);
                        }
                    }
                    Some(Err(e)) => {
                        if matches!(e, KafkaError::MessageConsumptionFatal(_)) {
                            self.check_fatal();
                            self.shared.stop(format!("consumer: {e}"));
                            break;
                        }
                        let e = e.to_string();
                        if let Some(similar) = self.shared.failure_log.hit(&e) {
                            tracing::warn!(error = e, similar, "consumer error");
                        }
                    }
                    None => break,
                }
                if self.queue_wait_left.get().is_zero() {
                    queue_full = true;
                    break; // the producer queue stayed full: serve the world
                }
                first_wait = Duration::ZERO;
            }
            self.handle_staged(&shared, &mut held, &mut outbox);
            let now = Instant::now();
            t.process = now - mark;
            if self.records_read > 0 {
                self.shared.stats.records_read(self.records_read, mark);
                self.records_read = 0;
            }
            self.flush_counts();
            ProducerCtx::serve(self.producer()); // settles and counts too
            let served = Instant::now();
            t.deliveries = served - now;
            if self.exit_after.check(self.shared.stats.records_settled()) {
                self.shutdown.store(true, Ordering::Relaxed);
            }
            if self.shared.client_error_seen.swap(false, Ordering::Relaxed) {
                self.check_fatal();
            }
            self.resume_resolved();
            self.pause_long_waits();
            self.resend_due();
            self.ensure_new_topics(); // of this turn's outputs
            if let Some(changelog) = &self.changelog {
                if last_changelog.elapsed() >= self.cfg.dedup.changelog.flush_interval {
                    changelog.write_by_handle(&self.topics, None);
                    last_changelog = Instant::now();
                }
            }
            if last_store.elapsed() >= STORE_INTERVAL {
                self.store_offsets();
                last_store = Instant::now();
            }
            if last_housekeeping.elapsed() >= HOUSEKEEPING_INTERVAL {
                self.housekeeping();
                last_housekeeping = Instant::now();
            }
            t.upkeep = upkeep_before + served.elapsed();
            if profile.records > 0 || records > 0 {
                // From the first record on: the group join is not waiting.
                profile.turn(&t, records, idle, queue_full);
            }
        }
        self.flush_counts();
        self.shared.stats.loop_profile(self.shared.worker, &profile);
    }

    /// Reads the records' clock at `now`: what the records need of it,
    /// derived once, not per record.
    pub(super) fn set_now(&mut self, now: Instant) {
        let clock = &self.shared.wall_clock;
        self.now_ns = clock.nanos_at(now);
        self.now_s = unix_seconds(clock.unix_ms_at_nanos(self.now_ns));
    }

    /// Adds the counts kept during a turn (records published, rejections,
    /// schema-cache hits) to the shared counters.
    fn flush_counts(&mut self) {
        if self.routed > 0 {
            self.shared.stats.routed_n(std::mem::take(&mut self.routed));
        }
        self.rejections.flush(&self.shared.stats);
        self.pipeline.flush_counts(&*self.cache);
    }

    /// Swaps in the pipeline of a reloaded config, between two records.
    fn take_reload(&mut self) {
        let generation = self.live.generation();
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        let Some(cfg) = self.live.current() else {
            return;
        };
        // Checked before it was published: this only fails if a file it
        // names (the file registry) changed in between.
        match compile(&cfg, std::path::Path::new("config")) {
            Ok(pc) => {
                self.pipeline.flush_counts(&*self.cache);
                self.pipeline = Pipeline::new(pc);
                tracing::debug!(worker = self.shared.worker, generation, "routes reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, generation, "reloaded routes failed to compile; keeping the previous ones")
            }
        }
    }

    /// Handles the records polled since the last phase, in order, under
    /// one lock of the state (first the dedup lines of them all start
    /// loading, `Lookahead::take`), then sends the phase's writes: the
    /// pipeline's code runs for a phase, then librdkafka's producer for it,
    /// each staying in the instruction cache. A record's place in its
    /// partition's ledger is taken when it is handled, so sending it later
    /// changes no order; nothing is sent under the lock (a full producer
    /// queue serves delivery reports, which lock it).
    fn handle_staged(
        &mut self,
        shared: &Shared,
        held: &mut Lookahead<'c>,
        outbox: &mut Vec<Outgoing<'c>>,
    ) {
        if held.staged() == 0 {
            return;
        }
        {
            let mut state = shared.lock();
            for h in held.take(&state) {
                if let Some(out) = self.handle(&mut state, h) {
                    outbox.push(out);
                }
            }
        }
        for out in outbox.drain(..) {
            self.write(out);
        }
    }

    /// A fresh record: process it, or queue it behind its partition's
    /// backlog. `state` is the router state, locked by the caller. Returns
    /// the record if it has something to write, for [`Loop::write`].
    #[inline]
    pub(super) fn handle(
        &mut self,
        state: &mut RouterState,
        Held { m, key, early }: Held<'c>,
    ) -> Option<Outgoing<'c>> {
        let Some(key) = key else {
            // Not (or no longer) ours: it is not committed, its owner reads it.
            tracing::debug!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "record of an unassigned partition skipped"
            );
            return None;
        };
        self.records_read += 1;
        if let Some(b) = self.backlogs.get_mut(&key) {
            b.queue.push_back(m);
            if b.queue.len() == PAUSE_BACKLOG {
                let (topic, partition) = (b.queue[0].topic().to_owned(), b.queue[0].partition());
                self.pause(&topic, partition, "waiting for the schema registry");
            }
            return None;
        }
        match self.process(state, &m, key, early) {
            Ok(Some(write)) => Some(Outgoing { m, write }),
            Ok(None) => None,
            Err(WaitForSchema(id)) => {
                self.wait_for_schema(key, id, m);
                None
            }
        }
    }

    /// Runs the pipeline on one record and acts on the verdict in `state`
    /// (locked by the caller); `early` is what the lookahead found of the
    /// record's id, if anything. A dropped record is settled here; a
    /// published or dead-lettered one is entered in its partition's ledger
    /// and what it has to write is returned, for the caller to send
    /// ([`Loop::write`]) once the lock is released.
    pub(super) fn process(
        &mut self,
        state: &mut RouterState,
        m: &BorrowedMessage<'c>,
        (slot, epoch): (usize, u16),
        early: Option<EarlyId>,
    ) -> Result<Option<Write>, WaitForSchema> {
        let record = m.payload().unwrap_or_default();
        let (arrived, now_s) = (self.now_ns, self.now_s);
        let Some(p) = state.get_mut(slot).filter(|p| p.epoch == epoch) else {
            return Ok(None); // revoked meanwhile
        };
        match self
            .pipeline
            .process_early(record, early, &mut p.dedup, now_s, &*self.cache)
        {
            Verdict::AwaitSchema(id) => Err(WaitForSchema(id)),
            Verdict::Drop { reason, rule } => {
                p.ledger.push(m.offset(), 0, arrived, None);
                self.rejections.count(reason, rule.as_ref(), true);
                Ok(None)
            }
            Verdict::DeadLetter { reason, detail } => {
                let seq = p.ledger.push(m.offset(), 1, arrived, None);
                p.outstanding += 1;
                self.rejections.count(reason, None, false);
                tracing::debug!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, %detail, "dead-lettered");
                Ok(Some(Write::DeadLetter {
                    headers: dead_letter_headers(m, reason, &detail),
                    opaque: encode_opaque(slot, epoch, seq),
                }))
            }
            Verdict::Publish {
                event_time_ms,
                plan,
                fingerprint,
            } => {
                let outputs = plan.targets().len();
                let seq = p.ledger.push_published(
                    m.offset(),
                    outputs as u32,
                    arrived,
                    event_time_ms,
                    Some(fingerprint),
                );
                p.outstanding += outputs;
                self.routed += 1;
                Ok(Some(Write::Publish(Publish {
                    plan,
                    opaque: encode_opaque(slot, epoch, seq),
                })))
            }
        }
    }

    /// Sends what a handled record has to write: its outputs, or its dead
    /// letter.
    #[inline]
    pub(super) fn write(&self, Outgoing { m, write }: Outgoing<'c>) {
        match write {
            Write::Publish(publish) => self.publish(&m, &publish),
            Write::DeadLetter { headers, opaque } => {
                self.send(&self.dead_letter_topic, &m, Some(headers), opaque)
            }
        }
    }

    /// Sends a published record to each of its outputs.
    #[inline]
    fn publish(&self, m: &BorrowedMessage<'c>, publish: &Publish) {
        let record = m.payload().unwrap_or_default();
        let mut headers = if self.cfg.output.mirror_headers {
            // Read again (it was, so it reads): an opt-in's cost.
            EnvelopeView::try_read(record)
                .map(|v| mirror_headers(m, v.header()))
                .or_else(|| m.headers().map(|h| h.detach()))
        } else {
            m.headers().map(|h| h.detach())
        };
        let targets = publish.plan.targets();
        for (i, t) in targets.iter().enumerate() {
            // The last output takes the headers; earlier ones copy.
            let h = if i + 1 == targets.len() {
                headers.take()
            } else {
                headers.clone()
            };
            self.send(&t.topic, m, h, publish.opaque);
        }
    }

    /// Enqueues one output; waits (serving deliveries) while librdkafka's
    /// queue is full; a refused record goes to the retry queue.
    #[inline]
    pub(super) fn send(
        &self,
        topic: &Arc<str>,
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
        self.enqueue(Some(topic), rec);
    }

    /// Hands one write to librdkafka. While its queue is full, serves
    /// delivery reports out of the loop turn's [`QUEUE_FULL_WAIT`] budget
    /// (the loop pauses consumption before the queue fills, so this is
    /// rare); a write still refused once the budget is spent, or refused
    /// for any other reason, goes down the failure path (`failed_write.rs`):
    /// parked for a retry, or a verdict. With `topic` (the record's own
    /// topic, in an `Arc`) it is sent by that topic's handle, else by name.
    #[inline]
    pub(super) fn enqueue(&self, topic: Option<&Arc<str>>, rec: BaseRecord<'_, [u8], [u8], usize>) {
        if let Err((e, rec)) = self.try_send(topic, rec) {
            self.enqueue_refused(topic, e, rec);
        }
    }

    /// One attempt of [`Loop::enqueue`].
    #[inline]
    #[allow(clippy::result_large_err)] // the shape of BaseProducer::send
    fn try_send<'r>(
        &self,
        topic: Option<&Arc<str>>,
        rec: BaseRecord<'r, [u8], [u8], usize>,
    ) -> super::topic_handles::SendResult<'r, [u8], [u8], usize> {
        match topic {
            Some(topic) => self.topics.send(topic, rec),
            None => self.topics.send_by_name(rec),
        }
    }

    /// [`Loop::enqueue`] of a write librdkafka refused: kept out of the
    /// per-record path.
    #[cold]
    #[inline(never)]
    fn enqueue_refused(
        &self,
        topic: Option<&Arc<str>>,
        mut e: KafkaError,
        mut rec: BaseRecord<'_, [u8], [u8], usize>,
    ) {
        loop {
            match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                    if !self.queue_wait_left.get().is_zero() && !self.stopping() =>
                {
                    let step = Duration::from_millis(5).min(self.queue_wait_left.get());
                    ProducerCtx::poll(self.producer(), step);
                    self.queue_wait_left
                        .set(self.queue_wait_left.get().saturating_sub(step));
                }
                _ => {
                    let failed = FailedWrite {
                        opaque: rec.delivery_opaque,
                        topic: rec.topic,
                        key: rec.key,
                        payload: rec.payload,
                        headers: rec.headers,
                        timestamp: rec.timestamp,
                    };
                    self.shared.write_failed(failed, &e);
                    return;
                }
            }
            match self.try_send(topic, rec) {
                Ok(()) => return,
                Err((again, r)) => (e, rec) = (again, r),
            }
        }
    }

    /// Stops the router if either client is in a fatal state (an
    /// idempotent producer that can no longer keep order, a fenced static
    /// consumer...): every later call of that client would fail.
    fn check_fatal(&self) {
        let clients = [
            ("producer", self.producer().client().fatal_error()),
            ("consumer", self.consumer.client().fatal_error()),
        ];
        for (client, fatal) in clients {
            if let Some((code, why)) = fatal {
                self.shared.stop(format!("{client}: {code:?}: {why}"));
            }
        }
    }

    /// The loop's producer (held by its topic handles).
    pub(super) fn producer(&self) -> &BaseProducer<ProducerCtx> {
        self.topics.producer()
    }

    /// Whether the loop is on its way out (a signal, or a fatal error).
    pub(super) fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed) || self.shared.fatal.get().is_some()
    }

    /// Pauses every assigned partition while librdkafka's queue is nearly
    /// full, and resumes them once it has drained to half: the loop keeps
    /// turning (signals, rebalance callbacks, delivery reports) instead of
    /// blocking in `send`.
    fn throttle_on_full_queue(&mut self) {
        let queued = self.producer().in_flight_count().max(0) as usize;
        let high = self.queue_capacity - (self.queue_capacity / 4).min(4 * TURN_RECORDS);
        let assignments = self.shared.stats.assignments();
        if queued >= high && self.throttled != Some(assignments) {
            // (Again after a rebalance: new partitions start unpaused,
            // `ConsumerCtx::post_rebalance`.)
            if let Ok(tpl) = self.consumer.assignment() {
                if let Err(e) = self.consumer.pause(&tpl) {
                    tracing::warn!(error = %e, "pausing for a full producer queue failed");
                }
            }
            if self.throttled.is_none() {
                tracing::debug!(queued, "producer queue nearly full: consumption paused");
            }
            self.throttled = Some(assignments);
        } else if self.throttled.is_some() && queued <= self.queue_capacity / 2 {
            self.throttled = None;
            let Ok(assigned) = self.consumer.assignment() else {
                return;
            };
            let mut tpl = TopicPartitionList::new();
            for e in assigned.elements() {
                // Partitions paused for a reason of their own stay paused.
                if !self.paused.contains(&(e.topic().to_owned(), e.partition())) {
                    tpl.add_partition(e.topic(), e.partition());
                }
            }
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(error = %e, "resuming after a full producer queue failed");
            }
            tracing::debug!(queued, "producer queue drained: consumption resumed");
        }
    }

    pub(super) fn pause(&mut self, topic: &str, partition: i32, why: &str) {
        if self.paused.insert((topic.to_owned(), partition)) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(error = %e, topic, partition, "pause failed");
            }
            tracing::warn!(topic, partition, why, "partition paused");
            self.shared
                .stats
                .paused_partitions(self.shared.worker, self.paused.len());
        }
    }

    pub(super) fn resume(&mut self, topic: &str, partition: i32) {
        if self.paused.remove(&(topic.to_owned(), partition)) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            if self.throttled.is_some() {
                // The whole assignment resumes once the producer queue drains.
            } else if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(error = %e, topic, partition, "resume failed");
            }
            tracing::info!(topic, partition, "partition resumed");
            self.shared
                .stats
                .paused_partitions(self.shared.worker, self.paused.len());
        }
    }

    /// Stores every moved watermark; librdkafka's auto-commit commits them.
    pub(super) fn store_offsets(&self) {
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

    pub(super) fn housekeeping(&mut self) {
        self.shared.wall_clock.rebase();
        self.cache.sweep_expired();
        let now_s = unix_seconds(self.shared.wall_clock.unix_ms_at(Instant::now()));
        let ttl = self.cfg.dedup.window.as_secs() as u32;
        // The instance budget, shared evenly by the process's loops.
        let budget = self.cfg.dedup.max_entries.div_ceil(self.cfg.workers.max(1));
        let (entries, bytes) = {
            let mut state = self.shared.lock();
            let mut total = 0;
            for (_, p) in state.partitions_mut() {
                p.dedup.expire(now_s, ttl);
                total += p.dedup.len();
            }
            // Over the instance budget: forget the oldest ids, spread over partitions.
            if total > budget {
                let lens: Vec<usize> = state.partitions().map(|(_, p)| p.dedup.len()).collect();
                let shares = eviction_shares(&lens, total - budget);
                for ((_, p), n) in state.partitions_mut().zip(shares) {
                    total -= p.dedup.evict_oldest(n);
                }
            }
            let bytes: usize = state.partitions().map(|(_, p)| p.dedup.heap_bytes()).sum();
            // Forget backlogs of assignments that were revoked.
            self.backlogs
                .retain(|(slot, epoch), _| state.get(*slot).is_some_and(|p| p.epoch == *epoch));
            self.paused.retain(|(t, p)| state.find(t, *p).is_some());
            (total, bytes)
        };
        self.shared.stats.dedup(self.shared.worker, entries, bytes);
        self.shared
            .stats
            .paused_partitions(self.shared.worker, self.paused.len());
    }

    /// Stops consuming, waits for deliveries (bounded), commits, returns.
    pub(super) fn shutdown(&mut self) {
        let fatal = self.shared.fatal.get().is_some();
        tracing::info!(fatal, "shutting down: flushing deliveries and committing");
        let deadline = Instant::now() + self.cfg.shutdown_timeout;
        loop {
            // Writes in librdkafka settle or fail on their own; parked
            // retries are worth sending again unless the producer is dead.
            let (outstanding, retries) = {
                let s = self.shared.lock();
                let outstanding: usize = s.partitions().map(|(_, p)| p.outstanding).sum();
                (outstanding, if fatal { 0 } else { s.retries.len() })
            };
            if outstanding == 0 && retries == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    outstanding,
                    retries,
                    "shutdown timeout: unsettled records are not committed and will be read again"
                );
                break;
            }
            ProducerCtx::poll(self.producer(), Duration::from_millis(10));
            if !fatal {
                self.queue_wait_left.set(QUEUE_FULL_WAIT);
                self.resend_due();
            }
        }
        if let Some(changelog) = &self.changelog {
            changelog.write_and_wait(self.producer(), None, deadline);
        }
        self.store_offsets();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is reported as an error.
            tracing::debug!(error = %e, "final commit");
        }
        let _ = self.producer().flush(Duration::from_secs(1));
        self.producer().context().settle_acked();
    }
}
