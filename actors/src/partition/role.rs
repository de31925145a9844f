//! The partition's role in its replica set (see [`crate::replication`]):
//! taking a new role, and the checks every client-facing message makes
//! against it (leader epoch fencing, "am I the leader").

use std::time::Instant;

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

    /// Whether this node leads with itself as the whole ISR: what it writes is
    /// committed at once (every partition of a single node).
    pub(super) fn is_sole(&self) -> bool {
        matches!(&self.role, PartitionRole::Leader { isr, .. } if isr.as_slice() == [self.options.replication.local_broker])
    }

    /// Kafka's leader-epoch fencing: an asker behind the leader is fenced, one
    /// ahead of it knows of an epoch this broker has not seen yet.
    pub(super) fn check_leader_epoch(&self, current_leader_epoch: Option<i32>) -> Result<(), Error> {
        let Some(asked) = current_leader_epoch else { return Ok(()) };
        let current = self.leader_epoch();
        if asked < current {
            Err(Error::FencedLeaderEpoch { partition: self.tp.to_string(), epoch: asked, current })
        } else if asked > current {
            Err(Error::UnknownLeaderEpoch { partition: self.tp.to_string(), epoch: asked, current })
        } else {
            Ok(())
        }
    }

    /// What a request that only a leader answers checks, in Kafka's order
    /// (`Partition.getLocalLog`): the epoch first, then the leadership.
    pub(super) fn check_leader(&self, current_leader_epoch: Option<i32>) -> Result<(), Error> {
        self.check_leader_epoch(current_leader_epoch)?;
        if self.role.is_leader() {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    pub(super) fn not_leader(&self) -> Error {
        let leader = match &self.role {
            PartitionRole::Follower { leader, .. } => *leader,
            PartitionRole::Leader { .. } => None,
        };
        Error::NotLeaderOrFollower { partition: self.tp.to_string(), leader, reason: "it follows" }
    }
}

impl Handler<SetRole> for PartitionActor {
    type Result = Result<(), Error>;

    fn handle(&mut self, SetRole(role): SetRole, ctx: &mut Context<Self>) -> Self::Result {
        if role.leader_epoch() < self.role.leader_epoch() {
            // The image only moves forward; an older role is a stale message.
            tracing::debug!(topic = %self.tp.topic, partition = self.tp.partition, stale = role.leader_epoch(), current = self.role.leader_epoch(), "ignoring a stale role");
            return Ok(());
        }
        if role == self.role {
            return Ok(());
        }
        tracing::info!(topic = %self.tp.topic, partition = self.tp.partition, ?role, "partition role");
        let new_epoch = role.leader_epoch() != self.role.leader_epoch() || role.is_leader() != self.role.is_leader();
        let leo = self.watermarks.borrow().log_end_offset;
        self.options.replication.isr_changes.count(&self.role, &role);
        self.role = role;
        super::publish_role(&self.watermarks, self.role.is_leader(), self.role.leader_epoch());
        self.replicas.set_role(&self.role, self.options.replication.local_broker, new_epoch, leo, Instant::now());
        self.refresh_hw_bound();
        if new_epoch {
            self.archive_role_changed();
        }
        if self.role.is_leader() {
            // A smaller ISR may let the HW move (and answer waiting produces).
            self.advance_high_watermark(ctx);
        } else {
            let partition = self.tp.to_string();
            let leader = match &self.role {
                PartitionRole::Follower { leader, .. } => *leader,
                PartitionRole::Leader { .. } => None,
            };
            self.replicas.fail_pending(|| Error::NotLeaderOrFollower { partition: partition.clone(), leader, reason: "it stopped leading" });
        }
        Ok(())
    }
}
