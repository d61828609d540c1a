//! The producer side: build a validated header, then encode envelopes into a
//! caller-provided buffer. The payload is copied exactly once, into the output.

use super::proto::Header;
use super::validate::{validate, ValidationError};
use super::wire::{put_varint, varint_len};
use super::HeaderFields;
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Default `producer` field: this library and its version.
pub const DEFAULT_PRODUCER: &str = concat!("envelope-router-rs/", env!("CARGO_PKG_VERSION"));

const HEADER_KEY: u8 = 0x0a; // field 1, length-delimited
const PAYLOAD_KEY: u8 = 0x12; // field 2, length-delimited

/// Why a header could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A required field was never set on the builder.
    #[error("required header field `{0}` was not set")]
    Missing(&'static str),
    /// The fields break an envelope rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// Builds a [`ValidHeader`]. `env`, `source`, `title`, `category`, `version`
/// and `schema_id` are required; `message_id` defaults to a fresh UUIDv7 and
/// `event_time_ms` to now. The builder is `Clone`, so a producer can keep one
/// per stream and call [`HeaderBuilder::build`] per message.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct HeaderBuilder {
    message_id: Option<Bytes>,
    env: Option<String>,
    source: Option<String>,
    title: Option<String>,
    category: Option<String>,
    version: Option<u32>,
    schema_id: Option<u32>,
    event_time_ms: Option<i64>,
    producer: Option<Option<String>>,
    content_type: Option<String>,
    attributes: BTreeMap<String, String>,
}

macro_rules! string_setter {
    ($(#[$doc:meta] $name:ident),*) => {$(
        #[$doc]
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.$name = Some(value.into());
            self
        }
    )*};
}

impl HeaderBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    string_setter!(
        /// Environment, e.g. `prod` (required).
        env,
        /// Producing system, e.g. `glutton` (required).
        source,
        /// Game title id, e.g. `1234` (required).
        title,
        /// Category, e.g. `telemetry_match_event` (required).
        category,
        /// Payload format, e.g. `application/x-protobuf`.
        content_type
    );

    /// Category version, rendered `v<version>` in topic names (required).
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Registry id of the payload's schema, at least 1 (required).
    pub fn schema_id(mut self, id: u32) -> Self {
        self.schema_id = Some(id);
        self
    }

    /// An explicit message id (1..=64 bytes), e.g. to make a retry of the same
    /// business event a duplicate the router drops. Defaults to a UUIDv7.
    pub fn message_id(mut self, id: impl Into<Bytes>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Event time in unix milliseconds. Defaults to the time of `build()`.
    pub fn event_time_ms(mut self, ms: i64) -> Self {
        self.event_time_ms = Some(ms);
        self
    }

    /// The `producer` field; defaults to [`DEFAULT_PRODUCER`], `None` leaves it out.
    pub fn producer(mut self, producer: Option<String>) -> Self {
        self.producer = Some(producer);
        self
    }

    /// Adds a free-form attribute, carried untouched.
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Checks the required fields and the envelope rules. Each call draws a
    /// fresh id and event time unless they were set explicitly.
    pub fn build(&self) -> Result<ValidHeader, BuildError> {
        fn req<T: Clone>(v: &Option<T>, name: &'static str) -> Result<T, BuildError> {
            v.clone().ok_or(BuildError::Missing(name))
        }
        let header = Header {
            message_id: match &self.message_id {
                Some(id) => id.clone(),
                None => Bytes::copy_from_slice(uuid::Uuid::now_v7().as_bytes()),
            },
            env: req(&self.env, "env")?,
            source: req(&self.source, "source")?,
            title: req(&self.title, "title")?,
            category: req(&self.category, "category")?,
            version: req(&self.version, "version")?,
            schema_id: req(&self.schema_id, "schema_id")?,
            event_time_ms: Some(self.event_time_ms.unwrap_or_else(now_ms)),
            producer: match &self.producer {
                Some(p) => p.clone(),
                None => Some(DEFAULT_PRODUCER.to_owned()),
            },
            content_type: self.content_type.clone(),
            attributes: self.attributes.clone(),
        };
        ValidHeader::new(header)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A header that passed [`validate`]; only these can be encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidHeader {
    header: Header,
    header_len: usize,
}

impl ValidHeader {
    /// Validates a header built by other means (e.g. decoded elsewhere).
    pub fn new(header: Header) -> Result<Self, BuildError> {
        validate(&header)?;
        let header_len = header.encoded_len();
        Ok(ValidHeader { header, header_len })
    }

    /// The header's fields.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Gives the header back.
    pub fn into_inner(self) -> Header {
        self.header
    }

    /// Encoded size of an envelope carrying `payload_len` payload bytes.
    pub fn envelope_len(&self, payload_len: usize) -> usize {
        1 + varint_len(self.header_len as u64)
            + self.header_len
            + 1
            + varint_len(payload_len as u64)
            + payload_len
    }

    /// Appends the envelope (`header`, then `payload`) to `out`. The payload
    /// is copied once, into `out`; `Vec<u8>` and `BytesMut` grow as needed.
    ///
    /// ```
    /// use envelope_router::envelope::{HeaderBuilder, HeaderFields};
    /// let header = HeaderBuilder::new()
    ///     .env("prod").source("glutton").title("1234")
    ///     .category("telemetry_match_event").version(1).schema_id(7)
    ///     .content_type("application/json")
    ///     .build()?;
    /// let mut out = Vec::with_capacity(header.envelope_len(13));
    /// header.encode_envelope(br#"{"score":42}"#, &mut out);
    /// assert_eq!(header.topic_name(), "prod.glutton.1234.telemetry_match_event-v1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_envelope(&self, payload: &[u8], out: &mut impl BufMut) {
        out.put_u8(HEADER_KEY);
        put_varint(self.header_len as u64, out);
        self.header.encode_raw(out);
        out.put_u8(PAYLOAD_KEY);
        put_varint(payload.len() as u64, out);
        out.put_slice(payload);
    }

    /// Encodes into a fresh, exactly sized buffer.
    pub fn to_envelope_bytes(&self, payload: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(self.envelope_len(payload.len()));
        self.encode_envelope(payload, &mut out);
        out.freeze()
    }
}

/// Encodes a batch of envelopes into one contiguous allocation and returns
/// one cheap [`Bytes`] handle per envelope (they share the buffer).
///
/// ```
/// use envelope_router::envelope::{encode_batch, EnvelopeView, HeaderBuilder};
/// let stream = HeaderBuilder::new()
///     .env("prod").source("glutton").title("1234")
///     .category("telemetry_match_event").version(1).schema_id(7);
/// let batch = [(stream.build()?, &b"a"[..]), (stream.build()?, &b"bb"[..])];
/// let records = encode_batch(&batch);
/// assert_eq!(records.len(), 2);
/// assert_eq!(EnvelopeView::read(&records[1])?.payload(), Some(&b"bb"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_batch<P: AsRef<[u8]>>(batch: &[(ValidHeader, P)]) -> Vec<Bytes> {
    let total = batch
        .iter()
        .map(|(h, p)| h.envelope_len(p.as_ref().len()))
        .sum();
    let mut buf = BytesMut::with_capacity(total);
    batch
        .iter()
        .map(|(h, p)| {
            h.encode_envelope(p.as_ref(), &mut buf);
            buf.split().freeze()
        })
        .collect()
}

