//! `silt perf end-to-end`: the latency from a producer's send to a
//! consumer's receipt of the same record (Kafka's `EndToEndLatency`).
//!
//! One producer sends at a fixed rate with the send time (nanoseconds since
//! the run began) in the first 8 bytes of each value; one consumer, in the
//! same process and so on the same clock, reads from the high watermarks
//! found before the first send and records `now - sent` for each record.

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
use super::stats::{latency_histogram, record_latency, Meter, Report, Reporter};

/// How long the consumer waits for the last records after the producer is done.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the value that carry the send time.
const STAMP_BYTES: usize = 8;

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
    let config = args.target.config()?;
    let mut consumer_config = config.clone();
    // librdkafka assigns partitions only to a consumer with a group id; nothing is committed.
    consumer_config.set("group.id", format!("silt-perf-e2e-{}", std::process::id())).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = consumer_config.create().context("creating a consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(&args.target.topic, partition, METADATA_TIMEOUT).context("fetching watermarks")?;
        assignment.add_partition_offset(&args.target.topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment).context("assigning partitions")?;

    let mut producer_config = config.clone();
    // Latency, not batching: send each record as soon as it is produced.
    producer_config.set("acks", parse_acks(&args.acks)?).set("linger.ms", "0");
    let producer: ThreadedProducer<DefaultProducerContext> = producer_config.create().context("creating a producer")?;

    let meter = Meter::new();
    let reporter = Reporter::start(meter.clone(), "end-to-end", args.target.report_interval(), args.target.json);
    let origin = Instant::now();
    let records = args.records;
    let receiver = {
        let meter = meter.clone();
        std::thread::Builder::new()
            .name("perf-e2e-consumer".into())
            .spawn(move || receive(&consumer, &meter, origin, records))
            .context("spawning the consumer thread")?
    };
    let mut value = payload(args.record_size);
    for i in 0..records {
        let due = origin + Duration::from_secs_f64(i as f64 / args.throughput);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = origin.elapsed().as_nanos() as u64;
        value[..STAMP_BYTES].copy_from_slice(&sent.to_le_bytes());
        let partition = (i % partitions as u64) as i32;
        let mut record = BaseRecord::to(&args.target.topic).payload(&value[..]).partition(partition);
        loop {
            match producer.send::<[u8], [u8]>(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    std::thread::sleep(Duration::from_millis(1));
                    record = back;
                }
                Err((e, _)) => return Err(e).context("producing a record"),
            }
        }
    }
    producer.flush(DRAIN_TIMEOUT).context("flushing the producer")?;
    receiver.join().map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    let end = Instant::now();
    drop(reporter);
    let report = meter.report("end-to-end", end);
    if report.records < records {
        bail!("received {} of {records} records within {DRAIN_TIMEOUT:?} of the last send", report.records);
    }
    Ok(report)
}

fn receive(consumer: &BaseConsumer, meter: &Arc<Meter>, origin: Instant, records: u64) -> anyhow::Result<()> {
    let mut local = latency_histogram();
    let mut last = Instant::now();
    let mut received = 0u64;
    while received < records && last.elapsed() < DRAIN_TIMEOUT {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let now = origin.elapsed();
                let Some(stamp) = message.payload().and_then(|p| p.get(..STAMP_BYTES)) else { continue };
                let sent = u64::from_le_bytes(stamp.try_into().expect("8 bytes"));
                record_latency(&mut local, now.saturating_sub(Duration::from_nanos(sent)));
                meter.add(1, message.payload_len() as u64);
                received += 1;
                last = Instant::now();
                if received % 1000 == 0 {
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
