//! What a failed produce means for its record: the one table that classifies
//! every produce error (librdkafka's local ones and the broker's), and the
//! step that follows from it. Pure logic; `context.rs` and `event_loop.rs`
//! act on it.
//!
//! | class | errors | what happens |
//! | --- | --- | --- |
//! | transient | anything not listed below: leader moves, timeouts, brokers down, queue full, a topic being created | sent again with backoff; the input partition waits (backpressure) |
//! | needs an operator | topic or cluster authorization failed; an unknown topic with `create_topics: none` | as transient, and the log names the topic and the cause (at most every 5 s per topic, at least once a minute while it lasts) |
//! | permanent for the record | message too large, record batch too large, invalid record, invalid timestamp, invalid or corrupt message, unsupported message format, bad message, invalid argument | a verdict: the record is dead-lettered as `output_rejected` |
//! | fatal for the client | `__FATAL` (an idempotent producer that can no longer guarantee order) | the router stops and exits non-zero |
//!
//! A dead letter that fails permanently is written again without its
//! payload (`dlq.payload_omitted`); if that fails permanently too, the
//! record is settled without a copy and counted (`envelope_router_dead_letters_unwritten_total`).

use crate::config::TopicCreation;
use rdkafka::error::RDKafkaErrorCode as Code;

/// How a produce error bears on its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Will pass by itself: send again later.
    Transient,
    /// Will pass once an operator acts (grants access, creates the topic):
    /// send again later, and say loudly which topic and why.
    NeedsOperator,
    /// This record can never be written there: a verdict.
    Permanent,
    /// The client is unusable: stop the process.
    Fatal,
}

/// Classifies one produce error. Unknown codes are transient: a record is
/// never given up on an error nobody has looked at.
pub fn classify(code: Code, create_topics: TopicCreation) -> Class {
    match code {
        Code::MessageSizeTooLarge
        | Code::MessageBatchTooLarge
        | Code::InvalidRecord
        | Code::InvalidTimestamp
        | Code::InvalidMessage
        | Code::InvalidMessageSize
        | Code::UnsupportedForMessageFormat
        | Code::BadMessage
        | Code::InvalidArgument => Class::Permanent,
        Code::TopicAuthorizationFailed | Code::ClusterAuthorizationFailed => Class::NeedsOperator,
        Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::UnknownPartition => {
            match create_topics {
                // The router or the broker is creating it.
                TopicCreation::Admin | TopicCreation::Broker => Class::Transient,
                TopicCreation::None => Class::NeedsOperator,
            }
        }
        Code::Fatal => Class::Fatal,
        _ => Class::Transient,
    }
}

/// Which write of a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A routed output.
    Output,
    /// The dead letter, with the record's bytes.
    DeadLetter,
    /// The dead letter without the payload.
    DeadLetterWithoutPayload,
}

/// What to do after a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send the same write again after a backoff.
    Retry,
    /// Dead-letter the record as `output_rejected`.
    DeadLetter,
    /// Write the dead letter again without the payload.
    DeadLetterWithoutPayload,
    /// Nothing can be written: count it, log its coordinates, settle it.
    GiveUp,
    /// Stop the router.
    Stop,
}

/// The step after a write of kind `attempt` failed with an error of `class`.
pub fn next_step(attempt: Attempt, class: Class) -> Step {
    match (class, attempt) {
        (Class::Transient | Class::NeedsOperator, _) => Step::Retry,
        (Class::Fatal, _) => Step::Stop,
        (Class::Permanent, Attempt::Output) => Step::DeadLetter,
        (Class::Permanent, Attempt::DeadLetter) => Step::DeadLetterWithoutPayload,
        (Class::Permanent, Attempt::DeadLetterWithoutPayload) => Step::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        use Class::*;
        let none = TopicCreation::None;
        let admin = TopicCreation::Admin;
        for (code, want) in [
            (Code::MessageSizeTooLarge, Permanent),
            (Code::MessageBatchTooLarge, Permanent),
            (Code::InvalidRecord, Permanent),
            (Code::InvalidTimestamp, Permanent),
            (Code::InvalidMessage, Permanent),
            (Code::UnsupportedForMessageFormat, Permanent),
            (Code::InvalidArgument, Permanent),
            (Code::TopicAuthorizationFailed, NeedsOperator),
            (Code::ClusterAuthorizationFailed, NeedsOperator),
            (Code::NotLeaderForPartition, Transient),
            (Code::LeaderNotAvailable, Transient),
            (Code::RequestTimedOut, Transient),
            (Code::MessageTimedOut, Transient),
            (Code::NotEnoughReplicas, Transient),
            (Code::NotEnoughReplicasAfterAppend, Transient),
            (Code::BrokerTransportFailure, Transient),
            (Code::AllBrokersDown, Transient),
            (Code::QueueFull, Transient),
            (Code::KafkaStorageError, Transient),
            (Code::ThrottlingQuotaExceeded, Transient),
            (Code::Fatal, Fatal),
        ] {
            assert_eq!(classify(code, admin), want, "{code:?}");
        }
        for code in [
            Code::UnknownTopicOrPartition,
            Code::UnknownTopic,
            Code::UnknownPartition,
        ] {
            assert_eq!(classify(code, admin), Transient, "being created");
            assert_eq!(classify(code, TopicCreation::Broker), Transient);
            assert_eq!(classify(code, none), NeedsOperator, "must exist");
        }
    }

    #[test]
    fn a_permanent_failure_walks_down_to_a_verdict() {
        use Attempt::*;
        assert_eq!(next_step(Output, Class::Permanent), Step::DeadLetter);
        assert_eq!(
            next_step(DeadLetter, Class::Permanent),
            Step::DeadLetterWithoutPayload
        );
        assert_eq!(
            next_step(DeadLetterWithoutPayload, Class::Permanent),
            Step::GiveUp
        );
        for a in [Output, DeadLetter, DeadLetterWithoutPayload] {
            assert_eq!(next_step(a, Class::Transient), Step::Retry);
            assert_eq!(next_step(a, Class::NeedsOperator), Step::Retry);
            assert_eq!(next_step(a, Class::Fatal), Step::Stop);
        }
    }
}
