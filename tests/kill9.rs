//! `kill -9` twenty times at random points while a producer writes a stream
//! of unique records: the `envelope-router run` binary against the mock
//! cluster, restarted after each kill. Nothing may be lost, and with the
//! dedup changelog a record read again after a crash is dropped unless its
//! publish was acknowledged in the last moments before the kill (at most 2%
//! of the stream). `KILL9_CHANGELOG=off` runs the same without the
//! changelog, for the "before" figure (not asserted).

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OUTPUT: &str = "prod.glutton.1234.match-v1";
const KILLS: usize = 20;
/// Records per second the producer writes while the router is killed.
const RATE: usize = 1000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Router {
    child: Child,
    port: u16,
}

impl Router {
    fn start(config: &std::path::Path, port: u16) -> Router {
        let child = Command::new(env!("CARGO_BIN_EXE_envelope-router"))
            .args(["run", "--config"])
            .arg(config)
            .env("METRICS_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Router { child, port }
    }

    /// A counter from the router's /metrics (0 while it is not serving).
    fn metric(&self, name: &str) -> f64 {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return 0.0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
        if std::io::Write::write_all(&mut s, req.as_bytes()).is_err() {
            return 0.0;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let mut log = String::new();
        let _ = self.child.stderr.as_mut().unwrap().read_to_string(&mut log);
        log
    }
}

#[test]
fn kill9_twenty_times_loses_nothing_and_rarely_publishes_twice() {
    let changelog = std::env::var("KILL9_CHANGELOG").as_deref() != Ok("off");
    let kafka = cluster(4);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let dir = std::env::temp_dir().join(format!("er-kill9-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("router.yaml");
    std::fs::write(
        &config,
        binary_config_yaml(
            &bootstrap,
            "kill9",
            &registry.url,
            "127.0.0.1:${METRICS_PORT}",
            &format!("dedup: {{ changelog: {{ enabled: {changelog} }} }}"),
        ),
    )
    .unwrap();

    // The stream: unique records at RATE per second until the kills end.
    let done = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (bootstrap, done, produced) = (bootstrap.clone(), done.clone(), produced.clone());
        std::thread::spawn(move || {
            let tick = Duration::from_millis(100);
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                produce(&bootstrap, "raw", &match_inputs(RATE / 10, 64));
                produced.fetch_add(RATE / 10, Ordering::Relaxed);
                std::thread::sleep(tick.saturating_sub(started.elapsed()));
            }
        })
    };

    // Kill points from a fixed-seed xorshift: random, and the same every run.
    let mut seed = 0x006b_696c_6c39_u64;
    let mut pause_ms = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        50 + seed % 1450
    };
    let test_deadline = Instant::now()
        + Duration::from_secs(
            std::env::var("KILL9_DEADLINE")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(300),
        );
    for kill in 0..KILLS {
        let router = Router::start(&config, free_port());
        // Kill it while it works: after its first record, at a random point.
        let first = router.metric("envelope_router_records_in_total");
        while router.metric("envelope_router_records_in_total") <= first {
            if Instant::now() >= test_deadline {
                panic!("restart {kill} never read a record\n{}", router.stop());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(pause_ms()));
        router.kill9();
    }
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let total = produced.load(Ordering::Relaxed);

    let router = Router::start(&config, free_port());
    wait_committed(&bootstrap, "kill9", "raw", total as i64);
    let log = router.stop();

    let mut ids: HashMap<Vec<u8>, usize> = HashMap::new();
    for_each_record(&bootstrap, OUTPUT, |m| {
        *ids.entry(rdkafka::Message::key(m).unwrap_or_default().to_vec())
            .or_insert(0) += 1;
    });
    let duplicates: usize = ids.values().map(|n| n - 1).sum();
    let lost = total - ids.len();
    let share = duplicates as f64 / total as f64;
    eprintln!(
        "kill -9 x{KILLS}, changelog {changelog}: {total} unique records, lost {lost}, duplicates {duplicates} ({:.2}%)",
        share * 100.0
    );
    assert_eq!(lost, 0, "records lost\n{log}");
    if changelog {
        assert!(share <= 0.02, "{duplicates} duplicates of {total}\n{log}");
    }
}
