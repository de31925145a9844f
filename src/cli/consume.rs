//! `silt consume`: a console consumer. Reads a topic from the beginning, an
//! offset, a time or the end, alone (assigned partitions) or as a member of a
//! consumer group, and prints records as text or JSON lines.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::client::{require_topic, Connection};
use super::{parse_duration, parse_time_ms, CliError};

/// How long one poll waits before the exit conditions are checked again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    connection: Connection,
    /// The topic to read.
    #[arg(long, short = 't')]
    topic: String,
    /// Join this consumer group (offsets are committed); without it the
    /// partitions are read directly and nothing is committed.
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Read only these partitions (repeatable; not with --group).
    #[arg(long, short = 'p', conflicts_with = "group")]
    partition: Vec<i32>,
    /// Start at each partition's first record (with --group: when the group has no committed offset).
    #[arg(long, conflicts_with_all = ["offset", "from_time"])]
    from_beginning: bool,
    /// Start at this offset in every partition read (not with --group).
    #[arg(long, short = 'o', conflicts_with_all = ["group", "from_time"])]
    offset: Option<i64>,
    /// Start at the first record at or after this time: milliseconds since the
    /// epoch, or a time ago like -1h (not with --group).
    #[arg(long, value_parser = parse_time_ms, allow_hyphen_values = true, conflicts_with = "group")]
    from_time: Option<i64>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    max_records: Option<u64>,
    /// Stop once every partition read has been read to its end.
    #[arg(long, short = 'e')]
    exit_at_end: bool,
    /// Stop when no record arrived for this long (e.g. 5s).
    #[arg(long, value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// Print each record's key before its value.
    #[arg(long)]
    print_key: bool,
    /// Print each record's headers (k=v,k=v).
    #[arg(long)]
    print_headers: bool,
    /// Print each record's timestamp (milliseconds since the epoch).
    #[arg(long)]
    print_timestamp: bool,
    /// Print each record's partition and offset (p:o).
    #[arg(long)]
    print_offset: bool,
    /// What separates the printed fields.
    #[arg(long, default_value = "\t")]
    separator: String,
    /// One JSON object per record: topic, partition, offset, timestamp, key, value, headers.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ConsumeArgs) -> Result<(), CliError> {
    if args.max_records == Some(0) {
        return Err(CliError::BadArgument("--max-records must be at least 1".into()));
    }
    let connection = &args.connection;
    let reset = if args.from_beginning { "earliest" } else { "latest" };
    let mut settings = vec![("enable.partition.eof", "true"), ("auto.offset.reset", reset), ("allow.auto.create.topics", "false")];
    match &args.group {
        Some(group) => settings.extend([("group.id", group.as_str()), ("enable.auto.commit", "true"), ("auto.commit.interval.ms", "1000")]),
        None => settings.extend([("group.id", "silt-cli-unused"), ("enable.auto.commit", "false"), ("enable.auto.offset.store", "false")]),
    }
    let consumer: BaseConsumer<_> = connection.create(&settings)?;
    let metadata = connection.metadata(consumer.client())?;
    let partitions: Vec<i32> = require_topic(&metadata, &args.topic)?.partitions().iter().map(|p| p.id()).collect();
    for p in &args.partition {
        if !partitions.contains(p) {
            return Err(CliError::BadArgument(format!("topic {} has no partition {p}", args.topic)));
        }
    }
    if args.group.is_some() {
        consumer.subscribe(&[&args.topic]).map_err(CliError::kafka(format!("subscribe to {}", args.topic)))?;
    } else {
        let wanted = if args.partition.is_empty() { partitions } else { args.partition.clone() };
        let start = match (args.offset, args.from_beginning) {
            (Some(o), _) => Offset::Offset(o),
            (None, true) => Offset::Beginning,
            (None, false) => Offset::End,
        };
        let mut tpl = TopicPartitionList::new();
        for p in &wanted {
            tpl.add_partition_offset(&args.topic, *p, start).map_err(CliError::kafka("build the partition list"))?;
        }
        if let Some(ms) = args.from_time {
            tpl = by_time(&consumer, connection, &args.topic, &wanted, ms)?;
        }
        consumer.assign(&tpl).map_err(CliError::kafka(format!("assign the partitions of {}", args.topic)))?;
    }

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count: u64 = 0;
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut last_record = Instant::now();
    loop {
        if args.max_records.is_some_and(|max| count >= max) {
            break;
        }
        if args.idle_timeout.is_some_and(|idle| last_record.elapsed() >= idle) {
            break;
        }
        if args.exit_at_end {
            let assigned: HashSet<i32> = consumer.assignment().map(|a| a.elements().iter().map(|e| e.partition()).collect()).unwrap_or_default();
            if !assigned.is_empty() && assigned.is_subset(&at_end) {
                break;
            }
        }
        match consumer.poll(POLL_INTERVAL) {
            None => {}
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                last_record = Instant::now();
                count += 1;
                let line = if args.json { json_line(&message) } else { text_line(&args, &message) };
                out.write_all(&line).and_then(|()| out.write_all(b"\n")).map_err(CliError::io("write to stdout"))?;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                out.flush().map_err(CliError::io("write to stdout"))?;
            }
            Some(Err(e)) => return Err(CliError::Kafka { action: format!("consume from {}", args.topic), source: e }),
        }
    }
    out.flush().map_err(CliError::io("write to stdout"))?;
    if args.group.is_some() && count > 0 {
        consumer.commit_consumer_state(CommitMode::Sync).map_err(CliError::kafka("commit the group's offsets"))?;
    }
    eprintln!("silt consume: {count} records consumed from {}", args.topic);
    Ok(())
}

