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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::HeaderBuilder;

    #[test]
    fn prints_headers_errors_and_delimited_streams() {
        let h = HeaderBuilder::new()
            .env("prod")
            .source("glutton")
            .title("1234")
            .category("match")
            .version(2)
            .schema_id(7)
            .message_id(vec![0xab, 0xcd])
            .attribute("region", "eu")
            .build()
            .unwrap();
        let good = h.to_envelope_bytes(b"payload");
        let mut stream = Vec::new();
        for r in [&good[..], &[0x0a, 0x7f][..]] {
            prost::encoding::encode_varint(r.len() as u64, &mut stream);
            stream.extend_from_slice(r);
        }
        let path = std::env::temp_dir().join(format!("inspect-test-{}.bin", std::process::id()));
        std::fs::write(&path, &stream).unwrap();
        let mut out = Vec::new();
        assert_eq!(file(&path, true, &mut out).unwrap(), 2);
        let _ = std::fs::remove_file(&path);
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["message_id"], "abcd");
        assert_eq!(lines[0]["category"], "match");
        assert_eq!(lines[0]["attributes"]["region"], "eu");
        assert_eq!(lines[0]["payload_bytes"], 7);
        assert_eq!(lines[1]["error"], "malformed");
        assert!(lines[1]["detail"].as_str().unwrap().contains("truncated"));

        let invalid = crate::envelope::proto::Envelope {
            header: crate::envelope::proto::Header {
                message_id: vec![1].into(),
                env: "a.b".into(),
                source: "s".into(),
                title: "t".into(),
                category: "c".into(),
                version: 1,
                schema_id: 1,
                ..Default::default()
            },
            payload: None,
        };
        use prost::Message as _;
        let v = describe(&invalid.encode_to_vec());
        assert_eq!(v["error"], "invalid_header");
    }
}
