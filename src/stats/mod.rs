//! What the router reports, in one place: each event updates the Prometheus
//! metric and the in-process tally (read by the demo table and tests)
//! together, so names cannot drift and every count has its metric.

use crate::kafka::profile::{LoopProfile, ProducerDigest};
use crate::pipeline::Reason;
use dashmap::DashMap;
use metrics::{counter, gauge, histogram};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod describe;
mod histogram;
pub use describe::describe_metrics;
pub use histogram::{Histogram, HistogramTally, LATENCY_BOUNDS};

/// The end-to-end latency histogram's name; its `from` label says from what.
const END_TO_END: &str = "envelope_router_end_to_end_seconds";

/// Metric handles registered on first use (after the recorder is installed),
/// so the per-record path does not look metrics up by name.
#[derive(Default)]
struct Handles {
    records_in: OnceLock<metrics::Counter>,
    reasons: [OnceLock<metrics::Counter>; Reason::ALL.len()],
    /// Written changelog blocks, their ids and their bytes: one
    /// acknowledgement per block, each loop turn writes a block per input
    /// partition.
    changelog_written: OnceLock<[metrics::Counter; 3]>,
}

/// foldhash with a per-process random seed, for maps keyed by label values
/// (topic names come from producers): a few ns per short key, and not
/// predictable from outside. (XXH3's streaming hasher, used before, derived
/// a 192-byte secret from the seed on every lookup: ~2% of the loop thread
/// at 256 B, for the known-topic check alone.)
#[derive(Clone, Default)]
pub struct LabelHasher(foldhash::fast::RandomState);

impl std::hash::BuildHasher for LabelHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// Records a consume loop rejected during its turn, added to [`Stats`] at
/// the turn's end ([`RejectionTally::flush`]): a quarter of the bench's
/// records are filtered, and adding each to the shared counters (a map
/// lookup by rule name among them) cost the loop thread ~1.5% at 256 B.
#[derive(Default)]
pub struct RejectionTally {
    reasons: [u64; Reason::ALL.len()],
    /// Filtered records by rule (rules come from the config: a few).
    filtered: Vec<(Arc<str>, u64)>,
    /// Rejected records that settled at once (dropped, not dead-lettered).
    settled: u64,
}

impl RejectionTally {
    /// One record rejected for `reason` (filtered by `rule`); `settled`
    /// when that was its verdict (a drop), not a dead letter to write.
    #[inline]
    pub fn count(&mut self, reason: Reason, rule: Option<&Arc<str>>, settled: bool) {
        self.settled += u64::from(settled);
        let Some(rule) = rule.filter(|_| reason == Reason::Filtered) else {
            self.reasons[reason_index(reason)] += 1;
            return;
        };
        match (self.filtered.iter_mut()).find(|(r, _)| Arc::ptr_eq(r, rule) || **r == **rule) {
            Some((_, n)) => *n += 1,
            None => self.filtered.push((rule.clone(), 1)),
        }
    }

    /// Adds what was counted to `stats`.
    pub fn flush(&mut self, stats: &Stats) {
        for (i, n) in self.reasons.iter_mut().enumerate() {
            if *n > 0 {
                stats.rejected_n(Reason::ALL[i], None, std::mem::take(n));
            }
        }
        for (rule, n) in &mut self.filtered {
            if *n > 0 {
                stats.rejected_n(Reason::Filtered, Some(rule), std::mem::take(n));
            }
        }
        if self.settled > 0 {
            stats.settled_n(std::mem::take(&mut self.settled));
        }
    }
}

/// Records one settle pass settled, with their latencies, added to
/// [`Stats`] at once ([`Stats::add_settled`]).
#[derive(Default)]
pub struct SettledTally {
    records: u64,
    arrival: HistogramTally,
    event_time: HistogramTally,
}

impl SettledTally {
    /// A record settled `latency_s` seconds after it was read; its
    /// envelope's event time was `event_age_ms` ago (negative: in the
    /// future, counted as 0).
    #[inline]
    pub fn record(&mut self, latency_s: f64, event_age_ms: Option<i64>) {
        self.records += 1;
        self.arrival.record(latency_s);
        if let Some(ms) = event_age_ms {
            self.event_time.record(ms.max(0) as f64 / 1000.0);
        }
    }
}

