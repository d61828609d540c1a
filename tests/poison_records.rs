//! Records that can never be written where they are routed must end in a
//! verdict, not in an endless retry that holds their partition's commit
//! back: an output that refuses a record for good dead-letters it as
//! `output_rejected`; a dead letter too large to write is written without
//! its payload; a record nothing can be written for is counted, logged and
//! settled.

mod common;

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::HashMap;

const OUT: &str = "prod.glutton.1234.match-v1";

fn dead_letters(bootstrap: &str) -> Vec<Output> {
    read_topic(bootstrap, "dlq")
}

/// `max_record_bytes: 10000` makes the producer's `message.max.bytes`
/// 26 384 (10 000 + 16 KiB). librdkafka refuses larger writes at `send`.
#[test]
fn writes_too_large_for_the_producer_end_in_verdicts() {
    let kafka = cluster(1);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let mut cfg = config(&bootstrap, "too-large", &registry.url, "");
    cfg.output.max_record_bytes = 10_000;
    let h = || stream("prod", "glutton", "match", 1).build().unwrap();
    // Under max_record_bytes, but a 20 KB input header makes the output too
    // large, and the dead letter (which keeps the input's headers) too: it
    // is written without payload and headers.
    let mut big_header = Input::envelope(&h(), &[1; 9000]);
    big_header.headers.push(("bulk".into(), vec![b'x'; 20_000]));
    // A 30 KB key: nothing can be written for it, not even a dead letter
    // without its payload. Counted, logged, settled.
    let mut big_key = Input::envelope(&h(), &[2; 100]);
    big_key.key = vec![b'k'; 30_000];
    // Over max_record_bytes (too_large) and over message.max.bytes: its
    // dead letter is written without the payload.
    let too_large = Input::envelope(&h(), &[3; 40_000]);
    let mut inputs = vec![big_header, big_key, too_large];
    inputs.extend(match_inputs(100, 64));
    produce(&bootstrap, "raw", &inputs);

    let router = RunningRouter::start(&cfg);
    // Before the fix the first record was retried every few seconds for
    // ever and the partition's commit never passed it.
    wait_committed(&bootstrap, "too-large", "raw", inputs.len() as i64);
    let stats = router.ctl.stats.clone();
    router.stop();

    assert_eq!(read_topic(&bootstrap, OUT).len(), 100, "the rest published");
    assert_eq!(stats.dead_letters_unwritten(), 1, "the 30 KB key");
    let dlq = dead_letters(&bootstrap);
    let by_offset: HashMap<&str, &Output> = dlq
        .iter()
        .map(|d| (d.headers["dlq.source.offset"].as_str(), d))
        .collect();
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    let d = by_offset["0"];
    assert_eq!(d.headers["dlq.reason"], "output_rejected");
    assert!(
        d.headers["dlq.detail"].contains(OUT) && d.headers["dlq.detail"].contains("too large"),
        "{:?}",
        d.headers
    );
    assert_eq!(
        d.headers["dlq.payload_omitted"],
        inputs[0].value.len().to_string()
    );
    assert!(d.value.is_empty() && !d.headers.contains_key("bulk"));
    assert_eq!(
        (
            d.headers["dlq.source.topic"].as_str(),
            d.headers["dlq.source.partition"].as_str()
        ),
        ("raw", "0")
    );
    let d = by_offset["2"];
    assert_eq!(d.headers["dlq.reason"], "too_large");
    assert_eq!(
        d.headers["dlq.payload_omitted"],
        inputs[2].value.len().to_string()
    );
    assert!(d.value.is_empty());
    assert_eq!(
        d.key.as_deref(),
        Some(&inputs[2].key[..]),
        "the key is kept"
    );
}

/// The broker refuses a produce request for good (here: INVALID_RECORD,
/// injected into the next produce request). Every record of that request
/// is dead-lettered as `output_rejected`; before, each was sent again.
#[test]
fn a_broker_rejection_is_dead_lettered_as_output_rejected() {
    let kafka = MockCluster::new(1).unwrap();
    kafka.create_topic("raw", 1, 1).unwrap();
    kafka.create_topic("dlq", 1, 1).unwrap();
    kafka.create_topic(OUT, 1, 1).unwrap();
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let inputs = match_inputs(200, 64);
    produce(&bootstrap, "raw", &inputs);
    // Only the router produces from here on: its first output request fails.
    kafka.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    );
    let cfg = config(&bootstrap, "rejected", &registry.url, "");
    let router = RunningRouter::start(&cfg);
    wait_committed(&bootstrap, "rejected", "raw", 200);
    let stats = router.ctl.stats.clone();
    router.stop();

    let out = read_topic(&bootstrap, OUT);
    let dlq = dead_letters(&bootstrap);
    assert!(
        !dlq.is_empty(),
        "the rejected request's records are dead letters"
    );
    for d in &dlq {
        assert_eq!(d.headers["dlq.reason"], "output_rejected");
        let detail = &d.headers["dlq.detail"];
        assert!(
            detail.contains(OUT) && detail.contains("InvalidRecord"),
            "{detail}"
        );
        assert!(!d.value.is_empty(), "written with its payload");
    }
    let mut seen: HashMap<&Vec<u8>, usize> = HashMap::new();
    for r in out.iter().chain(&dlq) {
        *seen.entry(&r.value).or_default() += 1;
    }
    for i in &inputs {
        assert_eq!(
            seen.get(&i.value),
            Some(&1),
            "each record once, published or dead-lettered"
        );
    }
    assert_eq!(
        stats.reason(envelope_router::pipeline::Reason::OutputRejected),
        dlq.len() as u64
    );
    eprintln!(
        "{} published, {} dead-lettered as output_rejected",
        out.len(),
        dlq.len()
    );
}
