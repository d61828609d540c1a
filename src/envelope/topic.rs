//! The canonical routed topic name, `{env}.{source}.{title}.{category}-v{version}`.

use super::HeaderFields;
use std::fmt;

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_LEN: usize = 249;

/// Displays the canonical topic name of a header without allocating; use
/// `to_string()` or `write!` into a reused buffer.
pub struct TopicName<'h, H: ?Sized>(pub &'h H);

impl<H: HeaderFields + ?Sized> fmt::Display for TopicName<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.0;
        write!(
            f,
            "{}.{}.{}.{}-v{}",
            h.env(),
            h.source(),
            h.title(),
            h.category(),
            h.version()
        )
    }
}

/// Length in bytes of the canonical topic name, computed without formatting.
pub fn canonical_topic_len(h: &(impl HeaderFields + ?Sized)) -> usize {
    h.env().len()
        + h.source().len()
        + h.title().len()
        + h.category().len()
        + 3
        + 2
        + decimal_digits(h.version())
}

fn decimal_digits(v: u32) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits() {
        for v in [0u32, 9, 10, 99, 100, 12345, u32::MAX] {
            assert_eq!(decimal_digits(v), v.to_string().len());
        }
    }
}
