//! Keeps per-record failure logs readable: when every record of a busy
//! partition fails the same way, one line per topic every few seconds says so,
//! with how many similar failures it stands for. Metrics still count each one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys remembered; past it the throttle starts over.
const MAX_KEYS: usize = 10_000;

/// At most one log line per key per `every`.
pub struct LogThrottle {
    every: Duration,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl LogThrottle {
    /// A throttle letting one line per key through every `every`.
    pub fn new(every: Duration) -> Self {
        LogThrottle {
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records one event for `key`. `Some(n)` means "log now": `n` similar
    /// events were held back since the last line for this key.
    pub fn hit(&self, key: &str) -> Option<u64> {
        self.hit_at(key, Instant::now())
    }

    fn hit_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_KEYS && !seen.contains_key(key) {
            seen.clear(); // keys are topics producers name: stay bounded
        }
        match seen.get_mut(key) {
            Some((last, held)) if now.duration_since(*last) < self.every => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let n = *held;
                *last = now;
                *held = 0;
                Some(n)
            }
            None => {
                seen.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_period_with_the_held_back_count() {
        let t = LogThrottle::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(t.hit_at("a", t0), Some(0));
        assert_eq!(t.hit_at("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(t.hit_at("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(t.hit_at("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(t.hit_at("a", t0 + Duration::from_secs(6)), Some(2));
        assert_eq!(t.hit_at("a", t0 + Duration::from_secs(7)), None);
    }
}
