//! Kafka producer wrapper for game producers (feature `producer`): sends
//! envelopes to a raw topic over rdkafka's `ThreadedProducer`, with no async
//! runtime.
//!
//! Defaults follow what the router relies on: the Kafka key is the message id
//! (so a retried duplicate lands on the same partition, where the router's
//! per-partition dedup sees it) and the producer is idempotent. Delivery
//! results arrive on librdkafka's background thread through the callback
//! given to [`EnvelopeProducerBuilder::build`]; `send` never waits for one.

use crate::envelope::{HeaderFields, ValidHeader};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// What the Kafka record key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyMode {
    /// The envelope's message id (default): duplicates share a partition.
    #[default]
    MessageId,
    /// No key: librdkafka spreads records over partitions.
    None,
}

/// The outcome of one send, as reported by librdkafka.
#[derive(Debug)]
pub struct DeliveryReport<'a> {
    /// Topic the record was sent to.
    pub topic: &'a str,
    /// Record key (the message id under [`KeyMode::MessageId`]).
    pub key: Option<&'a [u8]>,
    /// Partition and offset on success, or the final error after librdkafka's
    /// retries.
    pub result: Result<(i32, i64), &'a KafkaError>,
}

/// Why a record could not be handed to librdkafka.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The local queue stayed full for the whole `queue_full_timeout`.
    #[error(
        "librdkafka's queue stayed full for {0:?}; the broker is not keeping up or unreachable"
    )]
    QueueFull(Duration),
    /// Any other client error (unknown topic, record too large, ...).
    #[error("could not enqueue record: {0}")]
    Kafka(#[from] KafkaError),
}

/// Builds an [`EnvelopeProducer`]. Any librdkafka property can be set with
/// [`EnvelopeProducerBuilder::set`] (TLS, SASL, batching, compression...).
#[derive(Debug, Clone)]
#[must_use]
pub struct EnvelopeProducerBuilder {
    config: ClientConfig,
    topic: String,
    key_mode: KeyMode,
    queue_full_timeout: Duration,
}

impl EnvelopeProducerBuilder {
    /// A producer for `raw_topic` on `bootstrap_servers`, idempotent.
    pub fn new(bootstrap_servers: &str, raw_topic: &str) -> Self {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        EnvelopeProducerBuilder {
            config,
            topic: raw_topic.to_owned(),
            key_mode: KeyMode::default(),
            queue_full_timeout: Duration::from_secs(5),
        }
    }

    /// Sets a librdkafka property, overriding the defaults above.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.config.set(key, value);
        self
    }

    /// Chooses the record key.
    pub fn key_mode(mut self, mode: KeyMode) -> Self {
        self.key_mode = mode;
        self
    }

    /// How long `send` waits for room when librdkafka's queue is full.
    pub fn queue_full_timeout(mut self, timeout: Duration) -> Self {
        self.queue_full_timeout = timeout;
        self
    }

    /// Starts the producer; `on_delivery` runs once per record on
    /// librdkafka's background thread, so keep it short.
    pub fn build<F>(self, on_delivery: F) -> Result<EnvelopeProducer<F>, KafkaError>
    where
        F: Fn(DeliveryReport<'_>) + Send + Sync + 'static,
    {
        let producer = self
            .config
            .create_with_context(DeliveryContext { on_delivery })?;
        Ok(EnvelopeProducer {
            producer,
            topic: self.topic,
            key_mode: self.key_mode,
            queue_full_timeout: self.queue_full_timeout,
        })
    }
}

/// Forwards librdkafka's delivery callbacks to the user's closure.
pub struct DeliveryContext<F> {
    on_delivery: F,
}

impl<F: Send + Sync> ClientContext for DeliveryContext<F> {}

impl<F> ProducerContext for DeliveryContext<F>
where
    F: Fn(DeliveryReport<'_>) + Send + Sync,
{
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let report = match result {
            Ok(m) => DeliveryReport {
                topic: m.topic(),
                key: m.key(),
                result: Ok((m.partition(), m.offset())),
            },
            Err((e, m)) => DeliveryReport {
                topic: m.topic(),
                key: m.key(),
                result: Err(e),
            },
        };
        (self.on_delivery)(report);
    }
}

/// Sends envelopes to one raw topic. Cheap to share across threads.
pub struct EnvelopeProducer<F>
where
    F: Fn(DeliveryReport<'_>) + Send + Sync + 'static,
{
    producer: ThreadedProducer<DeliveryContext<F>>,
    topic: String,
    key_mode: KeyMode,
    queue_full_timeout: Duration,
}

thread_local! {
    /// Reused encode buffer: librdkafka copies the record, so one scratch
    /// buffer per thread avoids an allocation per send.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<F> EnvelopeProducer<F>
where
    F: Fn(DeliveryReport<'_>) + Send + Sync + 'static,
{
    /// Encodes and enqueues one envelope; returns once librdkafka holds it.
    /// The outcome arrives later through the delivery callback.
    ///
    /// ```no_run
    /// use envelope_router::envelope::HeaderBuilder;
    /// use envelope_router::producer::EnvelopeProducerBuilder;
    /// use std::time::Duration;
    ///
    /// let producer = EnvelopeProducerBuilder::new("localhost:9092", "raw.glutton")
    ///     .build(|report| {
    ///         if let Err(e) = report.result {
    ///             eprintln!("lost {:?}: {e}", report.key);
    ///         }
    ///     })?;
    /// let stream = HeaderBuilder::new()
    ///     .env("prod").source("glutton").title("1234")
    ///     .category("telemetry_match_event").version(1).schema_id(7);
    /// producer.send(&stream.build()?, br#"{"score":42}"#)?;
    /// producer.flush(Duration::from_secs(10))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&self, header: &ValidHeader, payload: &[u8]) -> Result<(), SendError> {
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            header.encode_envelope(payload, &mut *buf);
            let key = match self.key_mode {
                KeyMode::MessageId => Some(header.message_id()),
                KeyMode::None => None,
            };
            self.enqueue(key, &buf)
        })
    }

    /// Enqueues an already encoded envelope (for example from
    /// [`crate::envelope::encode_batch`]) under an explicit key.
    pub fn send_encoded(&self, key: Option<&[u8]>, record: &[u8]) -> Result<(), SendError> {
        self.enqueue(key, record)
    }

    fn enqueue(&self, key: Option<&[u8]>, record: &[u8]) -> Result<(), SendError> {
        let deadline = Instant::now() + self.queue_full_timeout;
        loop {
            let mut rec = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(record);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if Instant::now() >= deadline {
                        return Err(SendError::QueueFull(self.queue_full_timeout));
                    }
                    // The background thread drains the queue; give it a moment.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits until every enqueued record is delivered or failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Records enqueued but not yet reported.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// The raw topic this producer writes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}
