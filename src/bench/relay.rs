//! The two ceilings `bench` measures the router against. Both run with the
//! router's own client settings (`kafka::producer_config` and
//! `consumer_config`), the same send path (by topic handle,
//! `kafka::topic_handles`) and the same loop shape: a turn polls phases of
//! records; each phase is read and routed, then sent (each record's bytes,
//! key, timestamp and headers unchanged); the turn ends serving delivery
//! reports. They differ only in where a record goes:
//!
//! - the **bare relay** writes every record to one topic: what the broker
//!   and librdkafka can move at all;
//! - the **routing relay** reads the header and writes the record to the
//!   topics the config's routes give its stream (a malformed or unrouted
//!   record to the dead-letter topic), with no validation, no dedup and no
//!   schema check: what writing to the router's ~74 output topics costs.
//!
//! The router's own work is the difference between the routing relay and
//! the router.

use crate::config::Config;
use crate::envelope::EnvelopeView;
use crate::kafka::context::serve_deliveries;
use crate::kafka::profile::ProducerDigest;
use crate::kafka::topic_handles::TopicHandles;
use crate::kafka::{consumer_config, producer_config, POLL_PHASE, TURN_RECORDS};
use crate::pipeline::route::{RouteDecision, Routes, StreamPlan};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a relay writes.
pub enum Mode {
    /// Every record to this topic.
    Bare {
        /// The one output topic.
        output: String,
    },
    /// Each record to its stream's routed topics (no validation, dedup or
    /// schema check); unreadable and unrouted records to the config's
    /// dead-letter topic; filtered streams nowhere.
    Routing,
}

struct Acks {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    digest: Mutex<ProducerDigest>,
}

impl ClientContext for Acks {
    fn stats(&self, s: Statistics) {
        self.digest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .absorb(&s);
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Relaxed),
            Err(_) => self.failed.fetch_add(1, Relaxed),
        };
    }
}

/// Where a read record of a phase goes when the phase is sent.
enum Dest {
    /// Its stream's routed topics (the routing relay).
    Plan(Arc<StreamPlan>),
    /// The relay's one topic: the bare relay's output, or the routing
    /// relay's dead-letter topic.
    One,
}

/// What a relay run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelaySummary {
    /// Input records consumed (every one of their writes acknowledged).
    pub records: u64,
    /// Writes acknowledged (more than `records` with fan-out routes).
    pub writes: u64,
    /// Input record bytes.
    pub bytes: u64,
    /// From the first record consumed to the last acknowledged.
    pub active_s: f64,
    /// The producer's statistics (with `statistics.interval.ms` set).
    pub producer: ProducerDigest,
    /// The process's threads as the last write was acknowledged, less
    /// their reading at the first record.
    pub threads: Vec<super::procstat::ThreadGroup>,
    /// The process's CPU seconds from the first record to the end.
    pub cpu_s: f64,
}

