//! A node's cluster edge assembled from `[cluster]` and `[broker]`: the
//! listener, the peer clients, openraft's network, the proposal forwarder, and
//! once the metadata quorum runs, the voter's handlers, its session controller
//! and the broker's session task.
//!
//! It starts in two steps because of an ordering constraint: the listener must
//! be bound before Raft starts (peers dial it as soon as they see this voter),
//! while the handlers need the running Raft. [`ClusterEdge::bind`] does the
//! first step; [`ClusterEdge::serve`] the second.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use openraft::{BasicNode, Raft};
use silt_actors::error::MetadataError;
use silt_actors::metadata::quorum::{AppliedState, BrokerId, Endpoint, MetadataBatch, MetadataResponse, MetadataTypeConfig};
use silt_actors::metadata::ProposalForwarder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::broker_session::{self, BrokerSessionOptions, BrokerSessionState};
use super::client::{CallError, ClientOptions, Peers};
use super::message::{ForwardError, ForwardedCommit};
use super::raft_network::ClusterNetwork;
use super::server::{serve, ServerOptions};
use super::service::{forward_proposal, spawn_session_controller, ForwardCallError, VoterService};
use crate::config::{BrokerSection, ClusterConfig};

/// The cluster edge before the metadata quorum runs: a bound listener.
pub struct ClusterEdge {
    config: ClusterConfig,
    listener: TcpListener,
    peers: Arc<Peers>,
    /// This node's applied image, once the quorum runs (see [`ClusterForwarder`]).
    applied: Arc<OnceLock<watch::Receiver<Arc<AppliedState>>>>,
}

/// Why the cluster edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on cluster.listen {address}: {source}")]
    Bind { address: String, source: std::io::Error },
}

/// What the broker tells the controller about itself.
#[derive(Debug, Clone)]
pub struct BrokerIdentity {
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
}

impl ClusterEdge {
    /// Binds `[cluster] listen`.
    pub async fn bind(config: ClusterConfig) -> Result<ClusterEdge, EdgeError> {
        let listener = TcpListener::bind(config.listen.as_str()).await.map_err(|source| EdgeError::Bind { address: config.listen.clone(), source })?;
        Ok(ClusterEdge::with_listener(config, listener))
    }

    /// The edge on a listener bound elsewhere (tests bind port 0 first).
    pub fn with_listener(config: ClusterConfig, listener: TcpListener) -> ClusterEdge {
        ClusterEdge { config, listener, peers: Arc::new(Peers::new(ClientOptions::default())), applied: Arc::new(OnceLock::new()) }
    }

    /// The address the listener is bound to.
    pub fn local_address(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The quorum's voters as openraft's membership.
    pub fn voters(&self) -> BTreeMap<u64, BasicNode> {
        self.config.voters.iter().map(|v| (v.id as u64, BasicNode::new(&v.address))).collect()
    }

    /// openraft's network for this node.
    pub fn network(&self) -> ClusterNetwork {
        ClusterNetwork::new(self.config.node_id as u64, self.peers.clone())
    }

    /// Sends proposals to whichever voter leads.
    pub fn forwarder(&self) -> ClusterForwarder {
        ClusterForwarder { voters: self.voters(), peers: self.peers.clone(), applied: self.applied.clone() }
    }

    /// Serves the listener with this voter's handlers and starts the broker
    /// session task. `raft` and `image` are the running metadata quorum's
    /// (`MetadataStore::raft()` and `image()`).
    pub fn serve(
        self,
        raft: Raft<MetadataTypeConfig>,
        image: watch::Receiver<Arc<AppliedState>>,
        broker: &BrokerSection,
        identity: BrokerIdentity,
    ) -> RunningEdge {
        // The session controller's timeout: Kafka's, from [broker].
        let node_id = self.config.node_id as u64;
        let _ = self.applied.set(image.clone());
        let (stop, shutdown) = watch::channel(false);
        let (leave, leaving) = watch::channel(false);
        let mut tasks = Vec::new();
        let sessions = if self.config.is_controller() {
            let (handle, task) = spawn_session_controller(
                node_id,
                &raft,
                image.clone(),
                Duration::from_millis(broker.session_timeout_ms),
                self.config.leader_rebalance_interval,
            );
            tasks.push(task);
            Some(handle)
        } else {
            None
        };
        let service = Arc::new(VoterService::new(node_id, raft, sessions));
        tasks.push(tokio::spawn(serve(self.listener, service, ServerOptions::default(), shutdown.clone())));
        let session = self.config.is_broker().then(|| {
            let options = BrokerSessionOptions {
                broker_id: self.config.node_id as BrokerId,
                incarnation_id: Uuid::new_v4(),
                endpoints: identity.endpoints,
                rack: identity.rack,
                heartbeat_interval: Duration::from_millis(broker.heartbeat_interval_ms),
                voters: self.config.voters.iter().map(|v| (v.id as u64, v.address.clone())).collect(),
                learner_address: (!self.config.is_controller()).then(|| self.config.advertised.clone()),
            };
            let offset: Arc<dyn Fn() -> u64 + Send + Sync> = Arc::new(move || image.borrow().last_applied.map_or(0, |id| id.index));
            let (state, task) = broker_session::spawn(options, self.peers.clone(), offset, shutdown, leaving);
            tasks.push(task);
            state
        });
        RunningEdge { stop, leave, tasks, session }
    }
}

/// The running edge; [`RunningEdge::shutdown`] stops it.
pub struct RunningEdge {
    stop: watch::Sender<bool>,
    /// Asks the broker session for a controlled shutdown.
    leave: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    session: Option<watch::Receiver<BrokerSessionState>>,
}

impl RunningEdge {
    /// The broker's standing with the controller (`None` on a controller-only node).
    pub fn broker_session(&self) -> Option<watch::Receiver<BrokerSessionState>> {
        self.session.clone()
    }

