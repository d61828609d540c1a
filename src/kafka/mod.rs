//! The Kafka edge: the consume loop, librdkafka callbacks, per-partition
//! state and the settlement ledger.

pub mod context;
pub mod ledger;
pub mod router;
pub mod state;
pub mod throttle;

pub use router::{consumer_config, producer_config, run, RunControl};
