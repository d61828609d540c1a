//! The header validation rules, shared by the encoder (before any byte is
//! produced) and the router (before a record is routed).

use super::topic::{canonical_topic_len, MAX_TOPIC_LEN};
use super::HeaderFields;

/// Longest allowed `message_id`, in bytes.
pub const MAX_MESSAGE_ID_LEN: usize = 64;
/// Longest allowed topic segment (`env`, `source`, `title`, `category`).
pub const MAX_SEGMENT_LEN: usize = 48;

/// A header that breaks one of the envelope rules. Each variant says what was
/// expected and what was found, so a producer can fix its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// `message_id` is empty.
    #[error("message_id is empty; expected 1..={MAX_MESSAGE_ID_LEN} bytes")]
    EmptyMessageId,
    /// `message_id` is longer than 64 bytes.
    #[error("message_id is {len} bytes; expected at most {MAX_MESSAGE_ID_LEN}")]
    MessageIdTooLong {
        /// Its length.
        len: usize,
    },
    /// A topic segment is empty.
    #[error("{field} is empty; expected 1..={MAX_SEGMENT_LEN} characters of [A-Za-z0-9_-]")]
    EmptySegment {
        /// `env`, `source`, `title` or `category`.
        field: &'static str,
    },
    /// A topic segment holds a character outside `[A-Za-z0-9_-]` (dots
    /// included: they separate topic segments).
    #[error("{field} has {found:?} at character {index}; only [A-Za-z0-9_-] is allowed (no rewriting: it would merge distinct streams)")]
    InvalidSegmentChar {
        /// `env`, `source`, `title` or `category`.
        field: &'static str,
        /// The offending character.
        found: char,
        /// Its position, counted in characters from 0.
        index: usize,
    },
    /// A topic segment is longer than 48 characters.
    #[error("{field} is {len} characters; expected at most {MAX_SEGMENT_LEN}")]
    SegmentTooLong {
        /// `env`, `source`, `title` or `category`.
        field: &'static str,
        /// Its length in characters.
        len: usize,
    },
    /// `schema_id` is 0.
    #[error("schema_id is 0; registry ids start at 1")]
    ZeroSchemaId,
    /// The derived topic name is longer than Kafka allows.
    #[error("topic name would be {len} bytes; Kafka allows at most {MAX_TOPIC_LEN}")]
    TopicTooLong {
        /// Length of `{env}.{source}.{title}.{category}-v{version}`.
        len: usize,
    },
}

impl ValidationError {
    /// The header field this error is about, for logs and dead-letter headers.
    pub fn field(&self) -> &'static str {
        match self {
            ValidationError::EmptyMessageId | ValidationError::MessageIdTooLong { .. } => {
                "message_id"
            }
            ValidationError::EmptySegment { field }
            | ValidationError::InvalidSegmentChar { field, .. }
            | ValidationError::SegmentTooLong { field, .. } => field,
            ValidationError::ZeroSchemaId => "schema_id",
            ValidationError::TopicTooLong { .. } => "topic",
        }
    }
}

/// Checks a header against the envelope rules.
pub fn validate(h: &(impl HeaderFields + ?Sized)) -> Result<(), ValidationError> {
    let id = h.message_id();
    if id.is_empty() {
        return Err(ValidationError::EmptyMessageId);
    }
    if id.len() > MAX_MESSAGE_ID_LEN {
        return Err(ValidationError::MessageIdTooLong { len: id.len() });
    }
    segment("env", h.env())?;
    segment("source", h.source())?;
    segment("title", h.title())?;
    segment("category", h.category())?;
    if h.schema_id() == 0 {
        return Err(ValidationError::ZeroSchemaId);
    }
    let len = canonical_topic_len(h);
    if len > MAX_TOPIC_LEN {
        return Err(ValidationError::TopicTooLong { len });
    }
    Ok(())
}

/// Checks one topic segment: 1..=48 characters of `[A-Za-z0-9_-]`.
pub fn segment(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::EmptySegment { field });
    }
    if let Some(pos) = value.bytes().position(|b| !is_segment_byte(b)) {
        // Report the character, not the byte, for non-ASCII input.
        let (index, found) = value
            .char_indices()
            .enumerate()
            .find(|(_, (at, _))| *at >= pos)
            .map(|(i, (_, c))| (i, c))
            .unwrap_or((pos, '\u{fffd}'));
        return Err(ValidationError::InvalidSegmentChar {
            field,
            found,
            index,
        });
    }
    // Only ASCII is left, so bytes are characters.
    if value.len() > MAX_SEGMENT_LEN {
        return Err(ValidationError::SegmentTooLong {
            field,
            len: value.len(),
        });
    }
    Ok(())
}

#[inline]
fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::proto::Header;

    fn good() -> Header {
        Header {
            message_id: vec![1u8; 16].into(),
            env: "prod".into(),
            source: "glutton".into(),
            title: "1234".into(),
            category: "telemetry_match_event".into(),
            version: 1,
            schema_id: 7,
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_good_header() {
        assert_eq!(validate(&good()), Ok(()));
    }

    #[test]
    fn each_rule_has_its_own_error() {
        let mut h = good();
        h.message_id = Default::default();
        assert_eq!(validate(&h), Err(ValidationError::EmptyMessageId));
        h.message_id = vec![0; 65].into();
        assert_eq!(
            validate(&h),
            Err(ValidationError::MessageIdTooLong { len: 65 })
        );
        h.message_id = vec![0; 64].into();
        assert_eq!(validate(&h), Ok(()));

        let mut h = good();
        h.source = "".into();
        assert_eq!(
            validate(&h),
            Err(ValidationError::EmptySegment { field: "source" })
        );
        h.source = "glut.ton".into();
        assert_eq!(
            validate(&h),
            Err(ValidationError::InvalidSegmentChar {
                field: "source",
                found: '.',
                index: 4
            })
        );
        h.source = "ünï".into();
        assert_eq!(
            validate(&h),
            Err(ValidationError::InvalidSegmentChar {
                field: "source",
                found: 'ü',
                index: 0
            })
        );
        h.source = "aé/".into();
        assert_eq!(
            validate(&h),
            Err(ValidationError::InvalidSegmentChar {
                field: "source",
                found: 'é',
                index: 1
            })
        );
        h.source = "x".repeat(49);
        assert_eq!(
            validate(&h),
            Err(ValidationError::SegmentTooLong {
                field: "source",
                len: 49
            })
        );
        h.source = "x".repeat(48);
        assert_eq!(validate(&h), Ok(()));

        let mut h = good();
        h.schema_id = 0;
        assert_eq!(validate(&h), Err(ValidationError::ZeroSchemaId));
        assert_eq!(ValidationError::ZeroSchemaId.field(), "schema_id");
    }

    #[test]
    fn longest_valid_segments_still_fit_a_topic() {
        let mut h = good();
        let s = "a".repeat(48);
        (h.env, h.source, h.title, h.category) = (s.clone(), s.clone(), s.clone(), s);
        h.version = u32::MAX;
        assert_eq!(validate(&h), Ok(()));
        assert_eq!(canonical_topic_len(&h), 4 * 48 + 3 + 2 + 10);
    }
}
