//! The benchmark harness (`bench`): a workload generator, two ceilings (the
//! bare relay and the routing relay, `relay.rs`), the throughput run that
//! measures them against the router (`harness.rs`), the latency run
//! (`latency.rs`) and per-process CPU and memory readings (`procstat.rs`).

mod harness;
mod latency;
pub mod procstat;
pub mod relay;
pub mod workload;

pub use harness::{run, BenchOptions, BenchReport, ChildSummary, Run, Side, Spread};
pub use latency::{latency, Latency, LatencyReport};
