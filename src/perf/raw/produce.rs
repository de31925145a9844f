//! The raw producer: Produce requests encoded once, sent pipelined.
//!
//! Each connection owns some partitions of one leader. Before the run it
//! encodes one request holding a batch of `records_per_batch` records for
//! each of its partitions, and one smaller request for its share's
//! remainder; during the run it writes the same frame again (only the
//! correlation id changes, patched into a copy of the first 12 bytes) while
//! at most `--in-flight` requests wait, and reads each response to count the
//! records of every partition acknowledged without error. Every record has
//! the same value and the run's start time as its timestamp.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::{Decodable, HeaderVersion};
use silt_tiering::batch::{encode_batch, BatchFields, Record, HEADER_LEN};

use super::cluster::{discover, topic_name};
use super::wire::{encode_request, Connection};
use super::{assign, Assignment};
use crate::perf::produce::{payload, ProduceArgs};
use crate::perf::stats::{finish, latency_histogram, record_latency, Meter, Report, Reporter};

/// Produce names topics (not ids) up to v12.
const PRODUCE_VERSION_MAX: i16 = 12;
/// How long the broker may take to acknowledge (Kafka's `request.timeout.ms`).
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Upper bound on `--in-flight`, so a typo cannot queue gigabytes.
const IN_FLIGHT_MAX: u32 = 64;
/// Upper bound on one record batch: Kafka's default `max.message.bytes`
/// (1 MiB + 12) less room for the batch's own framing.
const BATCH_BYTES_MAX: u64 = 1 << 20;
/// Bytes a record adds to its value inside a batch (length, attributes,
/// deltas, key and header count as varints), at most, for values under 2 MiB.
const RECORD_OVERHEAD_BYTES_MAX: u64 = 16;
/// Request latencies merged into the run's histogram at once.
const MERGE_EVERY_RESPONSES: u64 = 256;

/// One pre-encoded request and what it carries per partition.
struct Template {
    frame: Bytes,
    /// (partition, records, batch bytes) of each batch.
    batches: Vec<(i32, u64, u64)>,
}

impl Template {
    fn records(&self) -> u64 {
        self.batches.iter().map(|b| b.1).sum()
    }
}

/// Records per batch for `--batch-size` bytes of `record_size`-byte values:
/// at least one, and no batch above [`BATCH_BYTES_MAX`].
fn records_per_batch(batch_bytes: u64, record_size: u64) -> u64 {
    let per_record = record_size + RECORD_OVERHEAD_BYTES_MAX;
    let budget = batch_bytes.min(BATCH_BYTES_MAX).saturating_sub(HEADER_LEN as u64);
    (budget / per_record).max(1)
}

/// How `records` spread over `partitions` in batches of at most `per_batch`:
/// partition by partition, a full batch each until the records run out.
fn spread(partitions: &[i32], per_batch: u64, records: u64) -> Vec<(i32, u64)> {
    let mut left = records;
    partitions
        .iter()
        .map_while(|&p| {
            let n = per_batch.min(left);
            left -= n;
            (n > 0).then_some((p, n))
        })
        .collect()
}

/// Encodes one Produce request of `spread` batches.
fn template(topic: &str, value: &Bytes, spread: &[(i32, u64)], acks: i16, version: i16, timestamp_ms: i64) -> anyhow::Result<Template> {
    let mut partition_data = Vec::with_capacity(spread.len());
    let mut batches = Vec::with_capacity(spread.len());
    for &(partition, records) in spread {
        let last_offset_delta = i32::try_from(records - 1).context("too many records in one batch")?;
        let fields = BatchFields {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: 0,
            last_offset_delta,
            base_timestamp: timestamp_ms,
            max_timestamp: timestamp_ms,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        let records: Vec<Record> =
            (0..records as i64).map(|offset| Record { offset, timestamp: timestamp_ms, key: None, value: Some(value.clone()), headers: Vec::new() }).collect();
        let batch = encode_batch(&fields, &records);
        batches.push((partition, records.len() as u64, batch.len() as u64));
        partition_data.push(PartitionProduceData::default().with_index(partition).with_records(Some(batch)));
    }
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(PRODUCE_TIMEOUT_MS)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(partition_data)]);
    // The correlation id is patched in at each send.
    Ok(Template { frame: encode_request(&request, version, 0)?, batches })
}

/// Kafka's `acks` for an `--acks` argument; the raw producer waits for every
/// response, so acks=0 (no response) is refused.
fn raw_acks(acks: &str) -> anyhow::Result<i16> {
    match crate::perf::client::parse_acks(acks)? {
        "1" => Ok(1),
        "all" => Ok(-1),
        _ => bail!("--raw needs --acks 1 or all: it counts what the broker acknowledges"),
    }
}

