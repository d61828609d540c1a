//! `bench`: end-to-end throughput of the router against a bare relay on the
//! same preloaded data, broker and client settings.
//!
//! 1. Generate the workload with the producer library and preload it
//!    (sizing partitions so the mock cluster's ~5 MiB per-partition
//!    retention drops nothing, then checking the watermarks).
//! 2. Run the bare relay, then the router, each as a child process of this
//!    binary; each reports its records, active time (first record to last
//!    acknowledgement), CPU seconds and peak RSS.
//! 3. Check the router's counts against what the generator sent, so a fast
//!    wrong run cannot pass, and report both sides and their ratio.

use crate::workload::{self, Expected, Shape, Sizes};
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
}

/// What a child reports on stdout when it is done.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildSummary {
    /// Records read (router) or relayed (relay).
    pub records: u64,
    /// Record bytes read.
    #[serde(default)]
    pub bytes: u64,
    /// From its first record to its last acknowledgement.
    pub active_s: f64,
    /// CPU seconds of the whole process (startup and group join included).
    pub cpu_s: f64,
    /// Peak resident memory.
    pub peak_rss_bytes: u64,
    /// Router only: records routed.
    #[serde(default)]
    pub routed: u64,
    /// Router only: count per reason code.
    #[serde(default)]
    pub reasons: BTreeMap<String, u64>,
}

/// One side's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Records.
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
}

/// The harness's result (also written as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `mock` or the bootstrap servers.
    pub broker: String,
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
    /// The bare relay.
    pub relay: Side,
    /// The router.
    pub router: Side,
    /// Router throughput over relay throughput.
    pub ratio: f64,
    /// Correctness problems (empty when every record is accounted for).
    pub mismatches: Vec<String>,
    /// CPUs of this machine.
    pub cpus: usize,
    /// Latency at a fixed rate, when asked for.
    pub latency: Option<LatencyReport>,
}

