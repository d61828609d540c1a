//! The `envelope-router run` binary as a separate process against the mock
//! cluster (it listens on localhost): SIGTERM makes it flush, commit and
//! exit 0, with the group's committed offsets covering every record;
//! SIGHUP before it, and an edit of the watched file, reload the config
//! and keep it running.

mod common;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigterm_flushes_commits_and_exits_cleanly() {
    let kafka = cluster(2);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let inputs = match_inputs(20, 128);
    produce(&bootstrap, "raw", &inputs);

    let dir = std::env::temp_dir().join(format!("er-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("router.yaml");
    std::fs::write(
        &config,
        binary_config_yaml(&bootstrap, "sigterm", &registry.url, "127.0.0.1:0", ""),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_envelope-router"))
        .args(["run", "--watch-config", "200ms", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while read_topic(&bootstrap, "prod.glutton.1234.match-v1").len() < 20 {
        assert!(
            Instant::now() < deadline,
            "router did not publish the records"
        );
    }
    // SIGHUP reloads the (unchanged) config and keeps running.
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop it"
    );
    // --watch-config: an edit of the file reloads it too.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("# edited\n");
    std::fs::write(&config, text).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "router did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(exit.success(), "exit {exit:?}\n{log}");
    assert!(
        log.contains("signal received") && log.contains("router stopped"),
        "{log}"
    );
    assert!(
        log.contains("SIGHUP: reloading the config")
            && log.contains("config file changed: reloading")
            && log.matches("config reloaded").count() == 2,
        "{log}"
    );
    assert!(log.lines().all(|l| l.starts_with('{')), "json logs: {log}");

    // The group's committed offsets cover every record.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "sigterm")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("raw", 0);
    tpl.add_partition("raw", 1);
    let committed = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            other => panic!("partition {} not committed: {other:?}", e.partition()),
        })
        .sum();
    assert_eq!(total, 20);
    let _ = std::fs::remove_dir_all(&dir);
}
