//! Protobuf wire-format primitives over a byte slice, with no I/O and no
//! allocation: varints, field keys and unknown-field skipping.
//!
//! The rules mirror prost's decoder exactly (10-byte varint limit with the
//! overflow check on the last byte, key range, group matching, recursion limit
//! of 100), so the header reader accepts and rejects the same inputs as a full
//! `prost` decode.

use super::ReadError;

/// Nesting budget shared with prost (`RECURSION_LIMIT`): each nested message,
/// map entry or group consumes one level.
pub(crate) const RECURSION_LIMIT: u32 = 100;

/// Protobuf wire types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// 0: varint.
    Varint,
    /// 1: fixed 64-bit.
    SixtyFourBit,
    /// 2: length-delimited (bytes, strings, messages).
    LengthDelimited,
    /// 3: start of a (deprecated) group.
    StartGroup,
    /// 4: end of a group.
    EndGroup,
    /// 5: fixed 32-bit.
    ThirtyTwoBit,
}

impl WireType {
    #[inline(always)]
    fn from_bits(bits: u64) -> Option<WireType> {
        Some(match bits {
            0 => WireType::Varint,
            1 => WireType::SixtyFourBit,
            2 => WireType::LengthDelimited,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::ThirtyTwoBit,
            _ => return None,
        })
    }
}

/// How a parse reports failure. The router's hot path parses with `()` (a
/// register-sized `Result`, no error built); only when a record fails is it
/// parsed again with [`ReadError`] to say precisely what is wrong. Both runs
/// are the same generic code, so they cannot disagree.
pub(crate) trait Fail: Sized {
    /// Builds the error; `()` never calls `detail`.
    fn fail(detail: impl FnOnce() -> ReadError) -> Self;
}

impl Fail for () {
    #[inline(always)]
    fn fail(_: impl FnOnce() -> ReadError) -> Self {}
}

impl Fail for ReadError {
    #[cold]
    fn fail(detail: impl FnOnce() -> ReadError) -> Self {
        detail()
    }
}

