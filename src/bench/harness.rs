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

use super::procstat::ThreadGroup;
use super::report::{round_ratios, BenchReport, Run, Side};
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
    /// A command each child is started under (empty: none), with its
    /// arguments, as cargo's `runner`.
    pub runner: Vec<String>,
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
    let mut command = match opts.runner.split_first() {
        Some((runner, runner_args)) => {
            let mut c = Command::new(runner);
            c.args(runner_args).arg(&opts.exe);
            c
        }
        None => Command::new(&opts.exe),
    };
    let out = command
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
