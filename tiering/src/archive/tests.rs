//! The archive against a real local store: upload, read back, retention,
//! crash between upload and manifest, damaged files.

use super::*;
use crate::batch::tests::make_batch;
use crate::batch::{self, BatchHeader};
use crate::{LogConfig, PartitionLog};
use kafka_protocol::records::Compression;

struct Fixture {
    _dir: tempfile::TempDir,
    archive_dir: std::path::PathBuf,
    log: PartitionLog,
    archive: Arc<Archive>,
    runtime: tokio::runtime::Runtime,
}

/// Opens an archive at `url` whose I/O runs on `runtime`.
pub(super) fn open(url: &str, runtime: &tokio::runtime::Runtime) -> Arc<Archive> {
    let settings = ArchiveSettings {
        store: StoreSettings { url: url.to_owned(), ..StoreSettings::default() },
        encode: EncodeOptions::default(),
        upload_concurrency: 1,
        cache_bytes: 1 << 20,
    };
    Archive::open(settings, runtime.handle().clone(), Arc::new(NoObserver)).expect("open the archive")
}

/// Runs `check` against the local-folder store and the in-memory one (which,
/// like S3, has conditional updates).
pub(super) fn on_both_stores(check: impl Fn(&Arc<Archive>, &tokio::runtime::Runtime)) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let local = url::Url::from_directory_path(dir.path().join("archive")).expect("url").to_string();
    for url in [local.as_str(), "memory:///archive"] {
        check(&open(url, &runtime), &runtime);
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("archive");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let settings = ArchiveSettings {
        store: StoreSettings { url: url::Url::from_directory_path(&archive_dir).unwrap().to_string(), ..StoreSettings::default() },
        encode: EncodeOptions { row_group_bytes: 2_000, ..EncodeOptions::default() },
        upload_concurrency: 2,
        cache_bytes: 1 << 20,
    };
    let archive = Archive::open(settings, runtime.handle().clone(), Arc::new(NoObserver)).unwrap();
    let config =
        LogConfig { segment_bytes: 4096, index_interval_bytes: 256, archived: true, local_retention_ms: Some(0), retention_ms: None, ..LogConfig::default() };
    let (log, _) = PartitionLog::open(&dir.path().join("t-0"), config, true).unwrap();
    Fixture { _dir: dir, archive_dir, log, archive, runtime }
}

/// Appends `batches` batches of 5 records; record `o` has timestamp 10_000 + o.
fn fill(log: &mut PartitionLog, batches: usize) {
    for _ in 0..batches {
        let ts = 10_000 + log.log_end_offset();
        log.append(&make_batch(5, ts, Compression::None), 0, ts).unwrap();
        let leo = log.log_end_offset();
        log.set_high_watermark(leo);
    }
}

async fn upload_all(log: &PartitionLog, part: &Arc<PartitionArchive>) -> usize {
    let from = part.manifest().end_offset().unwrap_or(0);
    let mut n = 0;
    for segment in log.sealed_segments_from(from) {
        if part.upload(segment).await.unwrap().is_some() {
            n += 1;
        }
    }
    n
}

/// Every offset in `[from, to)` read back through the archive, in order.
async fn read_offsets(part: &Arc<PartitionArchive>, from: i64, to: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < to {
        let Some(bytes) = part.read(next, 3_000).await.unwrap() else { break };
        let mut at = 0;
        while at < bytes.len() {
            let header = BatchHeader::parse(&bytes[at..]).unwrap();
            let one = bytes.slice(at..at + header.total_len());
            batch::validate(&one).expect("rebuilt batches are valid");
            for r in batch::decode_records(&one).unwrap().records {
                if r.offset >= next {
                    out.push((r.offset, r.timestamp));
                }
            }
            next = header.next_offset();
            at += header.total_len();
        }
    }
    out
}

