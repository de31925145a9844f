//! The log's side of compaction: planning a cleaning pass under the lock,
//! swapping cleaned segments in crash-safely, and finishing or discarding a
//! swap a crash interrupted.
//!
//! The swap of one group of segments (Kafka's `replaceSegments`):
//! 1. the cleaner wrote and fsynced `<base>.log.cleaned`;
//! 2. it is renamed `<base>.<end>.swap` and the directory fsynced: from here
//!    on the swap is committed, and it replaces every segment in `[base, end)`;
//! 3. those segments' files are deleted;
//! 4. the swap file is renamed `<base>.log` and the directory fsynced.
//!
//! Opening a log ([`recover_swaps`]) deletes `.cleaned` files (step 1 not
//! committed) and redoes steps 3 and 4 for any `.swap` file. Index files of
//! a swapped segment are rebuilt from the batches, never reused.

use std::fs;
use std::path::{Path, PathBuf};

use super::{PartitionLog, CLEANER_CHECKPOINT_FILE, TOMBSTONE_HORIZON_FILE};
use crate::checkpoint::{sync_dir, OffsetCheckpoint};
use crate::cleaner::{CleaningOutcome, CleaningPlan, SourceSegment};
use crate::config::PPM;
use crate::error::LogError;
use crate::segment::{self, Segment};

const SWAP_SUFFIX: &str = ".swap";
const CLEANED_SUFFIX: &str = ".log.cleaned";

/// Why a log is due for cleaning, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleaningNeed {
    /// Not compacted, or nothing sealed and cleanable.
    Nothing,
    /// The dirty share is below `min.cleanable.dirty.ratio` and nothing forces a pass.
    NotYet,
    /// Due: the ratio is reached, `max.compaction.lag.ms` passed, or a tombstone's horizon passed.
    Due,
}

/// What committing a pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitReport {
    pub swapped_groups: usize,
    /// The pass was abandoned: the log's segments changed meanwhile, or it closed.
    pub abandoned: bool,
}

pub(super) fn swap_path(dir: &Path, base: i64, end: i64) -> PathBuf {
    dir.join(format!("{base:020}.{end:020}{SWAP_SUFFIX}"))
}

fn parse_swap(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(SWAP_SUFFIX)?;
    let (base, end) = stem.split_once('.')?;
    Some((base.parse().ok()?, end.parse().ok()?))
}

fn remove_if_present(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Io { path: path.to_owned(), source }),
    }
}

fn remove_segment_files(dir: &Path, base: i64) -> Result<(), LogError> {
    for ext in ["log", "index", "timeindex"] {
        remove_if_present(&dir.join(segment::file_name(base, ext)))?;
    }
    Ok(())
}

