//! The router's YAML configuration. Every field has a doc comment and a named
//! default; `config.example.yaml` documents each one, and a test fails when a
//! field has no example there.
//!
//! `${VAR}` and `${VAR:-default}` are replaced from the environment before
//! parsing (for secrets); `$$` is a literal `$`. Errors name the file, line
//! and column.

use crate::pipeline::route::{DefaultAction, RouteSpec};
use crate::pipeline::schema::SchemaMode;
use crate::pipeline::template::CANONICAL_TOPIC;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// librdkafka properties, shared and per client.
    pub kafka: KafkaConfig,
    /// What to consume.
    pub input: InputConfig,
    /// How routed records are published.
    #[serde(default)]
    pub output: OutputConfig,
    /// Where rejected records go.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// Duplicate detection.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Schema id checks.
    pub schema: SchemaConfig,
    /// Ordered routing rules.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// What happens to records no rule matched.
    #[serde(default)]
    pub default_route: DefaultAction,
    /// Metrics and health endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// How long a shutdown or partition revoke may take to flush and commit.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Consume loops in this process, each with its own consumer (in the
    /// same group) and producer; a partition belongs to one loop at a time.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

/// Most consume loops one process may run.
pub const MAX_WORKERS: usize = 64;

fn default_workers() -> usize {
    1
}

/// A librdkafka property value (YAML scalars are passed on as strings).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Property {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
}

impl std::fmt::Display for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Property::Bool(b) => write!(f, "{b}"),
            Property::Int(i) => write!(f, "{i}"),
            Property::Float(x) => write!(f, "{x}"),
            Property::Text(s) => f.write_str(s),
        }
    }
}

/// librdkafka properties: top-level keys apply to every client; `consumer`
/// and `producer` override them per client.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct KafkaConfig {
    /// Consumer-only properties.
    #[serde(default)]
    pub consumer: BTreeMap<String, Property>,
    /// Producer-only properties.
    #[serde(default)]
    pub producer: BTreeMap<String, Property>,
    /// Properties for all clients (`bootstrap.servers`, TLS, SASL...).
    #[serde(flatten)]
    pub common: BTreeMap<String, Property>,
}

/// What to consume.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Raw topics; a name starting with `^` is a regex subscription.
    pub topics: Vec<String>,
    /// Consumer group; run more instances with the same id to scale out.
    #[serde(default = "default_group_id")]
    pub group_id: String,
}

/// How output topics come to exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicCreation {
    /// The router creates missing topics with the admin API.
    #[default]
    Admin,
    /// Left to the broker's `auto.create.topics.enable`.
    Broker,
    /// Topics must exist; a missing one pauses its partitions until it does.
    None,
}

/// How routed records are published.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Topic template for the default route and rules without `topic`.
    #[serde(default = "default_topic_template")]
    pub topic_template: String,
    /// How missing output topics are created.
    #[serde(default)]
    pub create_topics: TopicCreation,
    /// Partitions of created topics (-1: broker default).
    #[serde(default = "broker_default")]
    pub partitions: i32,
    /// Replication factor of created topics (-1: broker default).
    #[serde(default = "broker_default")]
    pub replication_factor: i32,
    /// Add `envelope.*` Kafka headers mirroring the envelope fields.
    #[serde(default)]
    pub mirror_headers: bool,
    /// Records larger than this are dead-lettered as `too_large`. The
    /// producer's `message.max.bytes` is derived from it (plus
    /// [`RECORD_OVERHEAD_BYTES`]) unless set under `kafka:`.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            topic_template: default_topic_template(),
            create_topics: TopicCreation::default(),
            partitions: broker_default(),
            replication_factor: broker_default(),
            mirror_headers: false,
            max_record_bytes: default_max_record_bytes(),
        }
    }
}

/// Where rejected records go.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// The dead-letter topic.
    #[serde(default = "default_dead_letter_topic")]
    pub topic: String,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            topic: default_dead_letter_topic(),
        }
    }
}

