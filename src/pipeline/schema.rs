//! The schema check, as pure logic over what the registry cache knows.
//! Fetching and caching live in `crate::registry`.

use std::sync::Arc;

/// What the registry said about a schema id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaInfo {
    /// Subjects the id is registered under (empty when the check mode does
    /// not need them).
    pub subjects: Vec<String>,
}

/// The cache's answer for an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// Registered (ids are immutable: cached for good).
    Known(Arc<SchemaInfo>),
    /// The registry answered 404 recently (cached for a short time).
    Unknown,
    /// Not cached: ask the registry and wait.
    Miss,
}

/// Read access to the schema cache.
pub trait SchemaLookup {
    /// What is known about `id`.
    fn lookup(&self, id: u32) -> SchemaState;

    /// Counts `n` hits the caller answered from its own memo of known ids
    /// (so the cache's hit metric still sees every record).
    fn memo_hits(&self, _n: u64) {}

    /// In `subject` mode an id's subject list can grow (the same schema
    /// registered under another subject keeps its id). Before a mismatch
    /// becomes a verdict the caller asks for a fresh copy: `true` means the
    /// cached entry was old enough to drop (so the next lookup misses and
    /// the id is fetched again), `false` that it was fetched recently.
    fn refresh(&self, _id: u32) -> bool {
        false
    }
}

/// How strictly schema ids are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaMode {
    /// The id must be registered.
    #[default]
    Exists,
    /// The id must be registered under the subject rendered from
    /// `schema.subject_template`.
    Subject,
}
