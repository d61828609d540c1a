//! # envelope-router
//!
//! Producers wrap each opaque payload in a protobuf envelope whose header
//! carries routing metadata; the router reads only that header, drops
//! duplicates, checks the schema id and republishes the untouched bytes to
//! `env.source.title.category-vVERSION` topics.
//!
//! This crate holds both sides:
//! - [`envelope`]: the wire format, validation rules, the producer encoder and
//!   the zero-copy header reader. No runtime dependencies.
//! - `producer` (feature `producer`): a Kafka producer wrapper over rdkafka.
//! - the router (feature `router`, on by default): [`pipeline`] (per-record
//!   logic, no I/O), `registry`, `kafka`, `config` and the CLI.
//!
//! A producer that only encodes depends on it like this:
//! ```toml
//! envelope-router = { version = "0.1", default-features = false }            # encoder only
//! envelope-router = { version = "0.1", default-features = false, features = ["producer"] }
//! ```
#![warn(missing_docs)]

#[cfg(feature = "router")]
pub mod bench;
#[cfg(feature = "router")]
pub mod config;
#[cfg(feature = "router")]
pub mod demo;
pub mod envelope;
#[cfg(feature = "router")]
pub mod http;
#[cfg(feature = "router")]
pub mod inspect;
#[cfg(feature = "router")]
pub mod kafka;
#[cfg(feature = "router")]
pub mod pipeline;
#[cfg(feature = "producer")]
pub mod producer;
#[cfg(feature = "router")]
pub mod progress;
#[cfg(feature = "router")]
pub mod registry;
#[cfg(feature = "router")]
pub mod replay;
#[cfg(feature = "router")]
pub mod stats;
