//! The leader's view of its replica set: each follower's log end and last
//! caught-up time, the high watermark they allow, and the `acks=all` produces
//! waiting for it.
//!
//! This state lives inside the partition actor, not in an actor beside it:
//! the produce path was tuned against thread hops, and every follower fetch
//! both reads the log and may move the high watermark, which needs the log
//! lock anyway. Keeping the state here costs a single-replica produce one
//! comparison (`is_sole`), and a replicated produce no extra message (see
//! docs/architecture.md, "Replication", for the figures).
//!
//! The rules are Kafka's (`Partition.scala`):
//! - a follower's LEO is the offset it fetches from; one that has not fetched
//!   since this leader's epoch began has no known LEO, and holds the HW back;
//! - a follower is caught up at a fetch that reaches the leader's LEO, or at
//!   the previous fetch when this one reaches the LEO the leader had then;
//! - the HW is the smallest LEO over the ISR and never moves back;
//! - an ISR member not caught up for `replica.lag.time.max.ms` is out of
//!   sync, a non-member whose LEO reached the HW (and this epoch's start) is
//!   back in sync; either change goes to the controller (AlterPartition).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use silt_tiering::AppendResult;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::Error;
use crate::metadata::quorum::BrokerId;
use crate::replication::{AlterPartition, PartitionRole};

/// Kafka's default `replica.lag.time.max.ms`.
pub const REPLICA_LAG_TIME_MAX_DEFAULT: Duration = Duration::from_secs(30);
/// At most this many `acks=all` produces wait for the HW per partition; one
/// more is refused before it is written (the client retries).
pub const PENDING_ACKS_MAX: usize = 4096;

/// What a partition needs to know to lead a replica set.
#[derive(Clone)]
pub struct ReplicationOptions {
    /// This node's broker id: the one replica of the role that is not a follower.
    pub local_broker: BrokerId,
    pub topic_id: Uuid,
    /// How ISR changes reach the controller; `None` on a single node, where
    /// the ISR is always this node alone.
    pub alter_partition: Option<Arc<dyn AlterPartition>>,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max: Duration,
    /// Where this partition counts the ISR changes it applies while leading.
    pub isr_changes: Arc<IsrChangeCounts>,
}

/// ISR shrinks and expands applied by leaders (Kafka's `IsrShrinksPerSec`
/// and `IsrExpandsPerSec`), shared by a node's partitions.
#[derive(Debug, Default)]
pub struct IsrChangeCounts {
    pub shrinks: AtomicU64,
    pub expands: AtomicU64,
}

