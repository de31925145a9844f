//! Log compaction: the work of one cleaning pass over a partition's sealed
//! segments, done without the log's lock.
//!
//! A pass (Kafka's `Cleaner.doClean`) has three steps. The log hands out a
//! [`CleaningPlan`] under its lock (`PartitionLog::cleaning_plan`): the sealed
//! segments from the log start to the first uncleanable offset, and where the
//! dirty (not yet cleaned) part begins. [`clean`] then, without the lock,
//! maps every key of the dirty part to its latest offset ([`OffsetMap`], of
//! bounded size: when it fills, only the dirty range that fit is cleaned) and
//! rewrites the segments into `<base>.log.cleaned` files, grouped up to
//! `segment.bytes`, keeping a record only if no later record has its key.
//! Finally the log swaps the cleaned files in under its lock
//! (`PartitionLog::commit_cleaning`), unless the segments changed meanwhile.
//!
//! What a cleaned batch keeps (as Kafka's `MemoryRecords.filterTo`): its base
//! offset, last offset delta, producer fields and sequence; records keep
//! their offsets, so a cleaned log has offset gaps. A batch left with no
//! record is dropped, except the last batch of a producer the log still
//! tracks, which stays as an empty batch so its idempotence state survives.
//! Tombstones (null values) are kept until `delete.retention.ms` after the
//! first pass that saw them, recorded in the batch as its delete horizon
//! (KIP-534). Control batches are kept as they are: with transactions, this
//! is where aborted records are dropped and markers kept ([`Retention`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batch::{self, BatchFields, BatchHeader, Codec, Record, LOG_OVERHEAD};
use crate::error::LogError;

pub mod offset_map;

pub use offset_map::OffsetMap;

/// Segments of one cleaned file are grouped up to this many offsets: the
/// index stores offsets relative to the base as 32-bit values.
const GROUP_OFFSETS_MAX: i64 = u32::MAX as i64;
/// Read buffer of a segment being cleaned.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// The longest a throttled pass sleeps before it looks at its cancel flag again.
const THROTTLE_SLICE: Duration = Duration::from_millis(100);

/// A sealed segment the cleaner reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSegment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    pub path: PathBuf,
}

/// What one pass over a log is to do, taken under the log's lock.
#[derive(Debug, Clone)]
pub struct CleaningPlan {
    pub dir: PathBuf,
    /// The log's segment generation when planned: the swap is abandoned if it changed.
    pub generation: u64,
    /// Every sealed segment from the log start up to the first uncleanable offset.
    pub segments: Vec<SourceSegment>,
    /// Records below this were cleaned by an earlier pass.
    pub first_dirty_offset: i64,
    /// Nothing at or past this is cleaned (the active segment, the high
    /// watermark, `min.compaction.lag.ms`, the archive's end).
    pub first_uncleanable_offset: i64,
    /// The codec rewritten batches get (`compression.type`); `None` keeps each batch's.
    pub codec: Option<Codec>,
    pub delete_retention_ms: u64,
    pub segment_bytes: u64,
    /// The last offset of each producer's last batch, whose batch is kept even when emptied.
    pub producer_last_offsets: HashMap<i64, i64>,
    pub now_ms: i64,
}

impl CleaningPlan {
    /// Bytes of the dirty part (the segments at or past the first dirty offset).
    pub fn dirty_bytes(&self) -> u64 {
        self.segments.iter().filter(|s| s.next_offset > self.first_dirty_offset).map(|s| s.size).sum()
    }
}

/// Limits of the cleaner: memory and I/O rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerLimits {
    /// Memory of the offset map (Kafka's `log.cleaner.dedupe.buffer.size`).
    pub offset_map_bytes: usize,
    /// Bytes read plus written per second (`log.cleaner.io.max.bytes.per.second`); `None` is unthrottled.
    pub io_bytes_per_second: Option<u64>,
}

/// One cleaned file, replacing a run of source segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanedGroup {
    /// The first source's base offset: the cleaned segment's base.
    pub base_offset: i64,
    /// The last source's next offset: the swap replaces every segment in `[base_offset, end_offset)`.
    pub end_offset: i64,
    pub sources: Vec<i64>,
    pub cleaned_path: PathBuf,
}

/// What a pass did, to be committed by the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleaningOutcome {
    /// Groups whose cleaned file differs from their sources.
    pub groups: Vec<CleanedGroup>,
    /// Everything below this is now clean (the next pass's first dirty offset).
    pub cleaned_up_to: i64,
    /// The earliest delete horizon of a tombstone kept: when a pass is due to remove it.
    pub next_delete_horizon_ms: Option<i64>,
    pub stats: CleanerStats,
}

/// Counters of one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub segments_cleaned: u64,
    pub records_removed: u64,
}

/// Keeps a pass to its I/O budget by sleeping the (blocking) cleaning
/// thread when it runs ahead (Kafka's `Throttler`), and stops it when its
/// cancel flag is raised.
struct Throttle<'a> {
    bytes_per_second: Option<u64>,
    started: Instant,
    bytes: u64,
    cancel: &'a AtomicBool,
}

