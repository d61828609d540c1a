//! Output topics: created through the admin API the first time they are
//! used (with `create_topics: admin`), in the background.

use super::event_loop::Loop;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use std::collections::HashSet;
use std::sync::Arc;

/// Most output topics remembered as created.
pub const MAX_KNOWN_TOPICS: usize = 100_000;

/// Output topics already asked for, by name. The loop checks it only for
/// a topic name's `Arc` that just got its topic handle
/// ([`TopicHandles::take_new_topics`](super::topic_handles::TopicHandles::take_new_topics)):
/// once per stream plan, not once per record.
#[derive(Default)]
pub(super) struct KnownTopics {
    names: HashSet<Arc<str>, crate::stats::LabelHasher>,
}

impl KnownTopics {
    /// Remembers `topic`; true when its name is new.
    fn insert(&mut self, topic: &Arc<str>) -> bool {
        if self.names.len() >= MAX_KNOWN_TOPICS && !self.names.contains(topic) {
            // Producers name the topics: start over rather than grow (a
            // topic seen again is asked for again; "exists" is harmless).
            self.names.clear();
            crate::stats::bound_reached("known_topics");
        }
        self.names.insert(topic.clone())
    }
}

impl Loop<'_, '_> {
    /// Checks or creates ([`Loop::ensure_topic`]) each topic sent to for the
    /// first time since the last call; its first records wait in librdkafka
    /// for its metadata meanwhile.
    #[inline]
    pub(super) fn ensure_new_topics(&mut self) {
        let Some(new) = self.topics.take_new_topics() else {
            return;
        };
        for topic in new {
            // The changelog's topic was checked at start-up (`changelog.rs`).
            if self.changelog.as_ref().is_none_or(|c| c.topic != topic) {
                self.ensure_topic(&topic);
            }
        }
    }

    /// Creates an output topic through the admin API (in the background) the
    /// first time it is used; with `broker`/`none` creation only records it.
    pub(super) fn ensure_topic(&mut self, topic: &Arc<str>) {
        if !self.known_topics.insert(topic) {
            return;
        }
        let topic = topic.clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_new_once_whichever_arc_carries_it() {
        let mut known = KnownTopics::default();
        let (a, a_again): (Arc<str>, Arc<str>) = ("out.a".into(), "out.a".into());
        assert!(known.insert(&a), "first sighting of the name");
        assert!(!known.insert(&a), "the same Arc again");
        assert!(!known.insert(&a_again), "another Arc of a known name");
        assert!(known.insert(&"out.b".into()));
    }
}
