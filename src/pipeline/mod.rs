//! The router's per-record logic, free of Kafka I/O: read the header,
//! validate it, check for duplicates, check the schema id, decide the route.
//! The Kafka edge (`crate::kafka`) feeds records in and acts on verdicts.

pub mod changelog;
pub mod dedup;
pub mod fptable;
#[cfg(target_os = "linux")]
mod hugepool;
pub mod reason;
pub mod route;
pub mod schema;
pub mod slots;
pub mod template;

use crate::envelope::{EnvelopeView, HeaderView};
use dedup::{fingerprint, DedupWindow};
pub use reason::Reason;
use route::{RouteDecision, Routes};
pub use route::{SchemaMemo, StreamPlan, Target};
use schema::{SchemaInfo, SchemaLookup, SchemaMode, SchemaState};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

/// What to do with one record.
#[derive(Debug)]
pub enum Verdict {
    /// Republish the record's bytes unchanged to each target.
    Publish {
        /// The envelope's event time, unix ms (for event-time latency).
        /// The header itself is not carried: its 160-byte view was copied
        /// into every published verdict; mirroring it reads it again.
        event_time_ms: Option<i64>,
        /// The plan holding the targets (shared by every record of the stream).
        plan: Arc<StreamPlan>,
        /// The message id's fingerprint, for the dedup changelog once the
        /// record's outputs are acknowledged.
        fingerprint: u64,
    },
    /// Drop on purpose: `Duplicate` or `Filtered`; counted, not dead-lettered.
    Drop {
        /// Why.
        reason: Reason,
        /// The filtering rule for `Filtered`.
        rule: Option<Arc<str>>,
    },
    /// Send to the dead-letter topic.
    DeadLetter {
        /// Why.
        reason: Reason,
        /// A human-readable explanation (built only for rejected records).
        detail: String,
    },
    /// The schema id is not cached: fetch it, then process this record again.
    /// Nothing was changed by this call.
    AwaitSchema(u32),
}

/// A record's message id as found before its header is read (producers
/// put it first), with its dedup fingerprint: what [`Pipeline::prefetch`]
/// computed, handed on to [`Pipeline::process_early`].
#[derive(Debug, Clone, Copy)]
pub struct EarlyId {
    /// Where the id starts in the record, and its length: it is used only
    /// if the header reader finds the very same bytes.
    at: usize,
    len: usize,
    fingerprint: u64,
}

impl EarlyId {
    /// The leading message id of `record`, if it starts with one.
    #[inline]
    fn of(record: &[u8]) -> Option<EarlyId> {
        let id = EnvelopeView::peek_message_id(record)?;
        Some(EarlyId {
            at: id.as_ptr() as usize,
            len: id.len(),
            fingerprint: fingerprint(id),
        })
    }

    /// Whether `id` is the slice this was found at (a repeated field would
    /// make the reader keep a later one).
    #[inline]
    fn is(&self, id: &[u8]) -> bool {
        (self.at, self.len) == (id.as_ptr() as usize, id.len())
    }
}

/// Settings of the per-record logic.
pub struct PipelineConfig {
    /// Routing rules (with the subject template in `subject` mode).
    pub routes: Routes,
    /// Schema check mode.
    pub schema_mode: SchemaMode,
    /// Records above this size are dead-lettered as `too_large`.
    pub max_record_bytes: usize,
}

/// The per-record logic.
pub struct Pipeline {
    cfg: PipelineConfig,
    /// Known schema ids seen by this pipeline. Registered ids never change,
    /// so a known id is remembered here for good; this spares the shared
    /// cache's lock and reference count on every record.
    known: HashMap<u32, Arc<SchemaInfo>, BuildHasherDefault<dedup::IdentityHasher>>,
    /// Lookups `known` answered since [`Pipeline::flush_counts`]: the
    /// cache's hit counter is shared, and an atomic add per record cost
    /// the router ~1.5% at 256 B.
    memo_hits: u64,
    /// Starts at 1; moves whenever an entry of `known` is dropped or
    /// replaced, so a stream's [`SchemaMemo`] of an older entry no longer
    /// holds.
    known_generation: u32,
}