/// Latency of both sides at the same offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// Partitions of each side's input topic.
    pub input_partitions: i32,
    /// The router.
    pub router: Latency,
    /// The bare relay.
    pub relay: Latency,
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
    let config = dir.join("router.yaml");
    std::fs::write(
        &config,
        config_yaml(&bootstrap, &input, &run_id, &registry, cluster.is_some()),
    )?;

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
    check_preloaded(&bootstrap, &input, expected.sent)?;
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

    writeln!(progress, "bare relay …")?;
    let relay = child(
        opts,
        &[
            "relay",
            "--config",
            path(&config),
            "--output",
            &relay_topic,
            "--group",
            &format!("bench-relay-{run_id}"),
            "--exit-after",
            &expected.sent.to_string(),
        ],
    )?;
    writeln!(
        progress,
        "  {:.0} records/s",
        relay.records as f64 / relay.active_s.max(1e-9)
    )?;
    writeln!(progress, "router …")?;
    let router = child(
        opts,
        &[
            "run",
            "--config",
            path(&config),
            "--exit-after-records",
            &expected.sent.to_string(),
            "--summary",
        ],
    )?;
    writeln!(
        progress,
        "  {:.0} records/s",
        router.records as f64 / router.active_s.max(1e-9)
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    drop(cluster);

    let side = |s: &ChildSummary| Side {
        records: s.records,
        msgs_per_s: s.records as f64 / s.active_s.max(1e-9),
        mb_per_s: expected.bytes as f64 / s.active_s.max(1e-9) / 1e6,
        cpu_s_per_million: s.cpu_s / (s.records.max(1) as f64 / 1e6),
        peak_rss_mib: s.peak_rss_bytes as f64 / (1 << 20) as f64,
        active_s: s.active_s,
    };
    let (relay_side, router_side) = (side(&relay), side(&router));
    Ok(BenchReport {
        broker: if opts.bootstrap.is_some() {
            bootstrap
        } else {
            "mock".into()
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
        ratio: router_side.msgs_per_s / relay_side.msgs_per_s.max(1e-9),
        relay: relay_side,
        router: router_side,
        mismatches: verify(&expected, &relay, &router),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        latency: None,
    })
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn config_yaml(bootstrap: &str, input: &str, run_id: &str, registry: &Path, mock: bool) -> String {
    // The mock cluster answers a waiting fetch only when fetch.wait.max.ms
    // runs out, not when data arrives (a real broker answers at once), so
    // its consumers poll with a short wait; applied to relay and router alike.
    workload::router_config(
        bootstrap,
        input,
        &format!("bench-router-{run_id}"),
        &format!("bench.dead-letter.{run_id}"),
        registry,
        if mock { "broker" } else { "admin" },
        mock.then_some("fetch.wait.max.ms: 5"),
    )
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
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

/// Every record is in the input and nothing was dropped by retention.
fn check_preloaded(bootstrap: &str, topic: &str, expected: u64) -> anyhow::Result<()> {
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

fn verify(e: &Expected, relay: &ChildSummary, router: &ChildSummary) -> Vec<String> {
    let mut bad = Vec::new();
    if relay.records != e.sent {
        bad.push(format!(
            "relay acknowledged {} of {} records",
            relay.records, e.sent
        ));
    }
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
        writeln!(
            out,
            "\n{} records ({:.1} MB, {}), {} input partitions, {} per output topic, broker {}, {} CPUs",
            self.records,
            self.bytes as f64 / 1e6,
            self.sizes,
            self.partitions,
            self.output_partitions,
            self.broker,
            self.cpus
        )?;
        writeln!(
            out,
            "shares per 10k: malformed {}, invalid {}, duplicate {}, unknown schema {}\n",
            self.shares[0], self.shares[1], self.shares[2], self.shares[3]
        )?;
        writeln!(
            out,
            "{:<12} {:>12} {:>10} {:>16} {:>14}",
            "", "records/s", "MB/s", "CPU s / M rec", "peak RSS MiB"
        )?;
        for (name, s) in [("bare relay", &self.relay), ("router", &self.router)] {
            writeln!(
                out,
                "{name:<12} {:>12.0} {:>10.1} {:>16.2} {:>14.1}",
                s.msgs_per_s, s.mb_per_s, s.cpu_s_per_million, s.peak_rss_mib
            )?;
        }
        writeln!(out, "\nrouter / relay throughput: {:.2}", self.ratio)?;
        if let Some(l) = &self.latency {
            writeln!(
                out,
                "\nlatency at {} records/s, {} input partitions (send → read from the output topic, ms)",
                l.router.rate, l.input_partitions
            )?;
            writeln!(
                out,
                "{:<12} {:>8} {:>8} {:>8} {:>8} {:>9}",
                "", "p50", "p99", "p99.9", "max", "records"
            )?;
            for (name, s) in [("bare relay", &l.relay), ("router", &l.router)] {
                writeln!(
                    out,
                    "{name:<12} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9}",
                    s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms, s.records
                )?;
            }
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
}

/// Latency at a fixed offered rate (end to end: producer send → record read
/// from the output topic), for one side.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Offered records per second.
    pub rate: u64,
    /// Records measured.
    pub records: u64,
    /// Percentiles in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Worst.
    pub max_ms: f64,
}

/// The streams the latency run sends to (all routed by [`workload::ROUTES_YAML`]).
const LATENCY_STREAMS: [(&str, &str, &str); 6] = [
    ("prod", "glutton", "telemetry_match_event"),
    ("prod", "arena", "player_login"),
    ("staging", "glutton", "store_purchase"),
    ("prod", "billing", "telemetry_match_event"),
    ("staging", "arena", "telemetry_match_event"),
    ("prod", "glutton", "player_login"),
];

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Measures router and relay latency at `rate` records/s for `seconds`,
/// each with its own empty input topic of `input_partitions` partitions,
/// payloads of `payload` bytes.
///
/// On the mock cluster keep `input_partitions` small: its Fetch handler finds
/// the requested offset by walking the partition's message sets one by one
/// (librdkafka's `rd_kafka_mock_msgset_find`, marked FIXME there), and a
/// partition keeps up to 5 MiB of them. Many partitions mean small batches,
/// so many message sets per partition: a few seconds into 30k records/s over
/// 8 partitions, that walk kept the mock's one thread busy (35% of the bench
/// process's samples) and both sides' p99 grew past 75 ms.
pub fn latency(
    opts: &BenchOptions,
    rate: u64,
    seconds: u64,
    payload: usize,
    input_partitions: i32,
    progress: &mut impl Write,
) -> anyhow::Result<LatencyReport> {
    let run_id = format!("{}-lat", std::process::id());
    let cluster = match &opts.bootstrap {
        Some(_) => None,
        None => Some(MockCluster::new(opts.brokers)?),
    };
    let bootstrap = match (&cluster, &opts.bootstrap) {
        (Some(c), _) => c.bootstrap_servers(),
        (None, Some(b)) => b.clone(),
        (None, None) => unreachable!(),
    };
    let create = |topic: &str, partitions: i32| -> anyhow::Result<()> {
        match &cluster {
            Some(c) => Ok(c.create_topic(topic, partitions, 1)?),
            None => create_topic(&bootstrap, topic, partitions),
        }
    };
    let routed: Vec<String> = LATENCY_STREAMS
        .iter()
        .map(|(e, s, c)| format!("{e}.{s}.1234.{c}-v1"))
        .collect();
    let dir = std::env::temp_dir().join(format!("envelope-router-bench-{run_id}"));
    std::fs::create_dir_all(&dir)?;
    let registry = dir.join("schemas.yaml");
    std::fs::write(&registry, workload::registry_yaml())?;
    for t in &routed {
        create(t, opts.output_partitions)?;
    }
    create(&format!("bench.dead-letter.{run_id}"), 1)?;

    let mut results = Vec::new();
    for side in ["router", "relay"] {
        let input = format!("bench.lat.{side}.{run_id}");
        create(&input, input_partitions)?;
        let config = dir.join(format!("{side}.yaml"));
        std::fs::write(
            &config,
            config_yaml(
                &bootstrap,
                &input,
                &format!("{run_id}-{side}"),
                &registry,
                cluster.is_some(),
            ),
        )?;
        let relay_topic = format!("bench.lat.relay-out.{run_id}");
        let outputs: Vec<String> = if side == "router" {
            routed.clone()
        } else {
            create(&relay_topic, opts.output_partitions)?;
            vec![relay_topic.clone()]
        };
        let total = rate * seconds;
        let probes = 20u64;
        let mut args: Vec<String> = vec!["--config".into(), config.display().to_string()];
        if side == "router" {
            args.insert(0, "run".into());
        } else {
            args.splice(0..0, ["relay".to_string()]);
            args.extend([
                "--output".into(),
                relay_topic.clone(),
                "--group".into(),
                format!("bench-lat-relay-{run_id}"),
                "--exit-after".into(),
                (total + probes).to_string(),
            ]);
        }
        let mut child = Command::new(&opts.exe)
            .args(&args)
            .env(
                "ENVELOPE_ROUTER_TIMEOUT_S",
                opts.timeout.as_secs().to_string(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        writeln!(
            progress,
            "{side}: latency at {rate} records/s for {seconds} s …"
        )?;
        let result = measure(&bootstrap, &input, &outputs, rate, total, probes, payload);
        // The router runs until told; the relay stops by itself.
        if side == "router" {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let _ = child.wait();
        let lat = result?;
        writeln!(
            progress,
            "  p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms",
            lat.p50_ms, lat.p99_ms, lat.p999_ms
        )?;
        results.push(lat);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let relay = results.pop().context("relay result")?;
    let router = results.pop().context("router result")?;
    Ok(LatencyReport {
        input_partitions,
        router,
        relay,
    })
}

/// Sends probes until one comes out (the child has joined its group), then
/// `total` records at `rate`, and collects send → receive latencies.
fn measure(
    bootstrap: &str,
    input: &str,
    outputs: &[String],
    rate: u64,
    total: u64,
    probes: u64,
    payload: usize,
) -> anyhow::Result<Latency> {
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let producer = crate::producer::EnvelopeProducerBuilder::new(bootstrap, input)
        .set("linger.ms", "1")
        .build(|_| {})?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-latency-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for t in outputs {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10))?;
        for p in md.topics().first().context("output topic")?.partitions() {
            let (_, high) = consumer.fetch_watermarks(t, p.id(), Duration::from_secs(10))?;
            tpl.add_partition_offset(t, p.id(), Offset::Offset(high))?;
        }
    }
    consumer.assign(&tpl)?;
    // Warm-up: wait until the child forwards records.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0u64;
    let mut sent_probes = 0u64;
    while seen == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no record came through within 60 s"
        );
        if sent_probes < probes {
            producer.send(
                &latency_header(sent_probes).build()?,
                &timestamped_payload(payload),
            )?;
            sent_probes += 1;
        }
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(200)) {
            seen += 1;
        }
    }
    while sent_probes < probes {
        producer.send(
            &latency_header(sent_probes).build()?,
            &timestamped_payload(payload),
        )?;
        sent_probes += 1;
    }
    // Drain the remaining probes.
    let drain_until = Instant::now() + Duration::from_secs(2);
    while seen < probes && Instant::now() < drain_until {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
            seen += 1;
        }
    }
    // Paced sending on its own thread; this thread reads. The sender is the
    // producer the probes warmed up: a fresh one would first fetch metadata
    // and a producer id while its records' timestamps already run.
    let sender = {
        std::thread::spawn(move || -> anyhow::Result<()> {
            let start = Instant::now();
            for i in 0..total {
                let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                producer.send(&latency_header(i).build()?, &timestamped_payload(payload))?;
            }
            producer.flush(Duration::from_secs(30))?;
            Ok(())
        })
    };
    let mut latencies: Vec<u64> = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(total / rate.max(1) + 60);
    while (latencies.len() as u64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let now = unix_micros();
            if let Ok(view) = crate::envelope::EnvelopeView::read(m.payload().unwrap_or_default()) {
                if let Some(p) = view.payload().filter(|p| p.len() >= 8) {
                    let sent = u64::from_le_bytes(p[..8].try_into().unwrap_or_default());
                    latencies.push(now.saturating_sub(sent));
                }
            }
        }
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    anyhow::ensure!(
        latencies.len() as u64 >= total,
        "only {} of {total} records came through",
        latencies.len()
    );
    latencies.sort_unstable();
    let pct = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
    Ok(Latency {
        rate,
        records: latencies.len() as u64,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: pct(1.0),
    })
}

/// The header of the `i`-th latency record (round-robin over the streams).
fn latency_header(i: u64) -> crate::envelope::HeaderBuilder {
    let (env, source, category) = LATENCY_STREAMS[i as usize % LATENCY_STREAMS.len()];
    crate::envelope::HeaderBuilder::new()
        .env(env)
        .source(source)
        .title("1234")
        .category(category)
        .version(1)
        .schema_id(workload::schema_id(category, 1))
}

/// A payload starting with its send time (µs since the epoch, little endian):
/// the router never reads it, so it arrives intact at the output.
fn timestamped_payload(len: usize) -> Vec<u8> {
    let mut p = unix_micros().to_le_bytes().to_vec();
    p.resize(len.max(8), 0);
    p
}
