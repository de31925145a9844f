//! Silt's tiered log: everything a partition keeps on disk.
//!
//! The hot tier lives here today: a partition's log is a directory of segment
//! files holding record batches exactly as producers sent them (after offset
//! assignment), each with a sparse offset index and a time index. Sealed
//! segments are archived to object storage as Parquet ([`archive`]), which
//! serves reads below the local log start.
//!
//! | module | owns |
//! |---|---|
//! | [`batch`] | the record batch (magic v2) format: the one place batches are parsed |
//! | [`index`] | the sparse offset and time indexes of one segment |
//! | [`segment`] | one segment: its `.log` file and indexes |
//! | [`log`] | a partition's ordered segments: append (as leader or follower), read, truncate, retention, cleaning swaps |
//! | [`cleaner`] | log compaction: the offset map and the rewrite of sealed segments |
//! | [`checkpoint`] | small crash-safe files (leader epochs, offsets) |
//! | [`producer_state`] | idempotent-producer sequence tracking |
//! | [`archive`] | sealed segments in object storage as Parquet: upload, manifest, remote reads |
//! | [`config`] | a partition log's settings |
//! | [`error`] | the crate's error type |

pub mod archive;
pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod config;
pub mod error;
pub mod index;
pub mod log;
pub mod producer_state;
pub mod segment;

pub use config::LogConfig;
pub use error::{ArchiveError, BatchError, LogError};
pub use log::{AppendResult, PartitionLog, ReadResult, RecoveryReport, ReplicaAppend};
