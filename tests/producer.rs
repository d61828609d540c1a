//! The producer wrapper against librdkafka's in-process mock cluster: every
//! record is reported delivered, keyed by its message id, and reads back as
//! the same envelope.
#![cfg(feature = "producer")]

use envelope_router::envelope::{EnvelopeView, HeaderBuilder, HeaderFields};
use envelope_router::producer::{EnvelopeProducerBuilder, KeyMode};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expect: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "producer-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < expect && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap().to_vec(),
            ));
        }
    }
    out
}

/// Delivery outcome (partition or error text) by record key.
type Reports = HashMap<Vec<u8>, Result<i32, String>>;

#[test]
fn sends_keyed_envelopes_and_reports_every_delivery() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("raw.glutton", 4, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();

    let reports: Arc<Mutex<Reports>> = Default::default();
    let sink = reports.clone();
    let producer = EnvelopeProducerBuilder::new(&bootstrap, "raw.glutton")
        .build(move |r| {
            let key = r.key.unwrap().to_vec();
            let outcome = r.result.map(|(p, _)| p).map_err(|e| e.to_string());
            assert!(
                sink.lock().unwrap().insert(key, outcome).is_none(),
                "reported twice"
            );
        })
        .unwrap();

    let stream = HeaderBuilder::new()
        .env("prod")
        .source("glutton")
        .title("1234")
        .category("telemetry_match_event")
        .version(1)
        .schema_id(7);
    let mut sent = HashMap::new();
    for i in 0..200u32 {
        let h = stream.build().unwrap();
        let payload = i.to_be_bytes().repeat(50);
        producer.send(&h, &payload).unwrap();
        sent.insert(h.message_id().to_vec(), payload);
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(producer.in_flight(), 0);

    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 200);
    assert!(
        reports.values().all(|r| r.is_ok()),
        "failed deliveries: {reports:?}"
    );

    let records = read_all(&bootstrap, "raw.glutton", 4, 200);
    assert_eq!(records.len(), 200);
    for (key, value) in records {
        let view = EnvelopeView::read(&value).unwrap();
        assert_eq!(view.header().message_id, &key[..], "key is the message id");
        assert_eq!(view.payload().unwrap(), &sent[&key][..]);
    }
}

#[test]
fn key_mode_none_sends_unkeyed_records() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("raw.unkeyed", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let producer = EnvelopeProducerBuilder::new(&bootstrap, "raw.unkeyed")
        .key_mode(KeyMode::None)
        .build(|r| assert!(r.result.is_ok()))
        .unwrap();
    let h = HeaderBuilder::new()
        .env("dev")
        .source("s")
        .title("t")
        .category("c")
        .version(2)
        .schema_id(1)
        .build()
        .unwrap();
    producer.send(&h, b"x").unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let records = read_all(&bootstrap, "raw.unkeyed", 1, 1);
    assert_eq!(records.len(), 1);
    assert!(records[0].0.is_empty());
}
