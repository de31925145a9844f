//! The errors of the metadata quorum's on-disk stores. openraft receives them
//! wrapped in its `StorageError`, which keeps the message and the source.

use std::path::PathBuf;

use silt_tiering::LogError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("metadata store file {path} could not be read or written: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("metadata store checkpoint: {0}")]
    Checkpoint(#[from] LogError),
    #[error("metadata log file {path} is corrupt at byte {pos}: {reason}")]
    Corrupt { path: PathBuf, pos: u64, reason: String },
    #[error("metadata log entry {index} is not in the log")]
    Missing { index: u64 },
    #[error("metadata log entry {index} does not follow the last entry {last}")]
    NotContiguous { index: u64, last: u64 },
    #[error("metadata log entry {index} is {bytes} bytes, over the frame limit")]
    EntryTooLarge { index: u64, bytes: usize },
    #[error("cannot encode or decode the metadata {what}: {source}")]
    Codec { what: &'static str, source: serde_json::Error },
    #[error("the metadata store's lock was poisoned by an earlier panic")]
    Poisoned,
    #[error("the metadata store's blocking task failed: {0}")]
    Blocking(String),
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    }

    pub(crate) fn codec(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
        move |source| StoreError::Codec { what, source }
    }
}
