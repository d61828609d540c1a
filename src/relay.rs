//! The bare relay: consume each record and produce it unchanged (bytes, key,
//! timestamp, headers) to one topic, nothing else. It runs with the router's
//! own client settings, so its throughput is the ceiling any router can
//! reach on that machine and broker; `bench` measures both.

use crate::config::Config;
use crate::kafka::context::serve_deliveries;
use crate::kafka::{consumer_config, producer_config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Acks {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Relaxed),
            Err(_) => self.failed.fetch_add(1, Relaxed),
        };
    }
}

/// What a relay run did.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RelaySummary {
    /// Records acknowledged by the output topic.
    pub records: u64,
    /// Record bytes relayed.
    pub bytes: u64,
    /// From the first record consumed to the last acknowledged.
    pub active_s: f64,
}

/// Relays from the config's input topics to `output` until `exit_after`
/// records are acknowledged (or `timeout` passes).
pub fn run(
    cfg: &Config,
    output: &str,
    exit_after: u64,
    timeout: Duration,
) -> anyhow::Result<RelaySummary> {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let producer: BaseProducer<Acks> = producer_config(cfg).create_with_context(Acks {
        ok: ok.clone(),
        failed: failed.clone(),
    })?;
    let mut cc = consumer_config(cfg);
    cc.set("enable.auto.offset.store", "true"); // nothing else: no settlement
    let consumer: BaseConsumer = cc.create()?;
    let topics: Vec<&str> = cfg.input.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let deadline = Instant::now() + timeout;
    let mut first: Option<Instant> = None;
    let mut bytes = 0u64;
    while ok.load(Relaxed) < exit_after {
        anyhow::ensure!(
            Instant::now() < deadline,
            "relay timed out after {} of {exit_after} records",
            ok.load(Relaxed)
        );
        anyhow::ensure!(
            failed.load(Relaxed) == 0,
            "relay: {} produces failed",
            failed.load(Relaxed)
        );
        let mut wait = Duration::from_millis(1);
        for _ in 0..2048 {
            let Some(m) = consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            let m = m?;
            first.get_or_insert_with(Instant::now);
            let payload = m.payload().unwrap_or_default();
            bytes += payload.len() as u64;
            let mut rec = BaseRecord::<[u8], [u8]>::to(output).payload(payload);
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
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        rec = r;
                        producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => anyhow::bail!("relay produce: {e}"),
                }
            }
        }
        serve_deliveries(&producer, |a: &Acks| {
            a.ok.load(Relaxed) + a.failed.load(Relaxed)
        }); // as the router does
    }
    let active_s = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    producer.flush(Duration::from_secs(5))?;
    Ok(RelaySummary {
        records: ok.load(Relaxed),
        bytes,
        active_s,
    })
}
