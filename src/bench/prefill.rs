//! Full dedup windows before a router run: the harness writes random
//! fingerprints to the run's dedup changelog, stamped now, and the router
//! restores them on assignment (`kafka/changelog.rs`) as one that has run
//! for a while would. A fresh router's windows are small enough to stay in
//! cache; a long-running one's hold up to `dedup.max_entries` ids (10M by
//! default: ~270 MB of tables) and evict as many as arrive.

use super::workload::Rng;
use crate::kafka::changelog::BLOCK_IDS;
use crate::pipeline::changelog::{block_key, encode_block};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use std::time::Duration;

/// Fills the dedup changelog a router of consumer group `group` restores
/// from by default with `ids` fingerprints for the `partitions` partitions
/// of `input`: creates the topic with `create(topic, partitions)` (the
/// caller's broker: mock cluster or bootstrap), then [`write`]s to it.
pub fn fill(
    bootstrap: &str,
    group: &str,
    input: &str,
    partitions: i32,
    ids: u64,
    seed: u64,
    create: impl FnOnce(&str, i32) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let topic = crate::config::default_changelog_topic(group);
    create(&topic, partitions)?;
    write(bootstrap, &topic, group, input, partitions, ids, seed)
}

/// Writes `ids` random fingerprints as changelog blocks of `group` for the
/// `partitions` partitions of `input`, spread evenly, to `topic` (which
/// must exist with `partitions` partitions: input partition `p`'s blocks go
/// to changelog partition `p`, as the router writes them).
fn write(
    bootstrap: &str,
    topic: &str,
    group: &str,
    input: &str,
    partitions: i32,
    ids: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "none")
        .create()?;
    let mut rng = Rng::new(seed ^ 0x0070_7265_6669_6c6c); // "prefill"
    let now_ms = crate::kafka::context::unix_ms();
    let mut value = Vec::new();
    let mut fingerprints = Vec::with_capacity(BLOCK_IDS);
    for p in 0..partitions {
        let key = block_key(group, input, p);
        // Partition p's share: the remainder goes to the first ones.
        let mut left = ids / partitions as u64 + u64::from((p as u64) < ids % partitions as u64);
        while left > 0 {
            let n = left.min(BLOCK_IDS as u64);
            fingerprints.clear();
            fingerprints.extend((0..n).map(|_| rng.next()));
            encode_block(&fingerprints, &mut value);
            let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(p)
                .key(&key)
                .payload(&value)
                .timestamp(now_ms);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((e, r))
                        if e.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                    {
                        rec = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => anyhow::bail!("writing dedup blocks to {topic}: {e}"),
                }
            }
            left -= n;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}
