//! Router micro-benchmarks without Kafka: dedup check/insert with 1M and 10M
//! resident ids, route matching with 1, 10 and 100 rules, a schema-cache
//! hit, and the whole per-record core (read → validate → dedup → schema →
//! route decision) at 200 B, 1 KB and 20 KB payloads.
//!
//! Target (issue 4): core ≤ 150 ns/record, flat in payload size.
//! Run: `cargo bench --bench pipeline`

mod common {
    pub mod core;
    pub mod stream;
}

use common::core::{populated_cache, rules, Core};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use envelope_router::envelope::proto;
use envelope_router::pipeline::dedup::{fingerprint, DedupWindow};
use envelope_router::pipeline::route::{DefaultAction, Routes};
use envelope_router::pipeline::schema::SchemaLookup;
use envelope_router::pipeline::template::CANONICAL_TOPIC;
use std::hint::black_box;

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
                w.evict_oldest(1);
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

fn core(c: &mut Criterion) {
    let cache = populated_cache();
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    for (name, len) in [("200B", 200usize), ("1KB", 1024), ("20KB", 20 * 1024)] {
        let mut core = Core::new(cache.clone(), len);
        g.bench_function(
            BenchmarkId::new("read_validate_dedup_schema_route", name),
            |b| {
                b.iter(|| {
                    let published = core.step();
                    debug_assert!(published);
                    black_box(published)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, dedup, routing, schema_cache, core);
criterion_main!(benches);
