//! Partition reassignment (KIP-455): AlterPartitionReassignments starts,
//! changes or cancels reassignments (decided by the node's controller logic,
//! [`AlterReassignments`]); ListPartitionReassignments lists the ongoing ones
//! from the registry, with the replicas being added and removed.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{ReassignablePartitionResponse, ReassignableTopicResponse};
use kafka_protocol::messages::list_partition_reassignments_response::{OngoingPartitionReassignment, OngoingTopicReassignment};
use kafka_protocol::messages::*;
use silt_actors::metadata::quorum::ReassignmentError;
use silt_actors::node::reassignments::{AlterReassignmentError, AlterReassignments, ReassignmentRequest};
use silt_actors::node::TopicView;

use super::{topic_name, wire};
use crate::protocol::RequestContext;

/// AlterPartitionReassignments v1 carries `allow_replication_factor_change` (KIP-860).
const ALLOW_RF_CHANGE_SINCE_VERSION: i16 = 1;

/// AlterPartitionReassignments: one answer per named partition, in the
/// request's topic order.
pub async fn alter(ctx: &RequestContext, request: AlterPartitionReassignmentsRequest) -> AlterPartitionReassignmentsResponse {
    let allow_rf_change = ctx.version < ALLOW_RF_CHANGE_SINCE_VERSION || request.allow_replication_factor_change;
    let mut response = AlterPartitionReassignmentsResponse::default().with_allow_replication_factor_change(allow_rf_change);
    let requests: Vec<ReassignmentRequest> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| ReassignmentRequest {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                target: p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
            })
        })
        .collect();
    let ask = AlterReassignments { requests, allow_replication_factor_change: allow_rf_change };
    let results = match ctx.broker.node.ask(ask).await.and_then(|answer| answer) {
        Ok(results) => results,
        Err(e) => {
            response.error_code = ctx.error_code(&e);
            response.error_message = Some(wire(e.to_string()));
            return response;
        }
    };
    for result in results {
        let mut out = ReassignablePartitionResponse::default().with_partition_index(result.partition);
        if let Err(e) = &result.outcome {
            let code = match e {
                AlterReassignmentError::Refused(ReassignmentError::UnknownTopicOrPartition) => ResponseError::UnknownTopicOrPartition,
                AlterReassignmentError::Refused(ReassignmentError::InvalidReplicaAssignment(_)) => ResponseError::InvalidReplicaAssignment,
                AlterReassignmentError::Refused(ReassignmentError::ReplicationFactorChange { .. }) => ResponseError::InvalidReplicationFactor,
                AlterReassignmentError::Refused(ReassignmentError::NoReassignmentInProgress) => ResponseError::NoReassignmentInProgress,
                AlterReassignmentError::NotCommitted(_) => ResponseError::RequestTimedOut,
            };
            out.error_code = ctx.count(code.code());
            out.error_message = Some(wire(e.to_string()));
        }
        match response.responses.iter_mut().find(|t| t.name.0.as_str() == result.topic) {
            Some(topic) => topic.partitions.push(out),
            None => response.responses.push(ReassignableTopicResponse::default().with_name(topic_name(&result.topic)).with_partitions(vec![out])),
        }
    }
    response
}

/// ListPartitionReassignments: the ongoing reassignments of the named
/// partitions (`null`: of every topic). Named partitions that do not exist
/// or are not being reassigned are left out, as Kafka does.
pub async fn list(ctx: &RequestContext, request: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
    let node = &ctx.broker.node;
    let asked: Vec<(TopicView, Option<Vec<i32>>)> = match request.topics {
        None => node.topics().into_iter().map(|t| (t, None)).collect(),
        Some(topics) => topics.into_iter().filter_map(|t| Some((node.topic(t.name.0.as_str())?, Some(t.partition_indexes)))).collect(),
    };
    let mut response = ListPartitionReassignmentsResponse::default();
    for (topic, wanted) in asked {
        let partitions: Vec<OngoingPartitionReassignment> = topic
            .partitions
            .iter()
            .zip(0i32..)
            .filter(|(p, index)| (!p.adding_replicas.is_empty() || !p.removing_replicas.is_empty()) && wanted.as_ref().is_none_or(|w| w.contains(index)))
            .map(|(p, index)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(index)
                    .with_replicas(p.replicas.iter().map(|&b| BrokerId(b)).collect())
                    .with_adding_replicas(p.adding_replicas.iter().map(|&b| BrokerId(b)).collect())
                    .with_removing_replicas(p.removing_replicas.iter().map(|&b| BrokerId(b)).collect())
            })
            .collect();
        if !partitions.is_empty() {
            response.topics.push(OngoingTopicReassignment::default().with_name(topic_name(&topic.name)).with_partitions(partitions));
        }
    }
    response
}
