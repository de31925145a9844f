//! Tests of log compaction: a pass against a model map (property test),
//! tombstones, the map's bound, segment changes during a pass, and crashes
//! in the middle of a swap.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::batch::{Codec, KeyValue};
use crate::cleaner::{self, CleanerLimits, CleaningOutcome};

static NO_CANCEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
const LIMITS: CleanerLimits = CleanerLimits { offset_map_bytes: 1 << 20, io_bytes_per_second: None };

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        cleanup_compact: true,
        cleanup_delete: false,
        min_cleanable_dirty_ratio_ppm: 0,
        delete_retention_ms: 1_000,
        ..LogConfig::default()
    }
}

/// Appends one batch of `(key, value)` records at `now` and commits it.
fn put(log: &mut PartitionLog, records: &[(u8, Option<u8>)], now: i64) {
    let kv: Vec<(Bytes, Option<Bytes>)> = records.iter().map(|&(k, v)| (Bytes::from(format!("key-{k}")), v.map(|v| Bytes::from(vec![v; 20])))).collect();
    let batch = batch::encode_key_values(&kv, now).unwrap();
    log.append(&batch, 0, now).unwrap();
    let leo = log.log_end_offset();
    log.set_high_watermark(leo);
}

fn read_records(log: &PartitionLog) -> Vec<KeyValue> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.high_watermark() {
        let Some(bytes) = log.read(next, 1 << 20).unwrap().records else { break };
        for b in batch::split_stored(&bytes, 1 << 20).unwrap() {
            next = b.header.next_offset();
        }
        out.extend(batch::decode_key_values(&bytes).unwrap());
    }
    out
}

fn pass(log: &mut PartitionLog, now: i64, limits: &CleanerLimits) -> Option<CleaningOutcome> {
    let plan = log.cleaning_plan(now)?;
    let outcome = cleaner::clean(&plan, limits, &NO_CANCEL).unwrap();
    let report = log.commit_cleaning(&plan, &outcome).unwrap();
    assert!(!report.abandoned);
    Some(outcome)
}

/// Latest (offset, value) per key of what was written.
type Model = BTreeMap<Bytes, (i64, Option<Bytes>)>;

fn model_of(written: &[KeyValue]) -> Model {
    written.iter().map(|r| (r.key.clone().unwrap(), (r.offset, r.value.clone()))).collect()
}

#[test]
fn a_pass_keeps_the_latest_value_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), compact_config(), true).unwrap();
    for round in 0..50u8 {
        put(&mut log, &[(round % 5, Some(round)), ((round + 1) % 5, Some(round))], 1_000);
    }
    log.roll().unwrap();
    let before = read_records(&log);
    let size_before = log.size_bytes();
    let outcome = pass(&mut log, 2_000, &LIMITS).expect("due: the ratio is 0");
    assert!(outcome.stats.segments_cleaned > 1 && outcome.stats.records_removed > 0, "{outcome:?}");
    let after = read_records(&log);
    let model = model_of(&before);
    assert_eq!(after.len(), 5);
    for r in &after {
        assert_eq!(model[r.key.as_ref().unwrap()], (r.offset, r.value.clone()), "the latest record, at its original offset");
    }
    assert!(log.size_bytes() < size_before / 5);
    assert_eq!(log.log_start_offset(), 0, "offsets are preserved: the log start does not move");
    // Reopened (clean and unclean): the same records, and nothing left to do.
    drop(log);
    let (mut log, _) = PartitionLog::open(dir.path(), compact_config(), false).unwrap();
    log.set_high_watermark(log.log_end_offset()); // as the partition actor does for a sole replica
    assert_eq!(read_records(&log), after);
    assert_eq!(log.cleaning_plan(3_000).map(|p| p.first_dirty_offset), None, "no dirty bytes left");
}

#[test]
fn recompresses_with_the_topic_codec_and_rejects_keyless_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { compression: Some(Codec::Zstd), ..compact_config() };
    let (mut log, _) = PartitionLog::open(dir.path(), config, true).unwrap();
    put(&mut log, &[(1, Some(1)), (2, Some(2))], 0);
    let bytes = log.read(0, 1 << 20).unwrap().records.unwrap();
    assert_eq!(BatchHeader::parse(&bytes).unwrap().compression_codec(), Codec::Zstd.id(), "stored as zstd");
    let keyless = batch::tests::make_batch(1, 0, kafka_protocol::records::Compression::None);
    let mut no_key = batch::decode_records(&keyless).unwrap();
    no_key.records[0].key = None;
    let raw = batch::encode_batch(&batch::BatchFields::from(&no_key.header), &no_key.records);
    assert!(matches!(log.append(&raw, 0, 0), Err(LogError::InvalidBatch(BatchError::MissingKey { .. }))));
}

