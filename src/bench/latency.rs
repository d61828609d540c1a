//! `bench --latency`: end-to-end latency of the router and the bare relay
//! at one offered rate (producer send → record read from the output topic).

use super::harness::{config_yaml, create_topic, BenchOptions};
use super::workload;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;
use serde::Serialize;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

impl LatencyReport {
    /// Prints the latency table.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "\nlatency at {} records/s, {} input partitions (send → read from the output topic, ms)",
            self.router.rate, self.input_partitions
        )?;
        writeln!(
            out,
            "{:<12} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "", "p50", "p99", "p99.9", "max", "records"
        )?;
        for (name, s) in [("bare relay", &self.relay), ("router", &self.router)] {
            writeln!(
                out,
                "{name:<12} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9}",
                s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms, s.records
            )?;
        }
        Ok(())
    }
}

/// Latency at a fixed offered rate (end: producer send → record read
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
                opts,
                &bootstrap,
                &input,
                &format!("bench-router-{run_id}-{side}"),
                &format!("bench.dead-letter.{run_id}"),
                &registry,
                cluster.is_some(),
            ),
        )?;
        if side == "router" && opts.dedup_resident > 0 {
            // Full dedup windows, as in the throughput runs (`prefill.rs`).
            super::prefill::fill(
                &bootstrap,
                &format!("bench-router-{run_id}-{side}"),
                &input,
                input_partitions,
                opts.dedup_resident,
                opts.shape.seed,
                create,
            )?;
        }
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
