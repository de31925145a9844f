//! The partition actor's unit tests, and the fault injection they use.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use silt_tiering::batch::BatchHeader;
use silt_tiering::{AppendResult, LogConfig};
use tokio::sync::watch;

use super::*;
use crate::error::Error;

/// Test-only fault injection: panic in the handler or inside a log operation.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct InjectPanic {
    pub in_log_operation: bool,
}

impl Handler<InjectPanic> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<(), Error>>;

    fn handle(&mut self, msg: InjectPanic, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| {
            if msg.in_log_operation {
                act.with_log(|_| panic!("injected fault in a log operation"))
            } else {
                panic!("injected fault in a handler")
            }
        })
    }
}

/// Holds the log on the blocking pool for a while, as a slow read or
/// maintenance would (tests only).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct HoldLog(pub Duration);

impl Handler<HoldLog> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<(), Error>>;

    fn handle(&mut self, msg: HoldLog, _ctx: &mut Context<Self>) -> Self::Result {
        self.with_log(move |_| {
            std::thread::sleep(msg.0);
            Ok(())
        })
    }
}

/// Holds the high watermark behind the log end, as a leader waiting for its
/// followers would (tests only: today's sole replica commits at once).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct HoldHighWatermark(pub i64);

impl Handler<HoldHighWatermark> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<(), Error>>;

    fn handle(&mut self, msg: HoldHighWatermark, _ctx: &mut Context<Self>) -> Self::Result {
        self.with_log(move |log| {
            log.set_high_watermark(msg.0);
            Ok(())
        })
    }
}

/// A minimal valid magic v2 batch with `n` empty-ish records (header only is
/// validated by the log; records_count must match last_offset_delta + 1).
pub(super) fn batch(n: i32) -> Bytes {
    let mut b = vec![0u8; 61];
    b[8..12].copy_from_slice(&(61 - 12i32).to_be_bytes());
    b[16] = 2;
    b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&n.to_be_bytes());
    let crc = silt_tiering::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

fn start(dir: PathBuf, partition: i32, restarts: Arc<AtomicU64>) -> PartitionHandle {
    start_with(dir, partition, restarts, LogConfig::default())
}

fn start_with(dir: PathBuf, partition: i32, restarts: Arc<AtomicU64>, log: LogConfig) -> PartitionHandle {
    let tp = TopicPartition { topic: "t".into(), partition };
    let (tx, rx) = watch::channel(Watermarks::default());
    let options = PartitionOptions {
        cleaner: None,
        dir,
        log,
        min_insync_replicas: 1,
        clean_start: true,
        maintenance_interval: Duration::from_secs(60),
        archive: None,
        role: PartitionRole::sole_leader(1),
        replication: ReplicationOptions::single_node(1, uuid::Uuid::nil()),
    };
    let tp2 = tp.clone();
    let status = Arc::new(ArchiveStatus::default());
    let status2 = status.clone();
    let addr = Supervisor::start(move |_| PartitionActor::new(tp2, options, tx, restarts, status2));
    PartitionHandle::new(tp, addr, rx, status)
}

async fn append(handle: &PartitionHandle, n: i32) -> Result<AppendResult, Error> {
    handle.ask(Append { records: batch(n), acks: RequiredAcks::All }).await
}

#[actix_rt::test]
async fn a_panicking_partition_restarts_from_disk_and_others_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let restarts = Arc::new(AtomicU64::new(0));
    let victim = start(dir.path().join("t-0"), 0, restarts.clone());
    let bystander = start(dir.path().join("t-1"), 1, restarts.clone());
    assert_eq!(append(&victim, 3).await.unwrap().base_offset, 0);
    assert_eq!(append(&bystander, 2).await.unwrap().base_offset, 0);

    for in_log_operation in [false, true] {
        let injected = victim.ask(InjectPanic { in_log_operation }).await;
        assert!(matches!(injected, Err(Error::Unavailable(..))), "{injected:?}");
        // The bystander is unaffected while the victim restarts.
        assert!(append(&bystander, 1).await.is_ok());
    }
    // The victim is back, with its data recovered from disk.
    let result = append(&victim, 2).await.unwrap();
    assert_eq!(result.base_offset, 3, "offsets continue after the restart");
    let read = victim.ask(Read { offset: 0, max_bytes: 1 << 20 }).await.unwrap();
    let header = BatchHeader::parse(read.records.as_ref().unwrap()).unwrap();
    assert_eq!(header.base_offset, 0);
    assert_eq!(read.high_watermark, 5);
    assert_eq!(restarts.load(Ordering::Relaxed), 2);
    assert_eq!(victim.watermarks().log_end_offset, 5);
}

