//! The loop's lookahead. A turn polls a phase of up to [`POLL_PHASE`] records,
//! then handles them in order (and sends the published ones at the
//! phase's end, `Loop::handle_staged`), so librdkafka's consumer code and
//! the router's own each stay in the instruction cache through a phase. When
//! polled, a record's first cache line (where the header and its message
//! id begin) starts loading; a record librdkafka's broker thread just
//! fetched is not in the loop core's cache. When the phase is handled, the
//! dedup table lines of all its records start loading first
//! (`Pipeline::prefetch`; with a million ids resident each probe would
//! otherwise miss), then the records are handled, one after another, while
//! the later ones' lines arrive.
//!
//! A record's assignment `(slot, epoch)` is read when it is polled, before
//! the next poll can run a rebalance callback: if its partition is revoked
//! (and perhaps assigned again) while it is held, the epoch no longer
//! matches and the record is skipped; the partition's next owner reads it
//! again from the committed offset.

use super::context::Shared;
use super::state::RouterState;
use crate::pipeline::{EarlyId, Pipeline};
use rdkafka::message::{BorrowedMessage, Message};
use std::sync::atomic::{AtomicU64, Ordering};

/// A polled record and its assignment as of its poll (`None`: not ours).
pub(super) struct Held<'c> {
    pub(super) m: BorrowedMessage<'c>,
    pub(super) key: Option<(usize, u16)>,
    /// Its message id and fingerprint, once its dedup line was prefetched.
    pub(super) early: Option<EarlyId>,
}

/// Most records polled before the loop hands them on: a turn polls a
/// phase of records, then handles them, so librdkafka's consumer code and
/// the router's own each stay in the instruction cache through a phase
/// instead of evicting each other at every record (simulated: 119 → 88.5
/// misses per record; BENCHMARKS.md, 2026-12-01, seventh session).
pub const POLL_PHASE: usize = 32;

/// The records polled in this phase and not yet handled, oldest first.
#[derive(Default)]
pub(super) struct Lookahead<'c> {
    staged: Vec<Held<'c>>,
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
    /// Takes a record just polled, before the next poll can run a
    /// rebalance callback: starts loading its first line and reads its
    /// assignment, locking the state only when its partition is not the
    /// last record's or a rebalance ran since (`generation`, the state's
    /// [`RouterState::generation_handle`]).
    #[inline]
    pub(super) fn stage(
        &mut self,
        shared: &Shared,
        generation: &AtomicU64,
        m: BorrowedMessage<'c>,
    ) {
        Pipeline::prefetch_record(m.payload().unwrap_or_default());
        let key = self.key_of(shared, generation, &m);
        self.staged.push(Held {
            m,
            key,
            early: None,
        });
    }

    /// Records staged and not yet handled.
    #[inline]
    pub(super) fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Starts loading the dedup table line of every staged record and
    /// notes the id each probe found, under `state`'s lock; then hands the
    /// records over, oldest first, for handling under that same lock.
    #[inline]
    pub(super) fn take(&mut self, state: &RouterState) -> std::vec::Drain<'_, Held<'c>> {
        for h in &mut self.staged {
            h.early = prefetch_dedup(state, h);
        }
        self.staged.drain(..)
    }

    /// `(slot, epoch)` of `m`'s partition ([`RouterState::key_of`]).
    #[inline]
    fn key_of(
        &mut self,
        shared: &Shared,
        generation: &AtomicU64,
        m: &BorrowedMessage<'c>,
    ) -> Option<(usize, u16)> {
        let (rkt, partition) = (m.topic_ptr() as usize, m.partition());
        let now = generation.load(Ordering::Acquire);
        match &self.last {
            Some(l) if (l.rkt, l.partition, l.generation) == (rkt, partition, now) => l.key,
            _ => {
                let state = shared.lock();
                let generation = state.assignment_generation();
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
}

/// Starts loading the dedup table line `held`'s record will probe, and
/// returns the id it found for that probe.
#[inline]
fn prefetch_dedup(state: &RouterState, held: &Held<'_>) -> Option<EarlyId> {
    let (slot, epoch) = held.key?;
    let p = state.get(slot).filter(|p| p.epoch == epoch)?;
    Pipeline::prefetch(held.m.payload()?, &p.dedup)
}
