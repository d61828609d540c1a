//! Kafka headers the router adds: `dlq.*` on dead letters, `envelope.*`
//! mirrors on published records.

use crate::pipeline::Reason;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};

/// Where a dead letter's record can be found in the input.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Input topic.
    pub topic: &'a str,
    /// Input partition.
    pub partition: i32,
    /// Input offset.
    pub offset: i64,
}

/// The input record's headers plus `dlq.*` headers saying why and whence.
pub fn dead_letter_headers(m: &BorrowedMessage<'_>, reason: Reason, detail: &str) -> OwnedHeaders {
    let source = Source {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
    };
    with_dlq_headers(
        m.headers().map(|h| h.detach()).unwrap_or_default(),
        reason,
        detail,
        source,
    )
}

/// `headers` plus `dlq.reason`, `dlq.detail` and `dlq.source.*`.
pub fn with_dlq_headers(
    headers: OwnedHeaders,
    reason: Reason,
    detail: &str,
    source: Source<'_>,
) -> OwnedHeaders {
    let partition = source.partition.to_string();
    let offset = source.offset.to_string();
    headers
        .insert(Header {
            key: "dlq.reason",
            value: Some(reason.code()),
        })
        .insert(Header {
            key: "dlq.detail",
            value: Some(detail),
        })
        .insert(Header {
            key: "dlq.source.topic",
            value: Some(source.topic),
        })
        .insert(Header {
            key: "dlq.source.partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "dlq.source.offset",
            value: Some(&offset),
        })
}

/// The headers of a dead letter written without its payload: only its
/// `dlq.*` headers (the input's own headers may be what made it too large),
/// plus `dlq.payload_omitted` (the payload's size in bytes) and
/// `dlq.omitted_because`.
pub fn without_payload_headers(
    dead_letter: Option<&OwnedHeaders>,
    payload_len: usize,
    why: &str,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = dead_letter {
        for h in h.iter().filter(|h| h.key.starts_with("dlq.")) {
            out = out.insert(h);
        }
    }
    out.insert(Header {
        key: PAYLOAD_OMITTED,
        value: Some(&payload_len.to_string()),
    })
    .insert(Header {
        key: "dlq.omitted_because",
        value: Some(why),
    })
}

/// Header of a dead letter written without its payload (the original size).
pub const PAYLOAD_OMITTED: &str = "dlq.payload_omitted";

/// Whether `headers` mark a dead letter written without its payload.
pub fn is_payload_omitted(headers: Option<&OwnedHeaders>) -> bool {
    headers.is_some_and(|h| h.iter().any(|h| h.key == PAYLOAD_OMITTED))
}

/// `headers` without the `envelope.*` mirrors the router added (a rejected
/// output's dead letter carries the input's headers, as other dead letters do).
pub fn without_mirrors(headers: OwnedHeaders) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.count());
    for h in headers.iter().filter(|h| !h.key.starts_with("envelope.")) {
        out = out.insert(h);
    }
    out
}

/// The input record's headers plus `envelope.*` headers mirroring the
/// envelope, so downstream consumers can filter without protobuf.
pub fn mirror_headers(
    m: &BorrowedMessage<'_>,
    h: &crate::envelope::HeaderView<'_>,
) -> OwnedHeaders {
    let version = h.version.to_string();
    let schema_id = h.schema_id.to_string();
    let headers = m.headers().map(|h| h.detach()).unwrap_or_default();
    let headers = headers
        .insert(Header {
            key: "envelope.message_id",
            value: Some(h.message_id),
        })
        .insert(Header {
            key: "envelope.env",
            value: Some(h.env),
        })
        .insert(Header {
            key: "envelope.source",
            value: Some(h.source),
        })
        .insert(Header {
            key: "envelope.title",
            value: Some(h.title),
        })
        .insert(Header {
            key: "envelope.category",
            value: Some(h.category),
        })
        .insert(Header {
            key: "envelope.version",
            value: Some(&version),
        })
        .insert(Header {
            key: "envelope.schema_id",
            value: Some(&schema_id),
        });
    match h.content_type {
        Some(ct) => headers.insert(Header {
            key: "envelope.content_type",
            value: Some(ct),
        }),
        None => headers,
    }
}
