//! The raw consumer: Fetch requests whose answers are counted, not read.
//!
//! The run reads each partition from its log start to the high watermark
//! found when it starts. Each connection fetches its partitions (see
//! [`assign`]); a partition shared by several connections is split into as
//! many offset ranges. Fetches are not pipelined on a connection (the next
//! offset is in the answer), so `--connections` is the parallelism. A
//! response is walked batch header by batch header with the project's batch
//! codec; records are never decoded. Records are counted as offsets within
//! the wanted range (the same thing for topics without compaction or
//! transaction markers); bytes are whole record batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::FetchRequest;
use silt_tiering::batch::BatchHeader;

use super::cluster::{discover, offsets, topic_name};
use super::wire::Connection;
use super::{assign, Assignment};
use crate::perf::consume::ConsumeArgs;
use crate::perf::stats::{finish, Meter, Report, Reporter};

/// Fetch names topics (not ids) up to v12.
const FETCH_VERSION_MAX: i16 = 12;
/// Bytes asked for per partition and per request. Large, so that the
/// broker, not the request rate, is the limit; under Kafka's default
/// `fetch.max.bytes` (55 MiB).
const PARTITION_FETCH_BYTES: i32 = 4 << 20;
const FETCH_BYTES: i32 = 32 << 20;
/// How long the broker may hold a fetch that finds nothing new.
const FETCH_MAX_WAIT_MS: i32 = 500;

/// A range of one partition's offsets that one connection reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    partition: i32,
    /// The next offset to fetch.
    position: i64,
    /// The first offset not wanted.
    end: i64,
}

/// Splits `[start, end)` into `parts` near-equal ranges and returns the `index`th.
fn split(start: i64, end: i64, parts: usize, index: usize) -> (i64, i64) {
    let len = (end - start).max(0) as u128;
    let at = |i: usize| start + (len * i as u128 / parts as u128) as i64;
    (at(index), at(index + 1))
}

/// The ranges of every connection: a partition held by k connections is
/// split into k ranges of its offsets.
fn ranges(assignments: &[Assignment], offsets: &BTreeMap<i32, (i64, i64)>) -> anyhow::Result<Vec<Vec<Range>>> {
    let mut holders: BTreeMap<i32, usize> = BTreeMap::new();
    for a in assignments {
        for &p in &a.partitions {
            *holders.entry(p).or_default() += 1;
        }
    }
    let mut seen: BTreeMap<i32, usize> = BTreeMap::new();
    assignments
        .iter()
        .map(|a| {
            a.partitions
                .iter()
                .map(|&partition| {
                    let &(start, end) = offsets.get(&partition).with_context(|| format!("no offsets for partition {partition}"))?;
                    let index = seen.entry(partition).or_default();
                    let (position, end) = split(start, end, holders[&partition], *index);
                    *index += 1;
                    Ok(Range { partition, position, end })
                })
                .collect()
        })
        .collect()
}

/// What one fetched partition's records add: (records, bytes, the next
/// position). Records count as offsets inside `[range.position, range.end)`,
/// and a batch that straddles a range's edge adds its bytes in proportion
/// (so ranges of one partition add up to the partition); a batch cut off at
/// the end of the response is left for the next fetch.
fn count_batches(records: &Bytes, range: &Range) -> (u64, u64, i64) {
    let (mut count, mut bytes, mut position) = (0u64, 0u64, range.position);
    let mut at = 0;
    while let Ok(header) = BatchHeader::parse(&records[at..]) {
        let len = header.total_len();
        if len == 0 || at + len > records.len() {
            break;
        }
        let first = header.base_offset.max(position);
        let next = header.next_offset().min(range.end);
        if next > first {
            let wanted = (next - first) as u64;
            let offsets = (header.next_offset() - header.base_offset).max(1) as u64;
            count += wanted;
            bytes += (len as u64 * wanted.min(offsets)) / offsets;
        }
        position = position.max(header.next_offset());
        at += len;
    }
    (count, bytes, position)
}

/// Refuses settings that only mean something to librdkafka.
fn check_args(args: &ConsumeArgs) -> anyhow::Result<()> {
    if args.group.is_some() {
        bail!("--raw reads partitions directly; --group is not supported");
    }
    if args.consumers != 1 {
        bail!("--raw uses --connections, not --consumers");
    }
    if args.records.is_some() {
        bail!("--raw reads up to the high watermarks; --records is not supported");
    }
    if !args.target.client_props.is_empty() {
        bail!("--client-prop sets librdkafka options, which --raw does not use");
    }
    if args.raw.connections == 0 {
        bail!("--connections must be at least 1");
    }
    Ok(())
}

