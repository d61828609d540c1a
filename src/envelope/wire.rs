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

/// A cursor over a byte slice. `pos` is absolute within the record so that
/// errors can point at the offending byte.
#[derive(Clone, Copy)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    #[inline]
    pub(crate) fn has_remaining(&self) -> bool {
        self.pos < self.end
    }

    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// Decodes a varint: at most 10 bytes, the 10th must be 0 or 1.
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, ReadError> {
        let start = self.pos;
        let bytes = &self.buf[self.pos..self.end];
        if let Some(&b) = bytes.first() {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        let mut value: u64 = 0;
        for (i, &b) in bytes.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b >= 0x02 {
                    break;
                }
                self.pos += i + 1;
                return Ok(value);
            }
            if i == 9 {
                break;
            }
        }
        Err(ReadError::InvalidVarint { offset: start })
    }

    /// Decodes a field key into `(field number, wire type)`.
    #[inline]
    pub(crate) fn key(&mut self) -> Result<(u32, WireType), ReadError> {
        let offset = self.pos;
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(ReadError::InvalidKey { offset });
        }
        let wire_type = WireType::from_bits(key & 7).ok_or(ReadError::InvalidWireType {
            offset,
            value: (key & 7) as u8,
        })?;
        let tag = (key as u32) >> 3;
        if tag == 0 {
            return Err(ReadError::InvalidKey { offset });
        }
        Ok((tag, wire_type))
    }

    /// Reads a length prefix and returns the delimited bytes, advancing past them.
    #[inline]
    pub(crate) fn length_delimited(&mut self) -> Result<&'a [u8], ReadError> {
        let offset = self.pos;
        let len = self.varint()?;
        if len > self.remaining() as u64 {
            return Err(ReadError::Truncated {
                offset,
                needed: len,
                available: self.remaining(),
            });
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// Like [`Cursor::length_delimited`], but returns a cursor over the
    /// delimited region that keeps absolute offsets.
    #[inline]
    pub(crate) fn sub_message(&mut self) -> Result<Cursor<'a>, ReadError> {
        let bytes = self.length_delimited()?;
        let end = self.pos;
        Ok(Cursor {
            buf: self.buf,
            pos: end - bytes.len(),
            end,
        })
    }

    /// Skips one field of an unknown number, as prost's `skip_field` does:
    /// `depth` is the remaining nesting budget.
    pub(crate) fn skip_field(
        &mut self,
        wire_type: WireType,
        tag: u32,
        depth: u32,
    ) -> Result<(), ReadError> {
        if depth == 0 {
            return Err(ReadError::RecursionLimit { offset: self.pos });
        }
        let len: u64 = match wire_type {
            WireType::Varint => {
                self.varint()?;
                0
            }
            WireType::ThirtyTwoBit => 4,
            WireType::SixtyFourBit => 8,
            WireType::LengthDelimited => self.varint()?,
            WireType::StartGroup => loop {
                let offset = self.pos;
                let (inner_tag, inner_wt) = self.key()?;
                if inner_wt == WireType::EndGroup {
                    if inner_tag != tag {
                        return Err(ReadError::UnexpectedEndGroup { offset });
                    }
                    break 0;
                }
                self.skip_field(inner_wt, inner_tag, depth - 1)?;
            },
            WireType::EndGroup => return Err(ReadError::UnexpectedEndGroup { offset: self.pos }),
        };
        if len > self.remaining() as u64 {
            return Err(ReadError::Truncated {
                offset: self.pos,
                needed: len,
                available: self.remaining(),
            });
        }
        self.pos += len as usize;
        Ok(())
    }
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
    ((64 - (value | 1).leading_zeros() as usize) + 6) / 7
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<u64, ReadError> {
        Cursor::new(bytes).varint()
    }

    #[test]
    fn varint_round_trips_and_matches_prost() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(v, &mut buf);
            assert_eq!(buf.len(), varint_len(v));
            assert_eq!(buf.len(), prost::encoding::encoded_len_varint(v));
            assert_eq!(decode(&buf).unwrap(), v);
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
        assert!(matches!(decode(&over), Err(ReadError::InvalidVarint { offset: 0 })));
        // Eleven bytes.
        assert!(decode(&[0x80; 11]).is_err());
        // Truncated.
        assert!(decode(&[0x80, 0x80]).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn key_rejects_tag_zero_and_bad_wire_types() {
        assert!(matches!(Cursor::new(&[0x00]).key(), Err(ReadError::InvalidKey { .. })));
        assert!(matches!(
            Cursor::new(&[0x0e]).key(),
            Err(ReadError::InvalidWireType { value: 6, .. })
        ));
        assert_eq!(Cursor::new(&[0x0a]).key().unwrap(), (1, WireType::LengthDelimited));
    }

    #[test]
    fn skip_matches_groups_and_enforces_the_limit() {
        // Group 5 containing a varint field 1, then end group 5.
        let mut c = Cursor::new(&[0x08, 0x01, 0x2c]);
        c.skip_field(WireType::StartGroup, 5, RECURSION_LIMIT).unwrap();
        assert!(!c.has_remaining());
        // Mismatched end group.
        let mut c = Cursor::new(&[0x34]);
        assert!(c.skip_field(WireType::StartGroup, 5, RECURSION_LIMIT).is_err());
        // Nested deeper than the budget.
        let deep: Vec<u8> = std::iter::repeat_n(0x2b, 200).collect();
        let mut c = Cursor::new(&deep);
        assert!(matches!(
            c.skip_field(WireType::StartGroup, 5, RECURSION_LIMIT),
            Err(ReadError::RecursionLimit { .. })
        ));
    }
}
