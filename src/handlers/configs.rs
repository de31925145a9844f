//! DescribeConfigs, IncrementalAlterConfigs and the legacy AlterConfigs for
//! topics (and a read-only view of the broker's own settings).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym};
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::messages::{alter_configs_request, alter_configs_response};
use silt_actors::node::{AlterTopicConfigs, ConfigChange};
use silt_actors::topic_config::ConfigType;

use super::{message, wire};
use crate::protocol::RequestContext;

/// DescribeConfigs v3 added each entry's type and documentation.
const CONFIG_TYPE_SINCE_VERSION: i16 = 3;

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// The config source of a topic config.
pub fn config_source(is_default: bool) -> i8 {
    if is_default {
        SOURCE_DEFAULT
    } else {
        SOURCE_TOPIC
    }
}

fn wire_type(t: ConfigType) -> i8 {
    match t {
        ConfigType::Boolean => 1,
        ConfigType::String => 2,
        ConfigType::Int => 3,
        ConfigType::Long => 5,
        ConfigType::Double => 6,
        ConfigType::List => 7,
    }
}

pub async fn describe(ctx: &RequestContext, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = request.resources.iter().map(|resource| describe_resource(ctx, &request, resource)).collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_resource(
    ctx: &RequestContext,
    request: &DescribeConfigsRequest,
    resource: &describe_configs_request::DescribeConfigsResource,
) -> DescribeConfigsResult {
    let node = &ctx.broker.node;
    let mut out = DescribeConfigsResult::default().with_resource_type(resource.resource_type).with_resource_name(resource.resource_name.clone());
    let wanted = |name: &str| resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name));
    let entry = |name: &str, value: String, source: i8, read_only: bool, config_type: i8, doc: &str| {
        let mut e = DescribeConfigsResourceResult::default()
            .with_name(wire(name))
            .with_value(Some(wire(value.clone())))
            .with_read_only(read_only)
            .with_config_source(source);
        if request.include_synonyms {
            e.synonyms = vec![DescribeConfigsSynonym::default().with_name(wire(name)).with_value(Some(wire(value))).with_source(source)];
        }
        if ctx.version >= CONFIG_TYPE_SINCE_VERSION {
            e.config_type = config_type;
            if request.include_documentation {
                e.documentation = Some(wire(doc));
            }
        }
        e
    };
    match resource.resource_type {
        RESOURCE_TOPIC => match node.topic(resource.resource_name.as_str()) {
            Some(topic) => {
                out.configs = topic
                    .configs
                    .describe(&node.topic_defaults)
                    .into_iter()
                    .filter(|d| wanted(d.key.name))
                    .map(|d| entry(d.key.name, d.value, config_source(d.is_default), false, wire_type(d.key.config_type), d.key.doc))
                    .collect();
            }
            None => {
                let e = silt_actors::Error::UnknownTopicOrPartition(resource.resource_name.to_string());
                out.error_code = ctx.error_code(&e);
                out.error_message = message(&e);
            }
        },
        RESOURCE_BROKER => {
            let name = resource.resource_name.as_str();
            if !name.is_empty() && name != node.node_id.to_string() {
                out.error_code = ctx.count(ResponseError::InvalidRequest.code());
                out.error_message = Some(wire(format!("this is broker {}, not {name}", node.node_id)));
                return out;
            }
            out.configs =
                broker_configs(ctx).into_iter().filter(|(k, ..)| wanted(k)).map(|(k, v, t, doc)| entry(k, v, SOURCE_STATIC_BROKER, true, t, doc)).collect();
        }
        other => {
            out.error_code = ctx.count(ResponseError::InvalidRequest.code());
            out.error_message = Some(wire(format!("config resource type {other} is not supported")));
        }
    }
    out
}

