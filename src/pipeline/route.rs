//! Routing: ordered rules over env/source/title/category/version.
//!
//! Rules are evaluated in order. Every matching `publish` rule adds its topic
//! (fan-out; a topic named twice is published once). The first matching
//! `drop` rule ends evaluation: the record goes to the topics collected so
//! far, or, if there are none, is filtered. When nothing matched, `default`
//! decides: publish to the canonical topic, drop, or dead-letter.
//!
//! A decision depends only on the five routing fields, so it is computed
//! once per distinct stream and cached; a cache hit costs one hash and no
//! allocation.

use super::template::{Template, TemplateError};
use crate::envelope::{
    u32_at, u64_at, validate, validate_record_fields, HeaderFields, ValidationError, MAX_TOPIC_LEN,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// One value or a list; strings may be globs (`*`, `?`, `[...]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// Any of these.
    Many(Vec<T>),
}

/// Field conditions of a rule; absent fields match anything.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Environment.
    pub env: Option<OneOrMany<String>>,
    /// Source.
    pub source: Option<OneOrMany<String>>,
    /// Title.
    pub title: Option<OneOrMany<String>>,
    /// Category.
    pub category: Option<OneOrMany<String>>,
    /// Version(s).
    pub version: Option<OneOrMany<u32>>,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Publish to the rule's topic.
    #[default]
    Publish,
    /// Filter the record (counted as `filtered`).
    Drop,
}

/// A routing rule as written in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Name, used in logs and the `route` metric label.
    pub name: String,
    /// Conditions; all present ones must hold.
    #[serde(default, rename = "match")]
    pub matches: MatchSpec,
    /// `publish` (default) or `drop`.
    #[serde(default)]
    pub action: RouteAction,
    /// Topic template for `publish`; defaults to `output.topic_template`.
    pub topic: Option<String>,
}

/// What happens to a record no rule matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    /// Publish to the default topic template.
    #[default]
    Canonical,
    /// Filter it.
    Drop,
    /// Dead-letter it with reason `unrouted`.
    DeadLetter,
}

/// A rule set that cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A bad glob.
    #[error("route {route:?}: bad pattern {pattern:?}: {source}")]
    Pattern {
        /// Rule name.
        route: String,
        /// The pattern.
        pattern: String,
        /// Why.
        source: glob::PatternError,
    },
    /// A bad topic template.
    #[error("route {route:?}: {source}")]
    Template {
        /// Rule name (or `default`).
        route: String,
        /// Why.
        source: TemplateError,
    },
    /// A drop rule with a topic.
    #[error("route {0:?}: a drop rule takes no topic")]
    DropWithTopic(String),
    /// Two rules share a name.
    #[error("two routes are named {0:?}; names label metrics and must be unique")]
    DuplicateName(String),
}

impl RouteError {
    /// The route the error is about (`None` for a duplicate name: both).
    pub fn route(&self) -> Option<&str> {
        match self {
            RouteError::Pattern { route, .. } | RouteError::Template { route, .. } => Some(route),
            RouteError::DropWithTopic(route) | RouteError::DuplicateName(route) => Some(route),
        }
    }
}

/// A compiled condition on one string field.
#[derive(Debug)]
enum StrMatch {
    Exact(String),
    Glob(glob::Pattern),
}

impl StrMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => e == v,
            StrMatch::Glob(g) => g.matches(v),
        }
    }
}

/// A compiled [`MatchSpec`]: conditions on a stream's fields (exact
/// values or globs; absent fields match anything). Routes use it, and so
/// does `replay` to pick dead letters by stream.
#[derive(Debug, Default)]
pub struct StreamMatch {
    fields: [Vec<StrMatch>; 4], // env, source, title, category; empty = any
    versions: Vec<u32>,         // empty = any
}

