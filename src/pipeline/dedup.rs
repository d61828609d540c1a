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
            self.forget_oldest(n as usize);
            evicted += n as usize;
        }
        evicted
    }

    /// Forgets the `n` oldest ids, or all if it holds fewer (the entry
    /// budget is exceeded); returns how many were forgotten.
    pub fn evict_oldest(&mut self, n: usize) -> usize {
        let n = n.min(self.order.len());
        self.forget_oldest(n);
        let mut left = n;
        while left > 0 {
            let Some((_, count)) = self.seconds.front_mut() else {
                break;
            };
            let taken = left.min(*count as usize);
            *count -= taken as u32;
            left -= taken;
            if *count == 0 {
                self.seconds.pop_front();
            }
        }
        n
    }

    /// Takes the `n` oldest fingerprints off the queue and out of the
    /// table, loading the table lines of those [`PREFETCH_AHEAD`] behind
    /// them first: the removals of a large window miss the cache otherwise.
    fn forget_oldest(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(&ahead) = self.order.get(PREFETCH_AHEAD) {
                self.set.prefetch(ahead);
            }
            if let Some(fp) = self.order.pop_front() {
                self.set.remove(fp);
            }
        }
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

/// How many of its oldest ids each window gives up when `excess` ids over
/// the budget must go, for windows holding `lens` ids: an even share, a
/// window holding less than its share giving all it has and the others
/// making up for it (what taking one id from each window in turn until
/// `excess` are gone would do, without the turns).
pub fn eviction_shares(lens: &[usize], excess: usize) -> Vec<usize> {
    let taken_at = |level: usize| -> usize { lens.iter().map(|&l| l.min(level)).sum() };
    let max = lens.iter().copied().max().unwrap_or(0);
    if excess >= taken_at(max) {
        return lens.to_vec();
    }
    // The smallest level whose turns take at least `excess`.
    let (mut lo, mut hi) = (0, max);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if taken_at(mid) >= excess {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    // Full turns below that level, then one more from the first windows
    // that still have one.
    let mut left = excess - taken_at(lo.saturating_sub(1));
    lens.iter()
        .map(|&l| {
            let base = l.min(lo.saturating_sub(1));
            if l >= lo && left > 0 && lo > 0 {
                left -= 1;
                base + 1
            } else {
                base
            }
        })
        .collect()
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
        assert_eq!(w.evict_oldest(1), 1);
        assert!(!w.contains(fingerprint(&0u32.to_be_bytes())));
        assert!(w.contains(fingerprint(&1u32.to_be_bytes())));
        assert_eq!(w.len(), 4);
        // Across a second's boundary: ids 1 and 2 (seconds 0 and 1) go.
        assert_eq!(w.evict_oldest(2), 2);
        assert!(!w.contains(fingerprint(&2u32.to_be_bytes())));
        assert!(w.contains(fingerprint(&3u32.to_be_bytes())));
        // The per-second counts stay consistent with the queue.
        assert_eq!(w.expire(100, 10), 2);
        assert!(w.is_empty());
        assert_eq!(w.evict_oldest(3), 0);
    }

    #[test]
    fn a_large_window_evicts_exactly_its_oldest() {
        let mut w = DedupWindow::default();
        let fp = |i: u32| fingerprint(&i.to_be_bytes());
        for i in 0..10_000u32 {
            w.insert(fp(i), i / 100);
        }
        assert_eq!(w.evict_oldest(7_777), 7_777);
        assert_eq!(w.len(), 2_223);
        assert!((0..7_777).all(|i| !w.contains(fp(i))));
        assert!((7_777..10_000).all(|i| w.contains(fp(i))));
        // Second 77 kept 23 of its 100 ids; at 178 it is 101 s old.
        assert_eq!(w.expire(178, 100), 23, "second 77's remainder");
        assert_eq!(w.len(), 2_200);
    }

    #[test]
    fn eviction_shares_are_what_taking_one_each_in_turn_gives() {
        // The turn-by-turn reference.
        fn turns(lens: &[usize], mut excess: usize) -> Vec<usize> {
            let mut taken = vec![0; lens.len()];
            while excess > 0 {
                let mut any = false;
                for (t, &l) in taken.iter_mut().zip(lens) {
                    if excess > 0 && *t < l {
                        *t += 1;
                        excess -= 1;
                        any = true;
                    }
                }
                if !any {
                    break;
                }
            }
            taken
        }
        let cases: &[(&[usize], usize)] = &[
            (&[], 5),
            (&[10, 10, 10], 0),
            (&[10, 10, 10], 7),
            (&[1, 50, 3, 50], 20),
            (&[1, 50, 3, 50], 104),
            (&[1, 50, 3, 50], 1000),
            (&[0, 0, 5], 3),
            (&[7], 7),
        ];
        for &(lens, excess) in cases {
            assert_eq!(
                eviction_shares(lens, excess),
                turns(lens, excess),
                "{lens:?} {excess}"
            );
        }
        let mut rng = 0x1234_5678_9abc_def1u64;
        for _ in 0..200 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let lens: Vec<usize> = (0..(rng % 9) as usize)
                .map(|i| ((rng >> (i * 7)) % 40) as usize)
                .collect();
            let excess = (rng >> 40) as usize % 200;
            assert_eq!(
                eviction_shares(&lens, excess),
                turns(&lens, excess),
                "{lens:?} {excess}"
            );
        }
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