/// Hints the CPU to load the cache line holding `at`; nothing else changes.
#[inline(always)]
pub(crate) fn prefetch_line<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch of a
        // valid address has no effect but on the cache.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((at as *const T).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Most schema ids [`Pipeline`] remembers before it starts over.
const KNOWN_SCHEMAS_LIMIT: usize = 100_000;

impl Pipeline {
    /// Builds the pipeline.
    pub fn new(cfg: PipelineConfig) -> Self {
        Pipeline {
            cfg,
            known: HashMap::default(),
            memo_hits: 0,
            known_generation: 1,
        }
    }

    /// Adds the schema-cache hits this pipeline counted to `schemas`'
    /// metric (a consume loop calls it once per turn, and before it drops
    /// the pipeline).
    pub fn flush_counts(&mut self, schemas: &impl SchemaLookup) {
        if self.memo_hits > 0 {
            schemas.memo_hits(std::mem::take(&mut self.memo_hits));
        }
    }

    /// Distinct streams with a cached plan.
    pub fn cached_streams(&self) -> usize {
        self.cfg.routes.cached_streams()
    }

    /// Starts loading the record's first cache line, where the header and
    /// its message id begin, without waiting for it: a record just fetched
    /// by another thread is not in this core's cache, and
    /// [`Pipeline::prefetch`] reads that line.
    #[inline]
    pub fn prefetch_record(record: &[u8]) {
        if let Some(first) = record.first() {
            prefetch_line(first);
        }
    }

    /// Starts loading the dedup table line a later [`Pipeline::process`] of
    /// `record` will probe. With a million ids resident that probe misses
    /// the cache, and `process`'s own early start covers only the header
    /// read: a caller that knows the next record calls this before
    /// processing the current one, and the line arrives meanwhile. A hint:
    /// it changes nothing, and a record without a leading id is skipped.
    /// The id found is returned for [`Pipeline::process_early`], so the
    /// record's id is not found and hashed a second time.
    #[inline]
    pub fn prefetch(record: &[u8], dedup: &DedupWindow) -> Option<EarlyId> {
        let early = EarlyId::of(record)?;
        dedup.prefetch(early.fingerprint);
        Some(early)
    }

    /// Decides what to do with one record. `dedup` is the window of the
    /// record's input partition; `now_s` the router clock in seconds.
    #[inline]
    pub fn process(
        &mut self,
        record: &[u8],
        dedup: &mut DedupWindow,
        now_s: u32,
        schemas: &impl SchemaLookup,
    ) -> Verdict {
        self.process_early(record, None, dedup, now_s, schemas)
    }