/// Each partition's first offset at or after `ms` (its end when there is none).
fn by_time(
    consumer: &BaseConsumer<super::client::Context>,
    connection: &Connection,
    topic: &str,
    partitions: &[i32],
    ms: i64,
) -> Result<TopicPartitionList, CliError> {
    let mut query = TopicPartitionList::new();
    for p in partitions {
        query.add_partition_offset(topic, *p, Offset::Offset(ms)).map_err(CliError::kafka("build the partition list"))?;
    }
    let mut found = consumer.offsets_for_times(query, connection.timeout).map_err(CliError::kafka(format!("look up offsets by time in {topic}")))?;
    // Kafka answers -1 when no record is that new: start those partitions at their end.
    let ends: Vec<i32> = found.elements_for_topic(topic).iter().filter(|e| !matches!(e.offset(), Offset::Offset(_))).map(|e| e.partition()).collect();
    for p in ends {
        found.set_partition_offset(topic, p, Offset::End).map_err(CliError::kafka("build the partition list"))?;
    }
    Ok(found)
}

fn text_line(args: &ConsumeArgs, m: &BorrowedMessage<'_>) -> Vec<u8> {
    let sep = args.separator.as_bytes();
    let mut line = Vec::new();
    if args.print_offset {
        line.extend_from_slice(format!("{}:{}", m.partition(), m.offset()).as_bytes());
        line.extend_from_slice(sep);
    }
    if args.print_timestamp {
        line.extend_from_slice(m.timestamp().to_millis().unwrap_or(-1).to_string().as_bytes());
        line.extend_from_slice(sep);
    }
    if args.print_headers {
        let headers: Vec<String> = m
            .headers()
            .map(|h| h.iter().map(|h| format!("{}={}", h.key, h.value.map(String::from_utf8_lossy).unwrap_or_default())).collect())
            .unwrap_or_default();
        line.extend_from_slice(headers.join(",").as_bytes());
        line.extend_from_slice(sep);
    }
    if args.print_key {
        line.extend_from_slice(m.key().unwrap_or_default());
        line.extend_from_slice(sep);
    }
    line.extend_from_slice(m.payload().unwrap_or_default());
    line
}

/// Bytes as a JSON value: a string when they are UTF-8, else `{"base64": ...}`; null when absent.
fn json_bytes(bytes: Option<&[u8]>) -> serde_json::Value {
    match bytes {
        None => serde_json::Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => serde_json::Value::String(s.to_owned()),
            Err(_) => serde_json::json!({ "base64": base64(b) }),
        },
    }
}

fn json_line(m: &BorrowedMessage<'_>) -> Vec<u8> {
    let headers: Vec<serde_json::Value> =
        m.headers().map(|h| h.iter().map(|h| serde_json::json!({ "key": h.key, "value": json_bytes(h.value) })).collect()).unwrap_or_default();
    let record = serde_json::json!({
        "topic": m.topic(),
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp": m.timestamp().to_millis(),
        "key": json_bytes(m.key()),
        "value": json_bytes(m.payload()),
        "headers": headers,
    });
    record.to_string().into_bytes()
}

/// Standard base64 with padding (RFC 4648), for values that are not UTF-8.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8) | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, want) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(super::base64(input.as_bytes()), want);
        }
    }
}
