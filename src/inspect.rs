//! `inspect`: print envelope headers as JSON lines, from a topic or a file,
//! like kcat with a decoder. Rejected records print their error instead.

use crate::envelope::{validate, EnvelopeView};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

/// One record as a JSON object: the header fields, or the read/validation
/// error, plus its size.
pub fn describe(record: &[u8]) -> Value {
    match EnvelopeView::read(record) {
        Err(e) => json!({ "error": "malformed", "detail": e.to_string(), "bytes": record.len() }),
        Ok(view) => {
            let h = view.header();
            let mut v = json!({
                "message_id": hex(h.message_id),
                "env": h.env,
                "source": h.source,
                "title": h.title,
                "category": h.category,
                "version": h.version,
                "schema_id": h.schema_id,
                "event_time_ms": h.event_time_ms,
                "producer": h.producer,
                "content_type": h.content_type,
                "attributes": h.attributes.iter().collect::<std::collections::BTreeMap<_, _>>(),
                "payload_bytes": view.payload().map_or(0, <[u8]>::len),
                "bytes": record.len(),
            });
            if let Err(e) = validate(h) {
                v["error"] = json!("invalid_header");
                v["detail"] = json!(e.to_string());
            }
            v
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints every envelope of a file: one whole envelope, or a stream of
/// varint-length-prefixed envelopes (protobuf's "delimited" framing).
pub fn file(
    path: &std::path::Path,
    delimited: bool,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let bytes = std::fs::read(path)?;
    if !delimited {
        writeln!(out, "{}", describe(&bytes))?;
        return Ok(1);
    }
    let mut rest = &bytes[..];
    let mut n = 0;
    while !rest.is_empty() {
        let len = prost::encoding::decode_varint(&mut rest)
            .map_err(|e| anyhow::anyhow!("bad length prefix after {n} records: {e}"))?
            as usize;
        anyhow::ensure!(
            len <= rest.len(),
            "record {n} announces {len} bytes, {} left",
            rest.len()
        );
        writeln!(out, "{}", describe(&rest[..len]))?;
        rest = &rest[len..];
        n += 1;
    }
    Ok(n)
}

/// Reads a topic (every partition) from the beginning or end, without a
/// consumer group commit, and prints up to `count` records (all available
/// when `None`), stopping after `idle` without new records.
pub fn topic(
    properties: &[(String, String)],
    topic: &str,
    from_beginning: bool,
    count: Option<usize>,
    idle: Duration,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let mut cfg = ClientConfig::new();
    cfg.set("group.id", "envelope-router-inspect")
        .set("enable.auto.commit", "false");
    for (k, v) in properties {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer = cfg.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| anyhow::anyhow!("topic {topic:?} not found"))?;
    let mut tpl = TopicPartitionList::new();
    let start = if from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), start)?;
    }
    consumer.assign(&tpl)?;
    let mut n = 0;
    let mut last = Instant::now();
    while count.is_none_or(|c| n < c) && last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let mut v = describe(m.payload().unwrap_or_default());
                v["topic"] = json!(m.topic());
                v["partition"] = json!(m.partition());
                v["offset"] = json!(m.offset());
                writeln!(out, "{v}")?;
                n += 1;
                last = Instant::now();
            }
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok(n)
}
