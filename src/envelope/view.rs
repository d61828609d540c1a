//! The header-only reader the router uses: a borrowed view over a record's
//! bytes that exposes the header fields as slices into the input and the
//! payload as a slice, with no heap allocation. The payload is skipped by its
//! length prefix, never walked.
//!
//! It accepts exactly the inputs a full `prost` decode accepts (any field
//! order, unknown fields, repeated and merged fields, non-minimal varints) and
//! yields the same values; on top of that it reports missing required fields,
//! which prost does not track. `tests/reader_matches_prost.rs` and
//! `fuzz/fuzz_targets/reader_vs_prost.rs` check that agreement.

use super::wire::{Cursor, WireType, RECURSION_LIMIT};
use std::fmt;

/// Why a record could not be read as an envelope. Offsets are byte positions
/// in the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A varint ran past the end of its message or past 10 bytes / 64 bits.
    #[error("invalid varint at byte {offset}: truncated or longer than 64 bits")]
    InvalidVarint {
        /// Where the varint starts.
        offset: usize,
    },
    /// A field key was zero or above 32 bits.
    #[error("invalid field key at byte {offset}: field number must be 1..=536870911")]
    InvalidKey {
        /// Where the key starts.
        offset: usize,
    },
    /// A field key named wire type 6 or 7.
    #[error("invalid wire type {value} at byte {offset}: expected 0..=5")]
    InvalidWireType {
        /// Where the key starts.
        offset: usize,
        /// The wire type found.
        value: u8,
    },
    /// A known field arrived with another wire type than its declaration.
    #[error("field `{field}` has wire type {found:?}, expected {expected:?}")]
    WrongWireType {
        /// The field's name in `envelope.proto`.
        field: &'static str,
        /// What the schema declares.
        expected: WireType,
        /// What the record carries.
        found: WireType,
    },
    /// A length or fixed-size value runs past the end of its message.
    #[error("truncated at byte {offset}: {needed} bytes announced, {available} left")]
    Truncated {
        /// Where the length prefix (or value) starts.
        offset: usize,
        /// Bytes the field claims.
        needed: u64,
        /// Bytes left in the enclosing message.
        available: usize,
    },
    /// An end-group marker without a matching start.
    #[error("unexpected end-group marker at byte {offset}")]
    UnexpectedEndGroup {
        /// Where the marker is.
        offset: usize,
    },
    /// Nested groups or messages deeper than protobuf's limit of 100.
    #[error("nesting deeper than {RECURSION_LIMIT} levels at byte {offset}")]
    RecursionLimit {
        /// Where the limit was hit.
        offset: usize,
    },
    /// A `string` field that is not UTF-8.
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// The field's name in `envelope.proto`.
        field: &'static str,
    },
    /// A `required` field never appeared.
    #[error("required field `{field}` is missing")]
    MissingField {
        /// The field's name in `envelope.proto` (`header` or `header.<name>`).
        field: &'static str,
    },
}

/// A borrowed, zero-copy view of an envelope record.
#[derive(Clone, Copy, Debug)]
pub struct EnvelopeView<'a> {
    header: HeaderView<'a>,
    payload: Option<&'a [u8]>,
}

/// The envelope header, with every field borrowed from the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderView<'a> {
    /// Unique message id (1..=64 bytes once validated).
    pub message_id: &'a [u8],
    /// Environment, e.g. `prod`.
    pub env: &'a str,
    /// Producing system, e.g. `glutton`.
    pub source: &'a str,
    /// Game title id, e.g. `1234`.
    pub title: &'a str,
    /// Category, e.g. `telemetry_match_event`.
    pub category: &'a str,
    /// Category version.
    pub version: u32,
    /// Schema registry id of the payload's schema.
    pub schema_id: u32,
    /// Event time, unix milliseconds.
    pub event_time_ms: Option<i64>,
    /// Producing library or client.
    pub producer: Option<&'a str>,
    /// Payload format.
    pub content_type: Option<&'a str>,
    /// Free-form attributes.
    pub attributes: Attributes<'a>,
}

/// The header's `attributes` map, read lazily from the record.
///
/// Iteration yields entries in wire order; a key that appears more than once
/// takes its last value (protobuf map semantics), which [`Attributes::get`]
/// honours.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Attributes<'a> {
    record: &'a [u8],
    entries: u32,
}

