//! Test harness: a mock Kafka cluster, an in-process Confluent-style schema
//! registry whose health can be switched, a router running in a thread, and
//! helpers to produce and read topics.
#![allow(dead_code)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use envelope_router::config::Config;
use envelope_router::envelope::{HeaderBuilder, ValidHeader};
use envelope_router::kafka::{self, RunControl};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One tokio runtime for every test in a binary.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Registry health.
pub const UP: u8 = 0;
/// Answers 503 to everything.
pub const DOWN: u8 = 1;
/// Answers 404 with an HTML body, as a gateway or a wrong base path does.
pub const GATEWAY_404: u8 = 2;

/// An in-process schema registry speaking the Confluent REST API.
pub struct TestRegistry {
    pub url: String,
    pub health: Arc<AtomicU8>,
    pub requests: Arc<AtomicU64>,
    subjects: Arc<std::sync::RwLock<HashMap<u32, Vec<String>>>>,
}

#[derive(Clone)]
struct RegistryState {
    subjects: Arc<std::sync::RwLock<HashMap<u32, Vec<String>>>>,
    health: Arc<AtomicU8>,
    requests: Arc<AtomicU64>,
}

impl TestRegistry {
    /// Serves `ids` (id → subjects) on an ephemeral localhost port.
    pub fn start(ids: &[(u32, &[&str])]) -> TestRegistry {
        let state = RegistryState {
            subjects: Arc::new(std::sync::RwLock::new(
                ids.iter()
                    .map(|(id, s)| (*id, s.iter().map(|s| s.to_string()).collect()))
                    .collect(),
            )),
            health: Arc::new(AtomicU8::new(UP)),
            requests: Arc::new(AtomicU64::new(0)),
        };
        let app = Router::new()
            .route("/schemas/ids/{id}", get(schema))
            .route("/schemas/ids/{id}/versions", get(versions))
            .with_state(state.clone());
        let listener = runtime()
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime().spawn(async move { axum::serve(listener, app).await });
        TestRegistry {
            url: format!("http://{addr}"),
            health: state.health,
            requests: state.requests,
            subjects: state.subjects,
        }
    }

    /// Registers `id` under `subject` too (an id's subject list can grow).
    pub fn register(&self, id: u32, subject: &str) {
        self.subjects
            .write()
            .unwrap()
            .entry(id)
            .or_default()
            .push(subject.to_owned());
    }
}

fn check(s: &RegistryState, id: u32) -> Result<Vec<String>, (StatusCode, String)> {
    s.requests.fetch_add(1, Ordering::Relaxed);
    match s.health.load(Ordering::Relaxed) {
        DOWN => return Err((StatusCode::SERVICE_UNAVAILABLE, "down for the test".into())),
        GATEWAY_404 => return Err((StatusCode::NOT_FOUND, "<html>404 Not Found</html>".into())),
        _ => {}
    }
    s.subjects.read().unwrap().get(&id).cloned().ok_or((
        StatusCode::NOT_FOUND,
        r#"{"error_code":40403,"message":"Schema not found"}"#.into(),
    ))
}

async fn schema(
    State(s): State<RegistryState>,
    Path(id): Path<u32>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    check(&s, id)?;
    Ok(Json(
        serde_json::json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" }),
    ))
}

async fn versions(
    State(s): State<RegistryState>,
    Path(id): Path<u32>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let subjects = check(&s, id)?;
    Ok(Json(serde_json::Value::Array(
        subjects
            .iter()
            .map(|s| serde_json::json!({ "subject": s, "version": 1 }))
            .collect(),
    )))
}

