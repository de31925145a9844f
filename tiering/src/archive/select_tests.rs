//! Pruning: the pure decision on made-up facts, then on the footers and
//! bloom filters of real encoded files, old files without filters included.

use std::io::Cursor;

use super::*;
use crate::archive::format::{encode_segment, EncodeOptions};
use crate::batch::{encode_batch, BatchFields};

fn sel() -> Selection {
    Selection::default()
}

fn key(k: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(k.as_bytes()))
}

fn facts(offsets: (i64, i64), timestamps: (i64, i64), keys: (&str, &str)) -> RowGroupFacts {
    RowGroupFacts { offsets: Some(offsets), timestamps: Some(timestamps), keys: Some((keys.0.into(), keys.1.into())), keys_all_null: false }
}

#[test]
fn statistics_exclude_offsets_times_and_key_ranges() {
    let f = facts((100, 199), (1_000, 1_999), ("user-10", "user-19"));
    assert_eq!(prune(&sel(), &f, None), Verdict::Read, "no bounds: every row group is read");
    assert_eq!(prune(&Selection { from_offset: Some(200), ..sel() }, &f, None), Verdict::SkipOffsets);
    assert_eq!(prune(&Selection { to_offset: Some(100), ..sel() }, &f, None), Verdict::SkipOffsets);
    assert_eq!(prune(&Selection { to_offset: Some(101), ..sel() }, &f, None), Verdict::Read);
    // Time bounds are inclusive at both ends.
    assert_eq!(prune(&Selection { from_time: Some(2_000), ..sel() }, &f, None), Verdict::SkipTimes);
    assert_eq!(prune(&Selection { from_time: Some(1_999), ..sel() }, &f, None), Verdict::Read);
    assert_eq!(prune(&Selection { to_time: Some(999), ..sel() }, &f, None), Verdict::SkipTimes);
    assert_eq!(prune(&Selection { from_time: Some(500), to_time: Some(1_000), ..sel() }, &f, None), Verdict::Read);
    assert_eq!(prune(&Selection { key: key("user-2"), ..sel() }, &f, None), Verdict::SkipKeyRange);
    assert_eq!(prune(&Selection { key: key("user-15"), ..sel() }, &f, None), Verdict::Read);
    assert_eq!(prune(&Selection { key_prefix: key("user-1"), ..sel() }, &f, None), Verdict::Read);
    assert_eq!(prune(&Selection { key_prefix: key("user-2"), ..sel() }, &f, None), Verdict::SkipKeyRange);
    assert_eq!(prune(&Selection { key_prefix: key("order-"), ..sel() }, &f, None), Verdict::SkipKeyRange);
    assert_eq!(prune(&Selection { key_prefix: key("user-"), ..sel() }, &f, None), Verdict::Read);
    assert_eq!(prune(&Selection { key_prefix: key(""), ..sel() }, &f, None), Verdict::Read);
    let nulls = RowGroupFacts { keys: None, keys_all_null: true, ..f.clone() };
    assert_eq!(prune(&Selection { key_prefix: key(""), ..sel() }, &nulls, None), Verdict::SkipKeyRange, "null keys match no key filter");
    // A file without key statistics (written before them) is read.
    let old = RowGroupFacts { keys: None, ..f };
    assert_eq!(prune(&Selection { key: key("zzz"), key_prefix: key("zz"), ..sel() }, &old, None), Verdict::Read);
}

#[test]
fn prefix_successors_bound_the_prefix_range() {
    assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_successor(b"\xff\xff"), None);
    assert_eq!(prefix_successor(b""), None);
    // Keys past every "\xff..." prefix: a max of 0xff bytes cannot be excluded by the upper end.
    let f = facts((0, 1), (0, 1), ("\u{7f}", "\u{7f}"));
    assert_eq!(prune(&Selection { key_prefix: Some(Bytes::from_static(b"\x7f")), ..sel() }, &f, None), Verdict::Read);
}