impl StreamMatch {
    /// Compiles `spec`; `route` names it in errors.
    pub fn compile(spec: &MatchSpec, route: &str) -> Result<Self, RouteError> {
        let compile = |m: &Option<OneOrMany<String>>| -> Result<Vec<StrMatch>, RouteError> {
            let values = match m {
                None => return Ok(Vec::new()),
                Some(OneOrMany::One(v)) => std::slice::from_ref(v),
                Some(OneOrMany::Many(v)) => v.as_slice(),
            };
            values
                .iter()
                .map(|v| {
                    if v.contains(['*', '?', '[']) {
                        glob::Pattern::new(v).map(StrMatch::Glob).map_err(|source| {
                            RouteError::Pattern {
                                route: route.to_owned(),
                                pattern: v.clone(),
                                source,
                            }
                        })
                    } else {
                        Ok(StrMatch::Exact(v.clone()))
                    }
                })
                .collect()
        };
        Ok(StreamMatch {
            fields: [
                compile(&spec.env)?,
                compile(&spec.source)?,
                compile(&spec.title)?,
                compile(&spec.category)?,
            ],
            versions: match &spec.version {
                None => Vec::new(),
                Some(OneOrMany::One(v)) => vec![*v],
                Some(OneOrMany::Many(v)) => v.clone(),
            },
        })
    }

    /// Whether every present condition holds for `h`'s stream.
    pub fn matches(&self, h: &(impl HeaderFields + ?Sized)) -> bool {
        let values = [h.env(), h.source(), h.title(), h.category()];
        self.fields
            .iter()
            .zip(values)
            .all(|(m, v)| m.is_empty() || m.iter().any(|m| m.matches(v)))
            && (self.versions.is_empty() || self.versions.contains(&h.version()))
    }
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    matches: StreamMatch,
    action: RouteAction,
    topic: Template,
}

/// Where one output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Output topic.
    pub topic: Arc<str>,
    /// The rule that chose it (`default` for the default action).
    pub route: Arc<str>,
}

/// The routing decision for one stream.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteDecision {
    /// Publish to these topics (at least one).
    Publish(Vec<Target>),
    /// Filtered by this rule (`default` when the default is `drop`).
    Drop(Arc<str>),
    /// No rule matched and the default is `dead_letter`.
    Unrouted,
    /// A template rendered a topic longer than Kafka allows.
    TopicTooLong {
        /// The rule.
        route: Arc<str>,
        /// The rendered length.
        len: usize,
    },
}

/// Everything decided once per distinct stream (env/source/title/category/version).
#[derive(Debug, PartialEq, Eq)]
pub struct StreamPlan {
    /// Where records of this stream go.
    pub route: RouteDecision,
    /// The registry subject, when a subject template is set.
    pub subject: Option<String>,
    /// The last schema id that passed the check for this stream
    /// (registered; in `subject` mode, under `subject`), so the next record
    /// of the stream with that id skips the check.
    pub schema_memo: SchemaMemo,
}

/// A stream's last schema check that passed: a schema id, and the
/// generation of the pipeline's known schemas it was checked against (so a
/// schema info fetched again is checked again). Zero: none yet. A record
/// of the stream with that id skips the check: no lookup of the id, no
/// search of its subjects.
#[derive(Debug, Default)]
pub struct SchemaMemo(AtomicU64);

impl SchemaMemo {
    /// What is remembered for `schema_id` checked in `generation` (≥ 1).
    #[inline]
    pub fn key(generation: u32, schema_id: u32) -> u64 {
        (u64::from(generation) << 32) | u64::from(schema_id)
    }

    /// Whether `key` was the last check that passed.
    #[inline]
    pub fn holds(&self, key: u64) -> bool {
        self.0.load(Relaxed) == key
    }

    /// Remembers a check that passed.
    #[inline]
    pub fn remember(&self, key: u64) {
        self.0.store(key, Relaxed);
    }
}

/// A memo is not part of what a plan decides.
impl PartialEq for SchemaMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for SchemaMemo {}

impl StreamPlan {
    /// The publish targets (empty unless the route publishes).
    pub fn targets(&self) -> &[Target] {
        match &self.route {
            RouteDecision::Publish(t) => t,
            _ => &[],
        }
    }
}

/// Hash of the five routing fields, for the plan cache. Its entries keep the
/// full key, so a collision costs a re-plan, never a wrong route; the hash
/// only has to spread. Each segment goes in as two little-endian words that
/// together cover its first and last bytes (all of them up to 16 bytes),
/// xored with the running hash and the segment's length, through one
/// folded 64×64→128-bit multiply; a longer segment takes one more multiply
/// per 16 bytes. One XXH3 call per segment cost ~30 instructions, and a
/// multiply per word (the fold before this one) 43 more per lookup than
/// this. The length keeps `("ab", "c")` and `("a", "bc")` apart.
#[inline]
fn stream_hash(h: &(impl HeaderFields + ?Sized)) -> u64 {
    let mut acc = u64::from(h.version()) ^ 0x243f_6a88_85a3_08d3;
    for f in [h.env(), h.source(), h.title(), h.category()] {
        acc = fold_bytes(acc, f.as_bytes());
    }
    acc
}

