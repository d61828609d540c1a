//! `bench`: end-to-end throughput of the router against two ceilings on the
//! same preloaded data, broker and client settings.
//!
//! 1. Generate the workload with the producer library and preload it
//!    (sizing partitions so the mock cluster's ~5 MiB per-partition
//!    retention drops nothing, then checking the watermarks).
//! 2. Run the bare relay, the routing relay (`relay.rs`) and the router,
//!    each as a child process of this binary and each in its own consumer
//!    group, `runs` rounds of one run each, every round starting with the
//!    next side (bare, routing, router; routing, router, bare; ...); each
//!    run reports its records, active time (first record read to last
//!    acknowledgement), CPU seconds and peak RSS.
//! 3. Check every router run's counts against what the generator sent, so a
//!    fast wrong run cannot pass, and report each side's median, min and
//!    max and the router's ratio to each ceiling.

use super::latency::LatencyReport;
use super::procstat::ThreadGroup;
use super::workload::{self, Expected, Shape, Sizes};
use crate::kafka::profile::{LoopProfile, ProducerDigest};
use crate::progress::Progress;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Harness settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The traffic.
    pub shape: Shape,
    /// Input partitions (raised on the mock cluster if retention needs it).
    pub partitions: i32,
    /// External brokers; `None` runs the embedded mock cluster.
    pub bootstrap: Option<String>,
    /// This binary (children are started from it).
    pub exe: PathBuf,
    /// Longest a side may run.
    pub timeout: Duration,
    /// Partitions of each pre-created output topic (routed topics, dead
    /// letters, the relay's topic).
    pub output_partitions: i32,
    /// Brokers of the embedded mock cluster (partition leaders spread over them).
    pub brokers: i32,
    /// Runs of each side, in rounds of one run per side; each round starts
    /// with the next side.
    pub runs: usize,
    /// Router worker loops (`workers` in the config).
    pub workers: usize,
    /// Whether the router writes its dedup changelog (the default).
    pub changelog: bool,
    /// Ids the router's dedup windows hold when a run starts, restored
    /// from its changelog (`prefill.rs`); 0 starts them empty.
    pub dedup_resident: u64,
    /// librdkafka consumer properties for all three sides.
    pub consumer: Vec<(String, String)>,
    /// librdkafka producer properties for all three sides.
    pub producer: Vec<(String, String)>,
}

/// What a child reports on stdout when it is done.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildSummary {
    /// Input records read.
    pub records: u64,
    /// Record bytes read.
    #[serde(default)]
    pub bytes: u64,
    /// From its first record to its last acknowledgement.
    pub active_s: f64,
    /// CPU seconds of the process from its first record to its exit
    /// (start-up, the group join and a dedup restore not included).
    pub cpu_s: f64,
    /// Peak resident memory.
    pub peak_rss_bytes: u64,
    /// Relays only: writes acknowledged.
    #[serde(default)]
    pub writes: u64,
    /// Router only: records routed.
    #[serde(default)]
    pub routed: u64,
    /// Router only: count per reason code.
    #[serde(default)]
    pub reasons: BTreeMap<String, u64>,
    /// Router only: dedup ids restored from the changelog at start.
    #[serde(default)]
    pub restored_ids: u64,
    /// Router only: seconds the restores took.
    #[serde(default)]
    pub restore_s: f64,
    /// Router only: where the consume loop's time went.
    #[serde(default, rename = "loop")]
    pub loop_profile: Option<LoopProfile>,
    /// The producer's statistics digest.
    #[serde(default)]
    pub producer: Option<ProducerDigest>,
    /// CPU, context switches and page faults per thread name, read as
    /// its last record settled.
    #[serde(default)]
    pub threads: Vec<ThreadGroup>,
}

/// One run of one side.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Input records.
    pub records: u64,
    /// Records per second of active time.
    pub msgs_per_s: f64,
    /// Input megabytes (10⁶) per second of active time.
    pub mb_per_s: f64,
    /// CPU seconds per million records.
    pub cpu_s_per_million: f64,
    /// Peak RSS, MiB.
    pub peak_rss_mib: f64,
    /// Active seconds.
    pub active_s: f64,
    /// CPU seconds of the process from its first record.
    pub cpu_s: f64,
    /// Router only: dedup ids restored at start, and the seconds it took.
    pub restored: (u64, f64),
    /// Router only: where the consume loop's time went.
    pub loop_profile: Option<LoopProfile>,
    /// The producer's statistics digest.
    pub producer: Option<ProducerDigest>,
    /// CPU, context switches and page faults per thread name.
    pub threads: Vec<ThreadGroup>,
}

