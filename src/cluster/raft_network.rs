//! openraft's network over the node-to-node transport: [`ClusterNetwork`] is
//! the `RaftNetworkFactory` a metadata voter starts with.
//!
//! Transport failures map to the `RPCError` variants whose meaning openraft
//! acts on: a peer that cannot be connected to is `Unreachable` (openraft backs
//! off, and an election proceeds with the voters that answer); a timeout is
//! `Timeout`; a connection that broke mid-call is `Network` (retried at
//! once); an error the remote Raft returned is `RemoteError`.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::BasicNode;
use silt_actors::metadata::quorum::MetadataTypeConfig;

use super::client::{CallError, PeerClient, Peers};
use super::message::{Request, Response};

type C = MetadataTypeConfig;

/// Creates a [`PeerNetwork`] per target voter, sharing connection pools by address.
#[derive(Debug, Clone)]
pub struct ClusterNetwork {
    node_id: u64,
    peers: Arc<Peers>,
}

impl ClusterNetwork {
    /// The network of voter `node_id`, calling peers through `peers`.
    pub fn new(node_id: u64, peers: Arc<Peers>) -> Self {
        ClusterNetwork { node_id, peers }
    }
}

impl RaftNetworkFactory<C> for ClusterNetwork {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerNetwork {
        PeerNetwork { node_id: self.node_id, target, node: node.clone(), client: self.peers.client(&node.addr) }
    }
}

/// Raft's RPCs to one voter.
#[derive(Debug)]
pub struct PeerNetwork {
    node_id: u64,
    target: u64,
    node: BasicNode,
    client: Arc<PeerClient>,
}

/// A response variant other than the one the request calls for.
#[derive(Debug, thiserror::Error)]
#[error("voter {target} answered {got} to {sent}")]
struct WrongResponse {
    target: u64,
    sent: &'static str,
    got: &'static str,
}

impl PeerNetwork {
    async fn call<E: std::error::Error>(&self, request: Request, action: RPCTypes, option: &RPCOption) -> Result<Response, RPCError<u64, BasicNode, E>> {
        let timeout = option.hard_ttl();
        self.client.call(&request, Some(timeout)).await.map_err(|e| match e {
            CallError::Timeout { .. } => RPCError::Timeout(Timeout { action, id: self.node_id, target: self.target, timeout }),
            e if e.is_unreachable() => RPCError::Unreachable(Unreachable::new(&e)),
            e => RPCError::Network(NetworkError::new(&e)),
        })
    }

    fn remote<E: std::error::Error>(&self, error: E) -> RPCError<u64, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), error))
    }

    fn wrong<E: std::error::Error>(&self, sent: &'static str, got: &Response) -> RPCError<u64, BasicNode, E> {
        RPCError::Network(NetworkError::new(&WrongResponse { target: self.target, sent, got: got.kind() }))
    }
}

impl RaftNetwork<C> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.call(Request::AppendEntries(rpc), RPCTypes::AppendEntries, &option).await? {
            Response::AppendEntries(result) => result.map_err(|e| self.remote(e)),
            other => Err(self.wrong("AppendEntries", &other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        match self.call(Request::InstallSnapshot(rpc), RPCTypes::InstallSnapshot, &option).await? {
            Response::InstallSnapshot(result) => result.map_err(|e| self.remote(e)),
            other => Err(self.wrong("InstallSnapshot", &other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.call(Request::Vote(rpc), RPCTypes::Vote, &option).await? {
            Response::Vote(result) => result.map_err(|e| self.remote(e)),
            other => Err(self.wrong("Vote", &other)),
        }
    }
}
