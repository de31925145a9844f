//! Consumer groups: the classic group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup) and durable committed offsets.
//!
//! | module | owns |
//! |---|---|
//! | [`state`] | the classic group state machine, plain Rust with no timers or I/O |
//! | [`offsets`] | committed offsets of a group and the `__consumer_offsets` record format |
//! | [`actor`] | [`actor::GroupActor`]: one group's state, its timers and its pending joins and syncs |
//! | [`manager`] | [`manager::GroupCoordinator`]: starts group actors on demand, loads them at startup, compacts the offsets topic |
//! | [`error`] | [`GroupError`], the errors group requests answer with |
//!
//! The KIP-848 consumer protocol would live beside [`state`] as a second
//! state machine behind the same actor and coordinator.

pub mod actor;
pub mod error;
pub mod manager;
pub mod offsets;
pub mod state;

pub use error::GroupError;
pub use manager::{GroupCoordinator, GroupsConfig};

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
