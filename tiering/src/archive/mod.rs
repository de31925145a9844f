//! The archive: sealed segments in object storage as Parquet, one file per
//! segment, indexed by a manifest per partition.
//!
//! Layout under the archive root (a Hive-partitioned dataset):
//! `topic=<topic>/partition=<n>/<base offset, 20 digits>-<last offset, 20 digits>.parquet`,
//! and nothing else under `topic=<topic>/`; the manifests live apart, at
//! `_silt/topic=<topic>/partition=<n>/manifest.json` (see `layout`).
//!
//! | module | owns |
//! |---|---|
//! | [`format`] | the Parquet schema; segment to file and file rows back to batches |
//! | [`manifest`] | the per-partition index of archived segments |
//! | `fence` | manifest reads and writes fenced by the leader epoch |
//! | `layout` | object paths; moving first-layout manifests to the current layout |
//! | [`store`] | opening the object store an archive URL names |
//! | [`cache`] | the bounded cache of decoded row groups and file footers |
//! | [`reader`] | reading archived files back: byte ranges of an object, the checked footer, row groups |
//! | [`select`] | selective reads (a key, a key prefix, a time window) pruned by manifest, statistics and bloom filters |
//!
//! Rules this module keeps:
//! - A file becomes part of the archive only when the manifest naming it has
//!   been written; the file is written first. A crash in between leaves an
//!   unlisted file, which the retried upload overwrites (names are derived
//!   from offsets), so there is no duplicate and no gap.
//! - Files leave the archive the other way round: the manifest drops them
//!   (remembering them under `deleting`), then they are deleted.
//! - Reads find files through the manifest; nothing on the read path lists
//!   the bucket.
//! - Only a partition's leader writes its archive, and a manifest written by
//!   a newer leader epoch is never overwritten (see `fence`).
//! - All object-store I/O and Parquet work runs on the runtime and blocking
//!   pool given to [`Archive::open`], never on a partition actor's thread.

pub mod cache;
mod fence;
pub mod format;
mod layout;
pub mod manifest;
pub mod reader;
pub mod select;
pub mod store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, UpdateVersion};
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::file::statistics::Statistics;
use tokio::sync::Semaphore;

use crate::error::ArchiveError;
use cache::Lru;
use format::{EncodeOptions, RebuiltBatch};
use manifest::{ArchivedSegment, Manifest};
pub use store::{S3Settings, StoreSettings};

/// The most footers kept (each a few KiB): one per file recently read.
const FOOTER_CACHE_BYTES: u64 = 64 << 20;

/// How the archive runs.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    pub store: StoreSettings,
    pub encode: EncodeOptions,
    /// Segments uploaded at once across the node.
    pub upload_concurrency: usize,
    /// Bytes of decoded row groups kept for remote reads.
    pub cache_bytes: u64,
}

/// What the archive reports to the node's metrics (implemented in `src/`).
pub trait ArchiveObserver: Send + Sync {
    fn uploaded(&self, topic: &str, parquet_bytes: u64, segment_bytes: u64, elapsed: Duration);
    fn upload_failed(&self, topic: &str);
    fn remote_read(&self, topic: &str, bytes: u64);
    fn remote_read_failed(&self, topic: &str);
}

/// An observer that records nothing (tests, tools).
pub struct NoObserver;

impl ArchiveObserver for NoObserver {
    fn uploaded(&self, _: &str, _: u64, _: u64, _: Duration) {}
    fn upload_failed(&self, _: &str) {}
    fn remote_read(&self, _: &str, _: u64) {}
    fn remote_read_failed(&self, _: &str) {}
}

/// A sealed local segment, ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub path: PathBuf,
    pub size: u64,
}

type RowGroupKey = (Path, usize);

/// The node's archive: the store, the upload budget and the read cache.
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    root: Path,
    settings: ArchiveSettings,
    runtime: tokio::runtime::Handle,
    uploads: Semaphore,
    row_groups: Lru<RowGroupKey, Vec<RebuiltBatch>>,
    footers: Lru<Path, ArrowReaderMetadata>,
    observer: Arc<dyn ArchiveObserver>,
    /// Set once the store answered a conditional update with `NotImplemented`.
    no_conditional_updates: AtomicBool,
    /// Uploads go to a staging path and are renamed into place: the store
    /// (a local folder) would otherwise leave a partly written temporary
    /// among the data on a crash (see `layout`).
    stage_uploads: bool,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("url", &self.settings.store.url).finish_non_exhaustive()
    }
}

