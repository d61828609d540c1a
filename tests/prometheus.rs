//! The monitoring kit against the real thing: a Prometheus server (Debian's
//! `prometheus` package) scrapes the router binary, loads
//! `deploy/prometheus/alerts.yaml`, and the test reads the router's series
//! back through Prometheus's HTTP API, then runs every query of the Grafana
//! dashboard (`deploy/grafana/envelope-router.json`) there.
//!
//! The scraped exposition must also pass `promtool check metrics`.
//!
//! Ignored by default (it needs `prometheus` and `promtool` on the PATH,
//! or `PROMETHEUS` and `PROMTOOL` naming them); `scripts/test.sh` installs
//! them and runs this with `--ignored`.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from Prometheus; the `data` of a successful answer.
fn api(base: &str, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let params: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let url = format!("{base}{path}?{}", params.join("&"));
    let text = runtime()
        .block_on(async { reqwest::get(&url).await?.text().await })
        .map_err(|e| format!("{url}: {e}"))?;
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))?;
    if body["status"] != "success" {
        return Err(format!("{url} {query:?}: {body}"));
    }
    Ok(body["data"].clone())
}

/// The result vector of an instant query.
fn query(base: &str, promql: &str) -> Result<Vec<serde_json::Value>, String> {
    let data = api(base, "/api/v1/query", &[("query", promql)])?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Every `envelope_router_*` metric name in `text`, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("envelope_router_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_owned());
        rest = &tail[end..];
    }
    out
}

/// The text of every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
#[ignore = "needs the prometheus server: scripts/test.sh installs it and runs this"]
fn prometheus_scrapes_the_router_and_runs_the_kit() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let alerts = root.join("deploy/prometheus/alerts.yaml");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/envelope-router.json")).unwrap(),
    )
    .unwrap();

    // Every metric the kit names is one the router emits (a typo would
    // otherwise be an alert that never fires, or an empty panel).
    let mut src = String::new();
    sources(&root.join("src"), &mut src);
    let emitted = metric_names(&src);
    let kit = std::fs::read_to_string(&alerts).unwrap() + &dashboard.to_string();
    for name in metric_names(&kit) {
        assert!(
            emitted.contains(&name),
            "{name} is not a metric of the router"
        );
    }

    // A router with traffic of every kind: published, duplicate, unknown
    // schema, malformed.
    let kafka = cluster(2);
    let bootstrap = kafka.bootstrap_servers();
    let registry = TestRegistry::start(&[(1, &[])]);
    let mut inputs = match_inputs(200, 64);
    let dups: Vec<Input> = inputs[..20]
        .iter()
        .map(|i| Input {
            key: i.key.clone(),
            value: i.value.clone(),
            headers: i.headers.clone(),
        })
        .collect();
    inputs.extend(dups);
    inputs.extend((0..20).map(|i| {
        Input::envelope(
            &stream("prod", "glutton", "late", 9).build().unwrap(),
            &[i; 16],
        )
    }));
    inputs.extend((0..10u8).map(|i| Input::raw(b"k", &[0xff, i, 0xff])));
    let total = inputs.len();
    produce(&bootstrap, "raw", &inputs);

    let dir = std::env::temp_dir().join(format!("er-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("router.yaml");
    std::fs::write(
        &config,
        binary_config_yaml(&bootstrap, "prometheus", &registry.url, "127.0.0.1:0", ""),
    )
    .unwrap();
    let mut router = Killed(
        Command::new(env!("CARGO_BIN_EXE_envelope-router"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The metrics address is in the start-up log.
    let mut log = BufReader::new(router.0.stderr.take().unwrap()).lines();
    let metrics_addr = loop {
        let line = log.next().expect("router log ended").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(addr) = v["fields"]["addr"].as_str() {
            break addr.to_owned();
        }
    };
    std::thread::spawn(move || log.for_each(drop)); // keep the pipe drained

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            r#"
global: {{ scrape_interval: 1s, evaluation_interval: 1s }}
rule_files: ["{}"]
scrape_configs:
  - job_name: envelope-router
    static_configs: [{{ targets: ["{metrics_addr}"] }}]
"#,
            alerts.display()
        ),
    )
    .unwrap();
    let prometheus = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let _server = Killed(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {prometheus}: {e} (apt install prometheus)")),
    );

    // The router's series, read back through Prometheus.
    let read = |promql: &str| -> Option<f64> {
        let r = query(&base, promql).ok()?;
        r.first()?["value"][1].as_str()?.parse().ok()
    };
    wait_for("up == 1", Duration::from_secs(60), || {
        (read(r#"up{job="envelope-router"}"#)? == 1.0).then_some(())
    });
    wait_for("every record counted", Duration::from_secs(60), || {
        (read("sum(envelope_router_records_in_total)")? == total as f64).then_some(())
    });

    // The exposition itself passes promtool's lint: every family has its
    // help text and type, histograms are well formed.
    let text = runtime()
        .block_on(async {
            reqwest::get(format!("http://{metrics_addr}/metrics"))
                .await?
                .text()
                .await
        })
        .unwrap();
    assert!(
        text.contains("envelope_router_end_to_end_seconds_bucket"),
        "{text}"
    );
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {promtool}: {e} (apt install prometheus)"));
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let by_reason = |metric: &str, reason: &str| {
        read(&format!(r#"sum({metric}{{reason="{reason}"}})"#)).unwrap_or(0.0)
    };
    assert_eq!(
        by_reason("envelope_router_dropped_total", "duplicate"),
        20.0
    );
    assert_eq!(
        by_reason("envelope_router_dead_letters_total", "unknown_schema"),
        20.0
    );
    assert_eq!(
        by_reason("envelope_router_dead_letters_total", "malformed"),
        10.0
    );
    assert_eq!(
        read(r#"sum(envelope_router_records_out_total{topic="prod.glutton.1234.match-v1"})"#),
        Some(200.0)
    );

    // The alert rules loaded and evaluate without errors.
    let expected: BTreeSet<String> = alert_names(&alerts);
    let rules = wait_for("rules evaluated", Duration::from_secs(30), || {
        let data = api(&base, "/api/v1/rules", &[]).ok()?;
        let rules: Vec<serde_json::Value> = data["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        (evaluated && !rules.is_empty()).then_some(rules)
    });
    let loaded: BTreeSet<String> = rules
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(loaded, expected);
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }

    // Every dashboard query runs; those over series this traffic makes return data.
    std::thread::sleep(Duration::from_secs(3)); // a few scrapes for rate()
    let must_have_data = [
        "Records in / s",
        "Records out / s by topic (top 10)",
        "Dead letters / s by reason",
        "Dropped / s (duplicates) and filtered / s by route",
        "Paused partitions",
        "End-to-end latency p50 / p99 (read → acknowledged)",
        "Schema registry: requests p99, errors / s",
        "Dedup entries vs budget",
        "Rebalances: assignments and revoke time p99",
    ];
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 12);
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let mut rows = 0;
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$job", "envelope-router")
                .replace("$instance", ".*");
            rows += query(&base, &expr)
                .unwrap_or_else(|e| panic!("panel {title:?}: {e}"))
                .len();
        }
        if must_have_data.contains(&title) {
            assert!(rows > 0, "panel {title:?} shows nothing");
        }
    }
    for name in must_have_data {
        assert!(
            panels.iter().any(|p| p["title"] == name),
            "no panel {name:?}"
        );
    }
    drop(router);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `alert:` names of a rules file.
fn alert_names(rules: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(rules)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}