/// The broker settings a Kafka admin would look for, under Kafka's names.
fn broker_configs(ctx: &RequestContext) -> Vec<(&'static str, String, i8, &'static str)> {
    let c = &ctx.broker.config;
    let d = &ctx.broker.node.topic_defaults;
    let limit = |v: Option<u64>| v.map_or("-1".to_owned(), |v| v.to_string());
    vec![
        ("broker.id", ctx.broker.node.node_id.to_string(), 3, "This broker's id (node.id)."),
        ("log.dirs", c.storage.data_dir.display().to_string(), 2, "Where partition logs live (storage.data_dir)."),
        ("num.partitions", c.log.num_partitions.to_string(), 3, "Partitions of a topic created without a count."),
        ("auto.create.topics.enable", c.log.auto_create_topics.to_string(), 1, "Create unknown topics on metadata requests."),
        ("log.segment.bytes", d.log.segment_bytes.to_string(), 3, "Default segment.bytes."),
        ("log.roll.ms", d.log.segment_ms.to_string(), 5, "Default segment.ms."),
        ("log.retention.ms", limit(d.log.retention_ms), 5, "Default retention.ms."),
        ("log.retention.bytes", limit(d.log.retention_bytes), 5, "Default retention.bytes."),
        ("message.max.bytes", d.log.max_message_bytes.to_string(), 3, "Default max.message.bytes."),
        ("min.insync.replicas", d.min_insync_replicas.to_string(), 3, "Default min.insync.replicas."),
        ("socket.request.max.bytes", c.kafka.socket_request_max_bytes.to_string(), 3, "Largest request accepted."),
    ]
}

/// IncrementalAlterConfigs on a broker: Silt's broker has no dynamic
/// configs, so deleting one (as `kafka-reassign-partitions --verify` does
/// with the replication throttles on every broker) changes nothing and
/// succeeds, as deleting an unset dynamic config does in Kafka; setting one is
/// refused, as Kafka refuses a config it cannot change at runtime.
fn alter_broker_incrementally(ctx: &RequestContext, resource: &AlterConfigsResource) -> Result<(), String> {
    let node_id = ctx.broker.node.node_id;
    let name = resource.resource_name.as_str();
    if !name.is_empty() && name != node_id.to_string() {
        return Err(format!("this is broker {node_id}, not {name}"));
    }
    let set: Vec<&str> = resource.configs.iter().filter(|c| c.config_operation != OP_DELETE).map(|c| c.name.as_str()).collect();
    if set.is_empty() {
        Ok(())
    } else {
        Err(format!("Cannot update these configs dynamically: {}; broker settings come from the configuration file", set.join(", ")))
    }
}

