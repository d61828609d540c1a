//! `demo`: the whole pipeline on one machine. An embedded mock Kafka cluster
//! (librdkafka's), a file-backed schema registry, realistic traffic from the
//! producer library (several envs, sources, titles and categories; payloads
//! of 200 B–20 KB; duplicates, unknown schema ids, malformed and invalid
//! records), the real router, and a closing table that checks every input
//! record is accounted for against what the generator knows it sent.

use crate::config::Config;
use crate::envelope::{proto, HeaderBuilder, HeaderFields, ValidHeader};
use crate::kafka::{self, RunControl};
use crate::pipeline::Reason;
use crate::producer::EnvelopeProducerBuilder;
use prost::Message;
use rdkafka::mocking::MockCluster;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Records to generate (duplicates and rejects included).
    pub records: usize,
    /// Input partitions.
    pub partitions: i32,
    /// Generator seed.
    pub seed: u64,
    /// Print a progress line while running.
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            records: 20_000,
            partitions: 8,
            seed: 42,
            progress: true,
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
    /// Bytes sent.
    pub bytes: u64,
}

/// The demo's outcome.
#[derive(Debug)]
pub struct DemoReport {
    /// What was sent.
    pub expected: Expected,
    /// Records the router read.
    pub records_in: u64,
    /// Records it routed.
    pub routed: u64,
    /// Count per reason.
    pub reasons: BTreeMap<Reason, u64>,
    /// Acknowledged records per output topic.
    pub topics: BTreeMap<String, u64>,
    /// From the router's first record read to its last one settled.
    pub elapsed: Duration,
    /// Every check that failed (empty: all accounted for).
    pub mismatches: Vec<String>,
}

/// A tiny deterministic generator (xorshift64*): the demo needs no
/// statistical quality, only repeatable traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
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
    /// Log-uniform size in `lo..=hi`.
    fn size(&mut self, lo: f64, hi: f64) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (lo * (hi / lo).powf(u)) as usize
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
fn schema_id(category: &str, version: u32) -> u32 {
    let c = CATEGORIES.iter().position(|c| *c == category).unwrap_or(0) as u32;
    c * 10 + version
}

