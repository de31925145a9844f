//! `silt perf produce`: Kafka's `kafka-producer-perf-test` for any broker.
//!
//! Each producer is a librdkafka `BaseProducer` on its own thread. A record's
//! latency runs from `send` to its delivery report (what an application
//! waiting for acknowledgement sees); the send time travels in the delivery
//! opaque, so measuring allocates nothing per record.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::client::{parse_acks, Target};
use super::raw::RawArgs;
use super::stats::{finish, latency_histogram, record_latency, Meter, Report, Reporter};

/// How long the final flush may take before records count as lost.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// Records sent between polls for delivery reports.
const POLL_EVERY_RECORDS: u64 = 256;
/// Delivery reports merged into the shared histogram at once.
const MERGE_EVERY_REPORTS: u64 = 4096;
/// Client-side queue of unsent records, in KiB.
const QUEUE_KIBIBYTES_MAX: u64 = 64 * 1024;
/// Records produced when neither `--records` nor `--duration-s` is given.
pub(crate) const DEFAULT_RECORDS: u64 = 100_000;

#[derive(clap::Args, Debug, Clone)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub target: Target,
    /// Bytes of value per record (no key).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records to produce across all producers (default 100000 unless --duration-s is given).
    #[arg(long)]
    pub records: Option<u64>,
    /// Produce for this many seconds instead of a record count.
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Target records per second across all producers; unlimited when absent or <= 0.
    #[arg(long)]
    pub throughput: Option<f64>,
    /// 0, 1 or all.
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// librdkafka `batch.size` (bytes per partition batch).
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: u64,
    /// librdkafka `linger.ms`.
    #[arg(long, default_value_t = 5.0)]
    pub linger_ms: f64,
    /// Producer clients, each on its own thread and connection.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Produce only to partitions 0..N (round robin); default: every partition.
    #[arg(long)]
    pub active_partitions: Option<i32>,
    // --raw: pre-encoded requests instead of librdkafka (`--batch-size`
    // bytes per partition batch; `--linger-ms` does not apply).
    #[command(flatten)]
    pub raw: RawArgs,
}

/// Per-producer delivery bookkeeping. Delivery reports are served by `poll`
/// on the producing thread, so the mutex is uncontended; it is there because
/// librdkafka contexts must be `Sync`.
struct Deliveries {
    origin: Instant,
    meter: Arc<Meter>,
    /// Latencies not yet merged into the meter, and how many.
    local: Histogram<u64>,
    pending: u64,
}

impl Deliveries {
    fn merge(&mut self) {
        self.meter.add_latencies(&self.local);
        self.local.reset();
        self.pending = 0;
    }
}

struct DeliveryContext(Mutex<Deliveries>);

impl DeliveryContext {
    fn lock(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    /// Nanoseconds since `origin` when the record was sent.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_ns: usize) {
        let mut deliveries = self.lock();
        match result {
            Ok(message) => {
                let latency = deliveries.origin.elapsed().saturating_sub(Duration::from_nanos(sent_at_ns as u64));
                deliveries.meter.add(1, message.payload_len() as u64);
                record_latency(&mut deliveries.local, latency);
                deliveries.pending += 1;
                if deliveries.pending >= MERGE_EVERY_REPORTS {
                    deliveries.merge();
                }
            }
            Err((e, _)) => {
                deliveries.meter.add_error();
                tracing::debug!(cause = %e, "delivery failed");
            }
        }
    }
}

/// How a producer thread knows it is done.
#[derive(Clone, Copy)]
enum Until {
    Records(u64),
    Deadline(Instant),
}

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let report = if args.raw.raw { super::raw::produce::produce(&args)? } else { produce(&args)? };
    report.print(args.target.json);
    if report.errors > 0 {
        bail!("{} records were not acknowledged", report.errors);
    }
    Ok(())
}

