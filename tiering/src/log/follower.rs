//! The follower's side of a partition log: storing the leader's batches as
//! they are, and cutting a tail that diverged from the leader's log.
//!
//! A follower keeps what the leader sent byte for byte: it assigns no offset,
//! stamps no time and refuses no producer sequence (the leader decided, and
//! Kafka's followers do the same). It checks what would corrupt the log: each
//! batch is whole with a valid CRC, none starts below the log end or overlaps
//! the one before (a compacted leader's log has gaps, which the follower
//! keeps, so its offsets stay the leader's), and leader epochs never go down. It updates the
//! leader-epoch cache and the producer-state table from the headers, so that
//! as the next leader it answers OffsetForLeaderEpoch and idempotent retries
//! as the old leader would have.
//!
//! Truncation ([`PartitionLog::truncate_to`]) removes whole batches and the
//! epochs that start past the new end, and rebuilds the producer state from
//! the batches kept.

use bytes::Bytes;

use super::{PartitionLog, LEADER_EPOCH_FILE, LOG_START_OFFSET_FILE, PRODUCER_SNAPSHOT_FILE};
use crate::batch::{self, IncomingBatch};
use crate::checkpoint::OffsetCheckpoint;
use crate::error::LogError;
use crate::producer_state::ProducerStateTable;
use crate::segment::Segment;

/// The outcome of a follower append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAppend {
    /// The base offset of the first batch appended.
    pub first_offset: i64,
    /// The last offset appended: the log end is one past it.
    pub last_offset: i64,
    pub records_appended: u64,
    pub bytes_appended: u64,
}

impl PartitionLog {
    /// Appends batches fetched from the leader, keeping their offsets and
    /// leader epochs (see the module rules). Either every batch is appended
    /// or, when one breaks a rule, none is. Flushes when `flush.messages` is
    /// reached, as a leader's append does. The high watermark is not moved:
    /// the follower learns it from the leader.
    pub fn append_as_follower(&mut self, records: &Bytes, now_ms: i64) -> Result<ReplicaAppend, LogError> {
        // max.message.bytes limits producers; the leader already accepted these.
        let batches = batch::split_stored(records, usize::MAX)?;
        // An empty log started at the leader's log start, which DeleteRecords
        // may have put inside a batch: the leader sends that whole batch, so
        // the log starts again at its base (Kafka's Partition does the same
        // on UnexpectedAppendOffsetException). The log start moves up again
        // with the leader's as the high watermark passes it.
        let leo = self.log_end_offset();
        if let Some(first) = batches.first().map(|b| b.header) {
            if leo == self.log_start_offset && first.base_offset < leo && first.last_offset() >= leo {
                self.truncate_fully_and_start_at(first.base_offset)?;
            }
        }
        self.check_replica_batches(&batches)?;
        let mut result = ReplicaAppend { first_offset: batches[0].header.base_offset, last_offset: 0, records_appended: 0, bytes_appended: 0 };
        for incoming in batches {
            let header = incoming.header;
            if self.should_roll(incoming.bytes.len() as u64, now_ms) {
                self.roll()?;
            }
            self.active_mut().append(&header, &incoming.bytes)?;
            if self.leader_epochs.assign(header.partition_leader_epoch, header.base_offset) {
                self.leader_epochs.write(&self.dir.join(LEADER_EPOCH_FILE))?;
            }
            // The wall clock, as on the leader: producer expiry is by last activity.
            self.producers.record(&header, now_ms);
            self.first_unflushed_ms.get_or_insert(now_ms);
            result.last_offset = header.last_offset();
            result.records_appended += header.record_count() as u64;
            result.bytes_appended += header.total_len() as u64;
        }
        if self.flush_due_by_messages() {
            self.flush()?;
        }
        Ok(result)
    }

    /// The follower's rules for a run of the leader's batches, checked before
    /// anything is written.
    fn check_replica_batches(&self, batches: &[IncomingBatch]) -> Result<(), LogError> {
        let mut expected = self.log_end_offset();
        let mut latest_epoch = self.leader_epochs.latest_epoch();
        for incoming in batches {
            let header = &incoming.header;
            if header.is_transactional() || header.is_control() {
                return Err(LogError::TransactionsUnsupported);
            }
            if header.base_offset < expected {
                return Err(LogError::UnexpectedReplicaOffset { expected, base_offset: header.base_offset });
            }
            if let Some(latest) = latest_epoch.filter(|&latest| header.partition_leader_epoch < latest) {
                return Err(LogError::ReplicaEpochWentBack { base_offset: header.base_offset, epoch: header.partition_leader_epoch, latest });
            }
            latest_epoch = Some(header.partition_leader_epoch);
            expected = header.next_offset();
        }
        Ok(())
    }

