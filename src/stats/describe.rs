//! The `# HELP` text of every metric the recorder writes: without it
//! Prometheus shows no description and `promtool check metrics` flags each
//! family. The latency histograms counted in place carry their own
//! (`Stats::write_histograms`).

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Counters: name, help.
const COUNTERS: &[(&str, &str)] = &[
    ("envelope_router_records_in_total", "Records read from the input topics."),
    ("envelope_router_records_out_total", "Records acknowledged by an output topic, by topic (topics past the series bound count under _other)."),
    ("envelope_router_dead_letters_total", "Records written to the dead-letter topic, by reason."),
    ("envelope_router_dropped_total", "Records dropped on purpose, by reason (duplicate)."),
    ("envelope_router_filtered_total", "Records dropped by a filtering route, by route."),
    ("envelope_router_delivery_errors_total", "Failed writes to an output topic (retried, dead-lettered or given up), by topic and error."),
    ("envelope_router_dead_letters_unwritten_total", "Records settled without any copy: their dead letter was refused even without its payload."),
    ("envelope_router_schema_cache_hits_total", "Schema id lookups answered from memory."),
    ("envelope_router_schema_cache_misses_total", "Schema id lookups that went to the registry."),
    ("envelope_router_schema_registry_errors_total", "Schema registry requests that failed (retried)."),
    ("envelope_router_assignments_total", "Partition assignments from the consumer group (the first, then one per rebalance)."),
    ("envelope_router_bounds_reached_total", "Times a memory bound on producer-controlled state was reached and the state trimmed, by bound."),
    ("envelope_router_config_reloads_total", "Config reloads, by result (applied, invalid)."),
    ("envelope_router_changelog_blocks_total", "Dedup changelog blocks, by result (written, failed)."),
    ("envelope_router_changelog_ids_total", "Message ids written to the dedup changelog."),
    ("envelope_router_changelog_bytes_total", "Value bytes written to the dedup changelog."),
    ("envelope_router_changelog_restores_total", "Dedup windows restored from the changelog at an assignment, by result (restored, failed)."),
    ("envelope_router_changelog_restored_ids_total", "Message ids read back from the dedup changelog."),
];

/// Gauges: name, help.
const GAUGES: &[(&str, &str)] = &[
    (
        "envelope_router_paused_partitions",
        "Input partitions paused for backpressure (registry outage, failing output).",
    ),
    (
        "envelope_router_consumer_lag",
        "Consumer lag of an input partition, from librdkafka statistics, by topic and partition.",
    ),
    (
        "envelope_router_dedup_entries",
        "Message ids held in the dedup windows.",
    ),
    (
        "envelope_router_dedup_bytes",
        "Heap bytes of the dedup windows.",
    ),
    (
        "envelope_router_dedup_max_entries",
        "The dedup budget (dedup.max_entries) the entries are held under.",
    ),
    (
        "envelope_router_config_restart_pending",
        "1 when the last applied reload had changes that take a restart.",
    ),
];

/// Histograms (seconds): name, help.
const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "envelope_router_schema_registry_request_seconds",
        "Schema registry request time.",
    ),
    (
        "envelope_router_revoke_seconds",
        "Time a revoke took: drain, commit and state drop.",
    ),
    (
        "envelope_router_changelog_restore_seconds",
        "Time to restore a partition's dedup window from the changelog.",
    ),
];

/// Registers every description with the installed recorder; call once,
/// after installing it.
pub fn describe_metrics() {
    for &(name, help) in COUNTERS {
        describe_counter!(name, help);
    }
    for &(name, help) in GAUGES {
        describe_gauge!(name, help);
    }
    for &(name, help) in HISTOGRAMS {
        describe_histogram!(name, help);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_the_source_names_is_described() {
        let described: Vec<&str> = (COUNTERS.iter().chain(GAUGES).chain(HISTOGRAMS))
            .map(|(n, _)| *n)
            .collect();
        let mut src = String::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    src.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        for macro_ in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in src.match_indices(macro_) {
                let rest = src[at + macro_.len()..].trim_start();
                let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) else {
                    continue; // a name passed in a variable
                };
                if name.starts_with("envelope_router_") {
                    assert!(described.contains(&name), "{name} has no description");
                }
            }
        }
    }
}
