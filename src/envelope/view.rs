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

use super::wire::{Cursor, Fail, WireType, RECURSION_LIMIT};
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
    #[inline]
    pub fn read(record: &'a [u8]) -> Result<Self, ReadError> {
        match Self::try_read(record) {
            Some(view) => Ok(view),
            None => Err(explain(record)),
        }
    }

    /// [`EnvelopeView::read`] without the reason: `None` where `read` fails.
    /// The router's per-record path uses it, because re-wrapping the view
    /// into `read`'s `Result` copied it (~40 instructions per record); a
    /// rejected record is read again with `read` to name the fault.
    #[inline]
    pub fn try_read(record: &'a [u8]) -> Option<Self> {
        parse::<()>(record).ok()
    }

    /// The message id of a canonically encoded record (the header first, its
    /// `message_id` first, lengths under 16 KiB), found without reading the
    /// rest; `None` for any other layout. A hint only: the router uses it to
    /// start loading the id's dedup slot before it reads the header. It checks
    /// bounds, not the protobuf structure; [`EnvelopeView::read`] stays the
    /// authority.
    ///
    /// ```
    /// use envelope_router::envelope::{EnvelopeView, HeaderBuilder};
    /// let header = HeaderBuilder::new()
    ///     .env("prod").source("glutton").title("1234").category("match")
    ///     .version(1).schema_id(7).message_id(b"id-1".to_vec())
    ///     .build()?;
    /// let record = header.to_envelope_bytes(b"opaque");
    /// assert_eq!(EnvelopeView::peek_message_id(&record), Some(&b"id-1"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn peek_message_id(record: &'a [u8]) -> Option<&'a [u8]> {
        // [0x0a, header length (1-2 bytes), 0x0a, id length (1 byte), id...]
        let rest = match record {
            [key, len, rest @ ..] if *key == keys::LEN_1 as u8 && *len < 0x80 => rest,
            [key, l0, l1, rest @ ..] if *key == keys::LEN_1 as u8 && *l0 >= 0x80 && *l1 < 0x80 => {
                rest
            }
            _ => return None,
        };
        match rest {
            [key, len, id @ ..] if *key == keys::LEN_1 as u8 && *len < 0x80 => {
                id.get(..usize::from(*len))
            }
            _ => None,
        }
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

/// Field keys (`field number << 3 | wire type`) as canonical encoders write
/// them; the parser dispatches on these and sends anything else through the
/// general path, which applies prost's rules.
mod keys {
    pub const LEN_1: u64 = 1 << 3 | 2;
    pub const LEN_2: u64 = 2 << 3 | 2;
    pub const LEN_3: u64 = 3 << 3 | 2;
    pub const LEN_4: u64 = 4 << 3 | 2;
    pub const LEN_5: u64 = 5 << 3 | 2;
    pub const VARINT_6: u64 = 6 << 3;
    pub const VARINT_7: u64 = 7 << 3;
    pub const VARINT_8: u64 = 8 << 3;
    pub const LEN_9: u64 = 9 << 3 | 2;
    pub const LEN_10: u64 = 10 << 3 | 2;
    pub const LEN_11: u64 = 11 << 3 | 2;
}

/// Header field names and declared wire types, by field number.
const HEADER_FIELDS: [(&str, WireType); 11] = [
    ("header.message_id", WireType::LengthDelimited),
    ("header.env", WireType::LengthDelimited),
    ("header.source", WireType::LengthDelimited),
    ("header.title", WireType::LengthDelimited),
    ("header.category", WireType::LengthDelimited),
    ("header.version", WireType::Varint),
    ("header.schema_id", WireType::Varint),
    ("header.event_time_ms", WireType::Varint),
    ("header.producer", WireType::LengthDelimited),
    ("header.content_type", WireType::LengthDelimited),
    ("header.attributes", WireType::LengthDelimited),
];