/// Median, min and max of one figure over the runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// Median (the lower middle for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.collect();
        v.sort_by(f64::total_cmp);
        Spread {
            median: v.get((v.len().max(1) - 1) / 2).copied().unwrap_or(0.0),
            min: v.first().copied().unwrap_or(0.0),
            max: v.last().copied().unwrap_or(0.0),
        }
    }

    /// max / min: how far apart the runs landed.
    pub fn spread(&self) -> f64 {
        self.max / self.min.max(1e-9)
    }
}

/// One side over all its runs.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Records per second.
    pub msgs_per_s: Spread,
    /// Input MB per second.
    pub mb_per_s: Spread,
    /// CPU seconds per million input records.
    pub cpu_s_per_million: Spread,
    /// Peak RSS, MiB.
    pub peak_rss_mib: Spread,
    /// Every run, in order.
    pub runs: Vec<Run>,
}

impl Side {
    /// The run whose throughput is the median.
    pub fn median_run(&self) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.msgs_per_s == self.msgs_per_s.median)
    }

    fn of(runs: Vec<Run>) -> Side {
        Side {
            msgs_per_s: Spread::of(runs.iter().map(|r| r.msgs_per_s)),
            mb_per_s: Spread::of(runs.iter().map(|r| r.mb_per_s)),
            cpu_s_per_million: Spread::of(runs.iter().map(|r| r.cpu_s_per_million)),
            peak_rss_mib: Spread::of(runs.iter().map(|r| r.peak_rss_mib)),
            runs,
        }
    }
}

/// `side`'s throughput over `ceiling`'s in each round.
fn round_ratios(side: &Side, ceiling: &Side) -> Spread {
    Spread::of(
        (side.runs.iter().zip(&ceiling.runs)).map(|(s, c)| s.msgs_per_s / c.msgs_per_s.max(1e-9)),
    )
}

/// The harness's result (also written as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `mock` or the bootstrap servers.
    pub broker: String,
    /// Brokers of the mock cluster (0 with `--bootstrap`).
    pub brokers: i32,
    /// Records in the workload.
    pub records: u64,
    /// Input bytes.
    pub bytes: u64,
    /// Input partitions.
    pub partitions: i32,
    /// Partitions of each output topic.
    pub output_partitions: i32,
    /// Payload sizes.
    pub sizes: String,
    /// Shares per 10 000: malformed, invalid, duplicate, unknown schema.
    pub shares: [u64; 4],
    /// Router worker loops.
    pub workers: usize,
    /// Client properties given on the command line (all sides).
    pub properties: Vec<String>,
    /// The bare relay: every record to one topic.
    pub relay: Side,
    /// The routing relay: every record to its routed topics, nothing checked.
    pub routing_relay: Side,
    /// The router.
    pub router: Side,
    /// Median router throughput over median bare relay throughput.
    pub ratio: f64,
    /// Median router throughput over median routing relay throughput.
    pub routing_ratio: f64,
    /// The router's throughput over the bare relay's, round by round.
    pub round_ratio: Spread,
    /// The router's throughput over the routing relay's, round by round.
    /// The sides of one round run back to back, so a slowdown of the host
    /// that spans a whole round cancels out here and not in the max/min
    /// of the router's throughput; noise shorter than a round does not.
    pub round_routing_ratio: Spread,
    /// Correctness problems (empty when every record is accounted for).
    pub mismatches: Vec<String>,
    /// CPUs of this machine.
    pub cpus: usize,
    /// The CPU model (`/proc/cpuinfo`), since sessions change hosts.
    pub cpu_model: String,
    /// The allocator all three sides ran with: `jemalloc` (the default
    /// build) or `system` (built without the `jemalloc` feature).
    pub allocator: String,
    /// Latency at a fixed rate, when asked for.
    pub latency: Option<LatencyReport>,
}

const MOCK_PARTITION_BUDGET: usize = 4 << 20;

