//! Hostile records through the router's per-record logic: every kind of
//! malformed envelope, oversize records, invalid UTF-8, huge and truncated
//! varints, and topic-name injection. Each must come out as a dead letter
//! with its reason and a detail that says precisely what is wrong — never a
//! panic, a hang, a publish, or a silent drop.

use envelope_router::envelope::proto;
use envelope_router::pipeline::dedup::DedupWindow;
use envelope_router::pipeline::route::{DefaultAction, Routes};
use envelope_router::pipeline::schema::{SchemaInfo, SchemaLookup, SchemaMode, SchemaState};
use envelope_router::pipeline::template::CANONICAL_TOPIC;
use envelope_router::pipeline::{Pipeline, PipelineConfig, Reason, Verdict};
use prost::Message;
use std::sync::Arc;

/// Schema 1 is registered; everything else is a 404.
struct OneSchema;
impl SchemaLookup for OneSchema {
    fn lookup(&self, id: u32) -> SchemaState {
        match id {
            1 => SchemaState::Known(Arc::new(SchemaInfo { subjects: vec![] })),
            _ => SchemaState::Unknown,
        }
    }
}

const MAX_RECORD: usize = 64 * 1024;

fn pipeline() -> Pipeline {
    Pipeline::new(PipelineConfig {
        routes: Routes::new(&[], DefaultAction::Canonical, CANONICAL_TOPIC, None).unwrap(),
        schema_mode: SchemaMode::Exists,
        max_record_bytes: MAX_RECORD,
    })
}

fn header() -> proto::Header {
    proto::Header {
        message_id: b"id-1".to_vec().into(),
        env: "prod".into(),
        source: "glutton".into(),
        title: "1234".into(),
        category: "match".into(),
        version: 1,
        schema_id: 1,
        ..Default::default()
    }
}

fn envelope(h: proto::Header) -> Vec<u8> {
    proto::Envelope {
        header: h,
        payload: Some(b"payload".to_vec().into()),
    }
    .encode_to_vec()
}

/// An envelope whose header bytes are given raw (field 1 of the envelope).
fn with_raw_header(header: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0a];
    prost::encoding::encode_varint(header.len() as u64, &mut out);
    out.extend_from_slice(header);
    out
}

/// The valid header's fields, encoded, with `field` replaced by raw bytes.
fn header_with_raw_field(field_key: u8, raw: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    let mut put = |key: u8, value: &[u8]| {
        h.push(key);
        prost::encoding::encode_varint(value.len() as u64, &mut h);
        h.extend_from_slice(value);
    };
    for (key, value) in [
        (0x0a, &b"id-1"[..]),
        (0x12, b"prod"),
        (0x1a, b"glutton"),
        (0x22, b"1234"),
        (0x2a, b"match"),
    ] {
        put(key, if key == field_key { raw } else { value });
    }
    h.extend_from_slice(&[0x30, 0x01, 0x38, 0x01]); // version 1, schema_id 1
    h
}

fn segment(f: impl FnOnce(&mut proto::Header)) -> Vec<u8> {
    let mut h = header();
    f(&mut h);
    envelope(h)
}

#[test]
fn a_clean_record_is_published() {
    // The baseline every hostile case below deviates from.
    let mut p = pipeline();
    let record = envelope(header());
    let v = p.process(&record, &mut DedupWindow::default(), 0, &OneSchema);
    assert!(matches!(v, Verdict::Publish { .. }), "{v:?}");
}

