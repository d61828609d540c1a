//! End-to-end router tests on librdkafka's mock cluster with an in-process
//! HTTP schema registry.

mod common;

use std::sync::Arc;

use common::*;
use envelope_router::envelope::HeaderFields;
use envelope_router::pipeline::Reason;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn routes_fans_out_filters_dedups_and_dead_letters_exactly() {
    let kafka = cluster(3);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[
        (1, &["match-v1"]),
        (2, &["login-v1"]),
        (3, &["somebody-else"]),
        (4, &["debug_x-v1"]),
    ]);
    let cfg = config(
        &bootstrap,
        "exact",
        &registry.url,
        r#"
routes:
  - { name: drop-debug, match: { category: "debug_*" }, action: drop }
  - { name: lake, match: { env: prod } }
  - { name: audit, match: { source: billing }, topic: "audit.{env}" }
default_route: dead_letter
"#,
    );
    // `schema.mode` lives under `schema`; set it through the struct.
    let mut cfg = cfg;
    cfg.schema.mode = envelope_router::pipeline::schema::SchemaMode::Subject;
    cfg.schema.subject_template = "{category}-v{version}".into();

    let matches: Vec<_> = (0..3)
        .map(|i| {
            stream("prod", "glutton", "match", 1)
                .build()
                .map(|h| (h, vec![i as u8; 300]))
                .unwrap()
        })
        .collect();
    let logins: Vec<_> = (0..2)
        .map(|i| {
            stream("prod", "billing", "login", 2)
                .build()
                .map(|h| (h, vec![0x40 + i as u8; 5000]))
                .unwrap()
        })
        .collect();
    let unknown = stream("prod", "glutton", "match", 99).build().unwrap();
    let mismatch = stream("prod", "glutton", "match", 3).build().unwrap();
    let debug = stream("prod", "glutton", "debug_x", 4).build().unwrap();
    let unrouted = stream("dev", "glutton", "match", 1).build().unwrap();

    let mut inputs: Vec<Input> = Vec::new();
    inputs.extend(matches.iter().map(|(h, p)| Input::envelope(h, p)));
    // Logins come without Kafka headers: published without any.
    inputs.extend(logins.iter().map(|(h, p)| Input {
        headers: vec![],
        ..Input::envelope(h, p)
    }));
    inputs.push(Input::envelope(&matches[0].0, &matches[0].1)); // a producer retry
    inputs.push(Input::raw(b"junk", &[0x0a, 0xff, 0xff])); // malformed
    inputs.push(Input::envelope(&unknown, b"u"));
    inputs.push(Input::envelope(&mismatch, b"m"));
    inputs.push(Input::envelope(&debug, b"d"));
    inputs.push(Input::envelope(&unrouted, b"r"));
    produce(&bootstrap, "raw", &inputs);

    let router = RunningRouter::start(&cfg);
    router.wait_settled(inputs.len() as u64, Duration::from_secs(30));
    let stats = router.ctl.stats.clone();
    router.stop();

    // Routed topics hold exactly the input bytes, keys, timestamps and headers.
    let match_topic = matches[0].0.topic_name();
    assert_eq!(match_topic, "prod.glutton.1234.match-v1");
    let out = read_topic(&bootstrap, &match_topic);
    let want: Vec<_> = matches
        .iter()
        .map(|(h, p)| h.to_envelope_bytes(p).to_vec())
        .collect();
    let mut got: Vec<_> = out.iter().map(|o| o.value.clone()).collect();
    got.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(
        got, want_sorted,
        "each match record exactly once, byte-for-byte"
    );
    for o in &out {
        assert_eq!(o.timestamp, Some(1_700_000_000_000), "timestamp kept");
        assert_eq!(
            o.headers.get("trace-id").map(String::as_str),
            Some("t-1"),
            "input headers kept"
        );
        let view = envelope_router::envelope::EnvelopeView::read(&o.value).unwrap();
        assert_eq!(o.key.as_deref(), Some(view.header().message_id), "key kept");
    }
    for topic in ["prod.billing.1234.login-v1", "audit.prod"] {
        let out = read_topic(&bootstrap, topic);
        assert_eq!(out.len(), 2, "fan-out to {topic}");
        for o in &out {
            assert!(
                o.headers.is_empty(),
                "no headers in, none out: {:?}",
                o.headers
            );
        }
    }

    // Every reject is in the dead-letter topic with its reason and origin.
    let dlq = read_topic(&bootstrap, "dlq");
    let mut reasons: Vec<_> = dlq
        .iter()
        .map(|o| o.headers["dlq.reason"].clone())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "malformed",
            "schema_subject_mismatch",
            "unknown_schema",
            "unrouted"
        ]
    );
    for o in &dlq {
        assert_eq!(o.headers["dlq.source.topic"], "raw");
        assert!(o.headers["dlq.source.offset"].parse::<i64>().is_ok());
        assert!(!o.headers["dlq.detail"].is_empty());
        assert!(
            inputs.iter().any(|i| i.value == o.value),
            "dead letters carry the original bytes"
        );
    }
    let malformed = dlq
        .iter()
        .find(|o| o.headers["dlq.reason"] == "malformed")
        .unwrap();
    assert_eq!(malformed.key.as_deref(), Some(&b"junk"[..]));

    assert_eq!(stats.reason(Reason::Duplicate), 1);
    assert_eq!(stats.reason(Reason::Filtered), 1);
    assert_eq!(stats.records_routed(), 5);
    assert!(read_topic(&bootstrap, "prod.glutton.1234.debug_x-v1").is_empty());
    // Each record settled after its writes (5 published, 4 dead letters)
    // is one sample of the arrival latency histogram; drops are none.
    let (arrival, _) = stats.latency_samples();
    assert_eq!(arrival, 9);
    assert_eq!(arrival + 2, stats.records_settled());
}

