//! The router's per-partition state, shared between the consume loop and
//! librdkafka's callbacks (which run on the loop's thread, inside `poll`).

use super::ledger::{Ledger, Settled};
use super::retry::RetryQueue;
use crate::pipeline::dedup::DedupWindow;
use crate::stats::Stats;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One assigned input partition.
pub struct PartitionState {
    /// Input topic.
    pub topic: Arc<str>,
    /// Input partition.
    pub partition: i32,
    /// Distinguishes this assignment from earlier ones of the same slot, so
    /// a late delivery report cannot settle a newer assignment's record.
    pub epoch: u16,
    /// Settlement watermark.
    pub ledger: Ledger,
    /// Dedup window (dropped on revoke).
    pub dedup: DedupWindow,
    /// Writes handed to librdkafka and not yet reported on: what a revoke
    /// waits for (a parked retry cannot settle before the revoke ends).
    pub outstanding: usize,
    /// Fingerprints of published records settled since the last changelog
    /// block (empty when the changelog is off).
    pub unlogged: Vec<u64>,
    /// This partition's changelog block key, made at its first block.
    pub changelog_key: Option<Box<[u8]>>,
}

/// Everything the loop and the callbacks share.
#[derive(Default)]
pub struct RouterState {
    slots: Vec<Option<PartitionState>>,
    next_epoch: u16,
    /// Moves on every assign and revoke ([`RouterState::assignment_generation`]);
    /// shared so the loop can check a remembered key without the lock.
    generation: Arc<AtomicU64>,
    /// Failed writes waiting to be sent again.
    pub retries: RetryQueue,
    /// Failed sends so far per (delivery opaque, output topic); kept apart
    /// from `retries`, whose entries leave the list when they are resent.
    attempts: HashMap<(usize, String), u32>,
    /// Slots by partition number: [`RouterState::find`] runs for every
    /// record, and a scan of `slots` strides over whole partition states.
    by_partition: Vec<Vec<usize>>,
    /// Whether settled ids are kept for the dedup changelog.
    pub changelog: bool,
    /// Acknowledgements not yet added to the per-topic counters.
    pub published: PublishedTally,
    /// Acknowledged writes not yet applied to their ledgers, in report
    /// order ([`RouterState::settle_acked`]).
    acked: Vec<usize>,
}

/// How many acknowledgements ahead [`RouterState::settle_acked`] loads a
/// ledger slot: enough to cover a miss to memory while the ones before it
/// settle.
const ACK_LOOKAHEAD: usize = 8;

/// Acknowledgements counted under the state's lock, added to the per-topic
/// counters ([`Stats::published`]) when the topic changes, after every
/// poll of the producer (`ProducerCtx::settle_acked`), and when the loop's
/// worker ends (after the consumer's last revoke). One delivery report
/// event holds one partition's batch, so consecutive reports name the same
/// topic: this saves a map lookup and four atomic operations per record.
/// Reports are told apart by the address of their librdkafka topic, not by
/// name (reading and comparing the name cost ~25 ns per record): within
/// one poll no topic is created, so an address names one topic until the
/// flush that ends the poll.
#[derive(Default)]
pub struct PublishedTally {
    topic: String,
    /// The address of the librdkafka topic counted under `topic`.
    source: usize,
    n: u64,
}

impl PublishedTally {
    /// One record acknowledged by the topic at address `source`, named
    /// `name` (asked only when the topic changes).
    #[inline]
    pub fn count<'t>(&mut self, source: usize, name: impl FnOnce() -> &'t str, stats: &Stats) {
        if self.source != source || self.n == 0 {
            self.flush(stats);
            self.topic.clear();
            self.topic.push_str(name());
            self.source = source;
        }
        self.n += 1;
    }

    /// Adds what was counted to `stats`.
    pub fn flush(&mut self, stats: &Stats) {
        if self.n > 0 {
            stats.published(&self.topic, self.n);
            self.n = 0;
        }
    }
}

/// Packs `(slot, epoch, seq)` into librdkafka's per-message opaque pointer
/// value: no allocation per record.
pub fn encode_opaque(slot: usize, epoch: u16, seq: u64) -> usize {
    (slot << 48) | ((epoch as usize) << 32) | (seq as u32 as usize)
}

