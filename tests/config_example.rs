//! `config.example.yaml` documents every option: it loads as-is, and every
//! field of the config structs appears in it, as a key or as a commented-out
//! example (`# key:`), so the docs and the code cannot drift apart.

use envelope_router::config::Config;
use serde_json::Value;
use std::path::Path;

const EXAMPLE: &str = include_str!("../config.example.yaml");

fn paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(p.clone());
                // librdkafka property maps are free-form: their keys are not fields.
                if p != "kafka" && p != "kafka.consumer" && p != "kafka.producer" {
                    paths(v, &p, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                paths(item, prefix, out);
            }
        }
        _ => {}
    }
}

/// Whether `path` exists in `v`; through arrays, in any element.
fn has(v: &Value, path: &[&str]) -> bool {
    match (v, path) {
        (_, []) => true,
        (Value::Object(m), [key, rest @ ..]) => m.get(*key).is_some_and(|v| has(v, rest)),
        (Value::Array(items), _) => items.iter().any(|i| has(i, path)),
        _ => false,
    }
}

#[test]
fn the_example_loads_and_documents_every_field() {
    let cfg = Config::from_yaml(EXAMPLE, Path::new("config.example.yaml"), |_| None)
        .expect("config.example.yaml must load with no environment set");
    let serialized = serde_json::to_value(&cfg).unwrap();
    let example: Value = serde_saphyr::from_str(EXAMPLE).unwrap();
    let mut fields = Vec::new();
    paths(&serialized, "", &mut fields);
    assert!(
        fields.len() > 30,
        "expected the whole config tree, got {fields:?}"
    );
    let undocumented: Vec<_> = fields
        .iter()
        .filter(|p| !p.starts_with("kafka."))
        .filter(|p| {
            let leaf = p.rsplit('.').next().unwrap();
            let path: Vec<&str> = p.split('.').collect();
            !has(&example, &path) && !EXAMPLE.contains(&format!("# {leaf}:"))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "config fields without an example in config.example.yaml: {undocumented:?}"
    );
}

#[test]
fn the_example_routes_compile() {
    use envelope_router::pipeline::route::Routes;
    let cfg = Config::from_yaml(EXAMPLE, Path::new("config.example.yaml"), |_| None).unwrap();
    Routes::new(
        &cfg.routes,
        cfg.default_route,
        &cfg.output.topic_template,
        None,
    )
    .unwrap();
}
