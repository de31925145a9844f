//! Partition leadership: ElectLeaders and OffsetForLeaderEpoch. This node
//! leads every partition it hosts, in leader epoch 0 (as Metadata reports).

use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::*;
use silt_actors::partition::EndOffsetForEpoch;

use super::{topic_name, wire};
use crate::protocol::RequestContext;

/// Kafka's ElectionType values.
const ELECTION_PREFERRED: i8 = 0;
const ELECTION_UNCLEAN: i8 = 1;

/// Every partition already has its preferred leader, and a leader at all, so
/// each election is ELECTION_NOT_NEEDED, with Kafka's controller's rules
/// (`ReplicationControlManager.electLeaders`): named partitions each get an
/// answer; asked for all partitions (`null`), the answer lists every topic and
/// leaves out the partitions that need no election, which here is all of them.
pub async fn elect(ctx: &RequestContext, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let node = &ctx.broker.node;
    let mut response = ElectLeadersResponse::default();
    // v0 has no election type: it is always a preferred election.
    if ctx.version >= 1 && !matches!(request.election_type, ELECTION_PREFERRED | ELECTION_UNCLEAN) {
        response.error_code = ctx.count(ResponseError::InvalidRequest.code());
        return response;
    }
    response.replica_election_results = match request.topic_partitions {
        None => node.topics().iter().map(|t| ReplicaElectionResult::default().with_topic(topic_name(&t.name))).collect(),
        Some(topics) => topics
            .into_iter()
            .map(|topic| {
                let name = topic.topic.0.as_str();
                let results = topic
                    .partitions
                    .iter()
                    .map(|&partition| {
                        let mut out = PartitionResult::default().with_partition_id(partition);
                        match node.partition(name, partition) {
                            Ok(_) => {
                                out.error_code = ctx.count(ResponseError::ElectionNotNeeded.code());
                                out.error_message = Some(wire("Leader election not needed for topic partition."));
                            }
                            Err(e) => {
                                out.error_code = ctx.error_code(&e);
                                out.error_message = Some(wire(e.to_string()));
                            }
                        }
                        out
                    })
                    .collect();
                ReplicaElectionResult::default().with_topic(topic.topic).with_partition_result(results)
            })
            .collect(),
    };
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