impl<'a> EnvelopeView<'a> {
    /// Reads the header of an encoded `Envelope`, validating the protobuf
    /// structure of everything except the payload's contents.
    ///
    /// ```
    /// use envelope_router::envelope::{EnvelopeView, HeaderBuilder};
    /// let header = HeaderBuilder::new()
    ///     .env("prod").source("glutton").title("1234")
    ///     .category("telemetry_match_event").version(1).schema_id(7)
    ///     .build()?;
    /// let mut record = Vec::new();
    /// header.encode_envelope(b"opaque", &mut record);
    ///
    /// let view = EnvelopeView::read(&record)?;
    /// assert_eq!(view.header().category, "telemetry_match_event");
    /// assert_eq!(view.payload(), Some(&b"opaque"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(record: &'a [u8]) -> Result<Self, ReadError> {
        let mut c = Cursor::new(record);
        let mut h = PartialHeader::default();
        let mut has_header = false;
        let mut payload = None;
        while c.has_remaining() {
            let (tag, wt) = c.key()?;
            match tag {
                1 => {
                    expect(wt, WireType::LengthDelimited, "header")?;
                    let mut sub = c.sub_message()?;
                    read_header(&mut sub, &mut h, RECURSION_LIMIT - 1)?;
                    has_header = true;
                }
                2 => {
                    expect(wt, WireType::LengthDelimited, "payload")?;
                    payload = Some(c.length_delimited()?);
                }
                _ => c.skip_field(wt, tag, RECURSION_LIMIT)?,
            }
        }
        if !has_header {
            return Err(ReadError::MissingField { field: "header" });
        }
        Ok(EnvelopeView {
            header: h.finish(record)?,
            payload,
        })
    }

    /// The header fields.
    #[inline]
    pub fn header(&self) -> &HeaderView<'a> {
        &self.header
    }

    /// The opaque payload, if the record carries one.
    #[inline]
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.payload
    }
}

#[inline]
fn expect(found: WireType, expected: WireType, field: &'static str) -> Result<(), ReadError> {
    if found == expected {
        Ok(())
    } else {
        Err(ReadError::WrongWireType {
            field,
            expected,
            found,
        })
    }
}

#[inline]
fn utf8<'a>(bytes: &'a [u8], field: &'static str) -> Result<&'a str, ReadError> {
    std::str::from_utf8(bytes).map_err(|_| ReadError::InvalidUtf8 { field })
}

#[inline]
fn string<'a>(c: &mut Cursor<'a>, wt: WireType, field: &'static str) -> Result<&'a str, ReadError> {
    expect(wt, WireType::LengthDelimited, field)?;
    utf8(c.length_delimited()?, field)
}

#[inline]
fn varint(c: &mut Cursor<'_>, wt: WireType, field: &'static str) -> Result<u64, ReadError> {
    expect(wt, WireType::Varint, field)?;
    c.varint()
}

/// Header fields seen so far; a header may arrive in several chunks that
/// protobuf merges (last scalar wins, map entries accumulate).
#[derive(Default)]
struct PartialHeader<'a> {
    message_id: Option<&'a [u8]>,
    env: Option<&'a str>,
    source: Option<&'a str>,
    title: Option<&'a str>,
    category: Option<&'a str>,
    version: Option<u32>,
    schema_id: Option<u32>,
    event_time_ms: Option<i64>,
    producer: Option<&'a str>,
    content_type: Option<&'a str>,
    attribute_entries: u32,
}

