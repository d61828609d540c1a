//! `replay` end to end: records dead-lettered for an unknown schema are
//! replayed once the schema is registered and published exactly once; a
//! second replay publishes nothing new (the router's dedup window drops
//! the ids it already published).

mod common;

use common::*;
use envelope_router::progress::Progress;
use envelope_router::replay::kafka::{run, Position, ReplayOptions};
use envelope_router::replay::{Filter, StreamFilter, Tally};
use std::collections::HashMap;
use std::time::Duration;

const LATE: &str = "prod.glutton.1234.late-v1";
const KNOWN: &str = "prod.glutton.1234.match-v1";

fn replay(bootstrap: &str, reasons: &[&str], dry_run: bool) -> Tally {
    let opts = ReplayOptions {
        properties: vec![("bootstrap.servers".into(), bootstrap.into())],
        dead_letter_topic: "dlq".into(),
        partitions: vec![],
        from: Position::Edge,
        until: Position::Edge,
        filter: Filter::new(
            reasons.iter().map(|r| r.to_string()).collect(),
            vec!["raw".into()],
            &StreamFilter::default(),
        )
        .unwrap(),
        to: None,
        dry_run,
        stall_timeout: Duration::from_secs(20),
    };
    run(&opts, &Progress::with_terminal("replay", None, false)).unwrap()
}

fn watermark_sum(bootstrap: &str, topic: &str) -> usize {
    let mut n = 0;
    for_each_record(bootstrap, topic, |_| n += 1);
    n
}

#[test]
fn a_late_schema_is_replayed_once_and_a_second_replay_publishes_nothing() {
    let kafka = cluster(4);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let mut cfg = config(&bootstrap, "replay", &registry.url, "");
    cfg.schema.registry.unknown_ttl = Duration::from_secs(1);

    let mut inputs = match_inputs(50, 32);
    let late: Vec<Input> = (0..40)
        .map(|i| {
            Input::envelope(
                &stream("prod", "glutton", "late", 9).build().unwrap(),
                &[i; 64],
            )
        })
        .collect();
    inputs.extend(late.iter().map(|i| Input {
        key: i.key.clone(),
        value: i.value.clone(),
        headers: i.headers.clone(),
    }));
    produce(&bootstrap, "raw", &inputs);
    let router = RunningRouter::start(&cfg);
    router.wait_settled(90, Duration::from_secs(60));
    wait_committed(&bootstrap, "replay", "raw", 90);
    assert_eq!(read_topic(&bootstrap, KNOWN).len(), 50);
    assert_eq!(read_topic(&bootstrap, LATE).len(), 0);
    let dlq = read_topic(&bootstrap, "dlq");
    assert_eq!(dlq.len(), 40);
    assert!(dlq
        .iter()
        .all(|d| d.headers["dlq.reason"] == "unknown_schema"));

    // The dry run counts and sends nothing; the CLI prints its table.
    let dry = replay(&bootstrap, &["unknown_schema"], true);
    assert_eq!(
        (dry.read, dry.total().matched, dry.total().sent),
        (40, 40, 40)
    );
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_envelope-router"))
        .args(["replay", "--bootstrap", &bootstrap, "--topic", "dlq"])
        .args(["--reason", "unknown_schema", "--title", "12*", "--dry-run"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&cli.stdout);
    println!(
        "$ envelope-router replay ... --reason unknown_schema --title '12*' --dry-run\n{table}"
    );
    assert!(
        cli.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("unknown_schema") && l.contains(LATE) && l.contains(" 40 ")),
        "{table}"
    );
    assert!(table.contains("would send"), "{table}");
    assert_eq!(
        watermark_sum(&bootstrap, "raw"),
        90,
        "a dry run sends nothing"
    );
    // Nothing matches a reason no record has.
    assert_eq!(replay(&bootstrap, &["malformed"], true).total().matched, 0);

    // The studio registers the schema; the router forgets its 404 after
    // unknown_ttl (1 s here).
    registry.register(9, "late-value");
    std::thread::sleep(Duration::from_millis(1500));
    // The first replay through the command line, as an operator runs it.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_envelope-router"))
        .args(["replay", "--bootstrap", &bootstrap, "--topic", "dlq"])
        .args(["--reason", "unknown_schema"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&cli.stdout);
    println!("$ envelope-router replay --bootstrap {bootstrap} --topic dlq --reason unknown_schema\n{table}");
    assert!(
        cli.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let total_row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        total_row,
        ["total", "40", "40", "0"],
        "matched, sent, failed: {table}"
    );
    router.wait_settled(130, Duration::from_secs(60));
    let published = read_topic(&bootstrap, LATE);
    assert_eq!(published.len(), 40, "each late record published once");
    let originals: HashMap<&[u8], &Input> = late.iter().map(|i| (i.value.as_slice(), i)).collect();
    for p in &published {
        let original = originals[p.value.as_slice()];
        assert_eq!(p.key.as_deref(), Some(original.key.as_slice()), "key kept");
        assert_eq!(p.headers["trace-id"], "t-1", "original headers kept");
        assert!(
            !p.headers.keys().any(|k| k.starts_with("dlq.")),
            "{:?}",
            p.headers
        );
        assert_eq!(p.headers["replay.dead_letter.topic"], "dlq");
        assert_eq!(p.headers["replay.reason"], "unknown_schema");
        assert!(p.headers["replay.dead_letter.offset"]
            .parse::<i64>()
            .is_ok());
        assert!(p.headers["replay.at"].ends_with('Z'));
    }
    let sources: std::collections::HashSet<(&str, &str)> = dlq
        .iter()
        .map(|d| {
            (
                d.headers["dlq.source.partition"].as_str(),
                d.headers["dlq.source.offset"].as_str(),
            )
        })
        .collect();
    assert_eq!(sources.len(), 40, "one dead letter per late record");
    for d in &dlq {
        let replayed = published.iter().find(|p| p.value == d.value).unwrap();
        assert_eq!(replayed.timestamp, d.timestamp, "timestamp kept");
    }

    // Replaying again: the router drops every id as a duplicate.
    let duplicates_before = router
        .ctl
        .stats
        .reason(envelope_router::pipeline::Reason::Duplicate);
    let second = replay(&bootstrap, &["unknown_schema"], false);
    assert_eq!((second.total().sent, second.total().failed), (40, 0));
    router.wait_settled(170, Duration::from_secs(60));
    assert_eq!(
        read_topic(&bootstrap, LATE).len(),
        40,
        "nothing new published"
    );
    assert_eq!(
        router
            .ctl
            .stats
            .reason(envelope_router::pipeline::Reason::Duplicate)
            - duplicates_before,
        40
    );
    assert_eq!(
        read_topic(&bootstrap, "dlq").len(),
        40,
        "no new dead letters"
    );
    router.stop();
}
