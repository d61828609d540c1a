//! The Kafka side of `replay`: read a dead-letter topic over a range, send
//! the picked records back, wait for every acknowledgement.
//!
//! The range's end is fixed when the replay starts (the high watermarks
//! then, or `--until`), so records dead-lettered again while it runs are
//! not read by the same replay.

use super::{
    destination, is_replay_dropped_header, stream_of, DeadLetterInfo, Filter, Tally, REPLAYED_AT,
    REPLAYED_FROM_OFFSET, REPLAYED_FROM_PARTITION, REPLAYED_FROM_TOPIC, REPLAYED_REASON,
};
use crate::progress::Progress;
use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One end of a replay's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The partition's first record (as a start) or its end when the
    /// replay started (as an end).
    Edge,
    /// An offset, applied to every partition read.
    Offset(i64),
    /// A record timestamp, in Unix milliseconds. A dead letter keeps its
    /// original record's timestamp.
    Time(i64),
}

impl std::str::FromStr for Position {
    type Err = String;

    /// `beginning`/`end`, an offset (`1200`), an RFC 3339 time
    /// (`2026-11-23T10:00:00Z`) or an age (`2h`: two hours ago).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "beginning" | "earliest" | "end" | "latest" => return Ok(Position::Edge),
            _ => {}
        }
        if let Ok(o) = s.parse::<i64>() {
            return if o >= 0 {
                Ok(Position::Offset(o))
            } else {
                Err(format!("offset {o} is negative"))
            };
        }
        let at = humantime::parse_rfc3339_weak(s)
            .or_else(|_| humantime::parse_duration(s).map(|age| SystemTime::now() - age))
            .map_err(|_| {
                format!("{s:?}: expected beginning/end, an offset, an RFC 3339 time or an age such as 2h")
            })?;
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("{s:?} is before 1970"))?
            .as_millis() as i64;
        Ok(Position::Time(ms))
    }
}

/// What to replay and how.
pub struct ReplayOptions {
    /// librdkafka properties for both clients (with `bootstrap.servers`).
    pub properties: Vec<(String, String)>,
    /// The dead-letter topic to read.
    pub dead_letter_topic: String,
    /// Its partitions to read (empty: all).
    pub partitions: Vec<i32>,
    /// Start of the range (inclusive).
    pub from: Position,
    /// End of the range (exclusive).
    pub until: Position,
    /// Which dead letters to pick.
    pub filter: Filter,
    /// Send here instead of each record's `dlq.source.topic`.
    pub to: Option<String>,
    /// Only tally what would be sent.
    pub dry_run: bool,
    /// Longest wait for a record or an acknowledgement before giving up.
    pub stall_timeout: Duration,
}

/// Delivery results as they arrive: (index into the pending rows, error),
/// and whether a delivered write must carry an offset (`acks` not 0).
#[derive(Default)]
struct Acks(Mutex<Vec<(usize, Option<String>)>>, bool);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, row: usize) {
        let error = match result {
            Err((e, _)) => Some(e.to_string()),
            // Not proof of the write (see `kafka::context`): counted as
            // failed, so the operator replays it again.
            Ok(m) if self.1 && m.offset() < 0 => {
                Some("acknowledged without an offset; replay it again".to_owned())
            }
            Ok(_) => None,
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((row, error));
    }
}