#[test]
fn tombstones_stay_until_their_horizon_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), compact_config(), true).unwrap();
    put(&mut log, &[(1, Some(1)), (2, Some(2))], 0);
    put(&mut log, &[(1, None)], 0);
    log.roll().unwrap();
    let first = pass(&mut log, 10_000, &LIMITS).unwrap();
    assert_eq!(first.next_delete_horizon_ms, Some(11_000), "horizon: first pass + delete.retention.ms");
    let kept = read_records(&log);
    assert_eq!(kept.iter().map(|r| (r.offset, r.value.is_some())).collect::<Vec<_>>(), vec![(1, true), (2, false)]);
    assert!(log.cleaning_plan(10_999).is_none(), "nothing dirty and no horizon passed");
    pass(&mut log, 11_000, &LIMITS).expect("the horizon makes a pass due");
    assert_eq!(read_records(&log).iter().map(|r| r.offset).collect::<Vec<_>>(), vec![1], "the tombstone is gone");
}

#[test]
fn a_full_offset_map_cleans_the_range_that_fits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), compact_config(), true).unwrap();
    for k in 0..40u8 {
        put(&mut log, &[(k, Some(1))], 0);
    }
    for k in 0..40u8 {
        put(&mut log, &[(k, Some(2))], 0);
    }
    log.roll().unwrap();
    let tiny = CleanerLimits { offset_map_bytes: 0, io_bytes_per_second: None };
    let room = cleaner::OffsetMap::with_memory(0).room() as i64;
    let first = pass(&mut log, 1, &tiny).unwrap();
    assert_eq!(first.cleaned_up_to, room, "the map covers {room} records");
    let mut passes = 1;
    while pass(&mut log, 1, &tiny).is_some() {
        passes += 1;
        assert!(passes < 20, "cleaning converges");
    }
    let after = read_records(&log);
    assert_eq!(after.len(), 40);
    assert!(after.iter().all(|r| r.value.as_deref() == Some(&[2u8; 20][..]) && r.offset >= 40));
}

#[test]
fn a_pass_is_abandoned_when_segments_change_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), compact_config(), true).unwrap();
    for i in 0..30u8 {
        put(&mut log, &[(i % 3, Some(i))], 0);
    }
    log.roll().unwrap();
    let plan = log.cleaning_plan(1).unwrap();
    let outcome = cleaner::clean(&plan, &LIMITS, &NO_CANCEL).unwrap();
    log.truncate_to(20).unwrap();
    let report = log.commit_cleaning(&plan, &outcome).unwrap();
    assert!(report.abandoned);
    assert!(outcome.groups.iter().all(|g| !g.cleaned_path.exists()), "cleaned files are deleted");
    assert_eq!(read_records(&log).len(), 20);
}

/// Crashes at each step of a swap, then reopens: the log is readable and
/// holds either the old or the cleaned records, never a mix or a gap.
#[test]
fn a_crash_at_any_step_of_a_swap_leaves_a_correct_log() {
    for step in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), compact_config(), true).unwrap();
        for i in 0..60u8 {
            put(&mut log, &[(i % 4, Some(i))], 0);
        }
        log.roll().unwrap();
        let before = read_records(&log);
        let plan = log.cleaning_plan(1).unwrap();
        let outcome = cleaner::clean(&plan, &LIMITS, &NO_CANCEL).unwrap();
        let group = outcome.groups[0].clone();
        let swap = cleaning::swap_path(dir.path(), group.base_offset, group.end_offset);
        if step >= 1 {
            fs::rename(&group.cleaned_path, &swap).unwrap();
        }
        if step >= 2 {
            // Some of the old segments deleted.
            fs::remove_file(dir.path().join(segment::file_name(group.sources[0], "log"))).unwrap();
            fs::remove_file(dir.path().join(segment::file_name(group.sources[0], "index"))).ok();
        }
        if step >= 3 {
            for base in &group.sources {
                fs::remove_file(dir.path().join(segment::file_name(*base, "log"))).ok();
            }
            fs::rename(&swap, dir.path().join(segment::file_name(group.base_offset, "log"))).unwrap();
        }
        drop(log); // a crash: no close
        let (mut log, _) = PartitionLog::open(dir.path(), compact_config(), false).unwrap();
        log.set_high_watermark(log.log_end_offset());
        let after = read_records(&log);
        let model = model_of(&before);
        if step == 0 {
            assert_eq!(after, before, "an uncommitted pass changes nothing");
        } else {
            let first_group: Vec<&KeyValue> = after.iter().filter(|r| r.offset < group.end_offset).collect();
            for r in &first_group {
                let key = r.key.as_ref().unwrap();
                let superseded_in_group = before.iter().any(|b| b.key.as_ref() == Some(key) && b.offset > r.offset && b.offset < outcome.cleaned_up_to);
                assert!(!superseded_in_group, "step {step}: offset {} is superseded", r.offset);
            }
            assert!(after.iter().all(|r| before.contains(r)), "step {step}: every record is an original one");
        }
        for (key, (offset, value)) in &model {
            assert!(after.iter().any(|r| r.key.as_ref() == Some(key) && r.offset == *offset && &r.value == value), "step {step}: latest of {key:?}");
        }
        let names: Vec<String> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".swap") && !n.ends_with(".cleaned")), "step {step}: {names:?}");
    }
}

