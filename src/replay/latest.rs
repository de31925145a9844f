//! `silt replay --latest-per-key`: the table a compacted topic stands for,
//! one partition at a time: the latest record of every key, read from the
//! archive (which keeps every version: compacted segments are archived
//! before they are cleaned) and then from the broker for the local tail past
//! the archive's end. A key whose latest record is a tombstone is left out.
//! Records go out in offset order.
//!
//! Memory: one record per distinct key of the partition (the snapshot itself).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use silt_tiering::archive::PartitionArchive;
use silt_tiering::batch::{Header, Record};

/// How long the tail may take to arrive from the broker before replay gives up.
const TAIL_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The latest record of each key seen so far. Records without a key are
/// not part of a table and are ignored.
#[derive(Debug, Default)]
pub(super) struct Latest {
    by_key: HashMap<Bytes, Record>,
}

impl Latest {
    pub(super) fn offer(&mut self, record: Record) {
        let Some(key) = record.key.clone() else { return };
        match self.by_key.get(&key) {
            Some(seen) if seen.offset > record.offset => {}
            _ => {
                self.by_key.insert(key, record);
            }
        }
    }

    /// The snapshot: live keys only, in offset order.
    pub(super) fn into_records(self) -> Vec<Record> {
        let mut out: Vec<Record> = self.by_key.into_values().filter(|r| r.value.is_some()).collect();
        out.sort_by_key(|r| r.offset);
        out
    }
}

/// Offers every archived record of `part`; returns the archive's end offset.
pub(super) async fn read_archive(part: &std::sync::Arc<PartitionArchive>, latest: &mut Latest) -> anyhow::Result<i64> {
    let manifest = part.manifest();
    let (Some(start), Some(end)) = (manifest.start_offset(), manifest.end_offset()) else { return Ok(0) };
    let mut next = start;
    while next < end {
        let Some((records, after)) = super::read_chunk(part, next, end).await? else { break };
        for record in records {
            latest.offer(record);
        }
        next = after;
    }
    Ok(end)
}

/// Offers the records of `partition` from `from` to the broker's high
/// watermark, read with a Kafka consumer (the local tail the archive does
/// not hold yet). Blocking: run it off the async threads.
pub(super) fn read_tail(bootstrap: &str, topic: &str, partition: i32, from: i64, latest: &mut Latest) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "silt-replay-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the consumer for the local tail")?;
    let (low, high) =
        consumer.fetch_watermarks(topic, partition, TAIL_TIMEOUT).with_context(|| format!("asking {bootstrap} for the offsets of {topic}-{partition}"))?;
    let from = from.max(low);
    if from >= high {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from)).context("building the partition list")?;
    consumer.assign(&tpl).context("assigning the partition")?;
    let deadline = Instant::now() + TAIL_TIMEOUT;
    let mut read = 0u64;
    loop {
        if Instant::now() > deadline {
            bail!("the tail of {topic}-{partition} did not arrive within {TAIL_TIMEOUT:?} (read up to {read} records of [{from}, {high}))");
        }
        match consumer.poll(POLL_INTERVAL) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(read),
            Some(Err(e)) => return Err(e).context("reading the local tail"),
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| h.iter().map(|h| Header { key: Bytes::copy_from_slice(h.key.as_bytes()), value: h.value.map(Bytes::copy_from_slice) }).collect())
                    .unwrap_or_default();
                latest.offer(Record {
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis().unwrap_or(-1),
                    key: m.key().map(Bytes::copy_from_slice),
                    value: m.payload().map(Bytes::copy_from_slice),
                    headers,
                });
                read += 1;
                if m.offset() + 1 >= high {
                    return Ok(read);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, key: &str, value: Option<&str>) -> Record {
        Record {
            offset,
            timestamp: offset,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![],
        }
    }

    #[test]
    fn keeps_the_latest_record_per_key_and_drops_deleted_keys() {
        let mut latest = Latest::default();
        for r in [record(0, "a", Some("1")), record(1, "b", Some("1")), record(2, "a", Some("2")), record(3, "b", None), record(4, "c", Some("1"))] {
            latest.offer(r);
        }
        latest.offer(record(1, "a", Some("old"))); // an older record offered late changes nothing
        let out: Vec<(i64, Option<Bytes>)> = latest.into_records().into_iter().map(|r| (r.offset, r.value)).collect();
        assert_eq!(out, vec![(2, Some(Bytes::from_static(b"2"))), (4, Some(Bytes::from_static(b"1")))]);
    }
}
