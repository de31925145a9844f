//! The records of the replicated metadata log, KRaft-like: each is one change
//! to the [`MetadataImage`](super::MetadataImage), and a [`MetadataBatch`] of
//! them is one openraft log entry, applied all or nothing.
//!
//! Records carry decisions, not requests: the active controller chooses the
//! replicas, the leader and the ISR, then writes what it chose. Applying a record
//! only checks that it is consistent with the image (so a stale or buggy proposal
//! is rejected the same way on every voter) and never consults a clock, a random
//! source or the local node: the image is a pure function of the log.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::scram::{ScramCredential, ScramMechanism};

/// A broker's id: Kafka's `node.id` (int32 on the wire).
pub type BrokerId = i32;

/// The most records one batch may hold. A topic creation is one `Topic`, one
/// `Partition` per partition and its configs, so this bounds partitions per
/// creation as well (Kafka's controller has a similar cap on a batch).
pub const BATCH_RECORDS_MAX: usize = 10_000;

/// The most producer ids one `ProducerIds` record may hand out (Kafka's blocks
/// are 1,000 ids).
pub const PRODUCER_ID_BLOCK_MAX: i64 = 1_000_000;

/// One log entry's worth of records, applied atomically: if any record is
/// rejected, none of the batch's changes are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

impl MetadataBatch {
    /// A batch of one record.
    pub fn one(record: MetadataRecord) -> Self {
        Self { records: vec![record] }
    }
}

/// A listener a broker advertises (Kafka's `BrokerEndpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
}

/// A partition's new leader in a [`MetadataRecord::PartitionChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderChange {
    /// This broker leads from now on (it must be in the ISR and unfenced).
    Elect(BrokerId),
    /// No replica can lead: the partition is offline (Kafka's leader -1).
    Offline,
}

/// What a [`MetadataRecord::Config`] sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigResource {
    /// The cluster-wide default (Kafka's broker resource with an empty name).
    Cluster,
    Broker(BrokerId),
    Topic(String),
}

/// One change to the metadata image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker (re)starts and registers. Its broker epoch becomes the log index
    /// of this record, so registrations of an older incarnation are stale. A
    /// registered broker starts fenced, as in KRaft: it leads nothing until the
    /// controller unfences it.
    RegisterBroker { broker_id: BrokerId, incarnation_id: Uuid, endpoints: Vec<Endpoint>, rack: Option<String> },
    /// The broker's session expired (it stopped heartbeating) or it shut down.
    /// Heartbeats themselves are not records: the active controller keeps the
    /// session timers and writes only this consequence. Moving the broker's
    /// leaderships is the controller's job, as `PartitionChange` records (see
    /// [`MetadataImage::fence_changes`](super::MetadataImage::fence_changes)).
    FenceBroker { broker_id: BrokerId, broker_epoch: u64 },
    /// The broker heartbeats and has caught up with the metadata log.
    UnfenceBroker { broker_id: BrokerId, broker_epoch: u64 },
    /// An operator removed the broker (Kafka's UnregisterBroker, KIP-500):
    /// its registration goes, and that incarnation may not register again
    /// (a restart, with a new incarnation, may). It must lead nothing: the
    /// controller writes its leader and ISR moves first, in the same batch
    /// (see [`MetadataImage::unregister_batches`](super::MetadataImage::unregister_batches)).
    /// The partitions keep it in their replica lists, as Kafka's do.
    UnregisterBroker { broker_id: BrokerId, broker_epoch: u64 },
    /// A topic with no partitions yet; `Partition` records follow in the batch.
    Topic { name: String, topic_id: Uuid },
    /// A new partition of an existing topic: partition index = the topic's
    /// current partition count. Leader epoch and partition epoch start at 0.
    Partition { topic_id: Uuid, partition: i32, replicas: Vec<BrokerId>, isr: Vec<BrokerId>, leader: Option<BrokerId> },
    /// A leader, ISR or replica-set change. Each bumps the partition epoch; a
    /// leader change also bumps the leader epoch.
    PartitionChange { topic_id: Uuid, partition: i32, leader: Option<LeaderChange>, isr: Option<Vec<BrokerId>>, replicas: Option<Vec<BrokerId>> },
    /// A leader's ISR change (Kafka's AlterPartition), made against the
    /// leader and partition epochs it names: applied only if both are still
    /// the partition's, so a deposed leader's or a stale request's change is
    /// refused on every voter alike. It bumps the partition epoch.
    AlterPartition { topic_id: Uuid, partition: i32, leader_epoch: i32, partition_epoch: i32, isr: Vec<BrokerId> },
    /// A partition's whole assignment during a reassignment (KIP-455): its
    /// start, a change or cancellation of it, or its completion. `replicas`
    /// is the full set (target first, then those still to be removed), and
    /// `adding` and `removing` are the ongoing reassignment (both empty: none).
    /// Applied only at the partition epoch it names, so a decision made on a
    /// stale image is refused; it bumps the partition epoch, and the leader
    /// epoch if the leader changes.
    Reassignment {
        topic_id: Uuid,
        partition: i32,
        partition_epoch: i32,
        replicas: Vec<BrokerId>,
        adding: Vec<BrokerId>,
        removing: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        leader: Option<BrokerId>,
    },
    /// The topic and all its partitions and configs go away.
    RemoveTopic { topic_id: Uuid },
    /// Set (`Some`) or delete (`None`) one config key.
    Config { resource: ConfigResource, name: String, value: Option<String> },
    /// Hand a block of `block_size` producer ids to a broker. The block starts at
    /// the image's next producer id, which the record moves forward: every id is
    /// handed out once across the cluster's life.
    ProducerIds { broker_id: BrokerId, broker_epoch: u64, block_size: i64 },
    /// Set (`Some`) or delete (`None`) one user's SCRAM credential for one
    /// mechanism (Kafka's `UserScramCredentialRecord` and its removal).
    /// Deleting a credential that does not exist is refused.
    ScramCredential { user: String, mechanism: ScramMechanism, credential: Option<ScramCredential> },
}

/// A block of producer ids `[first_producer_id, first_producer_id + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub broker_id: BrokerId,
    pub first_producer_id: i64,
    pub size: i64,
}

/// The answer to an applied batch, returned to whoever proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataResponse {
    /// Every record was applied. `producer_ids` holds the blocks handed out by
    /// the batch's `ProducerIds` records, in order; `broker_epochs` the epochs
    /// given by its `RegisterBroker` records.
    Applied { producer_ids: Vec<ProducerIdBlock>, broker_epochs: Vec<(BrokerId, u64)> },
    /// The batch was rejected as a whole and changed nothing.
    Rejected { record: usize, error: super::ApplyError },
    /// A log entry that carried no records (a blank or membership entry).
    Empty,
}
