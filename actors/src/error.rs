//! The domain errors of Silt's actors. `src/` maps each variant to the Kafka
//! error code a client expects, in one exhaustive match.

use silt_tiering::{ArchiveError, LogError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("topic or partition {0} does not exist")]
    UnknownTopicOrPartition(String),
    #[error("topic id {0} does not exist")]
    UnknownTopicId(uuid::Uuid),
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic { name: String, reason: String },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("replication factor {0} is not possible on this single-node cluster")]
    InvalidReplicationFactor(i32),
    #[error("invalid config {key}={value:?}: {reason}")]
    InvalidConfig { key: String, value: String, reason: String },
    #[error("acks=all needs {required} in-sync replicas (min.insync.replicas) but {available} are in sync")]
    NotEnoughReplicas { required: i32, available: i32 },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("archive: {0}")]
    Archive(#[from] ArchiveError),
    #[error("partition {partition}: leader epoch {epoch} is older than the current {current}")]
    FencedLeaderEpoch { partition: String, epoch: i32, current: i32 },
    #[error("partition {partition}: leader epoch {epoch} is newer than the current {current}")]
    UnknownLeaderEpoch { partition: String, epoch: i32, current: i32 },
    #[error("partition {0} is unavailable: {1}")]
    Unavailable(String, String),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("the node's metadata store failed: {0}")]
    Metadata(String),
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
}
