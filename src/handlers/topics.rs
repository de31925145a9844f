//! CreateTopics, DeleteTopics and CreatePartitions.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;
use silt_actors::node::{CreatePartitions, CreateTopic};

use super::{message, topic_name, wire};
use crate::handlers::configs::config_source;
use crate::protocol::RequestContext;

/// CreateTopics v5 returns the created topic's configs, partitions and replication factor.
const CREATE_CONFIGS_SINCE_VERSION: i16 = 5;
/// DeleteTopics v6 names topics by name or by id.
const DELETE_BY_ID_SINCE_VERSION: i16 = 6;
/// DeleteTopics v5 added an error message.
const DELETE_ERROR_MESSAGE_SINCE_VERSION: i16 = 5;

/// A CreateTopics entry's explicit assignment (`None` when it has none), in
/// partition order; its partition indexes must be 0, 1, ... as in Kafka.
fn manual_assignments(topic: &CreatableTopic) -> Result<Option<Vec<Vec<i32>>>, String> {
    if topic.assignments.is_empty() {
        return Ok(None);
    }
    let mut assigned: Vec<(i32, Vec<i32>)> = topic.assignments.iter().map(|a| (a.partition_index, a.broker_ids.iter().map(|b| b.0).collect())).collect();
    assigned.sort_by_key(|(index, _)| *index);
    if assigned.iter().zip(0..).any(|((index, _), expected)| *index != expected) {
        return Err("partitions in a manual assignment must be numbered 0, 1, ... without gaps".into());
    }
    Ok(Some(assigned.into_iter().map(|(_, brokers)| brokers).collect()))
}

pub async fn create(ctx: &RequestContext, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let node = &ctx.broker.node;
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut out = CreatableTopicResult::default().with_name(topic.name.clone()).with_num_partitions(-1).with_replication_factor(-1);
        let partitions = if topic.assignments.is_empty() { Some(topic.num_partitions) } else { Some(topic.assignments.len() as i32) };
        let assignments = match manual_assignments(&topic) {
            Ok(assignments) => assignments,
            Err(reason) => {
                out.error_code = ctx.count(ResponseError::InvalidReplicaAssignment.code());
                out.error_message = Some(wire(reason));
                results.push(out);
                continue;
            }
        };
        let configs: Vec<(String, String)> = topic.configs.iter().filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string()))).collect();
        let created = node
            .create_topic(CreateTopic {
                name: name.clone(),
                partitions,
                replication_factor: Some(i32::from(topic.replication_factor)),
                configs,
                validate_only: request.validate_only,
                assignments,
            })
            .await;
        match created {
            Ok(view) => {
                out.topic_id = view.id;
                out.num_partitions =
                    if request.validate_only { partitions.filter(|&n| n > 0).unwrap_or(node.default_partitions) } else { view.partitions.len() as i32 };
                out.replication_factor = view.partitions.first().map_or(1, |p| p.replicas.len() as i16);
                if ctx.version >= CREATE_CONFIGS_SINCE_VERSION {
                    let described = view.configs.describe(&node.topic_defaults);
                    out.configs = Some(
                        described
                            .into_iter()
                            .map(|d| {
                                CreatableTopicConfigs::default()
                                    .with_name(wire(d.key.name))
                                    .with_value(Some(wire(d.value)))
                                    .with_config_source(config_source(d.is_default))
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => {
                out.error_code = ctx.error_code(&e);
                out.error_message = message(&e);
            }
        }
        results.push(out);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete(ctx: &RequestContext, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let node = &ctx.broker.node;
    // v6 names topics by name or id; earlier versions by name only.
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if ctx.version >= DELETE_BY_ID_SINCE_VERSION {
        request.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        request.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let mut out = DeletableTopicResult::default();
        let resolved = match name {
            Some(name) => Ok(name),
            None => node.topic_name(id).map(|n| n.to_string()).ok_or(silt_actors::Error::UnknownTopicId(id)),
        };
        let result = match resolved {
            Ok(name) => {
                out.name = Some(topic_name(&name));
                if let Some(view) = node.topic(&name) {
                    out.topic_id = view.id;
                }
                if silt_actors::group::GroupCoordinator::is_internal(&name) {
                    Err(silt_actors::Error::InvalidTopic { name, reason: "internal topics cannot be deleted".into() })
                } else {
                    node.delete_topic(name).await
                }
            }
            Err(e) => {
                out.topic_id = id;
                Err(e)
            }
        };
        if let Err(e) = result {
            out.error_code = ctx.error_code(&e);
            if ctx.version >= DELETE_ERROR_MESSAGE_SINCE_VERSION {
                out.error_message = message(&e);
            }
        }
        responses.push(out);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(ctx: &RequestContext, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let node = &ctx.broker.node;
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut out = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let result = if silt_actors::group::GroupCoordinator::is_internal(topic.name.as_str()) {
            // Groups map to offsets partitions by count: changing it would strand their records.
            Err(silt_actors::Error::InvalidPartitions(format!("The partition count of internal topic {} cannot change.", topic.name.as_str())))
        } else {
            let assignments = topic.assignments.map(|a| a.into_iter().map(|p| p.broker_ids.into_iter().map(|b| b.0).collect()).collect());
            node.create_partitions(CreatePartitions { name: topic.name.0.to_string(), count: topic.count, validate_only: request.validate_only, assignments })
                .await
        };
        if let Err(e) = result {
            out.error_code = ctx.error_code(&e);
            out.error_message = message(&e);
        }
        results.push(out);
    }
    CreatePartitionsResponse::default().with_results(results)
}
