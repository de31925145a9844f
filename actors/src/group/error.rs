//! The errors group requests answer with. `src/errors.rs` maps each to the
//! Kafka code a client expects.

/// Why a group request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("member {member_id} is not a member of group {group_id}")]
    UnknownMemberId { group_id: String, member_id: String },
    #[error("generation {generation_id} is not group {group_id}'s current generation {current}")]
    IllegalGeneration { group_id: String, generation_id: i32, current: i32 },
    #[error("group {0} is rebalancing; rejoin")]
    RebalanceInProgress(String),
    #[error("group {0}: the protocol type or protocols are not those of the group's members")]
    InconsistentGroupProtocol(String),
    #[error("group {group_id}: instance {instance_id} now belongs to another member id than {member_id}")]
    FencedInstanceId { group_id: String, instance_id: String, member_id: String },
    #[error("group {group_id}: rejoin with the member id {member_id}")]
    MemberIdRequired { group_id: String, member_id: String },
    #[error("group {group_id} already has {max} members (groups.max_size)")]
    GroupMaxSizeReached { group_id: String, max: usize },
    #[error("group {group_id}: member metadata of {size} bytes exceeds the limit of {max}")]
    MemberMetadataTooLarge { group_id: String, size: usize, max: usize },
    #[error("session timeout {timeout_ms} ms is outside groups.min_session_timeout_ms..=groups.max_session_timeout_ms ({min}..={max})")]
    InvalidSessionTimeout { timeout_ms: i32, min: i32, max: i32 },
    #[error("invalid group id {0:?}")]
    InvalidGroupId(String),
    #[error("group {0} still has members")]
    NonEmptyGroup(String),
    #[error("group {0} does not exist")]
    GroupIdNotFound(String),
    #[error("offset metadata of {size} bytes exceeds the limit of {max}")]
    OffsetMetadataTooLarge { size: usize, max: usize },
    #[error("group {group_id} is subscribed to topic {topic}")]
    GroupSubscribedToTopic { group_id: String, topic: String },
    #[error("this broker does not coordinate group {group_id} (it does not lead partition {partition} of __consumer_offsets)")]
    NotCoordinator { group_id: String, partition: i32 },
    #[error("the group coordinator is loading")]
    CoordinatorLoading,
    #[error("the group coordinator is not available: {0}")]
    CoordinatorNotAvailable(String),
    #[error("group {group_id}: member {member_id} is at epoch {member_epoch}, not its current epoch {current}; it must rejoin")]
    FencedMemberEpoch { group_id: String, member_id: String, member_epoch: i32, current: i32 },
    #[error("group {group_id}: member {member_id} committed at epoch {member_epoch}, not its current epoch {current}")]
    StaleMemberEpoch { group_id: String, member_id: String, member_epoch: i32, current: i32 },
    #[error("group {group_id}: instance {instance_id} is still held by another member than {member_id}")]
    UnreleasedInstanceId { group_id: String, instance_id: String, member_id: String },
    #[error("server assignor {0:?} is not supported (uniform, range)")]
    UnsupportedAssignor(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("subscribed_topic_regex {regex:?} is not a valid regular expression: {reason}")]
    InvalidRegularExpression { regex: String, reason: String },
    #[error("group {group_id} is not a {expected} group")]
    WrongGroupType { group_id: String, expected: &'static str },
}
