//! Metadata: brokers, topics and partition leaders. Unknown topics are
//! created when the client allows it and `log.auto_create_topics` is on.

use std::collections::BTreeSet;

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

/// A broker clients may connect to: registered, unfenced, with its Kafka endpoint.
pub(super) struct LiveBroker {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// The live brokers of the metadata image, by id, each with its endpoint of
/// the listener the client connected on (as Kafka answers; a broker without
/// that listener is left out). This broker's own endpoint falls back to its
/// advertised listener if it registered none.
pub(super) fn live_brokers(ctx: &RequestContext) -> Vec<LiveBroker> {
    let broker = &ctx.broker;
    let own = broker.advertised(ctx.listener);
    let mut live: Vec<LiveBroker> = broker
        .node
        .brokers()
        .into_iter()
        .filter_map(|b| {
            let endpoint = b.endpoints.iter().find(|e| e.listener == own.name).map(|e| (e.host.clone(), i32::from(e.port)));
            let (host, port) = endpoint.or_else(|| (b.id == broker.node.node_id).then(|| (own.host.clone(), own.port)))?;
            Some(LiveBroker { id: b.id, host, port, rack: b.rack })
        })
        .collect();
    if live.is_empty() {
        // Before this broker's registration is applied: it still answers for itself.
        live.push(LiveBroker { id: broker.node.node_id, host: own.host.clone(), port: own.port, rack: None });
    }
    live
}

pub async fn handle(ctx: &RequestContext, request: MetadataRequest) -> MetadataResponse {
    let broker = &ctx.broker;
    let node = &broker.node;
    let brokers = live_brokers(ctx)
        .into_iter()
        .map(|b| MetadataResponseBroker::default().with_node_id(BrokerId(b.id)).with_host(wire(b.host)).with_port(b.port).with_rack(b.rack.map(wire)))
        .collect();
    let mut response = MetadataResponse::default().with_brokers(brokers).with_controller_id(BrokerId(node.node_id));
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
                let create =
                    CreateTopic { name: name.clone(), partitions: None, replication_factor: None, configs: vec![], validate_only: false, assignments: None };
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
    let live: BTreeSet<i32> = ctx.broker.node.brokers().iter().map(|b| b.id).collect();
    let ids = |ids: &[i32]| ids.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .zip(0..)
        .map(|(p, index)| {
            let offline: Vec<i32> = p.replicas.iter().copied().filter(|id| !live.contains(id)).collect();
            // Kafka answers an offline partition (no leader) with LEADER_NOT_AVAILABLE.
            let error = if p.leader.is_none() { ctx.count(ResponseError::LeaderNotAvailable.code()) } else { 0 };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(index)
                .with_leader_id(BrokerId(p.leader.unwrap_or(-1)))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline))
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