/// Inverse of [`encode_opaque`]; the 32-bit sequence is widened by the caller.
pub fn decode_opaque(opaque: usize) -> (usize, u16, u32) {
    (opaque >> 48, (opaque >> 32) as u16, opaque as u32)
}

impl RouterState {
    /// Starts tracking a newly assigned partition; returns its slot.
    pub fn assign(&mut self, topic: &str, partition: i32) -> usize {
        if let Some(i) = self.find(topic, partition) {
            return i;
        }
        self.next_epoch = self.next_epoch.wrapping_add(1);
        self.generation.fetch_add(1, Ordering::Release);
        let state = PartitionState {
            topic: topic.into(),
            partition,
            epoch: self.next_epoch,
            ledger: Ledger::default(),
            dedup: DedupWindow::default(),
            outstanding: 0,
            unlogged: Vec::new(),
            changelog_key: None,
        };
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(state);
                i
            }
            None => {
                self.slots.push(Some(state));
                self.slots.len() - 1
            }
        };
        let p = usize::try_from(partition).unwrap_or(0);
        if self.by_partition.len() <= p {
            self.by_partition.resize(p + 1, Vec::new());
        }
        self.by_partition[p].push(slot);
        slot
    }

    /// Stops tracking a partition (its dedup state is dropped with it) and
    /// forgets its pending retries: the next owner reads those records again.
    pub fn revoke(&mut self, slot: usize) -> Option<PartitionState> {
        let state = self.slots.get_mut(slot)?.take()?;
        self.generation.fetch_add(1, Ordering::Release);
        if let Some(slots) = usize::try_from(state.partition)
            .ok()
            .and_then(|p| self.by_partition.get_mut(p))
        {
            slots.retain(|s| *s != slot);
        }
        let ours = |opaque: usize| {
            let (s, e, _) = decode_opaque(opaque);
            s == slot && e == state.epoch
        };
        self.retries.drop_assignment(slot, state.epoch);
        self.attempts.retain(|(opaque, _), _| !ours(*opaque));
        Some(state)
    }

    /// The slot of an assigned partition.
    #[inline]
    pub fn find(&self, topic: &str, partition: i32) -> Option<usize> {
        let slots = self.by_partition.get(usize::try_from(partition).ok()?)?;
        slots
            .iter()
            .copied()
            .find(|&slot| self.get(slot).is_some_and(|s| &*s.topic == topic))
    }

    /// `(slot, epoch)` of an assigned partition: identifies this assignment.
    #[inline]
    pub fn key_of(&self, topic: &str, partition: i32) -> Option<(usize, u16)> {
        let slot = self.find(topic, partition)?;
        Some((slot, self.get(slot)?.epoch))
    }

    /// Changes whenever a partition is assigned or revoked: a key
    /// ([`RouterState::key_of`]) remembered with it holds while it is
    /// unchanged.
    #[inline]
    pub fn assignment_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The assignment generation, readable without the state's lock: it
    /// moves under the lock, inside the consumer's rebalance callback, so
    /// a reading taken after a poll returns sees every rebalance that poll
    /// ran.
    pub fn generation_handle(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.generation)
    }

    /// The state in a slot.
    #[inline]
    pub fn get(&self, slot: usize) -> Option<&PartitionState> {
        self.slots.get(slot)?.as_ref()
    }

    /// The state in a slot, mutably.
    #[inline]
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut PartitionState> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Assigned partitions.
    pub fn partitions(&self) -> impl Iterator<Item = (usize, &PartitionState)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// Assigned partitions, mutably.
    pub fn partitions_mut(&mut self) -> impl Iterator<Item = (usize, &mut PartitionState)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|s| (i, s)))
    }

    /// Applies one acknowledgement; `None` when it was not the record's last
    /// output or the report is stale.
    pub fn settle(&mut self, opaque: usize) -> Option<Settled> {
        let changelog = self.changelog;
        let (p, seq) = self.live_mut(opaque)?;
        p.settle(seq, changelog)
    }

    /// One write to `topic` (asked only when failed sends are remembered)
    /// was acknowledged: its failed attempts are forgotten now;
    /// its [`RouterState::write_done`] and [`RouterState::settle`] wait for
    /// [`RouterState::settle_acked`] (this runs for every delivered write).
    #[inline]
    pub fn acknowledged<'t>(&mut self, opaque: usize, topic: impl FnOnce() -> &'t str) {
        if !self.attempts.is_empty() {
            self.attempts.remove(&(opaque, topic().to_owned()));
        }
        self.acked.push(opaque);
    }

    /// Whether acknowledgements wait for [`RouterState::settle_acked`].
    pub fn has_acked(&self) -> bool {
        !self.acked.is_empty()
    }

    /// Applies the acknowledgements [`RouterState::acknowledged`] queued, in
    /// their order, each as [`RouterState::write_done`] and
    /// [`RouterState::settle`]; `settled` gets each record whose last
    /// output it was. A report arrives milliseconds after its record was
    /// read, when the record's ledger slot has left the core's caches: the
    /// slot of the report [`ACK_LOOKAHEAD`] places on is loaded meanwhile.
    pub fn settle_acked(&mut self, mut settled: impl FnMut(Settled)) {
        let acked = std::mem::take(&mut self.acked);
        let changelog = self.changelog;
        for (i, &opaque) in acked.iter().enumerate() {
            if let Some(&ahead) = acked.get(i + ACK_LOOKAHEAD) {
                if let Some((p, seq)) = self.live(ahead) {
                    p.ledger.prefetch(seq);
                }
            }
            if let Some((p, seq)) = self.live_mut(opaque) {
                p.outstanding = p.outstanding.saturating_sub(1);
                if let Some(s) = p.settle(seq, changelog) {
                    settled(s);
                }
            }
        }
        self.acked = acked;
        self.acked.clear(); // keeps its capacity for the next batch
    }

    /// The live assignment a delivery opaque belongs to, with the record's
    /// full sequence number; `None` for a revoked (stale) assignment.
    fn live(&self, opaque: usize) -> Option<(&PartitionState, u64)> {
        let (slot, epoch, seq32) = decode_opaque(opaque);
        let p = self.get(slot).filter(|p| p.epoch == epoch)?;
        Some((p, widen(p.ledger_base(), seq32)))
    }

    /// [`RouterState::live`], mutably.
    fn live_mut(&mut self, opaque: usize) -> Option<(&mut PartitionState, u64)> {
        let (slot, epoch, seq32) = decode_opaque(opaque);
        let p = self.get_mut(slot).filter(|p| p.epoch == epoch)?;
        let seq = widen(p.ledger_base(), seq32);
        Some((p, seq))
    }

    /// Counts one more failed send of a record to `topic`; returns the count
    /// (for the backoff).
    pub fn failed_attempt(&mut self, opaque: usize, topic: &str) -> u32 {
        let n = self.attempts.entry((opaque, topic.to_owned())).or_insert(0);
        *n += 1;
        *n
    }

    /// The live assignment a delivery opaque belongs to, and the input
    /// offset of its record.
    pub fn source_of(&self, opaque: usize) -> Option<(&PartitionState, Option<i64>)> {
        let (p, seq) = self.live(opaque)?;
        Some((p, p.ledger.offset_of(seq)))
    }

    /// A write of a live assignment is about to be handed to librdkafka.
    pub fn write_started(&mut self, opaque: usize) {
        if let Some((p, _)) = self.live_mut(opaque) {
            p.outstanding += 1;
        }
    }

    /// One write of a live assignment was reported on (delivered or failed),
    /// or refused before it reached librdkafka.
    pub fn write_done(&mut self, opaque: usize) {
        if let Some((p, _)) = self.live_mut(opaque) {
            p.outstanding = p.outstanding.saturating_sub(1);
        }
    }

    /// Records in flight over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions().map(|(_, p)| p.ledger.in_flight()).sum()
    }
}

