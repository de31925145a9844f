//! Metadata: brokers, topics and partition leaders. Unknown topics are
//! created when the client allows it and `log.auto_create_topics` is on.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use silt_actors::node::{CreateTopic, TopicView};

use super::{authorized_operations, topic_name, wire};
use crate::protocol::RequestContext;

/// Metadata v2 added the cluster id.
const CLUSTER_ID_SINCE_VERSION: i16 = 2;
/// Metadata v8 added authorized operations, for the cluster and for topics.
const AUTHORIZED_OPERATIONS_SINCE_VERSION: i16 = 8;
/// Metadata v11 moved the cluster's authorized operations to DescribeCluster.
const CLUSTER_AUTHORIZED_OPERATIONS_UNTIL_VERSION: i16 = 10;
/// Before Metadata v1 an empty topic list (not null) asked for every topic.
const NULL_TOPICS_SINCE_VERSION: i16 = 1;

/// Metadata v4 added the client's consent to auto-creation; before it, consent is implied.
const ALLOW_AUTO_CREATE_SINCE_VERSION: i16 = 4;

pub async fn handle(ctx: &RequestContext, request: MetadataRequest) -> MetadataResponse {
    let broker = &ctx.broker;
    let node = &broker.node;
    let node_id = BrokerId(node.node_id);
    let mut response = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node_id)
            .with_host(wire(broker.advertised_host.clone()))
            .with_port(broker.advertised_port)])
        .with_controller_id(node_id);
    if ctx.version >= CLUSTER_ID_SINCE_VERSION {
        response.cluster_id = Some(wire(node.cluster_id.clone()));
    }
    // Authorized operations were reported for the cluster in v8-v10 and for topics since v8.
    if (AUTHORIZED_OPERATIONS_SINCE_VERSION..=CLUSTER_AUTHORIZED_OPERATIONS_UNTIL_VERSION).contains(&ctx.version)
        && request.include_cluster_authorized_operations
    {
        response.cluster_authorized_operations = authorized_operations::CLUSTER;
    }
    let topic_operations =
        (ctx.version >= AUTHORIZED_OPERATIONS_SINCE_VERSION && request.include_topic_authorized_operations).then_some(authorized_operations::TOPIC);
    let client_allows = ctx.version < ALLOW_AUTO_CREATE_SINCE_VERSION || request.allow_auto_topic_creation;
    let auto_create = client_allows && broker.config.log.auto_create_topics;

    // `None` (or, before v1, an empty list) asks for every topic.
    let requested = match request.topics {
        Some(topics) if !(topics.is_empty() && ctx.version < NULL_TOPICS_SINCE_VERSION) => topics,
        _ => {
            response.topics = node.topics().iter().map(|t| describe_topic(ctx, t, topic_operations)).collect();
            return response;
        }
    };
    for wanted in requested {
        // A topic asked for by id has a null or, from the Java client, an empty name.
        let by_name = wanted.name.as_ref().map(|n| n.0.to_string()).filter(|n| !n.is_empty());
        let name = match by_name {
            Some(name) => name,
            None => match node.topic_name(wanted.topic_id) {
                Some(name) => name.to_string(),
                None => {
                    let code = ctx.count(ResponseError::UnknownTopicId.code());
                    response.topics.push(MetadataResponseTopic::default().with_error_code(code).with_topic_id(wanted.topic_id));
                    continue;
                }
            },
        };
        let view = match node.topic(&name) {
            Some(view) => Ok(view),
            None if auto_create => {
                let create = CreateTopic { name: name.clone(), partitions: None, replication_factor: None, configs: vec![], validate_only: false };
                match node.create_topic(create).await {
                    // Another request may have created it meanwhile.
                    Err(silt_actors::Error::TopicAlreadyExists(_)) => node.topic(&name).ok_or(silt_actors::Error::UnknownTopicOrPartition(name.clone())),
                    other => other,
                }
            }
            None => Err(silt_actors::Error::UnknownTopicOrPartition(name.clone())),
        };
        match view {
            Ok(view) => response.topics.push(describe_topic(ctx, &view, topic_operations)),
            Err(e) => {
                let code = ctx.error_code(&e);
                response.topics.push(MetadataResponseTopic::default().with_error_code(code).with_name(Some(topic_name(&name))));
            }
        }
    }
    response
}

fn describe_topic(ctx: &RequestContext, topic: &TopicView, authorized_operations: Option<i32>) -> MetadataResponseTopic {
    let node_id = BrokerId(ctx.broker.node.node_id);
    let partitions = (0..topic.partitions.len() as i32)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node_id)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node_id])
                .with_isr_nodes(vec![node_id])
        })
        .collect();
    let mut out = MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_is_internal(silt_actors::group::GroupCoordinator::is_internal(&topic.name))
        .with_partitions(partitions);
    if let Some(operations) = authorized_operations {
        out.topic_authorized_operations = operations;
    }
    out
}