#[inline(always)]
fn fold_bytes(mut acc: u64, b: &[u8]) -> u64 {
    let n = b.len();
    let (lo, hi) = match n {
        0 => (0, 0),
        1..=3 => (
            u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16,
            0,
        ),
        4..=7 => (u64::from(u32_at(b, 0)), u64::from(u32_at(b, n - 4))),
        8..=16 => (u64_at(b, 0), u64_at(b, n - 8)),
        _ => {
            // 16 bytes per multiply, then the last 16 (overlapping).
            let mut at = 0;
            while at + 16 < n {
                acc = fold(acc ^ u64_at(b, at), u64_at(b, at + 8));
                at += 16;
            }
            (u64_at(b, n - 16), u64_at(b, n - 8))
        }
    };
    fold(
        acc ^ lo,
        hi ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    )
}

/// Folded multiply of two words (the high and low halves of the 128-bit
/// product, xored), keyed so that zero words do not zero the product.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a ^ 0x2d35_8dcc_aa6c_78a5) * u128::from(b ^ 0x8bb8_4b93_962e_acc9);
    (product as u64) ^ (product >> 64) as u64
}

#[derive(Debug, PartialEq, Eq)]
struct StreamKey {
    env: String,
    source: String,
    title: String,
    category: String,
    version: u32,
}

impl StreamKey {
    fn of(h: &(impl HeaderFields + ?Sized)) -> Self {
        StreamKey {
            env: h.env().to_owned(),
            source: h.source().to_owned(),
            title: h.title().to_owned(),
            category: h.category().to_owned(),
            version: h.version(),
        }
    }

    #[inline]
    fn is(&self, h: &(impl HeaderFields + ?Sized)) -> bool {
        let version = self.version == h.version();
        version
            & same(&self.category, h.category())
            & same(&self.title, h.title())
            & same(&self.source, h.source())
            & same(&self.env, h.env())
    }
}

/// String equality for short topic segments without a `memcmp` call: up to
/// 32 bytes it compares two or four overlapping words. Every cached lookup
/// compares four segments, so the call overhead dominated.
#[inline(always)]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => (a[0] == b[0]) & (a[n / 2] == b[n / 2]) & (a[n - 1] == b[n - 1]),
        4..=7 => (u32_at(a, 0) == u32_at(b, 0)) & (u32_at(a, n - 4) == u32_at(b, n - 4)),
        8..=16 => (u64_at(a, 0) == u64_at(b, 0)) & (u64_at(a, n - 8) == u64_at(b, n - 8)),
        17..=32 => {
            (u64_at(a, 0) == u64_at(b, 0))
                & (u64_at(a, 8) == u64_at(b, 8))
                & (u64_at(a, n - 16) == u64_at(b, n - 16))
                & (u64_at(a, n - 8) == u64_at(b, n - 8))
        }
        _ => a == b,
    }
}

/// Cached plan plus the key it was computed for (to rule out hash
/// collisions).
struct Cached {
    key: StreamKey,
    plan: Arc<StreamPlan>,
}

type DecisionCache = HashMap<u64, Cached, BuildHasherDefault<super::dedup::IdentityHasher>>;

/// Compiled rules with their decision cache.
pub struct Routes {
    rules: Vec<Rule>,
    default: DefaultAction,
    default_topic: Template,
    subject: Option<Template>,
    cache: DecisionCache,
    cache_limit: usize,
}

/// Most distinct streams whose decisions are cached; past this the cache is
/// cleared (a producer inventing streams cannot grow memory without bound).
pub const DEFAULT_CACHE_LIMIT: usize = 100_000;

