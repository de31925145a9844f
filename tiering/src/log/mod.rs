//! A partition's log: an ordered run of segments with the offsets that bound
//! it, the leader epoch cache and idempotent-producer state.
//!
//! Offsets: `log_start_offset <= high_watermark <= log_end_offset`. Consumers
//! read below the high watermark. The log never moves it on its own: whoever
//! knows what is replicated does ([`PartitionLog::set_high_watermark`]; on a
//! single replica the partition actor moves it to the log end after each
//! append). It is checkpointed in `high-watermark`
//! ([`PartitionLog::checkpoint_high_watermark`], called periodically and at
//! close, like Kafka's `replication-offset-checkpoint`), and a reopened log
//! starts from the checkpoint, clamped to its offsets, never from the log end.
//!
//! Replication: every batch carries the leader epoch it was written in; a
//! follower appends the leader's batches as they are, and `truncate_to` cuts
//! the log back to an offset, which is what a follower does when its log
//! diverged from the leader (both in `follower.rs`).
//!
//! Flush policy: an append returns once the batch is written to the OS page
//! cache, so a crashed process (even `kill -9`) loses nothing acknowledged.
//! fsync happens when a segment rolls, on clean shutdown, after
//! `flush.messages` messages and every `flush.ms`; power loss can lose what was
//! not yet fsynced unless `flush.messages=1`. After an unclean stop, segments
//! past the recovery point (the last fsynced offset) are validated batch by
//! batch and cut at the first invalid batch.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::batch::{self, BatchHeader};
use crate::checkpoint::{write_atomically, LeaderEpochCache, OffsetCheckpoint};
use crate::config::LogConfig;
use crate::error::{BatchError, LogError};
use crate::producer_state::{ProducerStateTable, SequenceCheck};
use crate::segment::{self, Segment};

mod cleaning;
#[cfg(test)]
mod cleaning_tests;
mod follower;
#[cfg(test)]
mod tests;

pub use cleaning::{discard_cleaning, CleaningNeed, CommitReport};
pub use follower::ReplicaAppend;

const LOG_START_OFFSET_FILE: &str = "log-start-offset";
const RECOVERY_POINT_FILE: &str = "recovery-point";
const HIGH_WATERMARK_FILE: &str = "high-watermark";
const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
const PRODUCER_SNAPSHOT_FILE: &str = "producer-state.json";
/// Where the log cleaner has cleaned up to (Kafka's `cleaner-offset-checkpoint`, per log).
const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// The earliest delete horizon of a tombstone the cleaner kept (`i64::MAX`: none).
const TOMBSTONE_HORIZON_FILE: &str = "cleaner-tombstone-horizon";

/// The outcome of one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Offset of the first record appended (or, for a retried batch, where it already was).
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker time stamped on the batch (`LogAppendTime` topics), else `None`.
    pub log_append_time_ms: Option<i64>,
    pub log_start_offset: i64,
    /// Records and bytes newly written (zero for a retry of a batch already in the log).
    pub records_appended: u64,
    pub bytes_appended: u64,
}

/// The outcome of one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, or `None` when there is nothing at or past the offset yet.
    pub records: Option<Bytes>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// What opening the log found and repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub segments_validated: usize,
    pub truncated_bytes: u64,
}

/// What a retention pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct ProducerSnapshot {
    /// The snapshot covers every batch below this offset.
    offset: i64,
    table: ProducerStateTable,
}

/// A flush in progress outside the log lock: see [`PartitionLog::begin_flush`].
#[derive(Debug)]
pub struct FlushTicket {
    file: std::fs::File,
    path: PathBuf,
    segment_base_offset: i64,
    messages: u64,
    end_offset: i64,
}

impl FlushTicket {
    /// Makes every write before the ticket was taken durable (fdatasync).
    pub fn sync(&self) -> Result<(), LogError> {
        self.file.sync_data().map_err(LogError::io(self.path.clone()))
    }

    /// The log end offset when the ticket was taken: what the sync covers.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }
}

