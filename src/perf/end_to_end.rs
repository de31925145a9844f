//! `silt perf end-to-end`: the latency from a producer's send to a
//! consumer's receipt of the same record (Kafka's `EndToEndLatency`).
//!
//! One producer sends at a fixed rate with the send time (nanoseconds since
//! the run began) in the first 8 bytes of each value; one consumer, in the
//! same process and so on the same clock, reads from the high watermarks
//! found before the first send and records `now - sent` for each record.
//! Untimed warm-up records go first, until the consumer receives one, so the
//! consumer's connecting and first fetch are not counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::client::{parse_acks, Target};
use super::produce::payload;
use super::stats::{finish, latency_histogram, record_latency, Meter, Report, Reporter};

/// How long the consumer waits for the last records after the producer is done.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the value that carry the send time.
const STAMP_BYTES: usize = 8;
/// The stamp of warm-up records, which are not timed.
const WARM_UP_STAMP: u64 = u64::MAX;
/// Pause between warm-up records.
const WARM_UP_INTERVAL: Duration = Duration::from_millis(10);

#[derive(clap::Args, Debug, Clone)]
pub struct EndToEndArgs {
    #[command(flatten)]
    pub target: Target,
    /// Bytes of value per record (at least 8).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records to send.
    #[arg(long, default_value_t = 10_000)]
    pub records: u64,
    /// Records per second.
    #[arg(long, default_value_t = 1000.0)]
    pub throughput: f64,
    /// 0, 1 or all.
    #[arg(long, default_value = "1")]
    pub acks: String,
}

pub fn run(args: EndToEndArgs) -> anyhow::Result<()> {
    let report = end_to_end(&args)?;
    report.print(args.target.json);
    Ok(())
}

pub fn end_to_end(args: &EndToEndArgs) -> anyhow::Result<Report> {
    if args.record_size < STAMP_BYTES {
        bail!("--record-size must be at least {STAMP_BYTES} for end-to-end latency, got {}", args.record_size);
    }
    if args.throughput <= 0.0 {
        bail!("--throughput must be positive, got {}", args.throughput);
    }
    let partitions = args.target.ensure_topic()?;
    // librdkafka assigns partitions only to a consumer with a group id; nothing is committed.
    let consumer_config = args.target.config_with(&[("group.id", format!("silt-perf-e2e-{}", std::process::id())), ("enable.auto.commit", "false".into())])?;
    let consumer: BaseConsumer = consumer_config.create().context("creating a consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(&args.target.topic, partition, METADATA_TIMEOUT).context("fetching watermarks")?;
        assignment.add_partition_offset(&args.target.topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment).context("assigning partitions")?;

    // Latency, not batching: send each record as soon as it is produced.
    let producer_config = args.target.config_with(&[("acks", parse_acks(&args.acks)?.to_owned()), ("linger.ms", "0".into())])?;
    let producer: ThreadedProducer<DefaultProducerContext> = producer_config.create().context("creating a producer")?;

    let meter = Meter::new();
    let reporter = Reporter::start(meter.clone(), "end-to-end", args.target.report_interval(), args.target.json);
    let records = args.records;
    let warm = Arc::new(AtomicBool::new(false));
    let (origin_tx, origin_rx) = std::sync::mpsc::sync_channel(1);
    let receiver = {
        let meter = meter.clone();
        let warm = warm.clone();
        std::thread::Builder::new()
            .name("perf-e2e-consumer".into())
            .spawn(move || receive(&consumer, &meter, &warm, origin_rx, records))
            .context("spawning the consumer thread")?
    };
    let mut value = payload(args.record_size);
    // Warm up: until the consumer has received a record, the first records
    // would time its connecting and first fetch, not the broker.
    value[..STAMP_BYTES].copy_from_slice(&WARM_UP_STAMP.to_le_bytes());
    let warm_up_deadline = Instant::now() + DRAIN_TIMEOUT;
    while !warm.load(Ordering::Acquire) {
        if Instant::now() > warm_up_deadline {
            bail!("the consumer received no warm-up record within {DRAIN_TIMEOUT:?}");
        }
        send(&producer, BaseRecord::to(&args.target.topic).payload(&value[..]).partition(0))?;
        producer.flush(DRAIN_TIMEOUT).context("flushing a warm-up record")?;
        std::thread::sleep(WARM_UP_INTERVAL);
    }
    let origin = Instant::now();
    origin_tx.send(origin).context("starting the consumer's clock")?;
    for i in 0..records {
        let due = origin + Duration::from_secs_f64(i as f64 / args.throughput);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = origin.elapsed().as_nanos() as u64;
        value[..STAMP_BYTES].copy_from_slice(&sent.to_le_bytes());
        let partition = (i % partitions as u64) as i32;
        send(&producer, BaseRecord::to(&args.target.topic).payload(&value[..]).partition(partition))?;
    }
    producer.flush(DRAIN_TIMEOUT).context("flushing the producer")?;
    let report = finish(&meter, reporter, "end-to-end", vec![receiver])?;
    if report.records < records {
        bail!("received {} of {records} records within {DRAIN_TIMEOUT:?} of the last send", report.records);
    }
    Ok(report)
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, mut record: BaseRecord<'_, [u8], [u8]>) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                std::thread::sleep(Duration::from_millis(1));
                record = back;
            }
            Err((e, _)) => return Err(e).context("producing a record"),
        }
    }
}

fn receive(consumer: &BaseConsumer, meter: &Arc<Meter>, warm: &AtomicBool, origin: std::sync::mpsc::Receiver<Instant>, records: u64) -> anyhow::Result<()> {
    let mut local = latency_histogram();
    let mut last = Instant::now();
    let mut received = 0u64;
    let mut clock = None;
    while received < records && last.elapsed() < DRAIN_TIMEOUT {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let Some(stamp) = message.payload().and_then(|p| p.get(..STAMP_BYTES)) else { continue };
                let sent = u64::from_le_bytes(stamp.try_into().expect("8 bytes"));
                last = Instant::now();
                if sent == WARM_UP_STAMP {
                    warm.store(true, Ordering::Release);
                    continue;
                }
                let origin = match clock {
                    Some(origin) => origin,
                    None => *clock.insert(origin.recv().context("the producer stopped before sending")?),
                };
                record_latency(&mut local, origin.elapsed().saturating_sub(Duration::from_nanos(sent)));
                meter.add(1, message.payload_len() as u64);
                received += 1;
                if received.is_multiple_of(1000) {
                    meter.add_latencies(&local);
                    local.reset();
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => {
                meter.add_error();
                tracing::warn!(cause = %e, "consume error");
            }
        }
    }
    meter.add_latencies(&local);
    Ok(())
}
