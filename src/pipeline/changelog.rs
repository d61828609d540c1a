//! The dedup changelog's record format, free of Kafka I/O.
//!
//! A partition's window is persisted as **blocks**: one Kafka record holds
//! the fingerprints of the ids published from one input partition since the
//! previous block. The record's key names the input partition (and the group,
//! so two groups may share a topic); its timestamp is when the block was
//! written, which a restore takes as the ids' arrival time. Blocks are never
//! updated, so the topic needs time retention (the dedup window plus a
//! margin), not compaction.
//!
//! Value layout: the 4-byte magic `ERD1`, then each fingerprint as 8 bytes
//! little-endian. A block of 1024 ids is 8 196 bytes of value.

/// First bytes of every block value (format version 1).
pub const BLOCK_MAGIC: &[u8; 4] = b"ERD1";

/// Bytes one id takes in a block's value.
pub const BYTES_PER_ID: usize = 8;

/// The key of the blocks of one input partition of one group.
pub fn block_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    format!("{topic}\u{0}{partition}\u{0}{group}").into_bytes()
}

/// Appends the block value for `fingerprints` to `out` (cleared first).
pub fn encode_block(fingerprints: &[u64], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(BLOCK_MAGIC.len() + fingerprints.len() * BYTES_PER_ID);
    out.extend_from_slice(BLOCK_MAGIC);
    for fp in fingerprints {
        out.extend_from_slice(&fp.to_le_bytes());
    }
}

/// Why a block could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// The value does not start with [`BLOCK_MAGIC`] (another format, or not ours).
    Magic,
    /// The value's length is not the magic plus whole fingerprints.
    Length(usize),
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockError::Magic => write!(f, "not a dedup block (magic is not ERD1)"),
            BlockError::Length(n) => write!(f, "dedup block of {n} bytes is truncated"),
        }
    }
}

/// The fingerprints of a block value, in the order they were written.
pub fn decode_block(value: &[u8]) -> Result<impl Iterator<Item = u64> + '_, BlockError> {
    let body = value
        .strip_prefix(BLOCK_MAGIC.as_slice())
        .ok_or(BlockError::Magic)?;
    if body.len() % BYTES_PER_ID != 0 {
        return Err(BlockError::Length(value.len()));
    }
    Ok(body
        .chunks_exact(BYTES_PER_ID)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip() {
        let fps = [0, 1, u64::MAX, 0x0102_0304_0506_0708];
        let mut v = Vec::new();
        encode_block(&fps, &mut v);
        assert_eq!(v.len(), 4 + 4 * 8);
        assert_eq!(decode_block(&v).unwrap().collect::<Vec<_>>(), fps);
        encode_block(&[], &mut v);
        assert_eq!(
            decode_block(&v).unwrap().count(),
            0,
            "reused buffer cleared"
        );
    }

    #[test]
    fn foreign_or_truncated_values_are_refused() {
        assert_eq!(decode_block(b"nope").err(), Some(BlockError::Magic));
        assert_eq!(decode_block(b"ERD1abc").err(), Some(BlockError::Length(7)));
    }

    #[test]
    fn keys_separate_topics_partitions_and_groups() {
        let a = block_key("g", "raw", 1);
        assert_ne!(a, block_key("g", "raw", 11));
        assert_ne!(a, block_key("g", "raw1", 1));
        assert_ne!(a, block_key("g2", "raw", 1));
        assert_eq!(a, block_key("g", "raw", 1));
    }
}
