//! Selective reads: the records of one key, a key prefix or a time window,
//! reading only the files and row groups that can hold them.
//!
//! Three levels prune, cheapest first:
//! - the manifest: a file whose offset or time range misses the selection is
//!   not opened ([`segment_may_match`]);
//! - a file's footer: a row group whose `offset`, `timestamp` or `key`
//!   min/max statistics miss the selection is not read ([`prune`]);
//! - the key column's bloom filter, for an exact key: a row group whose
//!   filter says the key is absent is not read (one small read per row group
//!   instead of its pages).
//!
//! Files written before key statistics and bloom filters existed have
//! neither: their row groups are read and filtered record by record, so they
//! give the same answer, only slower. [`SelectScan`] counts what it read
//! ([`ScanStats`]) so that the pruning can be checked from outside.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use serde::Serialize;

use super::format::{self, column};
use super::manifest::ArchivedSegment;
use super::reader::{self, ObjectFileReader};
use super::PartitionArchive;
use crate::batch::{self, Record};
use crate::error::ArchiveError;

/// Which records to read. Every bound is optional; a record is selected when
/// it meets all that are given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The record's key equals this (a null key never does).
    pub key: Option<Bytes>,
    /// The record's key starts with this.
    pub key_prefix: Option<Bytes>,
    /// Offsets `[from, to)`.
    pub from_offset: Option<i64>,
    pub to_offset: Option<i64>,
    /// Timestamps `[from, to]`, both inclusive (ms since the epoch).
    pub from_time: Option<i64>,
    pub to_time: Option<i64>,
}

impl Selection {
    /// Whether `record` is selected.
    pub fn matches(&self, record: &Record) -> bool {
        let key = record.key.as_deref();
        self.from_offset.is_none_or(|o| record.offset >= o)
            && self.to_offset.is_none_or(|o| record.offset < o)
            && self.from_time.is_none_or(|t| record.timestamp >= t)
            && self.to_time.is_none_or(|t| record.timestamp <= t)
            && self.key.as_deref().is_none_or(|k| key == Some(k))
            && self.key_prefix.as_deref().is_none_or(|p| key.is_some_and(|k| k.starts_with(p)))
    }

    fn offsets_miss(&self, (min, max): (i64, i64)) -> bool {
        self.from_offset.is_some_and(|o| max < o) || self.to_offset.is_some_and(|o| min >= o)
    }

    fn times_miss(&self, (min, max): (i64, i64)) -> bool {
        self.from_time.is_some_and(|t| max < t) || self.to_time.is_some_and(|t| min > t)
    }

    /// Whether no key in `[min, max]` can be selected.
    fn keys_miss(&self, min: &[u8], max: &[u8]) -> bool {
        let exact = self.key.as_deref().is_some_and(|k| k < min || k > max);
        let prefix = self.key_prefix.as_deref().is_some_and(|p| {
            // Keys starting with p are the range [p, successor(p)).
            max < p || prefix_successor(p).is_some_and(|end| min >= end.as_slice())
        });
        exact || prefix
    }

    fn selects_keys(&self) -> bool {
        self.key.is_some() || self.key_prefix.is_some()
    }
}

/// The smallest byte string greater than every string starting with `p`, or
/// `None` when there is none (`p` is empty or all `0xff`).
fn prefix_successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Whether a file the manifest lists can hold selected records, by its
/// offset and time range.
pub fn segment_may_match(selection: &Selection, segment: &ArchivedSegment) -> bool {
    if selection.offsets_miss((segment.base_offset, segment.last_offset)) {
        return false;
    }
    // A file without records says -1 for both: nothing to select from it.
    if segment.rows == 0 {
        return false;
    }
    !selection.times_miss((segment.min_timestamp, segment.max_timestamp))
}

/// What a row group's footer says about it: min/max of its offsets,
/// timestamps and keys, where the file has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowGroupFacts {
    pub offsets: Option<(i64, i64)>,
    pub timestamps: Option<(i64, i64)>,
    /// Min and max key (each possibly truncated, but still a lower and an
    /// upper bound of the keys).
    pub keys: Option<(Vec<u8>, Vec<u8>)>,
    /// Every key of the row group is null (the statistics count them).
    pub keys_all_null: bool,
}

/// Why a row group is read or skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Read,
    SkipOffsets,
    SkipTimes,
    SkipKeyRange,
    SkipBloom,
}

