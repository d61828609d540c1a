//! Broker faults injected into librdkafka's mock cluster while the router
//! runs: partition leaders move, one broker answers slower than the request
//! timeout, produce and commit requests fail. The router must retry, and a
//! committed offset must never run ahead of what is published.

mod common;

use common::*;
use envelope_router::config::Config;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const OUT: &str = "prod.glutton.1234.match-v1";
const RECORDS: usize = 3000;
const PARTITIONS: i32 = 4;

fn fault_config(bootstrap: &str, registry: &str) -> Config {
    let yaml = format!(
        r#"
kafka:
  bootstrap.servers: "{bootstrap}"
  # The mock cluster does not tell a fetcher that a leader moved; a client
  # finds out from its next metadata refresh (5 min by default).
  topic.metadata.refresh.interval.ms: 1000
  consumer: {{ session.timeout.ms: 6000 }}
  producer:
    request.timeout.ms: 1000   # the slow broker below answers after 2.5 s
    message.timeout.ms: 3000   # give up early, so the router's own retry runs
    retry.backoff.ms: 50
input: {{ topics: [raw], group_id: faults }}
output: {{ create_topics: none }}
dead_letter: {{ topic: dlq }}
schema:
  registry: {{ url: "{registry}", timeout: 500ms }}
shutdown_timeout: 10s
"#
    );
    Config::from_yaml(&yaml, std::path::Path::new("faults.yaml"), |_| None).unwrap()
}

/// Every input key is in the output and nothing else is; a failure names
/// counts and a few missing keys, not two sets of thousands.
fn assert_same_keys(out: &HashSet<&Vec<u8>>, input: &HashSet<&Vec<u8>>) {
    let missing: Vec<_> = input.difference(out).collect();
    let extra: Vec<_> = out.difference(input).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} of {} input records missing from the output (e.g. {:?}), {} unexpected",
        missing.len(),
        input.len(),
        &missing[..missing.len().min(3)],
        extra.len()
    );
}

/// The router group's committed offsets on `raw`.
fn committed(bootstrap: &str) -> HashMap<i32, i64> {
    common::committed(bootstrap, "faults", "raw", PARTITIONS)
}

/// (partition, offset) → key of every record in `topic` up to its high
/// watermarks as of now.
fn positions(bootstrap: &str, topic: &str) -> HashMap<(i32, i64), Vec<u8>> {
    let mut out = HashMap::new();
    common::for_each_record(bootstrap, topic, |m| {
        out.insert((m.partition(), m.offset()), m.key().unwrap().to_vec());
    });
    out
}

/// Keys of every record in `topic` up to its high watermarks as of now.
fn keys(bootstrap: &str, topic: &str) -> Vec<Vec<u8>> {
    positions(bootstrap, topic).into_values().collect()
}