/// A router running on its own thread.
pub struct RunningRouter {
    pub ctl: RunControl,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningRouter {
    pub fn start(cfg: &Config) -> RunningRouter {
        let ctl = RunControl::default();
        let (cfg, c) = (cfg.clone(), ctl.clone());
        let handle = std::thread::spawn(move || kafka::run(&cfg, &c, runtime().handle().clone()));
        RunningRouter {
            ctl,
            handle: Some(handle),
        }
    }

    /// Waits until `n` records were read and settled.
    pub fn wait_settled(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.ctl.stats.records_settled() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} records settled (read {})",
                self.ctl.stats.records_settled(),
                self.ctl.stats.records_in()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the router to return by itself (a fatal
    /// error); `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<anyhow::Result<()>> {
        let deadline = Instant::now() + timeout;
        while !self.handle.as_ref()?.is_finished() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(self.handle.take()?.join().unwrap())
    }

    /// Sets the shutdown flag and waits up to `timeout` for the router to
    /// drain, commit and return; false if it did not.
    pub fn stop_within(&mut self, timeout: Duration) -> bool {
        self.ctl.shutdown.store(true, Ordering::Relaxed);
        self.wait_exit(timeout).is_some()
    }

    /// Graceful stop: drain, commit, leave the group.
    pub fn stop(mut self) {
        self.ctl.shutdown.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap().unwrap();
    }
}

impl Drop for RunningRouter {
    fn drop(&mut self) {
        self.ctl.shutdown.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Router config for a test.
pub fn config(bootstrap: &str, group: &str, registry_url: &str, extra: &str) -> Config {
    let yaml = config_yaml(bootstrap, group, registry_url, extra);
    Config::from_yaml(&yaml, std::path::Path::new("test.yaml"), |_| None).unwrap()
}

/// The YAML text of [`config`] (for tests that need it in a file).
pub fn config_yaml(bootstrap: &str, group: &str, registry_url: &str, extra: &str) -> String {
    format!(
        r#"
kafka:
  bootstrap.servers: "{bootstrap}"
  consumer: {{ session.timeout.ms: 6000 }}
input:
  topics: [raw]
  group_id: {group}
output:
  create_topics: broker
dead_letter:
  topic: dlq
schema:
  registry:
    url: "{registry_url}"
    timeout: 500ms
    retry_backoff_min: 50ms
    retry_backoff_max: 200ms
shutdown_timeout: 10s
{extra}
"#
    )
}

/// Config text for the router binary (`envelope-router run`) in a test:
/// JSON logs at info (tests read them), metrics on `metrics_listen`, and
/// `extra` top-level settings.
pub fn binary_config_yaml(
    bootstrap: &str,
    group: &str,
    registry_url: &str,
    metrics_listen: &str,
    extra: &str,
) -> String {
    format!(
        r#"
kafka:
  bootstrap.servers: "{bootstrap}"
  # A killed member leaves the group when its session expires.
  consumer: {{ session.timeout.ms: 6000 }}
input: {{ topics: [raw], group_id: {group} }}
output: {{ create_topics: broker }}
dead_letter: {{ topic: dlq }}
schema: {{ registry: {{ url: "{registry_url}" }} }}
metrics: {{ listen: "{metrics_listen}" }}
log: {{ format: json, level: info }}
shutdown_timeout: 10s
{extra}
"#
    )
}

/// A header builder for stream `category` version 1 under `schema_id`.
pub fn stream(env: &str, source: &str, category: &str, schema_id: u32) -> HeaderBuilder {
    HeaderBuilder::new()
        .env(env)
        .source(source)
        .title("1234")
        .category(category)
        .version(1)
        .schema_id(schema_id)
}

/// `n` distinct envelopes of stream prod/glutton/1234/match-v1 (schema 1),
/// each with a `len`-byte payload.
pub fn match_inputs(n: usize, len: usize) -> Vec<Input> {
    (0..n)
        .map(|i| {
            Input::envelope(
                &stream("prod", "glutton", "match", 1).build().unwrap(),
                &vec![i as u8; len],
            )
        })
        .collect()
}

/// A raw record to produce.
pub struct Input {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Input {
    pub fn envelope(h: &ValidHeader, payload: &[u8]) -> Input {
        Input {
            key: h.header().message_id.to_vec(),
            value: h.to_envelope_bytes(payload).to_vec(),
            headers: vec![("trace-id".into(), b"t-1".to_vec())],
        }
    }

    pub fn raw(key: &[u8], value: &[u8]) -> Input {
        Input {
            key: key.to_vec(),
            value: value.to_vec(),
            headers: vec![],
        }
    }
}

/// Delivery reports of the test producer: the index of every record the
/// broker did not take.
#[derive(Default)]
struct FailedIndices(std::sync::Mutex<Vec<usize>>);

impl rdkafka::ClientContext for FailedIndices {}

impl rdkafka::producer::ProducerContext for FailedIndices {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, index: Self::DeliveryOpaque) {
        if result.is_err() {
            self.0.lock().unwrap().push(*index);
        }
    }
}

/// Produces `records` to `topic` and waits until the broker has every one.
/// A record the broker refused (tests inject produce errors that any client
/// may receive) is sent again, so the input is complete however the faults
/// fall.
pub fn produce(bootstrap: &str, topic: &str, records: &[Input]) {
    let mut pending: Vec<usize> = (0..records.len()).collect();
    for _attempt in 0..10 {
        // A fresh client each round: librdkafka keeps a topic error such as
        // an authorization failure and refuses later sends to that topic.
        let p: BaseProducer<FailedIndices> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .create_with_context(FailedIndices::default())
            .unwrap();
        let mut refused = Vec::new();
        for &i in &pending {
            let r = &records[i];
            let mut headers = rdkafka::message::OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(rdkafka::message::Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut rec = BaseRecord::with_opaque_to(topic, Box::new(i))
                .key(&r.key)
                .payload(&r.value)
                .timestamp(1_700_000_000_000);
            if !r.headers.is_empty() {
                rec = rec.headers(headers);
            }
            if p.send(rec).is_err() {
                refused.push(i);
            }
        }
        p.flush(Duration::from_secs(30)).unwrap();
        refused.append(&mut p.context().0.lock().unwrap());
        pending = refused;
        if pending.is_empty() {
            return;
        }
        pending.sort_unstable();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} records never reached {topic}", pending.len());
}

/// `group`'s committed offsets on partitions `0..partitions` of `topic`
/// (empty while the coordinator cannot answer).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = match c.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(got) => got,
        Err(e) => {
            eprintln!("committed offsets unavailable: {e}");
            return HashMap::new();
        }
    };
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Waits (up to 60 s) until `group` has committed `total` records of
/// `topic`: the exact end of a run. A router's settled count also counts
/// re-reads after a rebalance, so it can reach the total early.
pub fn wait_committed(bootstrap: &str, group: &str, topic: &str, total: i64) {
    let partitions = {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        md.topics()[0].partitions().len() as i32
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sum: i64 = committed(bootstrap, group, topic, partitions)
            .values()
            .sum();
        if sum == total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sum} of {total} records of {topic} committed by {group}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
    pub timestamp: Option<i64>,
}

/// Calls `f` on every record of a topic (all partitions) up to its high
/// watermarks as of the call; an absent topic has none. Reading to known
/// offsets, not until a quiet period passes, keeps a slow machine (or a
/// leader being looked up) from cutting the read short.
pub fn for_each_record(bootstrap: &str, topic: &str, mut f: impl FnMut(&BorrowedMessage<'_>)) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let Some(t) = md.topics().first().filter(|t| t.error().is_none()) else {
        return;
    };
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (_, hi) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        if hi > 0 {
            ends.insert(p.id(), hi);
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "{topic} not read to its end");
        if let Some(r) = c.poll(Duration::from_millis(50)) {
            let m = r.unwrap();
            let end = ends.get(&m.partition()).copied().unwrap_or(0);
            if m.offset() + 1 >= end {
                ends.remove(&m.partition());
            }
            if m.offset() < end {
                f(&m);
            }
        }
    }
}

/// Every record of a topic up to its high watermarks (see
/// [`for_each_record`]).
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<Output> {
    let mut out = Vec::new();
    for_each_record(bootstrap, topic, |m| {
        out.push(Output {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
        })
    });
    out
}

/// A 2-broker mock cluster in which broker 1 leads `raw` (4 partitions)
/// and `dlq`, and broker 2 leads only `output` (1 partition): faults
/// injected on broker 2 reach the router's writes and nothing else.
pub struct SplitCluster {
    owner: BaseProducer,
    pub bootstrap: String,
}

impl SplitCluster {
    pub fn new(output: &str) -> SplitCluster {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "2")
            .create()
            .unwrap();
        let bootstrap = {
            let mock = owner.client().mock_cluster().unwrap();
            for (topic, partitions, leader) in [("raw", 4, 1), ("dlq", 1, 1), (output, 1, 2)] {
                mock.create_topic(topic, partitions, 1).unwrap();
                for p in 0..partitions {
                    mock.partition_leader(topic, p, Some(leader)).unwrap();
                }
            }
            mock.bootstrap_servers()
        };
        SplitCluster { owner, bootstrap }
    }