    /// Kafka's controlled shutdown: asks the active controller to fence this
    /// broker and move its leaderships, so clients follow the new leaders
    /// before this process stops. Waits at most `bound`; true when the
    /// controller agreed (false on a controller-only node, or when no
    /// controller answered in time: the session then simply expires).
    pub async fn controlled_shutdown(&self, bound: Duration) -> bool {
        let Some(mut session) = self.session.clone() else { return false };
        self.leave.send_replace(true);
        let done = async move { session.wait_for(|s| *s == BrokerSessionState::ShutDown).await.is_ok() };
        matches!(tokio::time::timeout(bound, done).await, Ok(true))
    }

    /// Stops the listener, its connections and the broker session task. The
    /// session controller stops with the listener's handlers, its only callers.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Forwards proposals to the voter that leads the quorum (metastore's
/// `ProposalForwarder` is implemented on it).
///
/// The node answers an admin request from its own image once the proposal is
/// committed, and a follower's image lags the leader's a little. So a
/// forwarded commit is answered only once this node has applied its log index
/// (waiting at most [`APPLY_WAIT`]; after that the commit is answered anyway,
/// as it did happen).
#[derive(Debug, Clone)]
pub struct ClusterForwarder {
    voters: BTreeMap<u64, BasicNode>,
    peers: Arc<Peers>,
    applied: Arc<OnceLock<watch::Receiver<Arc<AppliedState>>>>,
}

/// The longest wait for this node to apply a forwarded commit.
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

/// A leader id that is not among the voters.
#[derive(Debug, thiserror::Error)]
#[error("voter {0} is not in cluster.voters")]
pub struct UnknownVoter(pub u64);

impl ClusterForwarder {
    /// Hands `batch` to voter `leader`, waits for its commit and for this node
    /// to apply it.
    pub fn forward_to(&self, leader: u64, batch: MetadataBatch) -> BoxFuture<'static, Result<ForwardedCommit, ForwardToError>> {
        let client = self.voters.get(&leader).map(|node| self.peers.client(&node.addr));
        let applied = self.applied.get().cloned();
        async move {
            let client = client.ok_or(ForwardToError::UnknownVoter(UnknownVoter(leader)))?;
            let commit = forward_proposal(&client, batch, None).await?;
            if let Some(mut applied) = applied {
                let caught_up = applied.wait_for(|s| s.last_applied.is_some_and(|id| id.index >= commit.log_index));
                if tokio::time::timeout(APPLY_WAIT, caught_up).await.is_err() {
                    tracing::warn!(log_index = commit.log_index, "a forwarded commit is not applied here yet; answering anyway");
                }
            }
            Ok(commit)
        }
        .boxed()
    }
}

impl ProposalForwarder for ClusterForwarder {
    fn forward(&self, leader: u64, batch: MetadataBatch) -> BoxFuture<'static, Result<MetadataResponse, silt_actors::Error>> {
        let forwarded = self.forward_indexed(leader, batch);
        async move { forwarded.await.map(|(response, _)| response) }.boxed()
    }

    fn forward_indexed(&self, leader: u64, batch: MetadataBatch) -> BoxFuture<'static, Result<(MetadataResponse, Option<u64>), silt_actors::Error>> {
        let forwarded = self.forward_to(leader, batch);
        async move {
            forwarded.await.map(|commit| (commit.response, Some(commit.log_index))).map_err(|e| match e {
                ForwardToError::Forward(ForwardCallError::Refused(ForwardError::NotLeader { leader, .. })) => MetadataError::NotController { leader }.into(),
                // The leader this node knows cannot be reached, or its
                // connection closed under the call (it died; an election is
                // under way): the proposer asks again once a new leader is
                // known. A batch the dead leader did replicate before dying
                // is then refused as a duplicate (TOPIC_ALREADY_EXISTS), the
                // same ambiguity Kafka's forwarding has.
                ForwardToError::Forward(ForwardCallError::Call(e)) if e.is_unreachable() || matches!(e, CallError::Connection { .. }) => {
                    MetadataError::NotController { leader: None }.into()
                }
                // The leader took the batch and did not answer in time: it may
                // still commit, so the client hears REQUEST_TIMED_OUT, not a
                // storage error.
                ForwardToError::Forward(ForwardCallError::Call(CallError::Timeout { timeout, .. })) => MetadataError::ProposalTimeout { after: timeout }.into(),
                e => MetadataError::Raft { action: "forward a proposal to the active controller", reason: e.to_string() }.into(),
            })
        }
        .boxed()
    }
}

/// Why [`ClusterForwarder::forward_to`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardToError {
    #[error(transparent)]
    UnknownVoter(#[from] UnknownVoter),
    #[error(transparent)]
    Forward(#[from] ForwardCallError),
}
