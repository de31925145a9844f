//! The follower's side of replication: storing the leader's batches as they
//! are, learning its high watermark and log start, and cutting a divergent
//! tail. The replica fetcher (in `src/replication/`) drives these messages
//! one at a time per partition, so they need no ordering of their own.

use actix::prelude::*;
use silt_tiering::PartitionLog;

use super::{AppendAsFollower, GetReplicaPosition, LogFuture, PartitionActor, ReplicaPosition, StartAt, TruncateTo, TruncateToLeader, Truncation};
use crate::error::Error;
use crate::now_ms;

fn position(log: &PartitionLog) -> ReplicaPosition {
    ReplicaPosition {
        log_end_offset: log.log_end_offset(),
        high_watermark: log.high_watermark(),
        log_start_offset: log.log_start_offset(),
        latest_epoch: log.latest_leader_epoch(),
    }
}

impl PartitionActor {
    fn check_follower(&self) -> Result<(), Error> {
        if self.role.is_leader() {
            Err(Error::NotLeaderOrFollower { partition: self.tp.to_string(), leader: None, reason: "it leads: it does not copy another replica" })
        } else {
            Ok(())
        }
    }

    fn as_follower<T: Send + 'static>(&mut self, op: impl FnOnce(&mut PartitionLog) -> Result<T, Error> + Send + 'static) -> LogFuture<T> {
        match self.check_follower() {
            Ok(()) => self.with_log(op),
            Err(e) => Box::pin(actix::fut::ready(Err(e))),
        }
    }
}

impl Handler<AppendAsFollower> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<ReplicaPosition, Error>>;

    fn handle(&mut self, msg: AppendAsFollower, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| {
            act.as_follower(move |log| {
                if !msg.records.is_empty() {
                    log.append_as_follower(&msg.records, now_ms())?;
                }
                // min(leader HW, own LEO), and never back (Kafka's maybeUpdateHighWatermark).
                let hw = msg.leader_hw.min(log.log_end_offset());
                if hw > log.high_watermark() {
                    log.set_high_watermark(hw);
                }
                // The leader deleted records below its log start: so does the follower, up to its HW.
                let start = msg.leader_log_start.min(log.high_watermark());
                if start > log.log_start_offset() {
                    log.delete_records_before(start)?;
                }
                Ok(position(log))
            })
        })
    }
}

impl Handler<StartAt> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<ReplicaPosition, Error>>;

    fn handle(&mut self, StartAt(offset): StartAt, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| {
            let tp = act.tp.to_string();
            act.as_follower(move |log| {
                let before = (log.log_start_offset(), log.log_end_offset());
                log.truncate_fully_and_start_at(offset)?;
                tracing::info!(partition = %tp, from = ?before, start = offset, "the leader's log starts past this replica's: starting again there");
                Ok(position(log))
            })
        })
    }
}

impl Handler<TruncateTo> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<ReplicaPosition, Error>>;

    fn handle(&mut self, TruncateTo(offset): TruncateTo, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| {
            let tp = act.tp.to_string();
            act.as_follower(move |log| {
                let before = log.log_end_offset();
                log.truncate_to(offset)?;
                if log.log_end_offset() < before {
                    tracing::info!(partition = %tp, from = before, to = log.log_end_offset(), "truncated a divergent tail");
                }
                Ok(position(log))
            })
        })
    }
}

/// Where a follower truncates, given the leader's answer for its latest
/// epoch: `(offset, completed)`, with Kafka's rules.
fn truncation_point(log: &PartitionLog, leader_epoch: i32, end_offset: i64) -> (i64, bool) {
    let leo = log.log_end_offset();
    if end_offset < 0 {
        // The leader knows no epoch at or below ours: fall back to the HW.
        return (log.high_watermark(), true);
    }
    if leader_epoch < 0 {
        return (end_offset.min(leo), true);
    }
    match log.end_offset_for_epoch(leader_epoch) {
        // Our log has no such epoch: cut to the end of the largest epoch below
        // it and ask again with that one.
        Some((ours, our_end)) if ours != leader_epoch => (our_end.min(leo), false),
        Some((_, our_end)) => (our_end.min(end_offset).min(leo), true),
        None => (end_offset.min(leo), true),
    }
}

impl Handler<TruncateToLeader> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<Truncation, Error>>;

    fn handle(&mut self, msg: TruncateToLeader, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| {
            let tp = act.tp.to_string();
            act.as_follower(move |log| {
                let before = log.log_end_offset();
                let (offset, completed) = truncation_point(log, msg.leader_epoch, msg.end_offset);
                log.truncate_to(offset)?;
                if log.log_end_offset() < before {
                    tracing::info!(partition = %tp, from = before, to = log.log_end_offset(), leader_epoch = msg.leader_epoch, "truncated a divergent tail");
                }
                Ok(Truncation { position: position(log), completed })
            })
        })
    }
}

impl Handler<GetReplicaPosition> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<ReplicaPosition, Error>>;

    fn handle(&mut self, _msg: GetReplicaPosition, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| act.with_log(|log| Ok(position(log))))
    }
}