    /// Empties the log and starts it again at `offset` (Kafka's
    /// `truncateFullyAndStartAt`): a follower whose log ends below the
    /// leader's log start, because the leader deleted those records or keeps
    /// them only in the archive, copies from the leader's start instead.
    /// Every segment, leader epoch and producer entry goes; the log start,
    /// log end, high watermark and recovery point all become `offset`.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange { offset, log_start_offset: self.log_start_offset, log_end_offset: self.log_end_offset() });
        }
        self.generation += 1;
        for segment in std::mem::take(&mut self.segments).into_values() {
            segment.delete()?;
        }
        self.segments.insert(offset, Segment::create(&self.dir, offset, self.config.index_interval_bytes)?);
        self.log_start_offset = offset;
        OffsetCheckpoint::new(self.dir.join(LOG_START_OFFSET_FILE)).write(offset)?;
        self.leader_epochs.truncate_from(i64::MIN);
        self.leader_epochs.write(&self.dir.join(LEADER_EPOCH_FILE))?;
        self.producers = ProducerStateTable::default();
        match std::fs::remove_file(self.dir.join(PRODUCER_SNAPSHOT_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LogError::Io { path: self.dir.join(PRODUCER_SNAPSHOT_FILE), source }),
        }
        self.high_watermark = offset;
        self.recovery_point = offset;
        self.checkpoint_recovery_point(offset)
    }

    /// Cuts the log back so that the new log end is at most `offset` (a
    /// follower whose log diverged from the leader's, or one that is told to
    /// by OffsetForLeaderEpoch). A batch straddling `offset` is removed
    /// whole. Leader epochs that start at or past the new end are forgotten,
    /// and so is the producer state of removed batches; the high watermark
    /// and recovery point come down to the new end if they were past it.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let target = offset.max(self.log_start_offset);
        self.generation += 1;
        let above: Vec<i64> = self.segments.range(target + 1..).map(|(&b, _)| b).collect();
        for base in above {
            if self.segments.len() == 1 {
                break;
            }
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete()?;
            }
        }
        let leo = self.active_mut().truncate_to(target)?;
        self.leader_epochs.truncate_from(leo);
        self.leader_epochs.write(&self.dir.join(LEADER_EPOCH_FILE))?;
        // Rebuilt from the kept batches rather than cut: the removed tail may
        // have bumped a producer's epoch, and the table remembers only the
        // latest epoch's batches (Kafka's truncateAndReload). A replay from the
        // producer snapshot, or the log start: truncations are rare.
        self.rebuild_producer_state()?;
        if self.log_start_offset > leo {
            // The log start fell inside a removed batch: the log is now empty at its end.
            self.log_start_offset = leo;
            OffsetCheckpoint::new(self.dir.join(LOG_START_OFFSET_FILE)).write(leo)?;
        }
        self.high_watermark = self.high_watermark.min(leo);
        self.recovery_point = self.recovery_point.min(leo);
        self.checkpoint_recovery_point(self.recovery_point)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::records::Compression;
    use proptest::prelude::*;

    use super::*;
    use crate::batch::tests::{make_batch, make_idempotent_batch};
    use crate::batch::BatchHeader;
    use crate::config::LogConfig;

    fn small_config() -> LogConfig {
        LogConfig { segment_bytes: 2048, index_interval_bytes: 256, ..LogConfig::default() }
    }

    /// A batch of `records` records as a leader stored it: at `base_offset`, in `epoch`.
    fn leader_batch(records: usize, base_offset: i64, epoch: i32) -> Bytes {
        batch::stamp(&make_batch(records, 1_000 + base_offset, Compression::None), base_offset, epoch, None)
    }

    /// Every batch of the log, read as a follower of it would (to the log end).
    fn all_batches(log: &PartitionLog) -> Vec<Bytes> {
        let mut batches = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let read = log.read_until(offset, 1 << 20, log.log_end_offset()).unwrap();
            let records = read.records.expect("data below the log end");
            let mut at = 0;
            while at < records.len() {
                let header = BatchHeader::parse(&records[at..]).unwrap();
                batches.push(records.slice(at..at + header.total_len()));
                offset = header.next_offset();
                at += header.total_len();
            }
        }
        batches
    }

    #[test]
    fn a_follower_restarts_its_log_at_the_leaders_start_and_keeps_it_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
        for i in 0..40 {
            log.append_as_follower(&leader_batch(5, i * 5, 1 + i32::from(i >= 20)), 0).unwrap();
        }
        log.set_high_watermark(200);
        assert!(log.segment_count() > 1);
        log.truncate_fully_and_start_at(500).unwrap();
        let marks = (log.log_start_offset(), log.log_end_offset(), log.high_watermark(), log.segment_count(), log.latest_leader_epoch());
        assert_eq!(marks, (500, 500, 500, 1, None), "empty at the new start");
        assert!(log.append_as_follower(&leader_batch(5, 0, 3), 0).is_err(), "an old offset no longer fits");
        log.append_as_follower(&leader_batch(5, 500, 3), 0).unwrap();
        log.set_high_watermark(505);
        log.checkpoint_high_watermark().unwrap();
        log.close(0).unwrap();
        drop(log);
        let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset(), log.latest_leader_epoch()), (500, 505, Some(3)));
        assert_eq!(all_batches(&log), vec![leader_batch(5, 500, 3)]);
        assert!(log.truncate_fully_and_start_at(-1).is_err());
    }

    #[test]
    fn an_empty_log_started_inside_a_batch_starts_again_at_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
        log.truncate_fully_and_start_at(1520).unwrap();
        log.append_as_follower(&leader_batch(8, 1516, 2), 0).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (1516, 1524));
        log.set_high_watermark(1524);
        log.delete_records_before(1520).unwrap();
        assert_eq!(log.log_start_offset(), 1520, "the leader's start again, once below the HW");
        assert!(log.append_as_follower(&leader_batch(2, 1520, 2), 0).is_err(), "a non-empty log keeps its rules");
    }

    #[test]
    fn a_follower_keeps_the_leaders_offsets_epochs_and_bytes() {
        let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut leader, _) = PartitionLog::open(leader_dir.path(), small_config(), true).unwrap();
        for (i, epoch) in [0, 0, 2, 2, 2, 5].into_iter().enumerate() {
            leader.append(&make_batch(3, 1_000 * i as i64, Compression::Gzip), epoch, 7_000).unwrap();
        }
        let (mut follower, _) = PartitionLog::open(follower_dir.path(), small_config(), true).unwrap();
        let fetched = all_batches(&leader);
        let (first, rest) = fetched.split_at(2);
        let appended = follower.append_as_follower(&first.concat().into(), 0).unwrap();
        assert_eq!(
            appended,
            ReplicaAppend { first_offset: 0, last_offset: 5, records_appended: 6, bytes_appended: first.iter().map(|b| b.len() as u64).sum() }
        );
        follower.append_as_follower(&rest.concat().into(), 0).unwrap();
        assert_eq!(all_batches(&follower), fetched, "byte for byte");
        assert_eq!(follower.log_end_offset(), 18);
        assert_eq!(follower.high_watermark(), 0, "a follower learns its high watermark from the leader");
        for epoch in -1..7 {
            assert_eq!(follower.end_offset_for_epoch(epoch), leader.end_offset_for_epoch(epoch), "epoch {epoch}");
        }
        assert_eq!(follower.end_offset_for_epoch(3), Some((2, 15)));
    }

    #[test]
    fn a_promoted_follower_answers_idempotent_retries_with_the_original_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
        let produced = make_idempotent_batch(4, 0, Compression::None, 42, 0, 0);
        log.append_as_follower(&leader_batch(2, 0, 1), 0).unwrap();
        log.append_as_follower(&batch::stamp(&produced, 2, 1, None), 0).unwrap();
        let retry = log.append(&produced, 2, 0).unwrap();
        assert_eq!((retry.base_offset, retry.last_offset, retry.records_appended), (2, 5, 0), "deduplicated");
        let gap = make_idempotent_batch(1, 0, Compression::None, 42, 0, 9);
        assert!(matches!(log.append(&gap, 2, 0), Err(LogError::OutOfOrderSequence { .. })));
    }

    #[test]
    fn producer_state_after_truncation_is_what_the_kept_batches_say() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
        let first = make_idempotent_batch(2, 0, Compression::None, 42, 0, 0);
        let second = make_idempotent_batch(2, 0, Compression::None, 42, 0, 2);
        let bumped = make_idempotent_batch(1, 0, Compression::None, 42, 1, 0);
        log.append_as_follower(&batch::stamp(&first, 0, 1, None), 0).unwrap();
        log.append_as_follower(&batch::stamp(&second, 2, 1, None), 0).unwrap();
        // The divergent tail: the producer's epoch was bumped there.
        log.append_as_follower(&batch::stamp(&bumped, 4, 2, None), 0).unwrap();
        log.truncate_to(4).unwrap();
        // Promoted, this replica answers the old epoch's retry with the original offsets...
        let retry = log.append(&second, 3, 0).unwrap();
        assert_eq!((retry.base_offset, retry.last_offset, retry.records_appended), (2, 3, 0), "deduplicated after truncation");
        // ...and takes its next sequence, then the epoch bump again.
        let next = make_idempotent_batch(1, 0, Compression::None, 42, 0, 4);
        assert_eq!(log.append(&next, 3, 0).unwrap().base_offset, 4);
        assert_eq!(log.append(&bumped, 3, 0).unwrap().base_offset, 5);

        // Cut back past the second batch: its retry is new data again, written once.
        log.truncate_to(2).unwrap();
        let rewritten = log.append(&second, 3, 0).unwrap();
        assert_eq!((rewritten.base_offset, rewritten.records_appended), (2, 2));
        let again = log.append(&second, 3, 0).unwrap();
        assert_eq!((again.base_offset, again.records_appended), (2, 0), "and deduplicated from then on");
    }

    #[test]
    fn truncation_inside_the_first_batch_keeps_the_log_start_at_or_below_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
        log.append_as_follower(&leader_batch(4, 0, 0), 0).unwrap();
        log.set_high_watermark(4);
        log.delete_records_before(2).unwrap();
        log.truncate_to(3).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset(), log.high_watermark()), (0, 0, 0));
        log.append_as_follower(&leader_batch(2, 0, 1), 0).unwrap();
        assert_eq!(log.log_end_offset(), 2);
    }

    /// The model: the batches a follower holds, as the leader sent them.
    #[derive(Debug, Default)]
    struct Model {
        batches: Vec<(i64, i64, i32, Bytes)>, // (base offset, next offset, epoch, bytes)
        high_watermark: i64,
        checkpointed_high_watermark: Option<i64>,
    }

    impl Model {
        fn log_end_offset(&self) -> i64 {
            self.batches.last().map_or(0, |b| b.1)
        }
        fn latest_epoch(&self) -> Option<i32> {
            self.batches.last().map(|b| b.2)
        }
        /// OffsetForLeaderEpoch as Kafka's `LeaderEpochFileCache.endOffsetFor`
        /// defines it, from the batches alone: the latest epoch ends at the log
        /// end; an older one ends where the first later epoch starts, answered
        /// with the largest epoch <= it in the log, or with itself when every
        /// epoch in the log is later; nothing for -1 or an epoch newer than all.
        fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
            if epoch < 0 {
                return None;
            }
            if self.latest_epoch() == Some(epoch) {
                return Some((epoch, self.log_end_offset()));
            }
            let next_start = self.batches.iter().find(|b| b.2 > epoch)?.0;
            let found = self.batches.iter().map(|b| b.2).filter(|&e| e <= epoch).max().unwrap_or(epoch);
            Some((found, next_start))
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Batches of 1..=5 records, each raising the epoch by 0..=2.
        Append(Vec<(usize, i32)>),
        /// A batch the follower must refuse: 0 two overlapping batches, 1 an overlap with the log, 2 an older epoch, 3 a bad CRC.
        /// (A gap is fine: a compacted leader's log has them.)
        BadAppend(u8),
        /// Truncate to this fraction (in 1/16ths) of the log end.
        Truncate(u8),
        SetHighWatermark(u8),
        CheckpointHighWatermark,
        Roll,
        Reopen {
            clean: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec((1usize..=5, 0i32..=2), 1..4).prop_map(Op::Append),
            1 => (0u8..4).prop_map(Op::BadAppend),
            2 => (0u8..=16).prop_map(Op::Truncate),
            1 => (0u8..=16).prop_map(Op::SetHighWatermark),
            1 => Just(Op::CheckpointHighWatermark),
            1 => Just(Op::Roll),
            1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        ]
    }

    fn check(log: &PartitionLog, model: &Model) -> Result<(), TestCaseError> {
        prop_assert_eq!(log.log_end_offset(), model.log_end_offset());
        prop_assert_eq!(log.high_watermark(), model.high_watermark);
        prop_assert_eq!(log.latest_leader_epoch(), model.latest_epoch());
        let stored = all_batches(log);
        let expected: Vec<Bytes> = model.batches.iter().map(|b| b.3.clone()).collect();
        prop_assert_eq!(stored, expected);
        let top = model.latest_epoch().unwrap_or(0);
        for epoch in -1..=top + 1 {
            prop_assert_eq!(log.end_offset_for_epoch(epoch), model.end_offset_for_epoch(epoch), "epoch {}", epoch);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn follower_append_and_truncation_match_a_model_log(ops in prop::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
            let mut model = Model::default();
            for op in ops {
                let leo = model.log_end_offset();
                match op {
                    Op::Append(batches) => {
                        let mut epoch = model.latest_epoch().unwrap_or(0);
                        let mut payload = BytesMut::new();
                        let mut base = leo;
                        for (records, bump) in batches {
                            epoch += bump;
                            let bytes = leader_batch(records, base, epoch);
                            payload.extend_from_slice(&bytes);
                            model.batches.push((base, base + records as i64, epoch, bytes));
                            base += records as i64;
                        }
                        let appended = log.append_as_follower(&payload.freeze(), 0).unwrap();
                        prop_assert_eq!(appended.last_offset + 1, model.log_end_offset());
                    }
                    Op::BadAppend(kind) => {
                        let epoch = model.latest_epoch().unwrap_or(0);
                        let bad = match kind {
                            0 => {
                                let mut both = BytesMut::from(&leader_batch(2, leo, epoch)[..]);
                                both.extend_from_slice(&leader_batch(2, leo + 1, epoch));
                                both.freeze()
                            }
                            1 if leo > 0 => leader_batch(2, leo - 1, epoch),
                            2 if epoch > 0 => leader_batch(2, leo, epoch - 1),
                            _ => {
                                let mut corrupt = BytesMut::from(&leader_batch(2, leo, epoch)[..]);
                                let last = corrupt.len() - 1;
                                corrupt[last] ^= 0xff;
                                corrupt.freeze()
                            }
                        };
                        prop_assert!(log.append_as_follower(&bad, 0).is_err(), "kind {} was accepted", kind);
                    }
                    Op::Truncate(sixteenths) => {
                        let offset = leo * i64::from(sixteenths) / 16;
                        log.truncate_to(offset).unwrap();
                        model.batches.retain(|b| b.1 <= offset);
                        model.high_watermark = model.high_watermark.min(model.log_end_offset());
                    }
                    Op::SetHighWatermark(sixteenths) => {
                        let offset = leo * i64::from(sixteenths) / 16;
                        log.set_high_watermark(offset);
                        model.high_watermark = offset;
                    }
                    Op::CheckpointHighWatermark => {
                        log.checkpoint_high_watermark().unwrap();
                        model.checkpointed_high_watermark = Some(model.high_watermark);
                    }
                    Op::Roll => {
                        if leo > log.active_segment_base_offset() {
                            log.roll().unwrap();
                        }
                    }
                    Op::Reopen { clean } => {
                        if clean {
                            log.close(0).unwrap();
                            model.checkpointed_high_watermark = Some(model.high_watermark);
                        }
                        drop(log);
                        log = PartitionLog::open(dir.path(), small_config(), clean).unwrap().0;
                        model.high_watermark = model.checkpointed_high_watermark.unwrap_or(0).clamp(0, model.log_end_offset());
                    }
                }
                check(&log, &model)?;
            }
        }
    }
}