/// Runs the produce test and returns its report.
pub fn produce(args: &ProduceArgs) -> anyhow::Result<Report> {
    if args.producers == 0 {
        bail!("--producers must be at least 1");
    }
    let partitions = args.target.ensure_topic()?;
    let active = args.active_partitions.unwrap_or(partitions);
    if active < 1 || active > partitions {
        bail!("--active-partitions must be 1..={partitions}, got {active}");
    }
    let config = args.target.config_with(&[
        ("acks", parse_acks(&args.acks)?.to_owned()),
        ("compression.type", args.compression.clone()),
        ("batch.size", args.batch_size.to_string()),
        ("linger.ms", args.linger_ms.to_string()),
        // At most 64 MiB waiting in the client, like the Java producer's
        // 32 MiB buffer.memory: beyond that, sends wait and latencies stay
        // what the broker causes rather than the client's own queue.
        ("queue.buffering.max.kbytes", QUEUE_KIBIBYTES_MAX.to_string()),
    ])?;
    let until = match (args.records, args.duration_s) {
        (Some(_), Some(_)) => bail!("give --records or --duration-s, not both"),
        (None, Some(secs)) => Until::Deadline(Instant::now() + Duration::from_secs_f64(secs)),
        (Some(n), None) => Until::Records(n),
        (None, None) => Until::Records(DEFAULT_RECORDS),
    };
    let rate_per_producer = args.throughput.filter(|r| *r > 0.0).map(|r| r / f64::from(args.producers));
    let meter = Meter::new();
    let reporter = Reporter::start(meter.clone(), "produce", args.target.report_interval(), args.target.json);
    let origin = Instant::now();
    let payload: Arc<[u8]> = payload(args.record_size).into();
    let threads: Vec<_> = (0..args.producers)
        .map(|i| {
            let until = match until {
                Until::Records(n) => Until::Records(n / u64::from(args.producers) + u64::from(u64::from(i) < n % u64::from(args.producers))),
                deadline => deadline,
            };
            let context = DeliveryContext(Mutex::new(Deliveries { origin, meter: meter.clone(), local: latency_histogram(), pending: 0 }));
            let producer: BaseProducer<DeliveryContext> = config.create_with_context(context).context("creating a producer")?;
            let topic = args.target.topic.clone();
            let payload = payload.clone();
            let first_partition = (i as i32) % active;
            std::thread::Builder::new()
                .name(format!("perf-producer-{i}"))
                .spawn(move || produce_loop(&producer, &topic, &payload, active, first_partition, until, rate_per_producer, origin))
                .context("spawning a producer thread")
        })
        .collect::<anyhow::Result<_>>()?;
    finish(&meter, reporter, "produce", threads)
}

#[allow(clippy::too_many_arguments, reason = "the loop's settings are independent knobs of one run")]
fn produce_loop(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    payload: &[u8],
    partitions: i32,
    first_partition: i32,
    until: Until,
    rate: Option<f64>,
    origin: Instant,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut partition = first_partition;
    loop {
        match until {
            Until::Records(n) if sent >= n => break,
            Until::Deadline(at) if sent.is_multiple_of(POLL_EVERY_RECORDS) && Instant::now() >= at => break,
            _ => {}
        }
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                producer.poll(Duration::ZERO);
                std::thread::sleep(due - now);
            }
        }
        let sent_at = origin.elapsed().as_nanos() as usize;
        let mut record = BaseRecord::with_opaque_to(topic, sent_at).payload(payload).partition(partition);
        loop {
            match producer.send::<[u8], [u8]>(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The client's queue is full: serve delivery reports, then retry.
                    producer.poll(Duration::from_millis(5));
                    record = back;
                }
                Err((e, _)) => return Err(e).context("producing a record"),
            }
        }
        sent += 1;
        partition = (partition + 1) % partitions;
        if sent.is_multiple_of(POLL_EVERY_RECORDS) {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(FLUSH_TIMEOUT).context("flushing the producer")?;
    producer.context().lock().merge();
    Ok(())
}

/// A record value of `size` bytes: printable and not trivially compressible,
/// like the random payload of Kafka's perf tool.
pub fn payload(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'A' + (state % 26) as u8
        })
        .collect()
}