    /// [`Pipeline::process`] with what [`Pipeline::prefetch`] returned for
    /// this same `record` (its dedup line was prefetched then).
    pub fn process_early(
        &mut self,
        record: &[u8],
        early: Option<EarlyId>,
        dedup: &mut DedupWindow,
        now_s: u32,
        schemas: &impl SchemaLookup,
    ) -> Verdict {
        if record.len() > self.cfg.max_record_bytes {
            return dead_letter(
                Reason::TooLarge,
                format!(
                    "record is {} bytes; output.max_record_bytes is {}",
                    record.len(),
                    self.cfg.max_record_bytes
                ),
            );
        }
        // With a million ids resident, the dedup probe below misses the
        // cache. Producers put the id first, so it is found without reading
        // the header: start loading its table line now (unless the caller's
        // prefetch did), and it arrives while the header is read and the
        // plan found.
        let early = early.or_else(|| Self::prefetch(record, dedup));
        // Borrowed in place: the header is ~160 bytes, and each move of it
        // was a `memcpy` call on this path.
        let read = EnvelopeView::try_read(record);
        let header = match &read {
            Some(view) => view.header(),
            None => return malformed(record),
        };
        // Validation and the stream's plan in one step: a stream's own
        // fields are checked once, when its plan is first cached.
        let plan = match self.cfg.routes.validated_plan(header) {
            Ok(plan) => plan,
            Err(e) => return dead_letter(Reason::InvalidHeader, e.to_string()),
        };
        // One probe: remember the id now, and take it back in the rare case
        // the record is not published after all: it waits for the registry
        // (and is processed again), or it is dead-lettered (a producer that
        // fixes the cause and re-sends the same id must not be dropped).
        // The peeked id is the header's id when it is the same slice (a
        // repeated field would make the reader keep a later one).
        let fp = match early {
            Some(e) if e.is(header.message_id) => e.fingerprint,
            _ => fingerprint(header.message_id),
        };
        if !dedup.insert(fp, now_s) {
            return Verdict::Drop {
                reason: Reason::Duplicate,
                rule: None,
            };
        }
        match self.decide(header, &plan, schemas) {
            None => Verdict::Publish {
                event_time_ms: header.event_time_ms,
                plan,
                fingerprint: fp,
            },
            Some(verdict) => {
                if !matches!(verdict, Verdict::Drop { .. }) {
                    dedup.undo_insert(fp);
                }
                verdict
            }
        }
    }

    /// Schema check and route for a valid, first-seen record: `None` to
    /// publish it, or the verdict that stops it.
    fn decide(
        &mut self,
        header: &HeaderView<'_>,
        plan: &StreamPlan,
        schemas: &impl SchemaLookup,
    ) -> Option<Verdict> {
        // A stream's records mostly share a schema id: once it passed the
        // check for this stream's plan, the next record with that id (of
        // the same known entry) skips the lookup and the subject search.
        let memo = SchemaMemo::key(self.known_generation, header.schema_id);
        if plan.schema_memo.holds(memo) {
            self.memo_hits += 1;
            return Self::route_verdict(plan);
        }
        let info = match self.known.get(&header.schema_id) {
            Some(info) => {
                self.memo_hits += 1;
                info
            }
            None => match schemas.lookup(header.schema_id) {
                SchemaState::Miss => return Some(Verdict::AwaitSchema(header.schema_id)),
                SchemaState::Unknown => {
                    return Some(dead_letter(
                        Reason::UnknownSchema,
                        format!("schema id {} is not registered", header.schema_id),
                    ))
                }
                SchemaState::Known(info) => {
                    if self.known.len() >= KNOWN_SCHEMAS_LIMIT {
                        self.known.clear();
                        self.known_changed();
                    }
                    self.known.entry(header.schema_id).or_insert(info)
                }
            },
        };
        if let (Some(subject), SchemaMode::Subject) = (&plan.subject, self.cfg.schema_mode) {
            if !info.subjects.contains(subject) {
                if schemas.refresh(header.schema_id) {
                    // Registered under more subjects since it was fetched?
                    self.known.remove(&header.schema_id);
                    self.known_changed();
                    return Some(Verdict::AwaitSchema(header.schema_id));
                }
                return Some(dead_letter(
                    Reason::SchemaSubjectMismatch,
                    format!(
                        "schema id {} is registered under {:?}, not under {subject:?}",
                        header.schema_id, info.subjects
                    ),
                ));
            }
        }
        // (A clear above moved the generation: the key is taken again.)
        plan.schema_memo
            .remember(SchemaMemo::key(self.known_generation, header.schema_id));
        Self::route_verdict(plan)
    }

    /// An entry of `known` was dropped or replaced: the streams' subject
    /// memos of the entries before stop holding.
    fn known_changed(&mut self) {
        self.known_generation = self.known_generation.wrapping_add(1).max(1);
    }

