//! The metadata quorum, KRaft-like, on openraft: the records of the replicated
//! metadata log, the [`MetadataImage`] they build, and the on-disk stores
//! openraft runs on (see docs/metadata-quorum.md).
//!
//! | module | owns |
//! |---|---|
//! | [`records`] | [`MetadataRecord`] and the [`MetadataBatch`] a log entry carries |
//! | [`image`] | [`MetadataImage`]: the metadata as a value, and how records change it |
//! | [`scram`] | SCRAM credentials: the values kept per user and mechanism |
//! | [`reassignment`] | partition reassignment (KIP-455): the controller's decisions |
//! | [`log_store`] | [`LogStore`]: openraft's log on local disk |
//! | [`state_machine`] | [`StateMachineStore`]: the image under openraft, with snapshots on disk |
//! | [`error`] | [`StoreError`]: what the stores' files can do wrong |
//!
//! No network lives here: the node-to-node transport is an edge in `src/`,
//! handed down behind openraft's `RaftNetwork`.

use std::io::Cursor;

pub mod error;
pub mod image;
pub mod log_store;
pub mod reassignment;
pub mod records;
pub mod scram;
pub mod state_machine;

pub use error::StoreError;
pub use image::{ApplyError, BrokerRegistration, MetadataImage, PartitionImage, TopicImage};
pub use log_store::LogStore;
pub use reassignment::ReassignmentError;
pub use records::{BrokerId, ConfigResource, Endpoint, LeaderChange, MetadataBatch, MetadataRecord, MetadataResponse, ProducerIdBlock};
pub use scram::{ScramCredential, ScramCredentialError, ScramCredentials, ScramMechanism};
pub use state_machine::{AppliedState, StateMachineStore};

openraft::declare_raft_types!(
    /// openraft's types for the metadata quorum: entries carry a
    /// [`MetadataBatch`], voters are numbered by their `node.id`.
    pub MetadataTypeConfig:
        D = MetadataBatch,
        R = MetadataResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// Opens the log store and the state machine under `dir` (the data dir's
/// `__cluster_metadata` folder).
pub async fn open(dir: std::path::PathBuf) -> Result<(LogStore, StateMachineStore), StoreError> {
    let log = LogStore::open(dir.clone()).await?;
    let state_machine = StateMachineStore::open(dir).await?;
    Ok((log, state_machine))
}

#[cfg(test)]
mod single_node_tests;
#[cfg(test)]
mod tests;
