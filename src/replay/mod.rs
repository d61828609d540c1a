//! `replay`: re-drives dead letters to their source topic (or another).
//!
//! This module is the part free of Kafka I/O: what a dead letter says about
//! itself (its `dlq.*` headers), which ones a replay picks ([`Filter`]),
//! where each goes and with which headers, and the per-reason, per-stream
//! tally printed as the dry run's table and the summary. The reading and
//! sending are in `kafka.rs`.
//!
//! A replayed record carries its original bytes, key, timestamp and
//! headers (the `dlq.*` ones removed), plus `replay.*` headers naming the
//! dead letter it came from and when it was replayed. It goes back to the
//! partition it was first read from, so the router checks it against the
//! same partition's dedup window: replaying twice within `dedup.window`
//! publishes it once.

pub mod kafka;

use crate::envelope::{EnvelopeView, TopicName};
use crate::pipeline::route::{MatchSpec, OneOrMany, RouteError, StreamMatch};
use std::collections::BTreeMap;

/// Header: when the record was replayed (RFC 3339, UTC).
pub const REPLAYED_AT: &str = "replay.at";
/// Header: the dead-letter topic the record was replayed from.
pub const REPLAYED_FROM_TOPIC: &str = "replay.dead_letter.topic";
/// Header: the dead letter's partition.
pub const REPLAYED_FROM_PARTITION: &str = "replay.dead_letter.partition";
/// Header: the dead letter's offset.
pub const REPLAYED_FROM_OFFSET: &str = "replay.dead_letter.offset";
/// Header: the reason the record had been dead-lettered.
pub const REPLAYED_REASON: &str = "replay.reason";

/// What a dead letter's `dlq.*` headers say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// `dlq.reason` (empty if absent: not written by the router).
    pub reason: String,
    /// `dlq.source.topic`.
    pub source_topic: Option<String>,
    /// `dlq.source.partition`.
    pub source_partition: Option<i32>,
    /// `dlq.source.offset`.
    pub source_offset: Option<i64>,
    /// `dlq.payload_omitted` was set: the payload is not in the dead letter.
    pub payload_omitted: bool,
}

impl DeadLetterInfo {
    /// Reads the `dlq.*` headers from `(key, value)` pairs.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut info = DeadLetterInfo::default();
        for (k, v) in headers {
            let text = || String::from_utf8_lossy(v).into_owned();
            match k {
                "dlq.reason" => info.reason = text(),
                "dlq.source.topic" => info.source_topic = Some(text()),
                "dlq.source.partition" => info.source_partition = text().parse().ok(),
                "dlq.source.offset" => info.source_offset = text().parse().ok(),
                crate::kafka::headers::PAYLOAD_OMITTED => info.payload_omitted = true,
                _ => {}
            }
        }
        info
    }
}

/// Whether a header of a dead letter is left off its replay: the router's
/// `dlq.*` and an earlier replay's `replay.*` (this replay writes its own).
pub fn is_replay_dropped_header(key: &str) -> bool {
    key.starts_with("dlq.") || key.starts_with("replay.")
}

/// Which dead letters a replay picks. Every given condition must hold;
/// each list matches any of its values.
#[derive(Debug, Default)]
pub struct Filter {
    reasons: Vec<String>,
    source_topics: Vec<String>,
    stream: Option<StreamMatch>,
}

/// The stream conditions of a [`Filter`], as given on the command line
/// (strings may be globs, as in routes).
#[derive(Debug, Default, Clone)]
pub struct StreamFilter {
    /// `env` values.
    pub env: Vec<String>,
    /// `source` values.
    pub source: Vec<String>,
    /// `title` values.
    pub title: Vec<String>,
    /// `category` values.
    pub category: Vec<String>,
    /// Versions.
    pub version: Vec<u32>,
}

impl Filter {
    /// Compiles a filter; empty lists impose nothing.
    pub fn new(
        reasons: Vec<String>,
        source_topics: Vec<String>,
        stream: &StreamFilter,
    ) -> Result<Self, RouteError> {
        fn many<T: Clone>(v: &[T]) -> Option<OneOrMany<T>> {
            (!v.is_empty()).then(|| OneOrMany::Many(v.to_vec()))
        }
        let spec = MatchSpec {
            env: many(&stream.env),
            source: many(&stream.source),
            title: many(&stream.title),
            category: many(&stream.category),
            version: many(&stream.version),
        };
        let any_stream = [&spec.env, &spec.source, &spec.title, &spec.category]
            .iter()
            .any(|f| f.is_some())
            || spec.version.is_some();
        Ok(Filter {
            reasons,
            source_topics,
            stream: any_stream
                .then(|| StreamMatch::compile(&spec, "replay filter"))
                .transpose()?,
        })
    }

