//! Partitions waiting on the schema registry. A record whose schema id is
//! not cached starts a backlog for its partition; the records behind it
//! keep their order there, borrowed from librdkafka (no copy), until the id
//! resolves. An outage therefore stops that partition, never dead-letters
//! or drops its records.

use super::event_loop::{Loop, Outgoing};
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// A partition waiting on the registry is paused once it has waited this
/// long or buffered this many records: quick lookups cost no pause/resume
/// cycle (which restarts fetching), an outage still stops consumption.
const PAUSE_AFTER: Duration = Duration::from_millis(500);
pub(super) const PAUSE_BACKLOG: usize = 10_000;

/// Records of one partition waiting, in order, for a schema id.
pub(super) struct Backlog<'c> {
    pub(super) schema_id: u32,
    pub(super) since: Instant,
    pub(super) queue: VecDeque<BorrowedMessage<'c>>,
}

/// Why a record could not be acted on yet.
pub(super) struct WaitForSchema(pub(super) u32);

impl<'c> Loop<'c, '_> {
    pub(super) fn wait_for_schema(&mut self, key: (usize, u16), id: u32, m: BorrowedMessage<'c>) {
        self.backlogs.insert(
            key,
            Backlog {
                schema_id: id,
                since: Instant::now(),
                queue: VecDeque::from([m]),
            },
        );
        self.request_schema(id);
    }

    /// Has the resolver fetch `id` and report it on `self.resolved`.
    pub(super) fn request_schema(&self, id: u32) {
        let tx = self.resolved.0.clone();
        self.resolver.resolve(id, move |id| {
            let _ = tx.send(id);
        });
    }

    /// Pauses partitions whose backlog has waited past [`PAUSE_AFTER`].
    pub(super) fn pause_long_waits(&mut self) {
        let long: Vec<(String, i32)> = self
            .backlogs
            .values()
            .filter(|b| b.since.elapsed() >= PAUSE_AFTER)
            .filter_map(|b| b.queue.front())
            .map(|m| (m.topic().to_owned(), m.partition()))
            .filter(|tp| !self.paused.contains(tp))
            .collect();
        for (topic, partition) in long {
            self.pause(&topic, partition, "waiting for the schema registry");
        }
    }

    pub(super) fn is_waiting_on_schema(&self, (topic, partition): &(String, i32)) -> bool {
        let key = self.shared.lock().key_of(topic, *partition);
        key.is_some_and(|key| self.backlogs.contains_key(&key))
    }

    /// Processes the backlogs of partitions whose schema id is now cached.
    pub(super) fn resume_resolved(&mut self) {
        let ids: HashSet<u32> = self.resolved.1.try_iter().collect();
        if ids.is_empty() {
            return;
        }
        let keys: Vec<_> = self
            .backlogs
            .iter()
            .filter(|(_, b)| ids.contains(&b.schema_id))
            .map(|(k, _)| *k)
            .collect();
        let shared = std::sync::Arc::clone(&self.shared);
        for key in keys {
            let Some(mut backlog) = self.backlogs.remove(&key) else {
                continue;
            };
            while let Some(m) = backlog.queue.pop_front() {
                // The lock is released before anything is sent.
                let handled = self.process(&mut shared.lock(), &m, key, None);
                match handled {
                    Ok(Some(write)) => self.write(Outgoing { m, write }),
                    Ok(None) => {}
                    Err(WaitForSchema(id)) => {
                        // Another unknown id further down: wait again, in order.
                        backlog.queue.push_front(m);
                        backlog.schema_id = id;
                        backlog.since = Instant::now();
                        self.request_schema(id);
                        break;
                    }
                }
            }
            if backlog.queue.is_empty() {
                let tp = self
                    .shared
                    .lock()
                    .get(key.0)
                    .map(|p| (p.topic.to_string(), p.partition));
                if let Some((topic, partition)) = tp {
                    self.resume(&topic, partition);
                }
            } else {
                self.backlogs.insert(key, backlog);
            }
        }
    }
}