/// A partition's log on local disk. Invariant: `segments` is never empty and
/// the last segment is the active one, the only one appended to.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    high_watermark: i64,
    /// The high watermark last written to the checkpoint file, if any.
    checkpointed_high_watermark: Option<i64>,
    recovery_point: i64,
    leader_epochs: LeaderEpochCache,
    producers: ProducerStateTable,
    first_unflushed_ms: Option<i64>,
    /// Offsets below this are in the archive (known once the partition's
    /// manifest is loaded); local retention deletes only segments below it.
    archived_offset: Option<i64>,
    /// The first offset the archive serves, when it holds any.
    archive_start_offset: Option<i64>,
    /// Bumped whenever sealed segments change (truncation, deletion, a
    /// cleaning swap): a cleaning pass planned at another generation is abandoned.
    generation: u64,
    /// Set by `close`: a cleaning pass finishing later is abandoned.
    closed: bool,
    /// Offsets below this were cleaned by the last pass.
    cleaner_checkpoint: i64,
    /// When a pass is due to remove a tombstone the last pass kept.
    tombstone_horizon_ms: Option<i64>,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`. After an unclean shutdown
    /// (`clean_shutdown == false`), segments past the recovery point are validated.
    pub fn open(dir: &Path, config: LogConfig, clean_shutdown: bool) -> Result<(PartitionLog, RecoveryReport), LogError> {
        fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        cleaning::recover_swaps(dir)?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(LogError::io(dir))? {
            let entry = entry.map_err(LogError::io(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                fs::remove_file(entry.path()).map_err(LogError::io(entry.path()))?;
            } else if let Some(base) = segment::parse_base_offset(&name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();

        let recovery_point = OffsetCheckpoint::new(dir.join(RECOVERY_POINT_FILE)).read()?.unwrap_or(0);
        let mut report = RecoveryReport::default();
        let mut segments = BTreeMap::new();
        let mut cut_at = None;
        for (i, &base) in bases.iter().enumerate() {
            if cut_at.is_some() {
                // A segment before this one lost its tail: what follows would leave a gap.
                tracing::warn!(dir = %dir.display(), base_offset = base, "deleting segment after a truncated one");
                Segment::open_sealed(dir, base, config.index_interval_bytes)?.delete()?;
                continue;
            }
            let next_base = bases.get(i + 1).copied();
            let trusted = clean_shutdown || next_base.is_some_and(|next| next <= recovery_point);
            let segment = if trusted {
                Segment::open_sealed(dir, base, config.index_interval_bytes)?
            } else {
                let (segment, scan) = Segment::open(dir, base, config.index_interval_bytes, true)?;
                report.segments_validated += 1;
                report.truncated_bytes += scan.truncated_bytes;
                if scan.truncated_bytes > 0 && next_base.is_some() {
                    cut_at = Some(segment.next_offset());
                }
                segment
            };
            segments.insert(base, segment);
        }
        let checkpointed_start = OffsetCheckpoint::new(dir.join(LOG_START_OFFSET_FILE)).read()?.unwrap_or(0);
        if segments.is_empty() {
            let segment = Segment::create(dir, checkpointed_start, config.index_interval_bytes)?;
            segments.insert(checkpointed_start, segment);
        }
        report.segments = segments.len();
        let first_base = *segments.keys().next().expect("at least one segment");
        let log_end_offset = segments.values().next_back().expect("at least one segment").next_offset();
        let log_start_offset = checkpointed_start.max(first_base).min(log_end_offset);

        let mut leader_epochs = LeaderEpochCache::read(&dir.join(LEADER_EPOCH_FILE))?;
        leader_epochs.truncate_from(log_end_offset);
        // The checkpoint may be older than the log (written periodically) or
        // newer (the log lost an unflushed tail): clamp it to what is here.
        let checkpointed_high_watermark = OffsetCheckpoint::new(dir.join(HIGH_WATERMARK_FILE)).read()?;
        let high_watermark = checkpointed_high_watermark.unwrap_or(log_start_offset).clamp(log_start_offset, log_end_offset);

        let mut log = PartitionLog {
            dir: dir.to_owned(),
            config,
            segments,
            log_start_offset,
            high_watermark,
            checkpointed_high_watermark,
            recovery_point: recovery_point.min(log_end_offset),
            leader_epochs,
            producers: ProducerStateTable::default(),
            first_unflushed_ms: None,
            archived_offset: None,
            archive_start_offset: None,
            generation: 0,
            closed: false,
            cleaner_checkpoint: OffsetCheckpoint::new(dir.join(CLEANER_CHECKPOINT_FILE)).read()?.unwrap_or(0),
            tombstone_horizon_ms: OffsetCheckpoint::new(dir.join(TOMBSTONE_HORIZON_FILE)).read()?.filter(|&h| h != i64::MAX),
        };
        log.rebuild_producer_state()?;
        Ok((log, report))
    }

    /// Loads the producer snapshot, then replays batch headers written after it.
    fn rebuild_producer_state(&mut self) -> Result<(), LogError> {
        let path = self.dir.join(PRODUCER_SNAPSHOT_FILE);
        let snapshot = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<ProducerSnapshot>(&bytes)
                .map_err(|e| tracing::warn!(file = %path.display(), cause = %e, "ignoring unreadable producer snapshot"))
                .ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(LogError::Io { path, source }),
        };
        let leo = self.log_end_offset();
        let (mut table, from) = match snapshot {
            Some(s) if s.offset <= leo && s.offset >= self.log_start_offset => (s.table, s.offset),
            _ => (ProducerStateTable::default(), self.log_start_offset),
        };
        table.truncate_from(leo);
        for segment in self.segments.values() {
            if segment.next_offset() <= from {
                continue;
            }
            segment.for_each_header(from, |header| table.record(header, header.max_timestamp))?;
        }
        self.producers = table;
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("log has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("log has an active segment")
    }

    /// The first offset on local disk.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    /// The first offset a consumer can read: the archive's start when the
    /// archive reaches the local log, else the local start.
    pub fn effective_log_start_offset(&self) -> i64 {
        match (self.archive_start_offset, self.archived_offset) {
            (Some(start), Some(end)) if end >= self.log_start_offset => start.min(self.log_start_offset),
            _ => self.log_start_offset,
        }
    }
    /// Records what the archive holds: `[start, end)` (`start` is `None` when it is empty).
    pub fn set_archive_bounds(&mut self, start: Option<i64>, end: i64) {
        self.archive_start_offset = start;
        self.archived_offset = Some(end);
    }
    /// The base offset of the active segment: everything below it is sealed.
    pub fn active_segment_base_offset(&self) -> i64 {
        self.active().base_offset()
    }
    /// One past the last archived offset, once known.
    pub fn archived_offset(&self) -> Option<i64> {
        self.archived_offset
    }
    /// Sealed (non-active) segments holding offsets at or past `from_offset`,
    /// oldest first: what is waiting to be archived.
    pub fn sealed_segments_from(&self, from_offset: i64) -> Vec<crate::archive::SealedSegment> {
        let active_base = self.active().base_offset();
        self.segments
            .values()
            .filter(|s| s.base_offset() != active_base && !s.is_empty() && s.next_offset() > from_offset)
            .map(|s| crate::archive::SealedSegment { base_offset: s.base_offset(), next_offset: s.next_offset(), path: s.log_path(), size: s.size() })
            .collect()
    }
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }
    /// Moves the high watermark, clamped to `[log_start_offset, log_end_offset]`.
    /// It becomes durable at the next [`PartitionLog::checkpoint_high_watermark`].
    pub fn set_high_watermark(&mut self, offset: i64) {
        self.high_watermark = offset.clamp(self.log_start_offset, self.log_end_offset());
    }
    /// Writes the high watermark to its checkpoint file unless the file
    /// already holds it. Returns whether it wrote.
    pub fn checkpoint_high_watermark(&mut self) -> Result<bool, LogError> {
        if self.checkpointed_high_watermark == Some(self.high_watermark) {
            return Ok(false);
        }
        OffsetCheckpoint::new(self.dir.join(HIGH_WATERMARK_FILE)).write(self.high_watermark)?;
        self.checkpointed_high_watermark = Some(self.high_watermark);
        Ok(true)
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn latest_leader_epoch(&self) -> Option<i32> {
        self.leader_epochs.latest_epoch()
    }
    /// The idempotent producers this partition remembers (DescribeProducers).
    pub fn active_producers(&self) -> Vec<crate::producer_state::ActiveProducer> {
        self.producers.active()
    }
    /// The end offset of `epoch` and the epoch it belongs to (OffsetForLeaderEpoch):
    /// see [`crate::checkpoint::LeaderEpochCache::end_offset_for`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.leader_epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Validates and appends a producer's batches, written in `leader_epoch`,
    /// then flushes when `flush.messages` is reached.
    pub fn append(&mut self, records: &Bytes, leader_epoch: i32, now_ms: i64) -> Result<AppendResult, LogError> {
        let result = self.append_buffered(records, leader_epoch, now_ms)?;
        if self.flush_due_by_messages() {
            self.flush()?;
        }
        Ok(result)
    }

    /// Whether `flush.messages` unflushed records have accumulated.
    pub fn flush_due_by_messages(&self) -> bool {
        self.config.flush_messages.is_some_and(|n| self.active().unflushed_messages() >= n)
    }

    /// Like [`PartitionLog::append`] but never flushes: one buffered write
    /// per batch, which only waits for the device when the kernel throttles
    /// dirty pages. The caller flushes when [`PartitionLog::flush_due_by_messages`] says so.
    pub fn append_buffered(&mut self, records: &Bytes, leader_epoch: i32, now_ms: i64) -> Result<AppendResult, LogError> {
        let max_bytes = usize::try_from(self.config.max_message_bytes).unwrap_or(usize::MAX);
        let mut batches = batch::split_validated(records, max_bytes)?;
        for incoming in &mut batches {
            if incoming.header.is_transactional() || incoming.header.is_control() {
                return Err(LogError::TransactionsUnsupported);
            }
            self.conform(incoming)?;
        }
        let log_append_time_ms = self.config.log_append_time.then_some(now_ms);
        let mut result: Option<AppendResult> = None;
        for incoming in batches {
            let (base_offset, last_offset, records_appended, bytes_appended) = match self.producers.check(&incoming.header)? {
                SequenceCheck::Duplicate(seen) => (seen.first_offset, seen.last_offset, 0, 0),
                SequenceCheck::Append => {
                    let header = self.append_batch(&incoming.bytes, leader_epoch, log_append_time_ms, now_ms)?;
                    (header.base_offset, header.last_offset(), header.record_count() as u64, header.total_len() as u64)
                }
            };
            let entry = result.get_or_insert(AppendResult {
                base_offset,
                last_offset,
                log_append_time_ms,
                log_start_offset: self.log_start_offset,
                records_appended: 0,
                bytes_appended: 0,
            });
            entry.last_offset = last_offset;
            entry.records_appended += records_appended;
            entry.bytes_appended += bytes_appended;
        }
        Ok(result.expect("split_validated returns at least one batch"))
    }

    /// Applies the topic's rules to a producer's batch before it is
    /// appended: a compacted topic refuses records without a key, and a
    /// batch whose codec differs from `compression.type` is recompressed
    /// (as Kafka's leader does; followers copy the leader's bytes).
    fn conform(&self, incoming: &mut batch::IncomingBatch) -> Result<(), LogError> {
        let recompress_to = self.config.compression.filter(|c| c.id() != incoming.header.compression_codec());
        if self.config.cleanup_compact {
            let decoded = batch::decode_records(&incoming.bytes)?;
            if let Some(r) = decoded.records.iter().find(|r| r.key.is_none()) {
                return Err(BatchError::MissingKey { offset_delta: r.offset - decoded.header.base_offset }.into());
            }
        }
        if let Some(codec) = recompress_to {
            let bytes = batch::recompress(&incoming.bytes, codec)?;
            incoming.header = BatchHeader::parse(&bytes)?;
            incoming.bytes = bytes;
        }
        Ok(())
    }

    fn append_batch(&mut self, raw: &Bytes, leader_epoch: i32, log_append_time_ms: Option<i64>, now_ms: i64) -> Result<BatchHeader, LogError> {
        let base_offset = self.log_end_offset();
        let stamped = batch::stamp(raw, base_offset, leader_epoch, log_append_time_ms);
        let header = BatchHeader::parse(&stamped)?;
        if self.should_roll(stamped.len() as u64, now_ms) {
            self.roll()?;
        }
        self.active_mut().append(&header, &stamped)?;
        if self.leader_epochs.assign(leader_epoch, base_offset) {
            self.leader_epochs.write(&self.dir.join(LEADER_EPOCH_FILE))?;
        }
        self.producers.record(&header, now_ms);
        self.first_unflushed_ms.get_or_insert(now_ms);
        Ok(header)
    }

    /// Whether appending `incoming_bytes` now may roll the active segment
    /// (rolling fsyncs the old segment, so callers keep it off latency-critical threads).
    pub fn append_may_roll(&self, incoming_bytes: u64, now_ms: i64) -> bool {
        self.should_roll(incoming_bytes, now_ms)
    }

    fn should_roll(&self, incoming_bytes: u64, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let full = active.size() + incoming_bytes > self.config.segment_bytes;
        let old = active.first_batch_timestamp().is_some_and(|ts| now_ms.saturating_sub(ts) > self.config.segment_ms as i64);
        // Relative offsets and positions in the index are 32-bit.
        let index_limit = self.log_end_offset() - active.base_offset() >= i64::from(u32::MAX) || active.size() + incoming_bytes > u64::from(u32::MAX);
        full || old || index_limit
    }

    /// Seals the active segment and starts a new one at the log end offset.
    pub fn roll(&mut self) -> Result<(), LogError> {
        let leo = self.log_end_offset();
        self.active_mut().seal()?;
        let segment = Segment::create(&self.dir, leo, self.config.index_interval_bytes)?;
        self.segments.insert(leo, segment);
        self.write_producer_snapshot()?;
        self.checkpoint_recovery_point(leo)
    }

    /// Rolls the active segment if it is older than `segment.ms` (called periodically).
    pub fn roll_if_old(&mut self, now_ms: i64) -> Result<bool, LogError> {
        if self.should_roll(0, now_ms) {
            self.roll()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads whole batches from `offset`, below the high watermark, up to `max_bytes`
    /// (at least one batch).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.read_until(offset, max_bytes, self.high_watermark)
    }

    /// Reads like [`PartitionLog::read`] but up to `end_offset` (a follower reads to the log end).
    pub fn read_until(&self, offset: i64, max_bytes: usize, end_offset: i64) -> Result<ReadResult, LogError> {
        let leo = self.log_end_offset();
        if offset < self.log_start_offset || offset > leo {
            return Err(LogError::OffsetOutOfRange { offset, log_start_offset: self.log_start_offset, log_end_offset: leo });
        }
        let mut records = None;
        if offset < end_offset {
            let first = self.segments.range(..=offset).next_back().map_or(self.log_start_offset, |(&b, _)| b);
            for segment in self.segments.range(first..).map(|(_, s)| s) {
                if let Some(bytes) = segment.read(offset, end_offset, max_bytes)? {
                    records = Some(bytes);
                    break;
                }
            }
        }
        Ok(ReadResult { records, high_watermark: self.high_watermark, log_start_offset: self.log_start_offset, log_end_offset: leo })
    }

    /// The first offset whose record timestamp is >= `timestamp`, with that timestamp.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in self.segments.values() {
            if segment.max_timestamp() < timestamp {
                continue;
            }
            let Some(bytes) = segment.find_by_timestamp(timestamp)? else { continue };
            let found = self.first_record_at_or_after(&bytes, |p| p.timestamp >= timestamp)?;
            if let Some((offset, ts)) = found {
                if offset < self.high_watermark {
                    return Ok(Some((offset, ts)));
                }
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp;
    /// `None` when that record is not below the high watermark yet (as
    /// Kafka's ListOffsets filters timestamp lookups by the last fetchable offset).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let Some(segment) = self.segments.values().filter(|s| !s.is_empty()).max_by_key(|s| s.max_timestamp()) else {
            return Ok(None);
        };
        let max = segment.max_timestamp();
        let Some(bytes) = segment.batch_with_max_timestamp()? else { return Ok(None) };
        Ok(self.first_record_at_or_after(&bytes, |p| p.timestamp == max)?.filter(|&(offset, _)| offset < self.high_watermark))
    }

    fn first_record_at_or_after(&self, bytes: &Bytes, matches: impl Fn(&batch::RecordPosition) -> bool) -> Result<Option<(i64, i64)>, LogError> {
        let header = BatchHeader::parse(bytes)?;
        let positions = match batch::record_positions(bytes) {
            Ok(p) => p,
            Err(BatchError::Undecodable { reason }) => {
                // Fall back to batch granularity rather than failing the lookup.
                tracing::warn!(dir = %self.dir.display(), base_offset = header.base_offset, %reason, "could not decode batch for a timestamp lookup");
                return Ok(Some((header.base_offset.max(self.log_start_offset), header.max_timestamp)));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(positions.iter().find(|p| p.offset >= self.log_start_offset && matches(p)).map(|p| (p.offset, p.timestamp)))
    }

    /// Advances the log start offset to `offset` (DeleteRecords) and deletes
    /// segments wholly below it. `offset` must not pass the high watermark.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset > self.high_watermark || offset < 0 {
            return Err(LogError::OffsetOutOfRange { offset, log_start_offset: self.log_start_offset, log_end_offset: self.log_end_offset() });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            OffsetCheckpoint::new(self.dir.join(LOG_START_OFFSET_FILE)).write(offset)?;
            self.leader_epochs.truncate_before(offset);
            self.leader_epochs.write(&self.dir.join(LEADER_EPOCH_FILE))?;
            let below: Vec<i64> = self.segments.iter().filter(|(_, s)| s.next_offset() <= offset).map(|(&b, _)| b).collect();
            self.delete_segments(&below)?;
        }
        Ok(self.log_start_offset)
    }

    /// Deletes the segments with these base offsets (a prefix of the log),
    /// rolling first if the active segment is among them.
    fn delete_segments(&mut self, bases: &[i64]) -> Result<RetentionReport, LogError> {
        let mut report = RetentionReport::default();
        if bases.is_empty() {
            return Ok(report);
        }
        self.generation += 1;
        let active_base = self.active().base_offset();
        if bases.contains(&active_base) {
            if self.active().is_empty() {
                return self.delete_segments(&bases.iter().copied().filter(|&b| b != active_base).collect::<Vec<_>>());
            }
            self.roll()?;
        }
        for base in bases {
            if let Some(segment) = self.segments.remove(base) {
                report.deleted_bytes += segment.size();
                report.deleted_segments += 1;
                segment.delete()?;
            }
        }
        let first_base = *self.segments.keys().next().expect("active segment remains");
        if first_base > self.log_start_offset {
            self.log_start_offset = first_base;
            OffsetCheckpoint::new(self.dir.join(LOG_START_OFFSET_FILE)).write(first_base)?;
        }
        self.high_watermark = self.high_watermark.max(self.log_start_offset);
        Ok(report)
    }

    /// Deletes whole segments past `retention.ms` or beyond `retention.bytes`,
    /// and, for an archived log, archived segments past `local.retention.ms`
    /// or beyond `local.retention.bytes`. Only data below the high watermark
    /// is ever deleted, and local retention never deletes what is not archived.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let mut doomed = Vec::new();
        let mut remaining = self.size_bytes();
        let active_base = self.active().base_offset();
        let archived_below = if self.config.archived { self.archived_offset } else { None };
        let older_than = |segment: &Segment, limit: Option<u64>| {
            limit.is_some_and(|ms| segment.max_timestamp() >= 0 && now_ms.saturating_sub(segment.max_timestamp()) > ms as i64)
        };
        // Empty sealed segments (a cleaned-out range of a compacted log) go
        // only with a later segment that is deleted, so deletion stays a prefix.
        let mut empty_run = Vec::new();
        for (&base, segment) in &self.segments {
            if base != active_base && segment.is_empty() {
                empty_run.push(base);
                continue;
            }
            if segment.is_empty() || segment.next_offset() > self.high_watermark {
                break;
            }
            let over = |limit: Option<u64>| base != active_base && limit.is_some_and(|max| remaining.saturating_sub(segment.size()) >= max);
            // `retention.*` applies only with `cleanup.policy` delete; compact-only logs keep everything the cleaner keeps.
            let total = self.config.cleanup_delete && (older_than(segment, self.config.retention_ms) || over(self.config.retention_bytes));
            let archived = archived_below.is_some_and(|end| segment.next_offset() <= end) && base != active_base;
            let local = archived && (older_than(segment, self.config.local_retention_ms) || over(self.config.local_retention_bytes));
            if !(total || local) {
                break;
            }
            remaining -= segment.size();
            doomed.append(&mut empty_run);
            doomed.push(base);
        }
        let report = self.delete_segments(&doomed)?;
        if report.deleted_segments > 0 {
            tracing::info!(dir = %self.dir.display(), segments = report.deleted_segments, bytes = report.deleted_bytes, log_start_offset = self.log_start_offset, "retention deleted segments");
        }
        Ok(report)
    }

    /// fsyncs the active segment and moves the recovery point to the log end.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.active_mut().flush()?;
        self.first_unflushed_ms = None;
        let leo = self.log_end_offset();
        if self.recovery_point >= self.active().base_offset() {
            // Recovery trusts whole sealed segments and always validates the
            // active one, so a checkpoint that moves within the active segment
            // changes nothing: skip rewriting the file (two more fsyncs per
            // flush, which halved `flush.messages=1` throughput). Rolls write it.
            self.recovery_point = leo;
            return Ok(());
        }
        self.checkpoint_recovery_point(leo)
    }

    /// Starts a flush of everything written so far that runs without the log
    /// (group commit): the caller runs [`FlushTicket::sync`] off the lock,
    /// appends may continue meanwhile, then [`PartitionLog::finish_flush`]
    /// records it. Writes made after this call are not covered.
    pub fn begin_flush(&self) -> Result<FlushTicket, LogError> {
        let active = self.active();
        Ok(FlushTicket {
            file: active.sync_handle()?,
            path: active.log_path(),
            segment_base_offset: active.base_offset(),
            messages: active.unflushed_messages(),
            end_offset: self.log_end_offset(),
        })
    }

    /// Records a flush begun by [`PartitionLog::begin_flush`] whose sync succeeded.
    pub fn finish_flush(&mut self, ticket: &FlushTicket) {
        let leo = self.log_end_offset();
        if self.active().base_offset() == ticket.segment_base_offset {
            self.active_mut().mark_flushed(ticket.messages);
        }
        // Otherwise the segment rolled meanwhile, and rolling flushed it.
        if leo == ticket.end_offset {
            self.first_unflushed_ms = None;
        }
        if self.recovery_point >= self.active().base_offset() {
            // As in `flush`: inside the active segment the checkpoint file is left alone.
            self.recovery_point = self.recovery_point.max(ticket.end_offset);
        }
    }

    /// Flushes if the oldest unflushed write is older than `flush.ms`.
    pub fn flush_if_due(&mut self, now_ms: i64) -> Result<bool, LogError> {
        let due = match (self.config.flush_ms, self.first_unflushed_ms) {
            (Some(ms), Some(since)) => now_ms.saturating_sub(since) >= ms as i64,
            _ => false,
        };
        if due {
            self.flush()?;
        }
        Ok(due)
    }

    fn checkpoint_recovery_point(&mut self, offset: i64) -> Result<(), LogError> {
        self.recovery_point = offset;
        OffsetCheckpoint::new(self.dir.join(RECOVERY_POINT_FILE)).write(offset)
    }

    fn write_producer_snapshot(&self) -> Result<(), LogError> {
        let snapshot = ProducerSnapshot { offset: self.log_end_offset(), table: self.producers.clone() };
        let bytes = serde_json::to_vec(&snapshot).expect("producer state serialises");
        write_atomically(&self.dir.join(PRODUCER_SNAPSHOT_FILE), &bytes)
    }

    /// Makes everything durable for a clean restart: fsync, index files, snapshots.
    pub fn close(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.closed = true;
        self.producers.expire(now_ms);
        self.active_mut().seal()?;
        self.write_producer_snapshot()?;
        let leo = self.log_end_offset();
        self.checkpoint_recovery_point(leo)?;
        self.checkpoint_high_watermark().map(drop)
    }

    /// Deletes the whole log directory (the topic was deleted).
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).map_err(LogError::io(&dir))
    }
}