#[test]
fn records_match_every_given_bound() {
    let r = Record { offset: 5, timestamp: 50, key: key("user-1"), value: None, headers: vec![] };
    assert!(sel().matches(&r));
    assert!(Selection { key: key("user-1"), from_time: Some(50), to_time: Some(50), ..sel() }.matches(&r));
    assert!(!Selection { key: key("user-10"), ..sel() }.matches(&r));
    assert!(Selection { key_prefix: key("user-"), ..sel() }.matches(&r));
    assert!(!Selection { key_prefix: key("user-10"), ..sel() }.matches(&r));
    assert!(!Selection { to_offset: Some(5), ..sel() }.matches(&r));
    assert!(!Selection { from_time: Some(51), ..sel() }.matches(&r));
    let null = Record { key: None, ..r };
    assert!(!Selection { key_prefix: key(""), ..sel() }.matches(&null), "a null key has no prefix");
}

#[test]
fn the_manifest_prunes_whole_files() {
    let s = ArchivedSegment {
        file: "f".into(),
        base_offset: 100,
        last_offset: 199,
        min_timestamp: 1_000,
        max_timestamp: 1_999,
        size_bytes: 1,
        segment_bytes: 1,
        rows: 100,
        archived_at_ms: 0,
    };
    assert!(segment_may_match(&sel(), &s));
    assert!(!segment_may_match(&Selection { from_offset: Some(200), ..sel() }, &s));
    assert!(!segment_may_match(&Selection { from_time: Some(2_000), ..sel() }, &s));
    assert!(!segment_may_match(&Selection { to_time: Some(999), ..sel() }, &s));
    assert!(segment_may_match(&Selection { from_time: Some(1_500), to_time: Some(1_500), ..sel() }, &s));
    assert!(!segment_may_match(&sel(), &ArchivedSegment { rows: 0, min_timestamp: -1, max_timestamp: -1, ..s }));
}

