//! librdkafka callbacks. They run on the consume loop's thread, inside
//! `poll`, and act on the shared [`RouterState`].
//!
//! - Delivery reports settle records (or queue a retry: nothing is dropped).
//! - Revoke: stop, wait for the revoked partitions' in-flight deliveries,
//!   commit their watermarks, drop their state, then let the rebalance go on.
//! - Statistics: consumer lag per partition.

use super::changelog::{ids_in_block, Changelog, CHANGELOG_OPAQUE};
use super::failed_write::FailedWrite;
use super::state::RouterState;
use super::throttle::LogThrottle;
use crate::config::TopicCreation;
use crate::stats::{SettledTally, Stats};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The config the failure path needs.
#[derive(Debug, Clone)]
pub struct WriteSettings {
    /// The dead-letter topic.
    pub dead_letter_topic: String,
    /// How output topics come to exist (decides what a missing one means).
    pub create_topics: TopicCreation,
    /// Whether published records carry `envelope.*` mirror headers.
    pub mirror_headers: bool,
    /// Whether the producer waits for the broker's acknowledgement (`acks`
    /// not 0): then an acknowledged write without an offset is not taken as
    /// proof that it was written ([`Shared::ack_without_offset`]).
    pub acks_carry_offsets: bool,
}

/// State shared by the loop and the callbacks.
pub struct Shared {
    /// Partitions, ledgers, dedup windows, retries.
    pub state: Mutex<RouterState>,
    /// Counters and metrics.
    pub stats: Arc<Stats>,
    /// How long a revoke may wait for in-flight deliveries.
    pub drain_timeout: Duration,
    /// Limits per-record failure logs to one line per topic every 5 s.
    pub failure_log: LogThrottle,
    /// What the failure path needs from the config.
    pub settings: WriteSettings,
    /// Set once a client hits a fatal error: the loop stops, and the
    /// process exits non-zero (shared with `RunControl`).
    pub fatal: Arc<OnceLock<String>>,
    /// A client reported an error since the loop last checked whether
    /// either client is in a fatal state.
    pub client_error_seen: AtomicBool,
    /// Which consume loop of the process this is (`workers`), from 0.
    pub worker: usize,
    /// Unix time from monotonic readings.
    pub wall_clock: WallClock,
    /// Dedup changelog blocks handed to librdkafka and not yet reported on.
    pub changelog_in_flight: AtomicUsize,
}

/// The router state, locked ([`Shared::lock`]).
pub type StateGuard<'s> = std::sync::MutexGuard<'s, RouterState>;

impl Shared {
    /// Locks the state (a poisoned lock means a callback panicked: carry on
    /// with the state as it is rather than abort the process).
    pub fn lock(&self) -> StateGuard<'_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the router for good: a client hit a fatal error. The first
    /// cause is kept; the loop sees it on its next turn.
    pub fn stop(&self, cause: String) {
        if self.fatal.set(cause.clone()).is_ok() {
            tracing::error!(
                cause,
                "fatal client error: the router stops and exits non-zero"
            );
        }
    }

    /// Logs a librdkafka global error (broker down, transport failure...) at
    /// most once per kind every 5 s: these repeat for as long as an outage
    /// lasts. A fatal error stops the router.
    pub fn client_error(&self, client: &str, error: &KafkaError, reason: &str) {
        // rdkafka passes the underlying code, not whether it was fatal: the
        // loop asks the clients (`fatal_error()`) on its next turn.
        self.client_error_seen.store(true, Ordering::Relaxed);
        let kind = format!("{client}: {error}");
        if let Some(similar) = self.failure_log.hit(&kind) {
            tracing::error!(client, %error, reason, similar, "librdkafka error");
        }
    }
}

/// The producer's context: settles records from delivery reports.
pub struct ProducerCtx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Delivery reports served so far (successes and failures).
    pub reports: AtomicU64,
}

impl ProducerCtx {
    /// A context over `shared`.
    pub fn new(shared: Arc<Shared>) -> ProducerCtx {
        ProducerCtx {
            shared,
            reports: AtomicU64::new(0),
        }
    }

