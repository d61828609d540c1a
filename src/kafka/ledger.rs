//! Per-partition settlement ledger: the watermark of offsets that may be
//! committed. An input offset becomes committable only when it and every
//! record before it is settled (delivered to all its outputs, dead-lettered,
//! or dropped as duplicate/filtered). Pure logic, no Kafka.

/// One record awaiting settlement: one cache line each, so the line a
/// delivery report's settlement prefetches holds the whole slot (56 bytes
/// of fields, aligned to 64).
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Slot {
    offset: i64,
    /// Outputs not yet acknowledged.
    pending: u32,
    /// When the router read it, in nanoseconds on the loop's monotonic
    /// clock (`WallClock::nanos_at`), for end-to-end latency: a
    /// subtraction when it settles, where an `Instant`'s `duration_since`
    /// was ~100 instructions per record.
    arrived_ns: u64,
    /// The envelope's event time, unix ms (for event-time latency).
    event_time_ms: Option<i64>,
    /// The message id's fingerprint of a published record (for the dedup
    /// changelog once it settles).
    fingerprint: Option<u64>,
}

/// A record whose last output was just acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// When it was read, in nanoseconds on the loop's monotonic clock.
    pub arrived_ns: u64,
    /// Its envelope's event time, unix ms.
    pub event_time_ms: Option<i64>,
    /// Its message id's fingerprint, if it was published.
    pub fingerprint: Option<u64>,
}

impl Settled {
    /// Seconds from its arrival to `now_ns` on the same clock (0 if the
    /// clock reads earlier).
    #[inline]
    pub fn latency_s(&self, now_ns: u64) -> f64 {
        now_ns.saturating_sub(self.arrived_ns) as f64 * 1e-9
    }
}

/// The ledger of one input partition. Sequence numbers are per partition and
/// contiguous, so a delivery report finds its record by index: the slots
/// are a ring whose length is a power of two, and record `seq` lives at
/// `seq & (len - 1)` while it is unsettled (one mask per lookup, where a
/// `VecDeque` adds its head and wraps).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Sequence number of the oldest unsettled record.
    base_seq: u64,
    /// Records from `base_seq` on: `base_seq + unsettled` is the next one.
    unsettled: usize,
    /// The ring (empty until the first record).
    slots: Vec<Slot>,
    /// Records with `pending > 0`.
    in_flight: usize,
    /// Next offset to consume once everything before it is settled.
    committable: Option<i64>,
    /// Whether `committable` moved since [`Ledger::take_committable`].
    dirty: bool,
}

/// The ring's first length.
const FIRST_RING: usize = 64;

impl Ledger {
    /// Records a record read at `offset` that needs `outputs` acknowledgements
    /// (0 = settled already); returns its sequence number.
    pub fn push(
        &mut self,
        offset: i64,
        outputs: u32,
        arrived_ns: u64,
        event_time_ms: Option<i64>,
    ) -> u64 {
        self.push_published(offset, outputs, arrived_ns, event_time_ms, None)
    }

    /// [`Ledger::push`] for a published record, whose id `fingerprint` is
    /// handed back by [`Ledger::settle`] once every output is acknowledged.
    pub fn push_published(
        &mut self,
        offset: i64,
        outputs: u32,
        arrived_ns: u64,
        event_time_ms: Option<i64>,
        fingerprint: Option<u64>,
    ) -> u64 {
        if self.unsettled == self.slots.len() {
            self.grow();
        }
        let seq = self.base_seq + self.unsettled as u64;
        let at = self.index(seq);
        self.slots[at] = Slot {
            offset,
            pending: outputs,
            arrived_ns,
            event_time_ms,
            fingerprint,
        };
        self.unsettled += 1;
        if outputs > 0 {
            self.in_flight += 1;
        } else {
            // Settled already: the watermark moves if it is the oldest.
            self.advance();
        }
        seq
    }

    /// Where record `seq` lives in the ring (non-empty).
    #[inline]
    fn index(&self, seq: u64) -> usize {
        seq as usize & (self.slots.len() - 1)
    }

    /// Whether record `seq` is unsettled, so the ring holds it.
    #[inline]
    fn holds(&self, seq: u64) -> bool {
        seq.wrapping_sub(self.base_seq) < self.unsettled as u64
    }

    /// The slot of record `seq`, while it is unsettled.
    #[inline]
    fn slot(&self, seq: u64) -> Option<&Slot> {
        self.holds(seq).then(|| &self.slots[self.index(seq)])
    }

