//! Blocks of 64 KiB–1 MiB carved out of shared 2 MiB huge-page chunks, for
//! the fingerprint tables too small for a huge-page mapping of their own
//! (`slots.rs`).
//!
//! With the default budget spread over many partitions most tables are
//! 1 MiB or less: 128 tables of 1 MiB on 4 KiB pages are 32k pages, far
//! beyond the TLB, and every probe's page walk (two-dimensional in a VM)
//! stalls the loop even where the line itself was prefetched (BENCHMARKS.md,
//! 2026-12-01, second session). Here two 1 MiB tables share one huge page.
//!
//! Each chunk serves one block size at a time, a power of two, so blocks
//! are aligned to their size and a block's chunk is its address rounded
//! down to 2 MiB. A chunk whose blocks are all free goes to a reserve any
//! size can take it from, still mapped and faulted in: tables grow through
//! every size, each step freeing the blocks of the last, and taking those
//! chunks back for the next size instead of unmapping them keeps the pool
//! at about the tables' final size instead of twice it, and spares a first
//! touch of a fresh huge page per step (~12 ms a chunk in a VM whose host
//! takes back free memory, where each is faulted in by the host too:
//! BENCHMARKS.md, 2026-12-01, third session). The reserve holds no more
//! empty chunks than chunks are in use, and never more than
//! [`RESERVE_CHUNKS`]: the rest go back to the system, so a small instance,
//! or one whose partitions were all revoked, does not keep memory its
//! tables gave up.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Mutex;

/// Bytes of one chunk: one huge page.
pub const CHUNK: usize = 2 << 20;
/// The smallest block served; smaller tables stay on the heap.
pub const SMALLEST: usize = 64 << 10;
/// Block sizes: 64, 128, 256, 512 KiB and 1 MiB.
const CLASSES: usize = 5;
/// Most empty chunks kept mapped for reuse (64 MiB): about what 128 tables
/// free while growing from 512 KiB to 1 MiB.
pub const RESERVE_CHUNKS: usize = 32;

/// The block size class of `bytes`, if the pool serves it.
pub fn class_of(bytes: usize) -> Option<usize> {
    (bytes.is_power_of_two() && (SMALLEST..CHUNK).contains(&bytes))
        .then(|| (bytes.trailing_zeros() - SMALLEST.trailing_zeros()) as usize)
}

/// One block size's chunks.
#[derive(Default)]
struct Class {
    /// Free blocks, by address.
    free: Vec<usize>,
    /// Blocks in use, by chunk address.
    used: HashMap<usize, u32>,
}

/// Chunks of huge-page-advised memory split into blocks.
#[derive(Default)]
pub struct Pool {
    classes: [Class; CLASSES],
    /// Empty chunks, mapped and ready for any size.
    reserve: Vec<usize>,
}

impl Pool {
    /// A block of `bytes` (a size [`class_of`] serves), not zeroed; `None`
    /// for another size or when no chunk can be mapped.
    pub fn alloc(&mut self, bytes: usize) -> Option<NonNull<u8>> {
        let class = &mut self.classes[class_of(bytes)?];
        if class.free.is_empty() {
            let base = match self.reserve.pop() {
                Some(base) => base,
                None => map_chunk()?,
            };
            class.used.insert(base, 0);
            // Popped lowest first.
            class
                .free
                .extend((0..CHUNK / bytes).rev().map(|i| base + i * bytes));
        }
        let block = class.free.pop()?;
        *class.used.get_mut(&(block & !(CHUNK - 1)))? += 1;
        NonNull::new(block as *mut u8)
    }

    /// Gives back a block [`Pool::alloc`] returned for the same `bytes`.
    /// Once none of its chunk's blocks is in use the chunk goes to the
    /// reserve, and the reserve is trimmed to the chunks still in use.
    pub fn free(&mut self, block: NonNull<u8>, bytes: usize) {
        let Some(class) = class_of(bytes).map(|c| &mut self.classes[c]) else {
            return;
        };
        let block = block.as_ptr() as usize;
        let base = block & !(CHUNK - 1);
        let Some(used) = class.used.get_mut(&base) else {
            return;
        };
        class.free.push(block);
        *used -= 1;
        if *used > 0 {
            return;
        }
        class.used.remove(&base);
        class.free.retain(|b| b & !(CHUNK - 1) != base);
        self.reserve.push(base);
        let keep = self.in_use().min(RESERVE_CHUNKS).min(self.reserve.len());
        for empty in self.reserve.drain(keep..) {
            // SAFETY: a chunk `map_chunk` mapped, no block of it in use.
            unsafe { libc::munmap(empty as *mut libc::c_void, CHUNK) };
        }
    }

