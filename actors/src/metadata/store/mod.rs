//! The `MetadataStore`: the one door through which a node changes the
//! cluster's metadata, and the one place it reads the applied image from.
//!
//! It wraps an `openraft::Raft` over the quorum's own stores
//! ([`super::quorum`]) in `<data_dir>/__cluster_metadata`. Why a wrapper and
//! not openraft directly: the node's admin code should neither know how a
//! proposal reaches the active controller (locally with `client_write`, or
//! forwarded over the cluster transport when another voter leads) nor how long
//! it may wait. So [`MetadataStore::propose`] answers a [`MetadataResponse`]
//! or a typed [`MetadataError`] (not the controller, timed out, rejected), and
//! the transport stays an edge that `src/` plugs in:
//!
//! - the `RaftNetworkFactory` handed to [`MetadataStore::start`]
//!   ([`SingleVoterNetwork`] on the embedded single node), and
//! - a [`ProposalForwarder`] for proposals made on a node that does not lead.
//!
//! A single node with no configuration is a one-voter quorum: it initializes
//! itself on first start and elects itself at once (openraft restores a
//! committed vote as leader on restart), so proposals cost one log append and
//! fsync.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, RaftNetworkFactory};
use tokio::sync::watch;

use super::quorum::{self, AppliedState, MetadataBatch, MetadataResponse, MetadataTypeConfig};
use crate::error::{Error, MetadataError};

mod single_voter;
#[cfg(test)]
mod tests;

pub use single_voter::SingleVoterNetwork;

/// The folder under the data directory that holds the metadata log.
pub const METADATA_DIR: &str = "__cluster_metadata";

/// How long a proposal may take, by default, before [`MetadataError::ProposalTimeout`].
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a proposal keeps asking while no reachable voter leads: about
/// three elections (`election_timeout_max_ms` is 2 s in a cluster).
pub const NOT_CONTROLLER_RETRY: Duration = Duration::from_secs(8);
/// The pause between those attempts.
const NOT_CONTROLLER_PAUSE: Duration = Duration::from_millis(200);

/// Sends a proposal to the active controller when this node does not lead
/// the quorum. Implemented in `src/` over the node-to-node transport.
pub trait ProposalForwarder: Send + Sync + 'static {
    fn forward(&self, leader: u64, batch: MetadataBatch) -> BoxFuture<'static, Result<MetadataResponse, Error>>;

    /// As [`forward`](Self::forward), with the log index the leader committed
    /// the batch at, so the proposer can wait until its own image has it.
    /// The default knows no index.
    fn forward_indexed(&self, leader: u64, batch: MetadataBatch) -> BoxFuture<'static, Result<(MetadataResponse, Option<u64>), Error>> {
        let forwarded = self.forward(leader, batch);
        Box::pin(async move { forwarded.await.map(|response| (response, None)) })
    }
}

/// openraft's timers, in milliseconds (its defaults: heartbeat 50, election 150..300).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming { heartbeat_interval_ms: 50, election_timeout_min_ms: 150, election_timeout_max_ms: 300 }
    }
}

/// How a [`MetadataStore`] starts.
#[derive(Clone)]
pub struct StoreOptions {
    /// The quorum's folder (`<data_dir>/__cluster_metadata`).
    pub dir: PathBuf,
    pub node_id: u64,
    /// The voters of the quorum; one entry (this node) on a single node.
    pub voters: BTreeMap<u64, BasicNode>,
    /// Where proposals go when another voter leads; `None` answers
    /// [`MetadataError::NotController`] instead.
    pub forwarder: Option<Arc<dyn ProposalForwarder>>,
    pub timing: RaftTiming,
    pub proposal_timeout: Duration,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("dir", &self.dir)
            .field("node_id", &self.node_id)
            .field("voters", &self.voters)
            .field("forwarder", &self.forwarder.is_some())
            .field("timing", &self.timing)
            .field("proposal_timeout", &self.proposal_timeout)
            .finish()
    }
}

impl StoreOptions {
    /// A one-voter quorum of `node_id` in `dir`.
    pub fn single_voter(dir: PathBuf, node_id: u64) -> StoreOptions {
        StoreOptions {
            dir,
            node_id,
            voters: BTreeMap::from([(node_id, BasicNode::default())]),
            forwarder: None,
            timing: RaftTiming::default(),
            proposal_timeout: PROPOSAL_TIMEOUT,
        }
    }
}

/// The node's handle on the metadata quorum. Cheap to clone.
#[derive(Clone)]
pub struct MetadataStore {
    raft: Raft<MetadataTypeConfig>,
    image: watch::Receiver<Arc<AppliedState>>,
    node_id: u64,
    forwarder: Option<Arc<dyn ProposalForwarder>>,
    proposal_timeout: Duration,
}

fn raft_error(action: &'static str) -> impl FnOnce(String) -> Error {
    move |reason| MetadataError::Raft { action, reason }.into()
}

