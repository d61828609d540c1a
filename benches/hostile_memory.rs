//! What hostile producers can make the router hold: heap (counting
//! allocator) and peak RSS after N distinct stream names, each published to
//! its own output topic (routing plans, per-topic metric series), and after
//! N distinct unknown schema ids (the negative schema cache). Each is
//! bounded: plans at 100k, topic series at 10k (+ `_other`), unknown ids at
//! 100k.
//!
//! Run: `cargo bench --bench hostile_memory` (1M each; `cargo test
//! --benches` runs 50k as a smoke test).

use envelope_router::envelope::{EnvelopeView, HeaderBuilder};
use envelope_router::pipeline::dedup::DedupWindow;
use envelope_router::pipeline::route::{DefaultAction, Routes};
use envelope_router::pipeline::schema::{SchemaInfo, SchemaLookup, SchemaMode, SchemaState};
use envelope_router::pipeline::template::CANONICAL_TOPIC;
use envelope_router::pipeline::{Pipeline, PipelineConfig, Verdict};
use envelope_router::registry::SchemaCache;
use envelope_router::stats::Stats;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Relaxed);
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct AllKnown;
impl SchemaLookup for AllKnown {
    fn lookup(&self, _: u32) -> SchemaState {
        SchemaState::Known(Arc::new(SchemaInfo { subjects: vec![] }))
    }
}

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: u32 = if quick { 50_000 } else { 1_000_000 };

    // N distinct streams (a new title each), every record published.
    let before = LIVE.load(Relaxed);
    let mut pipeline = Pipeline::new(PipelineConfig {
        routes: Routes::new(&[], DefaultAction::Canonical, CANONICAL_TOPIC, None).unwrap(),
        schema_mode: SchemaMode::Exists,
        max_record_bytes: 1_000_000,
    });
    let stats = Stats::default();
    let mut dedup = DedupWindow::default();
    let mut record = Vec::new();
    for i in 0..n {
        record.clear();
        let h = HeaderBuilder::new()
            .env("prod")
            .source("glutton")
            .title(format!("t{i}"))
            .category("match")
            .version(1)
            .schema_id(1)
            .build()
            .unwrap();
        h.encode_envelope(b"p", &mut record);
        assert!(EnvelopeView::read(&record).is_ok());
        match pipeline.process(&record, &mut dedup, 0, &AllKnown) {
            Verdict::Publish { plan, .. } => {
                for t in plan.targets() {
                    stats.published(&t.topic, 1);
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let dedup_bytes = dedup.heap_bytes();
    let streams_heap = LIVE.load(Relaxed) - before;
    println!(
        "{n} distinct streams: heap {:.1} MiB ({:.1} MiB of it the dedup window of {n} ids), {} cached plans, {} topic series",
        mib(streams_heap),
        mib(dedup_bytes),
        pipeline.cached_streams(),
        stats.topic_series()
    );
    drop(dedup);

    // N distinct unknown schema ids.
    let before = LIVE.load(Relaxed);
    let cache = SchemaCache::new(Duration::from_secs(30));
    for id in 0..n {
        cache.store(id, None);
    }
    println!(
        "{n} distinct unknown schema ids: heap {:.1} MiB, {} remembered",
        mib(LIVE.load(Relaxed) - before),
        cache.unknown_len()
    );
    if let Some(rss) = envelope_router::bench::procstat::peak_rss_bytes() {
        println!("peak RSS of this process: {:.1} MiB", mib(rss as usize));
    }
}
