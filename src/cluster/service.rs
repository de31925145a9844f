//! What a voter answers on the node-to-node listener: Raft's RPCs go to its
//! openraft instance, broker registrations and heartbeats to its session
//! controller, forwarded proposals to `client_write`. Also the calling side of
//! the two non-Raft conversations: [`forward_proposal`] and the
//! [`ControllerQuorum`] a voter's session controller runs on.
//!
//! A forwarded proposal is committed here only if this voter leads; otherwise
//! the answer names the leader it knows and the caller decides whether to try
//! again. Nothing is forwarded twice, so two voters with different views of
//! the leader cannot bounce a proposal between them.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use openraft::{BasicNode, ChangeMembers, Raft};
use silt_actors::metadata::controller::{ControllerQuorum, ProposeError, SessionControllerHandle};
use silt_actors::metadata::quorum::{MetadataBatch, MetadataResponse, MetadataTypeConfig};

use super::client::{CallError, PeerClient};
use super::message::{ForwardError, ForwardedCommit, Request, Response};
use super::server::Dispatch;

type C = MetadataTypeConfig;

/// The listener's handlers on a metadata voter.
pub struct VoterService {
    node_id: u64,
    raft: Raft<C>,
    sessions: Option<SessionControllerHandle>,
}

impl VoterService {
    /// `sessions` is the node's session controller; without one, broker
    /// registrations and heartbeats are answered `Unsupported`.
    pub fn new(node_id: u64, raft: Raft<C>, sessions: Option<SessionControllerHandle>) -> Self {
        VoterService { node_id, raft, sessions }
    }
}

/// Commits `batch` on `raft` if it leads; the error names the leader otherwise.
pub async fn commit(raft: &Raft<C>, node_id: u64, batch: MetadataBatch) -> Result<ForwardedCommit, ForwardError> {
    match raft.client_write(batch).await {
        Ok(written) => Ok(ForwardedCommit { response: written.data, log_index: written.log_id.index }),
        Err(e) => match e.forward_to_leader::<openraft::BasicNode>() {
            Some(forward) => Err(ForwardError::NotLeader { node_id, leader: forward.leader_id }),
            None => Err(ForwardError::Failed(e.to_string())),
        },
    }
}

impl Dispatch for VoterService {
    fn dispatch(&self, request: Request) -> BoxFuture<'static, Response> {
        let raft = self.raft.clone();
        let node_id = self.node_id;
        match request {
            Request::AppendEntries(rpc) => async move { Response::AppendEntries(raft.append_entries(rpc).await) }.boxed(),
            Request::Vote(rpc) => async move { Response::Vote(raft.vote(rpc).await) }.boxed(),
            Request::InstallSnapshot(rpc) => async move { Response::InstallSnapshot(raft.install_snapshot(rpc).await) }.boxed(),
            Request::ForwardProposal(batch) => async move { Response::ForwardProposal(commit(&raft, node_id, batch).await) }.boxed(),
            Request::RegisterBroker(registration) => match self.sessions.clone() {
                Some(sessions) => async move { Response::RegisterBroker(sessions.register(registration).await) }.boxed(),
                None => unsupported("this node runs no session controller"),
            },
            Request::BrokerHeartbeat(heartbeat) => match self.sessions.clone() {
                Some(sessions) => async move { Response::BrokerHeartbeat(sessions.heartbeat(heartbeat).await) }.boxed(),
                None => unsupported("this node runs no session controller"),
            },
        }
    }
}

fn unsupported(reason: &'static str) -> BoxFuture<'static, Response> {
    async move { Response::Unsupported(reason.to_owned()) }.boxed()
}

/// Why forwarding a proposal failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardCallError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Refused(#[from] ForwardError),
}

/// Hands `batch` to the voter behind `leader` (which should lead the quorum)
/// and waits up to `timeout` for its commit.
pub async fn forward_proposal(leader: &PeerClient, batch: MetadataBatch, timeout: Option<Duration>) -> Result<ForwardedCommit, ForwardCallError> {
    match leader.call(&Request::ForwardProposal(batch), timeout).await? {
        Response::ForwardProposal(result) => Ok(result?),
        other => Err(CallError::UnexpectedResponse { address: leader.address().to_owned(), sent: "ForwardProposal", got: other.kind() }.into()),
    }
}

/// A voter's own openraft instance as the session controller's quorum: it
/// proposes only where it leads, as the active controller must.
pub struct RaftQuorum {
    pub node_id: u64,
    pub raft: Raft<C>,
}

impl ControllerQuorum for RaftQuorum {
    fn propose(&self, batch: MetadataBatch) -> BoxFuture<'static, Result<MetadataResponse, ProposeError>> {
        let (raft, node_id) = (self.raft.clone(), self.node_id);
        async move {
            commit(&raft, node_id, batch).await.map(|commit| commit.response).map_err(|e| match e {
                ForwardError::NotLeader { leader, .. } => ProposeError::NotLeader { leader },
                ForwardError::Failed(reason) => ProposeError::Failed(reason),
            })
        }
        .boxed()
    }

    fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    fn add_learner(&self, node_id: u64, address: String) -> BoxFuture<'static, Result<(), ProposeError>> {
        let raft = self.raft.clone();
        async move {
            let known = raft.metrics().borrow().membership_config.membership().get_node(&node_id).map(|n| n.addr.clone());
            if known.as_deref() == Some(address.as_str()) {
                return Ok(());
            }
            membership_result(raft.add_learner(node_id, BasicNode::new(address), false).await)
        }
        .boxed()
    }

    fn learners(&self) -> Vec<u64> {
        self.raft.metrics().borrow().membership_config.membership().learner_ids().collect()
    }

    fn remove_learner(&self, node_id: u64) -> BoxFuture<'static, Result<(), ProposeError>> {
        let raft = self.raft.clone();
        async move {
            let is_voter = raft.metrics().borrow().membership_config.membership().voter_ids().any(|id| id == node_id);
            if is_voter {
                return Err(ProposeError::Failed(format!("node {node_id} is a voter, not a learner")));
            }
            membership_result(raft.change_membership(ChangeMembers::RemoveNodes([node_id].into()), false).await)
        }
        .boxed()
    }
}

/// A membership change's outcome as the session controller sees it.
fn membership_result<T>(result: Result<T, openraft::error::RaftError<u64, openraft::error::ClientWriteError<u64, BasicNode>>>) -> Result<(), ProposeError> {
    match result {
        Ok(_) => Ok(()),
        Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader { leader: f.leader_id })
        }
        Err(e) => Err(ProposeError::Failed(e.to_string())),
    }
}

/// The session controller a voter runs, and its handle for [`VoterService`].
pub fn spawn_session_controller(
    node_id: u64,
    raft: &Raft<C>,
    image: tokio::sync::watch::Receiver<Arc<silt_actors::metadata::quorum::AppliedState>>,
    session_timeout: Duration,
    leader_rebalance_interval: Option<Duration>,
) -> (SessionControllerHandle, tokio::task::JoinHandle<()>) {
    use silt_actors::metadata::controller::{SessionController, SessionOptions};
    let quorum = Arc::new(RaftQuorum { node_id, raft: raft.clone() });
    let options = SessionOptions { leader_rebalance_interval, ..SessionOptions::new(node_id, session_timeout) };
    SessionController::spawn(options, quorum, image)
}