    /// The verdict of a record whose schema check passed: `None` to
    /// publish it.
    #[inline]
    fn route_verdict(plan: &StreamPlan) -> Option<Verdict> {
        match &plan.route {
            RouteDecision::Publish(_) => None,
            RouteDecision::Drop(rule) => Some(Verdict::Drop {
                reason: Reason::Filtered,
                rule: Some(rule.clone()),
            }),
            RouteDecision::Unrouted => Some(dead_letter(
                Reason::Unrouted,
                "no route matched and the default is dead_letter".into(),
            )),
            RouteDecision::TopicTooLong { route, len } => Some(dead_letter(
                Reason::InvalidHeader,
                format!("route {route:?} renders a {len}-byte topic; Kafka allows 249"),
            )),
        }
    }
}

/// The verdict for a record that is not an envelope, with the reader's
/// explanation.
#[cold]
#[inline(never)]
fn malformed(record: &[u8]) -> Verdict {
    let detail = match EnvelopeView::read(record) {
        Err(e) => e.to_string(),
        Ok(_) => unreachable!("try_read refused what read accepts"),
    };
    dead_letter(Reason::Malformed, detail)
}

fn dead_letter(reason: Reason, detail: String) -> Verdict {
    Verdict::DeadLetter { reason, detail }
}

#[cfg(test)]
mod tests {
    use super::route::{DefaultAction, RouteSpec};
    use super::schema::SchemaInfo;
    use super::template::{Template, CANONICAL_TOPIC};
    use super::*;
    use crate::envelope::{proto, HeaderBuilder};
    use prost::Message;
    use std::collections::HashMap;

    struct Registry(HashMap<u32, SchemaState>);
    impl SchemaLookup for Registry {
        fn lookup(&self, id: u32) -> SchemaState {
            self.0.get(&id).cloned().unwrap_or(SchemaState::Miss)
        }
    }

    fn registry() -> Registry {
        let known = |s: &[&str]| {
            SchemaState::Known(Arc::new(SchemaInfo {
                subjects: s.iter().map(|s| s.to_string()).collect(),
            }))
        };
        Registry(HashMap::from([
            (1, known(&["match-v1"])),
            (2, known(&["other"])),
            (3, known(&["debug_x-v1"])),
            (404, SchemaState::Unknown),
        ]))
    }

    fn pipeline(mode: SchemaMode, routes: &str, default: DefaultAction) -> Pipeline {
        let specs: Vec<RouteSpec> = serde_saphyr::from_str(routes).unwrap();
        let subject = Template::parse("{category}-v{version}").unwrap();
        Pipeline::new(PipelineConfig {
            routes: Routes::new(&specs, default, CANONICAL_TOPIC, Some(subject)).unwrap(),
            schema_mode: mode,
            max_record_bytes: 4096,
        })
    }

    fn record(category: &str, schema_id: u32, id: &[u8]) -> Vec<u8> {
        HeaderBuilder::new()
            .env("prod")
            .source("glutton")
            .title("1234")
            .category(category)
            .version(1)
            .schema_id(schema_id)
            .message_id(id.to_vec())
            .build()
            .unwrap()
            .to_envelope_bytes(b"payload")
            .to_vec()
    }