    /// Whether the dead letter `info` with payload `payload` is picked. A
    /// stream condition needs a readable envelope header.
    pub fn accepts(&self, info: &DeadLetterInfo, payload: &[u8]) -> bool {
        if !self.reasons.is_empty() && !self.reasons.contains(&info.reason) {
            return false;
        }
        if !self.source_topics.is_empty()
            && !info
                .source_topic
                .as_ref()
                .is_some_and(|t| self.source_topics.contains(t))
        {
            return false;
        }
        match &self.stream {
            None => true,
            Some(m) => EnvelopeView::read(payload).is_ok_and(|v| m.matches(v.header())),
        }
    }
}

/// The stream a payload belongs to, as `env.source.title.category-vN`
/// (`-` when its header cannot be read).
pub fn stream_of(payload: &[u8]) -> String {
    match EnvelopeView::read(payload) {
        Ok(v) => TopicName(v.header()).to_string(),
        Err(_) => "-".to_owned(),
    }
}

/// Why a picked dead letter cannot be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unreplayable {
    /// Written without its payload (`dlq.payload_omitted`).
    PayloadOmitted,
    /// No `dlq.source.topic` and no `--to`.
    NoSourceTopic,
}

impl std::fmt::Display for Unreplayable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unreplayable::PayloadOmitted => "payload omitted from the dead letter",
            Unreplayable::NoSourceTopic => "no dlq.source.topic header (use --to)",
        })
    }
}

/// Where one picked dead letter goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Topic.
    pub topic: String,
    /// Partition, when it is the source's (else the partitioner's choice).
    pub partition: Option<i32>,
}

/// The destination of a dead letter: `to` if given, else its source topic;
/// its source partition whenever the destination has that partition
/// (`partitions` answers how many a topic has), so the record meets the
/// same dedup window as the first time.
pub fn destination(
    info: &DeadLetterInfo,
    to: Option<&str>,
    partitions: impl FnOnce(&str) -> Option<i32>,
) -> Result<Destination, Unreplayable> {
    if info.payload_omitted {
        return Err(Unreplayable::PayloadOmitted);
    }
    let topic = match (to, &info.source_topic) {
        (Some(to), _) => to.to_owned(),
        (None, Some(source)) => source.clone(),
        (None, None) => return Err(Unreplayable::NoSourceTopic),
    };
    let partition = info
        .source_partition
        .filter(|p| *p >= 0 && partitions(&topic).is_some_and(|n| *p < n));
    Ok(Destination { topic, partition })
}

/// Counts of one (reason, stream) row.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// Dead letters picked by the filter.
    pub matched: u64,
    /// Sent and acknowledged (in a dry run: would be sent).
    pub sent: u64,
    /// Not sent: unreplayable, or the write failed.
    pub failed: u64,
}

/// The replay's tally by (reason, stream), plus what was read and skipped.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Tally {
    /// Dead letters read in the range.
    pub read: u64,
    /// Rows by `(reason, stream)`.
    pub rows: BTreeMap<(String, String), Row>,
    /// Failures by cause.
    pub failures: BTreeMap<String, u64>,
}

impl Tally {
    /// The row of `(reason, stream)`.
    pub fn row(&mut self, reason: &str, stream: &str) -> &mut Row {
        self.rows
            .entry((reason.to_owned(), stream.to_owned()))
            .or_default()
    }

    /// Counts a failure of `(reason, stream)` with its cause.
    pub fn fail(&mut self, reason: &str, stream: &str, cause: String) {
        self.row(reason, stream).failed += 1;
        *self.failures.entry(cause).or_default() += 1;
    }

    /// Sums over all rows.
    pub fn total(&self) -> Row {
        self.rows.values().fold(Row::default(), |a, r| Row {
            matched: a.matched + r.matched,
            sent: a.sent + r.sent,
            failed: a.failed + r.failed,
        })
    }

