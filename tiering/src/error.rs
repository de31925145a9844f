//! Errors of the tiered log. Variants carry the context an operator needs.

use std::path::PathBuf;

/// A record batch that fails validation. Invalid input, never a bug.
/// Exhaustive on purpose: `src/` maps every variant to a Kafka error code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch is truncated: needs {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("record batch has magic {magic}; only magic 2 is supported")]
    UnsupportedMagic { magic: i8 },
    #[error("record batch CRC mismatch: header says {stored:#010x}, data gives {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch length {length} is invalid")]
    InvalidLength { length: i32 },
    #[error("record batch declares {records_count} records but a last offset delta of {last_offset_delta}")]
    InvalidRecordCount { records_count: i32, last_offset_delta: i32 },
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("produce request carried no record batch")]
    Empty,
    #[error("records could not be decoded: {reason}")]
    Undecodable { reason: String },
    #[error("a compacted topic cannot accept a record without a key (record {offset_delta} of its batch)")]
    MissingKey { offset_delta: i64 },
}

/// Errors of a partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: i64, log_start_offset: i64, log_end_offset: i64 },
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current_epoch}")]
    InvalidProducerEpoch { producer_id: i64, epoch: i16, current_epoch: i16 },
    #[error("producer {producer_id} sent sequence {sequence}, expected {expected}")]
    OutOfOrderSequence { producer_id: i64, sequence: i32, expected: i32 },
    #[error("transactional record batches are not supported")]
    TransactionsUnsupported,
    #[error("a batch from the leader starts at offset {base_offset}, but the follower's log ends at {expected}")]
    UnexpectedReplicaOffset { expected: i64, base_offset: i64 },
    #[error("a batch from the leader at offset {base_offset} has leader epoch {epoch}, older than the follower's latest epoch {latest}")]
    ReplicaEpochWentBack { base_offset: i64, epoch: i32, latest: i32 },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint file {path} is corrupt: {reason}")]
    CorruptCheckpoint { path: PathBuf, reason: String },
    #[error("segment {path} is corrupt: {reason}")]
    CorruptSegment { path: PathBuf, reason: String },
    #[error("the cleaning pass was cancelled (the node is shutting down)")]
    CleaningCancelled,
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }
}

/// Errors of the archive (the object-storage tier).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid archive location {url:?}: {reason}")]
    InvalidLocation { url: String, reason: String },
    #[error("object store error on {path}: {source}")]
    Store { path: String, source: object_store::Error },
    #[error("archive object {path} does not exist")]
    Missing { path: String },
    #[error("Parquet error: {source}")]
    Parquet { source: parquet::errors::ParquetError },
    #[error("cannot encode a segment for the archive: {reason}")]
    Encode { reason: String },
    #[error("an archived file is unreadable: {reason}")]
    Decode { reason: String },
    #[error("archive file {path} is unreadable: {source}")]
    Unreadable { path: String, source: parquet::errors::ParquetError },
    #[error("archive file {path} is corrupt: {reason}")]
    CorruptFile { path: String, reason: String },
    #[error("the Parquet decoder failed on archive file {path} (a panic, contained): {reason}")]
    DecoderPanicked { path: String, reason: String },
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("{path} holds the archive of another topic id ({found}, this topic is {expected}); it is left untouched: move it away to archive this partition")]
    ForeignManifest { path: String, found: String, expected: String },
    #[error("archive manifest {path} is corrupt: {reason}")]
    CorruptManifest { path: String, reason: String },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the archive task failed: {reason}")]
    Task { reason: String },
    #[error("archive manifest {path} was written by leader epoch {stored}, newer than this writer's {epoch}: this node no longer archives the partition")]
    Fenced { path: String, stored: i32, epoch: i32 },
    #[error("archive manifest {path} changed under this writer (leader epoch {stored}); reloaded, the change is retried")]
    ManifestChanged { path: String, stored: i32 },
    #[error("archive manifest {legacy} (the first layout's) lists offsets up to {legacy_end}, past the end {current_end} of {current}; both are kept: move the one that is wrong away")]
    ManifestsDisagree { legacy: String, current: String, legacy_end: i64, current_end: i64 },
    #[error("archive manifest {path} was opened read-only")]
    ReadOnly { path: String },
}

impl ArchiveError {
    pub(crate) fn parquet(source: parquet::errors::ParquetError) -> ArchiveError {
        ArchiveError::Parquet { source }
    }

    pub(crate) fn store(path: &object_store::path::Path) -> impl FnOnce(object_store::Error) -> ArchiveError + '_ {
        move |source| match source {
            object_store::Error::NotFound { .. } => ArchiveError::Missing { path: path.to_string() },
            source => ArchiveError::Store { path: path.to_string(), source },
        }
    }
}
