//! The one place domain errors become Kafka error codes. The matches are
//! exhaustive so that a new error variant forces a decision here.

use kafka_protocol::error::ResponseError;
use silt_actors::error::MetadataError;
use silt_actors::group::GroupError;
use silt_actors::Error;
use silt_tiering::{ArchiveError, BatchError, LogError};

/// The Kafka error code a client expects for `error`.
pub fn error_code(error: &Error) -> ResponseError {
    match error {
        Error::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
        Error::UnknownTopicId(_) => ResponseError::UnknownTopicId,
        Error::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        Error::BrokerIdNotRegistered(_) => ResponseError::BrokerIdNotRegistered,
        Error::InvalidTopic { .. } => ResponseError::InvalidTopicException,
        Error::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        Error::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        Error::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        Error::InvalidConfig { .. } => ResponseError::InvalidConfig,
        Error::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        Error::NotEnoughReplicasAfterAppend { .. } => ResponseError::NotEnoughReplicasAfterAppend,
        Error::NotLeaderOrFollower { .. } => ResponseError::NotLeaderOrFollower,
        Error::OffsetMovedToTieredStorage { .. } => ResponseError::OffsetMovedToTieredStorage,
        Error::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        Error::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
        Error::Log(log) => log_error_code(log),
        Error::Archive(archive) => archive_error_code(archive),
        // Retriable: the client refreshes metadata and tries again.
        Error::Unavailable(..) => ResponseError::LeaderNotAvailable,
        Error::StalePartitionEpoch { .. } => ResponseError::InvalidUpdateVersion,
        Error::ShuttingDown => ResponseError::BrokerNotAvailable,
        Error::Metadata(MetadataError::NotController { .. }) => ResponseError::NotController,
        Error::Metadata(MetadataError::ProposalTimeout { .. }) => ResponseError::RequestTimedOut,
        Error::Metadata(_) => ResponseError::KafkaStorageError,
        Error::Group(group) => group_error_code(group),
    }
}

/// Group errors. Member metadata over Silt's limit has no Kafka code of its
/// own: INVALID_REQUEST says "this request is malformed for this broker"
/// without suggesting a retry (GROUP_MAX_SIZE_REACHED is about member counts).
fn group_error_code(error: &GroupError) -> ResponseError {
    match error {
        GroupError::UnknownMemberId { .. } => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress(_) => ResponseError::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol(_) => ResponseError::InconsistentGroupProtocol,
        GroupError::FencedInstanceId { .. } => ResponseError::FencedInstanceId,
        GroupError::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
        GroupError::GroupMaxSizeReached { .. } => ResponseError::GroupMaxSizeReached,
        GroupError::MemberMetadataTooLarge { .. } => ResponseError::InvalidRequest,
        GroupError::InvalidSessionTimeout { .. } => ResponseError::InvalidSessionTimeout,
        GroupError::InvalidGroupId(_) => ResponseError::InvalidGroupId,
        GroupError::NonEmptyGroup(_) => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound(_) => ResponseError::GroupIdNotFound,
        GroupError::OffsetMetadataTooLarge { .. } => ResponseError::OffsetMetadataTooLarge,
        GroupError::GroupSubscribedToTopic { .. } => ResponseError::GroupSubscribedToTopic,
        GroupError::CoordinatorLoading => ResponseError::CoordinatorLoadInProgress,
        GroupError::NotCoordinator { .. } => ResponseError::NotCoordinator,
        GroupError::CoordinatorNotAvailable(_) => ResponseError::CoordinatorNotAvailable,
        GroupError::FencedMemberEpoch { .. } => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch { .. } => ResponseError::StaleMemberEpoch,
        GroupError::UnreleasedInstanceId { .. } => ResponseError::UnreleasedInstanceId,
        GroupError::UnsupportedAssignor(_) => ResponseError::UnsupportedAssignor,
        GroupError::InvalidRequest(_) => ResponseError::InvalidRequest,
        GroupError::InvalidRegularExpression { .. } => ResponseError::InvalidRegularExpression,
        // Kafka's answer to a request of one protocol for a group of the other.
        GroupError::WrongGroupType { .. } => ResponseError::GroupIdNotFound,
    }
}