#[test]
fn every_hostile_record_is_dead_lettered_with_a_precise_reason() {
    let mut nested_groups = Vec::new();
    for _ in 0..200 {
        nested_groups.extend([0xa3, 0x01]); // unknown field 20, start-group
    }
    let clean = with_raw_header(&header_with_raw_field(0x12, b"prod"));
    let cases: Vec<(&str, Vec<u8>, Reason, &str)> = vec![
        // Malformed protobuf.
        (
            "empty record",
            vec![],
            Reason::Malformed,
            "required field `header` is missing",
        ),
        (
            "truncated varint",
            vec![0x0a, 0x80],
            Reason::Malformed,
            "invalid varint at byte 1",
        ),
        (
            "varint longer than 64 bits",
            vec![
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            Reason::Malformed,
            "invalid varint at byte 1",
        ),
        (
            "huge length prefix",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12],
            Reason::Malformed,
            "4294967295 bytes announced, 1 left",
        ),
        (
            "field number 0",
            vec![0x00, 0x01],
            Reason::Malformed,
            "field number must be",
        ),
        (
            "wire type 7",
            vec![0x0f, 0x01],
            Reason::Malformed,
            "invalid wire type 7",
        ),
        (
            "header as a varint",
            vec![0x08, 0x01],
            Reason::Malformed,
            "field `header` has wire type",
        ),
        (
            "header cut short",
            clean[..12].to_vec(),
            Reason::Malformed,
            "truncated",
        ),
        (
            "required schema_id missing",
            with_raw_header(&header_with_raw_field(0x12, b"prod")[..36]),
            Reason::Malformed,
            "required field `header.schema_id` is missing",
        ),
        (
            "invalid UTF-8 in env",
            with_raw_header(&header_with_raw_field(0x12, b"pr\xffod")),
            Reason::Malformed,
            "`header.env` is not valid UTF-8",
        ),
        (
            "groups nested past the limit",
            with_raw_header(&[header_with_raw_field(0x12, b"prod"), nested_groups].concat()),
            Reason::Malformed,
            "nesting deeper than",
        ),
        (
            "stray end-group",
            vec![0x1c],
            Reason::Malformed,
            "unexpected end-group",
        ),
        // Well-formed protobuf, invalid header: topic-name injection and limits.
        (
            "`..` as source",
            segment(|h| h.source = "..".into()),
            Reason::InvalidHeader,
            "source has '.'",
        ),
        (
            "`/` in title",
            segment(|h| h.title = "a/b".into()),
            Reason::InvalidHeader,
            "title has '/'",
        ),
        (
            "dot in env",
            segment(|h| h.env = "prod.evil".into()),
            Reason::InvalidHeader,
            "env has '.'",
        ),
        (
            "non-ASCII category",
            segment(|h| h.category = "café".into()),
            Reason::InvalidHeader,
            "category has 'é'",
        ),
        (
            "newline in source",
            segment(|h| h.source = "a\nb".into()),
            Reason::InvalidHeader,
            "source has '\\n'",
        ),
        (
            "empty env",
            segment(|h| h.env = String::new()),
            Reason::InvalidHeader,
            "env is empty",
        ),
        (
            "300-character category",
            segment(|h| h.category = "x".repeat(300)),
            Reason::InvalidHeader,
            "category is 300 characters",
        ),
        (
            "empty message id",
            segment(|h| h.message_id = Vec::new().into()),
            Reason::InvalidHeader,
            "message_id is empty",
        ),
        (
            "oversize message id",
            segment(|h| h.message_id = vec![7; 65].into()),
            Reason::InvalidHeader,
            "message_id is 65 bytes",
        ),
        (
            "schema id 0",
            segment(|h| h.schema_id = 0),
            Reason::InvalidHeader,
            "schema_id is 0",
        ),
        (
            "unknown schema id",
            segment(|h| h.schema_id = 999),
            Reason::UnknownSchema,
            "schema id 999",
        ),
        // Size.
        (
            "oversize record",
            segment(|_| ())
                .into_iter()
                .chain(std::iter::repeat_n(0, MAX_RECORD))
                .collect(),
            Reason::TooLarge,
            "output.max_record_bytes is 65536",
        ),
    ];
    let mut p = pipeline();
    let mut window = DedupWindow::default();
    for (what, record, want, detail_has) in cases {
        match p.process(&record, &mut window, 0, &OneSchema) {
            Verdict::DeadLetter { reason, detail } => {
                assert_eq!(reason, want, "{what}: {detail}");
                assert!(
                    detail.contains(detail_has),
                    "{what}: detail {detail:?} does not say {detail_has:?}"
                );
            }
            other => panic!("{what}: expected a dead letter ({want}), got {other:?}"),
        }
    }
    assert!(
        window.is_empty(),
        "a rejected record's id must not be remembered"
    );
}

#[test]
fn random_mutations_never_panic_and_always_get_an_explained_verdict() {
    // A cheap in-test pass (the cargo-fuzz targets go much further): every
    // byte flip, truncation and insertion of a valid record gets a verdict;
    // a rejection always carries a reason and a detail.
    let good = envelope(header());
    let mut p = pipeline();
    let mut window = DedupWindow::default();
    let mut tally = std::collections::BTreeMap::new();
    let mut check = |record: &[u8]| {
        let kind = match p.process(record, &mut window, 0, &OneSchema) {
            Verdict::Publish { .. } => "publish".to_string(),
            Verdict::Drop { reason, .. } => {
                assert_eq!(reason, Reason::Duplicate, "{record:?}");
                reason.to_string()
            }
            Verdict::DeadLetter { reason, detail } => {
                assert!(
                    !detail.is_empty(),
                    "{reason} without a detail for {record:?}"
                );
                reason.to_string()
            }
            Verdict::AwaitSchema(id) => panic!("schema {id} cannot be missing here"),
        };
        *tally.entry(kind).or_insert(0) += 1;
    };
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut r = good.clone();
            r[i] ^= flip;
            check(&r);
        }
        check(&good[..i]);
        let mut r = good.clone();
        r.insert(i, 0xff);
        check(&r);
    }
    assert_eq!(tally.values().sum::<usize>(), good.len() * 5);
    for kind in ["publish", "duplicate", "malformed", "invalid_header"] {
        assert!(
            tally.contains_key(kind),
            "no mutation led to {kind}: {tally:?}"
        );
    }
}