impl<'a> PartialHeader<'a> {
    fn finish(self, record: &'a [u8]) -> Result<HeaderView<'a>, ReadError> {
        fn req<T>(v: Option<T>, field: &'static str) -> Result<T, ReadError> {
            v.ok_or(ReadError::MissingField { field })
        }
        Ok(HeaderView {
            message_id: req(self.message_id, "header.message_id")?,
            env: req(self.env, "header.env")?,
            source: req(self.source, "header.source")?,
            title: req(self.title, "header.title")?,
            category: req(self.category, "header.category")?,
            version: req(self.version, "header.version")?,
            schema_id: req(self.schema_id, "header.schema_id")?,
            event_time_ms: self.event_time_ms,
            producer: self.producer,
            content_type: self.content_type,
            attributes: Attributes {
                record,
                entries: self.attribute_entries,
            },
        })
    }
}

/// Reads one header chunk. `depth` is the nesting budget left inside it.
fn read_header<'a>(
    c: &mut Cursor<'a>,
    h: &mut PartialHeader<'a>,
    depth: u32,
) -> Result<(), ReadError> {
    while c.has_remaining() {
        let (tag, wt) = c.key()?;
        match tag {
            1 => {
                expect(wt, WireType::LengthDelimited, "header.message_id")?;
                h.message_id = Some(c.length_delimited()?);
            }
            2 => h.env = Some(string(c, wt, "header.env")?),
            3 => h.source = Some(string(c, wt, "header.source")?),
            4 => h.title = Some(string(c, wt, "header.title")?),
            5 => h.category = Some(string(c, wt, "header.category")?),
            6 => h.version = Some(varint(c, wt, "header.version")? as u32),
            7 => h.schema_id = Some(varint(c, wt, "header.schema_id")? as u32),
            8 => h.event_time_ms = Some(varint(c, wt, "header.event_time_ms")? as i64),
            9 => h.producer = Some(string(c, wt, "header.producer")?),
            10 => h.content_type = Some(string(c, wt, "header.content_type")?),
            11 => {
                // prost reads a map field as length-delimited whatever wire
                // type its key claims; do the same so the two always agree.
                if depth == 0 {
                    return Err(ReadError::RecursionLimit { offset: c.pos() });
                }
                let mut entry = c.sub_message()?;
                read_attribute(&mut entry, depth - 1)?;
                h.attribute_entries = h.attribute_entries.saturating_add(1);
            }
            _ => c.skip_field(wt, tag, depth)?,
        }
    }
    Ok(())
}

/// Reads one map entry; a missing key or value defaults to "".
fn read_attribute<'a>(c: &mut Cursor<'a>, depth: u32) -> Result<(&'a str, &'a str), ReadError> {
    let (mut key, mut value) = ("", "");
    while c.has_remaining() {
        let (tag, wt) = c.key()?;
        match tag {
            1 => key = string(c, wt, "header.attributes.key")?,
            2 => value = string(c, wt, "header.attributes.value")?,
            _ => c.skip_field(wt, tag, depth)?,
        }
    }
    Ok((key, value))
}

impl<'a> Attributes<'a> {
    /// Number of map entries on the wire (a repeated key counts each time).
    pub fn wire_entries(&self) -> usize {
        self.entries as usize
    }

    /// True when the header carries no attributes.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Entries in wire order; later entries override earlier ones with the
    /// same key.
    pub fn iter(&self) -> AttributesIter<'a> {
        AttributesIter {
            outer: Cursor::new(if self.entries == 0 { &[] } else { self.record }),
            header: None,
        }
    }

    /// The value for `key`, honouring last-wins.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().filter(|(k, _)| *k == key).last().map(|(_, v)| v)
    }
}

impl fmt::Debug for Attributes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Attributes<'a> {
    type Item = (&'a str, &'a str);
    type IntoIter = AttributesIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`Attributes`]. It re-walks the already validated record,
/// so it cannot fail.
pub struct AttributesIter<'a> {
    outer: Cursor<'a>,
    header: Option<Cursor<'a>>,
}

impl<'a> Iterator for AttributesIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(h) = self.header.as_mut() {
                while h.has_remaining() {
                    let (tag, wt) = h.key().ok()?;
                    if tag == 11 {
                        let mut entry = h.sub_message().ok()?;
                        return read_attribute(&mut entry, RECURSION_LIMIT).ok();
                    }
                    h.skip_field(wt, tag, RECURSION_LIMIT).ok()?;
                }
                self.header = None;
            }
            if !self.outer.has_remaining() {
                return None;
            }
            let (tag, wt) = self.outer.key().ok()?;
            if tag == 1 {
                self.header = Some(self.outer.sub_message().ok()?);
            } else {
                self.outer.skip_field(wt, tag, RECURSION_LIMIT).ok()?;
            }
        }
    }
}
