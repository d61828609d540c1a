//! Property test: the zero-copy header reader agrees with prost's full decode
//! (through the presence-tracking mirror in `envelope::reference`) on
//! generated envelopes with shuffled fields, split and repeated headers,
//! unknown fields and groups, non-minimal varints, invalid UTF-8, missing
//! required fields, and on random mutations of all of those.

use envelope_router::envelope::{reference, EnvelopeView, ReadError};
use proptest::prelude::*;

/// One protobuf field as the generator writes it.
#[derive(Debug, Clone)]
enum Field {
    Varint(u32, u64),
    Fixed32(u32, u32),
    Fixed64(u32, u64),
    Len(u32, Vec<u8>),
    Group(u32, Vec<Field>),
}

/// Writes a varint padded with `extra` redundant continuation bytes (kept
/// within protobuf's 10-byte limit).
fn put_varint(mut v: u64, extra: usize, out: &mut Vec<u8>) {
    let mut bytes = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            bytes.push(b);
            break;
        }
        bytes.push(b | 0x80);
    }
    let pad = extra.min(10 - bytes.len());
    if pad > 0 {
        *bytes.last_mut().unwrap() |= 0x80;
        bytes.extend(std::iter::repeat_n(0x80, pad - 1));
        bytes.push(0x00);
    }
    out.extend(bytes);
}

fn encode(fields: &[Field], pad: usize, out: &mut Vec<u8>) {
    for f in fields {
        match f {
            Field::Varint(t, v) => {
                put_varint(u64::from(*t) << 3, 0, out);
                put_varint(*v, pad, out);
            }
            Field::Fixed32(t, v) => {
                put_varint((u64::from(*t) << 3) | 5, 0, out);
                out.extend(v.to_le_bytes());
            }
            Field::Fixed64(t, v) => {
                put_varint((u64::from(*t) << 3) | 1, 0, out);
                out.extend(v.to_le_bytes());
            }
            Field::Len(t, b) => {
                put_varint((u64::from(*t) << 3) | 2, 0, out);
                put_varint(b.len() as u64, pad, out);
                out.extend(b);
            }
            Field::Group(t, inner) => {
                put_varint((u64::from(*t) << 3) | 3, 0, out);
                encode(inner, pad, out);
                put_varint((u64::from(*t) << 3) | 4, 0, out);
            }
        }
    }
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => "[a-z0-9_-]{0,12}".prop_map(String::into_bytes),
        2 => any::<String>().prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..6),
    ]
}

fn unknown_field() -> impl Strategy<Value = Field> {
    let leaf = prop_oneof![
        (12u32..2000, any::<u64>()).prop_map(|(t, v)| Field::Varint(t, v)),
        (12u32..2000, any::<u32>()).prop_map(|(t, v)| Field::Fixed32(t, v)),
        (12u32..2000, any::<u64>()).prop_map(|(t, v)| Field::Fixed64(t, v)),
        (12u32..2000, proptest::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(t, b)| Field::Len(t, b)),
    ];
    leaf.prop_recursive(3, 8, 4, |inner| {
        (12u32..2000, proptest::collection::vec(inner, 0..4)).prop_map(|(t, f)| Field::Group(t, f))
    })
}

fn attribute_entry() -> impl Strategy<Value = Field> {
    (
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::collection::vec(unknown_field(), 0..2),
    )
        .prop_map(|(k, v, unknown)| {
            let mut fields = unknown;
            if let Some(k) = k {
                fields.push(Field::Len(1, k));
            }
            if let Some(v) = v {
                fields.push(Field::Len(2, v));
            }
            let mut bytes = Vec::new();
            encode(&fields, 0, &mut bytes);
            Field::Len(11, bytes)
        })
}

/// Header fields: each known field 0..=2 times (usually once), plus unknowns.
fn header_fields() -> impl Strategy<Value = Vec<Field>> {
    let times = || prop_oneof![1 => Just(0usize), 8 => Just(1usize), 1 => Just(2usize)];
    (
        proptest::collection::vec((times(), 1u32..=10, text(), any::<u64>()), 10),
        proptest::collection::vec(attribute_entry(), 0..4),
        proptest::collection::vec(unknown_field(), 0..3),
    )
        .prop_map(|(known, attrs, unknown)| {
            let mut fields = unknown;
            fields.extend(attrs);
            for (i, (n, _, s, v)) in known.into_iter().enumerate() {
                let tag = i as u32 + 1;
                for k in 0..n {
                    fields.push(match tag {
                        6..=8 => Field::Varint(tag, v.wrapping_add(k as u64)),
                        _ => Field::Len(tag, s.clone()),
                    });
                }
            }
            fields
        })
}

