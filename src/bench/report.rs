//! The throughput report: each side's runs, their median, min and max,
//! the router's ratios to both ceilings, and the human table `bench`
//! prints (the JSON is the same structs, serialized).

use super::latency::LatencyReport;
use super::procstat::ThreadGroup;
use crate::kafka::profile::{LoopProfile, ProducerDigest};
use serde::Serialize;
use std::io::Write;

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
    pub(super) fn of(values: impl Iterator<Item = f64>) -> Spread {
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

    pub(super) fn of(runs: Vec<Run>) -> Side {
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
pub(super) fn round_ratios(side: &Side, ceiling: &Side) -> Spread {
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