impl PartitionState {
    fn ledger_base(&self) -> u64 {
        self.ledger.base_seq()
    }

    /// One output of record `seq` acknowledged; a published record that
    /// settles keeps its id for the changelog when `changelog` is on.
    fn settle(&mut self, seq: u64, changelog: bool) -> Option<Settled> {
        let settled = self.ledger.settle(seq)?;
        if let (true, Some(fp)) = (changelog, settled.fingerprint) {
            self.unlogged.push(fp);
        }
        Some(settled)
    }
}

/// Rebuilds a 64-bit sequence from its low 32 bits, near `base`.
fn widen(base: u64, seq32: u32) -> u64 {
    let delta = seq32.wrapping_sub(base as u32);
    base + u64::from(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_follows_assign_and_revoke_across_topics() {
        let mut s = RouterState::default();
        let a0 = s.assign("a", 0);
        let b0 = s.assign("b", 0);
        let a7 = s.assign("a", 7);
        assert_eq!(s.find("a", 0), Some(a0));
        assert_eq!(s.find("b", 0), Some(b0));
        assert_eq!(s.find("a", 7), Some(a7));
        assert_eq!(
            (s.find("b", 7), s.find("a", 3), s.find("a", -1)),
            (None, None, None)
        );
        s.revoke(a0);
        assert_eq!(s.find("a", 0), None);
        assert_eq!(
            s.find("b", 0),
            Some(b0),
            "the other topic's partition 0 stays"
        );
        let again = s.assign("a", 0);
        assert_eq!(s.find("a", 0), Some(again));
        assert_ne!(s.key_of("a", 0).map(|k| k.1), None);
    }

    #[test]
    fn the_assignment_generation_moves_on_every_assign_and_revoke() {
        let mut s = RouterState::default();
        let g0 = s.assignment_generation();
        let a = s.assign("raw", 0);
        let g1 = s.assignment_generation();
        assert_ne!(g0, g1);
        assert_eq!(s.assign("raw", 0), a, "already assigned: nothing moves");
        assert_eq!(s.assignment_generation(), g1);
        s.revoke(a);
        let g2 = s.assignment_generation();
        assert!(g2 != g1 && g2 != g0);
        assert!(s.revoke(a).is_none());
        assert_eq!(s.assignment_generation(), g2, "nothing revoked");
        s.assign("raw", 0);
        assert!(
            ![g0, g1, g2].contains(&s.assignment_generation()),
            "reassigned"
        );
    }

    #[test]
    fn opaque_round_trips_and_widens_across_wraparound() {
        let o = encode_opaque(3, 7, (1u64 << 32) + 5);
        assert_eq!(decode_opaque(o), (3, 7, 5));
        assert_eq!(widen((1u64 << 32) + 2, 5), (1u64 << 32) + 5);
        assert_eq!(widen(u32::MAX as u64, 1), (1u64 << 32) + 1);
    }

    #[test]
    fn failed_attempts_count_up_until_delivered_or_revoked() {
        let mut s = RouterState::default();
        let slot = s.assign("raw", 0);
        let epoch = s.get(slot).unwrap().epoch;
        let o = encode_opaque(slot, epoch, 0);
        assert_eq!(s.failed_attempt(o, "a"), 1);
        assert_eq!(s.failed_attempt(o, "a"), 2, "counts survive the resend");
        assert_eq!(s.failed_attempt(o, "b"), 1, "per output topic (fan-out)");
        s.acknowledged(o, || "a");
        assert_eq!(s.failed_attempt(o, "a"), 1, "forgotten once delivered");
        s.revoke(slot);
        assert!(s.attempts.is_empty(), "forgotten on revoke");
    }

    #[test]
    fn stale_reports_do_not_settle_a_new_assignment() {
        let mut s = RouterState::default();
        let slot = s.assign("raw", 0);
        let epoch = s.get_mut(slot).unwrap().epoch;
        let seq = s.get_mut(slot).unwrap().ledger.push(0, 1, 0, None);
        s.revoke(slot);
        let again = s.assign("raw", 0);
        assert_eq!(again, slot, "the slot is reused");
        let seq2 = s.get_mut(slot).unwrap().ledger.push(0, 1, 0, None);
        assert_eq!(seq, seq2);
        assert!(
            s.settle(encode_opaque(slot, epoch, seq)).is_none(),
            "old epoch"
        );
        let new_epoch = s.get_mut(slot).unwrap().epoch;
        assert!(s.settle(encode_opaque(slot, new_epoch, seq2)).is_some());
    }

    #[test]
    fn acknowledgements_settle_in_one_pass_as_write_done_and_settle() {
        let mut s = RouterState {
            changelog: true,
            ..Default::default()
        };
        let slot = s.assign("raw", 0);
        let epoch = s.get(slot).unwrap().epoch;
        let p = s.get_mut(slot).unwrap();
        let seq = p.ledger.push_published(7, 2, 0, None, Some(42));
        p.outstanding = 2;
        let opaque = encode_opaque(slot, epoch, seq);
        assert_eq!(s.failed_attempt(opaque, "out-a"), 1);
        s.acknowledged(opaque, || "out-a");
        assert_eq!(
            s.failed_attempt(opaque, "out-a"),
            1,
            "delivered forgot the failure at once"
        );
        assert_eq!(s.get(slot).unwrap().outstanding, 2, "not applied yet");
        let mut settled = Vec::new();
        s.settle_acked(|r| settled.push(r));
        assert!(settled.is_empty(), "one of two outputs");
        assert_eq!(s.get(slot).unwrap().outstanding, 1);
        s.acknowledged(opaque, || "out-b");
        s.settle_acked(|r| settled.push(r));
        assert_eq!(settled.len(), 1, "the last output settles");
        assert_eq!(settled[0].fingerprint, Some(42));
        assert!(!s.has_acked(), "applied once");
        let p = s.get_mut(slot).unwrap();
        assert_eq!((p.outstanding, p.ledger.take_committable()), (0, Some(8)));
        assert_eq!(p.unlogged, vec![42], "kept for the changelog");
        s.acknowledged(opaque, || "out-b");
        s.revoke(slot);
        s.settle_acked(|r| settled.push(r));
        assert_eq!(settled.len(), 1, "stale: nothing settles");
    }

    #[test]
    fn a_pass_longer_than_its_lookahead_settles_every_record_in_order() {
        // Reports of two partitions interleaved, more than ACK_LOOKAHEAD of
        // them, with fan-out: each record settles on its last output.
        let mut s = RouterState::default();
        let (a, b) = (s.assign("raw", 0), s.assign("raw", 1));
        let mut opaques = Vec::new();
        for (slot, offset) in (0..20).map(|i| (if i % 2 == 0 { a } else { b }, i)) {
            let p = s.get_mut(slot).unwrap();
            let seq = p.ledger.push(offset, 2, 0, Some(offset));
            p.outstanding += 2;
            opaques.push(encode_opaque(slot, p.epoch, seq));
        }
        for &o in opaques.iter().chain(&opaques) {
            s.acknowledged(o, || "out");
        }
        let mut settled = Vec::new();
        s.settle_acked(|r| settled.push(r.event_time_ms.unwrap()));
        assert_eq!(settled, (0..20).collect::<Vec<_>>());
        for slot in [a, b] {
            let p = s.get_mut(slot).unwrap();
            assert_eq!(p.outstanding, 0);
            assert_eq!(p.ledger.in_flight(), 0);
        }
        assert_eq!(s.get_mut(a).unwrap().ledger.take_committable(), Some(19));
        assert_eq!(s.get_mut(b).unwrap().ledger.take_committable(), Some(20));
    }

    #[test]
    fn the_published_tally_adds_each_topic_run_once() {
        let stats = Stats::default();
        let mut tally = PublishedTally::default();
        let mut names_read = 0;
        // Topics by address (1: "a", 2: "b"); the name is read per run.
        for (source, topic) in [(1, "a"), (1, "a"), (1, "a"), (2, "b"), (2, "b"), (1, "a")] {
            tally.count(
                source,
                || {
                    names_read += 1;
                    topic
                },
                &stats,
            );
        }
        assert_eq!(names_read, 3, "once per run of one topic");
        // The run in progress is not added until the flush.
        assert_eq!(
            stats.published_by_topic(),
            [("a".into(), 3), ("b".into(), 2)]
        );
        tally.flush(&stats);
        tally.flush(&stats); // nothing twice
        assert_eq!(
            stats.published_by_topic(),
            [("a".into(), 4), ("b".into(), 2)]
        );
        // After a flush an address may name another topic: read again.
        tally.count(1, || "c", &stats);
        tally.flush(&stats);
        assert_eq!(
            stats.published_by_topic(),
            [("a".into(), 4), ("b".into(), 2), ("c".into(), 1)]
        );
    }
}