/// Runs the harness.
pub fn run(opts: &BenchOptions, progress: &mut impl Write) -> anyhow::Result<BenchReport> {
    let run_id = format!("{}-{}", std::process::id(), opts.shape.seed);
    let input = format!("bench.raw.{run_id}");
    let mean = workload::mean_record_bytes(opts.shape.sizes);
    let (cluster, bootstrap, partitions) = match &opts.bootstrap {
        Some(b) => (None, b.clone(), opts.partitions),
        None => {
            let needed = (opts.shape.records * mean).div_ceil(MOCK_PARTITION_BUDGET) as i32;
            let partitions = opts.partitions.max(needed);
            let c = MockCluster::new(opts.brokers)?;
            c.create_topic(&input, partitions, 1)?;
            let b = c.bootstrap_servers();
            (Some(c), b, partitions)
        }
    };
    if cluster.is_none() {
        create_topic(&bootstrap, &input, partitions)?;
    }

    let dir = std::env::temp_dir().join(format!("envelope-router-bench-{run_id}"));
    std::fs::create_dir_all(&dir)?;
    let registry = dir.join("schemas.yaml");
    std::fs::write(&registry, workload::registry_yaml())?;

    writeln!(
        progress,
        "preloading {} records into {partitions} partitions of {input} …",
        opts.shape.records
    )?;
    let started = Instant::now();
    let expected = preload(&bootstrap, &input, &opts.shape)?;
    writeln!(
        progress,
        "  {} records, {:.1} MB in {:.1} s; watermarks checked",
        expected.sent,
        expected.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    )?;
    if let Err(e) = check_preloaded(&bootstrap, &input, expected.sent) {
        if cluster.is_some() {
            return Err(e);
        }
        // tansu 0.6's high watermark trails the last batch of a partition;
        // every side's record count is checked against what was sent anyway.
        writeln!(progress, "  watermark check: {e} (continuing: the broker's watermarks may lag; each side's count is checked)")?;
    }
    // Output topics exist before a router starts, as in production (the mock
    // cluster would otherwise auto-create each with 4 partitions).
    let relay_topic = format!("bench.relay.{run_id}");
    let dead_letters = format!("bench.dead-letter.{run_id}");
    let outputs: Vec<&str> = expected
        .topics
        .keys()
        .map(String::as_str)
        .chain([relay_topic.as_str(), dead_letters.as_str()])
        .collect();
    for topic in &outputs {
        match &cluster {
            Some(c) => c.create_topic(topic, opts.output_partitions, 1)?,
            None => create_topic(&bootstrap, topic, opts.output_partitions)?,
        }
    }

    let sent = expected.sent.to_string();
    let bar = Progress::new("bench", Some(3 * opts.runs.max(1) as u64));
    let (mut relay, mut routing, mut router) = (Vec::new(), Vec::new(), Vec::new());
    let mut mismatches = Vec::new();
    for i in 0..opts.runs.max(1) {
        // Each run reads the whole input in consumer groups of its own.
        let config = dir.join(format!("router-{i}.yaml"));
        std::fs::write(
            &config,
            config_yaml(
                opts,
                &bootstrap,
                &input,
                &format!("bench-router-{run_id}-{i}"),
                &dead_letters,
                &registry,
                cluster.is_some(),
            ),
        )?;
        if opts.dedup_resident > 0 {
            super::prefill::fill(
                &bootstrap,
                &format!("bench-router-{run_id}-{i}"),
                &input,
                partitions,
                opts.dedup_resident,
                opts.shape.seed + i as u64,
                |topic, n| match &cluster {
                    Some(c) => Ok(c.create_topic(topic, n, 1)?),
                    None => create_topic(&bootstrap, topic, n),
                },
            )?;
        }
        let config = path(&config);
        let tag = format!("run {}/{}", i + 1, opts.runs.max(1));
        // Each round starts with the next side: the sides share the broker
        // and (router and routing relay) the output topics, so a fixed
        // order would give one side every run after the others' writes.
        for k in 0..3 {
            // The two ceilings differ only in where they write.
            let (name, group, target, runs): (_, _, &[&str], _) = match (i + k) % 3 {
                0 => (
                    "bare relay",
                    "bench-relay",
                    &["--output", &relay_topic],
                    &mut relay,
                ),
                1 => (
                    "routing relay",
                    "bench-routing-relay",
                    &["--routing"],
                    &mut routing,
                ),
                _ => {
                    let s = side(
                        &bar,
                        &tag,
                        "router",
                        opts,
                        &[
                            "run",
                            "--config",
                            config,
                            "--exit-after-records",
                            &sent,
                            "--summary",
                        ],
                    )?;
                    if s.restored_ids != opts.dedup_resident {
                        mismatches.push(format!(
                            "{tag}: router restored {} dedup ids, {} were written",
                            s.restored_ids, opts.dedup_resident
                        ));
                    }
                    mismatches.extend(
                        verify(&expected, &s)
                            .into_iter()
                            .map(|m| format!("{tag}: {m}")),
                    );
                    router.push(one_run(&s, expected.bytes));
                    continue;
                }
            };
            let group = format!("{group}-{run_id}-{i}");
            let mut args = vec!["relay", "--config", config, "--group", &group];
            args.extend_from_slice(target);
            args.extend(["--exit-after", &sent]);
            let s = side(&bar, &tag, name, opts, &args)?;
            if s.records != expected.sent {
                mismatches.push(format!(
                    "{tag}: {name} read {} of {} records",
                    s.records, expected.sent
                ));
            }
            runs.push(one_run(&s, expected.bytes));
        }
    }
    bar.set_message("done");
    bar.finish();
    let _ = std::fs::remove_dir_all(&dir);
    drop(cluster);

    let (relay, routing_relay, router) = (Side::of(relay), Side::of(routing), Side::of(router));
    let properties = opts
        .consumer
        .iter()
        .map(|(k, v)| format!("consumer {k}={v}"))
        .chain(
            opts.producer
                .iter()
                .map(|(k, v)| format!("producer {k}={v}")),
        )
        .collect();
    Ok(BenchReport {
        broker: if opts.bootstrap.is_some() {
            bootstrap
        } else {
            "mock".into()
        },
        brokers: if opts.bootstrap.is_some() {
            0
        } else {
            opts.brokers
        },
        records: expected.sent,
        bytes: expected.bytes,
        partitions,
        output_partitions: opts.output_partitions,
        sizes: match opts.shape.sizes {
            Sizes::Fixed(n) => format!("fixed {n} B"),
            Sizes::LogUniform(lo, hi) => format!("log-uniform {lo}–{hi} B"),
        },
        shares: [
            opts.shape.malformed,
            opts.shape.invalid,
            opts.shape.duplicate,
            opts.shape.unknown_schema,
        ],
        workers: opts.workers,
        properties,
        ratio: router.msgs_per_s.median / relay.msgs_per_s.median.max(1e-9),
        routing_ratio: router.msgs_per_s.median / routing_relay.msgs_per_s.median.max(1e-9),
        round_ratio: round_ratios(&router, &relay),
        round_routing_ratio: round_ratios(&router, &routing_relay),
        relay,
        routing_relay,
        router,
        mismatches,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpu_model(),
        allocator: ALLOCATOR.into(),
        latency: None,
    })
}

