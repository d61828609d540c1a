//! The dedup window survives what used to erase it: a restart, a partition
//! moving to another instance (1 -> 3 -> 1), and a lost changelog topic
//! (refused by default). The `kill -9` runs are in `tests/kill9.rs`.

mod common;

use common::*;
use envelope_router::pipeline::Reason;
use std::collections::HashMap;
use std::time::Duration;

const OUTPUT: &str = "prod.glutton.1234.match-v1";

/// How many times each message id appears in the output topic.
fn output_ids(bootstrap: &str) -> HashMap<Vec<u8>, usize> {
    let mut ids = HashMap::new();
    for_each_record(bootstrap, OUTPUT, |m| {
        let key = rdkafka::Message::key(m).unwrap_or_default().to_vec();
        *ids.entry(key).or_insert(0) += 1;
    });
    ids
}

#[test]
fn a_restarted_router_drops_ids_it_published_before_the_restart() {
    init_logs();
    let kafka = cluster(4);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let cfg = config(&bootstrap, "restart", &registry.url, "");
    let first = match_inputs(300, 64);
    produce(&bootstrap, "raw", &first);
    let r = RunningRouter::start(&cfg);
    r.wait_settled(300, Duration::from_secs(30));
    r.stop();

    // Producers retry after the restart: the same 300 ids again, plus 100 new.
    let fresh = match_inputs(100, 64);
    produce(&bootstrap, "raw", &first);
    produce(&bootstrap, "raw", &fresh);
    let r = RunningRouter::start(&cfg);
    r.wait_settled(400, Duration::from_secs(30));
    let stats = r.ctl.stats.clone();
    r.stop();

    let (written, restored, failed) = stats.changelog_totals();
    assert_eq!(restored, 300, "the first run's ids were restored");
    assert_eq!(failed, 0);
    assert_eq!(written, 100, "the second run wrote only its own ids");
    assert_eq!(stats.reason(Reason::Duplicate), 300);
    let ids = output_ids(&bootstrap);
    assert_eq!(ids.len(), 400);
    assert!(ids.values().all(|n| *n == 1), "every id published once");
}

/// Input duplicates that straddle a partition move, 1 -> 3 -> 1 instances:
/// the new owner restores the old owner's window, so they are dropped.
#[test]
fn windows_follow_partitions_from_one_instance_to_three_and_back() {
    init_logs();
    let kafka = cluster(6);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let cfg = config(&bootstrap, "scale", &registry.url, "");
    let batches: Vec<_> = (0..3).map(|_| match_inputs(300, 64)).collect();

    let a = RunningRouter::start(&cfg);
    produce(&bootstrap, "raw", &batches[0]);
    wait_committed(&bootstrap, "scale", "raw", 300);

    // Scale out: B and C take partitions (and their windows) from A, and
    // producers retry every record of the first batch.
    let b = RunningRouter::start(&cfg);
    let c = RunningRouter::start(&cfg);
    let assigned = |r: &RunningRouter| r.ctl.stats.assignments() > 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(assigned(&b) && assigned(&c)) {
        assert!(std::time::Instant::now() < deadline, "scale-out rebalance");
        std::thread::sleep(Duration::from_millis(50));
    }
    produce(&bootstrap, "raw", &batches[0]);
    produce(&bootstrap, "raw", &batches[1]);
    wait_committed(&bootstrap, "scale", "raw", 900);
    let moved_in = b.ctl.stats.changelog_totals().1 + c.ctl.stats.changelog_totals().1;

    // Scale in: A takes every partition back, and producers retry the second batch.
    b.stop();
    c.stop();
    produce(&bootstrap, "raw", &batches[1]);
    produce(&bootstrap, "raw", &batches[2]);
    wait_committed(&bootstrap, "scale", "raw", 1500);
    let stats = a.ctl.stats.clone();
    a.stop();

    assert!(moved_in > 0, "B and C restored windows they took over");
    let ids = output_ids(&bootstrap);
    let twice: usize = ids.values().map(|n| n - 1).sum();
    assert_eq!(ids.len(), 900, "every unique id published");
    assert_eq!(twice, 0, "no id published twice across the moves");
    assert!(
        stats.changelog_totals().1 > 0,
        "A restored what B and C wrote"
    );
}

#[test]
fn a_lost_changelog_is_refused_unless_empty_windows_are_allowed() {
    init_logs();
    let kafka = cluster(2);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let inputs = match_inputs(50, 64);
    produce(&bootstrap, "raw", &inputs);
    let cfg = config(&bootstrap, "lost", &registry.url, "");
    let r = RunningRouter::start(&cfg);
    r.wait_settled(50, Duration::from_secs(30));
    r.stop();

    // The group has committed offsets; its changelog is gone (a topic the
    // mock cluster does not have stands in for a deleted one).
    let gone = "dedup:\n  changelog: { topic: deleted-changelog }\n";
    let mut r = RunningRouter::start(&config(&bootstrap, "lost", &registry.url, gone));
    let exit = r
        .wait_exit(Duration::from_secs(30))
        .expect("refuses to start");
    let err = format!("{:#}", exit.unwrap_err());
    assert!(
        err.contains("deleted-changelog") && err.contains("on_missing_state"),
        "{err}"
    );
    assert_eq!(r.ctl.stats.records_in(), 0, "nothing was read");

    // Allowed to start empty: it does, and says what it lost by publishing
    // a retried record again.
    let empty = format!("{gone}  on_missing_state: empty\n");
    produce(&bootstrap, "raw", &inputs[..10]);
    let r = RunningRouter::start(&config(&bootstrap, "lost", &registry.url, &empty));
    r.wait_settled(10, Duration::from_secs(30));
    r.stop();
    let ids = output_ids(&bootstrap);
    assert_eq!(ids.values().filter(|n| **n == 2).count(), 10);
}
