//! The `silt` broker: the node's assembly and the Kafka protocol edge.
//!
//! | module | owns |
//! |---|---|
//! | [`alloc`] | the process allocator (hostile length prefixes cannot abort the process) |
//! | [`config`] | configuration: file + `SILT_*` environment, validated |
//! | [`broker`] | assembling a node and shutting it down |
//! | [`cluster`] | the node-to-node transport: Raft's network, broker sessions, forwarded proposals |
//! | [`server`] | the Kafka listeners: connections and request framing |
//! | [`security`] | listeners, TLS and SASL: who a connection is, before its requests |
//! | [`protocol`] | decoding requests, version checks, dispatch, encoding responses |
//! | [`shared_frame`] | Fetch response frames that share record batches instead of copying them |
//! | [`handlers`] | one module per Kafka API family: wire types to domain messages and back |
//! | [`errors`] | the mapping of domain errors to Kafka error codes |
//! | [`metrics`] | the Prometheus registry |
//! | [`http`] | `/metrics` and `/health` |
//! | [`replay`] | `silt replay`: archived records to stdout or another topic |
//! | [`perf`] | `silt perf`: load generators and machine-limit probes |
//!
//! Dependencies point one way: this crate → `silt-actors` → `silt-tiering`.

#[allow(unsafe_code, reason = "a GlobalAlloc is unsafe to implement")]
pub mod alloc;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod errors;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod perf;
pub mod protocol;
pub mod replay;
pub mod replication;
pub mod security;
pub mod server;
#[allow(unsafe_code, reason = "BufMut is an unsafe trait")]
pub mod shared_frame;

#[global_allocator]
static ALLOCATOR: alloc::LazyLargeAllocator = alloc::LazyLargeAllocator;
