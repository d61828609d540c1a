//! A presence-tracking mirror of `envelope.proto` for differential tests.
//!
//! prost maps proto2 `required` fields to plain values, so a full decode
//! cannot tell a missing field from a default one. This mirror declares the
//! same field numbers and types as `optional`, so decoding it with prost gives
//! the reference answer the header reader must agree with: same success or
//! failure, same values, and "missing" exactly where a required field is absent.

use bytes::Bytes;
use std::collections::BTreeMap;

/// `Envelope` with every field optional.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// Field 1.
    #[prost(message, optional, tag = "1")]
    pub header: Option<Header>,
    /// Field 2.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub payload: Option<Bytes>,
}

/// `Header` with every field optional.
#[derive(Clone, PartialEq, prost::Message)]
#[allow(missing_docs)]
pub struct Header {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub message_id: Option<Bytes>,
    #[prost(string, optional, tag = "2")]
    pub env: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub source: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub title: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub category: Option<String>,
    #[prost(uint32, optional, tag = "6")]
    pub version: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub schema_id: Option<u32>,
    #[prost(int64, optional, tag = "8")]
    pub event_time_ms: Option<i64>,
    #[prost(string, optional, tag = "9")]
    pub producer: Option<String>,
    #[prost(string, optional, tag = "10")]
    pub content_type: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub attributes: BTreeMap<String, String>,
}

/// What a record means according to prost: `Ok(None)` when it decodes but a
/// required field is absent.
pub fn decode(record: &[u8]) -> Result<Option<(Header, Option<Bytes>)>, prost::DecodeError> {
    use prost::Message;
    let env = Envelope::decode(record)?;
    let Some(h) = env.header else { return Ok(None) };
    let complete = h.message_id.is_some()
        && h.env.is_some()
        && h.source.is_some()
        && h.title.is_some()
        && h.category.is_some()
        && h.version.is_some()
        && h.schema_id.is_some();
    Ok(complete.then_some((h, env.payload)))
}

/// Checks that `view_result` (the header reader's answer on `record`) agrees
/// with prost; returns a description of the first disagreement.
pub fn compare(record: &[u8]) -> Result<(), String> {
    let view = super::EnvelopeView::read(record);
    let reference = decode(record);
    match (&view, reference) {
        (Err(_), Err(_)) => Ok(()),
        (Err(super::ReadError::MissingField { .. }), Ok(None)) => Ok(()),
        (Ok(v), Ok(Some((h, payload)))) => {
            let vh = v.header();
            let same = Some(vh.message_id) == h.message_id.as_deref()
                && Some(vh.env) == h.env.as_deref()
                && Some(vh.source) == h.source.as_deref()
                && Some(vh.title) == h.title.as_deref()
                && Some(vh.category) == h.category.as_deref()
                && Some(vh.version) == h.version
                && Some(vh.schema_id) == h.schema_id
                && vh.event_time_ms == h.event_time_ms
                && vh.producer == h.producer.as_deref()
                && vh.content_type == h.content_type.as_deref()
                && v.payload() == payload.as_deref();
            let attrs: BTreeMap<String, String> = vh
                .attributes
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            if same && attrs == h.attributes {
                Ok(())
            } else {
                Err(format!(
                    "values differ: view {v:?}, prost {h:?} payload {payload:?}"
                ))
            }
        }
        (view, reference) => Err(format!(
            "verdicts differ: view {view:?}, prost {reference:?}"
        )),
    }
}
