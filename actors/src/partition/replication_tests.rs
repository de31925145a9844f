//! Replication between partition actors in one actix system: a leader and a
//! follower, wired by an in-process stand-in for the replica fetcher (the
//! same messages `src/replication/` sends), and a fake controller that
//! records AlterPartition requests.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::BoxFuture;
use silt_tiering::{AppendResult, LogConfig};
use tokio::sync::watch;

use super::tests::batch;
use super::*;
use crate::error::Error;
use crate::metadata::quorum::BrokerId;
use crate::replication::{AlterPartition, IsrChange, SetRole};

/// A controller that accepts and records every ISR change.
#[derive(Default)]
pub(super) struct FakeController {
    changes: Mutex<Vec<IsrChange>>,
}

impl AlterPartition for FakeController {
    fn alter_partition(&self, change: IsrChange) -> BoxFuture<'static, Result<(), Error>> {
        self.changes.lock().expect("lock").push(change);
        Box::pin(async { Ok(()) })
    }
}

impl FakeController {
    /// The ISR changes asked for so far, polled until one arrives or 5 s pass.
    async fn wait_for_change(&self) -> Vec<IsrChange> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let changes = self.changes.lock().expect("lock").clone();
            if !changes.is_empty() || Instant::now() > deadline {
                return changes;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub(super) const LEADER: BrokerId = 1;
pub(super) const FOLLOWER: BrokerId = 2;

pub(super) fn leader_role(epoch: i32, isr: &[BrokerId]) -> PartitionRole {
    PartitionRole::Leader { leader_epoch: epoch, partition_epoch: epoch, replicas: vec![LEADER, FOLLOWER], isr: isr.to_vec() }
}

pub(super) fn follower_role(epoch: i32, leader: BrokerId) -> PartitionRole {
    PartitionRole::Follower { leader_epoch: epoch, partition_epoch: epoch, leader: Some(leader), replicas: vec![LEADER, FOLLOWER] }
}

fn start_replica(dir: &Path, broker: BrokerId, role: PartitionRole, min_isr: i32, lag: Duration, controller: &Arc<FakeController>) -> PartitionHandle {
    let tp = TopicPartition { topic: "t".into(), partition: 0 };
    let (tx, rx) = watch::channel(Watermarks::default());
    let alter: Arc<dyn AlterPartition> = controller.clone();
    let options = PartitionOptions {
        cleaner: None,
        dir: dir.join(format!("broker-{broker}")),
        log: LogConfig::default(),
        min_insync_replicas: min_isr,
        clean_start: true,
        maintenance_interval: Duration::from_secs(60),
        archive: None,
        role,
        replication: ReplicationOptions {
            local_broker: broker,
            topic_id: uuid::Uuid::nil(),
            alter_partition: Some(alter),
            replica_lag_time_max: lag,
            isr_changes: Arc::default(),
        },
    };
    let status = Arc::new(ArchiveStatus::default());
    let (tp2, status2) = (tp.clone(), status.clone());
    let addr = Supervisor::start(move |_| PartitionActor::new(tp2, options, tx, Arc::new(AtomicU64::new(0)), status2));
    PartitionHandle::new(tp, addr, rx, status)
}

/// One fetch round of the follower from the leader, as the replica fetcher does it.
pub(super) async fn replicate(leader: &PartitionHandle, follower: &PartitionHandle, follower_id: BrokerId, epoch: i32) -> Result<ReplicaPosition, Error> {
    let position = follower.ask(GetReplicaPosition).await?;
    let fetch = ReplicaFetch { replica: follower_id, offset: position.log_end_offset, max_bytes: 1 << 20, current_leader_epoch: Some(epoch) };
    let read = leader.ask(fetch).await?;
    let records = read.records.unwrap_or_default();
    follower.ask(AppendAsFollower { records, leader_hw: read.high_watermark, leader_log_start: read.log_start_offset }).await
}

/// What the fetcher does before the first fetch of a new epoch.
async fn truncate(leader: &PartitionHandle, follower: &PartitionHandle, epoch: i32) -> ReplicaPosition {
    for _ in 0..8 {
        let position = follower.ask(GetReplicaPosition).await.expect("position");
        let Some(latest) = position.latest_epoch else { return position };
        let answer = leader.ask(EndOffsetForEpoch { leader_epoch: latest, current_leader_epoch: Some(epoch) }).await.expect("offset for epoch");
        let (leader_epoch, end_offset) = answer.unwrap_or((-1, -1));
        let truncation = follower.ask(TruncateToLeader { leader_epoch, end_offset }).await.expect("truncate");
        if truncation.completed {
            return truncation.position;
        }
    }
    panic!("truncation did not settle");
}

/// A test batch stamped now: the log rolls a segment whose first batch is
/// older than `segment.ms`, and a read answers from one segment only.
pub(super) fn batch_now(n: i32) -> bytes::Bytes {
    let mut b = batch(n).to_vec();
    let now = crate::now_ms();
    b[27..35].copy_from_slice(&now.to_be_bytes());
    b[35..43].copy_from_slice(&now.to_be_bytes());
    let crc = silt_tiering::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes::Bytes::from(b)
}

/// Polls until the partition's log ends at `leo` (5 s at most).
async fn written_up_to(handle: &PartitionHandle, leo: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.watermarks().log_end_offset != leo {
        assert!(Instant::now() < deadline, "the log never reached {leo}: {:?}", handle.watermarks());
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
}

fn acks_all(n: i32) -> Append {
    Append { records: batch_now(n), acks: RequiredAcks::All }
}

struct Pair {
    _dir: tempfile::TempDir,
    leader: PartitionHandle,
    follower: PartitionHandle,
    controller: Arc<FakeController>,
}

fn pair(min_isr: i32, lag: Duration) -> Pair {
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Arc::new(FakeController::default());
    let leader = start_replica(dir.path(), LEADER, leader_role(1, &[LEADER, FOLLOWER]), min_isr, lag, &controller);
    let follower = start_replica(dir.path(), FOLLOWER, follower_role(1, LEADER), min_isr, lag, &controller);
    Pair { _dir: dir, leader, follower, controller }
}

#[actix_rt::test]
async fn acks_all_waits_for_the_follower_and_the_high_watermark_moves_only_with_it() {
    let p = pair(2, Duration::from_secs(30));
    let leader = p.leader.clone();
    let produced = actix_rt::spawn(async move { leader.ask(acks_all(3)).await });
    written_up_to(&p.leader, 3).await;
    // acks=1 is answered once written, while the acks=all produce waits.
    let written = p.leader.ask(Append { records: batch_now(2), acks: RequiredAcks::Leader }).await.expect("acks=1");
    assert_eq!(written.base_offset, 3);
    let marks = p.leader.watermarks();
    assert_eq!((marks.high_watermark, marks.log_end_offset), (0, 5), "nothing is committed before the follower fetches");
    assert!(!produced.is_finished());

    let first = replicate(&p.leader, &p.follower, FOLLOWER, 1).await.expect("first fetch");
    assert_eq!((first.log_end_offset, first.high_watermark), (5, 0), "the follower has the data; the leader's HW is still 0");
    assert_eq!(p.leader.watermarks().high_watermark, 0, "the follower's LEO was 0 at that fetch");
    assert!(!produced.is_finished());

    let second = replicate(&p.leader, &p.follower, FOLLOWER, 1).await.expect("second fetch");
    assert_eq!(p.leader.watermarks().high_watermark, 5, "the fetch at 5 committed everything");
    assert_eq!(second.high_watermark, 5, "the follower learns the HW from the answer");
    let answered: AppendResult = produced.await.expect("join").expect("committed");
    assert_eq!((answered.base_offset, answered.last_offset), (0, 2));

    // Consumers see only committed records; a follower refuses producers and consumers.
    assert!(matches!(p.follower.ask(acks_all(1)).await, Err(Error::NotLeaderOrFollower { .. })));
    let consumer = p.follower.ask(Read { offset: 0, max_bytes: 1 << 20 }).await;
    assert!(matches!(consumer, Err(Error::NotLeaderOrFollower { .. })), "{consumer:?}");
    assert!(matches!(p.leader.ask(TruncateTo(0)).await, Err(Error::NotLeaderOrFollower { .. })), "a leader copies nobody");
    let fenced = ReplicaFetch { replica: FOLLOWER, offset: 5, max_bytes: 1, current_leader_epoch: Some(0) };
    assert!(matches!(p.leader.ask(fenced).await, Err(Error::FencedLeaderEpoch { .. })));
    let unknown = CheckedRead { read: Read { offset: 0, max_bytes: 1 }, current_leader_epoch: Some(2) };
    assert!(matches!(p.leader.ask(unknown).await, Err(Error::UnknownLeaderEpoch { .. })));
    let stranger = ReplicaFetch { replica: 9, offset: 5, max_bytes: 1, current_leader_epoch: Some(1) };
    assert!(matches!(p.leader.ask(stranger).await, Err(Error::NotLeaderOrFollower { .. })));
}

#[actix_rt::test]
async fn min_insync_replicas_refuses_before_writing_and_after_append_when_the_isr_shrinks() {
    let p = pair(2, Duration::from_secs(30));
    p.leader.ask(SetRole(leader_role(1, &[LEADER]).with_partition_epoch(2))).await.expect("role");
    let refused = p.leader.ask(acks_all(1)).await;
    assert!(matches!(refused, Err(Error::NotEnoughReplicas { required: 2, available: 1 })), "{refused:?}");
    assert_eq!(p.leader.watermarks().log_end_offset, 0, "refused before it was written");

    p.leader.ask(SetRole(leader_role(1, &[LEADER, FOLLOWER]).with_partition_epoch(3))).await.expect("role");
    let leader = p.leader.clone();
    let waiting = actix_rt::spawn(async move { leader.ask(acks_all(2)).await });
    written_up_to(&p.leader, 2).await;
    if waiting.is_finished() {
        panic!("waits for the follower, but got {:?}", waiting.await);
    }
    // The controller shrinks the ISR: the HW moves to the LEO, and the answer says the ISR is too small.
    p.leader.ask(SetRole(leader_role(1, &[LEADER]).with_partition_epoch(4))).await.expect("role");
    let answered = waiting.await.expect("join");
    assert!(matches!(answered, Err(Error::NotEnoughReplicasAfterAppend { required: 2, available: 1 })), "{answered:?}");
    assert_eq!(p.leader.watermarks().high_watermark, 2);
}

#[actix_rt::test]
async fn a_lagging_follower_leaves_the_isr_through_the_controller_and_returns_at_the_high_watermark() {
    let p = pair(1, Duration::from_millis(100));
    p.leader.ask(acks_all(1).with_acks(RequiredAcks::Leader)).await.expect("written");
    let changes = p.controller.wait_for_change().await;
    assert_eq!(changes.len(), 1, "one shrink, never applied locally: {changes:?}");
    assert_eq!((changes[0].new_isr.clone(), changes[0].leader_epoch, changes[0].partition_epoch), (vec![LEADER], 1, 1));
    assert_eq!(p.leader.watermarks().high_watermark, 0, "the ISR is unchanged until the controller says so");
    p.controller.changes.lock().expect("lock").clear();
    p.leader.ask(SetRole(leader_role(1, &[LEADER]).with_partition_epoch(2))).await.expect("role");
    // The leader alone now: its writes commit at once, and the follower catches up.
    p.leader.ask(acks_all(2)).await.expect("committed by the sole in-sync replica");
    replicate(&p.leader, &p.follower, FOLLOWER, 1).await.expect("fetch");
    assert!(p.controller.changes.lock().expect("lock").is_empty(), "a fetch from below the HW is not in sync");
    replicate(&p.leader, &p.follower, FOLLOWER, 1).await.expect("fetch at the HW");
    let changes = p.controller.wait_for_change().await;
    assert_eq!(changes.first().map(|c| c.new_isr.clone()), Some(vec![LEADER, FOLLOWER]), "back in sync at the HW");
    assert_eq!(changes[0].partition_epoch, 2);
}

#[actix_rt::test]
async fn a_deposed_leader_truncates_its_divergent_tail_and_matches_the_new_leader_byte_for_byte() {
    let p = pair(1, Duration::from_secs(30));
    let (a, b) = (&p.leader, &p.follower);
    let producing = {
        let a = a.clone();
        actix_rt::spawn(async move { a.ask(acks_all(2)).await })
    };
    replicate(a, b, FOLLOWER, 1).await.expect("fetch");
    replicate(a, b, FOLLOWER, 1).await.expect("fetch");
    producing.await.expect("join").expect("committed on both");
    // A writes a tail nobody fetched (acks=1), then loses the leadership.
    a.ask(Append { records: batch_now(3), acks: RequiredAcks::Leader }).await.expect("uncommitted tail");
    assert_eq!(a.watermarks().log_end_offset, 5);
    b.ask(SetRole(PartitionRole::Leader { leader_epoch: 2, partition_epoch: 2, replicas: vec![LEADER, FOLLOWER], isr: vec![FOLLOWER] })).await.expect("role");
    b.ask(acks_all(1)).await.expect("the new leader writes in epoch 2");
    b.ask(acks_all(4)).await.expect("the new leader writes in epoch 2");
    a.ask(SetRole(follower_role(2, FOLLOWER))).await.expect("role");

    let truncated = truncate(b, a, 2).await;
    assert_eq!(truncated.log_end_offset, 2, "epoch 1 ends at 2 on the new leader");
    assert_eq!(truncated.latest_epoch, Some(1));
    for _ in 0..2 {
        replicate(b, a, LEADER, 2).await.expect("fetch from the new leader");
    }
    let (ma, mb) = (a.watermarks(), b.watermarks());
    assert_eq!((ma.log_end_offset, mb.log_end_offset), (7, 7));
    let segment = "00000000000000000000.log";
    let bytes_a = std::fs::read(p._dir.path().join("broker-1").join(segment)).expect("A's segment");
    let bytes_b = std::fs::read(p._dir.path().join("broker-2").join(segment)).expect("B's segment");
    assert_eq!(bytes_a, bytes_b, "the replicas' logs are identical");
}

#[actix_rt::test]
async fn a_stale_or_newer_epoch_fetch_is_refused_and_a_new_follower_epoch_answers_waiting_produces() {
    let p = pair(1, Duration::from_secs(30));
    let leader = p.leader.clone();
    let waiting = actix_rt::spawn(async move { leader.ask(acks_all(1)).await });
    written_up_to(&p.leader, 1).await;
    p.leader.ask(SetRole(follower_role(2, FOLLOWER))).await.expect("role");
    let answered = waiting.await.expect("join");
    assert!(matches!(answered, Err(Error::NotLeaderOrFollower { .. })), "{answered:?}");
    let marks = p.leader.watermarks();
    assert!(marks.refuses(None) && !marks.leader && marks.leader_epoch == 2, "published for fetch handlers: {marks:?}");
}

trait RoleExt {
    fn with_partition_epoch(self, epoch: i32) -> Self;
}

impl RoleExt for PartitionRole {
    fn with_partition_epoch(self, epoch: i32) -> Self {
        match self {
            PartitionRole::Leader { leader_epoch, replicas, isr, .. } => PartitionRole::Leader { leader_epoch, partition_epoch: epoch, replicas, isr },
            follower => follower,
        }
    }
}

trait AppendExt {
    fn with_acks(self, acks: RequiredAcks) -> Self;
}

impl AppendExt for Append {
    fn with_acks(self, acks: RequiredAcks) -> Self {
        Append { acks, ..self }
    }
}

#[actix_rt::test]
async fn a_follower_told_at_the_log_end_commits_waiting_produces_and_stays_in_sync_without_reads() {
    let p = pair(2, Duration::from_millis(300));
    let leader = p.leader.clone();
    let produced = actix_rt::spawn(async move { leader.ask(acks_all(3)).await });
    written_up_to(&p.leader, 3).await;
    let copied = replicate(&p.leader, &p.follower, FOLLOWER, 1).await.expect("fetch");
    assert_eq!(copied.log_end_offset, 3);
    assert!(!produced.is_finished(), "the leader has not yet heard that the follower has 3");

    // The fetch handler's idle path: no read, only the position.
    let told = |offset, epoch| FollowerAtLogEnd { replica: FOLLOWER, offset, current_leader_epoch: Some(epoch) };
    p.leader.tell(told(3, 0)).expect("tell");
    p.leader.tell(told(3, 2)).expect("tell");
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(p.leader.watermarks().high_watermark, 0, "a stale or newer epoch is dropped, not recorded");
    p.leader.tell(told(3, 1)).expect("tell");
    let answered: AppendResult = tokio::time::timeout(Duration::from_secs(5), produced).await.expect("committed in time").expect("join").expect("ok");
    assert_eq!(answered.last_offset, 2);
    assert_eq!(p.leader.watermarks().high_watermark, 3);

    // Told every 50 ms for longer than replica.lag.time.max.ms: still caught up, so the ISR keeps it.
    for _ in 0..12 {
        p.leader.tell(told(3, 1)).expect("tell");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(p.controller.changes.lock().expect("lock").is_empty(), "no ISR shrink for a follower at the log end");
}
