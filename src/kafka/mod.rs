//! The Kafka edge: startup and shutdown (`run`), the consume loop and its
//! phases, librdkafka callbacks, per-partition state and the settlement
//! ledger.

pub mod changelog;
pub mod context;
mod event_loop;
mod failed_write;
pub mod headers;
pub mod ledger;
mod lookahead;
pub mod produce_error;
pub mod profile;
pub mod reload;
mod retry;
mod run;
mod schema_wait;
pub mod state;
pub mod throttle;
pub mod topic_handles;
mod topics;

pub use event_loop::TURN_RECORDS;
pub use lookahead::POLL_PHASE;
pub use run::{acks_carry_offsets, consumer_config, producer_config, run, ExitAfter, RunControl};
