//! The per-record core in a plain loop, for instruction counts: run it under
//! `valgrind --tool=callgrind` (counts are repeatable on a busy machine,
//! unlike wall clock) or alone for a rough ns/record.
//!
//! Run: `cargo bench --bench core_instructions --no-run`, then
//! `valgrind --tool=callgrind target/release/deps/core_instructions-* N`
//! for N = 3000000 and 1500000: the difference of the totals over 1.5M is
//! the steady state per record (shorter runs are still filling the window
//! and never expire an id). Without valgrind it prints ns/record. Same
//! fixture as `pipeline`'s `core` (`common/core.rs`).

mod common {
    pub mod core;
    pub mod stream;
}

use common::core::{populated_cache, Core};
use std::time::Instant;

fn main() {
    // The first numeric argument is the count. `cargo bench` passes
    // `--bench`; `cargo test --all-targets` passes nothing and only needs
    // the check that every record is published.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let records: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(
        if args.iter().any(|a| a == "--bench") {
            2_000_000
        } else {
            100_000
        },
    );
    let mut core = Core::new(populated_cache(), 1024);
    let started = Instant::now();
    let mut published = 0u64;
    for _ in 0..records {
        published += core.step() as u64;
    }
    let ns = started.elapsed().as_nanos() as f64 / records as f64;
    assert_eq!(published, records);
    println!(
        "{records} records, {ns:.1} ns/record, {} ids resident",
        core.resident()
    );
}
