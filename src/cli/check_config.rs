//! `check-config`: load a config, compile what `run` would, print a summary.

use anyhow::Context;
use clap::Args;
use envelope_router::config::{is_secret_property, Config};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct CheckConfigArgs {
    /// The YAML config.
    #[arg(short, long, env = "ENVELOPE_ROUTER_CONFIG")]
    config: PathBuf,
}

pub fn check_config(args: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&args.config)?;
    print_summary(&cfg)?;
    Ok(ExitCode::SUCCESS)
}

/// Compiles everything `run` would and prints a summary.
fn print_summary(cfg: &Config) -> anyhow::Result<()> {
    use envelope_router::pipeline::route::Routes;
    use envelope_router::pipeline::template::Template;
    let subject =
        Template::parse(&cfg.schema.subject_template).context("schema.subject_template")?;
    Routes::new(
        &cfg.routes,
        cfg.default_route,
        &cfg.output.topic_template,
        Some(subject),
    )?;
    if let Some(file) = &cfg.schema.registry.file {
        envelope_router::registry::FileRegistry::load(file)?;
    }
    println!("config OK");
    println!(
        "  input topics: {:?} (group {})",
        cfg.input.topics, cfg.input.group_id
    );
    println!(
        "  routes: {} rules, default {:?}",
        cfg.routes.len(),
        cfg.default_route
    );
    println!("  dead letters: {}", cfg.dead_letter.topic);
    println!(
        "  schema: {:?} via {}",
        cfg.schema.mode,
        cfg.schema.registry.url.clone().unwrap_or_else(|| format!(
            "file {}",
            cfg.schema
                .registry
                .file
                .as_ref()
                .map_or(String::new(), |f| f.display().to_string())
        ))
    );
    println!(
        "  dedup: {:?} window, {} ids max",
        cfg.dedup.window, cfg.dedup.max_entries
    );
    for (k, v) in cfg.client_properties(&Default::default()) {
        let shown = if is_secret_property(&k) {
            "<redacted>".to_owned()
        } else {
            v
        };
        println!("  kafka {k} = {shown}");
    }
    Ok(())
}