/// Duplicate detection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// How long an id is remembered, by arrival time at the router.
    #[serde(default = "default_dedup_window", with = "humantime_serde")]
    pub window: Duration,
    /// Most ids remembered by one instance (oldest forgotten first).
    #[serde(default = "default_dedup_max_entries")]
    pub max_entries: usize,
    /// Where the window is persisted, so it survives restarts, crashes and
    /// partition moves.
    #[serde(default)]
    pub changelog: ChangelogConfig,
    /// What the router does when the changelog it needs is missing or
    /// unreadable.
    #[serde(default)]
    pub on_missing_state: MissingState,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window: default_dedup_window(),
            max_entries: default_dedup_max_entries(),
            changelog: ChangelogConfig::default(),
            on_missing_state: MissingState::default(),
        }
    }
}

/// The dedup changelog topic (README, "Dedup that survives restarts").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangelogConfig {
    /// Off: the window lives in memory only and is lost on restart.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The topic; default `<group_id>.dedup-changelog`.
    #[serde(default)]
    pub topic: Option<String>,
    /// Partitions when the router creates the topic (-1: as many as the
    /// widest input topic).
    #[serde(default = "default_changelog_partitions")]
    pub partitions: i32,
    /// Longest time between a publish being acknowledged and its id being
    /// written: what a `kill -9` can make the router forget (0: every loop
    /// turn that settled records).
    #[serde(default = "default_changelog_flush", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Longest a partition's restore may take before the changelog counts
    /// as unreadable.
    #[serde(
        default = "default_changelog_restore_timeout",
        with = "humantime_serde"
    )]
    pub restore_timeout: Duration,
}

impl Default for ChangelogConfig {
    fn default() -> Self {
        ChangelogConfig {
            enabled: true,
            topic: None,
            partitions: default_changelog_partitions(),
            flush_interval: default_changelog_flush(),
            restore_timeout: default_changelog_restore_timeout(),
        }
    }
}

/// What happens when the dedup changelog is missing (deleted while the
/// group has committed offsets) or cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingState {
    /// Refuse to start (or stop): the window cannot be restored, and
    /// records read again would be published again.
    #[default]
    Fail,
    /// Warn and start with an empty window.
    Empty,
}

/// Schema id checks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// `exists` or `subject`.
    #[serde(default)]
    pub mode: SchemaMode,
    /// Subject rendered per stream in `subject` mode.
    #[serde(default = "default_subject_template")]
    pub subject_template: String,
    /// Where schemas are looked up.
    pub registry: RegistryConfig,
}

/// A schema registry: `url` (Confluent REST API) or `file` (YAML).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of a Confluent-compatible registry.
    pub url: Option<String>,
    /// A YAML file of ids and subjects (for the demo and tests).
    pub file: Option<PathBuf>,
    /// Basic-auth user.
    pub username: Option<String>,
    /// Basic-auth password (use `${ENV_VAR}`).
    pub password: Option<String>,
    /// Per-request timeout.
    #[serde(default = "default_registry_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// First retry delay after an outage answer (doubles up to the max).
    #[serde(default = "default_backoff_min", with = "humantime_serde")]
    pub retry_backoff_min: Duration,
    /// Longest retry delay.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// How long a 404 is remembered before the id is asked again.
    #[serde(default = "default_unknown_ttl", with = "humantime_serde")]
    pub unknown_ttl: Duration,
}

/// Metrics and health endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/health` and `/ready` (localhost by default).
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `envelope_router=debug,rdkafka=warn`
    /// (`RUST_LOG` overrides it).
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_group_id() -> String {
    "envelope-router".into()
}
fn default_topic_template() -> String {
    CANONICAL_TOPIC.into()
}
fn broker_default() -> i32 {
    -1
}
fn default_max_record_bytes() -> usize {
    1_000_000
}
fn default_dead_letter_topic() -> String {
    "envelope-router.dead-letter".into()
}
fn default_dedup_window() -> Duration {
    Duration::from_secs(600)
}
fn default_dedup_max_entries() -> usize {
    10_000_000
}
fn default_true() -> bool {
    true
}

/// The dedup changelog topic of consumer group `group_id` unless
/// `dedup.changelog.topic` names another.
pub fn default_changelog_topic(group_id: &str) -> String {
    format!("{group_id}.dedup-changelog")
}

