//! The partition's role in its replica set (see [`crate::replication`]).

use actix::prelude::*;

use super::PartitionActor;
use crate::error::Error;
use crate::replication::{PartitionRole, SetRole};

impl PartitionActor {
    /// The epoch of the leader this replica follows, or its own as leader.
    pub(super) fn leader_epoch(&self) -> i32 {
        self.role.leader_epoch()
    }

    /// How many replicas are in sync, as this replica knows it: the ISR's size
    /// on the leader, none on a follower (it acknowledges nothing).
    pub(super) fn in_sync_replicas(&self) -> i32 {
        match &self.role {
            PartitionRole::Leader { isr, .. } => i32::try_from(isr.len()).unwrap_or(i32::MAX),
            PartitionRole::Follower { .. } => 0,
        }
    }
}

impl Handler<SetRole> for PartitionActor {
    type Result = Result<(), Error>;

    fn handle(&mut self, SetRole(role): SetRole, _ctx: &mut Context<Self>) -> Self::Result {
        if role.leader_epoch() < self.role.leader_epoch() {
            // The image only moves forward; an older role is a stale message.
            tracing::debug!(topic = %self.tp.topic, partition = self.tp.partition, stale = role.leader_epoch(), current = self.role.leader_epoch(), "ignoring a stale role");
            return Ok(());
        }
        if role != self.role {
            tracing::info!(topic = %self.tp.topic, partition = self.tp.partition, ?role, "partition role");
        }
        self.role = role;
        Ok(())
    }
}
