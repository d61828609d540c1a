//! Realistic traffic for the demo and the benchmark harness, sent through
//! the producer library: several envs, sources, titles and categories,
//! payload sizes from a distribution, and configurable shares of
//! duplicates, unknown schema ids, malformed and invalid records. The
//! generator returns what must come of each record under [`ROUTES_YAML`],
//! so a run can check that every record is accounted for.

use crate::envelope::{proto, HeaderBuilder, HeaderFields, ValidHeader};
use crate::pipeline::Reason;
use crate::producer::{DeliveryReport, EnvelopeProducer};
use prost::Message;
use std::collections::BTreeMap;

/// Payload sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sizes {
    /// Log-uniform between the bounds (200 B–20 KB: mean ≈ 4.3 KB).
    LogUniform(usize, usize),
    /// Every payload this long.
    Fixed(usize),
}

/// The traffic to generate. Shares are per 10 000 records.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Records, duplicates and rejects included.
    pub records: usize,
    /// Generator seed.
    pub seed: u64,
    /// Payload sizes.
    pub sizes: Sizes,
    /// Not an envelope at all.
    pub malformed: u64,
    /// Readable, but breaking a header rule.
    pub invalid: u64,
    /// A resend of an earlier record (same id, bytes and key).
    pub duplicate: u64,
    /// A schema id the registry does not know.
    pub unknown_schema: u64,
}

impl Default for Shape {
    /// The demo's mix: 0.5% malformed, 0.3% invalid, 10% duplicates, 1%
    /// unknown schema ids, payloads of 200 B–20 KB.
    fn default() -> Self {
        Shape {
            records: 20_000,
            seed: 42,
            sizes: Sizes::LogUniform(200, 20_000),
            malformed: 50,
            invalid: 30,
            duplicate: 1000,
            unknown_schema: 100,
        }
    }
}

/// What the generator sent, by expected fate.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Records sent.
    pub sent: u64,
    /// Records that must be routed.
    pub routed: u64,
    /// Expected count per reason.
    pub reasons: BTreeMap<Reason, u64>,
    /// Expected records per output topic.
    pub topics: BTreeMap<String, u64>,
    /// Bytes sent (record values).
    pub bytes: u64,
}

/// The routing rules the expectations assume (one in four categories is
/// filtered; billing purchases fan out to an audit topic).
pub const ROUTES_YAML: &str = r#"routes:
  - name: drop-debug
    match: { category: "debug_*" }
    action: drop
  - name: lake
    match: { env: [prod, staging] }
  - name: billing-audit
    match: { source: billing, category: store_purchase }
    topic: "audit.{env}.purchases"
default_route: dead_letter
"#;

/// librdkafka properties per client, for [`router_config`].
#[derive(Debug, Clone, Default)]
pub struct ClientProperties {
    /// Consumer properties.
    pub consumer: Vec<(String, String)>,
    /// Producer properties.
    pub producer: Vec<(String, String)>,
}

/// Router config for this workload (file registry in `subject` mode,
/// [`ROUTES_YAML`]), shared by the demo and the benchmark harness.
/// `clients` adds librdkafka properties.
pub fn router_config(
    bootstrap: &str,
    input: &str,
    group: &str,
    dead_letters: &str,
    registry: &std::path::Path,
    create_topics: &str,
    clients: &ClientProperties,
) -> String {
    let map = |name: &str, props: &[(String, String)]| {
        if props.is_empty() {
            return String::new();
        }
        let body: Vec<String> = props.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
        format!("\n  {name}: {{ {} }}", body.join(", "))
    };
    let (consumer, producer) = (
        map("consumer", &clients.consumer),
        map("producer", &clients.producer),
    );
    format!(
        r#"kafka:
  bootstrap.servers: "{bootstrap}"{consumer}{producer}
input:
  topics: ["{input}"]
  group_id: "{group}"
output:
  create_topics: {create_topics}
dead_letter:
  topic: "{dead_letters}"
schema:
  mode: subject
  subject_template: "{{category}}-v{{version}}"
  registry:
    file: "{}"
metrics:
  listen: "127.0.0.1:0"
log:
  level: warn
shutdown_timeout: 10s
{ROUTES_YAML}"#,
        registry.display()
    )
}

/// A tiny deterministic generator (xorshift64*): repeatable traffic, no
/// statistical claims.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn size(&mut self, sizes: Sizes) -> usize {
        match sizes {
            Sizes::Fixed(n) => n,
            Sizes::LogUniform(lo, hi) => {
                let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
                (lo as f64 * (hi as f64 / lo as f64).powf(u)) as usize
            }
        }
    }
}

const ENVS: &[&str] = &["prod", "staging"];
const SOURCES: &[&str] = &["glutton", "arena", "billing"];
const TITLES: &[&str] = &["1234", "5678"];
const CATEGORIES: &[&str] = &[
    "telemetry_match_event",
    "player_login",
    "store_purchase",
    "debug_trace",
];

