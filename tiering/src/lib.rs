//! Silt's tiered log: everything a partition keeps on disk.
//!
//! The hot tier lives here today: a partition's log is a directory of segment
//! files holding record batches exactly as producers sent them (after offset
//! assignment), each with a sparse offset index and a time index. Object-storage
//! archiving of sealed segments (Parquet) arrives in a later module of this crate.
//!
//! | module | owns |
//! |---|---|
//! | [`batch`] | the record batch (magic v2) format: the one place batches are parsed |
//! | [`index`] | the sparse offset and time indexes of one segment |
//! | [`segment`] | one segment: its `.log` file and indexes |
//! | [`log`] | a partition's ordered segments: append, read, truncate, retention |
//! | [`checkpoint`] | small crash-safe files (leader epochs, offsets) |
//! | [`producer_state`] | idempotent-producer sequence tracking |
//! | [`config`] | a partition log's settings |
//! | [`error`] | the crate's error type |

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod index;
pub mod log;
pub mod producer_state;
pub mod segment;

pub use config::LogConfig;
pub use error::{BatchError, LogError};
pub use log::{AppendResult, PartitionLog, ReadResult, RecoveryReport};