/// Runs one side once and prints its throughput.
fn side(
    bar: &Progress,
    tag: &str,
    name: &str,
    opts: &BenchOptions,
    args: &[&str],
) -> anyhow::Result<ChildSummary> {
    bar.set_message(format!("{tag}: {name}"));
    let s = child(opts, args)?;
    bar.println(format!(
        "{tag}: {name}: {:.0} records/s, {:.2} CPU-s",
        s.records as f64 / s.active_s.max(1e-9),
        s.cpu_s
    ));
    bar.inc(1);
    Ok(s)
}

fn one_run(s: &ChildSummary, bytes: u64) -> Run {
    Run {
        records: s.records,
        msgs_per_s: s.records as f64 / s.active_s.max(1e-9),
        mb_per_s: bytes as f64 / s.active_s.max(1e-9) / 1e6,
        cpu_s_per_million: s.cpu_s / (s.records.max(1) as f64 / 1e6),
        peak_rss_mib: s.peak_rss_bytes as f64 / (1 << 20) as f64,
        active_s: s.active_s,
        cpu_s: s.cpu_s,
        restored: (s.restored_ids, s.restore_s),
        loop_profile: s.loop_profile.clone(),
        producer: s.producer.clone(),
        threads: s.threads.clone(),
    }
}

/// The allocator of this build (each side is this executable).
const ALLOCATOR: &str = if cfg!(feature = "jemalloc") {
    "jemalloc"
} else {
    "system"
};

