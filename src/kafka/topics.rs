//! Output topics: created through the admin API the first time they are
//! used (with `create_topics: admin`), in the background.

use super::event_loop::Loop;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use std::sync::Arc;

/// Most output topics remembered as created.
pub const MAX_KNOWN_TOPICS: usize = 100_000;

impl Loop<'_, '_> {
    /// Creates an output topic through the admin API (in the background) the
    /// first time it is used; with `broker`/`none` creation only records it.
    pub(super) fn ensure_topic(&mut self, topic: &str) {
        let topic: Arc<str> = topic.into();
        if self.known_topics.len() >= MAX_KNOWN_TOPICS && !self.known_topics.contains(&topic) {
            // Producers name the topics: start over rather than grow (a
            // topic seen again is asked for again; "exists" is harmless).
            self.known_topics.clear();
            crate::stats::bound_reached("known_topics");
        }
        if !self.known_topics.insert(topic.clone()) {
            return;
        }
        let Some(admin) = self.admin.clone() else {
            return;
        };
        let (partitions, rf) = (
            self.cfg.output.partitions,
            self.cfg.output.replication_factor,
        );
        self.runtime.spawn(async move {
            let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(rf));
            match admin.create_topics([&new], &AdminOptions::new()).await {
                Ok(results) => {
                    for r in results {
                        match r {
                            Ok(name) => tracing::info!(topic = %name, "created output topic"),
                            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                                tracing::debug!(topic = %name, "output topic exists")
                            }
                            Err((name, code)) => tracing::warn!(topic = %name, error = %code, "could not create output topic; publishing waits until it exists"),
                        }
                    }
                }
                Err(e) => tracing::warn!(topic = %topic, error = %e, "could not create output topic; publishing waits until it exists"),
            }
        });
    }
}