/// The parser, generic over how it fails (see [`Fail`]).
#[inline(always)]
fn parse<'a, E: Fail>(record: &'a [u8]) -> Result<EnvelopeView<'a>, E> {
    let mut c = Cursor::new(record);
    let mut h = PartialHeader::default();
    let mut has_header = false;
    let mut payload = None;
    while c.has_remaining() {
        let at = c.rest();
        match c.varint()? {
            keys::LEN_1 => {
                let mut sub = c.sub_message()?;
                read_header(&mut sub, &mut h, RECURSION_LIMIT - 1)?;
                has_header = true;
            }
            keys::LEN_2 => payload = Some(c.length_delimited()?),
            key => match c.check_key(key, at)? {
                (1, found) => return Err(wrong_wire_type("header", found)),
                (2, found) => return Err(wrong_wire_type("payload", found)),
                (tag, wt) => c.skip_field(wt, tag, RECURSION_LIMIT)?,
            },
        }
    }
    if !has_header {
        return Err(E::fail(|| ReadError::MissingField { field: "header" }));
    }
    Ok(EnvelopeView {
        header: h.finish(record)?,
        payload,
    })
}

/// Parses a record the fast path rejected again, this time building the
/// precise error.
#[cold]
#[inline(never)]
fn explain(record: &[u8]) -> ReadError {
    match parse::<ReadError>(record) {
        Err(e) => e,
        Ok(_) => unreachable!("one generic parser accepted a record it had rejected"),
    }
}

#[cold]
fn wrong_wire_type<E: Fail>(field: &'static str, found: WireType) -> E {
    E::fail(|| ReadError::WrongWireType {
        field,
        expected: WireType::LengthDelimited,
        found,
    })
}

#[inline(always)]
fn utf8<'a, E: Fail>(bytes: &'a [u8], field: &'static str) -> Result<&'a str, E> {
    // Header strings are short and almost always ASCII: a word-at-a-time
    // ASCII check is several times cheaper than the general validator there.
    if is_ascii(bytes) {
        // SAFETY: ASCII is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(|_| E::fail(|| ReadError::InvalidUtf8 { field }))
}

/// ASCII check tuned for short strings: two overlapping word loads cover
/// 4..=16 bytes without a loop, whole words then one overlapping word up to
/// 64 bytes; longer strings use the standard check. It keeps its own word
/// loader: with `wire::u64_at`/`u32_at`, which the segment check and the
/// routing hash share, the header read took 28 more instructions per record
/// (callgrind) inside the inlined parser.
#[inline(always)]
fn is_ascii(b: &[u8]) -> bool {
    const HIGH64: u64 = 0x8080_8080_8080_8080;
    let n = b.len();
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    };
    match n {
        0 => true,
        1..=3 => (b[0] | b[n / 2] | b[n - 1]) < 0x80,
        4..=7 => {
            let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
            (lo | hi) & 0x8080_8080 == 0
        }
        8..=16 => (word(0) | word(n - 8)) & HIGH64 == 0,
        17..=64 => {
            let mut acc = word(n - 8);
            let mut at = 0;
            while at + 8 <= n {
                acc |= word(at);
                at += 8;
            }
            acc & HIGH64 == 0
        }
        _ => b.is_ascii(),
    }
}

