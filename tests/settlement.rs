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

/// A steady stream; a second instance joins (the first revokes the
/// partitions that move) and later stops cleanly (it revokes everything).
/// Each revoke commits the settled watermark, and that commit must not be
/// overwritten by an older stored offset, which librdkafka's auto-commit
/// commits for revoked partitions after the callback returns: nothing
/// settled may be read again.
#[test]
fn clean_revokes_leave_nothing_settled_to_read_again() {
    const PARTITIONS: i32 = 4;
    let kafka = cluster(PARTITIONS);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let cfg = config(&bootstrap, "clean-stop", &registry.url, "");
    let a = RunningRouter::start(&cfg);
    let mut b = None;
    let mut b_read = 0;
    // Slices of 50 records every 50 ms; B joins after 5 and is stopped
    // (SIGTERM's path: drain, commit, leave) once it has consumed for a
    // while (a cooperative rebalance takes two rounds to hand it
    // partitions), then 10 more slices arrive.
    let mut slices = 0;
    let mut stop_at = None;
    while stop_at.is_none_or(|at| slices < at + 10) {
        assert!(slices < 400, "B never consumed");
        produce(&bootstrap, "raw", &match_inputs(50, 64));
        slices += 1;
        if slices == 5 {
            b = Some(RunningRouter::start(&cfg));
        }
        if stop_at.is_none() && b.as_ref().is_some_and(|b| b.ctl.stats.records_in() > 500) {
            let b = b.take().unwrap();
            let stats = b.ctl.stats.clone();
            b.stop();
            b_read = stats.records_in();
            stop_at = Some(slices);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let total = slices * 50;
    wait_committed(&bootstrap, "clean-stop", "raw", total);
    let a_read = a.ctl.stats.records_in();
    a.stop();
    let read = a_read + b_read;

    let out = read_topic(&bootstrap, OUT);
    let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for o in &out {
        *counts.entry(o.value.clone()).or_default() += 1;
    }
    assert_eq!(counts.len() as i64, total, "nothing lost");
    let rereads = read as i64 - total;
    eprintln!(
        "join and clean stop: {rereads} records read again, {} duplicates",
        out.len() as i64 - total
    );
    assert_eq!(
        rereads, 0,
        "a clean revoke made settled records be read again"
    );
}
