//! The domain errors of Silt's actors. `src/` maps each variant to the Kafka
//! error code a client expects, in one exhaustive match.

use std::path::PathBuf;

use silt_tiering::{ArchiveError, LogError};

use crate::TopicPartition;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("topic or partition {0} does not exist")]
    UnknownTopicOrPartition(String),
    #[error("topic id {0} does not exist")]
    UnknownTopicId(uuid::Uuid),
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    /// Kafka's wording (BROKER_ID_NOT_REGISTERED).
    #[error("Broker ID {0} is not currently registered")]
    BrokerIdNotRegistered(i32),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic { name: String, reason: String },
    /// A whole sentence, Kafka's where Kafka has one ("Topic already has 3 partition(s).").
    #[error("{0}")]
    InvalidPartitions(String),
    /// Kafka's wording, e.g. "Replication factor: 3 larger than available brokers: 1."
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// An explicit replica assignment Kafka would refuse too.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("invalid config {key}={value:?}: {reason}")]
    InvalidConfig { key: String, value: String, reason: String },
    #[error("acks=all needs {required} in-sync replicas (min.insync.replicas) but {available} are in sync")]
    NotEnoughReplicas { required: i32, available: i32 },
    #[error("the batch was written but the ISR shrank to {available}, below min.insync.replicas {required}, before it was committed")]
    NotEnoughReplicasAfterAppend { required: i32, available: i32 },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("archive: {0}")]
    Archive(#[from] ArchiveError),
    #[error("partition {partition}: leader epoch {epoch} is older than the current {current}")]
    FencedLeaderEpoch { partition: String, epoch: i32, current: i32 },
    #[error("partition {partition}: leader epoch {epoch} is newer than the current {current}")]
    UnknownLeaderEpoch { partition: String, epoch: i32, current: i32 },
    /// An ISR change based on an older partition epoch (Kafka's INVALID_UPDATE_VERSION).
    #[error("partition {partition}: partition epoch {epoch} is not the current {current}")]
    StalePartitionEpoch { partition: String, epoch: i32, current: i32 },
    /// This broker holds no replica of the partition, or does not lead it
    /// (`reason` says which); `leader` is the leader it knows of, if any: the
    /// new-leader hint of the Kafka answer.
    #[error("this broker is not the leader of partition {partition}: {reason} (leader: {leader:?})")]
    NotLeaderOrFollower { partition: String, leader: Option<i32>, reason: &'static str },
    #[error("partition {0} is unavailable: {1}")]
    Unavailable(String, String),
    /// A replica fetched below the leader's local log start, from records the
    /// leader keeps only in the archive: it starts at the local start instead.
    #[error("offset {offset} of partition {partition} is in the archive only; the local log starts at {local_log_start_offset}")]
    OffsetMovedToTieredStorage { partition: String, offset: i64, local_log_start_offset: i64 },
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("the node's metadata store failed: {0}")]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
}

/// Failures of the node's metadata store: the data directory, its lock, the
/// catalog and the clean-shutdown marker. Each keeps its cause as `source`.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("data directory {path} is in use by another process")]
    Locked { path: PathBuf },
    #[error("{path} is not a valid catalog: {source}")]
    CorruptCatalog { path: PathBuf, source: serde_json::Error },
    #[error("{path} has unknown version {version}")]
    UnknownCatalogVersion { path: PathBuf, version: u32 },
    /// Writing the catalog or the clean-shutdown marker (the path is in the source).
    #[error("cannot write {what}: {source}")]
    Write { what: &'static str, source: LogError },
    #[error("{path} is not a valid meta.properties: {reason}")]
    InvalidMetaProperties { path: PathBuf, reason: String },
    #[error("data directory {path} belongs to node id {stored}, but this node is configured as node id {configured} (node.id)")]
    OtherNode { path: PathBuf, stored: i32, configured: i32 },
    #[error("data directory {path}: meta.properties names cluster {meta_properties} but meta/catalog.json names cluster {catalog}")]
    ClusterMismatch { path: PathBuf, meta_properties: String, catalog: String },
    #[error("a metadata task failed: {source}")]
    Task { source: tokio::task::JoinError },
    #[error("partitions failed to close: {}", describe_failures(failed))]
    PartitionsNotClosed { failed: Vec<(TopicPartition, Error)> },
    #[error("metadata quorum store: {0}")]
    Store(#[from] crate::metadata::quorum::StoreError),
    #[error("metadata quorum: cannot {action}: {reason}")]
    Raft { action: &'static str, reason: String },
    /// This node does not lead the metadata quorum and has no way to forward.
    #[error("this node is not the active controller (leader: {leader:?})")]
    NotController { leader: Option<u64> },
    #[error("the metadata change was not committed within {after:?}")]
    ProposalTimeout { after: std::time::Duration },
    /// The quorum refused the change (replicated, so every voter refused it).
    #[error("the metadata change was refused: {0}")]
    Rejected(crate::metadata::quorum::ApplyError),
    #[error("catalog.json could not be migrated into the metadata log: {reason}")]
    Migration { reason: String },
}

impl MetadataError {
    /// `map_err` for an I/O failure of `action` on `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| MetadataError::Io { action, path, source }.into()
    }
}

fn describe_failures(failed: &[(TopicPartition, Error)]) -> String {
    failed.iter().map(|(tp, e)| format!("{tp}: {e}")).collect::<Vec<_>>().join("; ")
}
