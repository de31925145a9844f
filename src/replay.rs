//! `silt replay`: streams archived records of a topic, straight from the
//! archive (no broker needed), to stdout as JSON lines or into another topic
//! of any Kafka-compatible broker. Event-sourcing replays and backfills use it.
//!
//! With `--key`, `--key-prefix`, `--from-time` or `--to-time` it reads
//! selectively (`silt_tiering::archive::select`): only the files and row
//! groups whose manifest ranges, statistics and key bloom filters say they
//! can hold matches, and only matching records go out. `--stats` prints what
//! was read (JSON, on stderr). With `--latest-per-key` it prints the
//! latest value of every key instead (`latest.rs`): a snapshot of a
//! compacted topic from the archive plus the broker's local tail.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use silt_tiering::archive::select::{ScanStats, SelectScan, Selection};
use silt_tiering::archive::{Archive, NoObserver, PartitionArchive};
use silt_tiering::batch::{self, BatchHeader, Record};

mod latest;

/// Records in flight to the target broker before replay waits for acknowledgements.
const IN_FLIGHT_MAX: usize = 10_000;
/// Bytes asked of the archive per read.
const READ_BYTES: usize = 4 << 20;

/// What `silt replay` takes from its command line.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The topic to replay.
    #[arg(long, short)]
    pub topic: String,
    /// Partitions to replay (comma-separated); default: every archived partition.
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// First offset to replay (per partition); default: the archive's start.
    #[arg(long, conflicts_with = "from_time")]
    pub from_offset: Option<i64>,
    /// Replay records from this time: milliseconds since the epoch or RFC 3339
    /// (inclusive; records are selected by their own timestamp).
    #[arg(long, value_parser = parse_time)]
    pub from_time: Option<i64>,
    /// Stop before this offset (per partition); default: the archive's end.
    #[arg(long, conflicts_with = "to_time")]
    pub to_offset: Option<i64>,
    /// Replay records up to this time, inclusive (ms since the epoch or RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub to_time: Option<i64>,
    /// Replay only records with this key (read with --encoding: text, or base64).
    #[arg(long)]
    pub key: Option<String>,
    /// Replay only records whose key starts with this (read with --encoding).
    #[arg(long)]
    pub key_prefix: Option<String>,
    /// Print what was read (files, row groups, bytes) as JSON on stderr.
    #[arg(long)]
    pub stats: bool,
    /// Produce the records into this topic instead of printing them.
    #[arg(long)]
    pub to_topic: Option<String>,
    /// The broker to produce to (with --to-topic).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap_server: String,
    /// Keep each record's partition number in the target topic (default: partition by key).
    #[arg(long)]
    pub keep_partitions: bool,
    /// How keys, values and header values are printed: `text` (UTF-8, lossy) or `base64`.
    #[arg(long, default_value = "text", value_parser = ["text", "base64"])]
    pub encoding: String,
    /// The broker's configuration file, for the archive's location and credentials.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The archive's URL (overrides the configuration).
    #[arg(long)]
    pub archive_url: Option<String>,
    /// Print only the latest record of each key (tombstoned keys left out),
    /// from the archive and then the local tail read from --bootstrap-server:
    /// a snapshot of a compacted topic.
    #[arg(long, conflicts_with_all = ["key", "key_prefix", "from_time", "to_time", "from_offset", "to_offset"])]
    pub latest_per_key: bool,
    /// With --latest-per-key: read the archive only, not the broker's local tail.
    #[arg(long, requires = "latest_per_key")]
    pub archive_only: bool,
}

/// Milliseconds since the epoch, or an RFC 3339 time such as `2026-11-28T10:00:00Z`.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    parse_rfc3339(text).ok_or_else(|| format!("{text:?} is neither milliseconds since the epoch nor an RFC 3339 time (2026-11-28T10:00:00Z)"))
}

/// A minimal RFC 3339 parser (`YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`).
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz[1..3].parse::<i64>().ok()? * 60 + tz[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60) * 1_000) + millis)
}

/// Where replayed records go.
enum Sink {
    Stdout { out: std::io::BufWriter<std::io::Stdout>, base64: bool },
    Topic { producer: rdkafka::producer::FutureProducer, topic: String, keep_partitions: bool, pending: FuturesUnordered<rdkafka::producer::DeliveryFuture> },
}

fn encode(bytes: &[u8], base64: bool) -> serde_json::Value {
    use base64::Engine;
    if base64 {
        serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
    }
}