/// Registered schema ids: `category index * 10 + version`.
pub fn schema_id(category: &str, version: u32) -> u32 {
    let c = CATEGORIES.iter().position(|c| *c == category).unwrap_or(0) as u32;
    c * 10 + version
}

/// The file registry the workload's schema ids are registered in, with
/// subjects `{category}-v{version}`.
pub fn registry_yaml() -> String {
    let mut s = String::from("schemas:\n");
    for c in CATEGORIES {
        for v in 1..=2 {
            s.push_str(&format!(
                "  {}: {{ subjects: [{c}-v{v}] }}\n",
                schema_id(c, v)
            ));
        }
    }
    s
}

/// Average encoded record size for a size distribution (for sizing
/// partitions before generating).
pub fn mean_record_bytes(sizes: Sizes) -> usize {
    let payload = match sizes {
        Sizes::Fixed(n) => n,
        Sizes::LogUniform(lo, hi) => ((hi - lo) as f64 / (hi as f64 / lo as f64).ln()) as usize,
    };
    payload + 110
}

/// Sends the traffic and returns what should come of it.
pub fn generate<F>(shape: &Shape, producer: &EnvelopeProducer<F>) -> anyhow::Result<Expected>
where
    F: Fn(DeliveryReport<'_>) + Send + Sync + 'static,
{
    let mut rng = Rng::new(shape.seed);
    let mut e = Expected::default();
    // Sent envelopes a producer may retry, with what a retry gets: a
    // duplicate drop, or (for an unknown schema id) the same dead letter
    // again, since a dead-lettered id is not remembered.
    let mut recent: Vec<(ValidHeader, Vec<u8>, Reason)> = Vec::new();
    let count = |e: &mut Expected, r: Reason| *e.reasons.entry(r).or_default() += 1;
    let (t1, t2, t3) = (
        shape.malformed,
        shape.malformed + shape.invalid,
        shape.malformed + shape.invalid + shape.duplicate,
    );
    let t4 = t3 + shape.unknown_schema;
    for i in 0..shape.records {
        let roll = rng.below(10_000);
        if roll < t1 {
            // Malformed: not an envelope at all.
            let len = rng.size(Sizes::LogUniform(16, 400));
            let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            producer.send_encoded(Some(&(i as u64).to_be_bytes()), &junk)?;
            e.bytes += junk.len() as u64;
            count(&mut e, Reason::Malformed);
        } else if roll < t2 {
            // Readable but invalid: a dot in `env` (built without the
            // builder, which would refuse it).
            let record = proto::Envelope {
                header: proto::Header {
                    message_id: (i as u64).to_be_bytes().to_vec().into(),
                    env: "pr.od".into(),
                    source: "glutton".into(),
                    title: "1234".into(),
                    category: "player_login".into(),
                    version: 1,
                    schema_id: schema_id("player_login", 1),
                    ..Default::default()
                },
                payload: Some(vec![0u8; 64].into()),
            }
            .encode_to_vec();
            producer.send_encoded(Some(&(i as u64).to_be_bytes()), &record)?;
            e.bytes += record.len() as u64;
            count(&mut e, Reason::InvalidHeader);
        } else if roll < t3 && !recent.is_empty() {
            // A producer retry: same id, same bytes, same partition.
            let (h, payload, outcome) = &recent[rng.below(recent.len() as u64) as usize];
            producer.send(h, payload)?;
            e.bytes += h.envelope_len(payload.len()) as u64;
            count(&mut e, *outcome);
        } else {
            let (env, source, title, category) = (
                rng.pick(ENVS),
                rng.pick(SOURCES),
                rng.pick(TITLES),
                rng.pick(CATEGORIES),
            );
            let version = 1 + rng.below(2) as u32;
            let unknown = (t3..t4).contains(&roll);
            let h = HeaderBuilder::new()
                .env(env)
                .source(source)
                .title(title)
                .category(category)
                .version(version)
                .schema_id(if unknown {
                    900 + rng.below(50) as u32
                } else {
                    schema_id(category, version)
                })
                .content_type("application/x-protobuf")
                .build()?;
            let payload: Vec<u8> = vec![(i % 251) as u8; rng.size(shape.sizes)];
            producer.send(&h, &payload)?;
            e.bytes += h.envelope_len(payload.len()) as u64;
            if unknown {
                count(&mut e, Reason::UnknownSchema);
            } else if category.starts_with("debug_") {
                count(&mut e, Reason::Filtered);
            } else {
                e.routed += 1;
                *e.topics.entry(h.topic_name()).or_default() += 1;
                if source == "billing" && category == "store_purchase" {
                    *e.topics
                        .entry(format!("audit.{env}.purchases"))
                        .or_default() += 1;
                }
            }
            let retry = if unknown {
                Reason::UnknownSchema
            } else {
                Reason::Duplicate
            };
            if recent.len() < 1000 {
                recent.push((h, payload, retry));
            } else {
                let at = rng.below(1000) as usize;
                recent[at] = (h, payload, retry);
            }
        }
        e.sent += 1;
    }
    Ok(e)
}