/// A cursor over the unread part of a message. `origin` is the whole record,
/// so errors can name absolute byte offsets.
#[derive(Clone, Copy)]
pub(crate) struct Cursor<'a> {
    origin: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(record: &'a [u8]) -> Self {
        Cursor {
            origin: record,
            rest: record,
        }
    }

    #[inline(always)]
    pub(crate) fn has_remaining(&self) -> bool {
        !self.rest.is_empty()
    }

    /// Absolute offset of the next unread byte.
    pub(crate) fn pos(&self) -> usize {
        self.offset_of(self.rest)
    }

    fn offset_of(&self, at: &[u8]) -> usize {
        at.as_ptr() as usize - self.origin.as_ptr() as usize
    }

    /// Decodes a varint: at most 10 bytes, the 10th must be 0 or 1.
    #[inline(always)]
    pub(crate) fn varint<E: Fail>(&mut self) -> Result<u64, E> {
        // One-byte varints (keys, short lengths) are the common case.
        // One- and two-byte varints (keys, lengths up to 16 KiB) inline.
        match self.rest {
            [b, tail @ ..] if *b < 0x80 => {
                self.rest = tail;
                Ok(u64::from(*b))
            }
            [b0, b1, tail @ ..] if *b1 < 0x80 => {
                self.rest = tail;
                Ok(u64::from(b0 & 0x7f) | (u64::from(*b1) << 7))
            }
            _ => match varint_slow(self.rest) {
                Some((value, len)) => {
                    self.rest = &self.rest[len..];
                    Ok(value)
                }
                None => Err(E::fail(|| ReadError::InvalidVarint { offset: self.pos() })),
            },
        }
    }

    /// Decodes a field key into `(field number, wire type)`.
    #[inline(always)]
    pub(crate) fn key<E: Fail>(&mut self) -> Result<(u32, WireType), E> {
        let at = self.rest;
        let key = self.varint()?;
        self.check_key(key, at)
    }

    /// Splits a raw key read at `at` into `(field number, wire type)`,
    /// rejecting field number 0, keys above 32 bits and wire types 6 and 7.
    #[inline]
    pub(crate) fn check_key<E: Fail>(&self, key: u64, at: &[u8]) -> Result<(u32, WireType), E> {
        let tag = key >> 3;
        let wire_type = WireType::from_bits(key & 7);
        match wire_type {
            Some(wt) if tag != 0 && key <= u64::from(u32::MAX) => Ok((tag as u32, wt)),
            _ => Err(E::fail(|| {
                let offset = self.offset_of(at);
                match wire_type {
                    None => ReadError::InvalidWireType {
                        offset,
                        value: (key & 7) as u8,
                    },
                    Some(_) => ReadError::InvalidKey { offset },
                }
            })),
        }
    }

    /// Takes `len` bytes, or fails with the offset of the length prefix.
    #[inline(always)]
    fn take<E: Fail>(&mut self, len: u64, prefix: &'a [u8]) -> Result<&'a [u8], E> {
        if len > self.rest.len() as u64 {
            return Err(E::fail(|| ReadError::Truncated {
                offset: self.offset_of(prefix),
                needed: len,
                available: self.rest.len(),
            }));
        }
        let (taken, rest) = self.rest.split_at(len as usize);
        self.rest = rest;
        Ok(taken)
    }

    /// Reads a length prefix and returns the delimited bytes, advancing past them.
    #[inline(always)]
    pub(crate) fn length_delimited<E: Fail>(&mut self) -> Result<&'a [u8], E> {
        let prefix = self.rest;
        let len = self.varint()?;
        self.take(len, prefix)
    }

    /// Like [`Cursor::length_delimited`], but returns a cursor over the
    /// delimited region that keeps absolute offsets.
    #[inline(always)]
    pub(crate) fn sub_message<E: Fail>(&mut self) -> Result<Cursor<'a>, E> {
        Ok(Cursor {
            origin: self.origin,
            rest: self.length_delimited()?,
        })
    }

    /// Consumes `key` if it is the next byte (a one-byte field key).
    #[inline(always)]
    pub(crate) fn eat(&mut self, key: u8) -> bool {
        match self.rest {
            [b, tail @ ..] if *b == key => {
                self.rest = tail;
                true
            }
            _ => false,
        }
    }

    /// The unread bytes (to remember a position for error offsets).
    #[inline(always)]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Skips one field of an unknown number, as prost's `skip_field` does:
    /// `depth` is the remaining nesting budget.
    pub(crate) fn skip_field<E: Fail>(
        &mut self,
        wire_type: WireType,
        tag: u32,
        depth: u32,
    ) -> Result<(), E> {
        if depth == 0 {
            return Err(E::fail(|| ReadError::RecursionLimit { offset: self.pos() }));
        }
        let prefix = self.rest;
        let len: u64 = match wire_type {
            WireType::Varint => {
                self.varint::<E>()?;
                0
            }
            WireType::ThirtyTwoBit => 4,
            WireType::SixtyFourBit => 8,
            WireType::LengthDelimited => self.varint()?,
            WireType::StartGroup => loop {
                let at = self.rest;
                let (inner_tag, inner_wt) = self.key()?;
                if inner_wt == WireType::EndGroup {
                    if inner_tag != tag {
                        return Err(E::fail(|| ReadError::UnexpectedEndGroup {
                            offset: self.offset_of(at),
                        }));
                    }
                    break 0;
                }
                self.skip_field(inner_wt, inner_tag, depth - 1)?;
            },
            WireType::EndGroup => {
                return Err(E::fail(|| ReadError::UnexpectedEndGroup {
                    offset: self.pos(),
                }))
            }
        };
        self.take(len, prefix).map(|_| ())
    }
}

/// Decodes a varint of any length, returning it and its length in bytes.
/// Takes the slice rather than the cursor so that the cursor's address never
/// escapes and it stays in registers on the fast path.
#[inline(never)]
fn varint_slow(bytes: &[u8]) -> Option<(u64, usize)> {
    // Up to 8 bytes (56 bits: event times, large lengths) without a loop
    // when 8 bytes can be loaded.
    if let Some(word) = bytes.first_chunk::<8>() {
        if let Some(found) = varint_in_word(u64::from_le_bytes(*word)) {
            return Some(found);
        }
    }
    varint_bytewise(bytes)
}

/// Decodes a varint that ends within the 8 bytes of `w` (little-endian):
/// the first byte without its high bit ends it; the 7-bit groups are then
/// packed in three steps. `None` if all eight bytes continue.
#[inline]
fn varint_in_word(w: u64) -> Option<(u64, usize)> {
    let ends = !w & 0x8080_8080_8080_8080;
    if ends == 0 {
        return None;
    }
    let len = (ends.trailing_zeros() as usize + 1) / 8; // bytes, terminator included
    let kept = if len == 8 {
        !0
    } else {
        (1u64 << (8 * len)) - 1
    };
    let x = w & kept & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    let x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
    Some((x, len))
}

/// The byte loop for varints of 9 or 10 bytes or near the end of the input.
fn varint_bytewise(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            if i == 9 && b >= 0x02 {
                return None;
            }
            return Some((value, i + 1));
        }
    }
    None
}