impl Routes {
    /// Compiles rules; `default_topic` is the template for `default:
    /// canonical` and for rules without their own topic; `subject`, when
    /// set, renders each stream's registry subject.
    pub fn new(
        specs: &[RouteSpec],
        default: DefaultAction,
        default_topic: &str,
        subject: Option<Template>,
    ) -> Result<Self, RouteError> {
        let default_topic =
            Template::parse_topic(default_topic).map_err(|source| RouteError::Template {
                route: "default".into(),
                source,
            })?;
        let mut rules = Vec::with_capacity(specs.len());
        let mut names = std::collections::HashSet::new();
        for spec in specs {
            if !names.insert(spec.name.as_str()) {
                return Err(RouteError::DuplicateName(spec.name.clone()));
            }
            if spec.action == RouteAction::Drop && spec.topic.is_some() {
                return Err(RouteError::DropWithTopic(spec.name.clone()));
            }
            let topic = match &spec.topic {
                Some(t) => Template::parse_topic(t).map_err(|source| RouteError::Template {
                    route: spec.name.clone(),
                    source,
                })?,
                None => default_topic.clone(),
            };
            rules.push(Rule {
                name: spec.name.as_str().into(),
                matches: StreamMatch::compile(&spec.matches, &spec.name)?,
                action: spec.action,
                topic,
            });
        }
        Ok(Routes {
            rules,
            default,
            default_topic,
            subject,
            cache: DecisionCache::default(),
            cache_limit: DEFAULT_CACHE_LIMIT,
        })
    }

    /// The plan for a (validated) header's stream, from the cache when possible.
    pub fn plan(&mut self, h: &(impl HeaderFields + ?Sized)) -> Arc<StreamPlan> {
        let hash = stream_hash(h);
        match self.cached(hash, h) {
            Some(plan) => plan.clone(),
            None => self.plan_miss(hash, h),
        }
    }

    /// Checks a header against the envelope rules and returns its stream's
    /// plan. The rules on the stream's fields (segments, topic length) are
    /// checked once, when the stream's plan is cached: a header whose stream
    /// is in the cache (same bytes, compared in full) only has its
    /// per-record fields checked. The result is the same as [`validate`]
    /// followed by [`Routes::plan`].
    #[inline]
    pub fn validated_plan(
        &mut self,
        h: &(impl HeaderFields + ?Sized),
    ) -> Result<Arc<StreamPlan>, ValidationError> {
        let hash = stream_hash(h);
        if let Some(plan) = self.cached(hash, h) {
            validate_record_fields(h)?;
            return Ok(plan.clone());
        }
        validate(h)?;
        Ok(self.plan_miss(hash, h))
    }

    /// The cached plan of `h`'s stream (`hash` is its [`stream_hash`]), if
    /// the entry under that hash is for exactly this stream.
    #[inline]
    fn cached(&self, hash: u64, h: &(impl HeaderFields + ?Sized)) -> Option<&Arc<StreamPlan>> {
        self.cache
            .get(&hash)
            .filter(|c| c.key.is(h))
            .map(|c| &c.plan)
    }

    /// Plans a stream missing from the cache (or colliding with a cached
    /// one) and caches it when it is new.
    #[cold]
    fn plan_miss(&mut self, hash: u64, h: &(impl HeaderFields + ?Sized)) -> Arc<StreamPlan> {
        if self.cache.contains_key(&hash) {
            // A 64-bit collision between two streams: plan without caching.
            return Arc::new(self.evaluate(h));
        }
        if self.cache.len() >= self.cache_limit {
            self.cache.clear();
        }
        let plan = Arc::new(self.evaluate(h));
        self.cache.insert(
            hash,
            Cached {
                key: StreamKey::of(h),
                plan: plan.clone(),
            },
        );
        plan
    }

    /// Distinct streams currently cached.
    pub fn cached_streams(&self) -> usize {
        self.cache.len()
    }

    fn evaluate(&self, h: &(impl HeaderFields + ?Sized)) -> StreamPlan {
        StreamPlan {
            route: self.route(h),
            subject: self.subject.as_ref().map(|t| t.render(h)),
            schema_memo: SchemaMemo::default(),
        }
    }

