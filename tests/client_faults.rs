//! Client faults the router must not sit out: a fatal producer or consumer
//! error stops it (non-zero, offsets committed, `/health` failing), a full
//! producer queue does not stop it from serving signals and rebalances, and
//! a revoke does not wait for writes that are parked for a retry.

mod common;

use common::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::time::{Duration, Instant};

const OUT: &str = "prod.glutton.1234.match-v1";

fn wait_for(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The broker answers the router's next (head-of-line) produce request
/// with OUT_OF_ORDER_SEQUENCE_NUMBER: librdkafka's idempotent producer can
/// no longer guarantee order and raises a fatal error; every later send
/// would fail. The router must stop with an error, having committed what
/// was settled, instead of pausing for ever while `/health` says ok.
#[test]
fn a_fatal_producer_error_stops_the_router_with_offsets_committed() {
    init_logs();
    let kafka = SplitCluster::new(OUT);
    let registry = TestRegistry::start(&[(1, &[])]);
    kafka.coordinate("fatal-producer");
    let cfg = config(&kafka.bootstrap, "fatal-producer", &registry.url, "");
    produce(&kafka.bootstrap, "raw", &match_inputs(200, 64));
    let mut router = RunningRouter::start(&cfg);
    router.wait_settled(200, Duration::from_secs(30));
    kafka.fail_requests(
        2,
        RDKafkaApiKey::Produce,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
        1,
    );
    produce(&kafka.bootstrap, "raw", &match_inputs(50, 64));
    let result = router
        .wait_exit(Duration::from_secs(30))
        .expect("the router kept running after a fatal producer error");
    let e = result
        .expect_err("a fatal error is an error exit")
        .to_string();
    assert!(e.contains("fatal") && e.contains("producer"), "{e}");
    assert!(router.ctl.fatal.get().is_some(), "/health reports it");
    assert_eq!(
        committed(&kafka.bootstrap, "fatal-producer", "raw", 4)
            .values()
            .sum::<i64>(),
        200,
        "the settled watermark is committed, nothing past it"
    );
    assert_eq!(read_topic(&kafka.bootstrap, OUT).len(), 200);
}

/// The group coordinator answers a commit with FENCED_INSTANCE_ID (another
/// member took this one's static identity): a fatal consumer error.
#[test]
fn a_fatal_consumer_error_stops_the_router() {
    init_logs();
    let kafka = SplitCluster::new(OUT);
    let registry = TestRegistry::start(&[(1, &[])]);
    kafka.coordinate("fatal-consumer");
    let cfg = config(&kafka.bootstrap, "fatal-consumer", &registry.url, "");
    produce(&kafka.bootstrap, "raw", &match_inputs(100, 64));
    let mut router = RunningRouter::start(&cfg);
    router.wait_settled(100, Duration::from_secs(30));
    kafka.fail_requests(
        1,
        RDKafkaApiKey::OffsetCommit,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID,
        1,
    );
    produce(&kafka.bootstrap, "raw", &match_inputs(10, 64));
    let result = router
        .wait_exit(Duration::from_secs(30))
        .expect("the router kept running after a fatal consumer error");
    let e = result
        .expect_err("a fatal error is an error exit")
        .to_string();
    assert!(e.contains("fatal") && e.contains("consumer"), "{e}");
}

/// The output's broker is down and librdkafka's queue (50 messages here)
/// is full. The router must keep serving the group (a second instance gets
/// partitions) and its shutdown signal; before, it blocked in `send`.
#[test]
fn a_full_producer_queue_still_serves_rebalances_and_shutdown() {
    init_logs();
    let kafka = SplitCluster::new(OUT);
    let registry = TestRegistry::start(&[(1, &[])]);
    kafka.coordinate("queue-full");
    let mut cfg = config(&kafka.bootstrap, "queue-full", &registry.url, "");
    cfg.kafka.producer.insert(
        "queue.buffering.max.messages".into(),
        envelope_router::config::Property::Int(50),
    );
    cfg.shutdown_timeout = Duration::from_secs(3);
    let inputs = match_inputs(2000, 64);
    kafka.broker_down(2);
    produce(&kafka.bootstrap, "raw", &inputs);
    let mut a = RunningRouter::start(&cfg);
    wait_for("A to fill its queue", Duration::from_secs(30), || {
        a.ctl.stats.records_in() >= 50
    });
    std::thread::sleep(Duration::from_millis(500));
    let b = RunningRouter::start(&cfg);
    wait_for(
        "A to hand partitions to B (A must serve the rebalance)",
        Duration::from_secs(20),
        || b.ctl.stats.records_in() > 0,
    );
    assert!(
        a.stop_within(Duration::from_secs(10)),
        "A did not stop within its 3 s shutdown timeout"
    );
    kafka.broker_up(2);
    wait_committed(&kafka.bootstrap, "queue-full", "raw", inputs.len() as i64);
    b.stop();
    let out = read_topic(&kafka.bootstrap, OUT);
    let unique: std::collections::HashSet<_> = out.iter().map(|o| &o.value).collect();
    assert_eq!(unique.len(), inputs.len(), "nothing lost");
}

/// Every write to the output fails with an authorization error (an
/// operator must act): records are parked for retries. When a second
/// instance joins, the first revokes partitions at once instead of waiting
/// its whole 8 s drain timeout for records that cannot settle.
#[test]
fn a_revoke_does_not_wait_for_parked_retries() {
    init_logs();
    let kafka = SplitCluster::new(OUT);
    let registry = TestRegistry::start(&[(1, &[])]);
    kafka.coordinate("parked");
    let mut cfg = config(&kafka.bootstrap, "parked", &registry.url, "");
    cfg.shutdown_timeout = Duration::from_secs(8);
    kafka.fail_requests(
        2,
        RDKafkaApiKey::Produce,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        100_000,
    );
    let inputs = match_inputs(400, 64);
    produce(&kafka.bootstrap, "raw", &inputs);
    let a = RunningRouter::start(&cfg);
    wait_for("A to park retries", Duration::from_secs(30), || {
        a.ctl.stats.delivery_errors() > 0
    });
    let b = RunningRouter::start(&cfg);
    wait_for("B to get partitions", Duration::from_secs(60), || {
        b.ctl.stats.records_in() > 0
    });
    let revoke = a.ctl.stats.longest_revoke();
    eprintln!("A's revoke with parked retries took {revoke:?}");
    assert!(
        revoke < Duration::from_secs(2),
        "the revoke waited for parked retries ({revoke:?}, drain timeout 8 s)"
    );
    drop(a);
    drop(b);
}

/// The premise of `ConsumerCtx::post_rebalance` resuming new assignments:
/// librdkafka keeps a partition paused across an unassign and a later
/// assign of it, while the router forgets a revoked partition's pause.
/// Should librdkafka change this, the resume becomes redundant, not wrong.
#[test]
fn librdkafka_keeps_a_pause_across_unassign_and_assign() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let kafka = cluster(1);
    let bootstrap = kafka.bootstrap_servers();
    produce(&bootstrap, "raw", &match_inputs(10, 16));
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "pause-kept")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("raw", 0, Offset::Beginning)
        .unwrap();
    let read_for = |d: Duration| {
        let end = Instant::now() + d;
        let mut n = 0;
        while Instant::now() < end {
            if let Some(Ok(_)) = c.poll(Duration::from_millis(50)) {
                n += 1;
            }
        }
        n
    };
    c.assign(&tpl).unwrap();
    c.pause(&tpl).unwrap();
    assert_eq!(read_for(Duration::from_secs(1)), 0, "paused");
    c.unassign().unwrap();
    c.assign(&tpl).unwrap();
    assert_eq!(
        read_for(Duration::from_secs(2)),
        0,
        "still paused after the new assign"
    );
    c.resume(&tpl).unwrap();
    assert_eq!(read_for(Duration::from_secs(3)), 10);
}