    /// Writes the table (per reason and stream) and the totals.
    pub fn print(&self, dry_run: bool, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let sent = if dry_run { "would send" } else { "sent" };
        let width = self
            .rows
            .keys()
            .map(|(_, s)| s.len())
            .max()
            .unwrap_or(0)
            .max(6);
        writeln!(
            out,
            "{:<22} {:<width$} {:>9} {:>10} {:>8}",
            "reason", "stream", "matched", sent, "failed"
        )?;
        for ((reason, stream), r) in &self.rows {
            writeln!(
                out,
                "{reason:<22} {stream:<width$} {:>9} {:>10} {:>8}",
                r.matched, r.sent, r.failed
            )?;
        }
        let t = self.total();
        writeln!(
            out,
            "{:<22} {:<width$} {:>9} {:>10} {:>8}",
            "total", "", t.matched, t.sent, t.failed
        )?;
        writeln!(out, "{} dead letters read in the range", self.read)?;
        for (cause, n) in &self.failures {
            writeln!(out, "failed: {n} × {cause}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::HeaderBuilder;

    fn envelope(title: &str) -> Vec<u8> {
        let h = HeaderBuilder::new()
            .env("prod")
            .source("glutton")
            .title(title)
            .category("match")
            .version(2)
            .schema_id(7)
            .build()
            .unwrap();
        let mut out = Vec::new();
        h.encode_envelope(b"payload", &mut out);
        out
    }

    fn info(reason: &str, topic: &str) -> DeadLetterInfo {
        DeadLetterInfo {
            reason: reason.into(),
            source_topic: Some(topic.into()),
            source_partition: Some(3),
            source_offset: Some(10),
            payload_omitted: false,
        }
    }

    #[test]
    fn dlq_headers_are_read() {
        let h: Vec<(&str, &[u8])> = vec![
            ("trace", b"x"),
            ("dlq.reason", b"unknown_schema"),
            ("dlq.source.topic", b"raw"),
            ("dlq.source.partition", b"3"),
            ("dlq.source.offset", b"42"),
        ];
        assert_eq!(
            DeadLetterInfo::from_headers(h),
            DeadLetterInfo {
                reason: "unknown_schema".into(),
                source_topic: Some("raw".into()),
                source_partition: Some(3),
                source_offset: Some(42),
                payload_omitted: false,
            }
        );
    }

    #[test]
    fn filters_by_reason_source_topic_and_stream_globs() {
        let stream = StreamFilter {
            title: vec!["12*".into()],
            version: vec![2],
            ..Default::default()
        };
        let f = Filter::new(vec!["unknown_schema".into()], vec!["raw".into()], &stream).unwrap();
        assert!(f.accepts(&info("unknown_schema", "raw"), &envelope("1234")));
        assert!(!f.accepts(&info("unknown_schema", "raw"), &envelope("999")));
        assert!(!f.accepts(&info("malformed", "raw"), &envelope("1234")));
        assert!(!f.accepts(&info("unknown_schema", "other"), &envelope("1234")));
        assert!(
            !f.accepts(&info("unknown_schema", "raw"), b"not an envelope"),
            "a stream condition needs a readable header"
        );
        let all = Filter::new(vec![], vec![], &StreamFilter::default()).unwrap();
        assert!(all.accepts(&DeadLetterInfo::default(), b"not an envelope"));
        let bad = StreamFilter {
            env: vec!["[".into()],
            ..Default::default()
        };
        assert!(Filter::new(vec![], vec![], &bad).is_err());
    }

    #[test]
    fn destinations_keep_the_source_partition_when_it_exists() {
        let i = info("unknown_schema", "raw");
        let eight = |_: &str| Some(8);
        assert_eq!(
            destination(&i, None, eight),
            Ok(Destination {
                topic: "raw".into(),
                partition: Some(3)
            })
        );
        assert_eq!(
            destination(&i, Some("retry"), |_| Some(2)),
            Ok(Destination {
                topic: "retry".into(),
                partition: None
            }),
            "a topic without partition 3: the partitioner picks"
        );
        let omitted = DeadLetterInfo {
            payload_omitted: true,
            ..i.clone()
        };
        assert_eq!(
            destination(&omitted, None, eight),
            Err(Unreplayable::PayloadOmitted)
        );
        assert_eq!(
            destination(&DeadLetterInfo::default(), None, eight),
            Err(Unreplayable::NoSourceTopic)
        );
    }

    #[test]
    fn the_table_has_a_row_per_reason_and_stream() {
        let mut t = Tally {
            read: 5,
            ..Default::default()
        };
        t.row("unknown_schema", "prod.glutton.1.match-v1").matched += 2;
        t.row("unknown_schema", "prod.glutton.1.match-v1").sent += 2;
        t.row("malformed", "-").matched += 1;
        t.fail("malformed", "-", "payload omitted".into());
        let mut out = Vec::new();
        t.print(true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("would send"), "{text}");
        assert!(text
            .lines()
            .any(|l| l.starts_with("malformed") && l.ends_with(" 1")));
        assert!(text
            .lines()
            .any(|l| l.starts_with("total") && l.contains(" 3 ")));
        assert!(text.contains("failed: 1 × payload omitted"));
    }
}
