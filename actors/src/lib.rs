//! Silt's actors: the node's live state, one actor per concept.
//!
//! | module | owns |
//! |---|---|
//! | [`partition`] | [`partition::PartitionActor`]: one partition's log, behind domain messages |
//! | [`cleaner`] | [`cleaner::LogCleaner`]: the node's log cleaner, compacting `cleanup.policy=compact` logs |
//! | [`node`] | [`node::Node`]: admin requests as metadata proposals, the replica manager, the registry |
//! | [`catalog`] | the pre-quorum `catalog.json`, read once to migrate it; topic name rules |
//! | [`meta_properties`] | the data directory's identity: node id and cluster id (`meta.properties`) |
//! | [`group`] | consumer groups: the classic protocol, committed offsets and the `__consumer_offsets` topic |
//! | [`topic_config`] | Kafka-named topic configs, validated and resolved into log settings |
//! | [`replication`] | the seams between metadata and data planes: partition roles, replica fetchers, ISR changes |
//! | [`metadata`] | the metadata quorum (records, image, openraft's stores) and the `MetadataStore` |
//! | [`error`] | the domain errors every message answers with |
//!
//! The Kafka wire protocol never reaches this crate: `src/` turns requests into
//! the messages defined here and maps [`error::Error`] back to Kafka codes.

pub mod catalog;
pub mod cleaner;
pub mod error;
pub mod group;
pub mod meta_properties;
pub mod metadata;
pub mod node;
pub mod partition;
pub mod replication;
pub mod topic_config;

pub use error::Error;
pub use node::{Node, NodeHandle, NodeOptions};
pub use partition::{PartitionActor, PartitionHandle, Watermarks};

/// A topic's name and a partition index: Kafka's `TopicPartition`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Milliseconds since the Unix epoch, the unit of Kafka timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