#[actix_rt::test]
async fn appends_that_roll_or_flush_keep_offsets_contiguous_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // Every third batch fills a segment (rolled on the blocking pool);
    // flush.messages=2 makes every other append wait for an fsync.
    let log = LogConfig { segment_bytes: 61 * 3, flush_messages: Some(2), ..LogConfig::default() };
    let handle = start_with(dir.path().join("t-0"), 0, Arc::default(), log.clone());
    let mut next = 0;
    for n in 1..=20 {
        let appended = append(&handle, n).await.unwrap();
        assert_eq!((appended.base_offset, appended.last_offset), (next, next + i64::from(n) - 1));
        next += i64::from(n);
    }
    let marks = handle.watermarks();
    assert_eq!((marks.log_end_offset, marks.high_watermark), (next, next));
    assert!(marks.segments >= 6, "segments rolled: {marks:?}");
    handle.ask(Close).await.unwrap();
    let reopened = start_with(dir.path().join("t-0"), 0, Arc::default(), log);
    let read = reopened.ask(Read { offset: 0, max_bytes: 1 << 20 }).await.unwrap();
    assert_eq!(read.log_end_offset, next);
    assert_eq!(BatchHeader::parse(read.records.as_ref().unwrap()).unwrap().base_offset, 0);
}

#[actix_rt::test]
async fn appends_waiting_for_fsync_share_group_commits_and_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogConfig { flush_messages: Some(1), ..LogConfig::default() };
    let handle = start_with(dir.path().join("t-0"), 0, Arc::default(), log);
    const APPENDS: i64 = 64;
    // Sent back to back: later appends are written while earlier ones wait for their fsync.
    let appends = (0..APPENDS).map(|_| append(&handle, 2));
    let answered = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(appends)).await.expect("every append is answered");
    for (i, result) in answered.into_iter().enumerate() {
        let result = result.unwrap_or_else(|e| panic!("append {i}: {e}"));
        assert_eq!(result.base_offset, 2 * i as i64, "appends are written in mailbox order");
    }
    assert_eq!(handle.watermarks().high_watermark, 2 * APPENDS);
}

#[actix_rt::test]
async fn appends_wait_off_thread_while_the_log_is_held_and_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path().join("t-0"), 0, Arc::default());
    assert_eq!(append(&handle, 1).await.unwrap().base_offset, 0, "the log is open");
    const HOLD: Duration = Duration::from_millis(300);
    let started = Instant::now();
    let holder = handle.clone();
    let held = actix_rt::spawn(async move { holder.ask(HoldLog(HOLD)).await });
    actix_rt::time::sleep(Duration::from_millis(50)).await; // the blocking pool holds the log by now
    let appends = futures::future::join_all((0..8).map(|_| append(&handle, 1)));
    // The partition's thread (this test's) stays free: a timer on it fires while the log is held.
    let ticked = async {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        started.elapsed()
    };
    let (appended, ticked) = futures::future::join(appends, ticked).await;
    held.await.unwrap().unwrap();
    assert!(ticked < HOLD, "the thread was blocked until {ticked:?}");
    for (i, result) in appended.into_iter().enumerate() {
        assert_eq!(result.unwrap().base_offset, 1 + i as i64, "appends are written in mailbox order");
    }
    assert!(started.elapsed() >= HOLD);
}

#[actix_rt::test]
async fn published_watermarks_end_at_the_latest_state_under_concurrent_reads() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path().join("t-0"), 0, Arc::default());
    const ROUNDS: usize = 200;
    let appends = (0..ROUNDS).map(|_| append(&handle, 1));
    let reads = (0..ROUNDS).map(|_| handle.ask(Read { offset: 0, max_bytes: 1 << 20 }));
    let (appended, read) = futures::future::join(futures::future::join_all(appends), futures::future::join_all(reads)).await;
    assert!(read.iter().all(Result::is_ok));
    for (i, result) in appended.into_iter().enumerate() {
        // Appends that find the log held by a read wait on the blocking pool; order holds.
        assert_eq!(result.unwrap().base_offset, i as i64, "appends are written in mailbox order");
    }
    let marks = handle.watermarks();
    assert_eq!(marks.high_watermark, ROUNDS as i64, "a read that finished last must not publish an older view");
}

#[actix_rt::test]
async fn watermarks_say_when_the_log_is_not_open_yet() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path().join("t-0"), 0, Arc::default());
    // The actor has not run yet on this single-threaded runtime.
    assert!(!handle.watermarks().open, "offsets must not be trusted before the log opens");
    append(&handle, 3).await.unwrap();
    let marks = handle.watermarks();
    assert!(marks.open);
    assert_eq!((marks.high_watermark, marks.log_end_offset), (3, 3));
}

