//! Hot reload: a running router takes new routes, templates and schema
//! settings ([`LIVE_SETTINGS`]) from its config file on SIGHUP (or when the
//! file changes), without leaving the consumer group.
//!
//! A reload parses and checks the file exactly as `check-config` does
//! ([`compile`]). If it is valid, its live settings become the current
//! config and its generation moves on; each consume loop sees the new
//! generation at the start of its next turn and swaps its pipeline there,
//! between two records. Dedup windows, settlement ledgers, in-flight
//! records and the assignment are untouched. Settings that need a restart
//! are named in the log and counted in `envelope_router_config_restart_pending`.
//! An invalid file changes nothing; its error (with file:line:column) is
//! logged and `envelope_router_config_reloads_total{result="invalid"}` counts it.

use super::RunControl;
use crate::config::{locate, Config, LIVE_SETTINGS};
use crate::pipeline::route::Routes;
use crate::pipeline::schema::SchemaMode;
use crate::pipeline::template::Template;
use crate::pipeline::PipelineConfig;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The config in effect and its generation, shared by the loops.
#[derive(Default)]
pub struct LiveConfig {
    generation: AtomicU64,
    current: Mutex<Option<Arc<Config>>>,
}

impl LiveConfig {
    /// Sets the config the router started with (generation 0).
    pub fn install(&self, cfg: &Config) {
        *self.lock() = Some(Arc::new(cfg.clone()));
    }

    /// Moves on each applied reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The config in effect.
    pub fn current(&self) -> Option<Arc<Config>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Config>>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an applied reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The new generation.
    pub generation: u64,
    /// Restart-only settings whose new values are not in effect.
    pub restart_needed: Vec<String>,
}

/// Compiles what `run` needs from a config, as `check-config` does: the
/// subject template, the routes with their topic templates, and the file
/// registry if there is one. Errors name `path`, and the route's line and
/// column when the error is about a route.
pub fn compile(cfg: &Config, path: &Path) -> Result<PipelineConfig, String> {
    let at = |route: Option<&str>| {
        let found = route.and_then(|r| {
            let text = std::fs::read_to_string(path).ok()?;
            locate(&text, "name", r)
        });
        match found {
            Some((line, column)) => format!("{}:{line}:{column}", path.display()),
            None => path.display().to_string(),
        }
    };
    let subject = Template::parse(&cfg.schema.subject_template)
        .map_err(|e| format!("{}: schema.subject_template: {e}", at(None)))?;
    let routes = Routes::new(
        &cfg.routes,
        cfg.default_route,
        &cfg.output.topic_template,
        (cfg.schema.mode == SchemaMode::Subject).then_some(subject),
    )
    .map_err(|e| format!("{}: {e}", at(e.route())))?;
    if let Some(file) = &cfg.schema.registry.file {
        crate::registry::FileRegistry::load(file)
            .map_err(|e| format!("{}: schema.registry.file: {e:#}", at(None)))?;
    }
    Ok(PipelineConfig {
        routes,
        schema_mode: cfg.schema.mode,
        max_record_bytes: cfg.output.max_record_bytes,
    })
}

impl RunControl {
    /// Reloads the config file at `path` into the running router. An
    /// invalid file leaves everything as it was and returns its error.
    pub fn reload(&self, path: &Path) -> Result<Reloaded, String> {
        let result = self.try_reload(path);
        match &result {
            Ok(r) => {
                self.stats.config_reload(true, !r.restart_needed.is_empty());
                if r.restart_needed.is_empty() {
                    tracing::info!(generation = r.generation, live = ?LIVE_SETTINGS, "config reloaded");
                } else {
                    tracing::warn!(
                        generation = r.generation,
                        restart_needed = ?r.restart_needed,
                        "config reloaded; these settings changed but take effect only after a restart"
                    );
                }
            }
            Err(e) => {
                self.stats.config_reload(false, false);
                tracing::error!(error = %e, "config reload refused; the running config stays");
            }
        }
        result
    }

    fn try_reload(&self, path: &Path) -> Result<Reloaded, String> {
        let new = Config::load(path).map_err(|e| e.to_string())?;
        compile(&new, path)?;
        let live = &self.live;
        let mut current = live.lock();
        let running = current
            .as_ref()
            .ok_or("the router has not started yet")?
            .clone();
        let restart_needed = running.restart_only_changes(&new);
        *current = Some(Arc::new(running.with_live_settings_of(&new)));
        let generation = live.generation.fetch_add(1, Ordering::AcqRel) + 1;
        Ok(Reloaded {
            generation,
            restart_needed,
        })
    }
}
