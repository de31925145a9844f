//! The node-to-node edge of a Silt cluster: a small framed RPC over TCP, and
//! what runs over it (openraft's network, broker sessions, forwarded proposals).
//!
//! | module | owns |
//! |---|---|
//! | [`frame`] | the frame: `[length u32][version u8][JSON]`, its limits and codec |
//! | [`message`] | [`message::Request`] and [`message::Response`]: every call between nodes |
//! | [`client`] | [`client::PeerClient`]: calling one peer (pool, deadlines, backoff, in-flight bound) |
//! | [`server`] | the `[cluster] listen` socket, dispatching to a [`server::Dispatch`] |
//! | [`raft_network`] | [`raft_network::ClusterNetwork`]: openraft's `RaftNetworkFactory` over the client |
//! | [`service`] | what a voter answers ([`service::VoterService`]) and proposal forwarding |
//! | [`edge`] | [`edge::ClusterEdge`]: the above assembled from `[cluster]` for `silt broker` |
//! | [`broker_session`] | the broker's registration and heartbeats to the active controller |
//!
//! This is an edge like the Kafka listener: the wire types live here, the
//! rules they carry (Raft, broker sessions) live in `silt-actors`, which
//! knows nothing about sockets.

pub mod broker_session;
pub mod client;
pub mod edge;
pub mod frame;
pub mod message;
pub mod raft_network;
pub mod server;
pub mod service;

#[cfg(test)]
mod tests;