impl HeaderFields for ValidHeader {
    fn message_id(&self) -> &[u8] {
        self.header.message_id()
    }
    fn env(&self) -> &str {
        self.header.env()
    }
    fn source(&self) -> &str {
        self.header.source()
    }
    fn title(&self) -> &str {
        self.header.title()
    }
    fn category(&self) -> &str {
        self.header.category()
    }
    fn version(&self) -> u32 {
        self.header.version()
    }
    fn schema_id(&self) -> u32 {
        self.header.schema_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::proto::Envelope;

    fn stream() -> HeaderBuilder {
        HeaderBuilder::new()
            .env("prod")
            .source("glutton")
            .title("1234")
            .category("telemetry_match_event")
            .version(1)
            .schema_id(7)
    }

    #[test]
    fn missing_required_fields_are_named() {
        let b = HeaderBuilder::new()
            .env("prod")
            .source("s")
            .title("t")
            .version(1);
        assert_eq!(b.build(), Err(BuildError::Missing("category")));
        assert_eq!(
            b.category("c").build(),
            Err(BuildError::Missing("schema_id"))
        );
    }

    #[test]
    fn invalid_fields_fail_before_encoding() {
        assert_eq!(
            stream().schema_id(0).build(),
            Err(BuildError::Invalid(ValidationError::ZeroSchemaId))
        );
        let err = stream().env("pr.od").build().unwrap_err();
        assert!(err.to_string().contains("env has '.'"), "{err}");
    }

    #[test]
    fn defaults_are_a_uuid_v7_and_now() {
        let before = now_ms();
        let h = stream().build().unwrap();
        let id = uuid::Uuid::from_slice(h.message_id()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert!(h.header().event_time_ms.unwrap() >= before);
        assert_eq!(h.header().producer.as_deref(), Some(DEFAULT_PRODUCER));
        assert_ne!(stream().build().unwrap().message_id(), h.message_id());
    }

    #[test]
    fn encoding_matches_prost_and_exact_length() {
        let h = stream()
            .attribute("region", "eu")
            .content_type("application/json")
            .build()
            .unwrap();
        let payload = vec![0xab; 1000];
        let mut out = Vec::new();
        h.encode_envelope(&payload, &mut out);
        assert_eq!(out.len(), h.envelope_len(payload.len()));
        let reference = Envelope {
            header: h.header().clone(),
            payload: Some(payload.clone().into()),
        };
        assert_eq!(out, reference.encode_to_vec());
        assert_eq!(h.to_envelope_bytes(&payload), out);
    }

    #[test]
    fn batch_shares_one_buffer() {
        let batch: Vec<_> = (0..3)
            .map(|i| (stream().build().unwrap(), vec![i as u8; i * 10]))
            .collect();
        let records = encode_batch(&batch);
        for ((h, p), r) in batch.iter().zip(&records) {
            assert_eq!(r, &h.to_envelope_bytes(p));
        }
    }
}