/// A segment of batches `batches` of `per` records each: batch `b` starts at
/// offset `b * per` and holds keys `k{b}-{i}` at timestamps `1000 * b + i`.
/// With a one-byte row group size, every batch is its own row group.
fn segment(batches: std::ops::Range<i64>, per: i64) -> Bytes {
    let mut out = Vec::new();
    for b in batches {
        let base = b * per;
        let fields = BatchFields {
            base_offset: base,
            partition_leader_epoch: 0,
            attributes: 0,
            last_offset_delta: (per - 1) as i32,
            base_timestamp: 1_000 * b,
            max_timestamp: 1_000 * b + per - 1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        let records: Vec<Record> = (0..per)
            .map(|i| Record {
                offset: base + i,
                timestamp: 1_000 * b + i,
                key: key(&format!("k{b}-{i}")),
                value: Some(Bytes::from(format!("v{b}-{i}"))),
                headers: vec![],
            })
            .collect();
        out.extend_from_slice(&encode_batch(&fields, &records));
    }
    Bytes::from(out)
}

/// The verdict on every row group of `file` for `selection`, reading each
/// bloom filter as the scan does.
fn verdicts(file: &Bytes, selection: &Selection) -> Vec<Verdict> {
    let metadata = futures::executor::block_on(ArrowReaderMetadata::load_async(&mut Cursor::new(file.to_vec()), ArrowReaderOptions::new())).unwrap();
    let key_column = column_index(metadata.metadata(), column::KEY).unwrap();
    (0..metadata.metadata().num_row_groups())
        .map(|g| {
            let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(Cursor::new(file.to_vec()), metadata.clone());
            let bloom = futures::executor::block_on(builder.get_row_group_column_bloom_filter(g, key_column)).unwrap();
            prune(selection, &row_group_facts(metadata.metadata(), g), bloom.as_ref())
        })
        .collect()
}

#[test]
fn a_row_group_whose_bloom_filter_excludes_the_key_is_not_read() {
    let file = encode_segment(&segment(0..4, 50), "t", 0, &EncodeOptions { row_group_bytes: 1, zstd_level: 1 }).unwrap().parquet;
    let got = verdicts(&file, &Selection { key: key("k2-7"), ..sel() });
    assert_eq!(got[2], Verdict::Read);
    assert!(got.iter().enumerate().all(|(g, v)| g == 2 || matches!(v, Verdict::SkipBloom | Verdict::SkipKeyRange)), "{got:?}");
    // A key in every row group's min/max range but in none of them: only the bloom filters exclude it.
    let absent = verdicts(&file, &Selection { key: key("k1-55"), ..sel() });
    assert_eq!(absent[1], Verdict::SkipBloom, "{absent:?}");
    // A key prefix uses the statistics.
    assert_eq!(
        verdicts(&file, &Selection { key_prefix: key("k3-"), ..sel() }),
        [Verdict::SkipKeyRange, Verdict::SkipKeyRange, Verdict::SkipKeyRange, Verdict::Read]
    );
}

#[test]
fn statistics_exclude_a_time_range_in_a_real_file() {
    let file = encode_segment(&segment(0..4, 50), "t", 0, &EncodeOptions { row_group_bytes: 1, zstd_level: 1 }).unwrap().parquet;
    let window = Selection { from_time: Some(1_010), to_time: Some(2_005), ..sel() };
    assert_eq!(verdicts(&file, &window), [Verdict::SkipTimes, Verdict::Read, Verdict::Read, Verdict::SkipTimes]);
    let offsets = Selection { from_offset: Some(150), ..sel() };
    assert_eq!(verdicts(&file, &offsets), [Verdict::SkipOffsets, Verdict::SkipOffsets, Verdict::SkipOffsets, Verdict::Read]);
}

#[test]
fn bloom_filters_are_sized_for_a_row_group_and_folded() {
    let file = encode_segment(&segment(0..4, 50), "t", 0, &EncodeOptions { row_group_bytes: 1, zstd_level: 1 }).unwrap().parquet;
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&file).unwrap();
    let key_column = column_index(&metadata, column::KEY).unwrap();
    for g in 0..metadata.num_row_groups() {
        let len = metadata.row_group(g).column(key_column).bloom_filter_length().expect("the key column has a bloom filter");
        // 50 keys at 1% false positives: 8 bytes a key at most (folded to a power of two).
        assert!((32..=512).contains(&len), "row group {g}: {len} bytes");
    }
    assert_eq!(format::key_bloom_ndv(1_000, 1 << 20, 8 << 20), 1_000, "one row group holds the whole segment");
    assert_eq!(format::key_bloom_ndv(1_000_000, 1 << 30, 8 << 20), 9_765, "8 MiB of 1 GiB, a quarter more");
    assert_eq!(format::key_bloom_ndv(100_000_000, 1 << 40, 1 << 40), 1 << 20, "capped");
    assert_eq!(format::key_bloom_ndv(0, 0, 8 << 20), 1);
}

/// A file written before bloom filters and key statistics: neither is
/// there, and every row group is read (the records are filtered after).
#[test]
fn files_without_bloom_filters_or_key_statistics_are_read_whole() {
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    let new = encode_segment(&segment(0..2, 20), "t", 0, &EncodeOptions { row_group_bytes: 1, zstd_level: 1 }).unwrap().parquet;
    let rows = futures::executor::block_on(async {
        let metadata = ArrowReaderMetadata::load_async(&mut Cursor::new(new.to_vec()), ArrowReaderOptions::new()).await.unwrap();
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(Cursor::new(new.to_vec()), metadata).build().unwrap();
        futures::TryStreamExt::try_collect::<Vec<_>>(stream).await.unwrap()
    });
    let mut old = Vec::new();
    let props = WriterProperties::builder()
        .set_column_statistics_enabled(parquet::schema::types::ColumnPath::new(vec![column::KEY.into()]), parquet::file::properties::EnabledStatistics::None)
        .build();
    let mut writer = ArrowWriter::try_new(&mut old, format::schema(), Some(props)).unwrap();
    for r in &rows {
        writer.write(r).unwrap();
        writer.flush().unwrap();
    }
    writer.close().unwrap();
    let old = Bytes::from(old);
    assert_eq!(verdicts(&old, &Selection { key: key("k1-3"), key_prefix: key("k1-"), ..sel() }), [Verdict::Read, Verdict::Read]);
    assert_eq!(
        verdicts(&old, &Selection { from_time: Some(1_000), ..sel() }),
        [Verdict::SkipTimes, Verdict::Read],
        "offset and time statistics were always there"
    );
    let (scanned, selected) = select_rows(&rows, &Selection { key: key("k1-3"), ..sel() }).unwrap();
    assert_eq!((scanned, selected.len(), selected[0].offset), (40, 1, 23));
}

