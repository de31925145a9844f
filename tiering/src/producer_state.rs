//! Idempotent-producer state of one partition: for each producer id, its epoch
//! and its last few batches' sequence ranges, so a retried batch is answered
//! with its original offsets instead of being written twice.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::batch::BatchHeader;
use crate::error::LogError;

/// How many recent batches per producer are remembered for deduplication;
/// Kafka clients keep at most 5 requests in flight with idempotence.
pub const BATCHES_REMEMBERED: usize = 5;
/// Producers idle this long are forgotten (Kafka's `producer.id.expiration.ms`).
pub const PRODUCER_EXPIRATION_MS: i64 = 24 * 3600 * 1000;

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: Vec<BatchRecord>,
    /// When the broker last appended a batch of the producer: what expires it.
    pub last_timestamp_ms: i64,
    /// The max timestamp of the producer's last batch, as Kafka's
    /// DescribeProducers reports it (-1 in snapshots written before it was kept).
    #[serde(default = "no_timestamp")]
    pub last_batch_timestamp_ms: i64,
}

fn no_timestamp() -> i64 {
    -1
}

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence number this partition has from the producer (-1 if none is remembered).
    pub last_sequence: i32,
    /// The max timestamp of the producer's last batch (Kafka's `lastTimestamp`).
    pub last_timestamp_ms: i64,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// A new batch: append it.
    Append,
    /// A retry of a batch already in the log at these offsets.
    Duplicate(BatchRecord),
}

/// The state of all idempotent producers writing to one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

impl ProducerStateTable {
    /// Checks an incoming batch against the producer's state without changing it.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, LogError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let (pid, epoch, first) = (header.producer_id, header.producer_epoch, header.base_sequence);
        let Some(entry) = self.producers.get(&pid) else {
            // As in Kafka, any sequence starts a producer this partition has no
            // state for: its earlier batches may have been removed by retention
            // or DeleteRecords, or its state expired.
            return Ok(SequenceCheck::Append);
        };
        if epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch { producer_id: pid, epoch, current_epoch: entry.epoch });
        }
        if epoch > entry.epoch {
            return if first == 0 { Ok(SequenceCheck::Append) } else { Err(LogError::OutOfOrderSequence { producer_id: pid, sequence: first, expected: 0 }) };
        }
        let last = header.last_sequence();
        if let Some(seen) = entry.batches.iter().find(|b| b.first_sequence == first && b.last_sequence == last) {
            return Ok(SequenceCheck::Duplicate(*seen));
        }
        let expected = entry.batches.last().map_or(0, |b| next_sequence(b.last_sequence));
        if first != expected {
            return Err(LogError::OutOfOrderSequence { producer_id: pid, sequence: first, expected });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch that is now in the log (stamped with its offsets).
    pub fn record(&mut self, header: &BatchHeader, now_ms: i64) {
        if !header.has_producer_id() {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_insert_with(|| ProducerEntry {
            epoch: header.producer_epoch,
            batches: Vec::new(),
            last_timestamp_ms: now_ms,
            last_batch_timestamp_ms: header.max_timestamp,
        });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push(BatchRecord {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        if entry.batches.len() > BATCHES_REMEMBERED {
            entry.batches.remove(0);
        }
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(now_ms);
        entry.last_batch_timestamp_ms = header.max_timestamp;
    }

    /// Forgets batches at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }

    /// Forgets producers idle for longer than [`PRODUCER_EXPIRATION_MS`].
    pub fn expire(&mut self, now_ms: i64) {
        self.producers.retain(|_, e| now_ms - e.last_timestamp_ms < PRODUCER_EXPIRATION_MS);
    }

    /// The last offset of each producer's latest batch: the batch the log
    /// cleaner keeps (even emptied) so that the producer's state survives.
    pub fn last_offsets(&self) -> HashMap<i64, i64> {
        self.producers.iter().filter_map(|(&id, e)| e.batches.last().map(|b| (id, b.last_offset))).collect()
    }

    /// Every producer remembered here, by producer id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ActiveProducer {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.batches.last().map_or(-1, |b| b.last_sequence),
                last_timestamp_ms: e.last_batch_timestamp_ms,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn retries_are_recognised_and_gaps_refused() {
        let mut table = ProducerStateTable::default();
        let first = header(7, 0, 0, 5, 0);
        assert_eq!(table.check(&first).unwrap(), SequenceCheck::Append);
        table.record(&first, 1);
        let retry = header(7, 0, 0, 5, -1);
        assert!(matches!(table.check(&retry).unwrap(), SequenceCheck::Duplicate(b) if b.first_offset == 0 && b.last_offset == 4));
        let gap = header(7, 0, 10, 1, -1);
        assert!(matches!(table.check(&gap), Err(LogError::OutOfOrderSequence { expected: 5, .. })));
        let mut next = header(7, 0, 5, 1, 5);
        next.max_timestamp = 42;
        assert_eq!(table.check(&next).unwrap(), SequenceCheck::Append);
        table.record(&next, 2);
        assert_eq!(table.active(), vec![ActiveProducer { producer_id: 7, epoch: 0, last_sequence: 5, last_timestamp_ms: 42 }]);
        let stale = header(7, -1, 6, 1, -1);
        assert!(matches!(table.check(&stale), Err(LogError::InvalidProducerEpoch { .. })));
        let bumped = header(7, 1, 0, 1, 6);
        assert_eq!(table.check(&bumped).unwrap(), SequenceCheck::Append);
        let unknown = header(8, 0, 3, 1, -1);
        assert_eq!(table.check(&unknown).unwrap(), SequenceCheck::Append, "unknown producers start anywhere");
    }

    #[test]
    fn remembers_only_the_last_five_batches_and_truncates() {
        let mut table = ProducerStateTable::default();
        for i in 0..8 {
            table.record(&header(1, 0, i, 1, i as i64), 0);
        }
        assert!(matches!(table.check(&header(1, 0, 2, 1, -1)), Err(LogError::OutOfOrderSequence { .. })));
        assert!(matches!(table.check(&header(1, 0, 7, 1, -1)).unwrap(), SequenceCheck::Duplicate(_)));
        table.truncate_from(6);
        assert_eq!(table.check(&header(1, 0, 6, 1, -1)).unwrap(), SequenceCheck::Append);
        table.expire(PRODUCER_EXPIRATION_MS + 1);
        assert!(table.is_empty());
    }
}
