//! Router micro-benchmarks without Kafka: dedup check/insert with 1M and 10M
//! resident ids, route matching with 1, 10 and 100 rules, a schema-cache
//! hit, and the whole per-record core (read → validate → dedup → schema →
//! route decision) at 200 B, 1 KB and 20 KB payloads.
//!
//! Target (issue 4): core ≤ 150 ns/record, flat in payload size.
//! Run: `cargo bench --bench pipeline`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use envelope_router::envelope::{proto, HeaderBuilder};
use envelope_router::pipeline::dedup::{fingerprint, DedupWindow};
use envelope_router::pipeline::route::{DefaultAction, RouteSpec, Routes};
use envelope_router::pipeline::schema::{SchemaLookup, SchemaMode};
use envelope_router::pipeline::template::CANONICAL_TOPIC;
use envelope_router::pipeline::{Pipeline, PipelineConfig, Verdict};
use envelope_router::registry::SchemaCache;
use std::hint::black_box;
use std::time::Duration;

fn dedup(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(1));
    for resident in [1_000_000u64, 10_000_000] {
        let mut w = DedupWindow::default();
        for i in 0..resident {
            w.insert(fingerprint(&i.to_le_bytes()), 0);
        }
        let mut next = resident;
        g.bench_function(BenchmarkId::new("insert_new_evict_oldest", resident), |b| {
            b.iter(|| {
                next += 1;
                w.insert(fingerprint(&next.to_le_bytes()), 0);
                w.evict_oldest();
            })
        });
        let mut probe = 0u64;
        g.bench_function(BenchmarkId::new("check_hit", resident), |b| {
            b.iter(|| {
                probe = (probe + 7919) % resident;
                black_box(w.contains(fingerprint(&(probe + next - resident).to_le_bytes())))
            })
        });
    }
    g.finish();
}

fn rules(n: usize) -> Vec<RouteSpec> {
    let yaml: String = (0..n)
        .map(|i| format!("- {{ name: r{i}, match: {{ source: [s{i}, \"x{i}*\"], category: \"c{i}_*\" }} }}\n"))
        .collect();
    serde_saphyr::from_str(if n == 0 { "[]" } else { &yaml }).unwrap()
}

fn header(category: &str) -> proto::Header {
    proto::Header {
        message_id: vec![1; 16].into(),
        env: "prod".into(),
        source: "glutton".into(),
        title: "1234".into(),
        category: category.into(),
        version: 1,
        schema_id: 42,
        ..Default::default()
    }
}

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 10, 100] {
        let mut r =
            Routes::new(&rules(n), DefaultAction::Canonical, CANONICAL_TOPIC, None).unwrap();
        // 600 distinct streams, like the production pipeline's topic count.
        let headers: Vec<_> = (0..600).map(|i| header(&format!("cat_{i}"))).collect();
        for h in &headers {
            r.plan(h);
        }
        let mut i = 0;
        g.bench_function(BenchmarkId::new("plan_cached_600_streams", n), |b| {
            b.iter(|| {
                i = (i + 1) % headers.len();
                black_box(r.plan(&headers[i]))
            })
        });
    }
    g.finish();
}

fn schema_cache(c: &mut Criterion) {
    let cache = populated_cache();
    c.bench_function("schema_cache/hit", |b| {
        b.iter(|| black_box(cache.lookup(black_box(42))))
    });
}

fn populated_cache() -> std::sync::Arc<SchemaCache> {
    use envelope_router::registry::{FileRegistry, Registry};
    // Fill through the public path: a file registry resolved into the cache.
    let cache = std::sync::Arc::new(SchemaCache::new(Duration::from_secs(30)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::File(FileRegistry::from_yaml("schemas: { 42: {}, 7: {} }").unwrap());
    let cfg: envelope_router::config::RegistryConfig = serde_saphyr::from_str("file: x").unwrap();
    let resolver = envelope_router::registry::Resolver::new(
        registry,
        cache.clone(),
        &cfg,
        rt.handle().clone(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    for id in [42, 7] {
        let tx = tx.clone();
        resolver.resolve(id, move |id| tx.send(id).unwrap());
    }
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    assert_eq!(rx.try_iter().count(), 2);
    cache
}

fn core(c: &mut Criterion) {
    let cache = populated_cache();
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    for (name, len) in [("200B", 200usize), ("1KB", 1024), ("20KB", 20 * 1024)] {
        let mut pipeline = Pipeline::new(PipelineConfig {
            routes: Routes::new(&rules(10), DefaultAction::Canonical, CANONICAL_TOPIC, None)
                .unwrap(),
            schema_mode: SchemaMode::Exists,
            max_record_bytes: 1 << 20,
        });
        let h = HeaderBuilder::new()
            .env("prod")
            .source("glutton")
            .title("1234")
            .category("telemetry_match_event")
            .version(1)
            .schema_id(42)
            .message_id(vec![0u8; 16])
            .build()
            .unwrap();
        let mut record = h.to_envelope_bytes(&vec![7u8; len]).to_vec();
        // The id's bytes sit right after the header's first key and lengths;
        // rewriting them gives every iteration a new id without re-encoding.
        let id_at = record.windows(16).position(|w| w == [0u8; 16]).unwrap();
        let mut w = DedupWindow::default();
        let mut n = 0u64;
        g.bench_function(
            BenchmarkId::new("read_validate_dedup_schema_route", name),
            |b| {
                b.iter(|| {
                    n += 1;
                    record[id_at..id_at + 8].copy_from_slice(&n.to_le_bytes());
                    // One simulated second per 100k records, a 10 s window: about
                    // 1M ids resident, each inserted once and expired once, as in
                    // the router's steady state.
                    let now_s = (n / 100_000) as u32;
                    let v = pipeline.process(black_box(&record), &mut w, now_s, &*cache);
                    if n % 1024 == 0 {
                        w.expire(now_s, 10);
                    }
                    debug_assert!(matches!(v, Verdict::Publish { .. }));
                    black_box(matches!(v, Verdict::Publish { .. }))
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, dedup, routing, schema_cache, core);
criterion_main!(benches);