#[inline(always)]
fn string<'a, E: Fail>(c: &mut Cursor<'a>, field: &'static str) -> Result<&'a str, E> {
    utf8(c.length_delimited()?, field)
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
    #[inline(always)]
    fn finish<E: Fail>(self, record: &'a [u8]) -> Result<HeaderView<'a>, E> {
        #[inline(always)]
        fn req<T, E: Fail>(v: Option<T>, field: &'static str) -> Result<T, E> {
            v.ok_or_else(|| E::fail(|| ReadError::MissingField { field }))
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
#[inline(always)]
fn read_header<'a, E: Fail>(
    c: &mut Cursor<'a>,
    h: &mut PartialHeader<'a>,
    depth: u32,
) -> Result<(), E> {
    read_canonical_prefix(c, h)?;
    read_header_fields(c, h, depth)
}

/// Encoders write fields in number order: take fields 1..=10 in that order
/// with straight-line code (one byte compare each), and stop at the first
/// field that is not next in line; [`read_header_fields`] reads the rest.
/// Each field is handled exactly as the general loop would, so the result
/// is the same for any input.
#[inline(always)]
fn read_canonical_prefix<'a, E: Fail>(
    c: &mut Cursor<'a>,
    h: &mut PartialHeader<'a>,
) -> Result<(), E> {
    if !c.eat(keys::LEN_1 as u8) {
        return Ok(());
    }
    h.message_id = Some(c.length_delimited()?);
    if !c.eat(keys::LEN_2 as u8) {
        return Ok(());
    }
    h.env = Some(string(c, "header.env")?);
    if !c.eat(keys::LEN_3 as u8) {
        return Ok(());
    }
    h.source = Some(string(c, "header.source")?);
    if !c.eat(keys::LEN_4 as u8) {
        return Ok(());
    }
    h.title = Some(string(c, "header.title")?);
    if !c.eat(keys::LEN_5 as u8) {
        return Ok(());
    }
    h.category = Some(string(c, "header.category")?);
    if !c.eat(keys::VARINT_6 as u8) {
        return Ok(());
    }
    h.version = Some(c.varint()? as u32);
    if !c.eat(keys::VARINT_7 as u8) {
        return Ok(());
    }
    h.schema_id = Some(c.varint()? as u32);
    if !c.eat(keys::VARINT_8 as u8) {
        return Ok(());
    }
    h.event_time_ms = Some(c.varint()? as i64);
    if !c.eat(keys::LEN_9 as u8) {
        return Ok(());
    }
    h.producer = Some(string(c, "header.producer")?);
    if c.eat(keys::LEN_10 as u8) {
        h.content_type = Some(string(c, "header.content_type")?);
    }
    Ok(())
}

/// Reads header fields in any order, by protobuf's rules.
#[inline(always)]
fn read_header_fields<'a, E: Fail>(
    c: &mut Cursor<'a>,
    h: &mut PartialHeader<'a>,
    depth: u32,
) -> Result<(), E> {
    while c.has_remaining() {
        let at = c.rest();
        match c.varint()? {
            keys::LEN_1 => h.message_id = Some(c.length_delimited()?),
            keys::LEN_2 => h.env = Some(string(c, "header.env")?),
            keys::LEN_3 => h.source = Some(string(c, "header.source")?),
            keys::LEN_4 => h.title = Some(string(c, "header.title")?),
            keys::LEN_5 => h.category = Some(string(c, "header.category")?),
            keys::VARINT_6 => h.version = Some(c.varint()? as u32),
            keys::VARINT_7 => h.schema_id = Some(c.varint()? as u32),
            keys::VARINT_8 => h.event_time_ms = Some(c.varint()? as i64),
            keys::LEN_9 => h.producer = Some(string(c, "header.producer")?),
            keys::LEN_10 => h.content_type = Some(string(c, "header.content_type")?),
            keys::LEN_11 => read_attribute_field(c, h, depth)?,
            key => match c.check_key(key, at)? {
                // The map field too: prost checks its wire type since
                // 0.14.6 (before, it read any wire type as length-delimited).
                (tag @ 1..=11, found) => {
                    let (field, expected) = HEADER_FIELDS[tag as usize - 1];
                    return Err(E::fail(|| ReadError::WrongWireType {
                        field,
                        expected,
                        found,
                    }));
                }
                (tag, wt) => c.skip_field(wt, tag, depth)?,
            },
        }
    }
    Ok(())
}

#[inline(always)]
fn read_attribute_field<'a, E: Fail>(
    c: &mut Cursor<'a>,
    h: &mut PartialHeader<'a>,
    depth: u32,
) -> Result<(), E> {
    if depth == 0 {
        return Err(E::fail(|| ReadError::RecursionLimit { offset: c.pos() }));
    }
    let mut entry = c.sub_message()?;
    read_attribute::<E>(&mut entry, depth - 1)?;
    h.attribute_entries = h.attribute_entries.saturating_add(1);
    Ok(())
}