#[test]
fn sealed_segments_are_archived_and_read_back_after_local_deletion() {
    let mut f = fixture();
    fill(&mut f.log, 150);
    let part = f.runtime.block_on(f.archive.open_partition("t", 0, "id-1", 0)).unwrap();
    let uploaded = f.runtime.block_on(upload_all(&f.log, &part));
    assert!(uploaded >= 3, "several sealed segments, got {uploaded}");
    let m = part.manifest();
    let end = m.end_offset().unwrap();
    assert_eq!(m.start_offset(), Some(0));
    assert_eq!(f.log.sealed_segments_from(end), vec![], "everything sealed is archived");
    // The layout analytics tools expect: the partition folder holds the
    // listed Parquet files and nothing else; the manifest lives apart.
    let dir = f.archive_dir.join("topic=t").join("partition=0");
    let mut found: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    found.sort();
    assert_eq!(found, m.segments.iter().map(|s| s.file.clone()).collect::<Vec<_>>());
    assert!(f.archive_dir.join("_silt/topic=t/partition=0/manifest.json").is_file());
    let staged = f.archive_dir.join("_silt/staging/topic=t/partition=0");
    assert_eq!(std::fs::read_dir(&staged).map_or(0, |d| d.count()), 0, "staged uploads were moved into place");
    assert_eq!(m.segments[0].file, manifest::file_name(0, m.segments[0].last_offset));

    // Local retention may now delete what is archived, and only that.
    f.log.set_archive_bounds(m.start_offset(), end);
    f.log.enforce_retention(i64::MAX / 2).unwrap();
    assert_eq!(f.log.log_start_offset(), end, "archived segments left the local disk");
    assert_eq!(f.log.effective_log_start_offset(), 0, "the archive still serves them");

    let offsets = f.runtime.block_on(read_offsets(&part, 0, end));
    assert_eq!(offsets.iter().map(|o| o.0).collect::<Vec<_>>(), (0..end).collect::<Vec<_>>());
    assert!(offsets.iter().all(|&(o, ts)| ts == 10_000 + o));
    // A read in the middle of a batch starts at that batch.
    let mid = f.runtime.block_on(part.read(7, 1)).unwrap().unwrap();
    assert_eq!(BatchHeader::parse(&mid).unwrap().base_offset, 5);
    assert!(f.runtime.block_on(part.read(end, 100)).unwrap().is_none(), "nothing past the archive");
}

#[test]
fn timestamps_are_found_in_the_archive() {
    let mut f = fixture();
    fill(&mut f.log, 100);
    let part = f.runtime.block_on(f.archive.open_partition("t", 0, "id-1", 0)).unwrap();
    f.runtime.block_on(upload_all(&f.log, &part));
    let end = part.manifest().end_offset().unwrap();
    assert_eq!(f.runtime.block_on(part.offset_for_timestamp(10_037)).unwrap(), Some((37, 10_037)));
    assert_eq!(f.runtime.block_on(part.offset_for_timestamp(0)).unwrap(), Some((0, 10_000)));
    assert_eq!(f.runtime.block_on(part.offset_for_timestamp(10_000 + end)).unwrap(), None);
    assert_eq!(f.runtime.block_on(part.max_timestamp()).unwrap(), Some((end - 1, 10_000 + end - 1)));
}

