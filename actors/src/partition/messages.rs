//! The domain messages a partition actor answers. Handlers in `src/` turn
//! Kafka requests into these; actors never see wire types.

use std::path::PathBuf;

use actix::prelude::*;
use bytes::Bytes;
use silt_tiering::{AppendResult, LogConfig, ReadResult};

use crate::error::Error;

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
