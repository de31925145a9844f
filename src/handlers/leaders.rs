//! Partition leadership: ElectLeaders (preferred and unclean elections, decided
//! by the node's controller logic) and OffsetForLeaderEpoch.

use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::*;
use silt_actors::node::elections::{ElectLeaders, ElectionError, ElectionType};
use silt_actors::partition::EndOffsetForEpoch;

use super::{topic_name, wire};
use crate::protocol::RequestContext;

/// Kafka's ElectionType values.
const ELECTION_PREFERRED: i8 = 0;
const ELECTION_UNCLEAN: i8 = 1;

/// ElectLeaders: the node's controller logic decides ([`ElectLeaders`]), with
/// Kafka's answers: named partitions each get one; asked for all partitions
/// (`null`), the answer lists every topic, each with the partitions where an
/// election was tried.
pub async fn elect(ctx: &RequestContext, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let node = &ctx.broker.node;
    let mut response = ElectLeadersResponse::default();
    // v0 has no election type: it is always a preferred election.
    let election = match request.election_type {
        _ if ctx.version == 0 => ElectionType::Preferred,
        ELECTION_PREFERRED => ElectionType::Preferred,
        ELECTION_UNCLEAN => ElectionType::Unclean,
        _ => {
            response.error_code = ctx.count(ResponseError::InvalidRequest.code());
            return response;
        }
    };
    if request.topic_partitions.is_none() {
        response.replica_election_results = node.topics().iter().map(|t| ReplicaElectionResult::default().with_topic(topic_name(&t.name))).collect();
    }
    let partitions = request
        .topic_partitions
        .map(|topics| topics.into_iter().flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic.0.to_string(), p))).collect::<Vec<_>>());
    let results = match node.ask(ElectLeaders { election, partitions }).await.and_then(|answer| answer) {
        Ok(results) => results,
        Err(e) => {
            response.error_code = ctx.error_code(&e);
            return response;
        }
    };
    for result in results {
        let mut out = PartitionResult::default().with_partition_id(result.partition);
        if let Err(e) = &result.outcome {
            let code = match e {
                ElectionError::NotNeeded => ResponseError::ElectionNotNeeded,
                ElectionError::PreferredNotAvailable(_) => ResponseError::PreferredLeaderNotAvailable,
                ElectionError::EligibleLeadersNotAvailable => ResponseError::EligibleLeadersNotAvailable,
                ElectionError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
                ElectionError::NotCommitted(_) => ResponseError::RequestTimedOut,
            };
            out.error_code = ctx.count(code.code());
            out.error_message = Some(wire(e.to_string()));
        }
        match response.replica_election_results.iter_mut().find(|r| r.topic.0.as_str() == result.topic) {
            Some(topic) => topic.partition_result.push(out),
            None => {
                response.replica_election_results.push(ReplicaElectionResult::default().with_topic(topic_name(&result.topic)).with_partition_result(vec![out]))
            }
        }
    }
    response
}

/// Where each asked leader epoch ends in the partition's log, from its
/// leader-epoch checkpoint, with Kafka's answers: the current epoch ends at
/// the log end offset, an unknown one is UNDEFINED_EPOCH (-1) at offset -1,
/// and a `current_leader_epoch` other than this leader's is fenced.
pub async fn offset_for_leader_epoch(ctx: &RequestContext, request: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let node = &ctx.broker.node;
    let topics = join_all(request.topics.into_iter().map(|topic| async move {
        let name = topic.topic.0.as_str();
        let partitions = join_all(topic.partitions.iter().map(|p| async move {
            let mut out = EpochEndOffset::default().with_partition(p.partition).with_leader_epoch(-1).with_end_offset(-1);
            let ask = EndOffsetForEpoch {
                leader_epoch: p.leader_epoch,
                // -1 (NO_PARTITION_LEADER_EPOCH) asks for no check, as in Kafka.
                current_leader_epoch: (p.current_leader_epoch != -1).then_some(p.current_leader_epoch),
            };
            let result = match node.partition(name, p.partition) {
                Ok(handle) => handle.ask(ask).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(Some((epoch, end_offset))) => {
                    out.leader_epoch = epoch;
                    out.end_offset = end_offset;
                }
                Ok(None) => {}
                Err(e) => out.error_code = ctx.error_code(&e),
            }
            out
        }))
        .await;
        OffsetForLeaderTopicResult::default().with_topic(topic.topic.clone()).with_partitions(partitions)
    }))
    .await;
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