/// Replays the range; returns the tally (its `failed` column says whether
/// anything was not replayed).
pub fn run(opts: &ReplayOptions, progress: &Progress) -> anyhow::Result<Tally> {
    let mut config = ClientConfig::new();
    for (k, v) in &opts.properties {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "envelope-router-replay")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false")
        .create()
        .context("creating the dead-letter reader")?;
    config
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    let acks = Acks(Mutex::default(), crate::kafka::acks_carry_offsets(&config));
    let producer: BaseProducer<Acks> = config
        .create_with_context(acks)
        .context("creating the replay producer")?;

    let (assignment, mut ends, total) = plan_range(&consumer, opts)?;
    progress.set_length(total);
    let mut tally = Tally::default();
    if ends.is_empty() {
        return Ok(tally);
    }
    consumer.assign(&assignment)?;

    let replayed_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let mut partition_counts: HashMap<String, Option<i32>> = HashMap::new();
    // (reason, stream) of each record sent, by delivery opaque.
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut unacked = 0usize;
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        // Delivery reports are served only by polling the producer.
        unacked -= serve_acks(&producer, &rows, &mut tally);
        if last_progress.elapsed() >= opts.stall_timeout {
            let left: Vec<String> = ends
                .iter()
                .map(|(p, end)| format!("{p} (to {end})"))
                .collect();
            anyhow::bail!(
                "no record from {} for {:?}; partitions not read to their end: {}",
                opts.dead_letter_topic,
                opts.stall_timeout,
                left.join(", ")
            );
        }
        let m = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => m,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
                continue;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "dead-letter read");
                continue;
            }
            None => continue,
        };
        last_progress = Instant::now();
        let Some(&end) = ends.get(&m.partition()) else {
            continue;
        };
        if m.offset() >= end {
            ends.remove(&m.partition());
            continue;
        }
        if m.offset() + 1 >= end {
            ends.remove(&m.partition());
        }
        if !in_time_range(&m, opts) {
            progress.inc(1);
            continue;
        }
        tally.read += 1;
        progress.inc(1);
        let info = DeadLetterInfo::from_headers(
            m.headers()
                .into_iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value.unwrap_or_default())),
        );
        let payload = m.payload().unwrap_or_default();
        if !opts.filter.accepts(&info, payload) {
            continue;
        }
        let stream = stream_of(payload);
        tally.row(&info.reason, &stream).matched += 1;
        let dest = destination(&info, opts.to.as_deref(), |topic| {
            *partition_counts
                .entry(topic.to_owned())
                .or_insert_with(|| partitions_of(&consumer, topic))
        });
        let dest = match dest {
            Ok(dest) => dest,
            Err(why) => {
                tally.fail(&info.reason, &stream, why.to_string());
                continue;
            }
        };
        if opts.dry_run {
            tally.row(&info.reason, &stream).sent += 1;
            continue;
        }
        rows.push((info.reason.clone(), stream));
        let headers = replay_headers(&m, &info, &opts.dead_letter_topic, &replayed_at);
        let mut record = BaseRecord::with_opaque_to(&dest.topic, rows.len() - 1)
            .payload(payload)
            .headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(ts) = m.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        if let Some(p) = dest.partition {
            record = record.partition(p);
        }
        unacked += 1;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    unacked -= serve_acks_after(&producer, &rows, &mut tally, 100);
                }
                Err((e, _)) => {
                    unacked -= 1;
                    let (reason, stream) = &rows[rows.len() - 1];
                    tally.fail(reason, stream, format!("send to {}: {e}", dest.topic));
                    break;
                }
            }
        }
        progress.set_message(format!("sent {}", tally.total().sent));
    }
    let _ = consumer.unassign();
    // Every record sent is acknowledged (or failed) before the summary.
    let mut waited = Instant::now();
    while unacked > 0 {
        let served = serve_acks_after(&producer, &rows, &mut tally, 100);
        unacked -= served;
        if served > 0 {
            waited = Instant::now();
        } else if waited.elapsed() >= opts.stall_timeout {
            let (reason, stream) = ("-".to_owned(), "-".to_owned());
            for _ in 0..unacked {
                tally.fail(&reason, &stream, "no acknowledgement in time".into());
            }
            break;
        }
    }
    progress.set_message(format!("sent {}", tally.total().sent));
    Ok(tally)
}