impl Sink {
    async fn send(&mut self, topic: &str, partition: i32, record: &Record) -> anyhow::Result<()> {
        match self {
            Sink::Stdout { out, base64 } => {
                let headers: Vec<_> = record
                    .headers
                    .iter()
                    .map(|h| serde_json::json!({ "key": String::from_utf8_lossy(&h.key), "value": h.value.as_deref().map(|v| encode(v, *base64)) }))
                    .collect();
                let line = serde_json::json!({
                    "topic": topic,
                    "partition": partition,
                    "offset": record.offset,
                    "timestamp": record.timestamp,
                    "key": record.key.as_deref().map(|k| encode(k, *base64)),
                    "value": record.value.as_deref().map(|v| encode(v, *base64)),
                    "headers": headers,
                });
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n").context("writing to stdout")?;
            }
            Sink::Topic { producer, topic: target, keep_partitions, pending } => {
                use rdkafka::message::{Header, OwnedHeaders};
                let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
                for h in &record.headers {
                    let key = String::from_utf8_lossy(&h.key);
                    headers = headers.insert(Header { key: &key, value: h.value.as_deref() });
                }
                let mut out = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(target).timestamp(record.timestamp).headers(headers);
                if let Some(k) = record.key.as_deref() {
                    out = out.key(k);
                }
                if let Some(v) = record.value.as_deref() {
                    out = out.payload(v);
                }
                if *keep_partitions {
                    out = out.partition(partition);
                }
                loop {
                    match producer.send_result(out) {
                        Ok(delivery) => {
                            pending.push(delivery);
                            break;
                        }
                        Err((e, back)) if matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::QueueFull)) => {
                            out = back;
                            Self::settle_one(pending).await?;
                        }
                        Err((e, _)) => bail!("cannot produce to {target}: {e}"),
                    }
                }
                while pending.len() >= IN_FLIGHT_MAX {
                    Self::settle_one(pending).await?;
                }
            }
        }
        Ok(())
    }

    async fn settle_one(pending: &mut FuturesUnordered<rdkafka::producer::DeliveryFuture>) -> anyhow::Result<()> {
        match pending.next().await {
            Some(Ok(Ok(_))) | None => Ok(()),
            Some(Ok(Err((e, _)))) => bail!("the broker refused a replayed record: {e}"),
            Some(Err(_)) => bail!("the producer was closed before a record was acknowledged"),
        }
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            Sink::Stdout { out, .. } => out.flush().context("writing to stdout"),
            Sink::Topic { pending, .. } => {
                while !pending.is_empty() {
                    Self::settle_one(pending).await?;
                }
                Ok(())
            }
        }
    }
}

fn open_archive(args: &ReplayArgs) -> anyhow::Result<Arc<Archive>> {
    let mut config = crate::config::Config::load(args.config.as_deref()).context("loading the configuration")?;
    if let Some(url) = &args.archive_url {
        config.tiering.archive_url = url.clone();
        config.tiering.enabled = true;
    }
    let Some(settings) = config.archive_settings()? else {
        bail!("tiering is disabled in the configuration: pass --archive-url");
    };
    let url = settings.store.url.clone();
    Archive::open(settings, tokio::runtime::Handle::current(), Arc::new(NoObserver)).with_context(|| format!("cannot open the archive {url}"))
}

