//! `inspect`: envelope headers as JSON lines, from a topic or a file.

use super::parse_property;
use clap::Args;
use envelope_router::inspect;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct InspectArgs {
    /// Read this topic (all partitions).
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    topic: Option<String>,
    /// Brokers for --topic.
    #[arg(long, short = 'b', default_value = "localhost:9092")]
    bootstrap: String,
    /// Extra librdkafka properties for --topic, as key=value.
    #[arg(long = "property", short = 'X', value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Start at the beginning (default: only new records).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, short = 'c')]
    count: Option<usize>,
    /// Stop after this long without a new record.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Read envelopes from this file instead.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The file holds varint-length-prefixed envelopes (protobuf delimited framing).
    #[arg(long, requires = "file")]
    delimited: bool,
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let InspectArgs {
        topic,
        bootstrap,
        mut properties,
        from_beginning,
        count,
        idle,
        file,
        delimited,
    } = args;
    let mut out = std::io::stdout().lock();
    let n = match (topic, file) {
        (_, Some(path)) => inspect::file(&path, delimited, &mut out)?,
        (Some(topic), None) => {
            properties.insert(0, ("bootstrap.servers".into(), bootstrap));
            inspect::topic(&properties, &topic, from_beginning, count, idle, &mut out)?
        }
        (None, None) => unreachable!("clap requires --topic or --file"),
    };
    eprintln!("{n} records");
    Ok(ExitCode::SUCCESS)
}