/// Runs the raw consume test and returns its report (bytes are record-batch bytes).
pub fn consume(args: &ConsumeArgs) -> anyhow::Result<Report> {
    check_args(args)?;
    let topic = args.target.topic.clone();
    let leaders = discover(&args.target.bootstrap_servers, &topic, None)?;
    let assignments = assign(&leaders, args.raw.connections as usize);
    let mut offsets_by_partition = BTreeMap::new();
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for p in &leaders {
        by_leader.entry(p.leader.as_str()).or_default().push(p.partition);
    }
    for (leader, partitions) in by_leader {
        offsets_by_partition.extend(offsets(&mut Connection::open(leader)?, &topic, &partitions)?);
    }
    let wanted: u64 = offsets_by_partition.values().map(|&(start, end)| (end - start).max(0) as u64).sum();
    let ranges = ranges(&assignments, &offsets_by_partition)?;
    let mut workers = Vec::with_capacity(assignments.len());
    for (assignment, ranges) in assignments.iter().zip(ranges) {
        let conn = Connection::open(&assignment.leader)?;
        let version = conn.versions.pick::<FetchRequest>(FETCH_VERSION_MAX)?;
        workers.push((conn, version, ranges));
    }
    let meter = Meter::new();
    let reporter = Reporter::start(meter.clone(), "consume", args.target.report_interval(), args.target.json);
    let idle = Duration::from_secs_f64(args.timeout_s.max(0.1));
    let threads = workers
        .into_iter()
        .enumerate()
        .map(|(i, (conn, version, ranges))| {
            let meter = meter.clone();
            let topic = topic.clone();
            std::thread::Builder::new()
                .name(format!("perf-raw-consumer-{i}"))
                .spawn(move || fetch_loop(conn, version, &topic, ranges, &meter, idle))
                .context("spawning a consumer thread")
        })
        .collect::<anyhow::Result<_>>()?;
    let report = finish(&meter, reporter, "consume", threads)?;
    if report.records < wanted {
        bail!("consumed {} of {wanted} records", report.records);
    }
    Ok(report)
}

/// Fetches until every range is read; fails when a partition answers with an
/// error or nothing new arrives for `idle`.
fn fetch_loop(mut conn: Connection, version: i16, topic: &str, mut ranges: Vec<Range>, meter: &Arc<Meter>, idle: Duration) -> anyhow::Result<()> {
    let mut last_progress = std::time::Instant::now();
    loop {
        ranges.retain(|r| r.position < r.end);
        if ranges.is_empty() {
            return Ok(());
        }
        let request =
            FetchRequest::default().with_max_wait_ms(FETCH_MAX_WAIT_MS).with_min_bytes(1).with_max_bytes(FETCH_BYTES).with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(
                    ranges
                        .iter()
                        .map(|r| {
                            FetchPartition::default().with_partition(r.partition).with_fetch_offset(r.position).with_partition_max_bytes(PARTITION_FETCH_BYTES)
                        })
                        .collect(),
                )]);
        let response = conn.call(&request, version).context("fetching")?;
        if response.error_code != 0 {
            bail!("fetch failed with error code {}", response.error_code);
        }
        let mut progressed = false;
        for answer in response.responses.iter().flat_map(|t| &t.partitions) {
            let Some(range) = ranges.iter_mut().find(|r| r.partition == answer.partition_index) else { continue };
            if answer.error_code != 0 {
                bail!("fetching {topic}-{} at offset {} failed with error code {}", range.partition, range.position, answer.error_code);
            }
            let Some(records) = &answer.records else { continue };
            let (count, bytes, position) = count_batches(records, range);
            meter.add(count, bytes);
            progressed |= position > range.position;
            range.position = position;
        }
        if progressed {
            last_progress = std::time::Instant::now();
        } else if last_progress.elapsed() > idle {
            bail!("no progress for {idle:?} fetching {topic} (positions {ranges:?})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silt_tiering::batch::{encode_batch, BatchFields, Record};

    fn batch(base_offset: i64, records: i64) -> Bytes {
        let fields = BatchFields {
            base_offset,
            partition_leader_epoch: 0,
            attributes: 0,
            last_offset_delta: records as i32 - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        let records: Vec<Record> = (0..records)
            .map(|i| Record { offset: base_offset + i, timestamp: 0, key: None, value: Some(Bytes::from_static(b"v")), headers: Vec::new() })
            .collect();
        encode_batch(&fields, &records)
    }

    #[test]
    fn offsets_split_into_near_equal_ranges() {
        assert_eq!((0..3).map(|i| split(10, 20, 3, i)).collect::<Vec<_>>(), vec![(10, 13), (13, 16), (16, 20)]);
        assert_eq!(split(5, 5, 2, 1), (5, 5));
    }

    #[test]
    fn shared_partitions_are_read_in_disjoint_ranges() {
        let assignments = vec![
            Assignment { leader: "a".into(), partitions: vec![0] },
            Assignment { leader: "a".into(), partitions: vec![1] },
            Assignment { leader: "a".into(), partitions: vec![0] },
        ];
        let offsets = BTreeMap::from([(0, (0, 100)), (1, (7, 9))]);
        let got = ranges(&assignments, &offsets).unwrap();
        assert_eq!(got[0], vec![Range { partition: 0, position: 0, end: 50 }]);
        assert_eq!(got[1], vec![Range { partition: 1, position: 7, end: 9 }]);
        assert_eq!(got[2], vec![Range { partition: 0, position: 50, end: 100 }]);
    }

    #[test]
    fn counting_clips_to_the_range_and_stops_at_a_cut_batch() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&batch(0, 10));
        buf.extend_from_slice(&batch(10, 10));
        let third = batch(20, 10);
        buf.extend_from_slice(&third[..third.len() - 3]);
        let buf = Bytes::from(buf);
        // From offset 5 to 15: half of the first batch, half of the second;
        // the cut third batch is left for the next fetch.
        let (count, bytes, position) = count_batches(&buf, &Range { partition: 0, position: 5, end: 15 });
        assert_eq!((count, position), (10, 20));
        assert!(bytes.abs_diff(third.len() as u64) <= 1, "two halves of equal batches (rounded down): {bytes}");
        let (count, bytes, _) = count_batches(&buf, &Range { partition: 0, position: 0, end: 30 });
        assert_eq!((count, bytes), (20, 2 * third.len() as u64));
        assert_eq!(count_batches(&Bytes::new(), &Range { partition: 0, position: 3, end: 9 }), (0, 0, 3));
    }
}