/// A whole envelope: header fields shuffled and split into chunks, payloads,
/// unknown fields, all in random order, with optional varint padding.
fn envelope() -> impl Strategy<Value = Vec<u8>> {
    (
        header_fields().prop_shuffle(),
        1usize..=3,
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..3),
        proptest::collection::vec(unknown_field(), 0..3),
        0usize..3,
        any::<u64>(),
    )
        .prop_map(|(hfields, chunks, payloads, unknown, pad, seed)| {
            let mut top: Vec<Field> = unknown;
            let per = hfields.len().div_ceil(chunks).max(1);
            for chunk in hfields.chunks(per) {
                let mut bytes = Vec::new();
                encode(chunk, pad, &mut bytes);
                top.push(Field::Len(1, bytes));
            }
            top.extend(payloads.into_iter().map(|p| Field::Len(2, p)));
            // Deterministic shuffle of the top-level fields from the seed.
            let mut s = seed;
            for i in (1..top.len()).rev() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                top.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut out = Vec::new();
            encode(&top, pad, &mut out);
            out
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(at, x) => {
                let i = at % bytes.len();
                bytes[i] ^= x | 1;
            }
            Mutation::Truncate(at) => bytes.truncate(at % bytes.len()),
            Mutation::Insert(at, b) => {
                let i = at % bytes.len();
                bytes.splice(i..i, b.iter().copied());
            }
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, x)| Mutation::Flip(a, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn generated_envelopes_agree_with_prost(record in envelope()) {
        if let Err(e) = reference::compare(&record) {
            prop_assert!(false, "{e}\nrecord: {record:02x?}");
        }
    }

    #[test]
    fn mutated_envelopes_agree_with_prost(
        record in envelope(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let record = mutate(record, &mutations);
        // The prefetch hint reads raw bytes too: it must stay in bounds, and
        // whatever it returns lies inside the record.
        if let Some(id) = EnvelopeView::peek_message_id(&record) {
            prop_assert!(record.as_ptr_range().contains(&id.as_ptr()) || id.is_empty());
        }
        if let Err(e) = reference::compare(&record) {
            prop_assert!(false, "{e}\nrecord: {record:02x?}");
        }
    }

    #[test]
    fn arbitrary_bytes_agree_with_prost(record in proptest::collection::vec(any::<u8>(), 0..128)) {
        if let Err(e) = reference::compare(&record) {
            prop_assert!(false, "{e}\nrecord: {record:02x?}");
        }
    }
}

/// The generator must exercise the success path, not only errors: count how
/// often the reader accepts generated (unmutated) envelopes.
#[test]
fn generator_produces_mostly_readable_envelopes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = envelope();
    let (mut ok, mut missing, mut other) = (0, 0, 0);
    for _ in 0..1000 {
        let record = strategy.new_tree(&mut runner).unwrap().current();
        match EnvelopeView::read(&record) {
            Ok(_) => ok += 1,
            Err(ReadError::MissingField { .. }) => missing += 1,
            Err(_) => other += 1,
        }
    }
    assert!(ok > 250, "only {ok} of 1000 generated envelopes were readable ({missing} missing a field, {other} other errors)");
    assert!(
        missing > 20 && other > 20,
        "error paths under-exercised: {missing} missing, {other} other"
    );
}

/// Found by the fuzzer once prost 0.14.6 began checking a map field's wire
/// type: the header's attributes (field 11) written with wire type 5
/// (`0x5d`). The reader read it as length-delimited, prost refuses it.
#[test]
fn attributes_with_a_fixed32_wire_type_are_refused_like_prost() {
    let record = [
        10, 63, 10, 0, 18, 1, 0, 26, 18, 1, 0, 18, 1, 0, 18, 33, 0, 0, 0, 89, 0, 26, 26, 10, 71,
        42, 6, 34, 18, 1, 0, 124, 26, 18, 0, 33, 0, 0, 18, 1, 0, 89, 0, 26, 26, 13, 93, 42, 6, 0,
        0, 0, 82, 82, 82, 48, 120, 56, 82, 120, 38, 48, 0, 93, 0,
    ];
    envelope_router::envelope::reference::compare(&record).unwrap();
    assert!(matches!(
        EnvelopeView::read(&record),
        Err(ReadError::WrongWireType {
            field: "header.attributes",
            ..
        })
    ));
}
