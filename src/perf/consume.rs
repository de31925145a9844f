//! `silt perf consume`: Kafka's `kafka-consumer-perf-test` for any broker.
//!
//! By default each consumer is assigned its share of the topic's partitions
//! (no group, so no rebalance is timed) and reads from the log start up to the
//! high watermarks found when the run starts. With `--group` the consumers
//! subscribe as one consumer group instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::client::Target;
use super::raw::RawArgs;
use super::stats::{finish, Meter, Report, Reporter};

/// How long one poll waits.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long watermark look-ups may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// See where the consumer is configured.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

#[derive(clap::Args, Debug, Clone)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Records to consume across all consumers (default: everything below the
    /// high watermarks when the run starts).
    #[arg(long)]
    pub records: Option<u64>,
    /// Give up when no record arrived for this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout_s: f64,
    /// Consumer clients, each on its own thread and connection.
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Consume as this consumer group (subscribe) instead of assigning partitions.
    #[arg(long)]
    pub group: Option<String>,
    // --raw: Fetch requests whose answers are counted by batch header, not read.
    #[command(flatten)]
    pub raw: RawArgs,
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let report = if args.raw.raw { super::raw::consume::consume(&args)? } else { consume(&args)? };
    report.print(args.target.json);
    Ok(())
}

/// The records below the high watermark of each partition, from the log start.
fn backlog(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT).context("fetching topic metadata")?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else { bail!("topic {topic} not found") };
    t.partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), METADATA_TIMEOUT).context("fetching watermarks")?;
            Ok((p.id(), low, high))
        })
        .collect()
}

/// Runs the consume test and returns its report.
pub fn consume(args: &ConsumeArgs) -> anyhow::Result<Report> {
    if args.consumers == 0 {
        bail!("--consumers must be at least 1");
    }
    // librdkafka assigns partitions only to a consumer with a group id, even
    // without subscribing; nothing is committed under it.
    let group = args.group.clone().unwrap_or_else(|| format!("silt-perf-{}", std::process::id()));
    let config = args.target.config_with(&[
        ("enable.auto.commit", "false".into()),
        ("auto.offset.reset", "earliest".into()),
        ("group.id", group),
        // When its local queue passes its thresholds, librdkafka (>= 2.4)
        // stops fetching a partition for fetch.queue.backoff.ms, 1 s by
        // default, even once the application has drained the queue: about
        // one 100 B run in two stalled a second that way, which measured
        // the client's back-off instead of the broker.
        ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.into()),
    ])?;
    let probe: BaseConsumer = config.create().context("creating a consumer")?;
    let partitions = backlog(&probe, &args.target.topic)?;
    drop(probe);
    let available: u64 = partitions.iter().map(|&(_, low, high)| (high - low).max(0) as u64).sum();
    let wanted = args.records.unwrap_or(available);
    let meter = Meter::new();
    let reporter = Reporter::start(meter.clone(), "consume", args.target.report_interval(), args.target.json);
    let idle = Duration::from_secs_f64(args.timeout_s.max(0.1));
    let threads: Vec<_> = (0..args.consumers)
        .map(|i| {
            let consumer: BaseConsumer = config.create().context("creating a consumer")?;
            if args.group.is_some() {
                consumer.subscribe(&[&args.target.topic]).context("subscribing")?;
            } else {
                let mut assignment = TopicPartitionList::new();
                for &(partition, low, _) in partitions.iter().skip(i as usize).step_by(args.consumers as usize) {
                    assignment.add_partition_offset(&args.target.topic, partition, Offset::Offset(low))?;
                }
                consumer.assign(&assignment).context("assigning partitions")?;
            }
            let meter = meter.clone();
            std::thread::Builder::new()
                .name(format!("perf-consumer-{i}"))
                .spawn(move || consume_loop(&consumer, &meter, wanted, idle))
                .context("spawning a consumer thread")
        })
        .collect::<anyhow::Result<_>>()?;
    let report = finish(&meter, reporter, "consume", threads)?;
    if report.records < wanted {
        bail!("consumed {} of {wanted} records: nothing arrived for {idle:?}", report.records);
    }
    Ok(report)
}

/// Consumes until the meter reaches `wanted` records (all consumers count into it).
fn consume_loop(consumer: &BaseConsumer, meter: &Arc<Meter>, wanted: u64, idle: Duration) -> anyhow::Result<()> {
    let mut last_record = Instant::now();
    while meter.records() < wanted {
        match consumer.poll(POLL_TIMEOUT) {
            Some(Ok(message)) => {
                let bytes = message.payload_len() + message.key().map_or(0, <[u8]>::len);
                meter.add(1, bytes as u64);
                last_record = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                meter.add_error();
                tracing::warn!(cause = %e, "consume error");
            }
            None if last_record.elapsed() > idle => return Ok(()),
            None => {}
        }
    }
    Ok(())
}