/// Archive errors reach clients only on reads below the local log. An object
/// store that cannot be reached is retriable (KAFKA_STORAGE_ERROR: clients
/// back off and fetch again); a missing or damaged archive file will not heal
/// by retrying, so the client is told UNKNOWN_SERVER_ERROR, as Kafka does for
/// remote-storage failures, and the broker logs the file.
fn archive_error_code(error: &ArchiveError) -> ResponseError {
    match error {
        ArchiveError::Store { .. } | ArchiveError::Task { .. } | ArchiveError::InvalidLocation { .. } | ArchiveError::ManifestChanged { .. } => {
            ResponseError::KafkaStorageError
        }
        // A newer leader writes the archive (DeleteRecords on a deposed leader).
        ArchiveError::Fenced { .. } => ResponseError::NotLeaderOrFollower,
        ArchiveError::Log(log) => log_error_code(log),
        ArchiveError::Missing { .. }
        | ArchiveError::Parquet { .. }
        | ArchiveError::Encode { .. }
        | ArchiveError::Decode { .. }
        | ArchiveError::Unreadable { .. }
        | ArchiveError::CorruptFile { .. }
        | ArchiveError::DecoderPanicked { .. }
        | ArchiveError::Batch(_)
        | ArchiveError::CorruptManifest { .. }
        | ArchiveError::ForeignManifest { .. }
        | ArchiveError::ManifestsDisagree { .. }
        | ArchiveError::ReadOnly { .. } => ResponseError::UnknownServerError,
    }
}

fn log_error_code(error: &LogError) -> ResponseError {
    match error {
        LogError::InvalidBatch(batch) => batch_error_code(batch),
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        LogError::TransactionsUnsupported => ResponseError::InvalidRecord,
        // Only a follower's append meets these, and no client request appends as a follower.
        LogError::UnexpectedReplicaOffset { .. } | LogError::ReplicaEpochWentBack { .. } => ResponseError::UnknownServerError,
        // Only the log cleaner meets this, and it answers no request.
        LogError::CleaningCancelled => ResponseError::UnknownServerError,
        LogError::Io { .. } | LogError::CorruptCheckpoint { .. } | LogError::CorruptSegment { .. } => ResponseError::KafkaStorageError,
    }
}

fn batch_error_code(error: &BatchError) -> ResponseError {
    match error {
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        BatchError::UnsupportedMagic { .. } => ResponseError::UnsupportedForMessageFormat,
        BatchError::MissingKey { .. } => ResponseError::InvalidRecord,
        BatchError::CrcMismatch { .. }
        | BatchError::Truncated { .. }
        | BatchError::InvalidLength { .. }
        | BatchError::InvalidRecordCount { .. }
        | BatchError::Empty
        | BatchError::Undecodable { .. } => ResponseError::CorruptMessage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_facing_codes_match_kafka() {
        assert_eq!(error_code(&Error::UnknownTopicOrPartition("t-0".into())).code(), 3);
        let too_large = Error::Log(LogError::InvalidBatch(BatchError::TooLarge { size: 2, max: 1 }));
        assert_eq!(error_code(&too_large).code(), 10);
        let crc = Error::Log(LogError::InvalidBatch(BatchError::CrcMismatch { stored: 1, computed: 2 }));
        assert_eq!(error_code(&crc).code(), 2);
        assert_eq!(error_code(&Error::InvalidReplicationFactor("Replication factor: 3 larger than available brokers: 1.".into())).code(), 38);
        let range = Error::Log(LogError::OffsetOutOfRange { offset: 9, log_start_offset: 0, log_end_offset: 1 });
        assert_eq!(error_code(&range).code(), 1);
        let generation = Error::Group(GroupError::IllegalGeneration { group_id: "g".into(), generation_id: 1, current: 2 });
        assert_eq!(error_code(&generation).code(), 22);
        assert_eq!(error_code(&Error::Group(GroupError::InconsistentGroupProtocol("g".into()))).code(), 23);
        let fenced = Error::Group(GroupError::FencedMemberEpoch { group_id: "g".into(), member_id: "m".into(), member_epoch: 1, current: 2 });
        assert_eq!(error_code(&fenced).code(), 110);
        let stale = Error::Group(GroupError::StaleMemberEpoch { group_id: "g".into(), member_id: "m".into(), member_epoch: 1, current: 2 });
        assert_eq!(error_code(&stale).code(), 113);
    }
}
