//! Consumer groups: the classic group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), the KIP-848 consumer protocol
//! (ConsumerGroupHeartbeat, server-side assignment) and durable committed offsets.
//!
//! | module | owns |
//! |---|---|
//! | [`state`] | the classic group state machine, plain Rust with no timers or I/O |
//! | [`consumer`] | the KIP-848 consumer group protocol's state machine and reconciliation, plain Rust |
//! | [`assignors`] | the consumer protocol's server-side assignors (`uniform`, `range`), pure functions |
//! | [`offsets`] | committed offsets of a group and the `__consumer_offsets` record format |
//! | [`actor`] | [`actor::GroupActor`]: one group's state, its timers and its pending joins and syncs |
//! | [`manager`] | [`manager::GroupCoordinator`]: serves the groups of the offsets partitions this node leads, starts group actors on demand, compacts the offsets topic |
//! | [`leadership`] | which offsets partitions this node leads, and what changed (gained: load; lost: unload) |
//! | [`load`] | replaying one offsets partition into its groups |
//! | [`error`] | [`GroupError`], the errors group requests answer with |
//!
//! A group is of one type at a time: "classic" (JoinGroup/SyncGroup) or
//! "consumer" (ConsumerGroupHeartbeat); an empty group may change type.

pub mod actor;
pub mod assignors;
pub mod consumer;
pub mod error;
pub mod leadership;
pub mod load;
pub mod manager;
pub mod offsets;
pub mod state;

pub use error::GroupError;
pub use manager::{GroupCoordinator, GroupsConfig};

/// Which protocol a group speaks (Kafka's `Group.GroupType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GroupType {
    /// JoinGroup, SyncGroup, Heartbeat, LeaveGroup.
    #[default]
    Classic,
    /// ConsumerGroupHeartbeat (KIP-848).
    Consumer,
}

impl GroupType {
    /// Kafka's name of the type (ListGroups v5).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupType::Classic => "classic",
            GroupType::Consumer => "consumer",
        }
    }
}

/// Kafka's name of the internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The partition of the offsets topic that holds `group_id`, as Kafka
/// computes it: `abs(group_id.hashCode()) % partitions` (Java's `String.hashCode`
/// over UTF-16 code units, and Kafka's `Utils.abs`, which maps `i32::MIN` to 0).
pub fn offsets_partition(group_id: &str, partitions: i32) -> i32 {
    let mut hash: i32 = 0;
    for unit in group_id.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafka() {
        // Values computed with Java: Math.abs("my-group".hashCode()) % 50 etc.
        assert_eq!(offsets_partition("", 50), 0);
        // "a".hashCode() == 97
        assert_eq!(offsets_partition("a", 50), 97 % 50);
        // "ab".hashCode() == 97*31+98 == 3105
        assert_eq!(offsets_partition("ab", 50), 3105 % 50);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE; Kafka's abs maps it to 0.
        assert_eq!(offsets_partition("polygenelubricants", 50), 0);
    }
}