#[actix_rt::test]
async fn mailbox_depth_counts_asks_until_answered_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path().join("t-0"), 0, Arc::default());
    let read = || handle.ask(Read { offset: 0, max_bytes: 1 << 20 });
    // The actor cannot run until this task yields, so polled asks stay queued.
    let mut answered = Box::pin(read());
    let mut dropped = Box::pin(read());
    assert!(futures::poll!(&mut answered).is_pending());
    assert!(futures::poll!(&mut dropped).is_pending());
    assert_eq!(handle.mailbox_depth(), 2, "two asks are waiting");
    drop(dropped);
    assert_eq!(handle.mailbox_depth(), 1, "a cancelled ask stops counting");
    answered.await.unwrap();
    assert_eq!(handle.mailbox_depth(), 0, "an answered ask stops counting");

    handle.tell(Reconfigure { log: LogConfig::default(), min_insync_replicas: 1 }).unwrap();
    assert_eq!(handle.clone().mailbox_depth(), 1, "a told message counts, in every clone of the handle");
    // Mailboxes are FIFO: once this answer arrives the told message was handled.
    read().await.unwrap();
    assert_eq!(handle.mailbox_depth(), 0, "a handled told message stops counting");
}

#[actix_rt::test]
async fn acks_all_respects_min_insync_replicas_and_retire_refuses_work() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path().join("t-0"), 0, Arc::default());
    handle.tell(Reconfigure { log: LogConfig::default(), min_insync_replicas: 2 }).unwrap();
    assert!(matches!(append(&handle, 1).await, Err(Error::NotEnoughReplicas { required: 2, available: 1 })));
    let leader_only = handle.ask(Append { records: batch(1), acks: RequiredAcks::Leader }).await;
    assert!(leader_only.is_ok());
    let retired_dir = handle.ask(Retire).await.unwrap();
    assert_eq!(retired_dir, dir.path().join("t-0"));
    let after = handle.ask(Append { records: batch(1), acks: RequiredAcks::Leader }).await;
    assert!(matches!(after, Err(Error::UnknownTopicOrPartition(_))), "{after:?}");
}

#[actix_rt::test]
async fn consumers_see_only_records_below_a_high_watermark_held_behind_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path().join("t-0"), 0, Arc::default());
    for _ in 0..3 {
        append(&handle, 2).await.unwrap();
    }
    handle.ask(HoldHighWatermark(2)).await.unwrap();
    let marks = handle.watermarks();
    assert_eq!((marks.high_watermark, marks.log_end_offset), (2, 6), "published as held");
    assert!(marks.fetch_would_answer(1) && !marks.fetch_would_answer(2) && !marks.fetch_would_answer(6));

    let read = handle.ask(Read { offset: 0, max_bytes: 1 << 20 }).await.unwrap();
    let records = read.records.expect("the committed batch");
    assert_eq!((records.len(), BatchHeader::parse(&records).unwrap().last_offset()), (61, 1), "only the batch below the high watermark");
    let above = handle.ask(Read { offset: 4, max_bytes: 1 << 20 }).await.unwrap();
    assert_eq!((above.records, above.high_watermark, above.log_end_offset), (None, 2, 6), "uncommitted: nothing, and no error");
    assert_eq!(handle.ask(ListOffset(OffsetSpec::Latest)).await.unwrap(), Some((2, -1)));
    assert!(handle.ask(DeleteRecords { before_offset: 3 }).await.is_err(), "DeleteRecords stops at the high watermark");
    assert_eq!(handle.ask(DeleteRecords { before_offset: -1 }).await.unwrap(), 2, "-1 means the high watermark");

    // The sole replica commits what it writes: the next append moves it to the log end.
    append(&handle, 1).await.unwrap();
    assert_eq!(handle.watermarks().high_watermark, 7);
}

#[actix_rt::test]
async fn a_role_sets_the_leader_epoch_and_isr_and_a_stale_role_is_ignored() {
    use crate::replication::SetRole;
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = start_with(dir.path().join("t-0"), 0, Arc::new(AtomicU64::new(0)), LogConfig::default());
    let ask_epoch = |epoch| EndOffsetForEpoch { leader_epoch: 0, current_leader_epoch: Some(epoch) };
    handle.ask(SetRole(PartitionRole::Leader { leader_epoch: 5, partition_epoch: 7, replicas: vec![1, 2], isr: vec![1] })).await.expect("role");
    assert!(handle.ask(ask_epoch(5)).await.is_ok());
    assert!(matches!(handle.ask(ask_epoch(4)).await, Err(Error::FencedLeaderEpoch { current: 5, .. })));
    // A stale role (older epoch) changes nothing.
    handle.ask(SetRole(PartitionRole::Follower { leader_epoch: 3, partition_epoch: 8, leader: Some(2), replicas: vec![1, 2] })).await.expect("stale role");
    assert!(handle.ask(ask_epoch(5)).await.is_ok());
}