impl IsrChangeCounts {
    /// Counts the change from `old` to `new` in the same leader epoch: a
    /// shrink if a member left, an expand if one joined (both if both).
    pub(super) fn count(&self, old: &PartitionRole, new: &PartitionRole) {
        let (PartitionRole::Leader { leader_epoch: old_epoch, isr: old_isr, .. }, PartitionRole::Leader { leader_epoch, isr, .. }) = (old, new) else { return };
        if old_epoch != leader_epoch {
            return;
        }
        if old_isr.iter().any(|id| !isr.contains(id)) {
            self.shrinks.fetch_add(1, Ordering::Relaxed);
        }
        if isr.iter().any(|id| !old_isr.contains(id)) {
            self.expands.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ReplicationOptions {
    /// A partition on a single node: it leads alone and never alters its ISR.
    pub fn single_node(local_broker: BrokerId, topic_id: Uuid) -> Self {
        ReplicationOptions { local_broker, topic_id, alter_partition: None, replica_lag_time_max: REPLICA_LAG_TIME_MAX_DEFAULT, isr_changes: Arc::default() }
    }
}

impl fmt::Debug for ReplicationOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationOptions")
            .field("local_broker", &self.local_broker)
            .field("topic_id", &self.topic_id)
            .field("alter_partition", &self.alter_partition.is_some())
            .field("replica_lag_time_max", &self.replica_lag_time_max)
            .finish()
    }
}

/// One follower as the leader sees it.
#[derive(Debug, Clone, Copy, Default)]
struct Follower {
    /// Its log end offset: the offset of its last fetch; `None` before one in this epoch.
    leo: Option<i64>,
    last_caught_up: Option<Instant>,
    /// When it last fetched, and the leader's LEO then.
    last_fetch: Option<(Instant, i64)>,
}

/// An `acks=all` produce waiting for the HW to pass `end_offset`.
struct PendingAck {
    end_offset: i64,
    result: AppendResult,
    answer: oneshot::Sender<Result<AppendResult, Error>>,
}

/// The leader's replica-set state (empty on a follower). See the module docs.
#[derive(Default)]
pub(super) struct ReplicaSet {
    followers: BTreeMap<BrokerId, Follower>,
    /// In append order, so in `end_offset` order.
    pending: VecDeque<PendingAck>,
    /// The LEO when this epoch's leadership began: a follower must reach it to rejoin the ISR.
    epoch_start_offset: i64,
    /// An AlterPartition sent at this partition epoch, and when: no other is
    /// sent until the role moves past that epoch (the change arrived), the
    /// controller refuses it, or it is older than the lag limit.
    pub(super) isr_change_in_flight: Option<(i32, Instant)>,
}

/// What [`ReplicaSet::high_watermark_bound`] says when only this node is in sync.
pub(super) const SOLE: i64 = i64::MAX;

impl ReplicaSet {
    /// Takes a new role. A new leader epoch forgets every follower's LEO (Kafka
    /// resets replica state on becoming leader) and counts the ISR members as
    /// caught up now; the same epoch with another ISR keeps what was learnt.
    pub(super) fn set_role(&mut self, role: &PartitionRole, local: BrokerId, new_epoch: bool, leo: i64, now: Instant) {
        let PartitionRole::Leader { replicas, isr, partition_epoch, .. } = role else {
            self.followers.clear();
            self.isr_change_in_flight = None;
            return;
        };
        if new_epoch {
            self.followers.clear();
            self.epoch_start_offset = leo;
        }
        if new_epoch || self.isr_change_in_flight.is_some_and(|(sent_at, _)| sent_at != *partition_epoch) {
            self.isr_change_in_flight = None;
        }
        self.followers.retain(|id, _| replicas.contains(id));
        for &id in replicas.iter().filter(|&&id| id != local) {
            let fresh = Follower { last_caught_up: isr.contains(&id).then_some(now), ..Follower::default() };
            self.followers.entry(id).or_insert(fresh);
        }
    }

    /// Whether `replica` is one of this leader's followers.
    pub(super) fn is_follower(&self, replica: BrokerId) -> bool {
        self.followers.contains_key(&replica)
    }

    /// Records a follower's fetch at `fetch_offset` while the leader's LEO is `leader_leo`.
    pub(super) fn fetched(&mut self, replica: BrokerId, fetch_offset: i64, leader_leo: i64, now: Instant) {
        let Some(follower) = self.followers.get_mut(&replica) else { return };
        if fetch_offset >= leader_leo {
            follower.last_caught_up = Some(now);
        } else if let Some((at, _)) = follower.last_fetch.filter(|&(_, leo_then)| fetch_offset >= leo_then) {
            follower.last_caught_up = Some(follower.last_caught_up.map_or(at, |t| t.max(at)));
        }
        follower.leo = Some(fetch_offset);
        follower.last_fetch = Some((now, leader_leo));
    }

    /// The most the HW may be by the followers in `isr`: the smallest of their
    /// LEOs, [`SOLE`] when no follower is in the ISR, and `i64::MIN` while
    /// one of them has not fetched yet.
    pub(super) fn high_watermark_bound(&self, isr: &[BrokerId]) -> i64 {
        let mut bound = SOLE;
        for (id, follower) in &self.followers {
            if isr.contains(id) {
                bound = bound.min(follower.leo.unwrap_or(i64::MIN));
            }
        }
        bound
    }