    /// Doubles the ring, keeping each record at its sequence number's
    /// index: with the length doubled, record `seq` moves to its old index
    /// or that plus the old length, and the old ring twice over holds it at
    /// both (one block copy; the copies outside the unsettled window are
    /// never read).
    #[cold]
    fn grow(&mut self) {
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); FIRST_RING];
        } else {
            self.slots.extend_from_within(..);
        }
    }

    /// One output of record `seq` was acknowledged. Returns the record when
    /// that was its last output. Unknown or already settled sequence numbers
    /// (a report from before a reset) are ignored.
    pub fn settle(&mut self, seq: u64) -> Option<Settled> {
        if !self.holds(seq) {
            return None;
        }
        let at = self.index(seq);
        let slot = &mut self.slots[at];
        if slot.pending == 0 {
            return None;
        }
        slot.pending -= 1;
        if slot.pending > 0 {
            return None;
        }
        let settled = Settled {
            arrived_ns: slot.arrived_ns,
            event_time_ms: slot.event_time_ms,
            fingerprint: slot.fingerprint,
        };
        self.in_flight -= 1;
        if seq == self.base_seq {
            self.advance();
        }
        Some(settled)
    }

    /// Moves the watermark past the settled records at the front.
    fn advance(&mut self) {
        while self.unsettled > 0 {
            let front = &self.slots[self.index(self.base_seq)];
            if front.pending > 0 {
                break;
            }
            self.committable = Some(front.offset + 1);
            self.dirty = true;
            self.base_seq += 1;
            self.unsettled -= 1;
        }
    }

    /// Starts loading record `seq`'s slot, which [`Ledger::settle`] will
    /// read; nothing else changes.
    #[inline]
    pub fn prefetch(&self, seq: u64) {
        if let Some(slot) = self.slot(seq) {
            crate::pipeline::prefetch_line(slot);
        }
    }

    /// The input offset of record `seq`, while it is unsettled.
    pub fn offset_of(&self, seq: u64) -> Option<i64> {
        self.slot(seq).map(|s| s.offset)
    }

    /// The next offset to commit, if it moved since the last call.
    pub fn take_committable(&mut self) -> Option<i64> {
        if std::mem::take(&mut self.dirty) {
            self.committable
        } else {
            None
        }
    }

    /// The next offset to commit, whether or not it moved.
    pub fn committable(&self) -> Option<i64> {
        self.committable
    }

    /// Sequence number of the oldest unsettled record (or of the next one).
    pub fn base_seq(&self) -> u64 {
        self.base_seq
    }

    /// Records still waiting for an acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records read but not yet committable (in flight or behind one).
    pub fn unsettled(&self) -> usize {
        self.unsettled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn commits_only_a_fully_settled_prefix() {
        let now = 1_000;
        let mut l = Ledger::default();
        let a = l.push(10, 2, now, None); // fan-out to two topics
        let b = l.push(11, 0, now, None); // a duplicate: settled at once
        let c = l.push_published(13, 1, now, Some(5), Some(42)); // offsets may have gaps
        assert_eq!(l.take_committable(), None, "offset 10 is not settled");
        assert_eq!((l.offset_of(a), l.offset_of(c)), (Some(10), Some(13)));
        assert_eq!(
            l.settle(c),
            Some(Settled {
                arrived_ns: now,
                event_time_ms: Some(5),
                fingerprint: Some(42),
            })
        );
        assert_eq!(l.take_committable(), None, "13 is settled but 10 is not");
        assert_eq!(l.settle(a), None, "one of two outputs");
        assert_eq!(l.take_committable(), None);
        assert!(l.settle(a).is_some());
        assert_eq!(l.take_committable(), Some(14));
        assert_eq!(l.take_committable(), None, "reported once");
        assert_eq!((l.in_flight(), l.unsettled()), (0, 0));
        // Stale or repeated reports change nothing.
        assert_eq!(l.settle(b), None);
        assert_eq!(l.settle(a), None);
        assert_eq!(l.settle(999), None);
    }

    #[test]
    fn latency_is_seconds_since_arrival_and_never_negative() {
        let mut l = Ledger::default();
        let seq = l.push(0, 1, 2_000_000_000, None);
        let s = l.settle(seq).unwrap();
        assert_eq!(s.latency_s(2_500_000_000), 0.5);
        assert_eq!(
            s.latency_s(1_000_000_000),
            0.0,
            "a clock that reads earlier"
        );
    }

    /// The ledger as a plain list: every record ever pushed, with its
    /// outputs still unacknowledged.
    #[derive(Default)]
    struct Model {
        records: Vec<(i64, u32)>,
        committed: usize,
    }

    proptest::proptest! {
        #[test]
        fn the_ring_agrees_with_a_plain_list(
            ops in proptest::collection::vec((0u32..4, 0usize..400, proptest::bool::ANY), 1..600)
        ) {
            let (mut l, mut m) = (Ledger::default(), Model::default());
            for (outputs, pick, push) in ops {
                if push || m.records.is_empty() {
                    let offset = 2 * m.records.len() as i64; // offsets with gaps
                    let seq = l.push(offset, outputs, 0, Some(offset));
                    proptest::prop_assert_eq!(seq, m.records.len() as u64);
                    m.records.push((offset, outputs));
                } else {
                    // Any record ever pushed, settled or not, and some never pushed.
                    let seq = pick % (m.records.len() + 2);
                    // The event time of the record it settles (pushed as its offset).
                    let expected = match m.records.get_mut(seq) {
                        Some((offset, pending)) if *pending > 0 => {
                            *pending -= 1;
                            (*pending == 0).then_some(Some(*offset))
                        }
                        _ => None,
                    };
                    let got = l.settle(seq as u64).map(|s| s.event_time_ms);
                    proptest::prop_assert_eq!(got, expected);
                }
                let front = m.records.iter().position(|r| r.1 > 0).unwrap_or(m.records.len());
                let moved = front > m.committed;
                let expected = moved.then(|| m.records[front - 1].0 + 1);
                m.committed = m.committed.max(front);
                proptest::prop_assert_eq!(l.take_committable(), expected);
                proptest::prop_assert_eq!(l.unsettled(), m.records.len() - front);
                proptest::prop_assert_eq!(l.in_flight(), m.records.iter().filter(|r| r.1 > 0).count());
                for seq in front..m.records.len() {
                    proptest::prop_assert_eq!(l.offset_of(seq as u64), Some(m.records[seq].0));
                }
                proptest::prop_assert_eq!(l.offset_of(m.records.len() as u64), None);
            }
        }
    }

    #[test]
    fn drops_alone_advance_the_watermark() {
        let mut l = Ledger::default();
        l.push(0, 0, 0, None);
        l.push(1, 0, 0, None);
        assert_eq!(l.take_committable(), Some(2));
        assert_eq!(l.committable(), Some(2));
    }
}