/// Refuses the librdkafka-only settings, which --raw would silently ignore.
fn check_args(args: &ProduceArgs) -> anyhow::Result<()> {
    if args.throughput.is_some() {
        bail!("--throughput is not supported with --raw (it sends as fast as the broker takes)");
    }
    if args.compression != "none" {
        bail!("--raw sends uncompressed batches; --compression must be none");
    }
    if args.producers != 1 {
        bail!("--raw uses --connections, not --producers");
    }
    if !args.target.client_props.is_empty() {
        bail!("--client-prop sets librdkafka options, which --raw does not use");
    }
    if args.raw.connections == 0 || args.raw.in_flight == 0 || args.raw.in_flight > IN_FLIGHT_MAX {
        bail!("--connections must be at least 1 and --in-flight 1..={IN_FLIGHT_MAX}");
    }
    if args.record_size == 0 {
        bail!("--record-size must be at least 1");
    }
    Ok(())
}

/// Runs the raw produce test and returns its report (bytes are record-batch bytes).
pub fn produce(args: &ProduceArgs) -> anyhow::Result<Report> {
    check_args(args)?;
    let acks = raw_acks(&args.acks)?;
    let leaders = discover(&args.target.bootstrap_servers, &args.target.topic, Some(args.target.partitions))?;
    let active = args.active_partitions.unwrap_or(leaders.len() as i32);
    if active < 1 || active as usize > leaders.len() {
        bail!("--active-partitions must be 1..={}, got {active}", leaders.len());
    }
    let active: Vec<_> = leaders.into_iter().filter(|p| p.partition < active).collect();
    let assignments = assign(&active, args.raw.connections as usize);
    let until = match (args.records, args.duration_s) {
        (Some(_), Some(_)) => bail!("give --records or --duration-s, not both"),
        (None, Some(secs)) => Until::Deadline(Instant::now() + Duration::from_secs_f64(secs)),
        (Some(n), None) => Until::Records(n),
        (None, None) => Until::Records(crate::perf::produce::DEFAULT_RECORDS),
    };
    let per_batch = records_per_batch(args.batch_size, args.record_size as u64);
    let value = Bytes::from(payload(args.record_size));
    let timestamp_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?.as_millis())?;
    // Connect and encode before the clock starts.
    let count = assignments.len() as u64;
    let mut workers = Vec::with_capacity(assignments.len());
    for (i, Assignment { leader, partitions }) in assignments.into_iter().enumerate() {
        let conn = Connection::open(&leader)?;
        let version = conn.versions.pick::<ProduceRequest>(PRODUCE_VERSION_MAX)?;
        let full = template(&args.target.topic, &value, &spread(&partitions, per_batch, u64::MAX), acks, version, timestamp_ms)?;
        let (requests, tail) = match until {
            Until::Records(n) => {
                let share = n / count + u64::from((i as u64) < n % count);
                let rest = share % full.records();
                let tail =
                    (rest > 0).then(|| template(&args.target.topic, &value, &spread(&partitions, per_batch, rest), acks, version, timestamp_ms)).transpose()?;
                (Some(share / full.records()), tail)
            }
            Until::Deadline(_) => (None, None),
        };
        workers.push(Worker { conn, version, full, tail, requests, in_flight: args.raw.in_flight as usize });
    }
    let meter = Meter::new();
    let reporter = Reporter::start(meter.clone(), "produce", args.target.report_interval(), args.target.json);
    let deadline = match until {
        Until::Deadline(at) => Some(at),
        Until::Records(_) => None,
    };
    let threads = workers
        .into_iter()
        .enumerate()
        .map(|(i, worker)| {
            let meter = meter.clone();
            std::thread::Builder::new().name(format!("perf-raw-producer-{i}")).spawn(move || worker.run(&meter, deadline)).context("spawning a producer thread")
        })
        .collect::<anyhow::Result<_>>()?;
    finish(&meter, reporter, "produce", threads)
}

#[derive(Clone, Copy)]
enum Until {
    Records(u64),
    Deadline(Instant),
}

/// One connection's run.
struct Worker {
    conn: Connection,
    version: i16,
    full: Template,
    tail: Option<Template>,
    /// Full requests to send; `None`: until the deadline.
    requests: Option<u64>,
    in_flight: usize,
}