#[test]
fn restart_on_the_same_group_neither_loses_nor_republishes() {
    let kafka = cluster(4);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let cfg = config(&bootstrap, "restart", &registry.url, "");
    let first = match_inputs(60, 100);
    produce(&bootstrap, "raw", &first);
    let router = RunningRouter::start(&cfg);
    router.wait_settled(60, Duration::from_secs(30));
    router.stop(); // graceful: drains and commits

    let second = match_inputs(40, 100);
    produce(&bootstrap, "raw", &second);
    let router = RunningRouter::start(&cfg);
    router.wait_settled(40, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        router.ctl.stats.records_in(),
        40,
        "settled records are not read again"
    );
    router.stop();

    let out = read_topic(&bootstrap, "prod.glutton.1234.match-v1");
    let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for o in &out {
        *counts.entry(o.value.clone()).or_default() += 1;
    }
    assert_eq!(out.len(), 100);
    assert!(
        counts.values().all(|&n| n == 1),
        "each record published once"
    );
    for i in first.iter().chain(&second) {
        assert_eq!(counts.get(&i.value), Some(&1));
    }
}

#[test]
fn registry_outage_pauses_then_resumes_with_nothing_lost_or_dead_lettered() {
    let kafka = cluster(2);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    registry.health.store(DOWN, Ordering::Relaxed);
    let cfg = config(&bootstrap, "outage", &registry.url, "");
    let inputs = match_inputs(30, 64);
    produce(&bootstrap, "raw", &inputs);

    let router = RunningRouter::start(&cfg);
    // Wait until the router has read records and keeps asking the registry.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (router.ctl.stats.records_in() == 0
        || registry.requests.load(Ordering::Relaxed) < 3
        || router.ctl.stats.paused() == 0)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        registry.requests.load(Ordering::Relaxed) >= 3,
        "lookups are retried during the outage"
    );
    assert!(
        router.ctl.stats.paused() >= 1,
        "the waiting partition is paused"
    );
    assert_eq!(router.ctl.stats.records_routed(), 0);
    assert_eq!(
        router.ctl.stats.records_settled(),
        0,
        "nothing is settled during the outage"
    );

    registry.health.store(UP, Ordering::Relaxed);
    router.wait_settled(30, Duration::from_secs(20));
    assert_eq!(router.ctl.stats.records_routed(), 30);
    let dead: u64 = Reason::ALL
        .iter()
        .filter(|r| r.is_dead_letter())
        .map(|r| router.ctl.stats.reason(*r))
        .sum();
    assert_eq!(dead, 0, "an outage is not a verdict");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(router.ctl.stats.paused(), 0, "partitions resume");
    router.stop();
    assert_eq!(
        read_topic(&bootstrap, "prod.glutton.1234.match-v1").len(),
        30
    );
    assert!(read_topic(&bootstrap, "dlq").is_empty());
}