    /// Chunks with a block in use, over all sizes.
    fn in_use(&self) -> usize {
        self.classes.iter().map(|c| c.used.len()).sum()
    }

    /// Chunks mapped, over all sizes and the reserve.
    #[cfg(test)]
    fn chunks(&self) -> usize {
        self.in_use() + self.reserve.len()
    }
}

/// The process's pool.
static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// A zeroed block of `bytes` from the process's pool, zeroed by writing
/// (`slots.rs` says why), or `None` if the pool does not serve the size.
pub fn alloc_zeroed(bytes: usize) -> Option<NonNull<u64>> {
    let block = {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.get_or_insert_with(Pool::default).alloc(bytes)?
    };
    // SAFETY: a block of `bytes` this caller now owns, inside a mapping.
    unsafe { std::ptr::write_bytes(block.as_ptr(), 0, bytes) };
    Some(block.cast())
}

/// Gives a block of [`alloc_zeroed`] back to the process's pool.
pub fn free(block: NonNull<u64>, bytes: usize) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    pool.get_or_insert_with(Pool::default)
        .free(block.cast(), bytes);
}

/// Maps `bytes` of memory (a multiple of the page size) aligned to a huge
/// page and advises huge pages, untouched: `bytes` and one chunk more are
/// mapped and the unaligned ends unmapped. `None` if the mapping fails.
/// Also maps the tables big enough for a mapping of their own (`slots.rs`).
pub fn map_aligned(bytes: usize) -> Option<NonNull<u8>> {
    let mapped = bytes.checked_add(CHUNK)?;
    // SAFETY: a fresh private anonymous mapping; only its own parts are
    // unmapped, and nothing has a reference into it yet.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            mapped,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if at == libc::MAP_FAILED {
            return None;
        }
        let start = at as usize;
        let base = (start + CHUNK - 1) & !(CHUNK - 1);
        if base > start {
            libc::munmap(at, base - start);
        }
        let end = start + mapped;
        if end > base + bytes {
            libc::munmap((base + bytes) as *mut libc::c_void, end - base - bytes);
        }
        // Advice only: refused under THP `never`, and then small pages do.
        libc::madvise(base as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE);
        NonNull::new(base as *mut u8)
    }
}

