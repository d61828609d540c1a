//! This process's CPU time, peak resident memory and per-thread CPU and
//! context switches, from `/proc/self` (Linux), for the benchmark summaries.

use serde::{Deserialize, Serialize};

/// CPU seconds (user + system) used so far.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, in clock ticks.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks_per_second())
}

/// Peak resident set size in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time and context switches of the threads of one name (librdkafka
/// names its threads `rdk:main`, `rdk:broker<id>`; a producer's and a
/// consumer's threads to one broker share a name and are summed).
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
    #[serde(default)]
    pub faults: u64,
}

/// This process's live threads grouped by name, most CPU first (the
/// process's first thread as `main`). Threads
/// that already exited are not counted (their time is only in
/// [`cpu_seconds`]).
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

/// One task's reading from its `stat` and `status` files.
fn parse_task(stat: &str, status: &str) -> Option<ThreadGroup> {
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let faults = fields.get(7)?.parse().ok()?;
    let count = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(ThreadGroup {
        name: name.to_owned(),
        threads: 1,
        cpu_s: ticks / clock_ticks_per_second(),
        waits: count("voluntary_ctxt_switches:"),
        preempted: count("nonvoluntary_ctxt_switches:"),
        faults,
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
        // Test threads are not the first one; `main` is the harness's.
        assert_eq!(threads.iter().filter(|t| t.name == "main").count(), 1);
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
