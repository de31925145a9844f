//! The node-to-node messages: one [`Request`] per frame from the caller, one
//! [`Response`] per frame back, on the same connection, in order.
//!
//! Raft's three RPCs carry openraft's own request and result types; the broker
//! session messages carry the controller's domain types
//! (`silt_actors::metadata::controller`); a forwarded proposal carries a
//! [`MetadataBatch`]. Every response variant answers exactly one request
//! variant, and a node that cannot serve a request (it has no controller role,
//! for instance) says so with [`Response::Unsupported`] instead of closing the
//! connection.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use serde::{Deserialize, Serialize};
use silt_actors::metadata::controller::{BrokerHeartbeatReply, BrokerHeartbeatRequest, BrokerRegistrationReply, BrokerRegistrationRequest, ControllerError};
use silt_actors::metadata::quorum::{MetadataBatch, MetadataResponse, MetadataTypeConfig};

type C = MetadataTypeConfig;

/// A call from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Raft log replication and leader heartbeats.
    AppendEntries(AppendEntriesRequest<C>),
    /// A Raft election.
    Vote(VoteRequest<u64>),
    /// One chunk of a Raft snapshot.
    InstallSnapshot(InstallSnapshotRequest<C>),
    /// A broker joins (to the active controller).
    RegisterBroker(BrokerRegistrationRequest),
    /// A broker is alive (to the active controller).
    BrokerHeartbeat(BrokerHeartbeatRequest),
    /// A voter that does not lead the quorum hands a proposal to the one that does.
    ForwardProposal(MetadataBatch),
}

impl Request {
    /// The request's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::AppendEntries(_) => "AppendEntries",
            Request::Vote(_) => "Vote",
            Request::InstallSnapshot(_) => "InstallSnapshot",
            Request::RegisterBroker(_) => "RegisterBroker",
            Request::BrokerHeartbeat(_) => "BrokerHeartbeat",
            Request::ForwardProposal(_) => "ForwardProposal",
        }
    }
}

/// Why a forwarded proposal was not committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    #[error("node {node_id} does not lead the metadata quorum (the leader is {leader:?})")]
    NotLeader { node_id: u64, leader: Option<u64> },
    #[error("the metadata quorum did not commit the proposal: {0}")]
    Failed(String),
}

/// A forwarded proposal's outcome and the log index it was committed at, so
/// the proposer can wait until its own image has applied that far before it
/// answers from that image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedCommit {
    pub response: MetadataResponse,
    pub log_index: u64,
}

/// The answer to one [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    RegisterBroker(Result<BrokerRegistrationReply, ControllerError>),
    BrokerHeartbeat(Result<BrokerHeartbeatReply, ControllerError>),
    ForwardProposal(Result<ForwardedCommit, ForwardError>),
    /// This node does not serve that request (the reason says why).
    Unsupported(String),
}

impl Response {
    /// The response's name, for errors about an unexpected answer.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::AppendEntries(_) => "AppendEntries",
            Response::Vote(_) => "Vote",
            Response::InstallSnapshot(_) => "InstallSnapshot",
            Response::RegisterBroker(_) => "RegisterBroker",
            Response::BrokerHeartbeat(_) => "BrokerHeartbeat",
            Response::ForwardProposal(_) => "ForwardProposal",
            Response::Unsupported(_) => "Unsupported",
        }
    }
}