/// Finishes swaps a crash interrupted and removes uncommitted cleaned files.
/// Runs before the log's segments are listed.
pub(super) fn recover_swaps(dir: &Path) -> Result<(), LogError> {
    let mut swaps = Vec::new();
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(LogError::io(dir))? {
        let entry = entry.map_err(LogError::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(CLEANED_SUFFIX) {
            tracing::info!(file = %entry.path().display(), "removing a cleaned segment whose swap never started");
            remove_if_present(&entry.path())?;
        } else if let Some(range) = parse_swap(&name) {
            swaps.push(range);
        } else if let Some(base) = segment::parse_base_offset(&name) {
            bases.push(base);
        }
    }
    for &(base, end) in &swaps {
        tracing::info!(dir = %dir.display(), base_offset = base, end_offset = end, "finishing an interrupted segment swap");
        for &old in bases.iter().filter(|&&b| b >= base && b < end) {
            remove_segment_files(dir, old)?;
        }
        remove_segment_files(dir, base)?;
        let from = swap_path(dir, base, end);
        let to = dir.join(segment::file_name(base, "log"));
        fs::rename(&from, &to).map_err(LogError::io(&from))?;
    }
    if !swaps.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

impl PartitionLog {
    /// The first offset not yet cleaned, as the cleaner checkpoint says,
    /// within the log's bounds.
    fn first_dirty_offset(&self) -> i64 {
        self.cleaner_checkpoint.clamp(self.log_start_offset, self.log_end_offset())
    }

    /// The sealed segments a pass may touch: from the log start up to the
    /// first uncleanable offset, whole segments only.
    fn cleanable_segments(&self, now_ms: i64) -> (Vec<&Segment>, i64) {
        let active_base = self.active().base_offset();
        // With transactions this becomes the last stable offset.
        let mut limit = active_base.min(self.high_watermark);
        if self.config.archived {
            // Full history stays in the archive: clean only what it holds.
            limit = limit.min(self.archived_offset.unwrap_or(i64::MIN));
        }
        let lag_ms = i64::try_from(self.config.min_compaction_lag_ms).unwrap_or(i64::MAX);
        let first_dirty = self.first_dirty_offset();
        let mut out = Vec::new();
        for segment in self.segments.values() {
            let base = segment.base_offset();
            let too_recent = segment.next_offset() > first_dirty && segment.max_timestamp() > now_ms.saturating_sub(lag_ms);
            if base == active_base || segment.next_offset() > limit || too_recent {
                return (out, base);
            }
            out.push(segment);
        }
        (out, active_base)
    }

    /// Whether a pass is due now, and how many dirty bytes wait.
    pub fn cleaning_need(&self, now_ms: i64) -> (CleaningNeed, u64) {
        if !self.config.cleanup_compact {
            return (CleaningNeed::Nothing, 0);
        }
        let (segments, _) = self.cleanable_segments(now_ms);
        if segments.is_empty() {
            return (CleaningNeed::Nothing, 0);
        }
        let first_dirty = self.first_dirty_offset();
        let dirty: Vec<&&Segment> = segments.iter().filter(|s| s.next_offset() > first_dirty && !s.is_empty()).collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size()).sum();
        let total_bytes: u64 = segments.iter().map(|s| s.size()).sum();
        let ratio_reached =
            dirty_bytes > 0 && u128::from(dirty_bytes) * u128::from(PPM) >= u128::from(total_bytes) * u128::from(self.config.min_cleanable_dirty_ratio_ppm);
        let max_lag_ms = i64::try_from(self.config.max_compaction_lag_ms).unwrap_or(i64::MAX);
        let overdue = dirty.first().and_then(|s| s.first_batch_timestamp()).is_some_and(|ts| now_ms.saturating_sub(ts) > max_lag_ms);
        let tombstones_due = self.tombstone_horizon_ms.is_some_and(|h| now_ms >= h);
        let need = if ratio_reached || overdue || tombstones_due { CleaningNeed::Due } else { CleaningNeed::NotYet };
        (need, dirty_bytes)
    }

    /// The plan of a pass, when one is due.
    pub fn cleaning_plan(&self, now_ms: i64) -> Option<CleaningPlan> {
        if self.cleaning_need(now_ms).0 != CleaningNeed::Due {
            return None;
        }
        let (segments, first_uncleanable) = self.cleanable_segments(now_ms);
        Some(CleaningPlan {
            dir: self.dir.clone(),
            generation: self.generation,
            segments: segments
                .iter()
                .map(|s| SourceSegment { base_offset: s.base_offset(), next_offset: s.next_offset(), size: s.size(), path: s.log_path() })
                .collect(),
            first_dirty_offset: self.first_dirty_offset().min(first_uncleanable),
            first_uncleanable_offset: first_uncleanable,
            codec: self.config.compression,
            delete_retention_ms: self.config.delete_retention_ms,
            segment_bytes: self.config.segment_bytes,
            producer_last_offsets: self.producers.last_offsets(),
            now_ms,
        })
    }

    /// Swaps a pass's cleaned segments in, unless the log's segments changed
    /// since the plan (a truncation or deletion) or it closed: then the
    /// cleaned files are deleted and nothing changes.
    pub fn commit_cleaning(&mut self, plan: &CleaningPlan, outcome: &CleaningOutcome) -> Result<CommitReport, LogError> {
        if plan.generation != self.generation || self.closed {
            discard_cleaning(outcome)?;
            return Ok(CommitReport { swapped_groups: 0, abandoned: true });
        }
        let mut report = CommitReport::default();
        for group in &outcome.groups {
            let swap = swap_path(&self.dir, group.base_offset, group.end_offset);
            fs::rename(&group.cleaned_path, &swap).map_err(LogError::io(&group.cleaned_path))?;
            sync_dir(&self.dir)?;
            for base in &group.sources {
                if let Some(old) = self.segments.remove(base) {
                    old.delete()?;
                }
            }
            let log_path = self.dir.join(segment::file_name(group.base_offset, "log"));
            fs::rename(&swap, &log_path).map_err(LogError::io(&swap))?;
            sync_dir(&self.dir)?;
            let (mut cleaned, _) = Segment::open(&self.dir, group.base_offset, self.config.index_interval_bytes, false)?;
            cleaned.seal()?;
            self.segments.insert(group.base_offset, cleaned);
            report.swapped_groups += 1;
        }
        self.generation += 1;
        self.cleaner_checkpoint = outcome.cleaned_up_to;
        OffsetCheckpoint::new(self.dir.join(CLEANER_CHECKPOINT_FILE)).write(outcome.cleaned_up_to)?;
        self.tombstone_horizon_ms = outcome.next_delete_horizon_ms;
        OffsetCheckpoint::new(self.dir.join(TOMBSTONE_HORIZON_FILE)).write(outcome.next_delete_horizon_ms.unwrap_or(i64::MAX))?;
        Ok(report)
    }
}

/// Deletes a pass's cleaned files (the pass was abandoned or failed).
pub fn discard_cleaning(outcome: &CleaningOutcome) -> Result<(), LogError> {
    for group in &outcome.groups {
        remove_if_present(&group.cleaned_path)?;
    }
    Ok(())
}