    /// Delivery reports served so far; for [`serve_deliveries`].
    pub fn reports(&self) -> u64 {
        self.reports.load(Ordering::Relaxed)
    }

    /// Serves the delivery reports librdkafka has queued
    /// ([`serve_deliveries`]) and settles what they acknowledged
    /// ([`ProducerCtx::settle_acked`]).
    pub fn serve(producer: &BaseProducer<ProducerCtx>) -> u64 {
        let served = serve_deliveries(producer, ProducerCtx::reports);
        producer.context().settle_acked();
        served
    }

    /// `producer.poll(timeout)`, then [`ProducerCtx::settle_acked`]: how
    /// the router waits on its producer (for room in its queue, for
    /// deliveries before a revoke or a shutdown).
    pub fn poll(producer: &BaseProducer<ProducerCtx>, timeout: Duration) {
        producer.poll(timeout);
        producer.context().settle_acked();
    }

    /// Settles the records the delivery reports served so far
    /// acknowledged (`RouterState::settle_acked`), with one clock reading
    /// for their ages (the reports of one serving arrived within a loop
    /// turn), and adds their per-topic counts to the stats.
    pub fn settle_acked(&self) {
        let mut state = self.shared.lock();
        state.published.flush(&self.shared.stats);
        if !state.has_acked() {
            return;
        }
        let now = Instant::now();
        // Event times come from producers: i64::MIN must not overflow.
        let now_ns = self.shared.wall_clock.nanos_at(now);
        let unix_now = self.shared.wall_clock.unix_ms_at_nanos(now_ns);
        let mut tally = SettledTally::default();
        state.settle_acked(|s| {
            let event_age = s.event_time_ms.map(|t| unix_now.saturating_sub(t));
            tally.record(s.latency_s(now_ns), event_age);
        });
        self.shared.stats.add_settled(&mut tally);
    }
}

/// Most delivery events served by one [`serve_deliveries`] call, so a flood
/// of reports cannot keep the loop from consuming.
const MAX_EVENTS_PER_SERVE: usize = 4096;

/// Serves the delivery reports librdkafka has queued, without waiting;
/// returns how many were served. `reports` reads the context's running
/// count of served reports.
///
/// `BaseProducer::poll` with a zero timeout serves one event, the reports of
/// one produce request. Called once per loop iteration it would cap
/// settlement at one batch per iteration: with many output partitions (small
/// batches) that, not the broker, bounded throughput. This polls until an
/// event yields no report.
pub fn serve_deliveries<C: ProducerContext>(
    producer: &BaseProducer<C>,
    reports: impl Fn(&C) -> u64,
) -> u64 {
    let count = || reports(producer.context());
    let start = count();
    let mut last = start;
    for _ in 0..MAX_EVENTS_PER_SERVE {
        producer.poll(Duration::ZERO);
        let now = count();
        if now == last {
            break;
        }
        last = now;
    }
    last - start
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.client_error("producer", &error, reason);
    }

    fn stats(&self, stats: Statistics) {
        self.shared.stats.producer_statistics(&stats);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        self.reports.fetch_add(1, Ordering::Relaxed);
        if opaque == CHANGELOG_OPAQUE {
            self.changelog_delivery(result);
            return;
        }
        match result {
            // librdkafka acknowledges a write without an offset when a later
            // batch of its partition succeeded ("implicitly acked") or the
            // broker called a retry a duplicate. Both mean "written" only on
            // a broker that enforces idempotent sequence numbers; the mock
            // cluster does not, and a record acked this way was never
            // written there (tests/broker_faults.rs). A duplicate is
            // cheaper than a loss: such a write is sent again.
            Ok(m) if m.offset() < 0 && self.shared.settings.acks_carry_offsets => {
                self.shared.ack_without_offset(FailedWrite::of(opaque, m))
            }
            Ok(m) => {
                // Settled after the serving, in one pass (`settle_acked`).
                let topic = || m.topic();
                let mut state = self.shared.lock();
                let source = m.topic_ptr() as usize;
                state.published.count(source, topic, &self.shared.stats);
                state.acknowledged(opaque, topic);
            }
            Err((e, m)) => self.shared.write_failed(FailedWrite::of(opaque, m), e),
        }
    }
}