    /// Broker 1 coordinates `group` and leads its dedup changelog (so
    /// taking broker 2 down leaves the group and its changelog alone).
    pub fn coordinate(&self, group: &str) {
        let mock = self.owner.client().mock_cluster().unwrap();
        mock.coordinator(rdkafka::mocking::MockCoordinator::Group(group.into()), 1)
            .unwrap();
        let changelog = format!("{group}.dedup-changelog");
        mock.create_topic(&changelog, 2, 1).unwrap();
        for p in 0..2 {
            mock.partition_leader(&changelog, p, Some(1)).unwrap();
        }
    }

    /// The next `count` requests of `api` to `broker` fail with `error`.
    pub fn fail_requests(
        &self,
        broker: i32,
        api: rdkafka::types::RDKafkaApiKey,
        error: rdkafka::types::RDKafkaRespErr,
        count: usize,
    ) {
        use rdkafka::bindings as rd;
        // SAFETY: the mock cluster lives as long as `owner`; the variadic
        // arguments are `count` pairs of (error code, round-trip time in ms).
        unsafe {
            let mc = rd::rd_kafka_handle_mock_cluster(self.owner.client().native_ptr());
            for _ in 0..count {
                rd::rd_kafka_mock_broker_push_request_error_rtts(
                    mc, broker, api as i16, 1, error, 0i32,
                );
            }
        }
    }

    pub fn broker_down(&self, broker: i32) {
        self.owner
            .client()
            .mock_cluster()
            .unwrap()
            .broker_down(broker)
            .unwrap();
    }

    pub fn broker_up(&self, broker: i32) {
        self.owner
            .client()
            .mock_cluster()
            .unwrap()
            .broker_up(broker)
            .unwrap();
    }
}

/// A mock cluster with the raw input topic.
pub fn cluster(partitions: i32) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let c = MockCluster::new(1).unwrap();
    c.create_topic("raw", partitions, 1).unwrap();
    c.create_topic("dlq", 1, 1).unwrap();
    c
}

/// Flag helper for tests that flip state from another thread.
pub fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// Router logs in test output when `RUST_LOG` is set (e.g. `envelope_router=info`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