/// Every record a scan selects, and what it read.
async fn scan(part: &Arc<PartitionArchive>, selection: Selection) -> (Vec<(i64, i64)>, ScanStats) {
    let mut scan = SelectScan::new(Arc::clone(part), selection);
    let mut out = Vec::new();
    while let Some(records) = scan.next().await.unwrap() {
        out.extend(records.iter().map(|r| (r.offset, r.timestamp)));
    }
    (out, scan.stats())
}

#[test]
fn a_scan_reads_only_what_can_match_and_returns_exactly_the_matches() {
    use crate::archive::{Archive, ArchiveSettings, NoObserver, SealedSegment, StoreSettings};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = ArchiveSettings {
        store: StoreSettings { url: url::Url::from_directory_path(dir.path().join("archive")).unwrap().to_string(), ..StoreSettings::default() },
        encode: EncodeOptions { row_group_bytes: 1, zstd_level: 1 },
        upload_concurrency: 1,
        cache_bytes: 1 << 20,
    };
    let archive = Archive::open(settings, runtime.handle().clone(), Arc::new(NoObserver)).unwrap();
    runtime.block_on(async {
        let part = archive.open_partition("t", 0, "id", 0).await.unwrap();
        // Two files of four row groups: offsets 0..200 and 200..400.
        for batches in [0..4, 4..8] {
            let path = dir.path().join(format!("{}.log", batches.start));
            let bytes = segment(batches.clone(), 50);
            std::fs::write(&path, &bytes).unwrap();
            let sealed = SealedSegment { base_offset: batches.start * 50, next_offset: batches.end * 50, path, size: bytes.len() as u64 };
            part.upload(sealed).await.unwrap().expect("uploaded");
        }
        let (all, full) = scan(&part, sel()).await;
        assert_eq!(all.len(), 400);
        assert_eq!((full.files, full.files_opened, full.row_groups, full.row_groups_read), (2, 2, 8, 8));
        assert!(full.page_bytes > 0 && full.footer_bytes > 0 && full.bloom_bytes == 0, "{full:?}");

        let (one, by_key) = scan(&part, Selection { key: key("k5-7"), ..sel() }).await;
        assert_eq!(one, [(257, 5_007)]);
        assert_eq!((by_key.files_opened, by_key.row_groups_read, by_key.records_scanned), (2, 1, 50), "{by_key:?}");
        assert_eq!(by_key.row_groups_skipped_by_stats + by_key.row_groups_skipped_by_bloom, 7);
        assert!(by_key.page_bytes * 4 < full.page_bytes, "{by_key:?} against {full:?}");

        let (window, by_time) = scan(&part, Selection { from_time: Some(6_000), to_time: Some(6_010), ..sel() }).await;
        assert_eq!(window, (300..=310).map(|o| (o, 6_000 + o - 300)).collect::<Vec<_>>());
        assert_eq!((by_time.files_opened, by_time.row_groups_read, by_time.row_groups_skipped_by_stats), (1, 1, 3), "the manifest rules out the first file");

        let (prefix, by_prefix) = scan(&part, Selection { key_prefix: key("k1-"), from_offset: Some(60), ..sel() }).await;
        assert_eq!(prefix.first().map(|r| r.0), Some(60));
        assert_eq!((prefix.len(), by_prefix.row_groups_read), (40, 1));
    });
}
