//! Tests of the partition log (the follower's have their own, in `follower.rs`).

use super::*;
use crate::batch::tests::{make_batch, make_idempotent_batch};
use kafka_protocol::records::Compression;

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 2048, index_interval_bytes: 256, ..LogConfig::default() }
}

#[test]
fn buffered_appends_say_when_they_may_roll_and_when_a_flush_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { flush_messages: Some(5), ..small_config() };
    let (mut log, _) = PartitionLog::open(dir.path(), config, true).unwrap();
    let batch = make_batch(3, 0, Compression::None);
    assert!(!log.append_may_roll(batch.len() as u64, 0), "an empty segment never rolls");
    log.append_buffered(&batch, 0, 0).unwrap();
    assert!(!log.flush_due_by_messages(), "3 of 5 messages");
    log.append_buffered(&batch, 0, 0).unwrap();
    assert!(log.flush_due_by_messages(), "6 of 5 messages, and append_buffered never flushes");
    log.flush().unwrap();
    assert!(!log.flush_due_by_messages());
    let room = 2048 - log.active().size();
    assert!(!log.append_may_roll(room, 0));
    assert!(log.append_may_roll(room + 1, 0), "the segment would exceed segment.bytes");
    assert_eq!(log.segment_count(), 1);
}

fn fill(log: &mut PartitionLog, batches: usize, per_batch: usize, ts0: i64) {
    for i in 0..batches {
        let batch = make_batch(per_batch, ts0 + (i * per_batch) as i64, Compression::None);
        log.append(&batch, 0, ts0).unwrap();
        let leo = log.log_end_offset();
        log.set_high_watermark(leo);
    }
}

fn read_all(log: &PartitionLog) -> Vec<i64> {
    let mut offsets = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.high_watermark() {
        let read = log.read(next, 1 << 20).unwrap();
        let Some(bytes) = read.records else { break };
        for b in batch::split_validated(&bytes, 1 << 20).unwrap() {
            for o in b.header.base_offset..=b.header.last_offset() {
                if o >= next {
                    offsets.push(o);
                }
            }
            next = b.header.next_offset();
        }
    }
    offsets
}

#[test]
fn appends_roll_segments_and_read_back_contiguously() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
    fill(&mut log, 100, 3, 1_000);
    assert!(log.segment_count() > 5, "small segments roll");
    assert_eq!(read_all(&log), (0..300).collect::<Vec<_>>());
    log.close(0).unwrap();
    let (log, report) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
    assert_eq!(report.segments_validated, 0, "a clean log is trusted");
    assert_eq!(log.log_end_offset(), 300);
    assert_eq!(read_all(&log), (0..300).collect::<Vec<_>>());
}

#[test]
fn unclean_restart_validates_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
    fill(&mut log, 30, 3, 1_000);
    let active = dir.path().join(segment::file_name(log.active().base_offset(), "log"));
    drop(log); // no close(): as after kill -9
    let mut bytes = fs::read(&active).unwrap();
    bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    fs::write(&active, bytes).unwrap();
    let (mut log, report) = PartitionLog::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(report.truncated_bytes, 13);
    assert_eq!(log.log_end_offset(), 90);
    fill(&mut log, 1, 3, 2_000);
    assert_eq!(read_all(&log), (0..93).collect::<Vec<_>>());
}

#[test]
fn flushes_inside_the_active_segment_leave_the_recovery_point_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { flush_messages: Some(1), ..small_config() };
    let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), true).unwrap();
    fill(&mut log, 100, 3, 1_000);
    assert!(log.segment_count() > 2);
    let checkpoint = OffsetCheckpoint::new(dir.path().join(RECOVERY_POINT_FILE)).read().unwrap();
    assert_eq!(checkpoint, Some(log.active().base_offset()), "rolls write it, flushes do not");
    drop(log); // as after kill -9
    let (log, report) = PartitionLog::open(dir.path(), config, false).unwrap();
    assert_eq!(report.segments_validated, 1, "sealed segments are trusted, the active one validated");
    assert_eq!(log.log_end_offset(), 300);
}

#[test]
fn idempotent_retries_are_not_written_twice_even_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
    let first = make_idempotent_batch(4, 0, Compression::None, 9, 0, 0);
    let second = make_idempotent_batch(4, 0, Compression::None, 9, 0, 4);
    assert_eq!(log.append(&first, 0, 0).unwrap().base_offset, 0);
    assert_eq!(log.append(&second, 0, 0).unwrap().base_offset, 4);
    let retry = log.append(&second, 0, 0).unwrap();
    assert_eq!((retry.base_offset, retry.records_appended), (4, 0));
    assert_eq!(log.log_end_offset(), 8);
    drop(log);
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.append(&second, 0, 0).unwrap().base_offset, 4, "state rebuilt from the log");
    let gap = make_idempotent_batch(1, 0, Compression::None, 9, 0, 20);
    assert!(matches!(log.append(&gap, 0, 0), Err(LogError::OutOfOrderSequence { .. })));
}

