//! `demo`: the whole pipeline on one machine. An embedded mock Kafka cluster
//! (librdkafka's), a file-backed schema registry, realistic traffic from the
//! producer library (several envs, sources, titles and categories; payloads
//! of 200 B–20 KB; duplicates, unknown schema ids, malformed and invalid
//! records), the real router, and a closing table that checks every input
//! record is accounted for against what the generator knows it sent.

use crate::bench::workload::{self, Expected, Shape};
use crate::config::Config;
use crate::kafka::{self, RunControl};
use crate::pipeline::Reason;
use crate::producer::EnvelopeProducerBuilder;
use crate::progress::Progress;
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
    std::fs::write(&registry, workload::registry_yaml())?;
    let yaml = workload::router_config(
        &bootstrap,
        "raw.events",
        "envelope-router-demo",
        "envelope-router.dead-letter",
        &registry,
        "broker",
        &Default::default(),
    );
    let cfg = Config::from_yaml(&yaml, std::path::Path::new("<demo>"), |v| {
        std::env::var(v).ok()
    })?;

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
    let shape = Shape {
        records: opts.records,
        seed: opts.seed,
        ..Shape::default()
    };
    let expected = workload::generate(&shape, &producer)?;
    producer.flush(Duration::from_secs(30))?;
    anyhow::ensure!(
        failed.load(Ordering::Relaxed) == 0,
        "{} demo records were not accepted by the mock cluster",
        failed.load(Ordering::Relaxed)
    );

    // Wait until the router has settled every record sent.
    let deadline = Instant::now() + Duration::from_secs(120);
    let bar = opts
        .progress
        .then(|| Progress::new("  settled", Some(expected.sent)));
    while ctl.stats.records_settled() < expected.sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        if let Some(bar) = &bar {
            progress(bar, &ctl);
        }
    }
    // The router's working time: from its first record (the mock cluster
    // takes ~3 s to assign partitions to a new group) to the last settled.
    let elapsed = ctl.stats.first_record_at().unwrap_or(started).elapsed();
    if let Some(bar) = &bar {
        progress(bar, &ctl);
        bar.finish();
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

fn progress(bar: &Progress, ctl: &RunControl) {
    let s = &ctl.stats;
    bar.set_position(s.records_settled());
    bar.set_message(format!(
        "routed {}  duplicates {}  dead letters {}",
        s.records_routed(),
        s.reason(Reason::Duplicate),
        Reason::ALL
            .iter()
            .filter(|r| r.is_dead_letter())
            .map(|r| s.reason(*r))
            .sum::<u64>(),
    ));
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