/// Decides whether a row group can hold selected records, from its
/// statistics and, for an exact key, its key bloom filter (`None`: the file
/// has none, or none was read). When in doubt, the row group is read.
pub fn prune(selection: &Selection, facts: &RowGroupFacts, key_bloom: Option<&Sbbf>) -> Verdict {
    if facts.offsets.is_some_and(|r| selection.offsets_miss(r)) {
        return Verdict::SkipOffsets;
    }
    if facts.timestamps.is_some_and(|r| selection.times_miss(r)) {
        return Verdict::SkipTimes;
    }
    if selection.selects_keys() {
        if facts.keys_all_null {
            return Verdict::SkipKeyRange;
        }
        if facts.keys.as_ref().is_some_and(|(min, max)| selection.keys_miss(min, max)) {
            return Verdict::SkipKeyRange;
        }
    }
    if let (Some(key), Some(bloom)) = (selection.key.as_deref(), key_bloom) {
        if !bloom.check(key) {
            return Verdict::SkipBloom;
        }
    }
    Verdict::Read
}

/// The leaf column index of `name` in a file.
fn column_index(metadata: &ParquetMetaData, name: &str) -> Option<usize> {
    metadata.file_metadata().schema_descr().columns().iter().position(|c| c.path().parts() == [name])
}

/// The facts of row group `group` from a file's footer.
pub fn row_group_facts(metadata: &ParquetMetaData, group: usize) -> RowGroupFacts {
    let rg = metadata.row_group(group);
    let int_range = |name: &str| match column_index(metadata, name).and_then(|c| rg.column(c).statistics()) {
        Some(Statistics::Int64(s)) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    };
    let key_stats = column_index(metadata, column::KEY).and_then(|c| rg.column(c).statistics());
    let keys = key_stats.and_then(|s| Some((s.min_bytes_opt()?.to_vec(), s.max_bytes_opt()?.to_vec())));
    let keys_all_null = key_stats.and_then(Statistics::null_count_opt).is_some_and(|nulls| rg.num_rows() > 0 && nulls == rg.num_rows() as u64);
    RowGroupFacts { offsets: int_range(column::OFFSET), timestamps: int_range(column::TIMESTAMP), keys, keys_all_null }
}

/// What a scan read, and what it skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScanStats {
    /// Files the manifests list for the scanned partitions.
    pub files: u64,
    /// Their total size: what a full scan would read.
    pub archive_bytes: u64,
    /// Files whose footer was read (the rest were pruned by the manifest).
    pub files_opened: u64,
    /// Row groups in the opened files.
    pub row_groups: u64,
    pub row_groups_read: u64,
    pub row_groups_skipped_by_stats: u64,
    pub row_groups_skipped_by_bloom: u64,
    /// Bloom filters read (one per row group that statistics did not rule out).
    pub bloom_filters_read: u64,
    /// Bytes fetched from the store: footers, bloom filters and pages.
    pub bytes_read: u64,
    /// Of them, footers (a 64 KiB read from the end of each opened file,
    /// which is the whole file when it is smaller), bloom filters, and the
    /// pages of the row groups read.
    pub footer_bytes: u64,
    pub bloom_bytes: u64,
    pub page_bytes: u64,
    /// Records read from the row groups, and of them those selected.
    pub records_scanned: u64,
    pub records_selected: u64,
}

impl ScanStats {
    pub fn add(&mut self, other: &ScanStats) {
        self.files += other.files;
        self.archive_bytes += other.archive_bytes;
        self.files_opened += other.files_opened;
        self.row_groups += other.row_groups;
        self.row_groups_read += other.row_groups_read;
        self.row_groups_skipped_by_stats += other.row_groups_skipped_by_stats;
        self.row_groups_skipped_by_bloom += other.row_groups_skipped_by_bloom;
        self.bloom_filters_read += other.bloom_filters_read;
        self.bytes_read += other.bytes_read;
        self.footer_bytes += other.footer_bytes;
        self.bloom_bytes += other.bloom_bytes;
        self.page_bytes += other.page_bytes;
        self.records_scanned += other.records_scanned;
        self.records_selected += other.records_selected;
    }
}

/// An [`ObjectFileReader`] that counts the bytes it fetches.
struct CountingReader {
    inner: ObjectFileReader,
    size: u64,
    bytes: Arc<AtomicU64>,
}

impl AsyncFileReader for CountingReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.bytes.fetch_add(range.end.saturating_sub(range.start), Ordering::Relaxed);
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        self.bytes.fetch_add(total, Ordering::Relaxed);
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(&'a mut self, options: Option<&'a ArrowReaderOptions>) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        // Through this reader's own get_bytes, so that the footer is counted.
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(reader::FOOTER_PREFETCH_BYTES))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

const FOOTER: usize = 0;
const BLOOM: usize = 1;
const PAGES: usize = 2;

/// The file being scanned: its footer and the next row group to consider.
struct OpenFile {
    segment: ArchivedSegment,
    path: Path,
    metadata: ArrowReaderMetadata,
    next_group: usize,
}

/// Reads the selected records of one partition's archive, one row group at
/// a time, skipping the files and row groups that cannot hold any.
pub struct SelectScan {
    part: Arc<PartitionArchive>,
    selection: Selection,
    segments: VecDeque<ArchivedSegment>,
    open: Option<OpenFile>,
    /// Bytes fetched for footers, bloom filters and pages.
    bytes: [Arc<AtomicU64>; 3],
    stats: ScanStats,
}

