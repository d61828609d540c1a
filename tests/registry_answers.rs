//! What the router makes of the schema registry's answers: only the
//! registry's own "not found" is a verdict, a subject mismatch is checked
//! against a fresh copy before it becomes one, and after a long outage
//! output resumes soon after the registry does, without one request per
//! waiting id while it is down.

mod common;

use common::*;
use envelope_router::config::Config;
use envelope_router::pipeline::Reason;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const OUT: &str = "prod.glutton.1234.match-v1";

/// The settings a new user gets for the registry (no backoff overrides).
fn default_registry_config(bootstrap: &str, group: &str, registry: &str, extra: &str) -> Config {
    let yaml = format!(
        r#"
kafka: {{ bootstrap.servers: "{bootstrap}", consumer: {{ session.timeout.ms: 6000 }} }}
input: {{ topics: [raw], group_id: {group} }}
output: {{ create_topics: broker }}
dead_letter: {{ topic: dlq }}
schema:
  registry: {{ url: "{registry}" }}
{extra}
"#
    );
    Config::from_yaml(&yaml, std::path::Path::new("test.yaml"), |_| None).unwrap()
}

#[test]
fn a_404_without_confluents_code_is_an_outage_not_a_verdict() {
    init_logs();
    let kafka = cluster(1);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    registry.health.store(GATEWAY_404, Ordering::Relaxed);
    let cfg = config(&bootstrap, "gateway", &registry.url, "");
    produce(&bootstrap, "raw", &match_inputs(20, 64));
    let router = RunningRouter::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry.requests.load(Ordering::Relaxed) < 3 {
        assert!(
            Instant::now() < deadline,
            "the router never asked the registry"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        router.ctl.stats.reason(Reason::UnknownSchema),
        0,
        "a gateway's 404 is not the registry saying the id does not exist"
    );
    registry.health.store(UP, Ordering::Relaxed);
    router.wait_settled(20, Duration::from_secs(30));
    router.stop();
    assert_eq!(read_topic(&bootstrap, OUT).len(), 20);
    assert!(read_topic(&bootstrap, "dlq").is_empty());
}

/// Schema 1 is registered under `other` only; the records need
/// `match-v1`. The first one is dead-lettered; then the same schema is
/// registered under `match-v1` too (its id does not change). A record sent
/// after `unknown_ttl` makes the router fetch the id again and publish.
#[test]
fn a_subject_mismatch_is_checked_again_once_the_cached_copy_is_old() {
    let kafka = cluster(1);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &["other"])]);
    let cfg = config(&bootstrap, "subjects", &registry.url, "");
    let mut cfg = cfg;
    cfg.schema.mode = envelope_router::pipeline::schema::SchemaMode::Subject;
    cfg.schema.subject_template = "{category}-v{version}".into();
    cfg.schema.registry.unknown_ttl = Duration::from_secs(1);
    produce(&bootstrap, "raw", &match_inputs(1, 64));
    let router = RunningRouter::start(&cfg);
    router.wait_settled(1, Duration::from_secs(30));
    assert_eq!(router.ctl.stats.reason(Reason::SchemaSubjectMismatch), 1);
    registry.register(1, "match-v1");
    std::thread::sleep(Duration::from_millis(1200));
    produce(&bootstrap, "raw", &match_inputs(5, 64));
    router.wait_settled(6, Duration::from_secs(30));
    let mismatches = router.ctl.stats.reason(Reason::SchemaSubjectMismatch);
    router.stop();
    assert_eq!(mismatches, 1, "the fresh copy lists the new subject");
    assert_eq!(read_topic(&bootstrap, OUT).len(), 5);
}

/// The registry is down for 8 s while records of three unknown-to-the-cache
/// ids wait, with the default backoff. Once it is back, output resumes
/// within a second (before: the backoff had grown towards its 10 s cap),
/// and while it was down it saw one probe at a time, not one retry loop
/// per id.
#[test]
fn output_resumes_within_a_second_of_the_registry_after_an_outage() {
    init_logs();
    let kafka = cluster(3);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[]), (2, &[]), (3, &[])]);
    registry.health.store(DOWN, Ordering::Relaxed);
    let cfg = default_registry_config(&bootstrap, "outage", &registry.url, "");
    let inputs: Vec<Input> = (1..=3)
        .flat_map(|id| {
            (0..10).map(move |_| {
                Input::envelope(
                    &stream("prod", "glutton", "match", id).build().unwrap(),
                    b"p",
                )
            })
        })
        .collect();
    produce(&bootstrap, "raw", &inputs);
    let router = RunningRouter::start(&cfg);
    std::thread::sleep(Duration::from_secs(8));
    let during = registry.requests.load(Ordering::Relaxed);
    assert_eq!(
        router.ctl.stats.records_settled(),
        0,
        "nothing settles during the outage"
    );
    registry.health.store(UP, Ordering::Relaxed);
    let back = Instant::now();
    router.wait_settled(30, Duration::from_secs(30));
    let resumed = back.elapsed();
    router.stop();
    eprintln!("registry requests during an 8 s outage: {during}; all settled {resumed:?} after it returned");
    // One probe at a time, at most every 100 ms doubling to 500 ms: ~20 in
    // 8 s. Three independent retry loops would make three times that.
    assert!(
        during <= 30,
        "{during} requests while the registry was down"
    );
    assert!(
        resumed < Duration::from_millis(1500),
        "output resumed {resumed:?} after the registry returned"
    );
    assert_eq!(read_topic(&bootstrap, OUT).len(), 30);
}
