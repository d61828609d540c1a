//! Duplicate detection by `message_id`, per input partition.
//!
//! The producer library keys records by message id, so duplicates share a
//! partition; keeping one window per partition lets a later issue move or
//! persist a partition's state on rebalance, and lets the router drop it when
//! the partition is revoked.
//!
//! The window is bounded by **arrival time** (the router's clock when it
//! reads the record: event time is producer-controlled and may be skewed or
//! replayed) and by an entry budget shared by all partitions of an instance.
//! Ids are remembered as 64-bit fingerprints, not bytes: 8 bytes in the
//! insertion-ordered queue plus 10.7–21 in the open-addressing
//! fingerprint table (`fptable.rs`: one cache line per probe, load ≤ 3/4). A fingerprint
//! collision (about n²/2⁶⁵ per window: 3·10⁻⁸ for a million ids) would drop
//! one unique record as a duplicate.

use super::fptable::FingerprintTable;
use std::collections::VecDeque;
use std::hash::Hasher;

/// Fingerprint of a message id: XXH3-64 with a fixed seed. The algorithm is
/// specified and the seed fixed, so the value is stable across restarts (for
/// persisted state), platforms and crate versions.
#[inline]
pub fn fingerprint(message_id: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(message_id, FINGERPRINT_SEED)
}

const FINGERPRINT_SEED: u64 = 0x656e_7665_6c6f_7065; // "envelope"

/// Hasher for keys that already are uniform 64-bit hashes (passed through)
/// and for small integer ids (`u32`, spread by a multiply so hashbrown's
/// top-bit tags differ).
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else just in case.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// How many removals ahead [`DedupWindow::expire`] prefetches table lines.
const PREFETCH_AHEAD: usize = 16;

/// One partition's window of remembered ids.
#[derive(Default)]
pub struct DedupWindow {
    set: FingerprintTable,
    /// Fingerprints in arrival order, for eviction.
    order: VecDeque<u64>,
    /// `(arrival second, ids that arrived in it)`, oldest first.
    seconds: VecDeque<(u32, u32)>,
}

impl DedupWindow {
    /// Whether this fingerprint is inside the window.
    #[inline]
    pub fn contains(&self, fp: u64) -> bool {
        self.set.contains(fp)
    }

    /// Starts loading the table line where `fp` would be probed, so an
    /// [`DedupWindow::insert`] of it a little later finds it in cache.
    #[inline]
    pub fn prefetch(&self, fp: u64) {
        self.set.prefetch(fp);
    }

    /// Remembers a fingerprint that arrived at `now_s` (seconds on the
    /// router's clock). Returns `false` if it was already there.
    pub fn insert(&mut self, fp: u64, now_s: u32) -> bool {
        if !self.set.insert(fp) {
            return false;
        }
        self.order.push_back(fp);
        match self.seconds.back_mut() {
            Some((s, n)) if *s == now_s => *n += 1,
            _ => self.seconds.push_back((now_s, 1)),
        }
        true
    }

    /// Takes back the most recent [`DedupWindow::insert`] of `fp` (a record
    /// that turned out to need a registry lookup first: it is processed again
    /// later and must not find itself as a duplicate).
    pub fn undo_insert(&mut self, fp: u64) {
        if self.order.back() != Some(&fp) || !self.set.remove(fp) {
            return;
        }
        self.order.pop_back();
        if let Some((_, n)) = self.seconds.back_mut() {
            *n -= 1;
            if *n == 0 {
                self.seconds.pop_back();
            }
        }
    }

    /// Forgets ids that arrived more than `ttl_s` seconds before `now_s`;
    /// returns how many were forgotten.
    pub fn expire(&mut self, now_s: u32, ttl_s: u32) -> usize {
        let mut evicted = 0;
        while let Some(&(s, n)) = self.seconds.front() {
            if now_s.saturating_sub(s) <= ttl_s {
                break;
            }
            self.seconds.pop_front();
            for _ in 0..n {
                if let Some(&ahead) = self.order.get(PREFETCH_AHEAD) {
                    self.set.prefetch(ahead);
                }
                if let Some(fp) = self.order.pop_front() {
                    self.set.remove(fp);
                }
            }
            evicted += n as usize;
        }
        evicted
    }

    /// Forgets the oldest id (entry budget exceeded); returns whether one was.
    pub fn evict_oldest(&mut self) -> bool {
        let Some(fp) = self.order.pop_front() else {
            return false;
        };
        self.set.remove(fp);
        if let Some((_, n)) = self.seconds.front_mut() {
            *n -= 1;
            if *n == 0 {
                self.seconds.pop_front();
            }
        }
        true
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Heap bytes held, from the containers' capacities.
    pub fn heap_bytes(&self) -> usize {
        self.set.capacity() * 8 + self.order.capacity() * 8 + self.seconds.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_and_forgets_after() {
        let mut w = DedupWindow::default();
        let (a, b) = (fingerprint(b"a"), fingerprint(b"b"));
        assert!(w.insert(a, 100));
        assert!(!w.insert(a, 101), "second sighting is a duplicate");
        assert!(w.insert(b, 105));
        assert!(w.contains(a) && w.contains(b));
        assert_eq!(w.expire(110, 10), 0, "a arrived 10 s ago: still inside");
        assert_eq!(w.expire(111, 10), 1);
        assert!(!w.contains(a) && w.contains(b));
        assert_eq!(w.expire(200, 10), 1);
        assert!(w.is_empty());
    }

    #[test]
    fn evicts_oldest_first_under_budget_pressure() {
        let mut w = DedupWindow::default();
        for i in 0..5u32 {
            w.insert(fingerprint(&i.to_be_bytes()), i / 2);
        }
        assert!(w.evict_oldest());
        assert!(!w.contains(fingerprint(&0u32.to_be_bytes())));
        assert!(w.contains(fingerprint(&1u32.to_be_bytes())));
        assert_eq!(w.len(), 4);
        // The per-second counts stay consistent with the queue.
        assert_eq!(w.expire(100, 10), 4);
        assert!(w.is_empty() && !w.evict_oldest());
    }

    #[test]
    fn undo_takes_back_only_the_last_insert() {
        let mut w = DedupWindow::default();
        let (a, b) = (fingerprint(b"a"), fingerprint(b"b"));
        w.insert(a, 1);
        w.insert(b, 2);
        w.undo_insert(a); // not the last one: ignored
        assert!(w.contains(a));
        w.undo_insert(b);
        assert!(!w.contains(b) && w.len() == 1);
        assert!(w.insert(b, 2), "insertable again");
        assert_eq!(w.expire(100, 1), 2, "per-second counts stayed consistent");
    }

    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(fingerprint(b"id-1"), fingerprint(b"id-1"));
        assert_ne!(fingerprint(b"id-1"), fingerprint(b"id-2"));
    }
}
