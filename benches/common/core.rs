//! The per-record core's fixture, shared by `pipeline` (criterion) and
//! `core_instructions` (a plain loop for callgrind), so both measure the
//! same record, rules, schema cache and dedup window.

use super::stream::stream;
use envelope_router::kafka::POLL_PHASE;
use envelope_router::pipeline::dedup::DedupWindow;
use envelope_router::pipeline::route::{DefaultAction, RouteSpec, Routes};
use envelope_router::pipeline::schema::SchemaMode;
use envelope_router::pipeline::template::CANONICAL_TOPIC;
use envelope_router::pipeline::{EarlyId, Pipeline, PipelineConfig, Verdict};
use envelope_router::registry::{FileRegistry, Registry, Resolver, SchemaCache};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

/// `n` routing rules that the benchmark's stream does not match.
pub fn rules(n: usize) -> Vec<RouteSpec> {
    let yaml: String = (0..n)
        .map(|i| format!("- {{ name: r{i}, match: {{ source: [s{i}, \"x{i}*\"], category: \"c{i}_*\" }} }}\n"))
        .collect();
    serde_saphyr::from_str(if n == 0 { "[]" } else { &yaml }).unwrap()
}

/// A schema cache holding ids 42 and 7, filled through the public path: a
/// file registry resolved into the cache.
pub fn populated_cache() -> Arc<SchemaCache> {
    let cache = Arc::new(SchemaCache::new(Duration::from_secs(30)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::File(FileRegistry::from_yaml("schemas: { 42: {}, 7: {} }").unwrap());
    let cfg: envelope_router::config::RegistryConfig = serde_saphyr::from_str("file: x").unwrap();
    let resolver = Resolver::new(registry, cache.clone(), &cfg, rt.handle().clone());
    let (tx, rx) = std::sync::mpsc::channel();
    for id in [42, 7] {
        let tx = tx.clone();
        resolver.resolve(id, move |id| tx.send(id).unwrap());
    }
    // The resolver runs on this current-thread runtime: drive it until done.
    rt.block_on(async {
        let mut done = 0;
        while done < 2 {
            done += rx.try_iter().count();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    cache
}

/// One record of `payload_len` bytes, processed again and again with a new
/// message id each time, against a window that settles at ~1.1M ids.
///
/// Records go through in phases of [`POLL_PHASE`], as the router's loop
/// handles them (`kafka/lookahead.rs`): the dedup lines of a whole phase
/// start loading (`Pipeline::prefetch`), then its records are processed
/// one after another, each handed what the prefetch found of its id.
pub struct Core {
    pipeline: Pipeline,
    cache: Arc<SchemaCache>,
    /// One copy of the record per place in a phase, each given its own id.
    records: Vec<Vec<u8>>,
    id_at: usize,
    window: DedupWindow,
    n: u64,
    /// What the prefetch of each of the phase's records found of its id.
    early: Vec<Option<EarlyId>>,
}

impl Core {
    /// The pipeline with 10 rules, `exists` schema mode and a shared cache.
    pub fn new(cache: Arc<SchemaCache>, payload_len: usize) -> Self {
        let pipeline = Pipeline::new(PipelineConfig {
            routes: Routes::new(&rules(10), DefaultAction::Canonical, CANONICAL_TOPIC, None)
                .unwrap(),
            schema_mode: SchemaMode::Exists,
            max_record_bytes: 1 << 20,
        });
        let record = stream()
            .message_id(vec![0u8; 16])
            .build()
            .unwrap()
            .to_envelope_bytes(&vec![7u8; payload_len])
            .to_vec();
        // The id's bytes sit right after the header's first key and lengths;
        // rewriting them gives every record a new id without re-encoding.
        let id_at = record.windows(16).position(|w| w == [0u8; 16]).unwrap();
        Core {
            pipeline,
            cache,
            records: vec![record; POLL_PHASE],
            id_at,
            window: DedupWindow::default(),
            n: 0,
            early: vec![None; POLL_PHASE],
        }
    }

    /// Gives the phase's records the ids that follow `n`, and starts
    /// loading their dedup lines.
    #[inline]
    fn stage_phase(&mut self, n: u64) {
        let at = self.id_at;
        for (i, (record, early)) in self.records.iter_mut().zip(&mut self.early).enumerate() {
            record[at..at + 8].copy_from_slice(&(n + i as u64).to_le_bytes());
            *early = Pipeline::prefetch(record, &self.window);
        }
    }

    /// Processes the next record; true when it is published, as it must be.
    #[inline]
    pub fn step(&mut self) -> bool {
        let n = self.n;
        self.n += 1;
        let place = (n % POLL_PHASE as u64) as usize;
        if place == 0 {
            self.stage_phase(n + 1);
        }
        // One simulated second per 100k records, a 10 s window: about 1.1M
        // ids resident, each inserted once and expired once, as in the
        // router's steady state.
        let now_s = (n / 100_000) as u32;
        let v = self.pipeline.process_early(
            black_box(&self.records[place]),
            self.early[place].take(),
            &mut self.window,
            now_s,
            &*self.cache,
        );
        if n % 1024 == 1023 {
            self.window.expire(now_s, 10);
        }
        matches!(v, Verdict::Publish { .. })
    }

    /// Ids in the window.
    #[allow(dead_code)] // each bench compiles this module; one reads it
    pub fn resident(&self) -> usize {
        self.window.len()
    }
}