impl Throttle<'_> {
    fn charge(&mut self, bytes: u64) -> Result<(), LogError> {
        self.bytes += bytes;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(LogError::CleaningCancelled);
            }
            let Some(rate) = self.bytes_per_second.filter(|&r| r > 0) else { return Ok(()) };
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            let elapsed = self.started.elapsed();
            if due <= elapsed {
                return Ok(());
            }
            std::thread::sleep((due - elapsed).min(THROTTLE_SLICE));
        }
    }
}

/// Reads a segment file batch by batch, up to the size it had when planned.
struct BatchReader {
    reader: BufReader<File>,
    path: PathBuf,
    remaining: u64,
}

impl BatchReader {
    fn open(source: &SourceSegment) -> Result<BatchReader, LogError> {
        let file = File::open(&source.path).map_err(LogError::io(&source.path))?;
        Ok(BatchReader { reader: BufReader::with_capacity(READ_BUFFER_BYTES, file), path: source.path.clone(), remaining: source.size })
    }

    fn next_batch(&mut self) -> Result<Option<(BatchHeader, Bytes)>, LogError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let corrupt = |reason: String| LogError::CorruptSegment { path: self.path.clone(), reason };
        let mut prefix = [0u8; LOG_OVERHEAD];
        self.reader.read_exact(&mut prefix).map_err(LogError::io(&self.path))?;
        let length = i32::from_be_bytes(prefix[8..12].try_into().expect("4 bytes"));
        let total = usize::try_from(length).map_err(|_| corrupt(format!("negative batch length {length}")))? + LOG_OVERHEAD;
        if total as u64 > self.remaining {
            return Err(corrupt(format!("a batch of {total} bytes runs past the segment's end")));
        }
        let mut buf = vec![0u8; total];
        buf[..LOG_OVERHEAD].copy_from_slice(&prefix);
        self.reader.read_exact(&mut buf[LOG_OVERHEAD..]).map_err(LogError::io(&self.path))?;
        self.remaining -= total as u64;
        let bytes = Bytes::from(buf);
        let header = BatchHeader::parse(&bytes).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some((header, bytes)))
    }
}

/// Why a record is kept or dropped; the seam for transactions, whose
/// aborted records the cleaner will drop and whose markers it must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retention {
    Keep,
    /// A later record has the key (or the record has no key).
    Superseded,
    /// A tombstone past its delete horizon.
    ExpiredTombstone,
}

fn retention(record: &Record, map: &OffsetMap, horizon_ms: Option<i64>, now_ms: i64) -> Retention {
    let Some(key) = &record.key else { return Retention::Superseded };
    if map.get(key).is_some_and(|latest| latest > record.offset) {
        return Retention::Superseded;
    }
    if record.value.is_none() && horizon_ms.is_some_and(|h| now_ms >= h) {
        return Retention::ExpiredTombstone;
    }
    Retention::Keep
}

/// Maps the keys of the dirty part, batch by batch, until the map is full.
/// Returns the map and the offset it covers up to.
fn build_offset_map(plan: &CleaningPlan, limits: &CleanerLimits, throttle: &mut Throttle<'_>, stats: &mut CleanerStats) -> Result<(OffsetMap, i64), LogError> {
    let mut map = OffsetMap::with_memory(limits.offset_map_bytes);
    let mut end = plan.first_dirty_offset;
    for source in plan.segments.iter().filter(|s| s.next_offset > plan.first_dirty_offset) {
        let mut reader = BatchReader::open(source)?;
        while let Some((header, bytes)) = reader.next_batch()? {
            throttle.charge(bytes.len() as u64)?;
            stats.bytes_read += bytes.len() as u64;
            if header.next_offset() <= plan.first_dirty_offset || header.is_control() {
                end = end.max(header.next_offset());
                continue;
            }
            if usize::try_from(header.records_count).unwrap_or(usize::MAX) > map.room() {
                // Full: clean what fits now, the rest next pass.
                return Ok((map, end));
            }
            for record in batch::decode_records(&bytes)?.records {
                if let Some(key) = &record.key {
                    let fitted = map.put(key, record.offset);
                    assert!(fitted, "room was checked for the whole batch");
                }
            }
            end = header.next_offset();
        }
    }
    Ok((map, end.max(plan.first_dirty_offset)))
}

/// Runs the I/O of one pass: maps the dirty part, writes the cleaned files.
/// Nothing in the log changes; the caller commits or discards the outcome.
/// Raising `cancel` ends the pass with [`LogError::CleaningCancelled`]
/// (cleaned files written so far are left for the next open to remove).
pub fn clean(plan: &CleaningPlan, limits: &CleanerLimits, cancel: &AtomicBool) -> Result<CleaningOutcome, LogError> {
    let mut throttle = Throttle { bytes_per_second: limits.io_bytes_per_second, started: Instant::now(), bytes: 0, cancel };
    let mut outcome = CleaningOutcome::default();
    let (map, cleaned_up_to) = build_offset_map(plan, limits, &mut throttle, &mut outcome.stats)?;
    outcome.cleaned_up_to = cleaned_up_to;
    // Every segment below the mapped end is filtered (the clean part again,
    // since newer keys may supersede its records).
    let targets: Vec<&SourceSegment> = plan.segments.iter().filter(|s| s.base_offset < cleaned_up_to).collect();
    for group in group_segments(&targets, plan.segment_bytes) {
        if let Some(cleaned) = clean_group(plan, &group, &map, &mut throttle, &mut outcome)? {
            outcome.groups.push(cleaned);
        }
    }
    Ok(outcome)
}

