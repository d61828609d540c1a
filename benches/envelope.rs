//! Envelope micro-benchmarks: the router's header read against prost's full
//! decode of the same bytes, across payload sizes, and encoder throughput.
//!
//! Target (issue 2): header read < 60 ns/message, 20 KB within 10% of 200 B.
//! Run: `cargo bench --bench envelope`

mod common {
    pub mod stream;
}

use bytes::Bytes;
use common::stream::stream;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use envelope_router::envelope::{proto, EnvelopeView, ValidHeader};
use prost::Message;
use std::hint::black_box;

const SIZES: [(&str, usize); 3] = [("200B", 200), ("1KB", 1024), ("20KB", 20 * 1024)];

/// The seed's header: id, the four segments, version, schema id, event time.
fn lean_header() -> ValidHeader {
    stream().producer(None).build().expect("valid header")
}

/// A rich header: producer, content type and two attributes on top.
fn header() -> ValidHeader {
    stream()
        .content_type("application/x-protobuf")
        .attribute("region", "eu-west-1")
        .attribute("build", "2026.11.3")
        .build()
        .expect("valid header")
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn read(c: &mut Criterion) {
    let h = header();
    let mut group = c.benchmark_group("header_read");
    group.throughput(Throughput::Elements(1));
    for (name, len) in SIZES {
        let lean = lean_header().to_envelope_bytes(&payload(len));
        group.bench_with_input(BenchmarkId::new("view_lean", name), &lean, |b, r| {
            b.iter(|| {
                let v = EnvelopeView::read(black_box(r)).unwrap();
                black_box((v.header().schema_id, v.header().category.len()))
            })
        });
        let record = h.to_envelope_bytes(&payload(len));
        group.bench_with_input(BenchmarkId::new("view", name), &record, |b, r| {
            b.iter(|| {
                let v = EnvelopeView::read(black_box(r)).unwrap();
                black_box((v.header().schema_id, v.header().category.len()))
            })
        });
        group.bench_with_input(
            BenchmarkId::new("prost_full_decode", name),
            &record,
            |b, r| b.iter(|| black_box(proto::Envelope::decode(black_box(r.clone())).unwrap())),
        );
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let h = header();
    let mut group = c.benchmark_group("encode");
    for (name, len) in SIZES {
        let p = payload(len);
        let mut out = Vec::with_capacity(h.envelope_len(len));
        group.throughput(Throughput::Bytes(h.envelope_len(len) as u64));
        group.bench_with_input(BenchmarkId::new("encode_envelope", name), &p, |b, p| {
            b.iter(|| {
                out.clear();
                h.encode_envelope(black_box(p), &mut out);
                black_box(out.len())
            })
        });
        // A full prost encode needs the payload in an owned message first.
        let owned = proto::Envelope {
            header: h.header().clone(),
            payload: Some(Bytes::from(p.clone())),
        };
        group.bench_with_input(BenchmarkId::new("prost_encode", name), &owned, |b, m| {
            b.iter(|| {
                out.clear();
                m.encode(&mut out).unwrap();
                black_box(out.len())
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("build_header");
    group.throughput(Throughput::Elements(1));
    let stream = stream();
    group.bench_function("build_with_uuid_v7_and_now", |b| {
        b.iter(|| black_box(stream.build().unwrap()))
    });
    group.finish();
}

criterion_group!(benches, read, encode);
criterion_main!(benches);