#[test]
fn a_crash_between_upload_and_manifest_leaves_no_duplicate_and_no_gap() {
    let mut f = fixture();
    fill(&mut f.log, 100);
    let part = f.runtime.block_on(f.archive.open_partition("t", 0, "id-1", 0)).unwrap();
    let segments = f.log.sealed_segments_from(0);
    f.runtime.block_on(part.upload(segments[0].clone())).unwrap();
    // Simulate the crash: the second file is written but the manifest is not.
    let encoded = format::encode_segment(&Bytes::from(std::fs::read(&segments[1].path).unwrap()), "t", 0, &EncodeOptions::default()).unwrap();
    let orphan = f.archive_dir.join("topic=t/partition=0").join(manifest::file_name(encoded.summary.base_offset, encoded.summary.last_offset));
    std::fs::write(&orphan, &encoded.parquet).unwrap();
    drop(part);
    // After the restart the manifest is the truth; the retry overwrites the orphan.
    let part = f.runtime.block_on(f.archive.open_partition("t", 0, "id-1", 0)).unwrap();
    assert_eq!(part.manifest().segments.len(), 1);
    f.runtime.block_on(upload_all(&f.log, &part));
    let m = part.manifest();
    assert_eq!(m.segments.len(), segments.len());
    assert!(m.segments.windows(2).all(|w| w[1].base_offset == w[0].last_offset + 1), "contiguous");
    let files = std::fs::read_dir(f.archive_dir.join("topic=t/partition=0"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet"))
        .count();
    assert_eq!(files, segments.len(), "no duplicate file");
    // Uploading an archived segment again is a no-op.
    assert!(f.runtime.block_on(part.upload(segments[0].clone())).unwrap().is_none());
}

#[test]
fn a_crash_mid_write_leaves_nothing_among_the_data() {
    let mut f = fixture();
    fill(&mut f.log, 100);
    let part = f.runtime.block_on(f.archive.open_partition("t", 0, "id-1", 0)).unwrap();
    let segment = f.log.sealed_segments_from(0)[0].clone();
    // What a kill -9 during the write of the first file leaves: a partial
    // staged file (the store's own `#<n>` temporary sits beside it, under
    // `_silt/` as well).
    let encoded = format::encode_segment(&Bytes::from(std::fs::read(&segment.path).unwrap()), "t", 0, &EncodeOptions::default()).unwrap();
    let file = manifest::file_name(encoded.summary.base_offset, encoded.summary.last_offset);
    let staged = f.archive_dir.join("_silt/staging/topic=t/partition=0").join(&file);
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::write(&staged, &encoded.parquet[..encoded.parquet.len() / 2]).unwrap();
    assert!(!f.archive_dir.join("topic=t").exists(), "nothing reached the topic's folder");
    // The retry writes the whole file over it and moves it into place.
    f.runtime.block_on(part.upload(segment)).unwrap().expect("uploaded");
    assert!(!staged.exists());
    let data = f.archive_dir.join("topic=t/partition=0").join(&file);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), part.manifest().segments[0].size_bytes, "the whole file");
    assert!(f.runtime.block_on(part.read(0, 100)).unwrap().is_some(), "and it reads back");
    assert_eq!(std::fs::read_dir(data.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn retention_and_delete_records_remove_archived_files() {
    let mut f = fixture();
    fill(&mut f.log, 100);
    let part = f.runtime.block_on(f.archive.open_partition("t", 0, "id-1", 0)).unwrap();
    f.runtime.block_on(upload_all(&f.log, &part));
    let m = part.manifest();
    let first = m.segments[0].clone();
    let dir = f.archive_dir.join("topic=t/partition=0");
    // DeleteRecords inside the second segment drops the first file only.
    let cut = m.segments[1].base_offset + 1;
    f.runtime.block_on(part.advance_start(cut)).unwrap();
    assert!(!dir.join(&first.file).exists());
    assert!(dir.join(&m.segments[1].file).exists());
    assert_eq!(part.manifest().start_offset(), Some(cut));
    let read = f.runtime.block_on(read_offsets(&part, 0, cut + 3));
    // Reads start at the batch holding the new start offset (as Kafka's do).
    assert!(read[0].0 <= cut && read[0].0 > cut - 5, "first record {}", read[0].0);
    assert!(read.iter().any(|r| r.0 == cut));
    // retention.ms removes every segment whose newest record is too old.
    let local_start = f.log.log_end_offset();
    let moved = f.runtime.block_on(part.enforce_retention(10_000 + 1_000_000, Some(1), None, local_start, 0)).unwrap();
    assert_eq!(moved, part.manifest().end_offset());
    assert!(part.manifest().segments.is_empty());
    // retention.bytes counts the archive plus the local log.
    let mut f = fixture();
    fill(&mut f.log, 100);
    let part = f.runtime.block_on(f.archive.open_partition("t", 0, "id-1", 0)).unwrap();
    f.runtime.block_on(upload_all(&f.log, &part));
    let m = part.manifest();
    let total: u64 = m.segments.iter().map(|s| s.segment_bytes).sum();
    let keep = m.segments.last().unwrap().segment_bytes;
    let end = m.end_offset().unwrap();
    f.runtime.block_on(part.enforce_retention(0, None, Some(keep), end, 0)).unwrap();
    let after = part.manifest();
    assert_eq!(after.segments.len(), 1, "total {total}, kept the newest segment only");
}

#[test]
fn a_recreated_topic_neither_adopts_nor_deletes_the_old_archive() {
    let mut f = fixture();
    fill(&mut f.log, 100);
    let part = f.runtime.block_on(f.archive.open_partition("t", 0, "old-id", 0)).unwrap();
    f.runtime.block_on(upload_all(&f.log, &part));
    let files = part.manifest().segments.len();
    assert!(files > 0);
    let err = f.runtime.block_on(f.archive.open_partition("t", 0, "new-id", 0)).unwrap_err();
    assert!(matches!(err, ArchiveError::ForeignManifest { .. }), "{err}");
    assert!(err.to_string().contains("old-id") && err.to_string().contains("topic=t/partition=0"), "{err}");
    let left = std::fs::read_dir(f.archive_dir.join("topic=t/partition=0")).unwrap().count();
    assert_eq!(left, files, "the old files are untouched");
    let manifest = f.archive_dir.join("_silt/topic=t/partition=0/manifest.json");
    assert!(manifest.is_file(), "so is the old manifest");
    // Deleting the topic's archive (what DeleteTopic does) clears the way.
    f.runtime.block_on(f.archive.delete_topic("t")).unwrap();
    assert!(!manifest.exists());
    assert_eq!(std::fs::read_dir(f.archive_dir.join("topic=t/partition=0")).map_or(0, |d| d.count()), 0);
    let fresh = f.runtime.block_on(f.archive.open_partition("t", 0, "new-id", 0)).unwrap();
    assert!(fresh.manifest().segments.is_empty());
}

#[test]
fn a_damaged_or_missing_file_is_an_error_for_that_read() {
    let mut f = fixture();
    fill(&mut f.log, 100);
    let part = f.runtime.block_on(f.archive.open_partition("t", 0, "id-1", 0)).unwrap();
    f.runtime.block_on(upload_all(&f.log, &part));
    let m = part.manifest();
    let dir = f.archive_dir.join("topic=t/partition=0");
    std::fs::write(dir.join(&m.segments[0].file), b"not parquet at all").unwrap();
    std::fs::remove_file(dir.join(&m.segments[1].file)).unwrap();
    let damaged = f.runtime.block_on(part.read(0, 100)).unwrap_err();
    assert!(matches!(&damaged, ArchiveError::Unreadable { path, .. } if path.ends_with(&m.segments[0].file)), "{damaged:?}");
    assert!(std::error::Error::source(&damaged).is_some(), "the Parquet error is kept as the source");
    let missing = f.runtime.block_on(part.read(m.segments[1].base_offset, 100)).unwrap_err();
    assert!(matches!(&missing, ArchiveError::Missing { path } if path.ends_with(&m.segments[1].file)), "{missing:?}");
    // The rest of the archive still serves.
    let third = m.segments[2].base_offset;
    assert!(f.runtime.block_on(part.read(third, 100)).unwrap().is_some());
    // A corrupt manifest is refused with its path.
    std::fs::write(f.archive_dir.join("_silt/topic=t/partition=0/manifest.json"), b"{").unwrap();
    let err = f.runtime.block_on(f.archive.open_partition("t", 0, "id-1", 0)).unwrap_err();
    assert!(err.to_string().contains("manifest.json"), "{err}");
}