impl ProducerCtx {
    /// A dedup changelog block was acknowledged or failed for good (after
    /// librdkafka's own retries): no record settles on it.
    fn changelog_delivery(&self, result: &DeliveryResult<'_>) {
        let shared = &self.shared;
        let _ =
            shared
                .changelog_in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        match result {
            Ok(m) => {
                let len = m.payload().map_or(0, <[u8]>::len);
                shared
                    .stats
                    .changelog_block(true, ids_in_block(len), len as u64);
            }
            Err((e, m)) => {
                shared.stats.changelog_block(false, 0, 0);
                if let Some(similar) = shared.failure_log.hit(m.topic()) {
                    tracing::error!(topic = m.topic(), error = %e, similar, "dedup changelog block lost: a crash before these ids are written again may publish their records twice");
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Seconds since the Unix epoch of a unix-ms time: the dedup window's
/// clock, shared by live records and the changelog's block timestamps
/// (saturates in 2106).
pub fn unix_seconds(unix_ms: i64) -> u32 {
    (unix_ms / 1000).clamp(0, i64::from(u32::MAX)) as u32
}

/// Wall-clock time from a monotonic reading, so a settled record's two ages
/// (since arrival, since its event time) cost one clock read. Re-based by
/// the loop's housekeeping every second, so it follows the system clock.
pub struct WallClock {
    base: Instant,
    /// Unix milliseconds at `base`.
    unix_at_base: AtomicI64,
}

impl Default for WallClock {
    fn default() -> Self {
        let c = WallClock {
            base: Instant::now(),
            unix_at_base: AtomicI64::new(0),
        };
        c.rebase();
        c
    }
}

impl WallClock {
    /// Nanoseconds from this clock's base to the monotonic instant `at`:
    /// what the settlement ledger keeps of a record's arrival.
    #[inline]
    pub fn nanos_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// Unix milliseconds at the monotonic instant `at`.
    pub fn unix_ms_at(&self, at: Instant) -> i64 {
        self.unix_ms_at_nanos(self.nanos_at(at))
    }

    /// Unix milliseconds at `nanos` past this clock's base
    /// ([`WallClock::nanos_at`]).
    #[inline]
    pub fn unix_ms_at_nanos(&self, nanos: u64) -> i64 {
        self.unix_at_base
            .load(Ordering::Relaxed)
            .saturating_add((nanos / 1_000_000) as i64)
    }

    /// Follows the system clock (NTP steps and slews).
    pub fn rebase(&self) {
        let since = self.base.elapsed().as_millis() as i64;
        self.unix_at_base
            .store(unix_ms().saturating_sub(since), Ordering::Relaxed);
    }
}

/// Retry delay: 100 ms doubling to 10 s.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempts.min(7))).min(Duration::from_secs(10))
}

/// The consumer's context: partition lifecycle and statistics.
pub struct ConsumerCtx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The producer, to drain deliveries during a revoke (set once built).
    pub producer: OnceLock<Arc<BaseProducer<ProducerCtx>>>,
    /// The dedup changelog (None when off): restored from on assignment,
    /// written to before a revoke commits.
    pub changelog: Option<Arc<Changelog>>,
}

impl ClientContext for ConsumerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.client_error("consumer", &error, reason);
    }

    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.shared
                        .stats
                        .consumer_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl),
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut state = self.shared.lock();
            let mut fresh = Vec::new();
            let mut unpause = TopicPartitionList::new();
            for e in tpl.elements() {
                if state.find(e.topic(), e.partition()).is_none() {
                    fresh.push(state.assign(e.topic(), e.partition()));
                    unpause.add_partition(e.topic(), e.partition());
                }
            }
            // A new assignment starts unpaused. librdkafka keeps a pause
            // the loop made across a revoke and a later assign of the same
            // partition (it resets only its own pauses), while the loop
            // forgets the pause and its reason once the partition is
            // revoked: left paused, the partition would never be read again.
            if unpause.count() > 0 {
                if let Err(e) = consumer.resume(&unpause) {
                    tracing::warn!(error = %e, "resuming newly assigned partitions failed");
                }
            }
            if let Some(changelog) = &self.changelog {
                self.restore(changelog, consumer, &mut state, &fresh, tpl);
            }
            drop(state);
            self.shared.stats.assigned();
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

impl ConsumerCtx {
    /// Restores the windows of newly assigned partitions before their first
    /// record is read (this runs inside the rebalance callback). If the
    /// changelog cannot be read and `on_missing_state` is `fail`, the
    /// partitions stay paused and the router stops.
    fn restore(
        &self,
        changelog: &Changelog,
        consumer: &BaseConsumer<Self>,
        state: &mut RouterState,
        slots: &[usize],
        tpl: &TopicPartitionList,
    ) {
        if slots.is_empty() {
            return;
        }
        let started = Instant::now();
        match changelog.restore(state, slots) {
            Ok(ids) => {
                self.shared
                    .stats
                    .changelog_restore(true, ids, started.elapsed());
                tracing::info!(partitions = slots.len(), ids, took = ?started.elapsed(), "dedup windows restored");
            }
            Err(e) => {
                self.shared
                    .stats
                    .changelog_restore(false, 0, started.elapsed());
                if changelog.must_restore() {
                    let _ = consumer.pause(tpl);
                    self.shared.stop(format!(
                        "dedup changelog unreadable: {e} (dedup.on_missing_state: fail)"
                    ));
                } else {
                    tracing::warn!(error = %e, "dedup changelog unreadable: these partitions start with empty windows (dedup.on_missing_state: empty)");
                }
            }
        }
    }