/// The host CPU's model name, as `/proc/cpuinfo` gives it.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// The config every side of one run reads (a group of its own per run).
pub(super) fn config_yaml(
    opts: &BenchOptions,
    bootstrap: &str,
    input: &str,
    group: &str,
    dead_letters: &str,
    registry: &Path,
    mock: bool,
) -> String {
    // The mock cluster answers a waiting fetch only when fetch.wait.max.ms
    // runs out, not when data arrives (a real broker answers at once), so
    // its consumers poll with a short wait; applied to all sides alike.
    let mut consumer = Vec::new();
    if mock {
        consumer.push(("fetch.wait.max.ms".to_owned(), "5".to_owned()));
    }
    for (k, v) in &opts.consumer {
        consumer.retain(|(key, _)| key != k);
        consumer.push((k.clone(), v.clone()));
    }
    // Producer statistics once a second feed the report's request figures.
    let mut producer = vec![("statistics.interval.ms".to_owned(), "1000".to_owned())];
    for (k, v) in &opts.producer {
        producer.retain(|(key, _)| key != k);
        producer.push((k.clone(), v.clone()));
    }
    let mut yaml = workload::router_config(
        bootstrap,
        input,
        group,
        dead_letters,
        registry,
        if mock { "broker" } else { "admin" },
        &workload::ClientProperties { consumer, producer },
    );
    if opts.workers > 1 {
        yaml.push_str(&format!("workers: {}\n", opts.workers));
    }
    if !opts.changelog {
        yaml.push_str("dedup: { changelog: { enabled: false } }\n");
    }
    yaml
}

