//! Settlement rules at the edges of a partition's life: what a revoke
//! commits, and records whose fields could overflow the router's
//! arithmetic inside a librdkafka callback (a panic there aborts).

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;

const OUT: &str = "prod.glutton.1234.match-v1";

#[test]
fn extreme_event_times_are_published_without_overflow() {
    let kafka = cluster(1);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let cfg = config(&bootstrap, "event-time", &registry.url, "");
    // Event times far in the past and future: the event-time latency is
    // `now - event_time`, which overflows i64 for i64::MIN.
    let inputs: Vec<Input> = [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX]
        .iter()
        .map(|&t| {
            let h = stream("prod", "glutton", "match", 1)
                .event_time_ms(t)
                .build()
                .unwrap();
            Input::envelope(&h, b"payload")
        })
        .collect();
    produce(&bootstrap, "raw", &inputs);
    let router = RunningRouter::start(&cfg);
    router.wait_settled(inputs.len() as u64, Duration::from_secs(30));
    router.stop();
    assert_eq!(read_topic(&bootstrap, OUT).len(), inputs.len());
}

/// Two instances share a steady stream; one is stopped cleanly (SIGTERM's
/// path: drain, commit, leave). Its revoke commits the settled watermark,
/// and librdkafka's auto-commit of the revoked partitions' stored offsets
/// after the callback must not undo it: the survivor reads nothing the
/// stopped instance had settled. Re-reads are counted from a committed
/// warm-up on, so the join before it (where the mock cluster refuses
/// commits while the group is joining, as the classic protocol's state
/// check does) is not measured.
#[test]
fn a_clean_stop_leaves_nothing_settled_to_read_again() {
    const PARTITIONS: i32 = 4;
    let kafka = cluster(PARTITIONS);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let mut cfg = config(&bootstrap, "clean-stop", &registry.url, "");
    // Incremental rebalancing (README): with the eager default the
    // survivor revokes everything too, and the mock refuses that commit
    // while the group is joining.
    cfg.kafka.consumer.insert(
        "partition.assignment.strategy".into(),
        envelope_router::config::Property::Text("cooperative-sticky".into()),
    );
    let a = RunningRouter::start(&cfg);
    let b = RunningRouter::start(&cfg);
    // Warm-up until both instances consume and everything is committed.
    let mut total = 0;
    while a.ctl.stats.records_in() == 0 || b.ctl.stats.records_in() == 0 {
        assert!(total < 20_000, "both instances never consumed");
        produce(&bootstrap, "raw", &match_inputs(100, 64));
        total += 100;
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_committed(&bootstrap, "clean-stop", "raw", total);
    let read_before = a.ctl.stats.records_in() + b.ctl.stats.records_in();
    // A steady stream: 30 slices of 50 records every 50 ms; B stops after 15.
    let mut b = Some(b);
    let mut b_read = 0;
    for i in 0..30 {
        produce(&bootstrap, "raw", &match_inputs(50, 64));
        total += 50;
        if i == 15 {
            let b = b.take().unwrap();
            let stats = b.ctl.stats.clone();
            b.stop();
            b_read = stats.records_in();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_committed(&bootstrap, "clean-stop", "raw", total);
    let a_read = a.ctl.stats.records_in();
    a.stop();
    let read = a_read + b_read - read_before;
    let streamed = 30 * 50;

    let out = read_topic(&bootstrap, OUT);
    let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for o in &out {
        *counts.entry(o.value.clone()).or_default() += 1;
    }
    assert_eq!(counts.len() as i64, total, "nothing lost");
    let rereads = read as i64 - streamed;
    eprintln!(
        "clean stop: {rereads} records read again (warm-up and join: {} duplicates in all)",
        out.len() as i64 - total
    );
    assert_eq!(
        rereads, 0,
        "a clean stop made the survivor read settled records again"
    );
}