/// Reads one map entry; a missing key or value defaults to "".
#[inline(always)]
fn read_attribute<'a, E: Fail>(c: &mut Cursor<'a>, depth: u32) -> Result<(&'a str, &'a str), E> {
    let (mut key, mut value) = ("", "");
    while c.has_remaining() {
        let at = c.rest();
        match c.varint()? {
            keys::LEN_1 => key = string(c, "header.attributes.key")?,
            keys::LEN_2 => value = string(c, "header.attributes.value")?,
            raw => match c.check_key(raw, at)? {
                (tag @ (1 | 2), found) => {
                    let field =
                        ["header.attributes.key", "header.attributes.value"][tag as usize - 1];
                    return Err(E::fail(|| ReadError::WrongWireType {
                        field,
                        expected: WireType::LengthDelimited,
                        found,
                    }));
                }
                (tag, wt) => c.skip_field(wt, tag, depth)?,
            },
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
        self.iter()
            .filter(|(k, _)| *k == key)
            .last()
            .map(|(_, v)| v)
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
                    let (tag, wt) = h.key::<()>().ok()?;
                    if tag == 11 {
                        let mut entry = h.sub_message::<()>().ok()?;
                        return read_attribute::<()>(&mut entry, RECURSION_LIMIT).ok();
                    }
                    h.skip_field::<()>(wt, tag, RECURSION_LIMIT).ok()?;
                }
                self.header = None;
            }
            if !self.outer.has_remaining() {
                return None;
            }
            let (tag, wt) = self.outer.key::<()>().ok()?;
            if tag == 1 {
                self.header = Some(self.outer.sub_message::<()>().ok()?);
            } else {
                self.outer.skip_field::<()>(wt, tag, RECURSION_LIMIT).ok()?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_ascii, EnvelopeView};
    use crate::envelope::HeaderBuilder;

    #[test]
    fn peeked_id_is_the_read_id_for_every_encoder_layout() {
        // 1- and 2-byte header lengths, ids of 1..=64 bytes.
        for id_len in 1..=64usize {
            for attrs in [0usize, 4, 40] {
                let id: Vec<u8> = (0..id_len as u8).map(|b| b.wrapping_mul(37)).collect();
                let mut b = HeaderBuilder::new()
                    .env("prod")
                    .source("glutton")
                    .title("1234")
                    .category("match")
                    .version(1)
                    .schema_id(7)
                    .message_id(id.clone());
                for a in 0..attrs {
                    b = b.attribute(format!("key{a}"), "value");
                }
                let record = b.build().unwrap().to_envelope_bytes(b"payload");
                let read = EnvelopeView::read(&record).unwrap();
                let peeked = EnvelopeView::peek_message_id(&record);
                assert_eq!(peeked, Some(read.header().message_id));
                assert_eq!(peeked.unwrap().as_ptr(), read.header().message_id.as_ptr());
                if attrs == 40 {
                    assert!(record[1] >= 0x80, "a 2-byte header length is exercised");
                }
            }
        }
    }

    #[test]
    fn peek_declines_other_layouts_and_short_input() {
        for record in [
            &b""[..],
            &[0x0a],
            &[0x0a, 0x05],
            &[0x0a, 0x05, 0x0a, 0x09, 1, 2], // id runs past the end
            &[0x12, 0x00, 0x0a, 0x03, 0x0a, 0x01, 1], // payload first
            &[0x0a, 0x03, 0x12, 0x01, b'p'], // env first
            &[0x0a, 0x80, 0x80, 0x01],       // 3-byte header length
        ] {
            assert_eq!(EnvelopeView::peek_message_id(record), None, "{record:02x?}");
        }
    }

    #[test]
    fn short_ascii_check_matches_std_at_every_length_and_position() {
        for len in 0..80 {
            let clean = vec![b'a'; len];
            assert!(is_ascii(&clean), "len {len}");
            for at in 0..len {
                let mut dirty = clean.clone();
                dirty[at] = 0x80 | (at as u8);
                assert!(!is_ascii(&dirty), "len {len}, non-ASCII at {at}");
            }
        }
    }
}
