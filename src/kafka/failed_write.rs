//! What happens to a write that failed, whether librdkafka refused it at
//! `send` or reported it failed after its own retries. The table in
//! `produce_error.rs` decides; this applies the step to the shared state:
//! park a retry, turn a rejected output into an `output_rejected` dead
//! letter, write a dead letter again without its payload, give up on a
//! record that nothing can be written for (counted, logged, settled), or
//! stop the router.

use super::context::Shared;
use super::headers::{self, Source};
use super::produce_error::{classify, next_step, Attempt, Class, Step};
use super::retry::Retry;
use crate::pipeline::Reason;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use std::time::Instant;

/// A write that failed, with what is needed to write it (or its dead
/// letter) again.
pub struct FailedWrite<'a> {
    /// Delivery opaque: the record's partition, assignment and sequence.
    pub opaque: usize,
    /// The topic it was written to.
    pub topic: &'a str,
    /// Record key.
    pub key: Option<&'a [u8]>,
    /// Record bytes.
    pub payload: Option<&'a [u8]>,
    /// Kafka headers as written.
    pub headers: Option<OwnedHeaders>,
    /// Record timestamp.
    pub timestamp: Option<i64>,
}

impl<'a> FailedWrite<'a> {
    /// The write a delivery report describes (`opaque` is its delivery
    /// opaque).
    pub fn of(opaque: usize, m: &'a BorrowedMessage<'_>) -> Self {
        FailedWrite {
            opaque,
            topic: m.topic(),
            key: m.key(),
            payload: m.payload(),
            headers: m.headers().map(|h| h.detach()),
            timestamp: m.timestamp().to_millis(),
        }
    }

    /// The write to park: this record's key and timestamp, sent to `topic`
    /// with `payload` and `headers` once `due`.
    fn rewrite(
        &self,
        topic: &str,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        due: Instant,
    ) -> Retry {
        Retry {
            opaque: self.opaque,
            topic: topic.to_owned(),
            key: self.key.map(<[u8]>::to_vec),
            payload: payload.map(<[u8]>::to_vec),
            headers,
            timestamp: self.timestamp,
            due,
        }
    }
}

impl Shared {
    /// A write librdkafka reported delivered without an offset (see
    /// `ProducerCtx::delivery`): not proof that it was written, so it is a
    /// transient failure, sent again; its record stays unsettled until a
    /// write of it is acknowledged with an offset.
    pub fn ack_without_offset(&self, w: FailedWrite<'_>) {
        self.failed_as(w, Class::Transient, &"acknowledged without an offset");
    }

    /// Which write `topic` and `headers` describe.
    fn attempt_of(&self, topic: &str, headers: Option<&OwnedHeaders>) -> Attempt {
        if topic != self.settings.dead_letter_topic {
            Attempt::Output
        } else if headers::is_payload_omitted(headers) {
            Attempt::DeadLetterWithoutPayload
        } else {
            Attempt::DeadLetter
        }
    }

    /// Applies the next step to a failed write. Its record stays unsettled
    /// unless the step is a verdict.
    pub fn write_failed(&self, w: FailedWrite<'_>, error: &KafkaError) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        self.failed_as(w, classify(code, self.settings.create_topics), error);
    }

    /// [`Shared::write_failed`] for a failure of `class`, described by `error`.
    fn failed_as(&self, mut w: FailedWrite<'_>, class: Class, error: &dyn std::fmt::Display) {
        let written = w.headers.take();
        let attempt = self.attempt_of(w.topic, written.as_ref());
        self.stats.delivery_error(w.topic, &error.to_string());
        let mut state = self.lock();
        state.write_done(w.opaque);
        let Some((source, offset)) = state.source_of(w.opaque) else {
            return; // revoked meanwhile: the next owner reads the record again
        };
        let source_topic = source.topic.clone();
        let source = Source {
            topic: &source_topic,
            partition: source.partition,
            offset: offset.unwrap_or(-1),
        };
        let now = Instant::now();
        match next_step(attempt, class) {
            Step::Retry => {
                let attempts = state.failed_attempt(w.opaque, w.topic);
                let due = now + super::context::backoff(attempts);
                state
                    .retries
                    .push(w.rewrite(w.topic, w.payload, written, due));
                drop(state);
                if let Some(similar) = self.failure_log.hit(w.topic) {
                    if class == Class::NeedsOperator {
                        tracing::error!(topic = w.topic, error = %error, attempts, similar, "produce failed: output blocked until an operator acts (grant access or create the topic); the record will be sent again and its input partition waits");
                    } else {
                        tracing::warn!(topic = w.topic, error = %error, attempts, similar, "produce failed; the record will be sent again and its input partition waits");
                    }
                }
            }
            Step::DeadLetter => {
                let detail = format!("publishing to {} failed permanently: {error}", w.topic);
                let base = match written {
                    Some(h) if self.settings.mirror_headers => headers::without_mirrors(h),
                    other => other.unwrap_or_default(),
                };
                let h = headers::with_dlq_headers(base, Reason::OutputRejected, &detail, source);
                let dlq = self.settings.dead_letter_topic.clone();
                state.retries.push(w.rewrite(&dlq, w.payload, Some(h), now));
                drop(state);
                self.stats.rejected(Reason::OutputRejected, None);
                if let Some(similar) = self.failure_log.hit(w.topic) {
                    tracing::warn!(topic = w.topic, error = %error, source.topic = source.topic, source.partition, source.offset, similar, "output rejected the record for good; it is dead-lettered as output_rejected");
                }
            }
            Step::DeadLetterWithoutPayload => {
                let len = w.payload.map_or(0, <[u8]>::len);
                let h = headers::without_payload_headers(written.as_ref(), len, &error.to_string());
                state.retries.push(w.rewrite(w.topic, None, Some(h), now));
                drop(state);
                tracing::warn!(error = %error, bytes = len, source.topic = source.topic, source.partition, source.offset, "dead letter refused; writing it again without its payload (dlq.payload_omitted)");
            }
            Step::GiveUp => {
                let settled = state.settle(w.opaque);
                drop(state);
                self.stats.dead_letter_unwritten();
                if let Some(s) = settled {
                    let now_ns = self.wall_clock.nanos_at(Instant::now());
                    self.stats.settled(s.latency_s(now_ns), None);
                }
                tracing::error!(error = %error, source.topic = source.topic, source.partition, source.offset, "dead letter refused even without its payload: the record is settled without a copy; it is still in the input at these coordinates");
            }
            Step::Stop => {
                drop(state);
                self.stop(format!("producer: {error}"));
            }
        }
    }
}