/// The 4 bytes of `s` at `at`, little-endian (the word-at-a-time checks
/// and the routing-cache hash load short strings this way).
#[inline(always)]
pub(crate) fn u32_at(s: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]])
}

/// The 8 bytes of `s` at `at`, little-endian.
#[inline(always)]
pub(crate) fn u64_at(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Appends `value` as a protobuf varint.
#[inline]
pub(crate) fn put_varint(mut value: u64, out: &mut impl bytes::BufMut) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Number of bytes `value` takes as a varint.
#[inline]
pub(crate) fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<u64, ReadError> {
        Cursor::new(bytes).varint()
    }

    fn key(bytes: &[u8]) -> Result<(u32, WireType), ReadError> {
        Cursor::new(bytes).key()
    }

    fn skip(bytes: &[u8], wt: WireType, tag: u32) -> Result<Cursor<'_>, ReadError> {
        let mut c = Cursor::new(bytes);
        c.skip_field(wt, tag, RECURSION_LIMIT).map(|_| c)
    }

    #[test]
    fn varint_round_trips_and_matches_prost() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(v, &mut buf);
            assert_eq!(buf.len(), varint_len(v));
            assert_eq!(buf.len(), prost::encoding::encoded_len_varint(v));
            assert_eq!(decode(&buf).unwrap(), v);
        }
    }

    #[test]
    fn word_decoder_agrees_with_the_byte_loop() {
        // Every length 1..=10, minimal and padded, with trailing bytes.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = state >> (state % 64);
            let mut buf = Vec::new();
            put_varint(v, &mut buf);
            if state % 3 == 0 && buf.len() < 10 {
                // Non-minimal: an extra continuation group of zeros.
                let last = buf.len() - 1;
                buf[last] |= 0x80;
                buf.push(0);
            }
            buf.extend_from_slice(&state.to_le_bytes()[..(state % 9) as usize]);
            assert_eq!(varint_slow(&buf), varint_bytewise(&buf), "{buf:02x?}");
            assert_eq!(decode(&buf).unwrap(), v, "{buf:02x?}");
        }
        for bytes in [&[0xffu8; 12][..], &[0x80; 8], &[0x80; 9]] {
            assert_eq!(varint_slow(bytes), varint_bytewise(bytes));
        }
    }

    #[test]
    fn varint_accepts_non_minimal_and_rejects_overflow() {
        // 1 encoded with a redundant continuation byte.
        assert_eq!(decode(&[0x81, 0x00]).unwrap(), 1);
        // Ten bytes whose last byte is 1: u64::MAX territory, valid.
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(decode(&max).unwrap(), u64::MAX);
        // Tenth byte 2: overflows 64 bits.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert!(matches!(
            decode(&over),
            Err(ReadError::InvalidVarint { offset: 0 })
        ));
        // Eleven bytes.
        assert!(decode(&[0x80; 11]).is_err());
        // Truncated.
        assert!(decode(&[0x80, 0x80]).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn key_rejects_tag_zero_and_bad_wire_types() {
        assert!(matches!(key(&[0x00]), Err(ReadError::InvalidKey { .. })));
        assert!(matches!(
            key(&[0x0e]),
            Err(ReadError::InvalidWireType { value: 6, .. })
        ));
        // Key above 32 bits.
        assert!(matches!(
            key(&[0x88, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(ReadError::InvalidKey { .. })
        ));
        assert_eq!(key(&[0x0a]).unwrap(), (1, WireType::LengthDelimited));
    }

    #[test]
    fn skip_matches_groups_and_enforces_the_limit() {
        // Group 5 containing a varint field 1, then end group 5.
        assert!(!skip(&[0x08, 0x01, 0x2c], WireType::StartGroup, 5)
            .unwrap()
            .has_remaining());
        // Mismatched end group.
        assert!(matches!(
            skip(&[0x34], WireType::StartGroup, 5),
            Err(ReadError::UnexpectedEndGroup { offset: 0 })
        ));
        // Nested deeper than the budget.
        let deep: Vec<u8> = std::iter::repeat_n(0x2b, 200).collect();
        assert!(matches!(
            skip(&deep, WireType::StartGroup, 5),
            Err(ReadError::RecursionLimit { offset: 100 })
        ));
        // A length past the end names the length prefix's offset.
        assert!(matches!(
            skip(&[0x05, 1, 2], WireType::LengthDelimited, 5),
            Err(ReadError::Truncated {
                offset: 0,
                needed: 5,
                available: 2
            })
        ));
    }
}
