//! The dedup changelog's Kafka edge: checking the topic at start-up,
//! writing blocks of settled ids, and restoring a partition's window on
//! assignment. The block format is `pipeline::changelog`.
//!
//! Input partition `p` of any input topic writes to changelog partition
//! `p % N`; a block's key names its input partition (and group), so a
//! restore reads the changelog partitions of its assignment from the first
//! record inside the dedup window to the end and keeps its own blocks.

use super::context::{unix_ms, unix_seconds, ProducerCtx};
use super::state::RouterState;
use super::topic_handles::{SendResult, TopicHandles};
use crate::config::{Config, MissingState, TopicCreation};
use crate::pipeline::changelog::{block_key, decode_block, encode_block, BYTES_PER_ID};
use anyhow::{bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Delivery opaque of changelog blocks: no input record settles on them.
pub const CHANGELOG_OPAQUE: usize = usize::MAX;

/// One block on its way to the producer.
type Block<'a> = BaseRecord<'a, [u8], [u8], usize>;

/// Most ids in one block (8 KiB of value).
pub const BLOCK_IDS: usize = 1024;

/// How long metadata and offset requests of the start-up check may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One consume loop's handle on the changelog.
pub struct Changelog {
    /// The topic.
    pub topic: Arc<str>,
    group: String,
    /// Changelog partitions (input partition `p` writes to `p % partitions`).
    partitions: i32,
    window: Duration,
    restore_timeout: Duration,
    on_missing: MissingState,
    /// Reads blocks back on assignment (no group: it assigns partitions).
    reader: BaseConsumer,
}

impl Changelog {
    /// The changelog of loop `cfg`, with `partitions` from [`prepare`].
    pub fn new(cfg: &Config, partitions: i32) -> anyhow::Result<Changelog> {
        Ok(Changelog {
            topic: cfg.changelog_topic().into(),
            group: cfg.input.group_id.clone(),
            partitions: partitions.max(1),
            window: cfg.dedup.window,
            restore_timeout: cfg.dedup.changelog.restore_timeout,
            on_missing: cfg.dedup.on_missing_state,
            reader: reader_config(cfg, false)
                .create()
                .context("creating the changelog reader")?,
        })
    }

    /// Whether a failed restore stops the router (`on_missing_state: fail`).
    pub fn must_restore(&self) -> bool {
        self.on_missing == MissingState::Fail
    }

    /// Writes a block for every partition with settled ids not yet written
    /// (`only`: just these slots), counting them in the shared
    /// `changelog_in_flight`; ids librdkafka refuses (its queue is full)
    /// stay for the next call.
    #[allow(clippy::result_large_err)] // the shape of BaseProducer::send
    pub fn write(&self, producer: &BaseProducer<ProducerCtx>, only: Option<&[usize]>) {
        self.write_with(producer, only, |rec| producer.send(rec));
    }

    /// [`Changelog::write`] through the loop's topic handles: what the loop
    /// does every turn. A send by name has librdkafka find the topic by a
    /// linear scan of every topic the producer knows (~75 in the bench):
    /// ~400 of the router's instructions per record at 256 B, one block per
    /// ~16 records (BENCHMARKS.md, 2026-12-01, fifth session).
    #[allow(clippy::result_large_err)] // the shape of BaseProducer::send
    pub fn write_by_handle(&self, topics: &TopicHandles<ProducerCtx>, only: Option<&[usize]>) {
        self.write_with(topics.producer(), only, |rec| topics.send(&self.topic, rec));
    }

    fn write_with(
        &self,
        producer: &BaseProducer<ProducerCtx>,
        only: Option<&[usize]>,
        send: impl FnMut(Block<'_>) -> SendResult<'_, [u8], [u8], usize>,
    ) {
        let shared = &producer.context().shared;
        let blocks = self.write_blocks(producer, &mut shared.lock(), only, send);
        shared
            .changelog_in_flight
            .fetch_add(blocks, Ordering::Relaxed);
    }

    /// [`Changelog::write`], then serves delivery reports until every block
    /// in flight is acknowledged or `deadline` passes: what a revoke and a
    /// shutdown do before they commit.
    pub fn write_and_wait(
        &self,
        producer: &BaseProducer<ProducerCtx>,
        only: Option<&[usize]>,
        deadline: Instant,
    ) {
        self.write(producer, only);
        let in_flight = &producer.context().shared.changelog_in_flight;
        while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            ProducerCtx::poll(producer, Duration::from_millis(10));
        }
    }

    /// The blocks of [`Changelog::write`]; returns how many were handed over.
    fn write_blocks(
        &self,
        producer: &BaseProducer<ProducerCtx>,
        state: &mut RouterState,
        only: Option<&[usize]>,
        mut send: impl FnMut(Block<'_>) -> SendResult<'_, [u8], [u8], usize>,
    ) -> usize {
        let mut value = Vec::new();
        let mut blocks = 0;
        let now_ms = unix_ms();
        for (slot, p) in state.partitions_mut() {
            if p.unlogged.is_empty() || only.is_some_and(|o| !o.contains(&slot)) {
                continue;
            }
            let key = (p.changelog_key)
                .get_or_insert_with(|| block_key(&self.group, &p.topic, p.partition).into());
            let target = p.partition.rem_euclid(self.partitions);
            let mut sent = 0;
            for ids in p.unlogged.chunks(BLOCK_IDS) {
                encode_block(ids, &mut value);
                let rec = Block::with_opaque_to(&self.topic, CHANGELOG_OPAQUE)
                    .partition(target)
                    .key(&**key)
                    .payload(&value)
                    .timestamp(now_ms);
                match send(rec) {
                    Ok(()) => {
                        sent += ids.len();
                        blocks += 1;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                    Err((e, _)) => {
                        // Not a record's verdict: the records are settled;
                        // only their ids' persistence is lost.
                        tracing::warn!(topic = %self.topic, error = %e, ids = ids.len(), "dedup changelog block refused");
                        producer.context().shared.stats.changelog_block(false, 0, 0);
                        sent += ids.len();
                    }
                }
            }
            p.unlogged.drain(..sent);
        }
        blocks
    }

    /// Reads the windows of the input partitions in `slots` back from the
    /// changelog, into `state`. Returns the ids restored, or why the
    /// changelog could not be read.
    pub fn restore(&self, state: &mut RouterState, slots: &[usize]) -> Result<u64, String> {
        let mut wanted: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut targets: Vec<i32> = Vec::new();
        for &slot in slots {
            if let Some(p) = state.get(slot) {
                wanted.insert(block_key(&self.group, &p.topic, p.partition), slot);
                let t = p.partition.rem_euclid(self.partitions);
                if !targets.contains(&t) {
                    targets.push(t);
                }
            }
        }
        if targets.is_empty() {
            return Ok(0);
        }
        let deadline = Instant::now() + self.restore_timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let oldest_ms = unix_ms().saturating_sub(self.window.as_millis() as i64);
        // Where each changelog partition's window starts and where it ends now.
        let mut ends: HashMap<i32, i64> = HashMap::new();
        let mut by_time = TopicPartitionList::new();
        for &t in &targets {
            let (low, high) = until(deadline, || {
                self.reader.fetch_watermarks(&self.topic, t, left())
            })
            .map_err(|e| format!("reading the end of {}[{t}]: {e}", self.topic))?;
            if high > low {
                ends.insert(t, high);
                by_time
                    .add_partition_offset(&self.topic, t, Offset::Offset(oldest_ms))
                    .map_err(|e| e.to_string())?;
            }
        }
        if ends.is_empty() {
            return Ok(0);
        }
        let starts = until(deadline, || {
            self.reader.offsets_for_times(by_time.clone(), left())
        })
        .map_err(|e| format!("finding the window's start in {}: {e}", self.topic))?;
        let mut assign = TopicPartitionList::new();
        for e in starts.elements() {
            // No offset for the time (or a broker that cannot look times
            // up): read from the start, and skip old blocks by timestamp.
            let start = match e.offset() {
                Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            if matches!(start, Offset::Offset(o) if o >= ends[&e.partition()]) {
                ends.remove(&e.partition());
                continue;
            }
            assign
                .add_partition_offset(&self.topic, e.partition(), start)
                .map_err(|e| e.to_string())?;
        }
        if ends.is_empty() {
            return Ok(0);
        }
        self.reader
            .assign(&assign)
            .map_err(|e| format!("assigning {}: {e}", self.topic))?;
        let mut restored = 0u64;
        let mut last_error = None;
        let result = loop {
            if ends.is_empty() {
                break Ok(restored);
            }
            if left().is_zero() {
                let why = last_error.map_or(String::new(), |e| format!("; last error: {e}"));
                break Err(format!(
                    "{} was not read to its end within {:?} (dedup.changelog.restore_timeout){why}",
                    self.topic, self.restore_timeout
                ));
            }
            match self.reader.poll(left().min(Duration::from_millis(100))) {
                Some(Ok(m)) => {
                    if ends
                        .get(&m.partition())
                        .is_some_and(|end| m.offset() + 1 >= *end)
                    {
                        ends.remove(&m.partition());
                    }
                    let at_ms = m.timestamp().to_millis().unwrap_or(0);
                    if at_ms < oldest_ms {
                        continue;
                    }
                    let Some(&slot) = m.key().and_then(|k| wanted.get(k)) else {
                        continue;
                    };
                    let Some(p) = state.get_mut(slot) else {
                        continue;
                    };
                    let second = unix_seconds(at_ms);
                    match decode_block(m.payload().unwrap_or_default()) {
                        Ok(ids) => {
                            for fp in ids {
                                restored += u64::from(p.dedup.insert(fp, second));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(topic = %self.topic, partition = m.partition(), offset = m.offset(), error = %e, "dedup changelog record skipped")
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(t))) => {
                    ends.remove(&t);
                }
                // Brokers down or moving: librdkafka reports it and keeps
                // fetching. Only the restore timeout makes it a failure.
                Some(Err(e)) => {
                    tracing::debug!(topic = %self.topic, error = %e, "dedup changelog read");
                    last_error = Some(e);
                }
                None => {}
            }
        };
        let _ = self.reader.unassign();
        result
    }
}

/// Calls `request` until it succeeds or `deadline` passes (brokers that are
/// down or electing leaders answer again within a few seconds).
fn until<T>(
    deadline: Instant,
    mut request: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    loop {
        match request() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "dedup changelog request failed; trying again");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Checks the changelog topic before the router joins its group, creating
/// it for a group that has never committed; returns its partition count.
/// A missing topic while the group has committed offsets means the windows
/// are lost: refused unless `dedup.on_missing_state: empty`.
pub fn prepare(
    cfg: &Config,
    admin: Option<&AdminClient<DefaultClientContext>>,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<i32> {
    let topic = cfg.changelog_topic();
    let reader: BaseConsumer = reader_config(cfg, false).create()?;
    if let Some(n) = partitions_of(&reader, &topic)? {
        return Ok(n);
    }
    let committed = group_has_committed(cfg)?;
    if committed {
        match cfg.dedup.on_missing_state {
            MissingState::Fail => bail!(
                "the dedup changelog topic {topic:?} does not exist, but group {:?} has committed offsets: \
                 its dedup windows are lost and records read again would be published again. \
                 Restore the topic, or set dedup.on_missing_state: empty to start with empty windows",
                cfg.input.group_id
            ),
            MissingState::Empty => tracing::warn!(
                topic,
                "dedup changelog topic missing: starting with empty windows (dedup.on_missing_state: empty)"
            ),
        }
    }
    let partitions = match cfg.dedup.changelog.partitions {
        n if n > 0 => n,
        _ => widest_input(&reader, cfg)?,
    };
    let retention = cfg.dedup.window + Duration::from_secs(3600);
    match (cfg.output.create_topics, admin) {
        (TopicCreation::Admin, Some(admin)) => {
            let retention_ms = retention.as_millis().to_string();
            let new = NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(cfg.output.replication_factor),
            )
            .set("cleanup.policy", "delete")
            .set("retention.ms", &retention_ms);
            let results = runtime
                .block_on(admin.create_topics([&new], &AdminOptions::new()))
                .context("creating the dedup changelog topic")?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => bail!("creating the dedup changelog topic {name}: {code}"),
                }
            }
        }
        (TopicCreation::Broker, _) => {
            // A metadata request that allows creation makes the broker
            // create it (auto.create.topics.enable).
            let creator: BaseConsumer = reader_config(cfg, true).create()?;
            let _ = creator.fetch_metadata(Some(&topic), REQUEST_TIMEOUT);
        }
        _ => bail!(
            "the dedup changelog topic {topic:?} does not exist and output.create_topics is none: \
             create it with {partitions} partitions and retention.ms {} (the dedup window plus an hour), \
             or set dedup.changelog.enabled: false",
            retention.as_millis()
        ),
    }
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        if let Some(n) = partitions_of(&reader, &topic)? {
            tracing::info!(topic, partitions = n, "dedup changelog topic created");
            return Ok(n);
        }
        if Instant::now() >= deadline {
            bail!("the dedup changelog topic {topic:?} did not appear after it was created");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Partitions of `topic`, `None` if it does not exist.
fn partitions_of(reader: &BaseConsumer, topic: &str) -> anyhow::Result<Option<i32>> {
    let md = reader
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// The partition count of the widest input topic (1 if none exists yet).
fn widest_input(reader: &BaseConsumer, cfg: &Config) -> anyhow::Result<i32> {
    let mut widest = 1;
    for t in &cfg.input.topics {
        widest = widest.max(partitions_of(reader, t)?.unwrap_or(1));
    }
    Ok(widest)
}

/// Whether the router's group has a committed offset on any input partition.
fn group_has_committed(cfg: &Config) -> anyhow::Result<bool> {
    let mut cc = ClientConfig::new();
    for (k, v) in cfg.client_properties(&cfg.kafka.consumer) {
        cc.set(k, v);
    }
    cc.set("group.id", &cfg.input.group_id);
    let c: BaseConsumer = cc.create()?;
    let mut tpl = TopicPartitionList::new();
    for t in &cfg.input.topics {
        for p in 0..partitions_of(&c, t)?.unwrap_or(0) {
            tpl.add_partition(t, p);
        }
    }
    if tpl.count() == 0 {
        return Ok(false);
    }
    let got = c
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .context("reading the group's committed offsets")?;
    Ok(got
        .elements()
        .iter()
        .any(|e| matches!(e.offset(), Offset::Offset(o) if o >= 0)))
}

/// A consumer for metadata and restores: it assigns partitions itself and
/// never joins or commits (librdkafka's `assign` still wants a group id);
/// it reads only committed transactional data and reports each
/// partition's end.
fn reader_config(cfg: &Config, create_topics: bool) -> ClientConfig {
    let mut cc = ClientConfig::new();
    for (k, v) in cfg.client_properties(&cfg.kafka.consumer) {
        cc.set(k, v);
    }
    cc.remove("group.instance.id");
    cc.set(
        "group.id",
        format!("{}.changelog-reader", cfg.input.group_id),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("enable.partition.eof", "true")
    .set("isolation.level", "read_committed")
    .set("fetch.queue.backoff.ms", "1")
    .set(
        "allow.auto.create.topics",
        if create_topics { "true" } else { "false" },
    );
    cc
}

/// Ids a block value of `len` bytes holds (for the delivery report's tally).
pub fn ids_in_block(len: usize) -> u64 {
    (len.saturating_sub(crate::pipeline::changelog::BLOCK_MAGIC.len()) / BYTES_PER_ID) as u64
}