pub async fn incremental_alter(ctx: &RequestContext, request: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let node = &ctx.broker.node;
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let mut out = AlterConfigsResourceResponse::default().with_resource_type(resource.resource_type).with_resource_name(resource.resource_name.clone());
        if resource.resource_type == RESOURCE_BROKER {
            if let Err(refusal) = alter_broker_incrementally(ctx, &resource) {
                out.error_code = ctx.count(ResponseError::InvalidRequest.code());
                out.error_message = Some(wire(refusal));
            }
            responses.push(out);
            continue;
        }
        if resource.resource_type != RESOURCE_TOPIC {
            out.error_code = ctx.count(ResponseError::InvalidRequest.code());
            out.error_message = Some(wire(format!("config resource type {} is not supported", resource.resource_type)));
            responses.push(out);
            continue;
        }
        let mut changes = Vec::with_capacity(resource.configs.len());
        let mut refused = None;
        for config in &resource.configs {
            let key = config.name.to_string();
            match (config.config_operation, &config.value) {
                (OP_SET, Some(value)) => changes.push(ConfigChange::Set(key, value.to_string())),
                (OP_SET, None) | (OP_DELETE, _) => changes.push(ConfigChange::Delete(key)),
                (op, _) => {
                    refused = Some(silt_actors::Error::InvalidConfig {
                        key,
                        value: config.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                        reason: format!("operation {op} (APPEND/SUBTRACT) is not supported: SET the whole list (cleanup.policy=compact,delete)"),
                    });
                    break;
                }
            }
        }
        let result = match refused {
            Some(e) => Err(e),
            None => {
                node.alter_configs(AlterTopicConfigs {
                    name: resource.resource_name.to_string(),
                    changes,
                    replace_all: false,
                    validate_only: request.validate_only,
                })
                .await
            }
        };
        if let Err(e) = result {
            out.error_code = ctx.error_code(&e);
            out.error_message = message(&e);
        }
        responses.push(out);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The legacy AlterConfigs (key 33), with Kafka's replace-all semantics: a
/// resource's configs in the request become all of its dynamic configs, and
/// every override not named is removed. Each resource succeeds or fails on
/// its own, with the checks and codes Kafka's broker applies first
/// (`ConfigAdminManager.preprocess`).
pub async fn alter(ctx: &RequestContext, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let repeated = request.resources.iter().filter(|r| r.resource_type == resource.resource_type && r.resource_name == resource.resource_name).count() > 1;
        let result = if repeated {
            Err(Refusal::request("Each resource must appear at most once."))
        } else {
            replace_configs(ctx, resource, request.validate_only).await
        };
        if let Err(refusal) = result {
            out.error_code = match &refusal {
                Refusal::Domain(e) => ctx.error_code(e),
                Refusal::InvalidRequest(_) => ctx.count(ResponseError::InvalidRequest.code()),
            };
            out.error_message = Some(wire(refusal.to_string()));
        }
        responses.push(out);
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Why one resource of an AlterConfigs request was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// Malformed for this broker (INVALID_REQUEST), as Kafka words it.
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Domain(#[from] silt_actors::Error),
}

impl Refusal {
    fn request(message: impl Into<String>) -> Refusal {
        Refusal::InvalidRequest(message.into())
    }
}

async fn replace_configs(ctx: &RequestContext, resource: &alter_configs_request::AlterConfigsResource, validate_only: bool) -> Result<(), Refusal> {
    let names: Vec<&str> = resource.configs.iter().map(|c| c.name.as_str()).collect();
    if names.iter().enumerate().any(|(i, n)| names[..i].contains(n)) {
        return Err(Refusal::request("Error due to duplicate config keys"));
    }
    let nulls: Vec<&str> = resource.configs.iter().filter(|c| c.value.is_none()).map(|c| c.name.as_str()).collect();
    if !nulls.is_empty() {
        return Err(Refusal::request(format!("Null value not supported for : {}", nulls.join(", "))));
    }
    let name = resource.resource_name.as_str();
    match resource.resource_type {
        RESOURCE_TOPIC => {
            if name.is_empty() {
                return Err(Refusal::request("Default topic resources are not allowed."));
            }
            let changes = resource.configs.iter().filter_map(|c| c.value.as_ref().map(|v| ConfigChange::Set(c.name.to_string(), v.to_string()))).collect();
            let alter = AlterTopicConfigs { name: name.to_owned(), changes, replace_all: true, validate_only };
            Ok(ctx.broker.node.alter_configs(alter).await?)
        }
        RESOURCE_BROKER => {
            let node_id = ctx.broker.node.node_id;
            if !name.is_empty() {
                let id: i32 = name.parse().map_err(|_| Refusal::request(format!("Node id must be an integer, but it is: {name}")))?;
                if id != node_id {
                    return Err(Refusal::request(format!("Unexpected broker id, expected {node_id}, but received {name}")));
                }
            }
            // Silt's broker has no dynamic configs: replacing them with none
            // changes nothing, and any setting is one Kafka would also refuse
            // to change at runtime (INVALID_REQUEST, KAFKA-13609).
            if names.is_empty() {
                Ok(())
            } else {
                Err(Refusal::request(format!(
                    "Cannot update these configs dynamically: {}; broker settings come from the configuration file",
                    names.join(", ")
                )))
            }
        }
        other => Err(Refusal::request(format!("config resource type {other} is not supported"))),
    }
}
