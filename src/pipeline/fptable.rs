//! An open-addressing set of 64-bit fingerprints for the dedup window.
//!
//! Fingerprints are already uniform hashes, so a key's home slot is its low
//! bits and a probe touches one cache line in the common case, where
//! hashbrown touches two (its control bytes and its key slots are separate
//! arrays). Linear probing with backward-shift deletion keeps probe runs
//! short without tombstones. Zero marks an empty slot; the fingerprint 0 is
//! stored as 1 (a collision of 2⁻⁶⁴).

use super::slots::Slots;

/// A set of `u64` fingerprints.
#[derive(Debug, Default)]
pub struct FingerprintTable {
    slots: Slots,
    len: usize,
}

const MIN_SLOTS: usize = 16;

#[inline]
fn nonzero(fp: u64) -> u64 {
    fp.max(1)
}

impl FingerprintTable {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated (8 bytes each).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `fp` (`true`), or the empty slot ending its probe
    /// run (`false`). The table is never full (load ≤ 3/4), so this ends.
    #[inline]
    fn probe(&self, fp: u64) -> (usize, bool) {
        let mask = self.mask();
        let mut i = fp as usize & mask;
        loop {
            match self.slots[i] {
                0 => return (i, false),
                s if s == fp => return (i, true),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Hints the CPU to load the cache line where a probe for `fp` starts,
    /// so a lookup or removal issued a little later does not wait for memory.
    /// Removals in arrival order touch random lines: prefetching a few ahead
    /// overlaps those misses instead of paying them one after another.
    #[inline]
    pub fn prefetch(&self, fp: u64) {
        if !self.slots.is_empty() {
            let i = nonzero(fp) as usize & self.mask();
            super::prefetch_line(&self.slots[i]);
        }
    }

    /// Whether `fp` is held.
    #[inline]
    pub fn contains(&self, fp: u64) -> bool {
        !self.slots.is_empty() && self.probe(nonzero(fp)).1
    }

    /// Adds `fp`; false if it was already held.
    #[inline]
    pub fn insert(&mut self, fp: u64) -> bool {
        // Keep the load at most 3/4 so probe runs stay short.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let fp = nonzero(fp);
        match self.probe(fp) {
            (_, true) => false,
            (i, false) => {
                self.slots[i] = fp;
                self.len += 1;
                true
            }
        }
    }

    /// Removes `fp`; false if it was not held. Later entries of the probe run
    /// move back so lookups never stop early at the hole.
    pub fn remove(&mut self, fp: u64) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let (i, found) = self.probe(nonzero(fp));
        if !found {
            return false;
        }
        let mask = self.mask();
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let home = s as usize & mask;
            // Move `s` into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        true
    }

    fn grow(&mut self) {
        let new_len = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, Slots::zeroed(new_len));
        let mask = new_len - 1;
        for &fp in old.iter().filter(|&&s| s != 0) {
            let mut i = fp as usize & mask;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = fp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        /// Random operations agree with std's HashSet. Keys come from a small
        /// range with few distinct low bits, so probe runs collide and wrap.
        #[test]
        fn behaves_like_a_hash_set(ops in proptest::collection::vec((0u8..3, 0u64..64), 0..400)) {
            let mut t = FingerprintTable::default();
            let mut s = HashSet::new();
            for (op, k) in ops {
                let key = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) & 0xff0f; // clustered homes, 0 included
                let key = if key == 0 { 1 } else { key };
                match op {
                    0 => prop_assert_eq!(t.insert(key), s.insert(key)),
                    1 => prop_assert_eq!(t.remove(key), s.remove(&key)),
                    _ => prop_assert_eq!(t.contains(key), s.contains(&key)),
                }
                prop_assert_eq!(t.len(), s.len());
            }
            for k in &s {
                prop_assert!(t.contains(*k));
            }
        }
    }

    #[test]
    fn zero_is_a_valid_fingerprint() {
        let mut t = FingerprintTable::default();
        assert!(t.insert(0));
        assert!(t.contains(0) && !t.insert(0));
        assert!(t.remove(0) && t.is_empty());
    }
}
