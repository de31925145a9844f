//! The leader's side of replication: follower fetches (reads to the log end
//! that report the follower's log end), the high watermark they move,
//! `acks=all` produces waiting for it, and ISR changes, which the leader asks
//! the controller for (AlterPartition) and never makes on its own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use silt_tiering::{AppendResult, PartitionLog, ReadResult};

use super::append::commit_sole_replica;
use super::read::ReadEnd;
use super::replicas::SOLE;
use super::{FollowerAtLogEnd, LogFuture, PartitionActor, Read, ReplicaFetch};
use crate::error::Error;
use crate::metadata::quorum::BrokerId;
use crate::replication::{IsrChange, PartitionRole};

/// How often a leader looks for followers that fell out of sync: half the
/// lag limit, as Kafka's `isr-expiration` task, within sane bounds.
pub(super) fn isr_check_interval(lag_max: Duration) -> Duration {
    (lag_max / 2).clamp(Duration::from_millis(10), Duration::from_secs(5))
}

/// Moves the HW to `min(LEO, bound)` if that is higher (it never moves back).
fn raise_high_watermark(log: &mut PartitionLog, bound: i64) -> i64 {
    if bound == SOLE {
        commit_sole_replica(log);
    } else if bound > log.high_watermark() {
        log.set_high_watermark(bound.min(log.log_end_offset()));
    }
    log.high_watermark()
}

impl Handler<ReplicaFetch> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<ReadResult, Error>>;

    fn handle(&mut self, msg: ReplicaFetch, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| act.replica_fetch(msg))
    }
}

impl Handler<FollowerAtLogEnd> for PartitionActor {
    type Result = ();

    /// Records the follower's position as a fetch with records does, without
    /// the read; the high watermark moves (a log operation) only if it can.
    fn handle(&mut self, msg: FollowerAtLogEnd, ctx: &mut Context<Self>) {
        if self.check_leader(msg.current_leader_epoch).is_err() || !self.replicas.is_follower(msg.replica) {
            return;
        }
        let marks = *self.watermarks.borrow();
        if !marks.open || msg.offset < marks.local_log_start_offset || msg.offset > marks.log_end_offset {
            return;
        }
        self.replicas.fetched(msg.replica, msg.offset, marks.log_end_offset, Instant::now());
        self.refresh_hw_bound();
        let bound = self.hw_bound.load(Ordering::Acquire);
        if bound != SOLE && bound > marks.high_watermark {
            self.advance_high_watermark(ctx);
        }
        self.maybe_expand_isr(ctx, marks.high_watermark);
    }
}

