//! The per-record core in a plain loop, for instruction counts: run it under
//! `valgrind --tool=callgrind` (counts are repeatable on a busy machine,
//! unlike wall clock) or alone for a rough ns/record.
//!
//! Run: `cargo bench --bench core_instructions --no-run`, then
//! `valgrind --tool=callgrind target/release/deps/core_instructions-* 400000`
//! and divide the total by the record count. Without valgrind it prints
//! ns/record. Same record, rules and ~1M-id window as `pipeline`'s `core`.

use envelope_router::envelope::HeaderBuilder;
use envelope_router::pipeline::dedup::DedupWindow;
use envelope_router::pipeline::route::{DefaultAction, RouteSpec, Routes};
use envelope_router::pipeline::schema::SchemaMode;
use envelope_router::pipeline::template::CANONICAL_TOPIC;
use envelope_router::pipeline::{Pipeline, PipelineConfig, Verdict};
use envelope_router::registry::{FileRegistry, Registry, Resolver, SchemaCache};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    // `cargo bench` passes `--bench`; the first numeric argument is the count.
    let records: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let cache = Arc::new(SchemaCache::new(Duration::from_secs(30)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::File(FileRegistry::from_yaml("schemas: { 42: {} }").unwrap());
    let cfg: envelope_router::config::RegistryConfig = serde_saphyr::from_str("file: x").unwrap();
    let resolver = Resolver::new(registry, cache.clone(), &cfg, rt.handle().clone());
    let (tx, rx) = std::sync::mpsc::channel();
    resolver.resolve(42, move |id| tx.send(id).unwrap());
    // The resolver runs on this current-thread runtime: drive it until done.
    rt.block_on(async {
        while rx.try_recv().is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let yaml: String = (0..10)
        .map(|i| format!("- {{ name: r{i}, match: {{ source: [s{i}, \"x{i}*\"], category: \"c{i}_*\" }} }}\n"))
        .collect();
    let specs: Vec<RouteSpec> = serde_saphyr::from_str(&yaml).unwrap();
    let mut pipeline = Pipeline::new(PipelineConfig {
        routes: Routes::new(&specs, DefaultAction::Canonical, CANONICAL_TOPIC, None).unwrap(),
        schema_mode: SchemaMode::Exists,
        max_record_bytes: 1 << 20,
    });
    let mut record = HeaderBuilder::new()
        .env("prod")
        .source("glutton")
        .title("1234")
        .category("telemetry_match_event")
        .version(1)
        .schema_id(42)
        .message_id(vec![0u8; 16])
        .build()
        .unwrap()
        .to_envelope_bytes(&[7u8; 1024])
        .to_vec();
    let id_at = record.windows(16).position(|w| w == [0u8; 16]).unwrap();
    let mut window = DedupWindow::default();
    let started = Instant::now();
    let mut published = 0u64;
    for n in 1..=records {
        record[id_at..id_at + 8].copy_from_slice(&n.to_le_bytes());
        let now_s = (n / 100_000) as u32;
        let v = pipeline.process(black_box(&record), &mut window, now_s, &*cache);
        if n % 1024 == 0 {
            window.expire(now_s, 10);
        }
        published += matches!(v, Verdict::Publish { .. }) as u64;
    }
    let ns = started.elapsed().as_nanos() as f64 / records as f64;
    assert_eq!(published, records);
    println!(
        "{records} records, {ns:.1} ns/record, {} ids resident",
        window.len()
    );
}