/// Counters of one router instance.
#[derive(Default)]
pub struct Stats {
    handles: Handles,
    /// End-to-end latency from a record's arrival (written to `/metrics`
    /// by [`Stats::write_histograms`]).
    latency_arrival: Histogram,
    /// End-to-end latency from its envelope's event time.
    latency_event_time: Histogram,
    records_in: AtomicU64,
    first_in: OnceLock<Instant>,
    routed: AtomicU64,
    settled: AtomicU64,
    reasons: [AtomicU64; Reason::ALL.len()],
    published: DashMap<Arc<str>, (AtomicU64, metrics::Counter), LabelHasher>,
    filtered: DashMap<Arc<str>, metrics::Counter, LabelHasher>,
    delivery_errors: AtomicU64,
    dead_letters_unwritten: AtomicU64,
    paused: AtomicU64,
    changelog: ChangelogTally,
    assignments: AtomicU64,
    longest_revoke_ms: AtomicU64,
    /// Config reloads applied, refused.
    reloads: [AtomicU64; 2],
    topic_bound_reached: std::sync::atomic::AtomicBool,
    profile: Mutex<(Vec<LoopProfile>, ProducerDigest)>,
    /// Per consume loop: paused partitions, dedup entries, dedup bytes.
    workers: Mutex<Vec<[u64; 3]>>,
}

/// Dedup changelog counts (see [`Stats::changelog_totals`]).
#[derive(Default)]
struct ChangelogTally {
    ids_written: AtomicU64,
    ids_restored: AtomicU64,
    /// Time spent restoring, in µs.
    restore_us: AtomicU64,
    blocks_failed: AtomicU64,
}

/// Most output topics with their own metric series; the rest are counted
/// under [`OTHER_TOPICS`].
pub const MAX_TOPIC_SERIES: usize = 10_000;
/// The `topic` label of output topics past [`MAX_TOPIC_SERIES`].
pub const OTHER_TOPICS: &str = "_other";

/// A bound on state a producer controls was reached (`what` names it);
/// the state was trimmed and the counter says so.
pub fn bound_reached(what: &'static str) {
    counter!("envelope_router_bounds_reached_total", "bound" => what).increment(1);
    tracing::warn!(
        bound = what,
        "a memory bound was reached; state was trimmed"
    );
}

