//! `check-config`: load a config, compile what `run` would, print a summary.

use clap::Args;
use envelope_router::config::{is_secret_property, Config};
use envelope_router::kafka::reload::compile;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct CheckConfigArgs {
    /// The YAML config.
    #[arg(short, long, env = "ENVELOPE_ROUTER_CONFIG")]
    config: PathBuf,
}

pub fn check_config(args: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&args.config)?;
    print_summary(&cfg, &args.config)?;
    Ok(ExitCode::SUCCESS)
}

/// Compiles everything `run` would (as a reload does) and prints a summary.
fn print_summary(cfg: &Config, path: &Path) -> anyhow::Result<()> {
    compile(cfg, path).map_err(anyhow::Error::msg)?;
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