/// A follower copying a compacted leader's log, from offset 0, ends with
/// the same batches at the same offsets, gaps included.
#[test]
fn a_follower_copies_a_compacted_log_with_its_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = PartitionLog::open(&dir.path().join("leader"), compact_config(), true).unwrap();
    for i in 0..80u8 {
        put(&mut leader, &[(i % 6, Some(i)), (i % 7, Some(i))], 0);
    }
    leader.roll().unwrap();
    pass(&mut leader, 1, &LIMITS).unwrap();
    let (mut follower, _) = PartitionLog::open(&dir.path().join("follower"), compact_config(), true).unwrap();
    let mut next = 0;
    while next < leader.log_end_offset() {
        let Some(bytes) = leader.read_until(next, 300, leader.log_end_offset()).unwrap().records else { break };
        let appended = follower.append_as_follower(&bytes, 0).unwrap();
        next = appended.last_offset + 1;
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    follower.set_high_watermark(follower.log_end_offset());
    assert_eq!(read_records(&follower), read_records(&leader));
    assert!(read_records(&follower).len() < 20, "the follower holds the compacted log");
}

/// An idempotent producer's last batch stays (emptied) so its state survives.
#[test]
fn the_last_batch_of_a_producer_stays_even_when_emptied() {
    use kafka_protocol::records::Compression;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), compact_config(), true).unwrap();
    // make_idempotent_batch uses keys key-0..key-n: the second batch supersedes the first.
    log.append(&batch::tests::make_idempotent_batch(3, 0, Compression::None, 9, 0, 0), 0, 0).unwrap();
    put(&mut log, &[(0, Some(1)), (1, Some(1)), (2, Some(1))], 0);
    log.set_high_watermark(log.log_end_offset());
    log.roll().unwrap();
    pass(&mut log, 1_000, &LIMITS).expect("the records (timestamps 0..2) are past min.compaction.lag.ms");
    let bytes = log.read(0, 1 << 20).unwrap().records.unwrap();
    let header = BatchHeader::parse(&bytes).unwrap();
    assert_eq!((header.base_offset, header.last_offset(), header.records_count, header.producer_id), (0, 2, 0, 9));
    assert_eq!(read_records(&log).len(), 3);
}

fn arbitrary_batches() -> impl Strategy<Value = Vec<Vec<(u8, Option<u8>)>>> {
    proptest::collection::vec(proptest::collection::vec((0u8..12, proptest::option::weighted(0.85, any::<u8>())), 1..6), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The cleaner against a model map: after any passes, every key's latest
    /// record is there at its original offset (a tombstone may be gone once
    /// its horizon passed), every record left is an original one, and below
    /// the cleaned offset no record is superseded.
    #[test]
    fn cleaning_matches_a_model_map(batches in arbitrary_batches(), passes_at in proptest::collection::vec(0usize..60, 0..4), map_bytes in 0usize..4096) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { delete_retention_ms: 50, ..compact_config() };
        let (mut log, _) = PartitionLog::open(dir.path(), config, true).unwrap();
        let limits = CleanerLimits { offset_map_bytes: map_bytes, io_bytes_per_second: None };
        let mut now = 0;
        for (i, records) in batches.iter().enumerate() {
            put(&mut log, records, now);
            if passes_at.contains(&i) {
                log.roll().unwrap();
                now += 40;
                pass(&mut log, now, &limits);
            }
        }
        let written = {
            let mut all = Vec::new();
            let mut offset = 0;
            for records in &batches {
                for &(k, v) in records {
                    all.push(KeyValue { offset, key: Some(Bytes::from(format!("key-{k}"))), value: v.map(|v| Bytes::from(vec![v; 20])) });
                    offset += 1;
                }
            }
            all
        };
        if log.active().size() > 0 {
            log.roll().unwrap();
        }
        now += 40;
        let last = pass(&mut log, now, &limits);
        let after = read_records(&log);
        for r in &after {
            prop_assert_eq!(&written[r.offset as usize], r, "every record left is the original at its offset");
        }
        for (key, (offset, value)) in model_of(&written) {
            let found = after.iter().any(|r| r.key.as_ref() == Some(&key) && r.offset == offset);
            prop_assert!(found || value.is_none(), "the latest value of {:?} is kept", key);
        }
        if let Some(outcome) = last {
            for r in after.iter().filter(|r| r.offset < outcome.cleaned_up_to) {
                let newer = written.iter().any(|w| w.key == r.key && w.offset > r.offset && w.offset < outcome.cleaned_up_to);
                prop_assert!(!newer, "offset {} is superseded below the cleaned offset", r.offset);
            }
        }
        let offsets: Vec<i64> = after.iter().map(|r| r.offset).collect();
        prop_assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets ascend");
    }
}
