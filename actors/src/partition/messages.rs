//! The domain messages a partition actor answers. Handlers in `src/` turn
//! Kafka requests into these; actors never see wire types.

use std::path::PathBuf;

use actix::prelude::*;
use bytes::Bytes;
use silt_tiering::{AppendResult, LogConfig, ReadResult};

use crate::error::Error;
use crate::metadata::quorum::BrokerId;

/// How many replicas must have a write before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequiredAcks {
    /// acks=0: the producer waits for nothing.
    None,
    /// acks=1: the leader has written it.
    Leader,
    /// acks=all: every in-sync replica has it (subject to min.insync.replicas).
    All,
}

/// Append a producer's record batches.
#[derive(Debug, Message)]
#[rtype(result = "Result<AppendResult, Error>")]
pub struct Append {
    pub records: Bytes,
    pub acks: RequiredAcks,
}

/// Read whole batches from `offset`, below the high watermark.
#[derive(Debug, Message)]
#[rtype(result = "Result<ReadResult, Error>")]
pub struct Read {
    pub offset: i64,
    pub max_bytes: usize,
}

/// Which offset a ListOffsets query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    MaxTimestamp,
    /// The first offset whose timestamp is >= this.
    Timestamp(i64),
    EarliestLocal,
    LatestTiered,
}

/// Resolve an [`OffsetSpec`] to `(offset, timestamp)`; `None` when no record matches.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<(i64, i64)>, Error>")]
pub struct ListOffset(pub OffsetSpec);

/// Advance the log start offset (DeleteRecords). Answers the new low watermark.
#[derive(Debug, Message)]
#[rtype(result = "Result<i64, Error>")]
pub struct DeleteRecords {
    pub before_offset: i64,
}

/// Apply new topic configs.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Reconfigure {
    pub log: LogConfig,
    pub min_insync_replicas: i32,
}

/// Flush and close the log for a clean shutdown; the actor then refuses work.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Close;

/// Close the log for good (its topic is being deleted). Answers the log's directory.
#[derive(Debug, Message)]
#[rtype(result = "Result<PathBuf, Error>")]
pub struct Retire;

/// A consumer's read with its view of the leader epoch (Fetch's
/// `current_leader_epoch`; `None` is Kafka's -1: no check).
#[derive(Debug, Message)]
#[rtype(result = "Result<ReadResult, Error>")]
pub struct CheckedRead {
    pub read: Read,
    pub current_leader_epoch: Option<i32>,
}

/// A ListOffsets query with the asker's view of the leader epoch.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<(i64, i64)>, Error>")]
pub struct CheckedListOffset {
    pub spec: OffsetSpec,
    pub current_leader_epoch: Option<i32>,
}

/// A follower's fetch (the Fetch API with a replica id): it reads up to the
/// log end, not the high watermark, and tells the leader the follower's log
/// end (`offset`), which may move the high watermark.
#[derive(Debug, Message)]
#[rtype(result = "Result<ReadResult, Error>")]
pub struct ReplicaFetch {
    pub replica: BrokerId,
    pub offset: i64,
    pub max_bytes: usize,
    pub current_leader_epoch: Option<i32>,
}

/// A follower's fetch at the leader's log end: nothing to read, but the
/// follower is caught up, and its position may move the high watermark.
/// Told, not asked (see [`PartitionHandle::tell`](super::PartitionHandle::tell)):
/// a follower copies every partition its leader leads, mostly idle ones, and
/// a read per idle partition per fetch cost more than the copying. The
/// fetch answers without waiting; a refusal (a stale epoch, not a replica) is
/// dropped here and answered to the follower's next fetch that has records
/// to read, which asks with [`ReplicaFetch`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FollowerAtLogEnd {
    pub replica: BrokerId,
    pub offset: i64,
    pub current_leader_epoch: Option<i32>,
}

/// Store batches fetched from the leader, keeping their offsets and epochs,
/// and learn the leader's high watermark and log start. Empty `records`
/// only moves the high watermark.
#[derive(Debug, Message)]
#[rtype(result = "Result<ReplicaPosition, Error>")]
pub struct AppendAsFollower {
    pub records: Bytes,
    pub leader_hw: i64,
    pub leader_log_start: i64,
}

/// Cut a follower's log back to at most this offset (a divergent tail).
#[derive(Debug, Message)]
#[rtype(result = "Result<ReplicaPosition, Error>")]
pub struct TruncateTo(pub i64);

/// Empty a follower's log and start it at this offset: the leader's log
/// starts past this replica's log end (it deleted those records, or keeps them
/// only in the archive).
#[derive(Debug, Message)]
#[rtype(result = "Result<ReplicaPosition, Error>")]
pub struct StartAt(pub i64);

/// Where this replica's log stands, for its fetcher.
#[derive(Debug, Message)]
#[rtype(result = "Result<ReplicaPosition, Error>")]
pub struct GetReplicaPosition;

/// A replica's log end, high watermark, log start and latest leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaPosition {
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub latest_epoch: Option<i32>,
}

/// The leader's OffsetForLeaderEpoch answer to this follower's latest epoch:
/// the follower truncates where its log and the leader's diverge (Kafka's
/// `AbstractFetcherThread.getOffsetTruncationState`, KIP-101 / KIP-279).
/// `leader_epoch`/`end_offset` of -1 are Kafka's UNDEFINED answers.
#[derive(Debug, Message)]
#[rtype(result = "Result<Truncation, Error>")]
pub struct TruncateToLeader {
    pub leader_epoch: i32,
    pub end_offset: i64,
}

/// Where a follower stands after [`TruncateToLeader`]; when `completed` is
/// false the follower does not know the epoch the leader answered with and
/// asks again with its own latest epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    pub position: ReplicaPosition,
    pub completed: bool,
}