/// One chunk for the pool.
fn map_chunk() -> Option<usize> {
    map_aligned(CHUNK).map(|at| at.as_ptr() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_start_on_a_huge_page_and_are_writable() {
        for bytes in [CHUNK, CHUNK + 4096, 3 * CHUNK] {
            let at = map_aligned(bytes).unwrap();
            assert_eq!(at.as_ptr() as usize % CHUNK, 0, "{bytes}");
            // SAFETY: the `bytes` just mapped, unmapped once.
            unsafe {
                std::ptr::write_bytes(at.as_ptr(), 1, bytes);
                libc::munmap(at.as_ptr().cast(), bytes);
            }
        }
    }

    #[test]
    fn serves_powers_of_two_below_a_chunk() {
        assert_eq!(class_of(64 << 10), Some(0));
        assert_eq!(class_of(1 << 20), Some(4));
        for bytes in [0, 8, 32 << 10, (64 << 10) + 8, 96 << 10, 2 << 20, 4 << 20] {
            assert_eq!(class_of(bytes), None, "{bytes}");
        }
    }

    #[test]
    fn blocks_share_a_chunk_and_an_empty_chunk_serves_any_size() {
        let mut pool = Pool::default();
        let a = pool.alloc(1 << 20).unwrap();
        let b = pool.alloc(1 << 20).unwrap();
        let (a_at, b_at) = (a.as_ptr() as usize, b.as_ptr() as usize);
        assert_eq!(a_at % CHUNK, 0, "the first block starts the chunk");
        assert_eq!(b_at, a_at + (1 << 20), "the second is the other half");
        assert_eq!(pool.chunks(), 1);
        let c = pool.alloc(1 << 20).unwrap();
        assert_eq!(pool.chunks(), 2, "a third needs a second chunk");
        // Blocks are writable memory.
        // SAFETY: blocks of 1 MiB just allocated.
        unsafe {
            std::ptr::write_bytes(a.as_ptr(), 1, 1 << 20);
            std::ptr::write_bytes(c.as_ptr(), 2, 1 << 20);
        }
        pool.free(a, 1 << 20);
        assert!(pool.reserve.is_empty(), "b still uses the first chunk");
        pool.free(b, 1 << 20);
        assert_eq!(pool.reserve, [a_at], "the empty chunk is kept");
        assert!(
            pool.classes[4]
                .free
                .iter()
                .all(|b| b & !(CHUNK - 1) != a_at),
            "its blocks left the size's free list"
        );
        // A smaller size takes the reserved chunk instead of a new one.
        let small: Vec<_> = (0..4).map(|_| pool.alloc(512 << 10).unwrap()).collect();
        assert_eq!(pool.chunks(), 2);
        assert!(small
            .iter()
            .all(|s| s.as_ptr() as usize & !(CHUNK - 1) == a_at));
        for s in small {
            pool.free(s, 512 << 10);
        }
        pool.free(c, 1 << 20);
        assert_eq!(pool.chunks(), 0, "nothing in use, nothing kept");
    }

    #[test]
    fn the_reserve_never_outgrows_the_chunks_in_use() {
        let mut pool = Pool::default();
        // Two 1 MiB blocks per chunk, chunk by chunk.
        let n = 2 * RESERVE_CHUNKS + 8;
        let mut chunks: Vec<[NonNull<u8>; 2]> = (0..n)
            .map(|_| [pool.alloc(1 << 20).unwrap(), pool.alloc(1 << 20).unwrap()])
            .collect();
        assert_eq!(pool.chunks(), n);
        let mut empty = 0;
        while let Some([a, b]) = chunks.pop() {
            pool.free(a, 1 << 20);
            pool.free(b, 1 << 20);
            empty += 1;
            let in_use = n - empty;
            assert_eq!(pool.in_use(), in_use);
            assert_eq!(
                pool.reserve.len(),
                empty.min(in_use).min(RESERVE_CHUNKS),
                "after {empty} chunks emptied"
            );
        }
        assert_eq!(pool.chunks(), 0, "the last table gone, no chunk kept");
    }

    #[test]
    fn sizes_take_blocks_from_chunks_of_their_own() {
        let mut pool = Pool::default();
        let small = pool.alloc(SMALLEST).unwrap();
        let large = pool.alloc(512 << 10).unwrap();
        assert_ne!(
            small.as_ptr() as usize & !(CHUNK - 1),
            large.as_ptr() as usize & !(CHUNK - 1)
        );
        assert_eq!(pool.chunks(), 2);
        assert!(pool.alloc(3 << 10).is_none(), "not a size it serves");
        pool.free(small, SMALLEST);
        assert_eq!(pool.reserve.len(), 1, "kept while the other is in use");
        pool.free(large, 512 << 10);
        assert_eq!(pool.chunks(), 0);
    }

    #[test]
    fn a_reused_block_comes_back_zeroed() {
        let first = alloc_zeroed(128 << 10).unwrap();
        // SAFETY: a block of 128 KiB just allocated, given back once.
        unsafe { std::ptr::write_bytes(first.as_ptr(), 0xff, 16 << 10) };
        let keep = alloc_zeroed(128 << 10).unwrap(); // keeps the chunk mapped
        free(first, 128 << 10);
        let again = alloc_zeroed(128 << 10).unwrap();
        // SAFETY: 128 KiB as u64s, zeroed by `alloc_zeroed`.
        let words = unsafe { std::slice::from_raw_parts(again.as_ptr(), (128 << 10) / 8) };
        assert!(words.iter().all(|&w| w == 0));
        free(again, 128 << 10);
        free(keep, 128 << 10);
    }
}