fn registry_yaml() -> String {
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

fn config_yaml(bootstrap: &str, registry: &std::path::Path) -> String {
    format!(
        r#"
kafka:
  bootstrap.servers: "{bootstrap}"
input:
  topics: [raw.events]
  group_id: envelope-router-demo
output:
  create_topics: broker
dead_letter:
  topic: envelope-router.dead-letter
schema:
  mode: subject
  subject_template: "{{category}}-v{{version}}"
  registry:
    file: "{}"
routes:
  - name: drop-debug
    match: {{ category: "debug_*" }}
    action: drop
  - name: lake
    match: {{ env: [prod, staging] }}
  - name: billing-audit
    match: {{ source: billing, category: store_purchase }}
    topic: "audit.{{env}}.purchases"
default_route: dead_letter
log:
  level: warn
metrics:
  listen: "127.0.0.1:0"
shutdown_timeout: 10s
"#,
        registry.display()
    )
}

/// Runs the demo and returns its report (the table is printed by the caller
/// through [`DemoReport::print`]).
pub fn run(opts: &DemoOptions, runtime: tokio::runtime::Handle) -> anyhow::Result<DemoReport> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic("raw.events", opts.partitions, 1)?;
    cluster.create_topic("envelope-router.dead-letter", 1, 1)?;
    let bootstrap = cluster.bootstrap_servers();

    let dir = std::env::temp_dir().join(format!("envelope-router-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let registry = dir.join("schemas.yaml");
    std::fs::write(&registry, registry_yaml())?;
    let cfg = Config::from_yaml(
        &config_yaml(&bootstrap, &registry),
        std::path::Path::new("<demo>"),
        |v| std::env::var(v).ok(),
    )?;

    let ctl = RunControl::default();
    let router = {
        let (cfg, ctl, rt) = (cfg.clone(), ctl.clone(), runtime.clone());
        std::thread::Builder::new()
            .name("router".into())
            .spawn(move || kafka::run(&cfg, &ctl, rt))?
    };

    let failed = Arc::new(AtomicU64::new(0));
    let producer = {
        let failed = failed.clone();
        EnvelopeProducerBuilder::new(&bootstrap, "raw.events")
            .set("linger.ms", "20")
            .build(move |r| {
                if r.result.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            })?
    };

    let started = Instant::now();
    let expected = generate(opts, &producer)?;
    producer.flush(Duration::from_secs(30))?;
    anyhow::ensure!(
        failed.load(Ordering::Relaxed) == 0,
        "{} demo records were not accepted by the mock cluster",
        failed.load(Ordering::Relaxed)
    );

    // Wait until the router has settled every record sent.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_print = Instant::now();
    while ctl.stats.records_settled() < expected.sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        if opts.progress && last_print.elapsed() >= Duration::from_millis(500) {
            progress(&ctl, &expected, started);
            last_print = Instant::now();
        }
    }
    // The router's working time: from its first record (the mock cluster
    // takes ~3 s to assign partitions to a new group) to the last settled.
    let elapsed = ctl.stats.first_record_at().unwrap_or(started).elapsed();
    if opts.progress {
        progress(&ctl, &expected, started);
        eprintln!();
    }
    ctl.shutdown.store(true, Ordering::Relaxed);
    router
        .join()
        .map_err(|_| anyhow::anyhow!("router thread panicked"))??;
    let _ = std::fs::remove_dir_all(&dir);

    let s = &ctl.stats;
    let reasons: BTreeMap<Reason, u64> = Reason::ALL.iter().map(|r| (*r, s.reason(*r))).collect();
    let topics: BTreeMap<String, u64> = s
        .published_by_topic()
        .into_iter()
        .filter(|(t, _)| t != &cfg.dead_letter.topic)
        .collect();
    let mut report = DemoReport {
        records_in: s.records_in(),
        routed: s.records_routed(),
        reasons,
        topics,
        elapsed,
        mismatches: Vec::new(),
        expected,
    };
    report.mismatches = report.check(s.records_settled(), s.published_by_topic());
    Ok(report)
}

fn progress(ctl: &RunControl, e: &Expected, started: Instant) {
    let s = &ctl.stats;
    let secs = ctl
        .stats
        .first_record_at()
        .unwrap_or(started)
        .elapsed()
        .as_secs_f64()
        .max(1e-3);
    eprint!(
        "\r  in {:>7}/{}  routed {:>7}  duplicates {:>6}  dead letters {:>5}  {:>8.0} rec/s ",
        s.records_in(),
        e.sent,
        s.records_routed(),
        s.reason(Reason::Duplicate),
        Reason::ALL
            .iter()
            .filter(|r| r.is_dead_letter())
            .map(|r| s.reason(*r))
            .sum::<u64>(),
        s.records_in() as f64 / secs
    );
    let _ = std::io::stderr().flush();
}

/// Sends the traffic and returns what should come of it.
fn generate<F>(
    opts: &DemoOptions,
    producer: &crate::producer::EnvelopeProducer<F>,
) -> anyhow::Result<Expected>
where
    F: Fn(crate::producer::DeliveryReport<'_>) + Send + Sync + 'static,
{
    let mut rng = Rng(opts.seed | 1);
    let mut e = Expected::default();
    let mut recent: Vec<(ValidHeader, Vec<u8>)> = Vec::new();
    let count = |e: &mut Expected, r: Reason| *e.reasons.entry(r).or_default() += 1;
    for i in 0..opts.records {
        let roll = rng.below(1000);
        if roll < 5 {
            // Malformed: not an envelope at all.
            let len = rng.size(16.0, 400.0);
            let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            producer.send_encoded(Some(&(i as u64).to_be_bytes()), &junk)?;
            e.bytes += junk.len() as u64;
            count(&mut e, Reason::Malformed);
        } else if roll < 8 {
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
        } else if roll < 108 && !recent.is_empty() {
            // A producer retry: same id, same bytes, same partition.
            let (h, payload) = &recent[rng.below(recent.len() as u64) as usize];
            producer.send(h, payload)?;
            e.bytes += h.envelope_len(payload.len()) as u64;
            count(&mut e, Reason::Duplicate);
        } else {
            let (env, source, title, category) = (
                rng.pick(ENVS),
                rng.pick(SOURCES),
                rng.pick(TITLES),
                rng.pick(CATEGORIES),
            );
            let version = 1 + rng.below(2) as u32;
            let unknown = roll < 118;
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
            let payload: Vec<u8> = vec![(i % 251) as u8; rng.size(200.0, 20_000.0)];
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
            if recent.len() < 1000 {
                recent.push((h, payload));
            } else {
                let at = rng.below(1000) as usize;
                recent[at] = (h, payload);
            }
        }
        e.sent += 1;
    }
    Ok(e)
}

impl DemoReport {
    fn check(&self, settled: u64, published: Vec<(String, u64)>) -> Vec<String> {
        let mut bad = Vec::new();
        let e = &self.expected;
        let accounted = self.routed + self.reasons.values().sum::<u64>();
        if self.records_in != e.sent {
            bad.push(format!(
                "router read {} records, {} were sent",
                self.records_in, e.sent
            ));
        }
        if accounted != self.records_in {
            bad.push(format!(
                "{accounted} records accounted for, {} read",
                self.records_in
            ));
        }
        if settled != self.records_in {
            bad.push(format!(
                "{settled} records settled, {} read",
                self.records_in
            ));
        }
        if self.routed != e.routed {
            bad.push(format!("routed {}, expected {}", self.routed, e.routed));
        }
        for r in Reason::ALL {
            let (got, want) = (self.reasons[&r], e.reasons.get(&r).copied().unwrap_or(0));
            if got != want {
                bad.push(format!("{r}: {got}, expected {want}"));
            }
        }
        if self.topics != e.topics {
            bad.push("per-topic counts differ from the generator's".into());
        }
        let dead: u64 = Reason::ALL
            .iter()
            .filter(|r| r.is_dead_letter())
            .map(|r| self.reasons[r])
            .sum();
        let dlq = published
            .iter()
            .find(|(t, _)| t == "envelope-router.dead-letter")
            .map_or(0, |(_, n)| *n);
        if dlq != dead {
            bad.push(format!(
                "dead-letter topic acknowledged {dlq} records, {dead} were rejected"
            ));
        }
        bad
    }

    /// Prints the closing table.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let e = &self.expected;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            out,
            "\nOutput topics                                   records   expected"
        )?;
        for (topic, n) in &self.topics {
            let want = e.topics.get(topic).copied().unwrap_or(0);
            writeln!(out, "  {topic:<44} {n:>8}   {want:>8}")?;
        }
        writeln!(
            out,
            "\nNot published                                   records   expected"
        )?;
        for r in Reason::ALL {
            let what = if r.is_dead_letter() {
                "dead letter"
            } else {
                "dropped"
            };
            let want = e.reasons.get(&r).copied().unwrap_or(0);
            writeln!(
                out,
                "  {:<30}{what:<14} {:>8}   {want:>8}",
                r.code(),
                self.reasons[&r]
            )?;
        }
        writeln!(
            out,
            "\nRecords in {}  routed {}  rejected or dropped {}",
            self.records_in,
            self.routed,
            self.reasons.values().sum::<u64>()
        )?;
        writeln!(
            out,
            "Throughput {:.0} records/s, {:.1} MB/s over {:.2} s (mock cluster, producer and router on one machine)",
            e.sent as f64 / secs,
            e.bytes as f64 / secs / 1e6,
            secs
        )?;
        if self.mismatches.is_empty() {
            writeln!(out, "Check: every input record is accounted for ({} = {} routed + {} dropped or dead-lettered) ✓", self.records_in, self.routed, self.reasons.values().sum::<u64>())?;
        } else {
            writeln!(out, "Check FAILED:")?;
            for m in &self.mismatches {
                writeln!(out, "  - {m}")?;
            }
        }
        Ok(())
    }
}
