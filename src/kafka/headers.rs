//! Kafka headers the router adds: `dlq.*` on dead letters, `envelope.*`
//! mirrors on published records.

use crate::pipeline::Reason;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};

/// The input record's headers plus `dlq.*` headers saying why and whence.
pub fn dead_letter_headers(m: &BorrowedMessage<'_>, reason: Reason, detail: &str) -> OwnedHeaders {
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    let h = m.headers().map(|h| h.detach()).unwrap_or_default();
    h.insert(Header {
        key: "dlq.reason",
        value: Some(reason.code()),
    })
    .insert(Header {
        key: "dlq.detail",
        value: Some(detail),
    })
    .insert(Header {
        key: "dlq.source.topic",
        value: Some(m.topic()),
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