impl Worker {
    fn run(mut self, meter: &Arc<Meter>, deadline: Option<Instant>) -> anyhow::Result<()> {
        let mut sent: u64 = 0;
        let mut tail_sent = false;
        // (correlation id, sent at, the tail?) of each request awaiting its response.
        let mut waiting: VecDeque<(i32, Instant, bool)> = VecDeque::with_capacity(self.in_flight);
        let mut latencies = latency_histogram();
        let mut since_merge = 0;
        loop {
            while waiting.len() < self.in_flight {
                let is_tail = match (self.requests, deadline) {
                    (Some(n), _) if sent < n => false,
                    (Some(_), _) if self.tail.is_some() && !tail_sent => true,
                    (None, Some(at)) if Instant::now() < at => false,
                    _ => break,
                };
                let template = if is_tail { self.tail.as_ref() } else { Some(&self.full) };
                let frame = template.context("a tail request is due but none was encoded")?.frame.clone();
                let id = self.conn.correlation_id();
                self.conn.send_with_id(&frame, id)?;
                waiting.push_back((id, Instant::now(), is_tail));
                if is_tail {
                    tail_sent = true;
                } else {
                    sent += 1;
                }
            }
            let Some((id, sent_at, is_tail)) = waiting.pop_front() else { break };
            let mut body = self.conn.receive(id, ProduceResponse::header_version(self.version))?;
            let response = ProduceResponse::decode(&mut body, self.version).context("decoding a Produce response")?;
            record_latency(&mut latencies, sent_at.elapsed());
            let template = if is_tail { self.tail.as_ref() } else { Some(&self.full) };
            let template = template.context("a response to a request never sent")?;
            let (records, bytes, errors) = acknowledged(template, &response);
            meter.add(records, bytes);
            for _ in 0..errors {
                meter.add_error();
            }
            since_merge += 1;
            if since_merge >= MERGE_EVERY_RESPONSES {
                meter.add_latencies(&latencies);
                latencies.reset();
                since_merge = 0;
            }
        }
        meter.add_latencies(&latencies);
        Ok(())
    }
}

/// Records and bytes of `template` that `response` acknowledges without
/// error, and how many of its batches failed (or went unanswered).
fn acknowledged(template: &Template, response: &ProduceResponse) -> (u64, u64, u64) {
    let (mut records, mut bytes, mut errors) = (0, 0, 0);
    for &(partition, n, size) in &template.batches {
        let answer = response.responses.iter().flat_map(|t| &t.partition_responses).find(|p| p.index == partition);
        match answer {
            Some(p) if p.error_code == 0 => {
                records += n;
                bytes += size;
            }
            Some(p) => {
                errors += 1;
                tracing::debug!(partition, error_code = p.error_code, "produce failed");
            }
            None => errors += 1,
        }
    }
    (records, bytes, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    use silt_tiering::batch::decode_records;

    #[test]
    fn batches_stay_under_a_mebibyte() {
        assert_eq!(records_per_batch(1_000_000, 1024), (1_000_000 - 61) / 1040);
        assert_eq!(records_per_batch(u64::MAX, 100), ((1 << 20) - 61) / 116);
        assert_eq!(records_per_batch(10, 1024), 1, "at least one record");
    }

    #[test]
    fn records_spread_partition_by_partition() {
        assert_eq!(spread(&[3, 4, 5], 10, u64::MAX), vec![(3, 10), (4, 10), (5, 10)]);
        assert_eq!(spread(&[3, 4, 5], 10, 15), vec![(3, 10), (4, 5)]);
        assert_eq!(spread(&[3], 10, 0), vec![]);
    }

    #[test]
    fn a_template_is_a_produce_request_of_valid_batches() {
        let value = Bytes::from(payload(100));
        let t = template("t", &value, &[(0, 3), (2, 5)], -1, 9, 1_700_000_000_000).unwrap();
        assert_eq!(t.records(), 8);
        let mut frame = t.frame.slice(4..);
        let header = kafka_protocol::messages::RequestHeader::decode(&mut frame, ProduceRequest::header_version(9)).unwrap();
        assert_eq!(header.request_api_version, 9);
        let request = ProduceRequest::decode(&mut frame, 9).unwrap();
        assert_eq!(request.acks, -1);
        let data = &request.topic_data[0].partition_data;
        assert_eq!(data.iter().map(|p| p.index).collect::<Vec<_>>(), vec![0, 2]);
        let batch = decode_records(data[1].records.as_ref().unwrap()).unwrap();
        assert_eq!(batch.records.len(), 5);
        assert!(batch.records.iter().all(|r| r.value.as_ref() == Some(&value) && r.key.is_none()));
        assert_eq!(batch.records[4].offset, 4);
        assert_eq!(t.batches[1], (2, 5, data[1].records.as_ref().unwrap().len() as u64));
    }

    #[test]
    fn only_error_free_partitions_count() {
        let value = Bytes::from(payload(10));
        let t = template("t", &value, &[(0, 3), (1, 4), (2, 5)], 1, 9, 0).unwrap();
        let answer = |index, error_code| PartitionProduceResponse::default().with_index(index).with_error_code(error_code);
        let response =
            ProduceResponse::default().with_responses(vec![TopicProduceResponse::default().with_partition_responses(vec![answer(0, 0), answer(1, 6)])]);
        let (records, bytes, errors) = acknowledged(&t, &response);
        assert_eq!((records, errors), (3, 2), "partition 1 failed, partition 2 went unanswered");
        assert_eq!(bytes, t.batches[0].2);
    }

    #[test]
    fn acks_zero_is_refused() {
        assert!(raw_acks("0").is_err());
        assert_eq!(raw_acks("all").unwrap(), -1);
    }
}