fn reason_index(r: Reason) -> usize {
    Reason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

impl Stats {
    /// Consume loop `worker` stopped: keeps its phase profile.
    pub fn loop_profile(&self, worker: usize, p: &LoopProfile) {
        let mut all = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        if all.0.len() <= worker {
            all.0.resize(worker + 1, LoopProfile::default());
        }
        all.0[worker].merge(p);
    }

    /// Each stopped consume loop's phase profile, by worker.
    pub fn loop_profiles(&self) -> Vec<LoopProfile> {
        self.profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// A producer's statistics report (`statistics.interval.ms`).
    pub fn producer_statistics(&self, s: &rdkafka::statistics::Statistics) {
        self.profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .absorb(s);
    }

    /// The consume loops' phase profile (all workers together) and the
    /// producer statistics digest.
    pub fn profile(&self) -> (LoopProfile, ProducerDigest) {
        let all = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        let mut merged = LoopProfile::default();
        all.0.iter().for_each(|p| merged.merge(p));
        (merged, all.1.clone())
    }

    /// `n` records were read from input topics, the first of them at
    /// `first_at`. A consume loop counts its turn's records and adds them
    /// here once per turn.
    pub fn records_read(&self, n: u64, first_at: Instant) {
        self.first_in.get_or_init(|| first_at);
        self.records_in.fetch_add(n, Relaxed);
        self.handles
            .records_in
            .get_or_init(|| counter!("envelope_router_records_in_total"))
            .increment(n);
    }

    /// `n` records were routed to at least one output topic.
    #[inline]
    pub fn routed_n(&self, n: u64) {
        self.routed.fetch_add(n, Relaxed);
    }

    /// A record left the pipeline without being published.
    pub fn rejected(&self, reason: Reason, rule: Option<&str>) {
        self.rejected_n(reason, rule, 1);
    }

    /// `n` records left the pipeline without being published, for `reason`
    /// (and filtering `rule`).
    pub fn rejected_n(&self, reason: Reason, rule: Option<&str>, n: u64) {
        let i = reason_index(reason);
        self.reasons[i].fetch_add(n, Relaxed);
        match (reason, rule) {
            // Per-rule label: the rule names come from the config, so the
            // map of their counters is bounded.
            (Reason::Filtered, Some(rule)) => match self.filtered.get(rule) {
                Some(c) => c.increment(n),
                None => {
                    let c = counter!("envelope_router_filtered_total", "route" => rule.to_owned());
                    c.increment(n);
                    self.filtered.insert(rule.into(), c);
                }
            },
            (r, _) => self.handles.reasons[i]
                .get_or_init(|| {
                    if r.is_dead_letter() {
                        counter!("envelope_router_dead_letters_total", "reason" => r.code())
                    } else {
                        counter!("envelope_router_dropped_total", "reason" => r.code())
                    }
                })
                .increment(n),
        }
    }

    /// `n` records were settled without an output (dropped).
    pub fn settled_n(&self, n: u64) {
        self.settled.fetch_add(n, Relaxed);
    }

    /// `n` records were acknowledged by `topic`.
    #[inline]
    pub fn published(&self, topic: &str, n: u64) {
        if let Some(entry) = self.published.get(topic) {
            entry.0.fetch_add(n, Relaxed);
            entry.1.increment(n);
            return;
        }
        let topic = self.topic_label(topic);
        let c = counter!("envelope_router_records_out_total", "topic" => topic.to_string());
        c.increment(n);
        self.published
            .entry(topic.into())
            .or_insert_with(|| (AtomicU64::new(0), c))
            .0
            .fetch_add(n, Relaxed);
    }

    /// `topic` as a metric label: itself while fewer than
    /// [`MAX_TOPIC_SERIES`] topics have series, then [`OTHER_TOPICS`]
    /// (topic names come from producers' headers; every label set is kept
    /// by the exporter for good).
    fn topic_label<'a>(&self, topic: &'a str) -> &'a str {
        if self.published.contains_key(topic) || self.published.len() < MAX_TOPIC_SERIES {
            return topic;
        }
        if !self.topic_bound_reached.swap(true, Relaxed) {
            bound_reached("topic_series");
        }
        OTHER_TOPICS
    }

    /// Every output of a record was acknowledged (or it was dropped),
    /// `latency_s` seconds after it was read ([`SettledTally::record`]).
    pub fn settled(&self, latency_s: f64, event_age_ms: Option<i64>) {
        let mut tally = SettledTally::default();
        tally.record(latency_s, event_age_ms);
        self.add_settled(&mut tally);
    }

    /// Adds the records a settle pass counted, and empties `tally`.
    pub fn add_settled(&self, tally: &mut SettledTally) {
        self.settled
            .fetch_add(std::mem::take(&mut tally.records), Relaxed);
        self.latency_arrival.add(&mut tally.arrival);
        self.latency_event_time.add(&mut tally.event_time);
    }

    /// Writes the histograms counted in place (end-to-end latency) in
    /// Prometheus's text format, for `/metrics` after the recorder's own.
    pub fn write_histograms(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {END_TO_END} Time from a record's arrival (from=\"arrival\") or its envelope's event time (from=\"event_time\") until every output acknowledged it.");
        let _ = writeln!(out, "# TYPE {END_TO_END} histogram");
        self.latency_arrival
            .write(END_TO_END, "from=\"arrival\"", out);
        self.latency_event_time
            .write(END_TO_END, "from=\"event_time\"", out);
    }

    /// Samples of the end-to-end latency histograms: from arrival, from
    /// event time.
    pub fn latency_samples(&self) -> (u64, u64) {
        (
            self.latency_arrival.count(),
            self.latency_event_time.count(),
        )
    }

    /// A write failed (retried, dead-lettered or given up: `failed_write.rs`).
    pub fn delivery_error(&self, topic: &str, error: &str) {
        self.delivery_errors.fetch_add(1, Relaxed);
        let topic = self.topic_label(topic);
        counter!("envelope_router_delivery_errors_total", "topic" => topic.to_owned(), "error" => error.to_owned())
            .increment(1);
    }

    /// A record whose dead letter could not be written even without its
    /// payload: settled without a copy (logged with its input coordinates).
    pub fn dead_letter_unwritten(&self) {
        self.dead_letters_unwritten.fetch_add(1, Relaxed);
        counter!("envelope_router_dead_letters_unwritten_total").increment(1);
    }

    /// Records settled without any copy written (see [`Stats::dead_letter_unwritten`]).
    pub fn dead_letters_unwritten(&self) -> u64 {
        self.dead_letters_unwritten.load(Relaxed)
    }

    /// Partitions paused for backpressure (registry outage, failing
    /// output) by consume loop `worker`; the gauge is the process total.
    pub fn paused_partitions(&self, worker: usize, n: usize) {
        let total = self.per_worker(worker, |w| w[0] = n as u64, 0);
        self.paused.store(total, Relaxed);
        gauge!("envelope_router_paused_partitions").set(total as f64);
    }

    /// Dedup memory of consume loop `worker`; the gauges are process totals.
    pub fn dedup(&self, worker: usize, entries: usize, bytes: usize) {
        let entries = self.per_worker(worker, |w| w[1] = entries as u64, 1);
        let bytes = self.per_worker(worker, |w| w[2] = bytes as u64, 2);
        gauge!("envelope_router_dedup_entries").set(entries as f64);
        gauge!("envelope_router_dedup_bytes").set(bytes as f64);
    }

    /// The instance's dedup budget (`dedup.max_entries`), for the alert on
    /// windows near it.
    pub fn dedup_budget(&self, max_entries: usize) {
        gauge!("envelope_router_dedup_max_entries").set(max_entries as f64);
    }

    /// Updates one worker's gauge values and returns the total of field `i`.
    fn per_worker(&self, worker: usize, set: impl FnOnce(&mut [u64; 3]), i: usize) -> u64 {
        let mut all = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() <= worker {
            all.resize(worker + 1, [0; 3]);
        }
        set(&mut all[worker]);
        all.iter().map(|w| w[i]).sum()
    }

    /// A dedup changelog block of `ids` ids and `bytes` value bytes was
    /// acknowledged (`ok`) or failed for good (its ids are not persisted).
    pub fn changelog_block(&self, ok: bool, ids: u64, bytes: u64) {
        if ok {
            self.changelog.ids_written.fetch_add(ids, Relaxed);
            let [blocks, ids_total, bytes_total] =
                self.handles.changelog_written.get_or_init(|| {
                    [
                        counter!("envelope_router_changelog_blocks_total", "result" => "written"),
                        counter!("envelope_router_changelog_ids_total"),
                        counter!("envelope_router_changelog_bytes_total"),
                    ]
                });
            blocks.increment(1);
            ids_total.increment(ids);
            bytes_total.increment(bytes);
        } else {
            self.changelog.blocks_failed.fetch_add(1, Relaxed);
            counter!("envelope_router_changelog_blocks_total", "result" => "failed").increment(1);
        }
    }

    /// Partitions' windows restored from the changelog: `ids` read in `took`
    /// (`ok` false: the changelog could not be read).
    pub fn changelog_restore(&self, ok: bool, ids: u64, took: Duration) {
        let result = if ok { "restored" } else { "failed" };
        counter!("envelope_router_changelog_restores_total", "result" => result).increment(1);
        if ok {
            self.changelog.ids_restored.fetch_add(ids, Relaxed);
            (self.changelog.restore_us).fetch_add(took.as_micros() as u64, Relaxed);
            counter!("envelope_router_changelog_restored_ids_total").increment(ids);
            histogram!("envelope_router_changelog_restore_seconds").record(took.as_secs_f64());
        }
    }

    /// Ids written to the changelog, ids restored from it, blocks that failed.
    pub fn changelog_totals(&self) -> (u64, u64, u64) {
        let c = &self.changelog;
        (
            c.ids_written.load(Relaxed),
            c.ids_restored.load(Relaxed),
            c.blocks_failed.load(Relaxed),
        )
    }

    /// Seconds spent restoring dedup windows (every loop's restores summed).
    pub fn changelog_restore_seconds(&self) -> f64 {
        self.changelog.restore_us.load(Relaxed) as f64 / 1e6
    }

    /// A config reload was applied (`ok`) or refused; `restart_pending`:
    /// the file has restart-only changes not in effect.
    pub fn config_reload(&self, ok: bool, restart_pending: bool) {
        let result = if ok { "applied" } else { "invalid" };
        counter!("envelope_router_config_reloads_total", "result" => result).increment(1);
        if ok {
            self.reloads[0].fetch_add(1, Relaxed);
            gauge!("envelope_router_config_restart_pending")
                .set(f64::from(u8::from(restart_pending)));
        } else {
            self.reloads[1].fetch_add(1, Relaxed);
        }
    }

    /// Config reloads applied and refused so far.
    pub fn config_reloads(&self) -> (u64, u64) {
        (self.reloads[0].load(Relaxed), self.reloads[1].load(Relaxed))
    }

    /// Consumer lag of one input partition (from librdkafka statistics).
    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        gauge!("envelope_router_consumer_lag", "topic" => topic.to_owned(), "partition" => partition.to_string())
            .set(lag as f64);
    }

    /// The group gave this instance partitions (its first assignment and
    /// every rebalance after it).
    pub fn assigned(&self) {
        self.assignments.fetch_add(1, Relaxed);
        counter!("envelope_router_assignments_total").increment(1);
    }

    /// A revoke finished (drained, committed, dropped state) after `took`.
    pub fn revoked(&self, took: Duration) {
        let ms = took.as_millis().min(u128::from(u64::MAX)) as u64;
        self.longest_revoke_ms.fetch_max(ms, Relaxed);
        histogram!("envelope_router_revoke_seconds").record(took.as_secs_f64());
    }

    /// The longest revoke so far.
    pub fn longest_revoke(&self) -> Duration {
        Duration::from_millis(self.longest_revoke_ms.load(Relaxed))
    }

    /// Assignments received so far.
    pub fn assignments(&self) -> u64 {
        self.assignments.load(Relaxed)
    }

    /// Records read so far.
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Relaxed)
    }

    /// When the first record was read.
    pub fn first_record_at(&self) -> Option<Instant> {
        self.first_in.get().copied()
    }

    /// Records routed to output topics so far.
    pub fn records_routed(&self) -> u64 {
        self.routed.load(Relaxed)
    }

    /// Records fully settled so far.
    pub fn records_settled(&self) -> u64 {
        self.settled.load(Relaxed)
    }

    /// Count for one reason.
    pub fn reason(&self, r: Reason) -> u64 {
        self.reasons[reason_index(r)].load(Relaxed)
    }

    /// Partitions paused right now.
    pub fn paused(&self) -> u64 {
        self.paused.load(Relaxed)
    }

    /// Produce errors seen (each was retried).
    pub fn delivery_errors(&self) -> u64 {
        self.delivery_errors.load(Relaxed)
    }

    /// Output topics with their own series (at most [`MAX_TOPIC_SERIES`] + 1).
    pub fn topic_series(&self) -> usize {
        self.published.len()
    }

    /// Acknowledged records per output topic, sorted by topic.
    pub fn published_by_topic(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self
            .published
            .iter()
            .map(|e| (e.key().to_string(), e.value().0.load(Relaxed)))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_tally_adds_its_turn_once_flushed() {
        let stats = Stats::default();
        let mut tally = RejectionTally::default();
        let debug: Arc<str> = "drop-debug".into();
        let same_name: Arc<str> = "drop-debug".into(); // a reloaded config's
        tally.count(Reason::Duplicate, None, true);
        tally.count(Reason::Filtered, Some(&debug), true);
        tally.count(Reason::Filtered, Some(&same_name), true);
        tally.count(Reason::UnknownSchema, None, false);
        assert_eq!(stats.reason(Reason::Filtered), 0, "not before the flush");
        tally.flush(&stats);
        assert_eq!(stats.reason(Reason::Duplicate), 1);
        assert_eq!(stats.reason(Reason::Filtered), 2);
        assert_eq!(stats.reason(Reason::UnknownSchema), 1);
        assert_eq!(stats.records_settled(), 3, "the dead letter settles later");
        assert_eq!(tally.filtered.len(), 1, "one entry per rule name");
        tally.flush(&stats);
        assert_eq!(stats.reason(Reason::Filtered), 2, "each count added once");
        assert_eq!(stats.records_settled(), 3);
    }
}