impl MetadataStore {
    /// Opens the stores in `options.dir` and starts Raft on them. A node whose
    /// log is empty and that is the lowest voter (or the only one) proposes the
    /// initial membership; another voter that did so first is fine.
    pub async fn start<N>(options: StoreOptions, network: N) -> Result<MetadataStore, Error>
    where
        N: RaftNetworkFactory<MetadataTypeConfig>,
    {
        let (log, state_machine) = quorum::open(options.dir.clone()).await.map_err(MetadataError::from)?;
        let image = state_machine.subscribe();
        let timing = options.timing;
        let config = Config {
            cluster_name: "silt-metadata".into(),
            heartbeat_interval: timing.heartbeat_interval_ms,
            election_timeout_min: timing.election_timeout_min_ms,
            election_timeout_max: timing.election_timeout_max_ms,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| raft_error("validate the raft config")(e.to_string()))?);
        let raft = Raft::new(options.node_id, config, network, log, state_machine).await.map_err(|e| raft_error("start")(e.to_string()))?;
        let store = MetadataStore { raft, image, node_id: options.node_id, forwarder: options.forwarder, proposal_timeout: options.proposal_timeout };
        let initialized = store.raft.is_initialized().await.map_err(|e| raft_error("read the log state")(e.to_string()))?;
        let lowest = options.voters.keys().next().copied();
        if !initialized && lowest == Some(options.node_id) {
            match store.raft.initialize(options.voters).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(raft_error("initialize")(e.to_string())),
            }
        }
        Ok(store)
    }

    /// Commits `batch` to the metadata log and answers once it is applied, on
    /// the leader or through the forwarder. A batch the image refuses answers
    /// `Ok(MetadataResponse::Rejected { .. })`: the refusal was replicated too.
    pub async fn propose(&self, batch: MetadataBatch) -> Result<MetadataResponse, Error> {
        self.propose_at(batch).await.map(|(response, _)| response)
    }

    /// As [`propose`](Self::propose), with the log index of the committed
    /// batch when known (always on the leader; from the forwarder otherwise).
    pub async fn propose_at(&self, batch: MetadataBatch) -> Result<(MetadataResponse, Option<u64>), Error> {
        match tokio::time::timeout(self.proposal_timeout, self.propose_unbounded(batch)).await {
            Ok(answer) => answer,
            Err(_) => Err(MetadataError::ProposalTimeout { after: self.proposal_timeout }.into()),
        }
    }

    /// Proposes, asking again while no reachable voter leads (an election is
    /// under way, or the leader this node knows has just died), for at most
    /// [`NOT_CONTROLLER_RETRY`]: a client's CreateTopics during a controller
    /// change then waits for the new controller instead of failing.
    async fn propose_unbounded(&self, batch: MetadataBatch) -> Result<(MetadataResponse, Option<u64>), Error> {
        let deadline = tokio::time::Instant::now() + NOT_CONTROLLER_RETRY;
        loop {
            match self.propose_once(batch.clone()).await {
                Err(Error::Metadata(MetadataError::NotController { leader })) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(?leader, "no reachable active controller yet; proposing again shortly");
                    tokio::time::sleep(NOT_CONTROLLER_PAUSE).await;
                }
                answer => return answer,
            }
        }
    }

    async fn propose_once(&self, batch: MetadataBatch) -> Result<(MetadataResponse, Option<u64>), Error> {
        let leader = match self.raft.client_write(batch.clone()).await {
            Ok(written) => return Ok((written.data, Some(written.log_id.index))),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => forward.leader_id,
            Err(e) => return Err(raft_error("propose")(e.to_string())),
        };
        match (leader, &self.forwarder) {
            (Some(leader), Some(forwarder)) if leader != self.node_id => forwarder.forward_indexed(leader, batch).await,
            _ => Err(MetadataError::NotController { leader }.into()),
        }
    }

    /// Waits (within the proposal timeout) until this node has applied the
    /// log up to `index`: a forwarded proposal is committed on the leader
    /// first and reaches this node's image a heartbeat later.
    pub async fn wait_applied(&self, index: u64) -> Result<(), Error> {
        let mut image = self.image();
        let applied = async move { image.wait_for(|s| s.last_applied.is_some_and(|id| id.index >= index)).await.map(drop) };
        match tokio::time::timeout(self.proposal_timeout, applied).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(raft_error("wait for the log to apply")("raft stopped".into())),
            Err(_) => Err(MetadataError::ProposalTimeout { after: self.proposal_timeout }.into()),
        }
    }

    /// Waits (within the proposal timeout) until this node's voter knows a
    /// leader of the quorum, and answers its id.
    pub async fn wait_for_leader(&self) -> Result<u64, Error> {
        let mut metrics = self.raft.metrics();
        let known = tokio::time::timeout(self.proposal_timeout, metrics.wait_for(|m| m.current_leader.is_some())).await;
        match known {
            Ok(Ok(m)) => m.current_leader.ok_or_else(|| MetadataError::NotController { leader: None }.into()),
            Ok(Err(_)) => Err(raft_error("wait for a leader")("raft stopped".into())),
            Err(_) => Err(MetadataError::ProposalTimeout { after: self.proposal_timeout }.into()),
        }
    }

    /// The applied state now and after every later apply.
    pub fn image(&self) -> watch::Receiver<Arc<AppliedState>> {
        self.image.clone()
    }

    /// The Raft instance, for the RPC server that takes the peers' calls.
    pub fn raft(&self) -> &Raft<MetadataTypeConfig> {
        &self.raft
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Whether this node leads the metadata quorum now.
    pub fn is_active_controller(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// Stops Raft; proposals fail afterwards.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.raft.shutdown().await.map_err(|e| raft_error("shut down")(e.to_string()))
    }
}
