//! Zeroed `u64` arrays for the fingerprint table, with large ones asking
//! Linux for transparent huge pages.
//!
//! A dedup probe lands on a random line of a table of many megabytes (16 MiB
//! for a million ids). With 4 KiB pages nearly every probe also misses the
//! TLB, and in a VM each miss is a two-level page walk. Backed by 2 MiB
//! pages, the same table needs eight TLB entries. `MADV_HUGEPAGE` only acts
//! on pages not yet touched, so a large array is a fresh anonymous mapping,
//! advised before its first write. Where the advice is refused (THP `never`,
//! other systems), the array works the same on small pages. Arrays of
//! 64 KiB–1 MiB share 2 MiB huge-page chunks instead (`hugepool.rs`).
//!
//! Every array is zeroed by writing, never left to the kernel's zero page
//! (`calloc`, a fresh mapping read first): a table's rehash reads a slot
//! before it writes it, so a page first mapped to the shared zero page is
//! faulted again on the write, and replacing that read-only mapping flushes
//! the TLB of every CPU the process runs on, an inter-processor interrupt
//! that in a VM stalls the other vCPU too (BENCHMARKS.md, 2026-12-01).

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Arrays from this size up get their own huge-page-advised mapping; from
/// 64 KiB to 1 MiB (most per-partition tables) they share huge pages
/// (`hugepool.rs`); smaller ones come from the allocator.
#[cfg(target_os = "linux")]
const HUGE_FROM_BYTES: usize = 2 << 20;

/// Where an array's memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A boxed slice's buffer.
    Heap,
    /// A huge-page-advised mapping of its own.
    Mapped,
    /// A block of a shared huge-page chunk (`hugepool.rs`).
    Pooled,
}

/// A fixed-length array of `u64`, all zero when made.
pub struct Slots {
    at: NonNull<u64>,
    len: usize,
    backing: Backing,
}

// SAFETY: the buffer is owned exclusively, like a Vec's.
unsafe impl Send for Slots {}
// SAFETY: shared access only reads, as through `&[u64]`.
unsafe impl Sync for Slots {}

impl Slots {
    /// `len` zeroed slots.
    pub fn zeroed(len: usize) -> Self {
        #[cfg(target_os = "linux")]
        if len.saturating_mul(8) >= HUGE_FROM_BYTES {
            if let Some(at) = map_huge(len) {
                return Slots {
                    at,
                    len,
                    backing: Backing::Mapped,
                };
            }
        } else if let Some(at) = super::hugepool::alloc_zeroed(len * 8) {
            return Slots {
                at,
                len,
                backing: Backing::Pooled,
            };
        }
        // Not `vec![0; len]`: that is `calloc`, which hands out fresh pages
        // unwritten (zero-page mappings) or zeroes reused ones by `madvise`.
        #[allow(
            clippy::slow_vector_initialization,
            reason = "the write is the point: see the module comment"
        )]
        let mut zeros = Vec::with_capacity(len);
        zeros.resize(len, 0u64);
        let boxed = zeros.into_boxed_slice();
        Slots {
            // SAFETY: `Box::into_raw` never returns null.
            at: unsafe { NonNull::new_unchecked(Box::into_raw(boxed).cast()) },
            len,
            backing: Backing::Heap,
        }
    }

    /// Where the array lives: on huge-page-advised memory unless
    /// [`Backing::Heap`] (the kernel still decides whether it gets huge pages).
    pub fn backing(&self) -> Backing {
        self.backing
    }
}

impl Default for Slots {
    fn default() -> Self {
        Slots::zeroed(0)
    }
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("len", &self.len)
            .field("backing", &self.backing)
            .finish()
    }
}

/// Maps `len` zeroed `u64`s and advises huge pages before anything touches
/// them. `None` if the mapping fails (the caller falls back to the heap).
#[cfg(target_os = "linux")]
fn map_huge(len: usize) -> Option<NonNull<u64>> {
    let bytes = len.checked_mul(8)?.checked_next_multiple_of(4096)?;
    let at = super::hugepool::map_aligned(bytes)?;
    // SAFETY: `bytes` of fresh memory this array now owns; first touch by
    // writing (see the module comment). Huge-page-aligned, so aligned for
    // u64.
    unsafe { std::ptr::write_bytes(at.as_ptr(), 0, bytes) };
    Some(at.cast())
}

impl Deref for Slots {
    type Target = [u64];
    #[inline]
    fn deref(&self) -> &[u64] {
        // SAFETY: `len` initialised (zero-filled) u64s owned by `self`.
        unsafe { std::slice::from_raw_parts(self.at.as_ptr(), self.len) }
    }
}

impl DerefMut for Slots {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u64] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.at.as_ptr(), self.len) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        match self.backing {
            Backing::Mapped => {
                // SAFETY: the mapping made in `map_huge`, unmapped once.
                unsafe { libc::munmap(self.at.as_ptr().cast(), self.len * 8) };
                return;
            }
            Backing::Pooled => return super::hugepool::free(self.at, self.len * 8),
            Backing::Heap => {}
        }
        // SAFETY: the boxed slice leaked in `zeroed`, rebuilt once.
        drop(unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.at.as_ptr(),
                self.len,
            ))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_arrays_start_zeroed_and_keep_writes() {
        for len in [0, 16, 1 << 13, 1 << 17, 1 << 18, 1 << 19] {
            let mut s = Slots::zeroed(len);
            assert_eq!(s.len(), len);
            assert!(s.iter().all(|&x| x == 0));
            if len > 0 {
                s[len - 1] = 7;
                s[0] = 3;
                assert_eq!((s[0], s[len - 1]), (3, 7));
            }
            #[cfg(target_os = "linux")]
            {
                let expected = match len * 8 {
                    b if b >= HUGE_FROM_BYTES => Backing::Mapped,
                    b if super::super::hugepool::class_of(b).is_some() => Backing::Pooled,
                    _ => Backing::Heap,
                };
                assert_eq!(s.backing(), expected, "len {len}");
            }
        }
    }
}