impl PartitionActor {
    /// A follower's fetch: records its LEO (the fetch offset), raises the HW
    /// under the same log lock as the read, then answers waiting produces and
    /// asks for an ISR expansion if the follower is back in sync.
    fn replica_fetch(&mut self, msg: ReplicaFetch) -> LogFuture<ReadResult> {
        if let Err(e) = self.check_leader(msg.current_leader_epoch) {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        if !self.replicas.is_follower(msg.replica) {
            let reason = "the fetching broker is not a replica of it";
            return Box::pin(actix::fut::ready(Err(Error::NotLeaderOrFollower { partition: self.tp.to_string(), leader: None, reason })));
        }
        let marks = *self.watermarks.borrow();
        // Below the local log start, the records are in the archive only: a
        // replica starts at the local start rather than copy the archive (KIP-405).
        if marks.open && msg.offset < marks.local_log_start_offset && msg.offset >= marks.log_start_offset {
            let error =
                Error::OffsetMovedToTieredStorage { partition: self.tp.to_string(), offset: msg.offset, local_log_start_offset: marks.local_log_start_offset };
            return Box::pin(actix::fut::ready(Err(error)));
        }
        // An offset past the log end is answered OFFSET_OUT_OF_RANGE by the
        // read and says nothing about the follower (Kafka reads first too).
        if marks.open && msg.offset >= marks.local_log_start_offset && msg.offset <= marks.log_end_offset {
            self.replicas.fetched(msg.replica, msg.offset, marks.log_end_offset, Instant::now());
            self.refresh_hw_bound();
        }
        let bound = Arc::clone(&self.hw_bound);
        let read = Read { offset: msg.offset, max_bytes: msg.max_bytes };
        let fut = self.read_with(read, ReadEnd::LogEnd, move |log| {
            raise_high_watermark(log, bound.load(Ordering::Acquire));
        });
        Box::pin(fut.map(move |read, act, ctx| {
            let read = read?;
            act.high_watermark_moved(read.high_watermark);
            act.maybe_expand_isr(ctx, read.high_watermark);
            Ok(read)
        }))
    }

    /// The most the HW may be by the ISR's followers ([`SOLE`]: no follower in the ISR).
    fn high_watermark_bound(&self) -> i64 {
        match &self.role {
            PartitionRole::Leader { isr, .. } if !self.is_sole() => self.replicas.high_watermark_bound(isr),
            _ => SOLE,
        }
    }

    /// Publishes the HW bound of the current ISR and follower LEOs to log
    /// operations (the `hw_bound` field).
    pub(super) fn refresh_hw_bound(&self) {
        self.hw_bound.store(self.high_watermark_bound(), Ordering::Release);
    }

    /// Raises the HW as far as the ISR allows (after a role change).
    pub(super) fn advance_high_watermark(&mut self, ctx: &mut Context<Self>) {
        let bound = Arc::clone(&self.hw_bound);
        let fut = self.with_log(move |log| Ok(raise_high_watermark(log, bound.load(Ordering::Acquire))));
        ctx.spawn(fut.map(|hw, act, _| match hw {
            Ok(hw) => act.high_watermark_moved(hw),
            Err(e) => tracing::debug!(topic = %act.tp.topic, partition = act.tp.partition, cause = %e, "the high watermark could not move yet"),
        }));
    }

    /// Answers the `acks=all` produces that `high_watermark` covers.
    fn high_watermark_moved(&mut self, high_watermark: i64) {
        let (isr, min_isr) = (self.in_sync_replicas(), self.options.min_insync_replicas);
        self.replicas.commit_up_to(high_watermark, isr, min_isr);
    }

    /// An `acks=all` produce that was written: answered once the HW passes
    /// its last offset (at once when it already has).
    pub(super) fn await_commit(&mut self, appended: Result<AppendResult, Error>) -> LogFuture<AppendResult> {
        let result = match appended {
            Ok(result) => result,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let partition = self.tp.to_string();
        let answered = match self.replicas.wait_for_commit(result, &partition) {
            Ok(answered) => answered,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        // The HW may already be past it (a flush waited, or followers are quick).
        let high_watermark = self.watermarks.borrow().high_watermark;
        self.high_watermark_moved(high_watermark);
        Box::pin(
            async move { answered.await.unwrap_or_else(|_| Err(Error::Unavailable(partition, "the partition restarted before the batch was committed".into()))) }
                .into_actor(self),
        )
    }

    /// The periodic check of a leader for followers out of sync for longer
    /// than `replica.lag.time.max.ms` (Kafka's `maybeShrinkIsr`).
    pub(super) fn check_isr(&mut self, ctx: &mut Context<Self>) {
        let PartitionRole::Leader { isr, .. } = &self.role else { return };
        let lagging = self.replicas.out_of_sync(isr, self.options.replication.replica_lag_time_max, Instant::now());
        if lagging.is_empty() {
            return;
        }
        let new_isr: Vec<BrokerId> = isr.iter().copied().filter(|id| !lagging.contains(id)).collect();
        self.propose_isr(ctx, new_isr, "shrinking the ISR: followers not caught up within replica.lag.time.max.ms");
    }

    /// Asks for followers that reached the HW to rejoin the ISR (Kafka's `maybeExpandIsr`).
    fn maybe_expand_isr(&mut self, ctx: &mut Context<Self>, high_watermark: i64) {
        let PartitionRole::Leader { isr, .. } = &self.role else { return };
        let back = self.replicas.back_in_sync(isr, high_watermark);
        if back.is_empty() {
            return;
        }
        let mut new_isr = isr.clone();
        new_isr.extend(back);
        self.propose_isr(ctx, new_isr, "expanding the ISR: followers reached the high watermark");
    }

    /// Sends an ISR change to the controller, one at a time. The new ISR
    /// arrives later as a role, like every metadata change.
    fn propose_isr(&mut self, ctx: &mut Context<Self>, new_isr: Vec<BrokerId>, why: &'static str) {
        let PartitionRole::Leader { leader_epoch, partition_epoch, .. } = self.role else { return };
        let Some(alter) = self.options.replication.alter_partition.clone() else { return };
        let now = Instant::now();
        let lag_max = self.options.replication.replica_lag_time_max;
        if self.replicas.isr_change_in_flight.is_some_and(|(_, since)| now.saturating_duration_since(since) < lag_max) {
            return;
        }
        self.replicas.isr_change_in_flight = Some((partition_epoch, now));
        tracing::info!(topic = %self.tp.topic, partition = self.tp.partition, ?new_isr, why, "asking the controller for an ISR change");
        let change = IsrChange { topic_id: self.options.replication.topic_id, partition: self.tp.partition, leader_epoch, partition_epoch, new_isr };
        ctx.spawn(alter.alter_partition(change).into_actor(self).map(|result, act, _| {
            // Accepted: the new ISR arrives as a role. Refused: ask again at the next check.
            if let Err(e) = result {
                act.replicas.isr_change_in_flight = None;
                tracing::warn!(topic = %act.tp.topic, partition = act.tp.partition, cause = %e, "the controller refused an ISR change");
            }
        }));
    }
}
