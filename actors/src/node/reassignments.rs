//! Partition reassignments asked for by an admin (Kafka's
//! AlterPartitionReassignments): each named partition gets a new target
//! replica list, or its ongoing reassignment is cancelled.
//!
//! The decisions are the image's ([`MetadataImage::reassign`],
//! [`MetadataImage::cancel_reassignment`]); this node proposes them one
//! partition per batch, so one partition's refusal does not fail another's,
//! and answers per partition. Completing a reassignment once its new replicas
//! are in sync is the active controller's job (see the session controller).
//! Ongoing reassignments are read from the registry ([`PartitionView`]'s
//! adding and removing replicas), as ListPartitionReassignments answers.
//!
//! [`PartitionView`]: super::PartitionView

use actix::prelude::*;

use super::Node;
use crate::error::Error;
use crate::metadata::quorum::{BrokerId, MetadataBatch, MetadataImage, MetadataRecord, MetadataResponse, ReassignmentError};

/// What an admin asks of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentRequest {
    pub topic: String,
    pub partition: i32,
    /// The new replicas; `None` cancels the ongoing reassignment.
    pub target: Option<Vec<BrokerId>>,
}

/// Why one partition's reassignment did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterReassignmentError {
    #[error(transparent)]
    Refused(#[from] ReassignmentError),
    /// The decision was made but its proposal did not commit.
    #[error("the reassignment was not committed: {0}")]
    NotCommitted(String),
}

/// One partition's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentResult {
    pub topic: String,
    pub partition: i32,
    pub outcome: Result<(), AlterReassignmentError>,
}

/// Reassign (or cancel reassigning) the named partitions.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<ReassignmentResult>, Error>")]
pub struct AlterReassignments {
    pub requests: Vec<ReassignmentRequest>,
    /// KIP-860: when false, a target with another replica count is refused.
    pub allow_replication_factor_change: bool,
}

/// The record one request calls for (`None`: nothing to change).
fn decide(image: &MetadataImage, request: &ReassignmentRequest, allow_rf_change: bool) -> Result<Option<MetadataRecord>, ReassignmentError> {
    let topic_id = image.topic(&request.topic).ok_or(ReassignmentError::UnknownTopicOrPartition)?.topic_id;
    match &request.target {
        Some(target) => image.reassign(topic_id, request.partition, target, allow_rf_change),
        None => image.cancel_reassignment(topic_id, request.partition).map(Some),
    }
}

impl Handler<AlterReassignments> for Node {
    type Result = ResponseFuture<Result<Vec<ReassignmentResult>, Error>>;

    fn handle(&mut self, msg: AlterReassignments, _ctx: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move {
            let mut results = Vec::with_capacity(msg.requests.len());
            for request in msg.requests {
                // Decided on the image after the previous partition's commit.
                let decided = decide(&store.image().borrow().image, &request, msg.allow_replication_factor_change);
                let outcome = match decided {
                    Err(refused) => Err(refused.into()),
                    Ok(None) => Ok(()),
                    Ok(Some(record)) => match store.propose(MetadataBatch::one(record)).await {
                        Ok(MetadataResponse::Rejected { error, .. }) => Err(AlterReassignmentError::NotCommitted(error.to_string())),
                        Ok(_) => Ok(()),
                        Err(e) => Err(AlterReassignmentError::NotCommitted(e.to_string())),
                    },
                };
                if let Ok(()) = &outcome {
                    tracing::info!(topic = %request.topic, partition = request.partition, target = ?request.target, "partition reassignment accepted");
                }
                results.push(ReassignmentResult { topic: request.topic, partition: request.partition, outcome });
            }
            Ok(results)
        })
    }
}