#[test]
fn failed_produces_are_retried_not_dropped() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let kafka = cluster(1);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let cfg = config(&bootstrap, "retry", &registry.url, "");
    let inputs = match_inputs(10, 64);
    produce(&bootstrap, "raw", &inputs);
    // From now on the broker refuses the next produce requests for good:
    // librdkafka reports them failed and the router must send them again.
    kafka.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 3],
    );
    let router = RunningRouter::start(&cfg);
    router.wait_settled(10, Duration::from_secs(30));
    assert!(
        router.ctl.stats.delivery_errors() >= 1,
        "the injected errors reached the router"
    );
    router.stop();
    let out = read_topic(&bootstrap, "prod.glutton.1234.match-v1");
    let mut values: Vec<_> = out.iter().map(|o| o.value.clone()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 10, "every record published");
    assert_eq!(
        out.len(),
        10,
        "and only once: a refused produce wrote nothing"
    );
}

#[test]
fn health_readiness_and_metrics_endpoints() {
    use std::io::{Read, Write};
    let rt = runtime();
    let handle = envelope_router::http::install_recorder(rt.handle()).unwrap();
    let stats = Arc::new(envelope_router::stats::Stats::default());
    let ready = flag();
    let fatal = Arc::new(std::sync::OnceLock::new());
    let addr = rt
        .block_on(envelope_router::http::serve(
            "127.0.0.1:0".parse().unwrap(),
            handle,
            stats.clone(),
            ready.clone(),
            fatal.clone(),
        ))
        .unwrap();
    let get = |path: &str| -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    assert!(get("/health").starts_with("HTTP/1.1 200"));
    assert!(get("/ready").starts_with("HTTP/1.1 503"));
    ready.store(true, Ordering::Relaxed);
    assert!(get("/ready").starts_with("HTTP/1.1 200"));
    fatal.set("producer: test".to_owned()).unwrap();
    let health = get("/health");
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("fatal client error: producer: test"),
        "{health}"
    );
    metrics::counter!("envelope_router_records_in_total").increment(3);
    let m = get("/metrics");
    assert!(m.contains("envelope_router_records_in_total 3"), "{m}");
    assert!(
        m.contains("envelope_router_end_to_end_seconds_count{from=\"arrival\"} 0\n"),
        "{m}"
    );
    stats.settled(0.003, Some(1_500));
    let m = get("/metrics");
    for series in [
        "envelope_router_end_to_end_seconds_bucket{from=\"arrival\",le=\"0.002\"} 0\n",
        "envelope_router_end_to_end_seconds_bucket{from=\"arrival\",le=\"0.005\"} 1\n",
        "envelope_router_end_to_end_seconds_bucket{from=\"event_time\",le=\"2.5\"} 1\n",
        "envelope_router_end_to_end_seconds_count{from=\"event_time\"} 1\n",
    ] {
        assert!(m.contains(series), "{series} in {m}");
    }
}

#[test]
fn a_second_instance_joining_the_group_loses_nothing() {
    let kafka = cluster(4);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let cfg = config(&bootstrap, "scale", &registry.url, "");
    let batches = [
        match_inputs(200, 64),
        match_inputs(200, 64),
        match_inputs(200, 64),
    ];
    produce(&bootstrap, "raw", &batches[0]);
    let a = RunningRouter::start(&cfg);
    a.wait_settled(200, Duration::from_secs(30));

    // B joins; the group rebalances while more records arrive.
    let b = RunningRouter::start(&cfg);
    produce(&bootstrap, "raw", &batches[1]);
    std::thread::sleep(Duration::from_secs(5));
    produce(&bootstrap, "raw", &batches[2]);
    // Done when the group has committed all 600 (settled counts include
    // re-reads after the rebalance, so they can reach 600 early).
    wait_committed(&bootstrap, "scale", "raw", 600);
    let (sa, sb) = (a.ctl.stats.clone(), b.ctl.stats.clone());
    a.stop();
    b.stop();
    let read = sa.records_in() + sb.records_in();

    let out = read_topic(&bootstrap, "prod.glutton.1234.match-v1");
    let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for o in &out {
        *counts.entry(o.value.clone()).or_default() += 1;
    }
    for i in batches.iter().flatten() {
        assert!(
            counts.contains_key(&i.value),
            "a record was lost across the rebalance"
        );
    }
    let duplicates = (out.len() - counts.len()) as u64;
    eprintln!(
        "scale-out: a read {}, b read {}, {duplicates} duplicates in the output, assignments a {} b {}",
        sa.records_in(),
        sb.records_in(),
        sa.assignments(),
        sb.assignments()
    );
    assert!(
        sb.records_in() > 0,
        "the second instance took over partitions"
    );
    // Records read again after the rebalance are counted; the new owner
    // restored the old owner's dedup window from the changelog, so those
    // it had published are dropped as duplicates, not published again.
    let dropped = sa.reason(Reason::Duplicate) + sb.reason(Reason::Duplicate);
    eprintln!("re-reads {}, dropped as duplicates {dropped}", read - 600);
    assert_eq!(duplicates, 0, "nothing read again was published again");
    assert!(dropped <= read - 600, "only re-reads were dropped");
    // Each rebalance re-reads at most what was not yet committed (at most
    // the 600 records); a slow machine can see more than one rebalance. A
    // is a member throughout, so it is assigned once more per rebalance.
    let rebalances = sa.assignments() - 1;
    assert!(rebalances >= 1, "B's arrival rebalanced the group");
    assert!(
        duplicates < 600 * rebalances,
        "{duplicates} duplicates over {rebalances} rebalances: more than the uncommitted windows"
    );
}

