//! Hot reload: new routes take effect mid-stream at a record boundary,
//! without a rebalance and without losing or repeating a record; an
//! invalid file changes nothing and says where it is wrong; restart-only
//! changes are named.

mod common;

use common::*;
use envelope_router::config::Config;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn yaml(bootstrap: &str, registry: &str, group: &str, route_topic: &str) -> String {
    let routes = format!(
        "routes:\n  - name: matches\n    match: {{ category: match }}\n    topic: \"{route_topic}\"\n"
    );
    config_yaml(bootstrap, group, registry, &routes)
}

/// The sequence number a record of this test carries in its payload's last 4 bytes.
fn sequence(value: &[u8]) -> u32 {
    u32::from_le_bytes(value[value.len() - 4..].try_into().unwrap())
}

#[test]
fn routes_switch_at_a_record_boundary_without_a_rebalance() {
    init_logs();
    let kafka = cluster(1);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let dir = std::env::temp_dir().join(format!("reload-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("router.yaml");
    let write = |text: &str| std::fs::write(&path, text).unwrap();
    write(&yaml(
        &bootstrap,
        &registry.url,
        "reload",
        "routes.old.{title}",
    ));
    let cfg = Config::load(&path).unwrap();
    let router = RunningRouter::start(&cfg);

    // One partition, so the input order is the record order: 40 batches of
    // 10 records, 50 ms apart, with the reload in the middle.
    let total = 400u32;
    let producer = {
        let bootstrap = bootstrap.clone();
        std::thread::spawn(move || {
            for batch in 0..total / 10 {
                let records: Vec<Input> = (batch * 10..batch * 10 + 10)
                    .map(|i| {
                        let h = stream("prod", "glutton", "match", 1).build().unwrap();
                        Input::envelope(&h, &i.to_le_bytes())
                    })
                    .collect();
                produce(&bootstrap, "raw", &records);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    router.wait_settled(u64::from(total) / 3, Duration::from_secs(60));
    let assignments = router.ctl.stats.assignments();
    assert!(assignments >= 1);

    // A new topic for the route, and a restart-only change (the group).
    write(&yaml(
        &bootstrap,
        &registry.url,
        "another-group",
        "routes.new.{title}",
    ));
    let reloaded = router.ctl.reload(&path).expect("a valid file reloads");
    assert_eq!(reloaded.generation, 1);
    assert_eq!(reloaded.restart_needed, vec!["input.group_id".to_owned()]);

    // An invalid file: refused with its location; the running routes stay.
    let broken = yaml(&bootstrap, &registry.url, "reload", "routes.{title");
    let line = 1 + broken
        .lines()
        .position(|l| l.contains("- name: matches"))
        .unwrap();
    write(&broken);
    let err = router.ctl.reload(&path).expect_err("an unclosed brace");
    assert!(
        err.starts_with(&format!("{}:{line}:5: route \"matches\"", path.display())),
        "names file:line:column: {err}"
    );
    // A value the config check refuses is located too.
    let mut zero_workers = yaml(&bootstrap, &registry.url, "reload", "routes.old.{title}");
    zero_workers.push_str("workers: 0\n");
    let line = zero_workers.lines().count();
    write(&zero_workers);
    let err = router.ctl.reload(&path).expect_err("no workers");
    assert!(
        err.starts_with(&format!("{}:{line}:1: workers is 0", path.display())),
        "{err}"
    );
    write("kafka: [unclosed");
    let err = router.ctl.reload(&path).expect_err("a YAML error");
    assert!(err.contains("line 1"), "{err}");
    assert_eq!(router.ctl.stats.config_reloads(), (1, 3));

    producer.join().unwrap();
    router.wait_settled(u64::from(total), Duration::from_secs(60));
    assert_eq!(
        router.ctl.stats.assignments(),
        assignments,
        "no rebalance: envelope_router_assignments_total did not move"
    );
    let stopped = router.ctl.shutdown.clone();
    router.stop();
    assert!(stopped.load(Ordering::Relaxed));

    let old: Vec<u32> = read_topic(&bootstrap, "routes.old.1234")
        .iter()
        .map(|o| sequence(&o.value))
        .collect();
    let new: Vec<u32> = read_topic(&bootstrap, "routes.new.1234")
        .iter()
        .map(|o| sequence(&o.value))
        .collect();
    assert!(
        !old.is_empty() && !new.is_empty(),
        "old {} new {}",
        old.len(),
        new.len()
    );
    // Every record once, the old topic a prefix of the input and the new
    // one the rest: the switch fell between two records.
    let boundary = *new.iter().min().unwrap();
    assert!(
        old.iter().all(|s| *s < boundary),
        "an old-route record after the switch"
    );
    assert_eq!(
        old.len() + new.len(),
        total as usize,
        "none lost or repeated"
    );
    let mut all: Vec<u32> = old.iter().chain(&new).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..total).collect::<Vec<_>>());
    assert!(read_topic(&bootstrap, "dlq").is_empty());
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}