fn default_changelog_partitions() -> i32 {
    -1
}
fn default_changelog_flush() -> Duration {
    Duration::ZERO
}
fn default_changelog_restore_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_subject_template() -> String {
    "{topic}-value".into()
}
fn default_registry_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_backoff_min() -> Duration {
    Duration::from_millis(100)
}
fn default_backoff_max() -> Duration {
    // One probe at a time during an outage (registry/mod.rs), so a short
    // cap costs the registry little and output resumes soon after it does.
    Duration::from_millis(500)
}
fn default_unknown_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_log_level() -> String {
    "info".into()
}

/// Room the producer's `message.max.bytes` keeps above
/// `output.max_record_bytes` for what a published record adds to its value:
/// the key, the input's headers, the `envelope.*` mirrors or `dlq.*`
/// headers, and the record and batch framing (librdkafka counts ~40 bytes
/// per record, the broker 61 per batch). A record whose key and headers
/// need more is dead-lettered as `output_rejected`.
pub const RECORD_OVERHEAD_BYTES: usize = 16 * 1024;

/// librdkafka's bounds for `message.max.bytes`.
const MESSAGE_MAX_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1000..=1_000_000_000;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `${VAR}` without a value or default.
    #[error("{path}:{line}:{column}: environment variable {var} is not set (write ${{{var}:-default}} for a fallback)")]
    UnsetVariable {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The variable.
        var: String,
    },
    /// YAML syntax or a field of the wrong shape (serde-saphyr names line and column).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde-saphyr's message, with line and column.
        message: String,
    },
    /// Values that parse but do not make a working router.
    #[error("{path}{at}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `:line:column` of the setting the message names, when found
        /// (block-style YAML), else empty.
        at: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads, interpolates, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, path, |v| std::env::var(v).ok())
    }

    /// Parses config text; `env` resolves `${VAR}`.
    pub fn from_yaml(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text =
            interpolate(text, &env).map_err(|(line, column, var)| ConfigError::UnsetVariable {
                path: path.to_owned(),
                line,
                column,
                var,
            })?;
        let config: Config = serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.check().map_err(|message| {
            // Each message starts with the setting it is about.
            let setting = message.split([' ', ':']).next().unwrap_or_default();
            ConfigError::Invalid {
                path: path.to_owned(),
                at: locate_setting(&text, setting)
                    .map(|(line, column)| format!(":{line}:{column}"))
                    .unwrap_or_default(),
                message,
            }
        })?;
        Ok(config)
    }

    /// Cross-field checks serde cannot express.
    fn check(&self) -> Result<(), String> {
        if self.input.topics.is_empty() {
            return Err("input.topics is empty; name at least one raw topic".into());
        }
        match (&self.schema.registry.url, &self.schema.registry.file) {
            (Some(_), Some(_)) => {
                return Err("schema.registry: set either url or file, not both".into())
            }
            (None, None) => return Err("schema.registry: set url or file".into()),
            _ => {}
        }
        if !self.kafka.common.contains_key("bootstrap.servers") {
            return Err("kafka.bootstrap.servers is not set".into());
        }
        if self.input.topics.contains(&self.dead_letter.topic) {
            return Err(format!(
                "dead_letter.topic {:?} is also an input topic",
                self.dead_letter.topic
            ));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(format!(
                "workers is {}; it must be between 1 and {MAX_WORKERS}",
                self.workers
            ));
        }
        if self.dedup.window.as_secs() > u64::from(u32::MAX) {
            return Err("dedup.window is longer than 136 years".into());
        }
        if self.dedup.changelog.enabled {
            let topic = self.changelog_topic();
            if self.input.topics.contains(&topic) || topic == self.dead_letter.topic {
                return Err(format!(
                    "dedup.changelog.topic {topic:?} is also an input or the dead-letter topic"
                ));
            }
        }
        if self.schema.registry.unknown_ttl < Duration::from_secs(1) {
            return Err(format!(
                "schema.registry.unknown_ttl is {:?}; it must be at least 1s (a 404 must outlive the lookup that fetched it, and each unknown id costs a registry request per unknown_ttl)",
                self.schema.registry.unknown_ttl
            ));
        }
        self.check_record_sizes()
    }

    /// `output.max_record_bytes` against the producer's `message.max.bytes`.
    fn check_record_sizes(&self) -> Result<(), String> {
        let max = self.output.max_record_bytes;
        let needed = max.saturating_add(RECORD_OVERHEAD_BYTES);
        if max == 0 || needed > *MESSAGE_MAX_BYTES_RANGE.end() {
            return Err(format!(
                "output.max_record_bytes is {max}; it must be between 1 and {}",
                MESSAGE_MAX_BYTES_RANGE.end() - RECORD_OVERHEAD_BYTES
            ));
        }
        let Some(set) = self.producer_property("message.max.bytes") else {
            return Ok(()); // derived: max_record_bytes + RECORD_OVERHEAD_BYTES
        };
        let set: usize = set
            .parse()
            .map_err(|_| format!("kafka message.max.bytes {set:?} is not a number"))?;
        if set < needed {
            return Err(format!(
                "kafka message.max.bytes is {set}, but output.max_record_bytes ({max}) needs at least {needed} ({RECORD_OVERHEAD_BYTES} more for key, headers and framing): raise message.max.bytes, lower max_record_bytes, or leave message.max.bytes unset to derive it"
            ));
        }
        Ok(())
    }

    /// A property as the producer sees it (its own overrides first).
    fn producer_property(&self, key: &str) -> Option<String> {
        self.kafka
            .producer
            .get(key)
            .or_else(|| self.kafka.common.get(key))
            .map(ToString::to_string)
    }

    /// The producer's `message.max.bytes`: as set, or derived from
    /// `output.max_record_bytes` plus [`RECORD_OVERHEAD_BYTES`].
    pub fn producer_message_max_bytes(&self) -> usize {
        self.producer_property("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.output.max_record_bytes + RECORD_OVERHEAD_BYTES)
    }

    /// The dedup changelog topic's name.
    pub fn changelog_topic(&self) -> String {
        self.dedup
            .changelog
            .topic
            .clone()
            .unwrap_or_else(|| default_changelog_topic(&self.input.group_id))
    }

    /// librdkafka properties for one client: common ones, then the client's
    /// own overrides.
    pub fn client_properties(&self, role: &BTreeMap<String, Property>) -> Vec<(String, String)> {
        self.kafka
            .common
            .iter()
            .chain(role)
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }
}

