//! `replay`: re-drive dead letters to their source topic (or `--to`).

use super::{init_logging, parse_property};
use clap::Args;
use envelope_router::config::{Config, LogFormat};
use envelope_router::pipeline::Reason;
use envelope_router::progress::Progress;
use envelope_router::replay::kafka::{self, Position, ReplayOptions};
use envelope_router::replay::{Filter, StreamFilter};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct ReplayArgs {
    /// The router's config: brokers, client properties and the dead-letter topic.
    #[arg(short, long, env = "ENVELOPE_ROUTER_CONFIG")]
    config: Option<PathBuf>,
    /// Brokers (instead of, or over, the config's).
    #[arg(long, short = 'b', required_unless_present = "config")]
    bootstrap: Option<String>,
    /// Extra librdkafka property for both clients, as key=value (repeatable).
    #[arg(long = "property", short = 'X', value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// The dead-letter topic (default: the config's `dead_letter.topic`).
    #[arg(long, required_unless_present = "config")]
    topic: Option<String>,
    /// Read only this partition of the dead-letter topic (repeatable).
    #[arg(long)]
    partition: Vec<i32>,
    /// Start of the range, inclusive: `beginning`, an offset, an RFC 3339
    /// time or an age (`2h`). Times are record timestamps: a dead letter
    /// keeps its original record's.
    #[arg(long, default_value = "beginning")]
    from: Position,
    /// End of the range, exclusive: `end` (where the topic ends when the
    /// replay starts), an offset, an RFC 3339 time or an age.
    #[arg(long, default_value = "end")]
    until: Position,
    /// Only dead letters with this `dlq.reason` (repeatable).
    #[arg(long, value_parser = parse_reason)]
    reason: Vec<String>,
    /// Only dead letters read from this input topic (repeatable).
    #[arg(long)]
    source_topic: Vec<String>,
    /// Only envelopes of this env (repeatable; globs as in routes).
    #[arg(long)]
    env: Vec<String>,
    /// Only envelopes of this source (repeatable; globs).
    #[arg(long)]
    source: Vec<String>,
    /// Only envelopes of this title (repeatable; globs).
    #[arg(long)]
    title: Vec<String>,
    /// Only envelopes of this category (repeatable; globs).
    #[arg(long)]
    category: Vec<String>,
    /// Only envelopes of this version (repeatable).
    #[arg(long)]
    version: Vec<u32>,
    /// Send to this topic instead of each record's `dlq.source.topic`.
    #[arg(long)]
    to: Option<String>,
    /// Print what would be sent, per reason and stream; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Give up after this long without a record or an acknowledgement.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    stall_timeout: Duration,
}

fn parse_reason(s: &str) -> Result<String, String> {
    if Reason::ALL.iter().any(|r| r.code() == s) {
        Ok(s.to_owned())
    } else {
        let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        Err(format!("unknown reason; one of {}", codes.join(", ")))
    }
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.config.as_deref().map(Config::load).transpose()?;
    init_logging(LogFormat::Human, "warn");
    let mut properties = cfg
        .as_ref()
        .map(|c| c.client_properties(&Default::default()))
        .unwrap_or_default();
    if let Some(b) = args.bootstrap {
        properties.push(("bootstrap.servers".into(), b));
    }
    properties.extend(args.properties);
    let dead_letter_topic = match (args.topic, &cfg) {
        (Some(t), _) => t,
        (None, Some(c)) => c.dead_letter.topic.clone(),
        (None, None) => unreachable!("clap requires --topic without --config"),
    };
    let stream = StreamFilter {
        env: args.env,
        source: args.source,
        title: args.title,
        category: args.category,
        version: args.version,
    };
    let opts = ReplayOptions {
        properties,
        dead_letter_topic,
        partitions: args.partition,
        from: args.from,
        until: args.until,
        filter: Filter::new(args.reason, args.source_topic, &stream)?,
        to: args.to,
        dry_run: args.dry_run,
        stall_timeout: args.stall_timeout,
    };
    let what = if opts.dry_run { "dry run" } else { "replay" };
    let progress = Progress::new(&format!("{what} {}", opts.dead_letter_topic), None);
    let tally = kafka::run(&opts, &progress)?;
    progress.finish();
    tally.print(opts.dry_run, &mut std::io::stdout().lock())?;
    Ok(if tally.total().failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
