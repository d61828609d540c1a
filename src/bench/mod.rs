//! The benchmark harness (`bench`): a workload generator, two ceilings (the
//! bare relay and the routing relay, `relay.rs`), the throughput run that
//! measures them against the router (`harness.rs`) and its report
//! (`report.rs`), the latency run (`latency.rs`), per-process CPU and
//! memory readings (`procstat.rs`), and full dedup windows to start the
//! router with (`prefill.rs`).

mod harness;
mod latency;
mod prefill;
pub mod procstat;
pub mod relay;
mod report;
pub mod workload;

pub use harness::{run, BenchOptions, ChildSummary};
pub use latency::{latency, Latency, LatencyReport};
pub use report::{BenchReport, Run, Side, Spread};
