//! The operator's command-line tools (`silt topic|produce|consume|group|cluster|config|user`):
//! one file per command family behind the single [`Command`] enum, which `main.rs`
//! dispatches to [`run`].
//!
//! The Kafka commands talk to any Kafka-compatible broker through librdkafka
//! (the `rdkafka` crate), not through the broker's own codec: they must work
//! against Apache Kafka as well as Silt, and librdkafka is the client the
//! Kafka ecosystem already trusts. `silt config` uses the broker's own loader;
//! `silt user` speaks the SCRAM credential APIs, which librdkafka lacks, with the codec.
//!
//! Exit codes: 0 success, 1 a failure reported by or about the broker
//! (unreachable, unknown topic or group, a refused request), 2 a bad argument
//! or configuration (clap's usage errors also exit 2).

mod client;
mod cluster;
mod config;
mod consume;
mod group;
mod produce;
mod topic;
mod user;

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

/// The operator commands (everything but `broker`).
#[derive(Subcommand)]
pub enum Command {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Console producer: one record per input line, from stdin or a file.
    Produce(produce::ProduceArgs),
    /// Console consumer: print records, with or without a consumer group.
    Consume(consume::ConsumeArgs),
    /// List, describe (with lag), reset the offsets of and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Describe the cluster: its id, brokers and controller.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Check a broker configuration file without starting a broker.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Create, delete and describe SCRAM users (SASL/SCRAM credentials).
    #[command(subcommand)]
    User(user::UserCommand),
}

/// Why a command failed. Messages read as sentences for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach a Kafka broker at {bootstrap} within {timeout:?}: {cause}")]
    Unreachable { bootstrap: String, timeout: Duration, cause: String },
    #[error("topic {topic:?} does not exist")]
    UnknownTopic { topic: String },
    #[error("consumer group {group:?} does not exist")]
    UnknownGroup { group: String },
    #[error("{0}")]
    BadArgument(String),
    #[error("the broker refused to {action}: {reason}")]
    Refused { action: String, reason: String },
    #[error("cannot {action}: {source}")]
    Kafka { action: String, source: rdkafka::error::KafkaError },
    #[error("cannot {action}: {source}")]
    Io { action: String, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(#[from] silt::config::ConfigError),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::BadArgument(_) | CliError::Config(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }

    /// Wraps a client error with what was being attempted.
    fn kafka(action: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> CliError {
        let action = action.into();
        move |source| CliError::Kafka { action, source }
    }

    fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let action = action.into();
        move |source| CliError::Io { action, source }
    }
}

/// Runs one operator command; prints the error and picks the exit code.
pub fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Topic(c) => topic::run(c),
        Command::Produce(a) => produce::run(a),
        Command::Consume(a) => consume::run(a),
        Command::Group(c) => group::run(c),
        Command::Cluster(c) => cluster::run(c),
        Command::Config(c) => config::run(c),
        Command::User(c) => user::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silt: {e}");
            e.exit_code()
        }
    }
}

/// Parses `key=value` (configs, headers, client properties).
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// Parses a duration: a number with a unit (`500ms`, `10s`, `2m`, `1h`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("expected a duration like 500ms, 10s, 2m or 1h, got {s:?}"))?;
    let millis = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(format!("expected a duration like 500ms, 10s, 2m or 1h, got {s:?}")),
    };
    Ok(Duration::from_millis(millis))
}

/// Parses a point in time: milliseconds since the epoch, or a duration ago
/// written `-1h`, `-30m` (relative to now).
fn parse_time_ms(s: &str) -> Result<i64, String> {
    if let Some(ago) = s.strip_prefix('-') {
        let ago = parse_duration(ago)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
        return Ok(now.saturating_sub(ago).as_millis() as i64);
    }
    s.parse::<i64>().ok().filter(|ms| *ms >= 0).ok_or_else(|| format!("expected milliseconds since the epoch or a time ago like -1h, got {s:?}"))
}

/// Prints rows as left-aligned columns, the first row being the header.
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn key_values_need_a_key() {
        assert_eq!(parse_key_value("retention.ms=1000"), Ok(("retention.ms".into(), "1000".into())));
        assert_eq!(parse_key_value("k="), Ok(("k".into(), String::new())));
        assert!(parse_key_value("=v").is_err());
        assert!(parse_key_value("novalue").is_err());
    }

    #[test]
    fn times_are_epoch_ms_or_ago() {
        assert_eq!(parse_time_ms("1700000000000"), Ok(1_700_000_000_000));
        let ago = parse_time_ms("-1h").unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!((now - 3_600_000 - ago).abs() < 60_000);
        assert!(parse_time_ms("yesterday").is_err());
    }
}