impl Archive {
    /// Opens the store the settings name. I/O runs on `runtime`.
    pub fn open(settings: ArchiveSettings, runtime: tokio::runtime::Handle, observer: Arc<dyn ArchiveObserver>) -> Result<Arc<Archive>, ArchiveError> {
        let (store, root) = store::open(&settings.store)?;
        let stage_uploads = store::is_local(&settings.store);
        Ok(Arc::new(Archive {
            store,
            root,
            uploads: Semaphore::new(settings.upload_concurrency.max(1)),
            row_groups: Lru::new(settings.cache_bytes),
            footers: Lru::new(FOOTER_CACHE_BYTES),
            settings,
            runtime,
            observer,
            no_conditional_updates: AtomicBool::new(false),
            stage_uploads,
        }))
    }

    pub fn url(&self) -> &str {
        &self.settings.store.url
    }

    /// Runs `fut` on the archive's runtime and waits for it, whatever runtime
    /// the caller is on (partition actors run on their own arbiters).
    async fn run<T: Send + 'static>(&self, fut: impl std::future::Future<Output = Result<T, ArchiveError>> + Send + 'static) -> Result<T, ArchiveError> {
        match self.runtime.spawn(fut).await {
            Ok(result) => result,
            Err(join) => Err(ArchiveError::Task { reason: join.to_string() }),
        }
    }

    fn partition_archive(
        self: &Arc<Self>,
        topic: String,
        partition: i32,
        manifest: Manifest,
        version: Option<UpdateVersion>,
        epoch: Option<i32>,
    ) -> Arc<PartitionArchive> {
        Arc::new(PartitionArchive {
            archive: Arc::clone(self),
            prefix: layout::data_prefix(&self.root, &topic, partition),
            manifest_path: layout::manifest_path(&self.root, &topic, partition),
            topic,
            partition,
            epoch,
            version: Mutex::new(version),
            manifest: RwLock::new(Arc::new(manifest)),
            writer: tokio::sync::Mutex::new(()),
            prefetching: AtomicBool::new(false),
        })
    }

    /// Loads (or starts) a partition's manifest, as the partition's leader
    /// at `leader_epoch`, and finishes deletions cut short. A manifest of
    /// another topic id (a recreated topic whose old archive was not removed,
    /// or a lost data directory) is refused and left untouched: it may be the
    /// only copy of that history, so only an operator removes it. A manifest
    /// written by a newer leader epoch is refused too ([`ArchiveError::Fenced`]).
    /// A manifest at the first layout's path is moved to the current one.
    pub async fn open_partition(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        topic_id: &str,
        leader_epoch: i32,
    ) -> Result<Arc<PartitionArchive>, ArchiveError> {
        let archive = Arc::clone(self);
        let (topic, topic_id) = (topic.to_owned(), topic_id.to_owned());
        self.run(async move {
            let (manifest, version) = match archive.find_manifest(&topic, partition).await? {
                Some(found) if found.stored.manifest.topic_id == topic_id => {
                    let s = archive.migrate(&topic, partition, found, leader_epoch).await?;
                    (s.manifest, Some(s.version))
                }
                Some(found) => {
                    let path = layout::data_prefix(&archive.root, &topic, partition).to_string();
                    return Err(ArchiveError::ForeignManifest { path, found: found.stored.manifest.topic_id, expected: topic_id });
                }
                None => (Manifest::new(&topic, partition, &topic_id), None),
            };
            let part = archive.partition_archive(topic, partition, manifest, version, Some(leader_epoch));
            part.finish_deletes().await?;
            Ok(part)
        })
        .await
    }

    /// Opens a partition's archive for reading only (tools such as `silt
    /// replay`, followers learning what the leader archived): nothing is
    /// changed or deleted, not even a first-layout manifest moved. `None`
    /// when it has no manifest.
    pub async fn read_partition(self: &Arc<Self>, topic: &str, partition: i32) -> Result<Option<Arc<PartitionArchive>>, ArchiveError> {
        let archive = Arc::clone(self);
        let topic = topic.to_owned();
        self.run(async move {
            let found = archive.find_manifest(&topic, partition).await?;
            Ok(found.map(|f| archive.partition_archive(topic, partition, f.stored.manifest, Some(f.stored.version), None)))
        })
        .await
    }

    /// The partitions of `topic` that have an archive, at either layout
    /// (lists the bucket: for tools, not reads).
    pub async fn list_partitions(self: &Arc<Self>, topic: &str) -> Result<Vec<i32>, ArchiveError> {
        let archive = Arc::clone(self);
        let prefixes = [layout::metadata_topic_prefix(&self.root, topic), layout::topic_prefix(&self.root, topic)];
        self.run(async move {
            let mut partitions: Vec<i32> = Vec::new();
            for prefix in &prefixes {
                let listing = archive.store.list_with_delimiter(Some(prefix)).await.map_err(ArchiveError::store(prefix))?;
                partitions.extend(
                    listing
                        .common_prefixes
                        .iter()
                        .filter_map(|p| p.filename().and_then(|name| name.strip_prefix("partition=")).and_then(|n| n.parse::<i32>().ok())),
                );
            }
            partitions.sort_unstable();
            partitions.dedup();
            Ok(partitions)
        })
        .await
    }

    /// Deletes every archived file of a topic (the topic was deleted): the
    /// data first, then the manifests, so that a crash in between leaves
    /// manifests naming missing files (which a retry deletes) rather than
    /// unlisted files among a recreated topic's data.
    pub async fn delete_topic(self: &Arc<Self>, topic: &str) -> Result<(), ArchiveError> {
        let archive = Arc::clone(self);
        let prefixes =
            [layout::topic_prefix(&self.root, topic), layout::staging_topic_prefix(&self.root, topic), layout::metadata_topic_prefix(&self.root, topic)];
        self.run(async move {
            for prefix in &prefixes {
                archive.delete_prefix(prefix).await?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_prefix(&self, prefix: &Path) -> Result<(), ArchiveError> {
        let objects: Vec<_> = self.store.list(Some(prefix)).try_collect().await.map_err(ArchiveError::store(prefix))?;
        for object in objects {
            match self.store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(ArchiveError::store(&object.location)(e)),
            }
        }
        Ok(())
    }

    async fn footer(&self, path: &Path, size: u64) -> Result<ArrowReaderMetadata, ArchiveError> {
        if let Some(hit) = self.footers.get(path) {
            return Ok((*hit).clone());
        }
        let mut reader = reader::ObjectFileReader::new(Arc::clone(&self.store), path.clone(), size);
        let metadata = reader::load_footer(&mut reader, path, size).await?;
        let weight = metadata.metadata().memory_size() as u64;
        self.footers.insert(path.clone(), Arc::new(metadata.clone()), weight);
        Ok(metadata)
    }

    /// The rebuilt batches of one row group, from the cache or the store.
    async fn row_group(&self, path: &Path, size: u64, index: usize) -> Result<Arc<Vec<RebuiltBatch>>, ArchiveError> {
        let key = (path.clone(), index);
        if let Some(hit) = self.row_groups.get(&key) {
            return Ok(hit);
        }
        let metadata = self.footer(path, size).await?;
        let reader = reader::ObjectFileReader::new(Arc::clone(&self.store), path.clone(), size);
        let batches = reader::load_row_group(reader, metadata, index, path).await?;
        let rebuilt =
            tokio::task::spawn_blocking(move || format::rebuild_batches(&batches)).await.map_err(|e| ArchiveError::Task { reason: e.to_string() })??;
        let weight = rebuilt.iter().map(|b| b.bytes.len() as u64).sum::<u64>() + 64;
        let rebuilt = Arc::new(rebuilt);
        self.row_groups.insert(key, rebuilt.clone(), weight);
        Ok(rebuilt)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Min and max of an i64 column of a row group, when statistics are present.
fn i64_range(metadata: &ArrowReaderMetadata, row_group: usize, column: usize) -> Option<(i64, i64)> {
    match metadata.metadata().row_group(row_group).column(column).statistics()? {
        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

const OFFSET_COLUMN: usize = 0;
const TIMESTAMP_COLUMN: usize = 1;

/// One partition's part of the archive.
pub struct PartitionArchive {
    archive: Arc<Archive>,
    topic: String,
    partition: i32,
    /// Where the partition's Parquet files are.
    prefix: Path,
    /// Where its manifest is.
    manifest_path: Path,
    /// The leader epoch this archive writes in; `None` when opened read-only.
    epoch: Option<i32>,
    /// The version of the manifest as last read or written: what a
    /// conditional write expects to replace (`None`: there is none yet).
    version: Mutex<Option<UpdateVersion>>,
    /// The latest saved manifest; readers take a snapshot.
    manifest: RwLock<Arc<Manifest>>,
    /// Serialises manifest changes (uploads, retention, DeleteRecords).
    writer: tokio::sync::Mutex<()>,
    prefetching: AtomicBool,
}

impl std::fmt::Debug for PartitionArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionArchive").field("prefix", &self.prefix.as_ref()).finish_non_exhaustive()
    }
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub segment: ArchivedSegment,
    pub elapsed: Duration,
}

impl PartitionArchive {
    /// The manifest as last saved.
    pub fn manifest(&self) -> Arc<Manifest> {
        self.manifest.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn archive(&self) -> &Arc<Archive> {
        &self.archive
    }

    fn file_path(&self, file: &str) -> Path {
        self.prefix.clone().join(file)
    }

    /// Deletes the files a saved manifest dropped, then forgets them.
    async fn finish_deletes(&self) -> Result<(), ArchiveError> {
        let _writer = self.writer.lock().await;
        let current = self.manifest();
        if current.deleting.is_empty() {
            return Ok(());
        }
        for file in &current.deleting {
            let path = self.file_path(file);
            match self.archive.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(ArchiveError::store(&path)(e)),
            }
        }
        let mut next = (*current).clone();
        next.deleting.clear();
        self.save(next).await
    }

    /// Uploads a sealed segment: encode to Parquet (blocking pool), write the
    /// file, then the manifest naming it. Skips a segment already archived.
    pub async fn upload(self: &Arc<Self>, segment: SealedSegment) -> Result<Option<Uploaded>, ArchiveError> {
        let this = Arc::clone(self);
        let topic = self.topic.clone();
        let result = self.archive.run(async move { this.upload_now(segment).await }).await;
        if result.is_err() {
            self.archive.observer.upload_failed(&topic);
        }
        result
    }

    async fn upload_now(self: Arc<Self>, segment: SealedSegment) -> Result<Option<Uploaded>, ArchiveError> {
        if self.manifest().end_offset().is_some_and(|end| segment.next_offset <= end) {
            return Ok(None);
        }
        let _permit = self.archive.uploads.acquire().await.map_err(|e| ArchiveError::Task { reason: e.to_string() })?;
        let started = Instant::now();
        let (topic, partition, options) = (self.topic.clone(), self.partition, self.archive.settings.encode);
        let path = segment.path.clone();
        let encoded = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|source| crate::LogError::Io { path: path.clone(), source })?;
            format::encode_segment(&Bytes::from(bytes), &topic, partition, &options)
        })
        .await
        .map_err(|e| ArchiveError::Task { reason: e.to_string() })??;
        let summary = encoded.summary;
        let file = manifest::file_name(summary.base_offset, summary.last_offset);
        let object = self.file_path(&file);
        let size_bytes = encoded.parquet.len() as u64;
        self.put_file(&object, &file, PutPayload::from(encoded.parquet)).await?;
        let entry = ArchivedSegment {
            file,
            base_offset: summary.base_offset,
            last_offset: summary.last_offset,
            min_timestamp: summary.min_timestamp,
            max_timestamp: summary.max_timestamp,
            size_bytes,
            segment_bytes: summary.segment_bytes,
            rows: summary.rows,
            archived_at_ms: now_ms(),
        };
        {
            let _writer = self.writer.lock().await;
            let mut next = (*self.manifest()).clone();
            next.push(entry.clone()).map_err(|reason| ArchiveError::CorruptManifest { path: self.prefix.to_string(), reason })?;
            self.save(next).await?;
        }
        let elapsed = started.elapsed();
        self.archive.observer.uploaded(&self.topic, size_bytes, summary.segment_bytes, elapsed);
        tracing::debug!(topic = %self.topic, partition = self.partition, base_offset = entry.base_offset, last_offset = entry.last_offset, size_bytes, elapsed_ms = elapsed.as_millis() as u64, "segment archived");
        Ok(Some(Uploaded { segment: entry, elapsed }))
    }

    /// Writes a Parquet file into the partition's folder, where it becomes
    /// visible to engines only once whole (see `layout`).
    async fn put_file(&self, object: &Path, file: &str, payload: PutPayload) -> Result<(), ArchiveError> {
        let store = &self.archive.store;
        if !self.archive.stage_uploads {
            store.put(object, payload).await.map_err(ArchiveError::store(object))?;
            return Ok(());
        }
        let staged = layout::staging_path(&self.archive.root, &self.topic, self.partition, file);
        store.put(&staged, payload).await.map_err(ArchiveError::store(&staged))?;
        store.rename(&staged, object).await.map_err(ArchiveError::store(object))
    }

    /// Moves the archive's start to `offset` (retention, DeleteRecords) and
    /// deletes the files wholly below it.
    pub async fn advance_start(self: &Arc<Self>, offset: i64) -> Result<(), ArchiveError> {
        let this = Arc::clone(self);
        self.archive
            .run(async move {
                {
                    let _writer = this.writer.lock().await;
                    let mut next = (*this.manifest()).clone();
                    if offset <= next.log_start_offset {
                        return Ok(());
                    }
                    let dropped = next.advance_start(offset);
                    next.deleting.extend(dropped.into_iter().map(|s| s.file));
                    this.save(next).await?;
                }
                this.finish_deletes().await
            })
            .await
    }

    /// Applies `retention.ms` / `retention.bytes` to the archive. `local_start`
    /// and `local_bytes` describe the local log, which counts towards the
    /// partition's size. Returns the archive's new start, if it moved.
    pub async fn enforce_retention(
        self: &Arc<Self>,
        now_ms: i64,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        local_start: i64,
        local_bytes: u64,
    ) -> Result<Option<i64>, ArchiveError> {
        let manifest = self.manifest();
        // Sizes come from a stored manifest: saturate rather than overflow.
        let mut total = manifest.segments.iter().filter(|s| s.last_offset < local_start).fold(local_bytes, |sum, s| sum.saturating_add(s.segment_bytes));
        let mut new_start = None;
        for s in &manifest.segments {
            let expired = retention_ms.is_some_and(|ms| s.max_timestamp >= 0 && now_ms.saturating_sub(s.max_timestamp) > ms as i64);
            let archive_only = s.last_offset < local_start;
            let oversize = archive_only && retention_bytes.is_some_and(|max| total.saturating_sub(s.segment_bytes) >= max);
            if !(expired || oversize) {
                break;
            }
            if archive_only {
                total = total.saturating_sub(s.segment_bytes);
            }
            new_start = Some(s.next_offset());
        }
        match new_start {
            Some(offset) if offset > manifest.log_start_offset => {
                self.advance_start(offset).await?;
                tracing::info!(topic = %self.topic, partition = self.partition, log_start_offset = offset, "archive retention deleted segments");
                Ok(Some(offset))
            }
            _ => Ok(None),
        }
    }

    /// Reads whole batches from `offset` (at least one, then up to `max_bytes`),
    /// or `None` when the archive holds nothing at or after it.
    pub async fn read(self: &Arc<Self>, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, ArchiveError> {
        let this = Arc::clone(self);
        let topic = self.topic.clone();
        let result = self.archive.run(async move { this.read_now(offset, max_bytes).await }).await;
        match &result {
            Ok(Some(bytes)) => self.archive.observer.remote_read(&topic, bytes.len() as u64),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(topic = %topic, partition = self.partition, offset, cause = %e, "archive read failed");
                self.archive.observer.remote_read_failed(&topic);
            }
        }
        result
    }

    async fn read_now(self: Arc<Self>, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, ArchiveError> {
        let manifest = self.manifest();
        let offset = offset.max(manifest.log_start_offset);
        let Some(segment) = manifest.find(offset).cloned() else { return Ok(None) };
        let path = self.file_path(&segment.file);
        let metadata = self.archive.footer(&path, segment.size_bytes).await?;
        let groups = metadata.metadata().num_row_groups();
        let first = (0..groups).find(|&g| i64_range(&metadata, g, OFFSET_COLUMN).is_none_or(|(_, max)| max >= offset)).unwrap_or(groups);
        let mut out = BytesMut::new();
        let mut group = first;
        while group < groups {
            let batches = self.archive.row_group(&path, segment.size_bytes, group).await?;
            for b in batches.iter().filter(|b| b.next_offset > offset) {
                if !out.is_empty() && out.len() + b.bytes.len() > max_bytes {
                    self.read_ahead(&segment, group, &manifest);
                    return Ok(Some(out.freeze()));
                }
                out.extend_from_slice(&b.bytes);
            }
            group += 1;
        }
        self.read_ahead(&segment, group.saturating_sub(1), &manifest);
        Ok((!out.is_empty()).then(|| out.freeze()))
    }

    /// Loads the row group after `group` (or the next file's first) into the
    /// cache in the background, one at a time per partition.
    fn read_ahead(self: &Arc<Self>, segment: &ArchivedSegment, group: usize, manifest: &Manifest) {
        let (target, index) = match self.archive.footers.get(&self.file_path(&segment.file)) {
            Some(m) if group + 1 < m.metadata().num_row_groups() => (segment.clone(), group + 1),
            _ => match manifest.find(segment.next_offset()) {
                Some(next) if next.base_offset > segment.last_offset => (next.clone(), 0),
                _ => return,
            },
        };
        let path = self.file_path(&target.file);
        if self.archive.row_groups.contains(&(path.clone(), index)) || self.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        self.archive.runtime.spawn(async move {
            if let Err(e) = this.archive.row_group(&path, target.size_bytes, index).await {
                tracing::debug!(path = %path, cause = %e, "archive read-ahead failed");
            }
            this.prefetching.store(false, Ordering::Release);
        });
    }

    /// The first record at or after `timestamp` in the archive: `(offset, timestamp)`.
    pub async fn offset_for_timestamp(self: &Arc<Self>, timestamp: i64) -> Result<Option<(i64, i64)>, ArchiveError> {
        let this = Arc::clone(self);
        self.archive
            .run(async move {
                let manifest = this.manifest();
                for segment in manifest.segments.iter().filter(|s| s.max_timestamp >= timestamp) {
                    if let Some(found) = this.find_in_file(segment, manifest.log_start_offset, timestamp, |ts| ts >= timestamp).await? {
                        return Ok(Some(found));
                    }
                }
                Ok(None)
            })
            .await
    }

    /// The record with the largest timestamp in the archive.
    pub async fn max_timestamp(self: &Arc<Self>) -> Result<Option<(i64, i64)>, ArchiveError> {
        let this = Arc::clone(self);
        self.archive
            .run(async move {
                let manifest = this.manifest();
                let Some(segment) = manifest.segments.iter().filter(|s| s.rows > 0).max_by_key(|s| s.max_timestamp) else { return Ok(None) };
                let max = segment.max_timestamp;
                this.find_in_file(segment, manifest.log_start_offset, max, |ts| ts == max).await
            })
            .await
    }

    /// The first record at or past `start` whose timestamp `matches`; only
    /// row groups holding a timestamp >= `at_least` can match.
    async fn find_in_file(
        &self,
        segment: &ArchivedSegment,
        start: i64,
        at_least: i64,
        matches: impl Fn(i64) -> bool,
    ) -> Result<Option<(i64, i64)>, ArchiveError> {
        let path = self.file_path(&segment.file);
        let metadata = self.archive.footer(&path, segment.size_bytes).await?;
        for group in 0..metadata.metadata().num_row_groups() {
            // Timestamp statistics let whole row groups be skipped.
            if i64_range(&metadata, group, TIMESTAMP_COLUMN).is_some_and(|(_, max_ts)| max_ts < at_least) {
                continue;
            }
            let batches = self.archive.row_group(&path, segment.size_bytes, group).await?;
            for b in batches.iter().filter(|b| b.next_offset > start) {
                let decoded = crate::batch::decode_records(&b.bytes)?;
                if let Some(r) = decoded.records.iter().find(|r| r.offset >= start && matches(r.timestamp)) {
                    return Ok(Some((r.offset, r.timestamp)));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
