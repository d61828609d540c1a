//! Every way a record can leave the pipeline other than being published.
//! The same values label metrics, fill the dead-letter `dlq.reason` header
//! and head the demo's table, so a user can trace a count to a record.

use std::fmt;

/// Why a record was not published to a routed topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Same `message_id` seen within the dedup window: dropped, counted.
    Duplicate,
    /// A `drop` route matched, or the default is `drop`: dropped, counted.
    Filtered,
    /// Not a readable envelope (truncated, bad wire type, invalid UTF-8,
    /// missing required field): dead-lettered.
    Malformed,
    /// Readable, but breaks an envelope rule (segment characters, lengths,
    /// schema id 0): dead-lettered.
    InvalidHeader,
    /// The registry answered 404 for the schema id: dead-lettered.
    UnknownSchema,
    /// The schema id exists but not under the subject the header implies:
    /// dead-lettered.
    SchemaSubjectMismatch,
    /// No route matched and the default is `dead_letter`: dead-lettered.
    Unrouted,
    /// The record is larger than `output.max_record_bytes`: dead-lettered.
    TooLarge,
    /// An output topic refused the record for good (too large once key and
    /// headers are counted, invalid record or timestamp...): dead-lettered,
    /// with the error and the topic in `dlq.detail`.
    OutputRejected,
}

impl Reason {
    /// All reasons, in report order.
    pub const ALL: [Reason; 9] = [
        Reason::Duplicate,
        Reason::Filtered,
        Reason::Malformed,
        Reason::InvalidHeader,
        Reason::UnknownSchema,
        Reason::SchemaSubjectMismatch,
        Reason::Unrouted,
        Reason::TooLarge,
        Reason::OutputRejected,
    ];

    /// The snake_case code used in metrics labels and dead-letter headers.
    pub const fn code(self) -> &'static str {
        match self {
            Reason::Duplicate => "duplicate",
            Reason::Filtered => "filtered",
            Reason::Malformed => "malformed",
            Reason::InvalidHeader => "invalid_header",
            Reason::UnknownSchema => "unknown_schema",
            Reason::SchemaSubjectMismatch => "schema_subject_mismatch",
            Reason::Unrouted => "unrouted",
            Reason::TooLarge => "too_large",
            Reason::OutputRejected => "output_rejected",
        }
    }

    /// Whether records with this reason go to the dead-letter topic (the
    /// others are dropped on purpose and only counted).
    pub const fn is_dead_letter(self) -> bool {
        !matches!(self, Reason::Duplicate | Reason::Filtered)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_only_drops_skip_the_dead_letter_topic() {
        let codes: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        let dropped: Vec<_> = Reason::ALL.iter().filter(|r| !r.is_dead_letter()).collect();
        assert_eq!(dropped, [&Reason::Duplicate, &Reason::Filtered]);
    }
}
