//! Read-only questions about a partition that admin APIs ask: where a leader
//! epoch ends (OffsetForLeaderEpoch) and which idempotent producers the
//! partition remembers (DescribeProducers).

use actix::prelude::*;
use silt_tiering::producer_state::ActiveProducer;

use super::PartitionActor;
use crate::error::Error;

/// Where `leader_epoch` ends in this partition's log, after checking the
/// asker's view of the current leader epoch (`None`: no check, Kafka's -1).
/// Answers `(epoch, end_offset)`, or `None` for Kafka's UNDEFINED_EPOCH.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<(i32, i64)>, Error>")]
pub struct EndOffsetForEpoch {
    pub leader_epoch: i32,
    pub current_leader_epoch: Option<i32>,
}

/// The idempotent producers this partition remembers, by producer id.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<ActiveProducer>, Error>")]
pub struct DescribeProducers;

impl Handler<EndOffsetForEpoch> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<Option<(i32, i64)>, Error>>;

    fn handle(&mut self, msg: EndOffsetForEpoch, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| {
            if let Err(e) = act.check_leader(msg.current_leader_epoch) {
                return Box::pin(actix::fut::ready(Err(e)));
            }
            // Kafka's leader writes its epoch into the cache when it becomes
            // leader, so the current epoch always ends at the log end offset;
            // Silt's log records an epoch with its first batch, so the current
            // one is answered here even before anything was written in it.
            let current = act.leader_epoch();
            act.with_log(move |log| {
                Ok(if msg.leader_epoch == current { Some((current, log.log_end_offset())) } else { log.end_offset_for_epoch(msg.leader_epoch) })
            })
        })
    }
}

impl Handler<DescribeProducers> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<Vec<ActiveProducer>, Error>>;

    fn handle(&mut self, _msg: DescribeProducers, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| act.with_log(|log| Ok(log.active_producers())))
    }
}