/// Settings a running router takes on reload (SIGHUP), as dotted paths:
/// the routes and the templates and schema settings they use. Everything
/// else needs a restart.
pub const LIVE_SETTINGS: [&str; 4] = [
    "routes",
    "default_route",
    "output.topic_template",
    "schema.subject_template",
];

impl Config {
    /// This config with the [`LIVE_SETTINGS`] of `new`: what a reload puts
    /// into effect.
    pub fn with_live_settings_of(&self, new: &Config) -> Config {
        let mut out = self.clone();
        out.routes = new.routes.clone();
        out.default_route = new.default_route;
        out.output.topic_template = new.output.topic_template.clone();
        out.schema.subject_template = new.schema.subject_template.clone();
        out
    }

    /// Dotted paths of settings that differ between `self` and `new` and
    /// need a restart to take effect (not in [`LIVE_SETTINGS`]).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<String> {
        let (Ok(old), Ok(new)) = (
            serde_json::to_value(self.with_live_settings_of(new)),
            serde_json::to_value(new),
        ) else {
            return vec!["(the config could not be compared)".into()];
        };
        let mut out = Vec::new();
        diff_paths(&old, &new, "", &mut out);
        out
    }
}

/// Collects the dotted paths where `a` and `b` differ (objects by key,
/// anything else as a whole).
fn diff_paths(a: &serde_json::Value, b: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_paths(x, y, &path, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a != b => out.push(at.to_owned()),
        _ => {}
    }
}

/// 1-based line and column of a dotted setting (`schema.registry.url`) in
/// block-style YAML: each segment is looked for below and indented deeper
/// than the one before. Stops at the deepest segment found (a key with a
/// dot in it, or a flow mapping, ends the walk there).
pub fn locate_setting(text: &str, setting: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = None;
    let (mut from, mut parent_indent) = (0usize, None::<usize>);
    for segment in setting.split('.').filter(|s| !s.is_empty()) {
        let hit = lines.iter().enumerate().skip(from).find_map(|(i, line)| {
            let indent = line.len() - line.trim_start().len();
            let key = line.trim_start().strip_prefix(segment)?;
            let deeper = parent_indent.is_none_or(|p| indent > p);
            (deeper && key.trim_start().starts_with(':')).then_some((i, indent))
        });
        let Some((i, indent)) = hit else { break };
        found = Some((i + 1, indent + 1));
        (from, parent_indent) = (i + 1, Some(indent));
    }
    found
}