/// Runs `silt replay`. Progress goes to stderr; records to stdout or the target topic.
pub async fn run(args: ReplayArgs) -> anyhow::Result<u64> {
    let archive = open_archive(&args)?;
    let partitions = if args.partitions.is_empty() { archive.list_partitions(&args.topic).await? } else { args.partitions.clone() };
    if partitions.is_empty() {
        bail!("topic {:?} has nothing in the archive {}", args.topic, archive.url());
    }
    let mut sink = match &args.to_topic {
        None => Sink::Stdout { out: std::io::BufWriter::new(std::io::stdout()), base64: args.encoding == "base64" },
        Some(topic) => {
            let producer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &args.bootstrap_server)
                .set("enable.idempotence", "true")
                .set("linger.ms", "10")
                .set("message.timeout.ms", "60000")
                .create()
                .context("creating the producer")?;
            Sink::Topic { producer, topic: topic.clone(), keep_partitions: args.keep_partitions, pending: FuturesUnordered::new() }
        }
    };
    let selection = selection(&args)?;
    let started = Instant::now();
    let mut total = 0u64;
    let mut stats = ScanStats::default();
    let mut last_report = Instant::now();
    for partition in partitions {
        let Some(part) = archive.read_partition(&args.topic, partition).await? else {
            bail!("partition {partition} of {:?} has no archive", args.topic);
        };
        if args.latest_per_key {
            let mut snapshot = latest::Latest::default();
            let archive_end = latest::read_archive(&part, &mut snapshot).await?;
            if !args.archive_only {
                let (bootstrap, topic) = (args.bootstrap_server.clone(), args.topic.clone());
                let (tail, returned) = tokio::task::spawn_blocking(move || {
                    let tail = latest::read_tail(&bootstrap, &topic, partition, archive_end, &mut snapshot);
                    (tail, snapshot)
                })
                .await
                .context("the tail reader panicked")?;
                snapshot = returned;
                let tail = tail?;
                eprintln!("silt replay: partition {partition}: {tail} records of the local tail from offset {archive_end}");
            }
            for record in snapshot.into_records() {
                sink.send(&args.topic, partition, &record).await?;
                total += 1;
            }
            continue;
        }
        if let Some(selection) = &selection {
            let mut scan = SelectScan::new(Arc::clone(&part), selection.clone());
            while let Some(records) = scan.next().await? {
                for record in &records {
                    sink.send(&args.topic, partition, record).await?;
                }
                total += records.len() as u64;
                if last_report.elapsed() >= Duration::from_secs(1) {
                    let rate = total as f64 / started.elapsed().as_secs_f64();
                    eprintln!("silt replay: {total} records ({rate:.0} records/s), partition {partition} at offset {}", records.last().map_or(0, |r| r.offset));
                    last_report = Instant::now();
                }
            }
            stats.add(&scan.stats());
            continue;
        }
        let (from, to) = bounds(&args, &part);
        let mut next = from;
        while next < to {
            let Some((records, after)) = read_chunk(&part, next, to).await? else { break };
            for record in &records {
                sink.send(&args.topic, partition, record).await?;
            }
            total += records.len() as u64;
            next = after;
            if last_report.elapsed() >= Duration::from_secs(1) {
                let rate = total as f64 / started.elapsed().as_secs_f64();
                eprintln!("silt replay: {total} records ({rate:.0} records/s), partition {partition} at offset {next}");
                last_report = Instant::now();
            }
        }
    }
    sink.finish().await?;
    if args.stats {
        eprintln!("silt replay: stats {}", serde_json::to_string(&stats)?);
    }
    eprintln!("silt replay: {total} records replayed from {} in {:.1} s", archive.url(), started.elapsed().as_secs_f64());
    Ok(total)
}

/// The archived records in `[next, to)` from one read at `next`, and the
/// offset after the batches read; `None` past the archive's end.
async fn read_chunk(part: &Arc<PartitionArchive>, next: i64, to: i64) -> anyhow::Result<Option<(Vec<Record>, i64)>> {
    let Some(bytes) = part.read(next, READ_BYTES).await? else { return Ok(None) };
    let mut records = Vec::new();
    let mut after = next;
    let mut at = 0;
    while at < bytes.len() && after < to {
        let header = BatchHeader::parse(&bytes[at..])?;
        let one: Bytes = bytes.slice(at..at + header.total_len());
        at += header.total_len();
        records.extend(batch::decode_records(&one)?.records.into_iter().filter(|r| r.offset >= next && r.offset < to));
        after = header.next_offset();
    }
    // A read returns batches ending at or past `next`: no batch means no progress.
    Ok((after > next).then_some((records, after)))
}

/// What a selective replay selects, or `None` for a plain replay of an
/// offset range (which reads through the archive's row group cache).
fn selection(args: &ReplayArgs) -> anyhow::Result<Option<Selection>> {
    let selective = args.key.is_some() || args.key_prefix.is_some() || args.from_time.is_some() || args.to_time.is_some() || args.stats;
    if !selective {
        return Ok(None);
    }
    let bytes = |text: &Option<String>, flag: &str| -> anyhow::Result<Option<Bytes>> {
        use base64::Engine;
        Ok(match text {
            None => None,
            Some(t) if args.encoding == "base64" => {
                Some(Bytes::from(base64::engine::general_purpose::STANDARD.decode(t).with_context(|| format!("{flag} {t:?} is not base64"))?))
            }
            Some(t) => Some(Bytes::copy_from_slice(t.as_bytes())),
        })
    };
    Ok(Some(Selection {
        key: bytes(&args.key, "--key")?,
        key_prefix: bytes(&args.key_prefix, "--key-prefix")?,
        from_offset: args.from_offset,
        to_offset: args.to_offset,
        from_time: args.from_time,
        to_time: args.to_time,
    }))
}

/// The offsets `[from, to)` of a plain replay of one partition (a time
/// window is a [`Selection`]).
fn bounds(args: &ReplayArgs, part: &PartitionArchive) -> (i64, i64) {
    let manifest = part.manifest();
    let (Some(start), Some(end)) = (manifest.start_offset(), manifest.end_offset()) else { return (0, 0) };
    (args.from_offset.map_or(start, |o| o.max(start)), args.to_offset.map_or(end, |o| o.min(end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_millis_or_rfc3339() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-11-28T10:00:00.5Z"), Ok(1_795_860_000_500));
        assert_eq!(parse_time("2026-11-28T12:00:00+02:00"), parse_time("2026-11-28T10:00:00Z"));
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
    }
}