    fn route(&self, h: &(impl HeaderFields + ?Sized)) -> RouteDecision {
        let mut targets: Vec<Target> = Vec::new();
        let mut dropped_by = None;
        for rule in self.rules.iter().filter(|r| r.matches.matches(h)) {
            match rule.action {
                RouteAction::Drop => {
                    dropped_by = Some(rule.name.clone());
                    break;
                }
                RouteAction::Publish => {
                    let topic = rule.topic.render(h);
                    if topic.len() > MAX_TOPIC_LEN {
                        return RouteDecision::TopicTooLong {
                            route: rule.name.clone(),
                            len: topic.len(),
                        };
                    }
                    if !targets.iter().any(|t| *t.topic == *topic) {
                        targets.push(Target {
                            topic: topic.into(),
                            route: rule.name.clone(),
                        });
                    }
                }
            }
        }
        if !targets.is_empty() {
            return RouteDecision::Publish(targets);
        }
        if let Some(rule) = dropped_by {
            return RouteDecision::Drop(rule);
        }
        match self.default {
            DefaultAction::Drop => RouteDecision::Drop("default".into()),
            DefaultAction::DeadLetter => RouteDecision::Unrouted,
            DefaultAction::Canonical => {
                let topic = self.default_topic.render(h);
                if topic.len() > MAX_TOPIC_LEN {
                    return RouteDecision::TopicTooLong {
                        route: "default".into(),
                        len: topic.len(),
                    };
                }
                RouteDecision::Publish(vec![Target {
                    topic: topic.into(),
                    route: "default".into(),
                }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::proto::Header;
    use crate::pipeline::template::CANONICAL_TOPIC;

    fn h(env: &str, source: &str, category: &str, version: u32) -> Header {
        Header {
            env: env.into(),
            source: source.into(),
            title: "1234".into(),
            category: category.into(),
            version,
            ..Default::default()
        }
    }

    fn routes(yaml_rules: &str, default: DefaultAction) -> Routes {
        let specs: Vec<RouteSpec> = serde_saphyr::from_str(yaml_rules).unwrap();
        Routes::new(&specs, default, CANONICAL_TOPIC, None).unwrap()
    }

    fn topics(p: &StreamPlan) -> Vec<&str> {
        match &p.route {
            RouteDecision::Publish(t) => t.iter().map(|t| &*t.topic).collect(),
            other => panic!("expected publish, got {other:?}"),
        }
    }

    const RULES: &str = r#"
- name: drop-debug
  match: { category: "debug_*" }
  action: drop
- name: lake
  match: { env: [prod, staging], version: [1, 2] }
- name: audit
  match: { source: glutton, category: "telemetry_*" }
  topic: "audit.{env}.{category}"
"#;

    #[test]
    fn short_equality_matches_std_at_every_length_and_position() {
        for len in 0..40usize {
            let a: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            assert!(same(&a, &a.clone()), "len {len}");
            for at in 0..len {
                let mut b = a.clone().into_bytes();
                b[at] = b'Z';
                let b = String::from_utf8(b).unwrap();
                assert!(!same(&a, &b), "len {len}, differs at {at}");
            }
            assert!(!same(&a, &format!("{a}x")), "len {len} vs {}", len + 1);
        }
    }

    #[test]
    fn stream_hashes_spread() {
        // 200k streams that differ little (one field, one version, a shifted
        // boundary): no two share a hash, and the low bits (the cache's
        // bucket index) and the top 7 bits (its tags) are all used evenly.
        let mut seen = std::collections::HashSet::new();
        let (mut low, mut top) = ([0u32; 256], [0u32; 128]);
        for i in 0..200_000u32 {
            let c = format!("category_{}", i / 4);
            let e = if i % 2 == 0 { "prod" } else { "prodx" };
            let hash = stream_hash(&h(e, "glutton", &c, i % 4));
            assert!(seen.insert(hash), "collision at {i}");
            low[(hash & 0xff) as usize] += 1;
            top[(hash >> 57) as usize] += 1;
        }
        let even = |counts: &[u32]| {
            let mean = 200_000 / counts.len() as u32;
            counts
                .iter()
                .all(|&c| c > mean * 8 / 10 && c < mean * 12 / 10)
        };
        assert!(even(&low) && even(&top), "{low:?} {top:?}");
        assert_ne!(
            stream_hash(&h("ab", "c", "x", 1)),
            stream_hash(&h("a", "bc", "x", 1))
        );
    }

    #[test]
    fn validated_plan_is_validate_then_plan() {
        let mut r = routes(RULES, DefaultAction::Canonical);
        let valid = || Header {
            message_id: vec![1; 8].into(),
            schema_id: 7,
            ..h("prod", "glutton", "telemetry_x", 1)
        };
        // Each header twice: once as a new stream, once with its stream cached.
        let cases: Vec<Header> = vec![
            valid(),
            Header {
                message_id: Default::default(),
                ..valid()
            },
            Header {
                message_id: vec![1; 65].into(),
                ..valid()
            },
            Header {
                schema_id: 0,
                ..valid()
            },
            Header {
                env: "pr.od".into(),
                ..valid()
            },
            Header {
                category: "x".repeat(49),
                ..valid()
            },
            Header {
                title: "é".into(),
                ..valid()
            },
            Header {
                message_id: Default::default(),
                env: "pr od".into(),
                ..valid()
            },
            Header {
                schema_id: 0,
                source: String::new(),
                ..valid()
            },
        ];
        for header in cases.iter().chain(&cases) {
            let want = validate(header).map(|()| r.plan(header).targets().to_vec());
            let got = r.validated_plan(header).map(|p| p.targets().to_vec());
            assert_eq!(got, want, "{header:?}");
        }
        // Only the valid stream was cached.
        assert_eq!(r.cached_streams(), 1);
    }

    #[test]
    fn fan_out_filters_and_defaults() {
        let mut r = routes(RULES, DefaultAction::DeadLetter);
        let d = r.plan(&h("prod", "glutton", "telemetry_match_event", 1));
        assert_eq!(
            topics(&d),
            [
                "prod.glutton.1234.telemetry_match_event-v1",
                "audit.prod.telemetry_match_event"
            ]
        );
        assert_eq!(
            r.plan(&h("prod", "glutton", "debug_trace", 1)).route,
            RouteDecision::Drop("drop-debug".into())
        );
        assert_eq!(
            r.plan(&h("dev", "other", "x", 1)).route,
            RouteDecision::Unrouted
        );
        // Version outside the list: only the audit rule matches.
        assert_eq!(
            topics(&r.plan(&h("prod", "glutton", "telemetry_x", 3))),
            ["audit.prod.telemetry_x"]
        );
    }

    #[test]
    fn defaults_canonical_and_drop() {
        let mut r = routes("[]", DefaultAction::Canonical);
        assert_eq!(topics(&r.plan(&h("dev", "s", "c", 7))), ["dev.s.1234.c-v7"]);
        let mut r = routes("[]", DefaultAction::Drop);
        assert_eq!(
            r.plan(&h("dev", "s", "c", 7)).route,
            RouteDecision::Drop("default".into())
        );
    }

    #[test]
    fn decisions_are_cached_per_stream() {
        let mut r = routes(RULES, DefaultAction::Canonical);
        let a = r.plan(&h("prod", "glutton", "telemetry_a", 1));
        let b = r.plan(&h("prod", "glutton", "telemetry_a", 1));
        assert!(Arc::ptr_eq(&a, &b));
        r.plan(&h("prod", "glutton", "telemetry_a", 2));
        assert_eq!(r.cached_streams(), 2);
    }

    #[test]
    fn plans_carry_the_rendered_subject() {
        let specs: Vec<RouteSpec> = serde_saphyr::from_str("[]").unwrap();
        let subject = Template::parse("{category}-v{version}").unwrap();
        let mut r = Routes::new(
            &specs,
            DefaultAction::Canonical,
            CANONICAL_TOPIC,
            Some(subject),
        )
        .unwrap();
        assert_eq!(
            r.plan(&h("dev", "s", "match", 2)).subject.as_deref(),
            Some("match-v2")
        );
    }

    #[test]
    fn rejects_bad_rules() {
        let bad: Vec<RouteSpec> =
            serde_saphyr::from_str("- {name: a, action: drop, topic: x}").unwrap();
        assert!(matches!(
            Routes::new(&bad, DefaultAction::Canonical, CANONICAL_TOPIC, None),
            Err(RouteError::DropWithTopic(_))
        ));
        let dup: Vec<RouteSpec> = serde_saphyr::from_str("[{name: a}, {name: a}]").unwrap();
        assert!(matches!(
            Routes::new(&dup, DefaultAction::Canonical, CANONICAL_TOPIC, None),
            Err(RouteError::DuplicateName(_))
        ));
        let glob: Vec<RouteSpec> =
            serde_saphyr::from_str("[{name: a, match: {env: '[x'}}]").unwrap();
        assert!(matches!(
            Routes::new(&glob, DefaultAction::Canonical, CANONICAL_TOPIC, None),
            Err(RouteError::Pattern { .. })
        ));
    }
}
