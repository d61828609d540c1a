//! Writes that failed and are sent again after a backoff (or at once, for a
//! dead letter that replaces a rejected output). Their input partitions
//! stay paused until nothing of theirs is left to resend.
//!
//! The queue is ordered by due time and counts parked writes per
//! assignment as they come and go, so a loop turn costs the writes that are
//! due, not every write that waits (100k pending retries once cost a
//! `String` and a pass over all of them on every turn).

use super::event_loop::Loop;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::BaseRecord;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A write to send again (the record stays unsettled until it lands).
pub struct Retry {
    /// Delivery opaque of the original send.
    pub opaque: usize,
    /// Topic to write to.
    pub topic: String,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record bytes (copied only on this failure path); `None` for a dead
    /// letter written without its payload.
    pub payload: Option<Vec<u8>>,
    /// Kafka headers.
    pub headers: Option<OwnedHeaders>,
    /// Record timestamp.
    pub timestamp: Option<i64>,
    /// Not before.
    pub due: Instant,
}

/// Parked writes by due time, with a count per assignment `(slot, epoch)`.
#[derive(Default)]
pub struct RetryQueue {
    queue: BTreeMap<(Instant, u64), Retry>,
    next: u64,
    parked: HashMap<(usize, u16), usize>,
}

impl RetryQueue {
    /// Parks a write.
    pub fn push(&mut self, r: Retry) {
        *self.parked.entry(assignment(r.opaque)).or_default() += 1;
        self.next += 1;
        self.queue.insert((r.due, self.next), r);
    }

    /// The earliest write, if it is due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Retry> {
        let (&(due, _), _) = self.queue.first_key_value()?;
        if due > now {
            return None;
        }
        let (_, r) = self.queue.pop_first()?;
        self.unpark(assignment(r.opaque));
        Some(r)
    }

    fn unpark(&mut self, key: (usize, u16)) {
        if let Some(n) = self.parked.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.parked.remove(&key);
            }
        }
    }

    /// Assignments with at least one parked write.
    pub fn parked(&self) -> impl Iterator<Item = (usize, u16)> + '_ {
        self.parked.keys().copied()
    }

    /// Writes parked for one assignment.
    pub fn parked_for(&self, slot: usize, epoch: u16) -> usize {
        self.parked.get(&(slot, epoch)).copied().unwrap_or(0)
    }

    /// Forgets an assignment's writes (revoked: the next owner reads those
    /// records again, nothing was committed past them).
    pub fn drop_assignment(&mut self, slot: usize, epoch: u16) {
        if self.parked.remove(&(slot, epoch)).is_some() {
            self.queue
                .retain(|_, r| assignment(r.opaque) != (slot, epoch));
        }
    }

    /// Parked writes.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

fn assignment(opaque: usize) -> (usize, u16) {
    let (slot, epoch, _) = super::state::decode_opaque(opaque);
    (slot, epoch)
}

impl Loop<'_, '_> {
    /// Sends parked writes whose time has come; pauses the input partitions
    /// that still have writes parked and resumes the ones that no longer do.
    pub(super) fn resend_due(&mut self) {
        if self.paused.is_empty() && self.shared.lock().retries.is_empty() {
            return; // the common case: nothing failed, nothing waits
        }
        let now = Instant::now();
        // Not into a queue that stayed full this turn: they stay parked.
        while !self.queue_wait_left.get().is_zero() {
            let r = {
                let mut state = self.shared.lock();
                let r = state.retries.pop_due(now);
                if let Some(r) = &r {
                    state.write_started(r.opaque);
                }
                r
            };
            let Some(r) = r else {
                break;
            };
            let mut rec = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&r.topic, r.opaque);
            if let Some(p) = &r.payload {
                rec = rec.payload(p);
            }
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            if let Some(h) = r.headers {
                rec = rec.headers(h);
            }
            self.enqueue(None, rec);
        }
        let stalled: Vec<(String, i32)> = {
            let state = self.shared.lock();
            state
                .retries
                .parked()
                .filter_map(|(slot, epoch)| state.get(slot).filter(|p| p.epoch == epoch))
                .map(|p| (p.topic.to_string(), p.partition))
                .collect()
        };
        for (topic, partition) in &stalled {
            self.pause(topic, *partition, "an output keeps failing");
        }
        let to_resume: Vec<_> = self
            .paused
            .iter()
            .filter(|tp| !stalled.contains(*tp) && !self.is_waiting_on_schema(tp))
            .cloned()
            .collect();
        for (topic, partition) in to_resume {
            self.resume(&topic, partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::encode_opaque;
    use super::*;
    use std::time::Duration;

    fn retry(slot: usize, epoch: u16, seq: u64, due: Instant) -> Retry {
        Retry {
            opaque: encode_opaque(slot, epoch, seq),
            topic: "t".into(),
            key: None,
            payload: None,
            headers: None,
            timestamp: None,
            due,
        }
    }

    #[test]
    fn pops_in_due_order_and_counts_per_assignment() {
        let t0 = Instant::now();
        let mut q = RetryQueue::default();
        q.push(retry(0, 1, 0, t0 + Duration::from_secs(2)));
        q.push(retry(1, 1, 0, t0));
        q.push(retry(0, 1, 1, t0 + Duration::from_secs(1)));
        assert_eq!((q.len(), q.parked_for(0, 1), q.parked_for(1, 1)), (3, 2, 1));
        assert!(q
            .pop_due(t0)
            .is_some_and(|r| r.opaque == encode_opaque(1, 1, 0)));
        assert!(q.pop_due(t0).is_none(), "the rest is not due");
        assert_eq!(q.parked().collect::<Vec<_>>(), [(0, 1)]);
        let later = t0 + Duration::from_secs(5);
        assert!(q
            .pop_due(later)
            .is_some_and(|r| r.opaque == encode_opaque(0, 1, 1)));
        assert!(q
            .pop_due(later)
            .is_some_and(|r| r.opaque == encode_opaque(0, 1, 0)));
        assert!(q.is_empty() && q.parked().next().is_none());
    }

    #[test]
    fn a_revoked_assignment_leaves_nothing_behind() {
        let t0 = Instant::now();
        let mut q = RetryQueue::default();
        for seq in 0..3 {
            q.push(retry(0, 1, seq, t0));
            q.push(retry(0, 2, seq, t0));
        }
        q.drop_assignment(0, 1);
        assert_eq!((q.len(), q.parked_for(0, 1), q.parked_for(0, 2)), (3, 0, 3));
        while let Some(r) = q.pop_due(t0) {
            assert_eq!(assignment(r.opaque), (0, 2));
        }
    }
}