#[test]
fn retention_deletes_whole_old_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention_ms: Some(10_000), ..small_config() };
    let (mut log, _) = PartitionLog::open(dir.path(), config, true).unwrap();
    fill(&mut log, 40, 3, 1_000); // timestamps 1000..1120
    fill(&mut log, 40, 3, 50_000);
    let before = log.segment_count();
    let report = log.enforce_retention(30_000).unwrap();
    assert!(report.deleted_segments > 0 && log.segment_count() < before);
    assert!(log.log_start_offset() > 0 && log.log_start_offset() <= 120);
    let first = read_all(&log)[0];
    assert_eq!(first, log.log_start_offset());
    let config = LogConfig { retention_ms: None, retention_bytes: Some(4096), ..small_config() };
    log.set_config(config);
    log.enforce_retention(30_000).unwrap();
    assert!(log.size_bytes() <= 4096 + 2048, "size retention leaves at most retention.bytes plus the active segment");
    assert!(matches!(log.read(0, 100), Err(LogError::OffsetOutOfRange { .. })));
}

#[test]
fn delete_records_and_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
    fill(&mut log, 50, 2, 1_000);
    assert_eq!(log.delete_records_before(41).unwrap(), 41);
    assert_eq!(read_all(&log)[0], 41);
    assert!(log.delete_records_before(1_000).is_err());
    log.truncate_to(60).unwrap();
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(log.high_watermark(), 60);
    fill(&mut log, 1, 2, 5_000);
    assert_eq!(read_all(&log), (41..62).collect::<Vec<_>>());
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), small_config(), false).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (41, 62));
}

#[test]
fn consumers_see_only_records_below_a_high_watermark_behind_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
    for ts in [1_000, 2_000, 3_000] {
        log.append(&make_batch(5, ts, Compression::None), 0, ts).unwrap();
    }
    assert_eq!((log.high_watermark(), log.log_end_offset()), (0, 15), "appending does not move the high watermark");
    assert_eq!(log.read(0, 1 << 20).unwrap().records, None, "nothing is committed yet");
    assert!(log.read_until(0, 1 << 20, log.log_end_offset()).unwrap().records.is_some(), "a follower reads to the log end");
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), None);

    log.set_high_watermark(5);
    assert_eq!(read_all(&log), (0..5).collect::<Vec<_>>(), "only the first batch is committed");
    let read = log.read(5, 1 << 20).unwrap();
    assert_eq!((read.records, read.high_watermark, read.log_end_offset), (None, 5, 15), "an offset in (HW, LEO] reads nothing, without an error");
    assert_eq!(log.offset_for_timestamp(2_000).unwrap(), None, "the match is not committed");
    assert_eq!(log.offset_for_timestamp(1_003).unwrap(), Some((3, 1_003)));
    assert_eq!(log.max_timestamp_offset().unwrap(), None, "the newest record is not committed");
    assert!(log.delete_records_before(6).is_err(), "DeleteRecords stops at the high watermark");
    let config = LogConfig { retention_ms: Some(1), ..small_config() };
    log.set_config(config);
    log.roll().unwrap();
    assert_eq!(log.enforce_retention(1_000_000).unwrap().deleted_segments, 0, "retention keeps what is not committed");
    log.set_high_watermark(99);
    assert_eq!(log.high_watermark(), 15, "clamped to the log end");
}

#[test]
fn the_high_watermark_reopens_from_its_checkpoint_not_from_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
    fill(&mut log, 4, 5, 1_000);
    log.set_high_watermark(10);
    assert!(log.checkpoint_high_watermark().unwrap());
    assert!(!log.checkpoint_high_watermark().unwrap(), "unchanged: not written again");
    log.set_high_watermark(15);
    drop(log); // as after kill -9: the checkpoint holds 10
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), false).unwrap();
    assert_eq!((log.high_watermark(), log.log_end_offset()), (10, 20));
    log.set_high_watermark(20);
    log.close(0).unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
    assert_eq!(log.high_watermark(), 20, "close checkpoints it");
    drop(log);
    // A checkpoint past the log end (the log lost an unflushed tail) is clamped.
    OffsetCheckpoint::new(dir.path().join(HIGH_WATERMARK_FILE)).write(1_000).unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.high_watermark(), 20);
    drop(log);
    // A directory from before the checkpoint existed starts at its log start.
    fs::remove_file(dir.path().join(HIGH_WATERMARK_FILE)).unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.high_watermark(), log.log_start_offset());
}

#[test]
fn leader_epochs_are_tracked_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
    log.append(&make_batch(5, 0, Compression::None), 0, 0).unwrap();
    log.append(&make_batch(5, 0, Compression::None), 3, 0).unwrap();
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 5)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 10)));
    let read = log.read_until(5, 1 << 20, 10).unwrap();
    let header = BatchHeader::parse(read.records.as_ref().unwrap()).unwrap();
    assert_eq!(header.partition_leader_epoch, 3);
    log.truncate_to(5).unwrap();
    assert_eq!(log.latest_leader_epoch(), Some(0));
}

#[test]
fn finds_offsets_by_timestamp_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), true).unwrap();
    fill(&mut log, 40, 5, 10_000); // record o has timestamp 10_000 + o
    assert_eq!(log.offset_for_timestamp(10_123).unwrap(), Some((123, 10_123)));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 10_000)));
    assert_eq!(log.offset_for_timestamp(99_999).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((199, 10_199)));
}

#[test]
fn log_append_time_is_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { log_append_time: true, ..small_config() };
    let (mut log, _) = PartitionLog::open(dir.path(), config, true).unwrap();
    let result = log.append(&make_batch(2, 5, Compression::Gzip), 0, 777).unwrap();
    assert_eq!(result.log_append_time_ms, Some(777));
    let bytes = log.read_until(0, 1 << 20, 2).unwrap().records.unwrap();
    assert_eq!(batch::validate(&bytes).unwrap().max_timestamp, 777);
}
