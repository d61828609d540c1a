//! Measures the dedup window's real memory cost per remembered id, not an
//! estimate: heap bytes with a counting allocator, and resident memory
//! (`VmRSS`), which also sees the tables of 2 MiB and more that live in
//! mappings of their own (`pipeline/slots.rs`), out of the allocator's
//! sight: 1M and 10M ids.
//!
//! Target (issue 4): ≤ 40 bytes per id (10M ids ≤ 400 MB).
//! Run: `cargo bench --bench dedup_memory`

use envelope_router::bench::procstat;
use envelope_router::pipeline::dedup::{fingerprint, DedupWindow};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(now, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new >= l.size() {
            let now = LIVE.fetch_add(new - l.size(), Relaxed) + new - l.size();
            PEAK.fetch_max(now, Relaxed);
        } else {
            LIVE.fetch_sub(l.size() - new, Relaxed);
        }
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// This process's resident memory (`VmRSS`), in bytes.
fn resident_bytes() -> usize {
    procstat::rss_bytes().unwrap_or(0) as usize
}

fn main() {
    // `cargo test --benches` runs this once as a smoke test: keep it small there.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if quick {
        &[100_000]
    } else {
        &[1_000_000, 10_000_000]
    };
    println!(
        "{:>12} {:>14} {:>12} {:>14} {:>12} {:>14} {:>12}",
        "ids", "heap bytes", "bytes/id", "peak heap", "peak/id", "resident", "resident/id"
    );
    let mut worst = 0.0f64;
    for &n in sizes {
        let before = LIVE.load(Relaxed);
        let resident_before = resident_bytes();
        PEAK.store(before, Relaxed);
        let mut w = DedupWindow::default();
        for i in 0..n as u64 {
            w.insert(fingerprint(&i.to_le_bytes()), (i / 100_000) as u32);
        }
        let live = LIVE.load(Relaxed) - before;
        let peak = PEAK.load(Relaxed) - before;
        let resident = resident_bytes().saturating_sub(resident_before);
        let per = live as f64 / n as f64;
        let resident_per = resident as f64 / n as f64;
        let reported = w.heap_bytes() as f64 / n as f64;
        worst = worst.max(per).max(resident_per).max(reported);
        println!(
            "{n:>12} {live:>14} {per:>12.1} {peak:>14} {:>12.1} {resident:>14} {resident_per:>12.1}   (heap_bytes() reports {reported:.1}/id)",
            peak as f64 / n as f64,
        );
        assert_eq!(w.len(), n);
    }
    let verdict = if worst <= 40.0 { "meets" } else { "MISSES" };
    println!(
        "steady-state {worst:.1} bytes per id (the largest of heap, resident and reported): {verdict} the 40-byte target"
    );
}