/// 1-based line and column of the first `key: value` line in `text` whose
/// value is `value` (bare or quoted): where a named item (a route) is.
pub fn locate(text: &str, key: &str, value: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let rest = trimmed.strip_prefix(key)?.trim_start().strip_prefix(':')?;
        let v = rest.trim().trim_matches(|c| c == '"' || c == '\'');
        (v == value).then(|| (i + 1, line.len() - trimmed.len() + 1))
    })
}

/// Whether a librdkafka property holds a secret (never logged).
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "ssl.key.pem", "token"]
        .iter()
        .any(|s| k.contains(s))
}

/// Replaces `${VAR}` / `${VAR:-default}` and `$$`, except on full-line
/// comments (so a commented-out example needs no variable); on an unset
/// variable returns its 1-based line, column and name.
fn interpolate(
    text: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, (usize, usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let expanded = interpolate_line(line, env).map_err(|(column, var)| (n + 1, column, var))?;
        out.push_str(&expanded);
    }
    Ok(out)
}

/// `[A-Za-z_][A-Za-z0-9_]*`, as in POSIX shells.
fn is_var_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Interpolates one line; on an unset variable returns its 1-based column.
fn interpolate_line(
    text: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push('$');
                rest = after;
                continue;
            };
            let expr = &body[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            if !is_var_name(var) {
                // Not an interpolation (e.g. a regex or a password with "${"): keep the text.
                out.push('$');
                rest = after;
                continue;
            }
            match env(var).or_else(|| default.map(str::to_owned)) {
                Some(value) => out.push_str(&value),
                None => {
                    let column = text.len() - rest.len() + i + 1;
                    return Err((column, var.to_owned()));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &str) -> Option<String> {
        (v == "PASS").then(|| "s3cret".to_owned())
    }

    #[test]
    fn interpolates_defaults_and_escapes() {
        assert_eq!(interpolate("a ${PASS} b", &env).unwrap(), "a s3cret b");
        assert_eq!(interpolate("${NOPE:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("cost $$5 $x", &env).unwrap(), "cost $5 $x");
        // Not a variable name: left as written.
        assert_eq!(
            interpolate("re: ^a${1,3}$ ${} ${a b}", &env).unwrap(),
            "re: ^a${1,3}$ ${} ${a b}"
        );
        assert_eq!(
            interpolate("a: 1\n  b: ${NOPE}", &env),
            Err((2, 6, "NOPE".into()))
        );
    }

    const MINIMAL: &str = "kafka: {bootstrap.servers: 'localhost:9092'}\ninput: {topics: [raw]}\nschema: {registry: {file: schemas.yaml}}\n";

    #[test]
    fn a_reload_takes_live_settings_and_names_the_rest() {
        let parse = |extra: &str| {
            Config::from_yaml(&format!("{MINIMAL}{extra}"), Path::new("t.yaml"), env).unwrap()
        };
        let running = parse("routes: [{name: a, topic: old}]\n");
        let mut new = parse(
            "routes: [{name: a, topic: new}]\noutput: {topic_template: 'x.{env}'}\nworkers: 2\n",
        );
        new.input.group_id = "other".into();
        let applied = running.with_live_settings_of(&new);
        assert_eq!(applied.routes[0].topic.as_deref(), Some("new"));
        assert_eq!(applied.output.topic_template, "x.{env}");
        assert_eq!(applied.workers, running.workers, "restart-only: kept");
        let mut changes = running.restart_only_changes(&new);
        changes.sort();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes, ["input.group_id", "workers"]);
        assert!(running.restart_only_changes(&running.clone()).is_empty());
    }

    #[test]
    fn invalid_settings_are_located() {
        let text = "kafka:\n  bootstrap.servers: x\ninput:\n  topics: [raw]\nschema:\n  registry:\n    file: s.yaml\n    unknown_ttl: 10ms\n";
        assert_eq!(
            locate_setting(text, "schema.registry.unknown_ttl"),
            Some((8, 5))
        );
        assert_eq!(locate_setting(text, "input.topics"), Some((4, 3)));
        let e = Config::from_yaml(text, Path::new("r.yaml"), env).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.yaml:8:5: schema.registry.unknown_ttl is"),
            "{e}"
        );
    }

    #[test]
    fn locates_a_named_item() {
        let text = "routes:\n  - name: first\n  - name: \"second\"\n";
        assert_eq!(locate(text, "name", "second"), Some((3, 5)));
        assert_eq!(locate(text, "name", "third"), None);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_yaml(MINIMAL, Path::new("c.yaml"), env).unwrap();
        assert_eq!(c.input.group_id, "envelope-router");
        assert_eq!(c.dedup.window, Duration::from_secs(600));
        assert_eq!(c.output.topic_template, CANONICAL_TOPIC);
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9464");
    }

    #[test]
    fn errors_name_the_place() {
        let e = Config::from_yaml(
            &format!("{MINIMAL}dedup: {{window: soon}}\n"),
            Path::new("c.yaml"),
            env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("c.yaml: ") && e.contains("line 4"), "{e}");
        let e = Config::from_yaml(&format!("{MINIMAL}bogus: 1\n"), Path::new("c.yaml"), env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = Config::from_yaml(
            "kafka: {}\ninput: {topics: [raw]}\nschema: {registry: {file: s}}\n",
            Path::new("c.yaml"),
            env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bootstrap.servers"), "{e}");
    }

    #[test]
    fn record_sizes_and_message_max_bytes_must_fit_together() {
        let load = |extra: &str| {
            Config::from_yaml(&format!("{MINIMAL}{extra}"), Path::new("c.yaml"), env)
                .map_err(|e| e.to_string())
        };
        let c = load("").unwrap();
        assert_eq!(
            c.producer_message_max_bytes(),
            1_000_000 + RECORD_OVERHEAD_BYTES,
            "derived"
        );
        let c = load("output: {max_record_bytes: 5000}\n").unwrap();
        assert_eq!(c.producer_message_max_bytes(), 5000 + RECORD_OVERHEAD_BYTES);
        // Set by hand: must leave room for key, headers and framing.
        let e = load("").map(|_| ()).and_then(|_| {
            Config::from_yaml(
                &MINIMAL.replace(
                    "'localhost:9092'}",
                    "'localhost:9092', message.max.bytes: 1000000}",
                ),
                Path::new("c.yaml"),
                env,
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        });
        assert!(
            e.as_ref()
                .is_err_and(|e| e.contains("message.max.bytes is 1000000")),
            "{e:?}"
        );
        let c = Config::from_yaml(
            &format!(
                "{}output: {{max_record_bytes: 900000}}\n",
                MINIMAL.replace(
                    "'localhost:9092'}",
                    "'localhost:9092', producer: {message.max.bytes: 2000000}}"
                )
            ),
            Path::new("c.yaml"),
            env,
        )
        .unwrap();
        assert_eq!(c.producer_message_max_bytes(), 2_000_000);
        assert!(load("output: {max_record_bytes: 0}\n").is_err());
        assert!(load("output: {max_record_bytes: 999999999}\n").is_err());
    }

    #[test]
    fn unknown_ttl_below_a_second_is_refused() {
        let e = Config::from_yaml(
            &MINIMAL.replace(
                "{file: schemas.yaml}",
                "{file: schemas.yaml, unknown_ttl: 0s}",
            ),
            Path::new("c.yaml"),
            env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown_ttl"), "{e}");
    }

    #[test]
    fn kafka_properties_merge_and_secrets_are_recognised() {
        let c = Config::from_yaml(
            &MINIMAL.replace(
                "{bootstrap.servers: 'localhost:9092'}",
                "{bootstrap.servers: 'b:9092', sasl.password: '${PASS}', linger.ms: 5, producer: {linger.ms: 20}}",
            ),
            Path::new("c.yaml"),
            env,
        )
        .unwrap();
        let props = c.client_properties(&c.kafka.producer);
        assert!(props.contains(&("linger.ms".into(), "20".into())));
        assert!(props.contains(&("sasl.password".into(), "s3cret".into())));
        assert!(is_secret_property("sasl.password") && !is_secret_property("linger.ms"));
    }
}