/// Relays from the config's input topics until `exit_after` records are
/// consumed and every write is acknowledged (or `timeout` passes).
pub fn run(
    cfg: &Config,
    mode: &Mode,
    exit_after: u64,
    timeout: Duration,
) -> anyhow::Result<RelaySummary> {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let producer: BaseProducer<Acks> = producer_config(cfg).create_with_context(Acks {
        ok: ok.clone(),
        failed: failed.clone(),
        digest: Mutex::default(),
    })?;
    // The router's send path: by topic handle.
    let producer = TopicHandles::new(Arc::new(producer));
    // The topic of every record not routed, and the routes (none for the
    // bare relay, which routes nothing).
    let (one_topic, mut routes): (Arc<str>, _) = match mode {
        Mode::Bare { output } => (output.as_str().into(), None),
        Mode::Routing => (
            cfg.dead_letter.topic.as_str().into(),
            Some(Routes::new(
                &cfg.routes,
                cfg.default_route,
                &cfg.output.topic_template,
                None,
            )?),
        ),
    };
    let mut cc = consumer_config(cfg);
    cc.set("enable.auto.offset.store", "true"); // nothing else: no settlement
    let consumer: BaseConsumer = cc.create()?;
    let topics: Vec<&str> = cfg.input.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let deadline = Instant::now() + timeout;
    let mut first: Option<Instant> = None;
    let mut start = super::procstat::Reading::default();
    let (mut consumed, mut written, mut bytes) = (0u64, 0u64, 0u64);
    let mut phase = Vec::with_capacity(POLL_PHASE);
    let mut outbox = Vec::with_capacity(POLL_PHASE);
    while consumed < exit_after || ok.load(Relaxed) < written {
        anyhow::ensure!(
            Instant::now() < deadline,
            "relay timed out after {consumed} of {exit_after} records"
        );
        anyhow::ensure!(
            failed.load(Relaxed) == 0,
            "relay: {} produces failed",
            failed.load(Relaxed)
        );
        let mut wait = Duration::from_millis(1);
        // As the router's loop turn ([`TURN_RECORDS`]) does: a phase of
        // records ([`POLL_PHASE`]) polled, then relayed.
        let mut polled = 0;
        while polled < TURN_RECORDS {
            phase.clear();
            while phase.len() < POLL_PHASE && polled < TURN_RECORDS {
                let Some(m) = consumer.poll(wait) else { break };
                wait = Duration::ZERO;
                phase.push(m?);
                polled += 1;
            }
            if phase.is_empty() {
                break;
            }
            // As the router's phase: every record read and routed first,
            // then the phase sent in order.
            for m in phase.drain(..) {
                if first.is_none() {
                    // CPU counts from here, as the router's does.
                    start = super::procstat::Reading::now();
                    first = Some(Instant::now());
                }
                consumed += 1;
                let payload = m.payload().unwrap_or_default();
                bytes += payload.len() as u64;
                let dest = match &mut routes {
                    None => Dest::One,
                    Some(routes) => match EnvelopeView::read(payload) {
                        Ok(view) => {
                            let plan = routes.plan(view.header());
                            match &plan.route {
                                RouteDecision::Publish(_) => Dest::Plan(plan),
                                RouteDecision::Drop(_) => continue,
                                _ => Dest::One, // unrouted: dead-lettered
                            }
                        }
                        Err(_) => Dest::One, // unreadable: dead-lettered
                    },
                };
                outbox.push((m, dest));
            }
            for (m, dest) in outbox.drain(..) {
                match &dest {
                    Dest::Plan(plan) => {
                        for t in plan.targets() {
                            send(&producer, &t.topic, &m)?;
                            written += 1;
                        }
                    }
                    Dest::One => {
                        send(&producer, &one_topic, &m)?;
                        written += 1;
                    }
                }
            }
        }
        // As the router does: serve every delivery report that is ready.
        serve_deliveries(producer.producer(), |a: &Acks| {
            a.ok.load(Relaxed) + a.failed.load(Relaxed)
        });
    }
    let active_s = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let threads = start.threads_since(super::procstat::threads());
    producer.producer().flush(Duration::from_secs(5))?;
    let digest = (producer.producer().context().digest.lock())
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(RelaySummary {
        records: consumed,
        writes: ok.load(Relaxed),
        bytes,
        active_s,
        producer: digest,
        threads,
        cpu_s: start.cpu_since(),
    })
}

/// Produces one record unchanged to `topic`, waiting while librdkafka's
/// queue is full.
fn send(
    producer: &TopicHandles<Acks>,
    topic: &Arc<str>,
    m: &BorrowedMessage<'_>,
) -> anyhow::Result<()> {
    let mut rec = BaseRecord::<[u8], [u8]>::to(topic).payload(m.payload().unwrap_or_default());
    if let Some(k) = m.key() {
        rec = rec.key(k);
    }
    if let Some(ts) = m.timestamp().to_millis() {
        rec = rec.timestamp(ts);
    }
    if let Some(h) = m.headers() {
        rec = rec.headers(h.detach());
    }
    loop {
        match producer.send(topic, rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                producer.producer().poll(Duration::from_millis(5));
            }
            Err((e, _)) => anyhow::bail!("relay produce to {topic}: {e}"),
        }
    }
}
