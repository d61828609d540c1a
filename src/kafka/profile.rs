//! Where a consume loop's time goes, and what librdkafka's producer
//! statistics say about its requests. `run --summary` prints both, so
//! `bench` can show what the router waits for (BENCHMARKS.md), not only how
//! fast it went.
//!
//! The loop times its phases per turn, not per record: a turn is one wait in
//! `consumer.poll`, then up to a batch of records, then deliveries and
//! upkeep. Six clock reads per turn cost well under 1% of a busy turn.

use rdkafka::statistics::{Statistics, Window};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Time and counts per phase of the consume loop.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LoopProfile {
    /// Loop turns.
    pub turns: u64,
    /// Turns whose first poll returned nothing (the loop waited in vain).
    pub idle_turns: u64,
    /// Records taken from the consumer.
    pub records: u64,
    /// Seconds in the first poll of each turn (the only one that may wait).
    pub wait_s: f64,
    /// Seconds taking and processing records (the turn's other polls, the
    /// pipeline, the sends).
    pub process_s: f64,
    /// Seconds serving delivery reports (settlement runs inside).
    pub deliveries_s: f64,
    /// Seconds in the rest: resumes, pauses, resends, offset stores,
    /// housekeeping, the producer-queue throttle.
    pub upkeep_s: f64,
    /// Turns that ended because the producer queue stayed full.
    pub queue_full_turns: u64,
}

impl LoopProfile {
    /// Adds one turn.
    pub fn turn(&mut self, t: &TurnTimes, records: u64, idle: bool, queue_full: bool) {
        self.merge(&LoopProfile {
            turns: 1,
            idle_turns: u64::from(idle),
            records,
            wait_s: t.wait.as_secs_f64(),
            process_s: t.process.as_secs_f64(),
            deliveries_s: t.deliveries.as_secs_f64(),
            upkeep_s: t.upkeep.as_secs_f64(),
            queue_full_turns: u64::from(queue_full),
        });
    }

    /// Adds another loop's profile (one per worker).
    pub fn merge(&mut self, o: &LoopProfile) {
        self.turns += o.turns;
        self.idle_turns += o.idle_turns;
        self.queue_full_turns += o.queue_full_turns;
        self.records += o.records;
        self.wait_s += o.wait_s;
        self.process_s += o.process_s;
        self.deliveries_s += o.deliveries_s;
        self.upkeep_s += o.upkeep_s;
    }
}

/// One turn's phase durations.
#[derive(Debug, Default, Clone, Copy)]
pub struct TurnTimes {
    /// First poll.
    pub wait: Duration,
    /// Records.
    pub process: Duration,
    /// Delivery reports.
    pub deliveries: Duration,
    /// Everything else.
    pub upkeep: Duration,
}

/// A running digest of a producer's `statistics.interval.ms` reports
/// (enable them with that property; nothing is collected otherwise).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ProducerDigest {
    /// Statistics reports absorbed.
    pub reports: u64,
    /// ProduceRequests sent (cumulative, all brokers).
    pub produce_requests: i64,
    /// Records transmitted (cumulative).
    pub records_sent: i64,
    /// Records per ProduceRequest.
    pub records_per_request: f64,
    /// Mean time a record waited in librdkafka's queue before being
    /// written to a broker connection, µs (`int_latency`).
    pub int_latency_us: f64,
    /// Mean time a request waited in the output buffer, µs (`outbuf_latency`).
    pub outbuf_latency_us: f64,
    /// Mean broker round trip, µs (`rtt`).
    pub rtt_us: f64,
    /// Mean records per batch (per partition request), over all topics.
    pub batch_records: f64,
    /// Most requests waiting for a response at a report (all brokers).
    pub max_waitresp: i64,
    #[serde(skip)]
    sums: [(f64, f64); 4],
    /// Cumulative (requests, records) per producer (one per worker).
    #[serde(skip)]
    clients: std::collections::BTreeMap<String, (i64, i64)>,
}

impl ProducerDigest {
    /// Takes in one statistics report.
    pub fn absorb(&mut self, s: &Statistics) {
        fn add(acc: &mut (f64, f64), w: Option<&Window>) {
            if let Some(w) = w.filter(|w| w.cnt > 0) {
                acc.0 += w.avg as f64 * w.cnt as f64;
                acc.1 += w.cnt as f64;
            }
        }
        self.reports += 1;
        let mut requests = 0;
        let mut waiting = 0;
        for b in s.brokers.values().filter(|b| b.nodeid >= 0) {
            requests += b.req.get("Produce").copied().unwrap_or(0);
            waiting += b.waitresp_cnt;
            add(&mut self.sums[0], b.int_latency.as_ref());
            add(&mut self.sums[1], b.outbuf_latency.as_ref());
            add(&mut self.sums[2], b.rtt.as_ref());
        }
        for t in s.topics.values() {
            add(&mut self.sums[3], Some(&t.batchcnt));
        }
        self.clients.insert(s.name.clone(), (requests, s.txmsgs));
        (self.produce_requests, self.records_sent) = self
            .clients
            .values()
            .fold((0, 0), |(r, m), (cr, cm)| (r + cr, m + cm));
        let requests = self.produce_requests;
        self.max_waitresp = self.max_waitresp.max(waiting);
        let mean = |(sum, n): (f64, f64)| if n > 0.0 { sum / n } else { 0.0 };
        self.int_latency_us = mean(self.sums[0]);
        self.outbuf_latency_us = mean(self.sums[1]);
        self.rtt_us = mean(self.sums[2]);
        self.batch_records = mean(self.sums[3]);
        self.records_per_request = if requests > 0 {
            self.records_sent as f64 / requests as f64
        } else {
            0.0
        };
    }
}
