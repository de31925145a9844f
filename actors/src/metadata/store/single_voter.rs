//! The transport of a one-voter quorum: there are no peers, so every call
//! answers `Unreachable`. openraft never calls it while the voter set is this
//! node alone; it exists because `Raft::new` takes a network.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::BasicNode;

use crate::metadata::quorum::MetadataTypeConfig;

/// A `RaftNetworkFactory` whose clients answer every call as unreachable.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleVoterNetwork;

#[derive(Debug, thiserror::Error)]
#[error("a single-voter metadata quorum has no peers to call")]
struct NoPeers;

impl RaftNetworkFactory<MetadataTypeConfig> for SingleVoterNetwork {
    type Network = SingleVoterNetwork;

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> Self::Network {
        SingleVoterNetwork
    }
}

impl RaftNetwork<MetadataTypeConfig> for SingleVoterNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<MetadataTypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeers)))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<MetadataTypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeers)))
    }

    async fn vote(&mut self, _rpc: VoteRequest<u64>, _option: RPCOption) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeers)))
    }
}