/// The assignment (start offsets), the exclusive end of each partition
/// with something to read, and the records in range.
fn plan_range(
    consumer: &BaseConsumer,
    opts: &ReplayOptions,
) -> anyhow::Result<(TopicPartitionList, HashMap<i32, i64>, u64)> {
    let topic = &opts.dead_letter_topic;
    let timeout = opts.stall_timeout;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    let t = md
        .topics()
        .first()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .with_context(|| format!("dead-letter topic {topic} does not exist"))?;
    let mut partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if !opts.partitions.is_empty() {
        if let Some(p) = opts.partitions.iter().find(|p| !partitions.contains(p)) {
            anyhow::bail!("{topic} has no partition {p}");
        }
        partitions = opts.partitions.clone();
    }
    let mut starts = HashMap::new();
    let mut ends = HashMap::new();
    let mut by_time = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("reading the watermarks of {topic}[{p}]"))?;
        let end = match opts.until {
            Position::Offset(o) => o.min(high),
            Position::Edge | Position::Time(_) => high,
        };
        let start = match opts.from {
            Position::Offset(o) => o.max(low),
            Position::Edge => low,
            Position::Time(ms) => {
                by_time.add_partition_offset(topic, p, Offset::Offset(ms))?;
                low
            }
        };
        starts.insert(p, start);
        ends.insert(p, end);
    }
    if by_time.count() > 0 {
        // Where the broker can look times up, start there; records are
        // also checked by timestamp, so a broker that cannot only costs reads.
        if let Ok(found) = consumer.offsets_for_times(by_time, timeout) {
            for e in found.elements() {
                if let Offset::Offset(o) = e.offset() {
                    if o >= 0 {
                        starts.insert(e.partition(), o);
                    }
                }
            }
        }
    }
    let mut assignment = TopicPartitionList::new();
    let mut total = 0u64;
    ends.retain(|p, end| {
        let start = starts[p];
        if start >= *end {
            return false;
        }
        total += (*end - start) as u64;
        assignment
            .add_partition_offset(topic, *p, Offset::Offset(start))
            .is_ok()
    });
    Ok((assignment, ends, total))
}

fn in_time_range(m: &BorrowedMessage<'_>, opts: &ReplayOptions) -> bool {
    let ts = m.timestamp().to_millis();
    let after = match opts.from {
        Position::Time(from) => ts.is_some_and(|t| t >= from),
        _ => true,
    };
    let before = match opts.until {
        Position::Time(until) => ts.is_some_and(|t| t < until),
        _ => true,
    };
    after && before
}

/// Partitions of `topic`, `None` if it does not exist (or the lookup failed).
fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Option<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    md.topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .filter(|n| *n > 0)
}

/// The dead letter's own headers without `dlq.*` (and an earlier replay's
/// `replay.*`), plus this replay's `replay.*`.
fn replay_headers(
    m: &BorrowedMessage<'_>,
    info: &DeadLetterInfo,
    dead_letter_topic: &str,
    replayed_at: &str,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = m.headers() {
        for h in h.iter().filter(|h| !is_replay_dropped_header(h.key)) {
            out = out.insert(h);
        }
    }
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    let added = [
        (REPLAYED_AT, replayed_at),
        (REPLAYED_FROM_TOPIC, dead_letter_topic),
        (REPLAYED_FROM_PARTITION, &partition),
        (REPLAYED_FROM_OFFSET, &offset),
        (REPLAYED_REASON, &info.reason),
    ];
    for (key, value) in added {
        out = out.insert(Header {
            key,
            value: Some(value),
        });
    }
    out
}

/// Serves delivery reports already queued; returns how many arrived.
fn serve_acks(
    producer: &BaseProducer<Acks>,
    rows: &[(String, String)],
    tally: &mut Tally,
) -> usize {
    serve_acks_after(producer, rows, tally, 0)
}

/// Polls the producer up to `wait_ms` and counts the reports that arrived.
fn serve_acks_after(
    producer: &BaseProducer<Acks>,
    rows: &[(String, String)],
    tally: &mut Tally,
    wait_ms: u64,
) -> usize {
    producer.poll(Duration::from_millis(wait_ms));
    let acks = std::mem::take(
        &mut *producer
            .context()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    for (row, error) in &acks {
        let (reason, stream) = &rows[*row];
        match error {
            None => tally.row(reason, stream).sent += 1,
            Some(e) => tally.fail(reason, stream, e.clone()),
        }
    }
    acks.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_edges_offsets_times_and_ages() {
        assert_eq!("beginning".parse(), Ok(Position::Edge));
        assert_eq!("end".parse(), Ok(Position::Edge));
        assert_eq!("1200".parse(), Ok(Position::Offset(1200)));
        assert!("-3".parse::<Position>().is_err());
        assert_eq!(
            "2026-11-23T10:00:00Z".parse(),
            Ok(Position::Time(1_795_428_000_000))
        );
        let Ok(Position::Time(ms)) = "2h".parse::<Position>() else {
            panic!("an age is a time")
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((now - 7_200_000 - ms).abs() < 60_000, "two hours ago");
        let e = "yesterday-ish".parse::<Position>().unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
    }
}