    /// Waits for the revoked partitions' in-flight deliveries (bounded by
    /// `drain_timeout`), commits their watermarks and drops their state.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let slots: Vec<usize> = {
            let state = self.shared.lock();
            tpl.elements()
                .iter()
                .filter_map(|e| state.find(e.topic(), e.partition()))
                .collect()
        };
        let started = Instant::now();
        let deadline = started + self.shared.drain_timeout;
        // Writes in librdkafka can still settle records; writes parked for
        // a retry cannot before the revoke ends: they are dropped with the
        // assignment, uncommitted, and the next owner reads them again.
        let in_flight = || {
            let state = self.shared.lock();
            slots
                .iter()
                .filter_map(|s| state.get(*s))
                .map(|p| p.outstanding)
                .sum::<usize>()
        };
        if let Some(producer) = self.producer.get() {
            producer.context().settle_acked();
            while in_flight() > 0 && Instant::now() < deadline {
                ProducerCtx::poll(producer, Duration::from_millis(10));
            }
        }
        let left = in_flight();
        // The ids these partitions published go to the changelog before
        // their offsets are committed, so the next owner restores them.
        if let (Some(changelog), Some(producer)) = (&self.changelog, self.producer.get()) {
            changelog.write_and_wait(producer, Some(&slots), deadline);
        }
        let mut commit = TopicPartitionList::new();
        {
            let mut state = self.shared.lock();
            for slot in &slots {
                if let Some(p) = state.revoke(*slot) {
                    if let Some(next) = p.ledger.committable() {
                        let _ = commit.add_partition_offset(
                            &p.topic,
                            p.partition,
                            Offset::Offset(next),
                        );
                    }
                }
            }
        }
        if commit.count() > 0 {
            // Store what is committed: with auto-commit on, librdkafka
            // commits a revoked partition's *stored* offset after this
            // callback returns, and an older stored offset would overwrite
            // this commit (the next owner would re-read the difference).
            if let Err(e) = consumer.store_offsets(&commit) {
                tracing::debug!(error = %e, "storing offsets on revoke");
            }
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(error = %e, "commit on revoke failed; the next owner may re-read settled records");
            }
        }
        if left > 0 {
            tracing::warn!(records = left, "revoke timed out with records in flight; the next owner will process them again (duplicates possible)");
        }
        self.shared.stats.revoked(started.elapsed());
        tracing::info!(partitions = tpl.count(), took = ?started.elapsed(), "partitions revoked");
    }
}
