//! DescribeQuorum: the state of the metadata quorum (KRaft's
//! `__cluster_metadata`), as `kafka-metadata-quorum describe --status` shows it.
//!
//! Every Silt node is a voter (roles controller and broker together), so any
//! node answers from its own openraft metrics instead of forwarding to the
//! active controller as a Kafka broker does. The leader, its epoch (the Raft
//! term) and the voters are what every voter knows. Each voter's log end is
//! known only on the active controller, which tracks its followers: elsewhere
//! it is this node's own log end, and -1 for the others, as Kafka reports a
//! replica whose state it does not know.

use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};

use super::{topic_name, wire};
use crate::protocol::RequestContext;

/// KRaft's metadata topic and its one partition.
const METADATA_TOPIC: &str = "__cluster_metadata";
const METADATA_PARTITION: i32 = 0;
/// The listener name controllers advertise (Kafka's `controller.listener.names` default).
const CONTROLLER_LISTENER: &str = "CONTROLLER";
/// v2 added each voter's endpoints (`nodes`) and directory ids (KIP-853).
const NODES_SINCE_VERSION: i16 = 2;

pub async fn describe(ctx: &RequestContext, request: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let metrics = ctx.broker.node.metadata_store().raft().metrics().borrow().clone();
    let asked_metadata =
        request.topics.iter().any(|t| t.topic_name.0.as_str() == METADATA_TOPIC && t.partitions.iter().any(|p| p.partition_index == METADATA_PARTITION));
    let mut response = DescribeQuorumResponse::default();
    if !asked_metadata {
        // Kafka answers a request for any other partition with UNKNOWN_TOPIC_OR_PARTITION at the top level.
        response.error_code = ctx.count(kafka_protocol::error::ResponseError::UnknownTopicOrPartition.code());
        return response;
    }
    let membership = metrics.membership_config.membership();
    let own_log_end = metrics.last_log_index.map_or(0, |i| i64::try_from(i).unwrap_or(i64::MAX));
    let log_end_of = |id: u64| -> i64 {
        if id == metrics.id {
            return own_log_end;
        }
        match &metrics.replication {
            // Openraft indexes from 1; a matched index n means n entries, Kafka's log end offset n.
            Some(followers) => followers.get(&id).map_or(-1, |m| m.map_or(0, |log_id| i64::try_from(log_id.index).unwrap_or(i64::MAX))),
            None => -1,
        }
    };
    let voters: Vec<ReplicaState> = membership
        .voter_ids()
        .map(|id| {
            ReplicaState::default()
                .with_replica_id(BrokerId(i32::try_from(id).unwrap_or(-1)))
                .with_log_end_offset(log_end_of(id))
                .with_last_fetch_timestamp(-1)
                .with_last_caught_up_timestamp(-1)
        })
        .collect();
    let observers: Vec<ReplicaState> = membership
        .learner_ids()
        .map(|id| ReplicaState::default().with_replica_id(BrokerId(i32::try_from(id).unwrap_or(-1))).with_log_end_offset(log_end_of(id)))
        .collect();
    let leader = metrics.current_leader.and_then(|id| i32::try_from(id).ok()).unwrap_or(-1);
    let high_watermark = metrics.last_applied.map_or(0, |log_id| i64::try_from(log_id.index).unwrap_or(i64::MAX));
    let partition = PartitionData::default()
        .with_partition_index(METADATA_PARTITION)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(i32::try_from(metrics.current_term).unwrap_or(i32::MAX))
        .with_high_watermark(high_watermark)
        .with_current_voters(voters)
        .with_observers(observers);
    response.topics = vec![TopicData::default().with_topic_name(topic_name(METADATA_TOPIC)).with_partitions(vec![partition])];
    if ctx.version >= NODES_SINCE_VERSION {
        response.nodes = membership
            .nodes()
            .filter_map(|(id, node)| {
                let (host, port) = node.addr.rsplit_once(':')?;
                let listener = Listener::default().with_name(wire(CONTROLLER_LISTENER)).with_host(wire(host.to_owned())).with_port(port.parse().ok()?);
                Some(Node::default().with_node_id(BrokerId(i32::try_from(*id).ok()?)).with_listeners(vec![listener]))
            })
            .collect();
    }
    response
}
