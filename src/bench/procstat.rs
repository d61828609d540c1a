//! This process's CPU time, peak resident memory, and per-thread CPU,
//! context switches and page faults, from `/proc/self` (Linux), for the
//! benchmark summaries.

use serde::{Deserialize, Serialize};

/// CPU seconds (user + system) used so far.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    Some(StatFields::of(&stat)?.cpu_seconds())
}

/// The fields of a `stat` file after the parenthesised command name.
struct StatFields<'a>(Vec<&'a str>);

impl<'a> StatFields<'a> {
    fn of(stat: &'a str) -> Option<Self> {
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
        // utime and stime, the 14th and 15th fields overall.
        (fields.len() > 12).then_some(StatFields(fields))
    }

    /// utime + stime, in seconds (0 where a field does not parse).
    fn cpu_seconds(&self) -> f64 {
        (self.number(11) + self.number(12)) as f64 / clock_ticks_per_second()
    }

    fn number(&self, i: usize) -> u64 {
        self.0.get(i).and_then(|f| f.parse().ok()).unwrap_or(0)
    }
}

/// Peak resident set size in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(status_number(&status, "VmHWM:")? * 1024) // in kB
}

/// Resident set size now, in bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(status_number(&status, "VmRSS:")? * 1024) // in kB
}

/// The number after `key` in a `status` file (`VmHWM:  1234 kB`).
fn status_number(status: &str, key: &str) -> Option<u64> {
    let value = status.lines().find_map(|l| l.strip_prefix(key))?;
    value.split_whitespace().next()?.parse().ok()
}

/// CPU time, context switches and page faults of the threads of one name
/// (librdkafka names its threads `rdk:main`, `rdk:broker<id>`; a producer's
/// and a consumer's threads to one broker share a name and are summed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadGroup {
    /// The threads' name (`comm`).
    pub name: String,
    /// Threads of this name still alive at the reading.
    pub threads: u32,
    /// CPU seconds (user + system).
    pub cpu_s: f64,
    /// Times the threads gave up the CPU to wait (`voluntary_ctxt_switches`).
    pub waits: u64,
    /// Times the scheduler took the CPU from them (`nonvoluntary_ctxt_switches`).
    pub preempted: u64,
    /// Minor page faults (first touches of memory, copy-on-write).
    pub faults: u64,
}

/// This process's live threads grouped by name, most CPU first (the
/// process's first thread as `main`). Threads that already exited are not
/// counted (their time is only in [`cpu_seconds`]).
pub fn threads() -> Vec<ThreadGroup> {
    let mut groups: Vec<ThreadGroup> = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return groups;
    };
    let main_tid = std::process::id().to_string();
    for task in tasks.flatten() {
        let dir = task.path();
        let (Ok(stat), Ok(status)) = (
            std::fs::read_to_string(dir.join("stat")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue; // exited while being read
        };
        let Some(mut t) = parse_task(&stat, &status) else {
            continue;
        };
        if task.file_name().to_str() == Some(&main_tid) {
            // Named after the executable; in the router and the relays
            // it runs the (first) consume loop.
            t.name = "main".to_owned();
        }
        match groups.iter_mut().find(|g| g.name == t.name) {
            Some(g) => {
                g.threads += 1;
                g.cpu_s += t.cpu_s;
                g.waits += t.waits;
                g.preempted += t.preempted;
                g.faults += t.faults;
            }
            None => groups.push(t),
        }
    }
    groups.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
    groups
}

/// The process's CPU seconds and threads at one moment: where a benchmark
/// side's measured span starts (its first record), so start-up, the group
/// join and a dedup restore are not counted per record.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// [`cpu_seconds`] then.
    pub cpu_s: f64,
    /// [`threads`] then.
    pub threads: Vec<ThreadGroup>,
}

impl Reading {
    /// Reads the process now.
    pub fn now() -> Reading {
        Reading {
            cpu_s: cpu_seconds().unwrap_or(0.0),
            threads: threads(),
        }
    }

    /// The process's CPU seconds since this reading.
    pub fn cpu_since(&self) -> f64 {
        (cpu_seconds().unwrap_or(0.0) - self.cpu_s).max(0.0)
    }

    /// `later` less this reading, group by group (a group that started
    /// since counts whole; one whose threads exited may only shrink to 0),
    /// most CPU first.
    pub fn threads_since(&self, mut later: Vec<ThreadGroup>) -> Vec<ThreadGroup> {
        for g in &mut later {
            if let Some(s) = self.threads.iter().find(|s| s.name == g.name) {
                g.cpu_s = (g.cpu_s - s.cpu_s).max(0.0);
                g.waits = g.waits.saturating_sub(s.waits);
                g.preempted = g.preempted.saturating_sub(s.preempted);
                g.faults = g.faults.saturating_sub(s.faults);
            }
        }
        later.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
        later
    }
}

/// One task's reading from its `stat` and `status` files.
fn parse_task(stat: &str, status: &str) -> Option<ThreadGroup> {
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    let fields = StatFields::of(stat)?;
    let count = |key| status_number(status, key).unwrap_or(0);
    Some(ThreadGroup {
        name: name.to_owned(),
        threads: 1,
        cpu_s: fields.cpu_seconds(),
        waits: count("voluntary_ctxt_switches:"),
        preempted: count("nonvoluntary_ctxt_switches:"),
        faults: fields.number(7), // minflt, the 10th field
    })
}

/// `sysconf(_SC_CLK_TCK)` is 100 on every Linux architecture Rust targets
/// that this project runs on; reading it would need libc for one constant.
fn clock_ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed().as_millis() < 50 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(super::cpu_seconds().unwrap() > 0.0, "{x}");
        assert!(super::peak_rss_bytes().unwrap() > 1 << 20);
        let threads = super::threads();
        let total: f64 = threads.iter().map(|t| t.cpu_s).sum();
        assert!(total > 0.0, "{threads:?}");
        assert!(threads.iter().all(|t| t.threads >= 1 && !t.name.is_empty()));
        let start = super::Reading {
            cpu_s: 0.0,
            threads: threads.clone(),
        };
        let since = start.threads_since(threads.clone());
        assert!(
            since.iter().all(|t| t.cpu_s == 0.0 && t.faults == 0),
            "{since:?}"
        );
        assert!(super::Reading::default().cpu_since() > 0.0);
        // Test threads are not the first one; `main` is the harness's.
        assert_eq!(threads.iter().filter(|t| t.name == "main").count(), 1);
    }

    #[test]
    fn a_reading_is_subtracted_group_by_group() {
        let group = |name: &str, cpu_s, faults| super::ThreadGroup {
            name: name.to_owned(),
            threads: 1,
            cpu_s,
            faults,
            ..Default::default()
        };
        let start = super::Reading {
            cpu_s: 1.0,
            threads: vec![group("main", 1.0, 100), group("gone", 5.0, 9)],
        };
        let since = start.threads_since(vec![group("rdk:main", 0.5, 7), group("main", 3.0, 40)]);
        assert_eq!(
            since,
            vec![group("main", 2.0, 0), group("rdk:main", 0.5, 7)]
        );
    }

    #[test]
    fn parses_a_task_whose_name_has_spaces_and_parentheses() {
        let stat = "4242 (rdk:broker (1)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n";
        let t = super::parse_task(stat, status).unwrap();
        assert_eq!(t.name, "rdk:broker (1)");
        assert_eq!(t.cpu_s, 3.0, "250 + 50 ticks at 100 per second");
        assert_eq!((t.waits, t.preempted), (1234, 56));
        assert_eq!(t.faults, 7, "minflt, the 10th field");
    }
}
