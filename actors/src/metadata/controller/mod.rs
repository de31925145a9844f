//! The active controller's broker sessions, KRaft-like: brokers register and
//! heartbeat to the active controller, which writes only the consequences to
//! the metadata log (`RegisterBroker`, `UnfenceBroker` once a broker has caught
//! up, `FenceBroker` with the leadership moves when its session expires).
//!
//! | module | owns |
//! |---|---|
//! | [`sessions`] | [`BrokerSessions`]: the session rules as pure logic over a clock value |
//! | [`task`] | [`SessionController`]: the task that runs them against the quorum |
//!
//! Heartbeats are not records (docs/metadata-quorum.md): sessions live in the
//! active controller's memory only. A controller that has just become active
//! therefore knows no heartbeat times and gives every registered broker a fresh
//! session before it fences anyone, as KRaft's `BrokerHeartbeatManager` does.
//! The request and reply types here are the domain's; the node-to-node
//! transport in `src/cluster` carries them.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::quorum::{ApplyError, BrokerId, Endpoint, MetadataBatch, MetadataResponse};

pub mod sessions;
pub mod task;

pub use sessions::{BrokerSessions, HeartbeatOutcome};
pub use task::{SessionController, SessionControllerHandle, SessionOptions};

/// A broker (re)starting asks to join: Kafka's `BrokerRegistrationRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistrationRequest {
    pub broker_id: BrokerId,
    /// Random per process start, so the controller can tell incarnations apart.
    pub incarnation_id: Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// A broker that is not a voter (`roles = ["broker"]`) receives the
    /// metadata log at this node-to-node address: the controller adds it to
    /// the quorum as a learner (an observer, in KRaft's words) first.
    #[serde(default)]
    pub learner_address: Option<String>,
}

/// The registration was committed: the broker's epoch is the record's log index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistrationReply {
    pub broker_epoch: u64,
}

/// A registered broker is alive: Kafka's `BrokerHeartbeatRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeatRequest {
    pub broker_id: BrokerId,
    pub broker_epoch: u64,
    /// The last metadata log index the broker has applied. The broker is caught
    /// up (and may be unfenced) once this reaches its own registration record.
    pub metadata_offset: u64,
    /// The broker is stopping (SIGTERM): move its leaderships and take it out
    /// of every ISR first (Kafka's controlled shutdown, `WantShutDown`).
    #[serde(default)]
    pub want_shutdown: bool,
}

/// The broker's standing after a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeatReply {
    /// Fenced brokers lead nothing; an unfenced one may.
    pub fenced: bool,
    /// Answer to `want_shutdown`: the broker leads nothing and is in no ISR it
    /// need not be in, so it may stop now (Kafka's `ShouldShutDown`).
    #[serde(default)]
    pub should_shut_down: bool,
}

/// Why the controller did not serve a registration or heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    #[error("this node is not the active controller (the active controller is {leader:?})")]
    NotController { leader: Option<u64> },
    #[error("broker {broker_id} must register again: {reason}")]
    RegistrationRequired { broker_id: BrokerId, reason: String },
    #[error("broker {broker_id} is registered by another incarnation whose session is still live; retry once it expires (broker.session.timeout.ms)")]
    DuplicateRegistration { broker_id: BrokerId },
    #[error("broker {broker_id} was unregistered by an operator; it may register again once restarted")]
    Unregistered { broker_id: BrokerId },
    #[error("the metadata quorum rejected the change: {0}")]
    Rejected(ApplyError),
    #[error("the metadata quorum did not commit the change: {0}")]
    Unavailable(String),
}

/// Why a proposal did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the leader of the metadata quorum (the leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("the proposal did not commit: {0}")]
    Failed(String),
}

/// What the session controller needs from the metadata quorum. Its rules:
/// `propose` answers only once the batch is committed and applied to the image
/// [`SessionController`] watches, and `leader` is this voter's current view of
/// the quorum leader (the active controller).
pub trait ControllerQuorum: Send + Sync + 'static {
    /// Commits `batch` through the quorum (this voter must lead it).
    fn propose(&self, batch: MetadataBatch) -> BoxFuture<'static, Result<MetadataResponse, ProposeError>>;
    /// The quorum leader as this voter knows it.
    fn leader(&self) -> Option<u64>;
    /// Makes `node_id` a learner of the quorum at `address` (this voter must
    /// lead it), unless it already is one there; a voter is left as it is.
    fn add_learner(&self, node_id: u64, address: String) -> BoxFuture<'static, Result<(), ProposeError>>;
    /// The learners of the quorum's current membership, as this voter knows it.
    fn learners(&self) -> Vec<u64>;
    /// Takes learner `node_id` out of the membership (this voter must lead
    /// the quorum); a voter is never removed this way.
    fn remove_learner(&self, node_id: u64) -> BoxFuture<'static, Result<(), ProposeError>>;
}

#[cfg(test)]
mod tests;