impl SelectScan {
    /// A scan of `part` as its manifest now lists it. Records below the
    /// archive's start offset are never selected.
    pub fn new(part: Arc<PartitionArchive>, mut selection: Selection) -> SelectScan {
        let manifest = part.manifest();
        selection.from_offset = Some(selection.from_offset.unwrap_or(0).max(manifest.log_start_offset));
        let stats =
            ScanStats { files: manifest.segments.len() as u64, archive_bytes: manifest.segments.iter().map(|s| s.size_bytes).sum(), ..ScanStats::default() };
        let segments = manifest.segments.iter().filter(|s| segment_may_match(&selection, s)).cloned().collect();
        SelectScan { part, selection, segments, open: None, bytes: Default::default(), stats }
    }

    /// What the scan has read so far.
    pub fn stats(&self) -> ScanStats {
        let [footer_bytes, bloom_bytes, page_bytes] = self.bytes.each_ref().map(|b| b.load(Ordering::Relaxed));
        ScanStats { bytes_read: footer_bytes + bloom_bytes + page_bytes, footer_bytes, bloom_bytes, page_bytes, ..self.stats }
    }

    /// A reader of `path` counting what it fetches as `FOOTER`, `BLOOM` or `PAGES`.
    fn reader(&self, segment: &ArchivedSegment, path: &Path, counter: usize) -> CountingReader {
        let inner = ObjectFileReader::new(Arc::clone(&self.part.archive.store), path.clone(), segment.size_bytes);
        CountingReader { inner, size: segment.size_bytes, bytes: Arc::clone(&self.bytes[counter]) }
    }

    /// The selected records of the next row group that holds any, in offset
    /// order; `None` once the partition is done.
    pub async fn next(&mut self) -> Result<Option<Vec<Record>>, ArchiveError> {
        loop {
            let Some(file) = &mut self.open else {
                let Some(segment) = self.segments.pop_front() else { return Ok(None) };
                let path = self.part.file_path(&segment.file);
                let metadata = reader::load_footer(&mut self.reader(&segment, &path, FOOTER), &path, segment.size_bytes).await?;
                self.stats.files_opened += 1;
                self.stats.row_groups += metadata.metadata().num_row_groups() as u64;
                self.open = Some(OpenFile { segment, path, metadata, next_group: 0 });
                continue;
            };
            let group = file.next_group;
            if group >= file.metadata.metadata().num_row_groups() {
                self.open = None;
                continue;
            }
            file.next_group += 1;
            let (segment, path, metadata) = (file.segment.clone(), file.path.clone(), file.metadata.clone());
            let facts = row_group_facts(metadata.metadata(), group);
            let mut verdict = prune(&self.selection, &facts, None);
            if verdict == Verdict::Read && self.selection.key.is_some() {
                if let Some(key) = column_index(metadata.metadata(), column::KEY) {
                    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(self.reader(&segment, &path, BLOOM), metadata.clone());
                    let bloom = builder
                        .get_row_group_column_bloom_filter(group, key)
                        .await
                        .map_err(|e| ArchiveError::Unreadable { path: path.to_string(), source: e })?;
                    if bloom.is_some() {
                        self.stats.bloom_filters_read += 1;
                    }
                    verdict = prune(&self.selection, &facts, bloom.as_ref());
                }
            }
            match verdict {
                Verdict::Read => {}
                Verdict::SkipBloom => {
                    self.stats.row_groups_skipped_by_bloom += 1;
                    continue;
                }
                _ => {
                    self.stats.row_groups_skipped_by_stats += 1;
                    continue;
                }
            }
            self.stats.row_groups_read += 1;
            let rows = reader::load_row_group(self.reader(&segment, &path, PAGES), metadata, group, &path).await?;
            let selection = self.selection.clone();
            let (scanned, selected) =
                tokio::task::spawn_blocking(move || select_rows(&rows, &selection)).await.map_err(|e| ArchiveError::Task { reason: e.to_string() })??;
            self.stats.records_scanned += scanned;
            self.stats.records_selected += selected.len() as u64;
            if !selected.is_empty() {
                return Ok(Some(selected));
            }
        }
    }
}

/// The selected records of decoded rows, and how many records they held.
fn select_rows(rows: &[arrow_array::RecordBatch], selection: &Selection) -> Result<(u64, Vec<Record>), ArchiveError> {
    let mut scanned = 0;
    let mut selected = Vec::new();
    for rebuilt in format::rebuild_batches(rows)? {
        let decoded = batch::decode_records(&rebuilt.bytes)?;
        scanned += decoded.records.len() as u64;
        selected.extend(decoded.records.into_iter().filter(|r| selection.matches(r)));
    }
    Ok((scanned, selected))
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;
