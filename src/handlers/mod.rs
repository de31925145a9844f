//! Request handlers, one module per Kafka API family. Each turns a decoded
//! request into domain messages for the node or its partitions and builds the
//! response for the request's version.

pub mod api_versions;
pub mod cluster;
pub mod configs;
pub mod delete_records;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
pub mod producer_id;
pub mod topics;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

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
