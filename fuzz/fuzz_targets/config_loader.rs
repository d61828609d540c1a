//! The config loader on arbitrary text: interpolation, YAML parsing, the
//! cross-field checks, then template and route compilation (what
//! `check-config` does). Any input must give a config or an error: a panic,
//! a hang or runaway memory (libFuzzer's -timeout / -rss_limit_mb) is a bug.
#![no_main]

use envelope_router::config::Config;
use envelope_router::pipeline::route::Routes;
use envelope_router::pipeline::template::Template;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |v: &str| (v.len() % 2 == 0).then(|| "x".repeat(v.len()));
    let Ok(cfg) = Config::from_yaml(text, std::path::Path::new("fuzz.yaml"), env) else {
        return;
    };
    let Ok(subject) = Template::parse(&cfg.schema.subject_template) else {
        return;
    };
    let _ = Routes::new(
        &cfg.routes,
        cfg.default_route,
        &cfg.output.topic_template,
        Some(subject),
    );
});
