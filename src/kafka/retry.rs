//! Produces that failed and are sent again after a backoff; their input
//! partitions stay paused until nothing of theirs is left to resend.

use super::event_loop::{partition_of, Loop};
use rdkafka::producer::BaseRecord;
use std::collections::HashSet;
use std::time::Instant;

impl Loop<'_, '_> {
    /// Sends failed produces again once their backoff has passed; their
    /// input partitions stay paused until nothing is left to retry.
    pub(super) fn resend_due(&mut self) {
        if self.paused.is_empty() && self.shared.lock().retries.is_empty() {
            return; // the common case: nothing failed, nothing waits
        }
        let now = Instant::now();
        // Partitions with any record still to resend (due now or later)
        // stay paused; the due ones are sent below.
        let (due, stalled): (Vec<_>, HashSet<(String, i32)>) = {
            let mut state = self.shared.lock();
            let stalled = state
                .retries
                .iter()
                .filter_map(|r| partition_of(&state, r.opaque))
                .collect();
            let (due, waiting) = std::mem::take(&mut state.retries)
                .into_iter()
                .partition(|r| r.due <= now);
            state.retries = waiting;
            (due, stalled)
        };
        for r in due {
            let mut rec = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&r.topic, r.opaque)
                .payload(&r.payload);
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            if let Some(h) = r.headers {
                rec = rec.headers(h);
            }
            self.enqueue(rec);
        }
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
