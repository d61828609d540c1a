//! How long restoring dedup windows from the changelog takes, and what the
//! changelog costs per id: 1M ids (4 input partitions of 250k, written as
//! 1 024-id blocks, as the router writes them under load) preloaded into a
//! one-broker mock cluster, then read back by `Changelog::restore` as on
//! an assignment. Three runs; prints median, min and max.
//!
//! `cargo bench --bench changelog_restore` (`IDS=...` to change the count).

use envelope_router::config::Config;
use envelope_router::kafka::changelog::{Changelog, BLOCK_IDS};
use envelope_router::kafka::state::RouterState;
use envelope_router::pipeline::changelog::{block_key, encode_block};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PARTITIONS: i32 = 4;

fn main() {
    let ids: usize = std::env::var("IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mock = MockCluster::new(1).unwrap();
    let topic = "bench.dedup-changelog";
    mock.create_topic(topic, PARTITIONS, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (mut value, mut bytes, mut blocks) = (Vec::new(), 0usize, 0usize);
    let per_partition = ids / PARTITIONS as usize;
    for p in 0..PARTITIONS {
        let key = block_key("bench", "raw", p);
        let fps: Vec<u64> = (0..per_partition as u64)
            .map(|i| (u64::from(p as u32) << 40 | i).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        for chunk in fps.chunks(BLOCK_IDS) {
            encode_block(chunk, &mut value);
            bytes += value.len() + key.len();
            blocks += 1;
            let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(p)
                .key(&key)
                .payload(&value)
                .timestamp(now_ms);
            while let Err((_, back)) = producer.send(rec) {
                rec = back; // queue full
                producer.poll(Duration::from_millis(10));
            }
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    println!(
        "changelog: {ids} ids in {blocks} blocks, {:.2} bytes per id (value and key; plus ~70 bytes of record and batch framing per block)",
        bytes as f64 / ids as f64
    );

    let yaml = format!(
        "kafka: {{ bootstrap.servers: \"{bootstrap}\" }}\ninput: {{ topics: [raw], group_id: bench }}\nschema: {{ registry: {{ file: /dev/null }} }}\ndedup: {{ window: 10m, changelog: {{ topic: {topic} }} }}\n"
    );
    let cfg = Config::from_yaml(&yaml, std::path::Path::new("bench.yaml"), |_| None).unwrap();
    let mut times = Vec::new();
    for run in 0..3 {
        let changelog = Changelog::new(&cfg, PARTITIONS).unwrap();
        let mut state = RouterState::default();
        let slots: Vec<usize> = (0..PARTITIONS).map(|p| state.assign("raw", p)).collect();
        let started = Instant::now();
        let restored = changelog.restore(&mut state, &slots).unwrap();
        let took = started.elapsed();
        assert_eq!(restored as usize, per_partition * PARTITIONS as usize);
        println!("run {run}: restored {restored} ids in {took:.2?}");
        times.push(took);
    }
    times.sort();
    println!(
        "restore of {ids} ids: median {:.2?}, min {:.2?}, max {:.2?}",
        times[1], times[0], times[2]
    );
}
