//! Request handlers, one module per Kafka API family. Each turns a decoded
//! request into domain messages for the node or its partitions and builds the
//! response for the request's version.

pub mod api_versions;
pub mod cluster;
pub mod configs;
pub mod consumer_groups;
pub mod delete_records;
pub mod fetch;
pub mod groups;
pub mod leaders;
pub mod list_offsets;
pub mod log_dirs;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
pub mod producers;
pub mod quorum;
pub mod reassignments;
pub mod sasl;
pub mod scram_credentials;
pub mod topics;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

/// Kafka's ACL operations (KIP-430 bit positions) a resource supports. With no
/// authorizer, every supported operation is authorized, as Kafka reports it.
pub(crate) mod authorized_operations {
    const READ: u32 = 3;
    const WRITE: u32 = 4;
    const CREATE: u32 = 5;
    const DELETE: u32 = 6;
    const ALTER: u32 = 7;
    const DESCRIBE: u32 = 8;
    const CLUSTER_ACTION: u32 = 9;
    const DESCRIBE_CONFIGS: u32 = 10;
    const ALTER_CONFIGS: u32 = 11;
    const IDEMPOTENT_WRITE: u32 = 12;

    const fn bits(ops: &[u32]) -> i32 {
        let mut out = 0i32;
        let mut i = 0;
        while i < ops.len() {
            out |= 1 << ops[i];
            i += 1;
        }
        out
    }

    /// What a client may do to a topic.
    pub const TOPIC: i32 = bits(&[READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS]);
    /// What a client may do to a group.
    pub const GROUP: i32 = bits(&[READ, DELETE, DESCRIBE]);
    /// What a client may do to the cluster (token operations belong to users, not the cluster).
    pub const CLUSTER: i32 = bits(&[CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE]);
}

/// A wire string from a Rust string.
pub(crate) fn wire(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A wire topic name from a Rust string.
pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(wire(s))
}

/// An error message for versions that carry one.
pub(crate) fn message(error: &(impl std::fmt::Display + ?Sized)) -> Option<StrBytes> {
    Some(wire(error.to_string()))
}
