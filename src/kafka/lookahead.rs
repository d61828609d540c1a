//! The loop's lookahead: a polled record is handled two polls later, so
//! the memory it needs arrives meanwhile. When polled, its first cache line
//! (where the header and its message id begin) starts loading; a record
//! librdkafka's broker thread just fetched is not in the loop core's cache.
//! One poll later, with that line in, its dedup table line starts loading
//! (`Pipeline::prefetch`); with a million ids resident that probe would
//! otherwise miss. One poll after that it is handled.
//!
//! A record's assignment `(slot, epoch)` is read when it is polled, before
//! the next poll can run a rebalance callback: if its partition is revoked
//! (and perhaps assigned again) while it is held, the epoch no longer
//! matches and the record is skipped; the partition's next owner reads it
//! again from the committed offset.

use super::state::RouterState;
use crate::pipeline::{EarlyId, Pipeline};
use rdkafka::message::{BorrowedMessage, Message};

/// A polled record and its assignment as of its poll (`None`: not ours).
pub(super) struct Held<'c> {
    pub(super) m: BorrowedMessage<'c>,
    pub(super) key: Option<(usize, u16)>,
    /// Its message id and fingerprint, once its dedup line was prefetched.
    pub(super) early: Option<EarlyId>,
}

/// Up to two polled records waiting their turn, oldest first.
#[derive(Default)]
pub(super) struct Lookahead<'c> {
    oldest: Option<Held<'c>>,
    newer: Option<Held<'c>>,
    /// The assignment of the last record's partition.
    last: Option<LastKey>,
}

/// A partition's assignment as of an assignment generation, by the
/// address of the librdkafka topic its records carry (one per topic for
/// the consumer's life): found without reading and comparing the name.
struct LastKey {
    rkt: usize,
    partition: i32,
    generation: u64,
    key: Option<(usize, u16)>,
}

impl<'c> Lookahead<'c> {
    /// Takes a record just polled and returns the one due for handling, if
    /// any. Under `state`'s lock: reads the new record's assignment and
    /// prefetches the dedup line of the record polled before it.
    #[inline]
    pub(super) fn push(&mut self, state: &RouterState, m: BorrowedMessage<'c>) -> Option<Held<'c>> {
        Pipeline::prefetch_record(m.payload().unwrap_or_default());
        if let Some(newer) = &mut self.newer {
            newer.early = prefetch_dedup(state, newer);
        }
        let key = self.key_of(state, &m);
        let due = self.oldest.take();
        self.oldest = self.newer.replace(Held {
            m,
            key,
            early: None,
        });
        due
    }

    /// `(slot, epoch)` of `m`'s partition ([`RouterState::key_of`]).
    #[inline]
    fn key_of(&mut self, state: &RouterState, m: &BorrowedMessage<'c>) -> Option<(usize, u16)> {
        let (rkt, partition) = (m.topic_ptr() as usize, m.partition());
        let generation = state.assignment_generation();
        match &self.last {
            Some(l) if (l.rkt, l.partition, l.generation) == (rkt, partition, generation) => l.key,
            _ => {
                let key = state.key_of(m.topic(), partition);
                self.last = Some(LastKey {
                    rkt,
                    partition,
                    generation,
                    key,
                });
                key
            }
        }
    }

    /// The records still held, oldest first (at the end of a loop turn).
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Held<'c>> {
        self.oldest.take().into_iter().chain(self.newer.take())
    }
}

/// Starts loading the dedup table line `held`'s record will probe, and
/// returns the id it found for that probe.
#[inline]
fn prefetch_dedup(state: &RouterState, held: &Held<'_>) -> Option<EarlyId> {
    let (slot, epoch) = held.key?;
    let p = state.get(slot).filter(|p| p.epoch == epoch)?;
    Pipeline::prefetch(held.m.payload()?, &p.dedup)
}