#[test]
fn leader_moves_timeouts_and_request_errors_never_commit_unsettled_offsets() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "envelope_router=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let kafka = MockCluster::new(3).unwrap();
    kafka.create_topic("raw", PARTITIONS, 3).unwrap();
    kafka.create_topic("dlq", 1, 3).unwrap();
    kafka.create_topic(OUT, 2, 3).unwrap();
    kafka.create_topic("faults.dedup-changelog", 2, 3).unwrap();
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let inputs = match_inputs(RECORDS, 64);
    let router = RunningRouter::start(&fault_config(&bootstrap, &registry.url));
    // Feed the stream in slices while faults come and go.
    let mut samples = Vec::new();
    for (round, slice) in inputs.chunks(RECORDS / 6).enumerate() {
        let broker = (round % 3) as i32 + 1;
        for p in 0..2 {
            kafka.partition_leader(OUT, p, Some(broker)).unwrap();
        }
        for p in 0..PARTITIONS {
            let mut leader = (broker + p) % 3 + 1;
            if round == 2 && leader == broker {
                leader = broker % 3 + 1; // the input stays on fast brokers
            }
            kafka.partition_leader("raw", p, Some(leader)).unwrap();
        }
        if round == 2 {
            // Only the router writes the output topic, so only the router
            // meets this broker: every request times out (2.5 s > 1 s, past
            // librdkafka's once-a-second timeout scan) until
            // message.timeout.ms gives up and the router's own retry runs.
            kafka
                .broker_round_trip_time(broker, Duration::from_millis(2500))
                .unwrap();
        }
        let errors_before = router.ctl.stats.delivery_errors();
        produce(&bootstrap, "raw", slice);
        match round {
            // Injected errors go to whichever client sends the next produce
            // requests: the router, or `produce` above for the next slice
            // (it sends again what was refused).
            1 => kafka.request_errors(
                RDKafkaApiKey::Produce,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                ],
            ),
            2 => {
                // Usually the router's produce times out within seconds; on
                // rare runs it does not (cause not found yet), so this only
                // reports. The assertion after the run still requires that
                // some injected fault reached the retry path.
                let deadline = Instant::now() + Duration::from_secs(30);
                while router.ctl.stats.delivery_errors() == errors_before {
                    if Instant::now() >= deadline {
                        let st = &router.ctl.stats;
                        eprintln!(
                            "the slow broker timed no produce out in 30 s (read {}, routed {}, settled {}, paused {})",
                            st.records_in(),
                            st.records_routed(),
                            st.records_settled(),
                            st.paused()
                        );
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            3 => {
                kafka.broker_round_trip_time(2, Duration::ZERO).unwrap();
                kafka.broker_round_trip_time(3, Duration::ZERO).unwrap();
                kafka.request_errors(
                    RDKafkaApiKey::OffsetCommit,
                    &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 3],
                )
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(700));
        // What is committed now must already be in the output topic.
        let commit = committed(&bootstrap);
        samples.push((commit, keys(&bootstrap, OUT)));
    }
    for b in 1..=3 {
        kafka.broker_round_trip_time(b, Duration::ZERO).unwrap();
    }
    router.wait_settled(RECORDS as u64, Duration::from_secs(60));
    wait_committed(&bootstrap, "faults", "raw", RECORDS as i64);
    let delivery_errors = router.ctl.stats.delivery_errors();
    router.ctl.shutdown.store(true, Ordering::Relaxed);
    router.stop();

    let input = positions(&bootstrap, "raw");
    assert_eq!(input.len(), RECORDS);
    let mut checked = 0;
    for (commit, out) in &samples {
        let out: HashSet<&Vec<u8>> = out.iter().collect();
        for (&(p, o), key) in &input {
            if commit.get(&p).is_some_and(|&c| o < c) {
                if !out.contains(key) {
                    let missing = input
                        .iter()
                        .filter(|((q, r), k)| {
                            commit.get(q).is_some_and(|&c| *r < c) && !out.contains(k)
                        })
                        .count();
                    let later = positions(&bootstrap, OUT).values().any(|k| k == key);
                    panic!(
                        "offset {o} of raw/{p} was committed (at {}) before its record was published \
                         ({missing} committed records missing from this sample of {} outputs; \
                         in the output at the end: {later})",
                        commit[&p],
                        out.len()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no commit was sampled during the faults");

    let out = keys(&bootstrap, OUT);
    let unique: HashSet<&Vec<u8>> = out.iter().collect();
    let want: HashSet<&Vec<u8>> = input.values().collect();
    assert_same_keys(&unique, &want);
    let final_commit = committed(&bootstrap);
    assert_eq!(
        final_commit.values().sum::<i64>(),
        RECORDS as i64,
        "the whole input committed at the end"
    );
    assert!(
        delivery_errors > 0,
        "the injected errors reached the router's retry path"
    );
    eprintln!(
        "records {RECORDS}, published {} ({} duplicates), delivery errors {delivery_errors}, commit checks {checked}",
        out.len(),
        out.len() - unique.len()
    );
}

#[test]
fn every_broker_down_mid_stream_then_back_loses_nothing() {
    let kafka = MockCluster::new(3).unwrap();
    kafka.create_topic("raw", PARTITIONS, 3).unwrap();
    kafka.create_topic("dlq", 1, 3).unwrap();
    kafka.create_topic(OUT, 2, 3).unwrap();
    kafka.create_topic("faults.dedup-changelog", 2, 3).unwrap();
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let inputs = match_inputs(1000, 64);
    let (first, second) = inputs.split_at(500);
    produce(&bootstrap, "raw", first);
    let router = RunningRouter::start(&fault_config(&bootstrap, &registry.url));
    let deadline = Instant::now() + Duration::from_secs(30);
    while router.ctl.stats.records_in() == 0 {
        assert!(Instant::now() < deadline, "the router never read");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The whole cluster goes away mid-stream (the mock keeps the logs, like
    // brokers restarting on durable storage) and comes back 3 s later.
    for b in 1..=3 {
        kafka.broker_down(b).unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    for b in 1..=3 {
        kafka.broker_up(b).unwrap();
    }
    produce(&bootstrap, "raw", second);
    router.wait_settled(1000, Duration::from_secs(60));
    wait_committed(&bootstrap, "faults", "raw", 1000);
    router.stop();

    let out = keys(&bootstrap, OUT);
    let unique: HashSet<&Vec<u8>> = out.iter().collect();
    let want: HashSet<&Vec<u8>> = inputs.iter().map(|i| &i.key).collect();
    assert_same_keys(&unique, &want);
    assert_eq!(
        committed(&bootstrap).values().sum::<i64>(),
        1000,
        "the whole input committed"
    );
    eprintln!(
        "records 1000, published {} ({} duplicates)",
        out.len(),
        out.len() - unique.len()
    );
}
