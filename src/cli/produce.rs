//! `silt produce`: a console producer. One record per input line (from stdin
//! or a file), optionally split into key and value, with static headers; a
//! records/s progress line on stderr while it runs and a count at the end.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::client::{require_topic, Connection};
use super::{parse_duration, parse_key_value, CliError};

/// The longest input line accepted: past this a line is refused rather than buffered without bound.
const LINE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Batch compression. zstd is missing: the `rdkafka` crate's default features
/// build librdkafka without libzstd (its `zstd` feature would add it).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Acks {
    #[value(name = "0")]
    Zero,
    #[value(name = "1")]
    One,
    #[value(name = "all")]
    All,
}

#[derive(clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    connection: Connection,
    /// The topic to write to. It must exist (create it with `silt topic create`).
    #[arg(long, short = 't')]
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Split each line at the first occurrence of this separator into key and value.
    #[arg(long, short = 'K')]
    key_separator: Option<String>,
    /// A header added to every record, key=value (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// Batch compression (zstd is not built in).
    #[arg(long, short = 'z', value_enum, default_value = "none")]
    compression: Compression,
    /// Acknowledgements to wait for: 0 (none), 1 (the leader), all (every in-sync replica).
    #[arg(long, value_enum, default_value = "all")]
    acks: Acks,
    /// Write every record to this partition (default: by key hash, or spread when there is no key).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// How often to print progress on stderr while producing.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    progress_interval: Duration,
}

pub fn run(args: ProduceArgs) -> Result<(), CliError> {
    if args.key_separator.as_deref() == Some("") {
        return Err(CliError::BadArgument("--key-separator must not be empty".into()));
    }
    let input: Box<dyn Read> = match &args.file {
        Some(path) => Box::new(File::open(path).map_err(CliError::io(format!("open {}", path.display())))?),
        None => Box::new(std::io::stdin().lock()),
    };
    let compression = format!("{:?}", args.compression).to_lowercase();
    let acks = match args.acks {
        Acks::Zero => "0",
        Acks::One => "1",
        Acks::All => "all",
    };
    let connection = &args.connection;
    let producer: BaseProducer<_> = connection.create(&[
        ("compression.type", compression.as_str()),
        ("acks", acks),
        ("allow.auto.create.topics", "false"),
        ("linger.ms", "5"),
        ("message.timeout.ms", &connection.timeout.as_millis().max(1).to_string()),
    ])?;
    let metadata = connection.metadata(producer.client())?;
    let partitions = require_topic(&metadata, &args.topic)?.partitions().len() as i32;
    if let Some(p) = args.partition {
        if !(0..partitions).contains(&p) {
            return Err(CliError::BadArgument(format!("--partition must be 0..{partitions} for topic {}, got {p}", args.topic)));
        }
    }
    let headers = args.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(v.as_str()) }));
    let separator = args.key_separator.as_deref().map(str::as_bytes);

    let started = Instant::now();
    let mut last_report = started;
    let mut sent: u64 = 0;
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader).take(LINE_BYTES_MAX as u64 + 1).read_until(b'\n', &mut line).map_err(CliError::io("read the input"))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        } else if line.len() > LINE_BYTES_MAX {
            return Err(CliError::BadArgument(format!("input line {} is longer than {LINE_BYTES_MAX} bytes", sent + 1)));
        }
        let (key, value) = match separator.and_then(|sep| find(&line, sep).map(|at| (at, sep.len()))) {
            Some((at, len)) => (Some(&line[..at]), &line[at + len..]),
            None => (None, &line[..]),
        };
        let mut record = BaseRecord::<[u8], [u8]>::to(&args.topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if !args.headers.is_empty() {
            record = record.headers(headers.clone());
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        // A full local queue is back-pressure: serve delivery reports and retry.
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => return Err(CliError::Kafka { action: format!("produce to {}", args.topic), source: e }),
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
        if last_report.elapsed() >= args.progress_interval {
            last_report = Instant::now();
            let delivered = producer.context().delivered.load(Ordering::Relaxed);
            eprintln!("silt produce: {sent} records read, {delivered} delivered, {:.0} records/s", rate(delivered, started.elapsed()));
        }
    }
    let flushed = producer.flush(connection.timeout + Duration::from_secs(5));
    let context = producer.context();
    let delivered = context.delivered.load(Ordering::Relaxed);
    let failed = context.failed.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    eprintln!("silt produce: {delivered} records produced to {} in {:.2}s ({:.0} records/s)", args.topic, elapsed.as_secs_f64(), rate(delivered, elapsed));
    if failed > 0 || flushed.is_err() || delivered != sent {
        let reason = context.first_failure().or_else(|| flushed.err().map(|e| e.to_string())).unwrap_or_else(|| "no delivery report".into());
        return Err(CliError::Refused { action: format!("take {} of {sent} records", sent - delivered), reason });
    }
    Ok(())
}

fn rate(records: u64, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64().max(1e-3)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #[test]
    fn separator_is_found_at_its_first_occurrence() {
        assert_eq!(super::find(b"k1:v:1", b":"), Some(2));
        assert_eq!(super::find(b"k1::v", b"::"), Some(2));
        assert_eq!(super::find(b"value", b":"), None);
    }
}