pub(super) fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for r in rt.block_on(admin.create_topics([&new], &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

fn preload(bootstrap: &str, topic: &str, shape: &Shape) -> anyhow::Result<Expected> {
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let f = failed.clone();
    let producer = crate::producer::EnvelopeProducerBuilder::new(bootstrap, topic)
        .set("linger.ms", "20")
        .set("compression.type", "none")
        .build(move |r| {
            if r.result.is_err() {
                f.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })?;
    let expected = workload::generate(shape, &producer)?;
    producer.flush(Duration::from_secs(60))?;
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} records could not be preloaded");
    Ok(expected)
}

/// Every record is in the input and nothing was dropped by retention. A
/// broker may show acknowledged records in its watermarks a little later:
/// the count is asked again for up to 10 s.
fn check_preloaded(bootstrap: &str, topic: &str, expected: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match count_preloaded(bootstrap, topic, expected) {
            Err(e) if Instant::now() < deadline && e.to_string().starts_with("input holds") => {
                std::thread::sleep(Duration::from_millis(500));
            }
            result => return result,
        }
    }
}

fn count_preloaded(bootstrap: &str, topic: &str, expected: u64) -> anyhow::Result<()> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-check")
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0;
    for p in md
        .topics()
        .first()
        .context("input topic missing")?
        .partitions()
    {
        let (low, high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        anyhow::ensure!(
            low == 0,
            "partition {} dropped {low} records to retention: use more partitions",
            p.id()
        );
        total += high - low;
    }
    anyhow::ensure!(
        total as u64 == expected,
        "input holds {total} records, {expected} were sent"
    );
    Ok(())
}

fn child(opts: &BenchOptions, args: &[&str]) -> anyhow::Result<ChildSummary> {
    let out = Command::new(&opts.exe)
        .args(args)
        .env(
            "ENVELOPE_ROUTER_TIMEOUT_S",
            opts.timeout.as_secs().to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {} {}", opts.exe.display(), args[0]))?;
    anyhow::ensure!(
        out.status.success(),
        "{} exited with {}",
        args[0],
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("child printed no summary")?;
    serde_json::from_str(line).with_context(|| format!("child summary {line:?}"))
}

/// The router's counts against what the generator sent.
fn verify(e: &Expected, router: &ChildSummary) -> Vec<String> {
    let mut bad = Vec::new();
    if router.records != e.sent {
        bad.push(format!(
            "router read {} of {} records",
            router.records, e.sent
        ));
    }
    if router.routed != e.routed {
        bad.push(format!(
            "router routed {}, expected {}",
            router.routed, e.routed
        ));
    }
    for r in crate::pipeline::Reason::ALL {
        let got = router.reasons.get(r.code()).copied().unwrap_or(0);
        let want = e.reasons.get(&r).copied().unwrap_or(0);
        if got != want {
            bad.push(format!("{r}: {got}, expected {want}"));
        }
    }
    bad
}

impl BenchReport {
    /// Prints the human table.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let broker = if self.brokers > 0 {
            format!("mock cluster of {}", self.brokers)
        } else {
            self.broker.clone()
        };
        writeln!(
            out,
            "\n{} records ({:.1} MB, {}), {} input partitions, {} per output topic, broker {}",
            self.records,
            self.bytes as f64 / 1e6,
            self.sizes,
            self.partitions,
            self.output_partitions,
            broker,
        )?;
        writeln!(
            out,
            "{} CPUs ({}); allocator {}; router workers {}; shares per 10k: malformed {}, invalid {}, duplicate {}, unknown schema {}",
            self.cpus, self.cpu_model, self.allocator, self.workers, self.shares[0], self.shares[1], self.shares[2], self.shares[3]
        )?;
        if !self.properties.is_empty() {
            writeln!(out, "client properties: {}", self.properties.join(", "))?;
        }
        let runs = self.router.runs.len();
        writeln!(
            out,
            "\n{runs} run(s) per side; median [min – max]\n{:<14} {:>26} {:>10} {:>22} {:>13}",
            "", "records/s", "MB/s", "CPU s / M records", "peak RSS MiB"
        )?;
        for (name, s) in self.sides() {
            writeln!(
                out,
                "{name:<14} {:>8.0} [{:>7.0} – {:>7.0}] {:>10.1} {:>6.2} [{:>5.2} – {:>5.2}] {:>13.1}",
                s.msgs_per_s.median,
                s.msgs_per_s.min,
                s.msgs_per_s.max,
                s.mb_per_s.median,
                s.cpu_s_per_million.median,
                s.cpu_s_per_million.min,
                s.cpu_s_per_million.max,
                s.peak_rss_mib.max,
            )?;
        }
        writeln!(
            out,
            "\nrouter / bare relay {:.2}, router / routing relay {:.2}; router CPU per record / bare relay's {:.2}; router max/min {:.2}",
            self.ratio,
            self.routing_ratio,
            self.router.cpu_s_per_million.median / self.relay.cpu_s_per_million.median.max(1e-9),
            self.router.msgs_per_s.spread(),
        )?;
        let (b, r) = (&self.round_ratio, &self.round_routing_ratio);
        writeln!(
            out,
            "round by round: router / bare relay {:.2} [{:.2} – {:.2}], router / routing relay {:.2} [{:.2} – {:.2}]; max/min {:.2}",
            b.median, b.min, b.max, r.median, r.min, r.max, r.spread(),
        )?;
        writeln!(
            out,
            "\nproducer (median run){:<3} {:>9} {:>10} {:>9} {:>11} {:>9} {:>9}",
            "", "requests", "rec/request", "rec/batch", "queue µs", "rtt µs", "in flight"
        )?;
        for (name, s) in self.sides() {
            let digest = s.median_run().and_then(|r| r.producer.as_ref());
            if digest.is_none_or(|p| p.produce_requests == 0) {
                // Statistics come once a second: a shorter run has none.
                writeln!(
                    out,
                    "{name:<24} (run shorter than the 1 s statistics interval)"
                )?;
            }
            if let Some(p) = digest.filter(|p| p.produce_requests > 0) {
                writeln!(
                    out,
                    "{name:<24} {:>9} {:>10.1} {:>9.1} {:>11.0} {:>9.0} {:>9}",
                    p.produce_requests,
                    p.records_per_request,
                    p.batch_records,
                    p.int_latency_us,
                    p.rtt_us,
                    p.max_waitresp
                )?;
            }
        }
        if let Some(l) = self
            .router
            .median_run()
            .and_then(|r| r.loop_profile.as_ref())
        {
            let active = self.router.median_run().map_or(0.0, |r| r.active_s);
            writeln!(
                out,
                "router loop (median run, {active:.2} s active): {} turns, {:.0}% idle, {:.0} records/turn; wait {:.2} s, process {:.2} s, deliveries {:.2} s, upkeep {:.2} s",
                l.turns,
                100.0 * l.idle_turns as f64 / l.turns.max(1) as f64,
                l.records as f64 / l.turns.max(1) as f64,
                l.wait_s,
                l.process_s,
                l.deliveries_s,
                l.upkeep_s
            )?;
        }
        if let Some((ids, seconds)) = (self.router.median_run())
            .map(|r| r.restored)
            .filter(|(ids, _)| *ids > 0)
        {
            writeln!(
                out,
                "router dedup windows (median run): {ids} ids restored from the changelog in {seconds:.2} s before the first record (not counted above)"
            )?;
        }
        self.print_threads(out)?;
        if let Some(l) = &self.latency {
            l.print(out)?;
        }
        if self.mismatches.is_empty() {
            writeln!(out, "correctness: every record accounted for ✓")
        } else {
            writeln!(out, "correctness FAILED:")?;
            self.mismatches
                .iter()
                .try_for_each(|m| writeln!(out, "  - {m}"))
        }
    }

    /// The three sides with the names the report gives them.
    fn sides(&self) -> [(&'static str, &Side); 3] {
        [
            ("bare relay", &self.relay),
            ("routing relay", &self.routing_relay),
            ("router", &self.router),
        ]
    }

    /// Each side's busiest threads in its median run: CPU seconds per
    /// million records, and per thousand records how often the scheduler
    /// took the CPU from them, how often they waited and how many pages
    /// they touched first.
    fn print_threads(&self, out: &mut impl Write) -> std::io::Result<()> {
        let runs: Vec<(&str, &Run)> = (self.sides().into_iter())
            .filter_map(|(name, s)| Some((name, s.median_run()?)))
            .filter(|(_, r)| !r.threads.is_empty())
            .collect();
        if runs.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "threads (median run): CPU s / M records (preempted / waited / page faults per 1k records)"
        )?;
        for (name, run) in runs {
            let per_m = 1e6 / run.records.max(1) as f64;
            let groups: Vec<String> = (run.threads.iter().take(THREADS_SHOWN))
                .map(|t| {
                    format!(
                        "{} {:.2} ({:.1}/{:.1}/{:.1})",
                        t.name,
                        t.cpu_s * per_m,
                        t.preempted as f64 * per_m / 1e3,
                        t.waits as f64 * per_m / 1e3,
                        t.faults as f64 * per_m / 1e3
                    )
                })
                .collect();
            writeln!(out, "{name:<14} {}", groups.join(", "))?;
        }
        Ok(())
    }
}

/// Thread groups shown per side (busiest first).
const THREADS_SHOWN: usize = 4;

#[cfg(test)]
mod tests {
    use super::{round_ratios, Run, Side, Spread};

    fn side(rates: &[f64]) -> Side {
        Side::of(
            (rates.iter())
                .map(|&msgs_per_s| Run {
                    records: 1,
                    msgs_per_s,
                    mb_per_s: 0.0,
                    cpu_s_per_million: 0.0,
                    peak_rss_mib: 0.0,
                    active_s: 0.0,
                    cpu_s: 0.0,
                    restored: (0, 0.0),
                    loop_profile: None,
                    producer: None,
                    threads: Vec::new(),
                })
                .collect(),
        )
    }

    #[test]
    fn a_slow_round_moves_every_side_but_not_the_round_ratios() {
        // Round 2 ran 30% slower on every side (the host, not the router).
        let (relay, router) = (side(&[1000.0, 700.0, 1000.0]), side(&[800.0, 560.0, 780.0]));
        assert!(router.msgs_per_s.spread() > 1.4);
        let r = round_ratios(&router, &relay);
        assert_eq!((r.median, r.min, r.max), (0.8, 0.78, 0.8));
        assert!(r.spread() < 1.03);
    }

    #[test]
    fn spread_is_median_min_max() {
        let s = Spread::of([3.0, 1.0, 2.0].into_iter());
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(
            Spread::of([4.0, 1.0].into_iter()).median,
            1.0,
            "lower middle"
        );
        assert_eq!(Spread::of(std::iter::empty()).median, 0.0);
        assert_eq!(Spread::of([2.0, 3.0].into_iter()).spread(), 1.5);
    }
}