    fn reason(v: &Verdict) -> Option<Reason> {
        match v {
            Verdict::Drop { reason, .. } | Verdict::DeadLetter { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    fn published(v: &Verdict) -> bool {
        matches!(v, Verdict::Publish { .. })
    }

    #[test]
    fn a_passed_subject_check_is_remembered_per_schema_id() {
        let (reg, mut w) = (registry(), DedupWindow::default());
        let mut p = pipeline(SchemaMode::Subject, "[]", DefaultAction::Canonical);
        // The stream "match" v1 has the subject match-v1, which id 1 has.
        assert!(published(&p.process(
            &record("match", 1, b"a"),
            &mut w,
            0,
            &reg
        )));
        assert!(published(&p.process(
            &record("match", 1, b"b"),
            &mut w,
            0,
            &reg
        )));
        // The stream remembers id 1, not "passed": id 2 is checked.
        assert_eq!(
            reason(&p.process(&record("match", 2, b"c"), &mut w, 0, &reg)),
            Some(Reason::SchemaSubjectMismatch)
        );
        assert!(published(&p.process(
            &record("match", 1, b"d"),
            &mut w,
            0,
            &reg
        )));
    }

    /// A registry whose id 1 loses the subject match-v1 when it is
    /// fetched again (refreshed after another stream's mismatch).
    struct Changing(std::cell::Cell<bool>);
    impl SchemaLookup for Changing {
        fn lookup(&self, id: u32) -> SchemaState {
            let subjects = match (id, self.0.get()) {
                (1, false) => vec!["match-v1".to_string()],
                (1, true) => vec!["other-v1".to_string()],
                _ => return SchemaState::Miss,
            };
            SchemaState::Known(Arc::new(SchemaInfo { subjects }))
        }
        fn refresh(&self, _id: u32) -> bool {
            !self.0.replace(true)
        }
    }

    #[test]
    fn a_schema_fetched_again_is_checked_again() {
        let (reg, mut w) = (Changing(false.into()), DedupWindow::default());
        let mut p = pipeline(SchemaMode::Subject, "[]", DefaultAction::Canonical);
        assert!(published(&p.process(
            &record("match", 1, b"a"),
            &mut w,
            0,
            &reg
        )));
        // Another stream's mismatch has id 1 fetched again...
        assert!(matches!(
            p.process(&record("other", 1, b"b"), &mut w, 0, &reg),
            Verdict::AwaitSchema(1)
        ));
        assert!(published(&p.process(
            &record("other", 1, b"b"),
            &mut w,
            0,
            &reg
        )));
        // ...and "match" is not let through on what it saw before.
        assert_eq!(
            reason(&p.process(&record("match", 1, b"c"), &mut w, 0, &reg)),
            Some(Reason::SchemaSubjectMismatch)
        );
    }

    #[test]
    fn a_remembered_schema_id_lets_no_other_id_through() {
        let reg = registry();
        let mut p = pipeline(SchemaMode::Exists, "[]", DefaultAction::Canonical);
        let mut w = DedupWindow::default();
        let mut verdict = |schema_id, id: &[u8]| {
            reason(&p.process(&record("match", schema_id, id), &mut w, 0, &reg))
        };
        assert_eq!(
            verdict(1, b"a"),
            None,
            "published; id 1 remembered for the stream"
        );
        assert_eq!(verdict(404, b"b"), Some(Reason::UnknownSchema));
        assert_eq!(verdict(1, b"c"), None);
        assert_eq!(verdict(404, b"d"), Some(Reason::UnknownSchema));
    }

    #[test]
    fn memo_hits_reach_the_cache_counter_when_flushed() {
        struct Counting(std::cell::Cell<u64>, Registry);
        impl SchemaLookup for Counting {
            fn lookup(&self, id: u32) -> SchemaState {
                self.1.lookup(id)
            }
            fn memo_hits(&self, n: u64) {
                self.0.set(self.0.get() + n);
            }
        }
        let schemas = Counting(Default::default(), registry());
        let mut p = pipeline(SchemaMode::Exists, "[]", DefaultAction::Canonical);
        let mut w = DedupWindow::default();
        for id in [&b"a"[..], b"b", b"c"] {
            let r = record("match", 1, id);
            assert!(matches!(
                p.process(&r, &mut w, 0, &schemas),
                Verdict::Publish { .. }
            ));
        }
        assert_eq!(schemas.0.get(), 0, "counted in the pipeline until flushed");
        p.flush_counts(&schemas);
        // The first record asked the cache; the other two hit the memo.
        assert_eq!(schemas.0.get(), 2);
        p.flush_counts(&schemas);
        assert_eq!(schemas.0.get(), 2, "each hit added once");
    }

    #[test]
    fn publishes_then_drops_the_duplicate() {
        let mut p = pipeline(SchemaMode::Exists, "[]", DefaultAction::Canonical);
        let mut w = DedupWindow::default();
        let r = record("match", 1, b"id-1");
        match p.process(&r, &mut w, 0, &registry()) {
            Verdict::Publish {
                event_time_ms,
                plan,
                ..
            } => {
                assert_eq!(
                    event_time_ms,
                    EnvelopeView::read(&r).unwrap().header().event_time_ms
                );
                assert_eq!(&*plan.targets()[0].topic, "prod.glutton.1234.match-v1");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            reason(&p.process(&r, &mut w, 1, &registry())),
            Some(Reason::Duplicate)
        );
    }

    #[test]
    fn each_reject_has_its_reason() {
        let reg = registry();
        let mut w = DedupWindow::default();
        let mut p = pipeline(
            SchemaMode::Subject,
            "[{name: f, match: {category: 'debug_*'}, action: drop}]",
            DefaultAction::DeadLetter,
        );
        let cases: Vec<(Vec<u8>, Reason)> = vec![
            (vec![0x0a, 0x05, 0x01], Reason::Malformed),
            (vec![0u8; 5000], Reason::TooLarge),
            (
                proto::Envelope {
                    header: proto::Header {
                        message_id: vec![1].into(),
                        env: "pr.od".into(),
                        source: "s".into(),
                        title: "t".into(),
                        category: "c".into(),
                        version: 1,
                        schema_id: 1,
                        ..Default::default()
                    },
                    payload: None,
                }
                .encode_to_vec(),
                Reason::InvalidHeader,
            ),
            (record("match", 404, b"a"), Reason::UnknownSchema),
            (record("match", 2, b"b"), Reason::SchemaSubjectMismatch),
            (record("debug_x", 3, b"c"), Reason::Filtered),
        ];
        for (rec, want) in cases {
            let v = p.process(&rec, &mut w, 0, &reg);
            assert_eq!(reason(&v), Some(want), "{v:?}");
            if let Verdict::DeadLetter { detail, .. } = v {
                assert!(!detail.is_empty());
            }
        }
        // Subject matches, but no publish rule and the default dead-letters.
        let mut p = pipeline(SchemaMode::Subject, "[]", DefaultAction::DeadLetter);
        assert_eq!(
            reason(&p.process(&record("match", 1, b"d"), &mut w, 0, &reg)),
            Some(Reason::Unrouted)
        );
    }

    #[test]
    fn a_dead_lettered_id_may_be_sent_again() {
        // Unknown schema first; the producer registers it and re-sends the
        // same id: that copy is published, not dropped as a duplicate.
        let mut p = pipeline(SchemaMode::Exists, "[]", DefaultAction::Canonical);
        let mut w = DedupWindow::default();
        let mut reg = registry();
        let r = record("match", 404, b"id-9");
        assert_eq!(
            reason(&p.process(&r, &mut w, 0, &reg)),
            Some(Reason::UnknownSchema)
        );
        assert!(w.is_empty());
        reg.0.insert(
            404,
            SchemaState::Known(Arc::new(SchemaInfo { subjects: vec![] })),
        );
        assert!(matches!(
            p.process(&r, &mut w, 1, &reg),
            Verdict::Publish { .. }
        ));
        assert_eq!(
            reason(&p.process(&r, &mut w, 2, &reg)),
            Some(Reason::Duplicate)
        );
    }

    #[test]
    fn a_cache_miss_waits_without_remembering_the_id() {
        let mut p = pipeline(SchemaMode::Exists, "[]", DefaultAction::Canonical);
        let mut w = DedupWindow::default();
        let r = record("match", 7, b"id-7");
        assert!(matches!(
            p.process(&r, &mut w, 0, &registry()),
            Verdict::AwaitSchema(7)
        ));
        assert!(w.is_empty(), "a waiting record must not count as seen");
        let mut reg = registry();
        reg.0.insert(
            7,
            SchemaState::Known(Arc::new(SchemaInfo { subjects: vec![] })),
        );
        assert!(matches!(
            p.process(&r, &mut w, 0, &reg),
            Verdict::Publish { .. }
        ));
    }
}