#[test]
fn mirror_headers_and_inspect_from_a_topic() {
    let kafka = cluster(1);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let mut cfg = config(&bootstrap, "mirror", &registry.url, "");
    cfg.output.mirror_headers = true;
    let inputs = match_inputs(3, 32);
    produce(&bootstrap, "raw", &inputs);
    let router = RunningRouter::start(&cfg);
    router.wait_settled(3, Duration::from_secs(30));
    router.stop();

    let out = read_topic(&bootstrap, "prod.glutton.1234.match-v1");
    assert_eq!(out.len(), 3);
    for o in &out {
        assert_eq!(o.headers["envelope.env"], "prod");
        assert_eq!(o.headers["envelope.source"], "glutton");
        assert_eq!(o.headers["envelope.category"], "match");
        assert_eq!(o.headers["envelope.version"], "1");
        assert_eq!(o.headers["envelope.schema_id"], "1");
        assert_eq!(
            o.headers["trace-id"], "t-1",
            "input headers are kept beside the mirror"
        );
        assert!(inputs.iter().any(|i| i.value == o.value), "bytes unchanged");
    }

    // `inspect` reads the same topic and prints one JSON object per record.
    let mut printed = Vec::new();
    let n = envelope_router::inspect::topic(
        &[("bootstrap.servers".into(), bootstrap.clone())],
        "prod.glutton.1234.match-v1",
        true,
        Some(3),
        Duration::from_secs(5),
        &mut printed,
    )
    .unwrap();
    assert_eq!(n, 3);
    for line in String::from_utf8(printed).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["category"], "match");
        assert_eq!(v["topic"], "prod.glutton.1234.match-v1");
        assert_eq!(v["payload_bytes"], 32);
        assert!(v.get("error").is_none());
    }
}

#[test]
fn two_workers_split_the_partitions_and_keep_dedup() {
    let kafka = cluster(4);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let cfg = config(&bootstrap, "workers", &registry.url, "workers: 2");
    // Keyed by message id, so a re-sent id lands in its first copy's
    // partition, which one worker owns.
    let inputs = match_inputs(400, 64);
    produce(&bootstrap, "raw", &inputs);
    produce(&bootstrap, "raw", &inputs[..100]);
    let router = RunningRouter::start(&cfg);
    router.wait_settled(500, Duration::from_secs(60));
    wait_committed(&bootstrap, "workers", "raw", 500);
    let stats = router.ctl.stats.clone();
    router.stop();

    assert!(stats.records_in() >= 500);
    let per_worker: Vec<u64> = stats.loop_profiles().iter().map(|p| p.records).collect();
    eprintln!("records per worker: {per_worker:?}");
    assert_eq!(per_worker.len(), 2);
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both workers were given partitions: {per_worker:?}"
    );
    // A worker that joins late triggers a rebalance, and records the other
    // one settled but had not committed are read again: the restored
    // window drops them, so the only effect is in the counts.
    let reread = per_worker.iter().sum::<u64>() - 500;
    assert_eq!(
        stats.reason(Reason::Duplicate),
        100 + reread,
        "re-sent ids and re-reads dropped"
    );
    let out = read_topic(&bootstrap, "prod.glutton.1234.match-v1");
    let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for o in &out {
        *counts.entry(o.value.clone()).or_default() += 1;
    }
    assert_eq!(out.len(), 400, "each record published once");
    for i in &inputs {
        assert_eq!(counts.get(&i.value), Some(&1));
    }
}
