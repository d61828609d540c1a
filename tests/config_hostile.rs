//! Hostile config files: YAML bombs, deep nesting, huge scalars, bad
//! interpolation. Each must end in a precise error (never a panic, a hang or
//! runaway memory). A watchdog turns a hang into a failure instead of a
//! stuck CI job; it does not measure speed.

use envelope_router::config::{Config, ConfigError};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

const MINIMAL: &str = r#"
kafka: { bootstrap.servers: "localhost:9092" }
input: { topics: [raw] }
schema: { registry: { url: "http://localhost:8081" } }
"#;

/// Loads `text` on a thread; fails the test if that takes over 20 s.
fn load(text: String) -> Result<Config, ConfigError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Config::from_yaml(&text, Path::new("hostile.yaml"), |_| {
            None
        }));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the loader hung (or panicked) on hostile input")
}

fn error_of(text: String) -> String {
    match load(text) {
        Ok(_) => panic!("a hostile config was accepted"),
        Err(e) => {
            let e = e.to_string();
            eprintln!("{}", &e[..e.len().min(300)]);
            e
        }
    }
}

#[test]
fn the_minimal_config_loads() {
    load(MINIMAL.to_owned()).unwrap();
}

#[test]
fn billion_laughs_is_refused() {
    let mut yaml = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        yaml.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 9].join(",")));
    }
    yaml.push_str(MINIMAL);
    yaml.push_str("routes: *a9\n");
    let e = error_of(yaml);
    assert!(e.starts_with("hostile.yaml:"), "{e}");
}

#[test]
fn deep_nesting_is_refused() {
    for open in ["[", "{a: "] {
        let depth = 100_000;
        let close = if open == "[" { "]" } else { "}" };
        let yaml = format!(
            "{MINIMAL}routes: {}{}\n",
            open.repeat(depth),
            close.repeat(depth)
        );
        let e = error_of(yaml);
        assert!(e.starts_with("hostile.yaml:"), "{e}");
    }
}

#[test]
fn deep_block_nesting_is_refused() {
    let mut yaml = String::from(MINIMAL);
    yaml.push_str("extra:\n");
    for depth in 1..5_000 {
        yaml.push_str(&" ".repeat(depth));
        yaml.push_str("k:\n");
    }
    let e = error_of(yaml);
    assert!(e.starts_with("hostile.yaml:"), "{e}");
}

#[test]
fn unknown_fields_and_wrong_shapes_name_the_place() {
    let e = error_of(format!("{MINIMAL}dedup: {{ windw: 10m }}\n"));
    assert!(e.contains("windw"), "{e}");
    let e = error_of(format!("{MINIMAL}dedup: {{ max_entries: lots }}\n"));
    assert!(e.contains("line"), "names a line: {e}");
}

#[test]
fn huge_scalars_and_keys_do_not_break_the_loader() {
    let big = "x".repeat(8 << 20);
    let e = error_of(format!("{MINIMAL}{big}: 1\n"));
    assert!(e.starts_with("hostile.yaml:"), "{}", &e[..e.len().min(200)]);
    // A huge but valid value is accepted as data: the checks then refuse it.
    let e = error_of(
        MINIMAL
            .replace("[raw]", &format!("[\"{big}\", raw]"))
            .replace("input: {", "dead_letter: { topic: raw }\ninput: {"),
    );
    assert!(
        e.contains("dead_letter.topic"),
        "{}",
        &e[..e.len().min(200)]
    );
}

#[test]
fn interpolation_errors_point_at_the_variable() {
    let e = error_of(format!("{MINIMAL}log: {{ level: \"${{NOPE}}\" }}\n"));
    assert!(e.contains("NOPE") && e.contains(":5:16:"), "{e}");
    // An unterminated ${ is left as text, not an error or a loop.
    load(MINIMAL.replace("raw", "\"raw${\"")).unwrap();
}

#[test]
fn hostile_bytes_are_errors() {
    for text in [
        "\u{feff}\u{0}",
        "---\n...\n---\n",
        "!!binary AAAA",
        "? [a, b]\n: c\n",
        "*undefined_alias\n",
        "&a [*a]\n",
        "%YAML 9.9\n---\na: 1\n",
        "a: !!python/object:os.system ls\n",
        "\t\tkafka: 1",
    ] {
        let e = error_of(text.to_owned());
        assert!(e.starts_with("hostile.yaml:"), "{text:?}: {e}");
    }
}