/// Runs of consecutive segments whose sizes sum to at most `segment_bytes`.
fn group_segments<'a>(segments: &[&'a SourceSegment], segment_bytes: u64) -> Vec<Vec<&'a SourceSegment>> {
    let mut groups: Vec<Vec<&SourceSegment>> = Vec::new();
    for &segment in segments {
        match groups.last_mut() {
            Some(group)
                if group.iter().map(|s| s.size).sum::<u64>() + segment.size <= segment_bytes
                    && segment.next_offset - group[0].base_offset < GROUP_OFFSETS_MAX =>
            {
                group.push(segment)
            }
            _ => groups.push(vec![segment]),
        }
    }
    groups
}

/// The cleaned file of the segment group starting at `base_offset`.
pub fn cleaned_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.cleaned", crate::segment::file_name(base_offset, "log")))
}

fn clean_group(
    plan: &CleaningPlan,
    group: &[&SourceSegment],
    map: &OffsetMap,
    throttle: &mut Throttle<'_>,
    outcome: &mut CleaningOutcome,
) -> Result<Option<CleanedGroup>, LogError> {
    let base_offset = group[0].base_offset;
    let path = cleaned_path(&plan.dir, base_offset);
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(&path).map_err(LogError::io(&path))?;
    let mut out = BufWriter::new(file);
    let mut changed = false;
    for source in group {
        let mut reader = BatchReader::open(source)?;
        while let Some((header, bytes)) = reader.next_batch()? {
            throttle.charge(bytes.len() as u64)?;
            outcome.stats.bytes_read += bytes.len() as u64;
            let kept = filter_batch(plan, map, &header, &bytes, outcome)?;
            if let Some(kept) = kept {
                changed |= kept.len() != bytes.len() || kept != bytes;
                out.write_all(&kept).map_err(LogError::io(&path))?;
                throttle.charge(kept.len() as u64)?;
                outcome.stats.bytes_written += kept.len() as u64;
            } else {
                changed = true;
            }
        }
    }
    let file = out.into_inner().map_err(|e| LogError::Io { path: path.clone(), source: e.into_error() })?;
    if !changed {
        drop(file);
        std::fs::remove_file(&path).map_err(LogError::io(&path))?;
        return Ok(None);
    }
    file.sync_all().map_err(LogError::io(&path))?;
    outcome.stats.segments_cleaned += group.len() as u64;
    let end_offset = group.last().expect("groups are not empty").next_offset;
    Ok(Some(CleanedGroup { base_offset, end_offset, sources: group.iter().map(|s| s.base_offset).collect(), cleaned_path: path }))
}

/// The bytes a batch is kept as: itself, rewritten without some records,
/// or nothing.
fn filter_batch(plan: &CleaningPlan, map: &OffsetMap, header: &BatchHeader, bytes: &Bytes, outcome: &mut CleaningOutcome) -> Result<Option<Bytes>, LogError> {
    if header.is_control() {
        return Ok(Some(bytes.clone()));
    }
    let decoded = batch::decode_records(bytes)?;
    let horizon = header.delete_horizon_ms();
    let total = decoded.records.len();
    let kept: Vec<Record> = decoded.records.into_iter().filter(|r| retention(r, map, horizon, plan.now_ms) == Retention::Keep).collect();
    outcome.stats.records_removed += (total - kept.len()) as u64;
    let has_tombstone = kept.iter().any(|r| r.value.is_none());
    let new_horizon = (has_tombstone && horizon.is_none()).then(|| plan.now_ms.saturating_add(i64::try_from(plan.delete_retention_ms).unwrap_or(i64::MAX)));
    if has_tombstone {
        let h = horizon.or(new_horizon).expect("a horizon is set for every kept tombstone");
        outcome.next_delete_horizon_ms = Some(outcome.next_delete_horizon_ms.map_or(h, |n| n.min(h)));
    }
    let codec_differs = plan.codec.is_some_and(|c| c.id() != header.compression_codec());
    if kept.len() == total && new_horizon.is_none() && !codec_differs {
        return Ok(Some(bytes.clone()));
    }
    let last_of_producer = header.has_producer_id() && plan.producer_last_offsets.get(&header.producer_id) == Some(&header.last_offset());
    if kept.is_empty() && !last_of_producer {
        return Ok(None);
    }
    let mut fields = BatchFields::from(header);
    if let Some(h) = new_horizon {
        batch::set_delete_horizon(&mut fields, h);
    }
    let codec = plan.codec.or_else(|| Codec::from_id(header.compression_codec())).unwrap_or(Codec::None);
    let codec = if kept.is_empty() { Codec::None } else { codec };
    Ok(Some(batch::encode_batch_with(&fields, &kept, codec)?))
}
