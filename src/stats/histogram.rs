//! Latency histograms counted in place, written in Prometheus's text format.
//!
//! The `metrics-exporter-prometheus` recorder keeps every histogram sample
//! (its value and a timestamp, 16 bytes) until its upkeep folds them into
//! buckets, every 5 s. For end-to-end latency that is two samples per
//! settled record: ~100 MB held between two upkeeps at 600k records/s
//! (the router's peak RSS over a 1M-record bench run fell from 101–103 to
//! 81–83 MiB without them), and 17–27 ns of the loop thread per record in
//! profiles at 256 B. These histograms add a sample to its bucket where it
//! is recorded, and a settle pass counts its records into a
//! [`HistogramTally`] first and adds that once: no storage, no allocation,
//! one bucket search per sample.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the latency buckets, in seconds (`le`): also the buckets
/// of the recorder's other histograms (`http::install_recorder`).
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets: one per bound, then `+Inf`.
const BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// The bucket of a sample: the first bound it does not exceed.
#[inline]
fn bucket(seconds: f64) -> usize {
    LATENCY_BOUNDS.partition_point(|&le| le < seconds)
}

/// Samples counted by one thread, added to a [`Histogram`] at once.
#[derive(Default)]
pub struct HistogramTally {
    counts: [u64; BUCKETS],
    sum: f64,
}

impl HistogramTally {
    /// One sample, in seconds.
    #[inline]
    pub fn record(&mut self, seconds: f64) {
        self.counts[bucket(seconds)] += 1;
        self.sum += seconds;
    }
}

/// A histogram with [`LATENCY_BOUNDS`], shared by the threads that record
/// into it and the `/metrics` handler that writes it.
#[derive(Default)]
pub struct Histogram {
    /// Samples per bucket (not cumulative).
    counts: [AtomicU64; BUCKETS],
    /// The sum of the samples, an `f64`'s bits.
    sum: AtomicU64,
}

impl Histogram {
    /// One sample, in seconds.
    pub fn record(&self, seconds: f64) {
        let mut t = HistogramTally::default();
        t.record(seconds);
        self.add(&mut t);
    }

    /// Adds what `tally` counted and empties it.
    pub fn add(&self, tally: &mut HistogramTally) {
        for (c, n) in self.counts.iter().zip(&mut tally.counts) {
            if *n > 0 {
                c.fetch_add(std::mem::take(n), Relaxed);
            }
        }
        let sum = std::mem::take(&mut tally.sum);
        if sum != 0.0 {
            let _ = (self.sum).fetch_update(Relaxed, Relaxed, |bits| {
                Some((f64::from_bits(bits) + sum).to_bits())
            });
        }
    }

    /// Samples so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Writes the series of this histogram, labelled `labels` (`k="v"`
    /// pairs, comma-separated), in the text format: cumulative `_bucket`s,
    /// `_sum` and `_count`. The family's `# TYPE` line is the caller's.
    pub fn write(&self, name: &str, labels: &str, out: &mut String) {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let sum = f64::from_bits(self.sum.load(Relaxed));
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, n) in counts.iter().enumerate() {
            cumulative += n;
            let le = LATENCY_BOUNDS
                .get(i)
                .map_or("+Inf".to_owned(), f64::to_string);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_lands_in_the_first_bucket_it_does_not_exceed() {
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(0.000_5), 0, "le is inclusive");
        assert_eq!(bucket(0.000_6), 1);
        assert_eq!(bucket(10.0), 13);
        assert_eq!(bucket(10.1), 14, "+Inf");
    }

    #[test]
    fn a_tally_is_added_once_and_written_cumulatively() {
        let h = Histogram::default();
        let mut t = HistogramTally::default();
        for s in [0.000_1, 0.003, 0.003, 30.0] {
            t.record(s);
        }
        h.add(&mut t);
        h.add(&mut t); // emptied by the first add
        h.record(0.5);
        assert_eq!(h.count(), 5);
        let mut out = String::new();
        h.write("x_seconds", "from=\"arrival\"", &mut out);
        let line = |le: &str| {
            out.lines()
                .find(|l| l.contains(&format!("le=\"{le}\"}}")))
                .unwrap_or_else(|| panic!("no le={le} in {out}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(line("0.0005"), "1");
        assert_eq!(line("0.002"), "1");
        assert_eq!(line("0.005"), "3");
        assert_eq!(line("0.5"), "4");
        assert_eq!(line("10"), "4");
        assert_eq!(line("+Inf"), "5");
        assert!(
            out.contains("x_seconds_count{from=\"arrival\"} 5\n"),
            "{out}"
        );
        let sum: f64 = (out.lines())
            .find_map(|l| l.strip_prefix("x_seconds_sum{from=\"arrival\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 30.5061).abs() < 1e-9, "{sum}");
    }
}
