//! Delivery reports are served all at once, not one produce request's worth
//! per loop iteration: `BaseProducer::poll(0)` serves a single event, and a
//! router that called it once per iteration settled about a thousand batches
//! a second whatever the broker did (BENCHMARKS.md, "Fixed: delivery reports
//! were served one batch per loop iteration").
#![cfg(feature = "router")]

use envelope_router::kafka::context::serve_deliveries;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::DeliveryResult;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts reports, and successes among them.
#[derive(Default)]
struct Counting {
    reports: AtomicU64,
    ok: AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        self.reports.fetch_add(1, Ordering::Relaxed);
        if r.is_ok() {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn one_call_serves_the_reports_of_every_produce_request() {
    const TOPICS: usize = 10;
    let kafka = MockCluster::new(1).unwrap();
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("out-{i}")).collect();
    for t in &topics {
        kafka.create_topic(t, 1, 1).unwrap();
    }
    let bootstrap = kafka.bootstrap_servers();
    let producer: BaseProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "0")
        .create_with_context(Counting::default())
        .unwrap();
    // One record per topic: each is its own produce request, so its own
    // delivery event.
    for t in &topics {
        producer
            .send(BaseRecord::<[u8], [u8]>::to(t).payload(b"x"))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    // Wait until the broker holds every record, then give the responses
    // time to reach the producer's queue.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for t in &topics {
        while reader
            .fetch_watermarks(t, 0, Duration::from_secs(5))
            .map(|(_, hi)| hi)
            .unwrap_or(0)
            < 1
        {
            assert!(Instant::now() < deadline, "{t} never received its record");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_millis(500));

    let served = serve_deliveries(&producer, |c: &Counting| c.reports.load(Ordering::Relaxed));
    assert_eq!(served, TOPICS as u64, "one call serves every queued report");
    assert_eq!(producer.context().ok.load(Ordering::Relaxed), TOPICS as u64);
    assert_eq!(
        serve_deliveries(&producer, |c: &Counting| c.reports.load(Ordering::Relaxed)),
        0,
        "nothing left, no waiting"
    );
}
