//! The seams between a cluster's metadata plane and its data plane.
//!
//! The metadata image (see [`crate::metadata`]) says, for every partition,
//! which brokers hold it, which of them leads, at which leader epoch, and
//! which are in sync. A node's replica manager turns the image into a
//! [`PartitionRole`] for each partition it holds and hands it to the partition
//! actor ([`SetRole`]). Two things the actors need cannot live in this crate,
//! so they come in through traits the upper crate implements, as the archive's
//! observer does:
//!
//! - [`ReplicaFetchers`]: a follower's data comes from its leader over the
//!   Kafka Fetch API (with a replica id), one fetcher per source broker. The
//!   wire protocol lives in `src/`, so the fetchers do too.
//! - [`AlterPartition`]: a leader never changes its ISR on its own authority;
//!   it asks the active controller (Kafka's AlterPartition), which writes a
//!   `PartitionChange` record to the metadata log.
//!
//! A single node with replication factor 1 leads every partition with itself
//! as the whole ISR; neither trait is called there.

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::error::Error;
use crate::metadata::quorum::BrokerId;
use crate::partition::PartitionHandle;
use crate::TopicPartition;

/// What this node is for one partition, as the metadata image says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionRole {
    /// This node leads: it assigns offsets, tracks its followers and moves the HW.
    Leader { leader_epoch: i32, partition_epoch: i32, replicas: Vec<BrokerId>, isr: Vec<BrokerId> },
    /// This node copies the leader's log (`leader` is `None` while the
    /// partition is offline: the follower waits).
    Follower { leader_epoch: i32, partition_epoch: i32, leader: Option<BrokerId>, replicas: Vec<BrokerId> },
}

impl PartitionRole {
    /// The role of the only replica of a partition (a single node, RF=1).
    pub fn sole_leader(broker: BrokerId) -> Self {
        PartitionRole::Leader { leader_epoch: 0, partition_epoch: 0, replicas: vec![broker], isr: vec![broker] }
    }

    pub fn leader_epoch(&self) -> i32 {
        match self {
            PartitionRole::Leader { leader_epoch, .. } | PartitionRole::Follower { leader_epoch, .. } => *leader_epoch,
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self, PartitionRole::Leader { .. })
    }
}

/// Tell a partition actor its role (sent again whenever the image changes it).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), Error>")]
pub struct SetRole(pub PartitionRole);

/// Where a leader broker takes fetches: the listener a follower connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderEndpoint {
    pub broker_id: BrokerId,
    pub host: String,
    pub port: u16,
}

/// A partition a follower copies from its leader.
#[derive(Debug, Clone)]
pub struct FollowedPartition {
    pub handle: PartitionHandle,
    pub topic_id: Uuid,
    /// The leader epoch the follower expects: the fetch carries it, and the
    /// leader refuses an older (FENCED_LEADER_EPOCH) or newer
    /// (UNKNOWN_LEADER_EPOCH) one.
    pub leader_epoch: i32,
}

/// The node's replica fetchers: one per source broker, each batching every
/// partition this node follows from that broker into one Fetch request.
pub trait ReplicaFetchers: Send + Sync + 'static {
    /// Follow `partitions` from `leader`, replacing any earlier source of each.
    fn follow(&self, leader: LeaderEndpoint, partitions: Vec<FollowedPartition>);
    /// Stop copying these partitions (this node now leads them, they went
    /// offline, or their topic was deleted).
    fn unfollow(&self, partitions: &[TopicPartition]);
}

/// A leader's request to change its partition's ISR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The epochs the leader saw; a controller that has moved on refuses the change.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
}

/// How a leader asks the controller to change an ISR (Kafka's AlterPartition).
/// The answer comes when the change is committed to the metadata log; the
/// partition then learns its new ISR as a [`SetRole`] like any other change.
pub trait AlterPartition: Send + Sync + 'static {
    fn alter_partition(&self, change: IsrChange) -> BoxFuture<'static, Result<(), Error>>;
}