    /// ISR followers not caught up for longer than `lag_max`.
    pub(super) fn out_of_sync(&self, isr: &[BrokerId], lag_max: Duration, now: Instant) -> Vec<BrokerId> {
        self.followers
            .iter()
            .filter(|(id, _)| isr.contains(id))
            .filter(|(_, f)| f.last_caught_up.is_none_or(|t| now.saturating_duration_since(t) > lag_max))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Followers outside the ISR that have reached the HW and this epoch's start.
    pub(super) fn back_in_sync(&self, isr: &[BrokerId], high_watermark: i64) -> Vec<BrokerId> {
        let needed = high_watermark.max(self.epoch_start_offset);
        self.followers.iter().filter(|(id, f)| !isr.contains(id) && f.leo.is_some_and(|leo| leo >= needed)).map(|(&id, _)| id).collect()
    }

    /// Queues an `acks=all` answer until the HW reaches `result.last_offset + 1`.
    /// Refused when [`PENDING_ACKS_MAX`] produces already wait.
    pub(super) fn wait_for_commit(&mut self, result: AppendResult, partition: &str) -> Result<oneshot::Receiver<Result<AppendResult, Error>>, Error> {
        if self.pending.len() >= PENDING_ACKS_MAX {
            // Producers that timed out dropped their receivers: forget them first.
            self.pending.retain(|p| !p.answer.is_closed());
            if self.pending.len() >= PENDING_ACKS_MAX {
                return Err(Error::Unavailable(partition.to_owned(), format!("{PENDING_ACKS_MAX} acks=all produces already wait for replication")));
            }
        }
        let (answer, answered) = oneshot::channel();
        self.pending.push_back(PendingAck { end_offset: result.last_offset + 1, result, answer });
        Ok(answered)
    }

    /// Answers the produces the HW now covers: committed, or
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR is below `min_isr` (Kafka's
    /// `checkEnoughReplicasReachOffset`).
    pub(super) fn commit_up_to(&mut self, high_watermark: i64, isr_size: i32, min_isr: i32) {
        while self.pending.front().is_some_and(|p| p.end_offset <= high_watermark) {
            let Some(p) = self.pending.pop_front() else { break };
            let outcome = if isr_size >= min_isr { Ok(p.result) } else { Err(Error::NotEnoughReplicasAfterAppend { required: min_isr, available: isr_size }) };
            let _ = p.answer.send(outcome);
        }
    }

    /// Answers every waiting produce with `error` (the partition stopped leading).
    pub(super) fn fail_pending(&mut self, error: impl Fn() -> Error) {
        for p in self.pending.drain(..) {
            let _ = p.answer.send(Err(error()));
        }
    }

    #[cfg(test)]
    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(isr: &[BrokerId]) -> PartitionRole {
        PartitionRole::Leader { leader_epoch: 1, partition_epoch: 1, replicas: vec![1, 2, 3], isr: isr.to_vec() }
    }

    fn result(last_offset: i64) -> AppendResult {
        AppendResult { base_offset: last_offset, last_offset, log_append_time_ms: None, log_start_offset: 0, records_appended: 1, bytes_appended: 1 }
    }

    #[test]
    fn isr_changes_count_shrinks_and_expands_within_a_leader_epoch() {
        let counts = IsrChangeCounts::default();
        let get = |c: &IsrChangeCounts| (c.shrinks.load(Ordering::Relaxed), c.expands.load(Ordering::Relaxed));
        counts.count(&leader(&[1, 2, 3]), &leader(&[1, 3]));
        assert_eq!(get(&counts), (1, 0), "a member left");
        counts.count(&leader(&[1, 3]), &leader(&[1, 2, 3]));
        assert_eq!(get(&counts), (1, 1), "a member joined");
        counts.count(&leader(&[1, 3]), &leader(&[1, 2]));
        assert_eq!(get(&counts), (2, 2), "one left and one joined");
        let next_epoch = PartitionRole::Leader { leader_epoch: 2, partition_epoch: 2, replicas: vec![1, 2, 3], isr: vec![1] };
        counts.count(&leader(&[1, 2, 3]), &next_epoch);
        let follower = PartitionRole::Follower { leader_epoch: 1, partition_epoch: 1, leader: Some(2), replicas: vec![1, 2, 3] };
        counts.count(&follower, &leader(&[1]));
        assert_eq!(get(&counts), (2, 2), "a new leader epoch or a follower's role is no ISR change of this leader");
    }

    #[test]
    fn the_high_watermark_bound_is_the_smallest_isr_leo_and_waits_for_a_first_fetch() {
        let now = Instant::now();
        let mut set = ReplicaSet::default();
        set.set_role(&leader(&[1, 2, 3]), 1, true, 10, now);
        assert_eq!(set.high_watermark_bound(&[1, 2, 3]), i64::MIN, "no follower has fetched in this epoch");
        set.fetched(2, 8, 10, now);
        set.fetched(3, 6, 10, now);
        assert_eq!(set.high_watermark_bound(&[1, 2, 3]), 6);
        assert_eq!(set.high_watermark_bound(&[1, 2]), 8, "only ISR members count");
        assert_eq!(set.high_watermark_bound(&[1]), SOLE);
    }

    #[test]
    fn a_follower_is_caught_up_at_the_leo_or_at_the_leo_of_its_previous_fetch() {
        let t0 = Instant::now();
        let lag = Duration::from_secs(10);
        let mut set = ReplicaSet::default();
        set.set_role(&leader(&[1, 2]), 1, true, 0, t0);
        assert!(set.out_of_sync(&[1, 2], lag, t0 + Duration::from_secs(5)).is_empty(), "an ISR member starts caught up");
        assert_eq!(set.out_of_sync(&[1, 2], lag, t0 + Duration::from_secs(11)), vec![2], "it never fetched");
        set.fetched(2, 0, 5, t0 + Duration::from_secs(11)); // behind the LEO of 5
        assert_eq!(set.out_of_sync(&[1, 2], lag, t0 + Duration::from_secs(12)), vec![2], "still behind");
        set.fetched(2, 5, 9, t0 + Duration::from_secs(12)); // reached the LEO of its previous fetch
        assert!(set.out_of_sync(&[1, 2], lag, t0 + Duration::from_secs(20)).is_empty(), "caught up as of t0+11s");
        assert_eq!(set.out_of_sync(&[1, 2], lag, t0 + Duration::from_secs(22)), vec![2]);
        assert_eq!(set.back_in_sync(&[1], 5), vec![2], "out of the ISR, and at the HW");
        assert!(set.back_in_sync(&[1], 6).is_empty(), "behind the HW");
    }

    #[test]
    fn waiting_produces_are_answered_in_order_and_after_append_when_the_isr_is_too_small() {
        let mut set = ReplicaSet::default();
        let mut first = set.wait_for_commit(result(4), "t-0").unwrap();
        let mut second = set.wait_for_commit(result(9), "t-0").unwrap();
        set.commit_up_to(5, 2, 2);
        assert_eq!(first.try_recv().unwrap().unwrap().last_offset, 4);
        assert!(second.try_recv().is_err(), "offset 9 is not committed at HW 5");
        set.commit_up_to(10, 1, 2);
        assert!(matches!(second.try_recv().unwrap(), Err(Error::NotEnoughReplicasAfterAppend { required: 2, available: 1 })));
        assert_eq!(set.pending_len(), 0);
    }

    #[test]
    fn waiting_produces_are_bounded_and_abandoned_ones_are_forgotten() {
        let mut set = ReplicaSet::default();
        let receivers: Vec<_> = (0..PENDING_ACKS_MAX as i64).map(|i| set.wait_for_commit(result(i), "t-0").unwrap()).collect();
        assert!(matches!(set.wait_for_commit(result(1 << 20), "t-0"), Err(Error::Unavailable(..))));
        drop(receivers);
        assert!(set.wait_for_commit(result(1 << 20), "t-0").is_ok(), "timed-out produces make room");
        assert_eq!(set.pending_len(), 1);
    }
}
