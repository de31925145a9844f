//! Committed offsets: OffsetCommit, OffsetFetch and OffsetDelete. Offsets are
//! checked here (the partition exists, the metadata fits) and committed by the
//! group's actor, which makes them durable in `__consumer_offsets`.

use std::collections::HashSet;

use bytes::Buf;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use silt_actors::group::actor::{Commit, DeleteOffsets, Describe, FetchOffsets};
use silt_actors::group::offsets::{Committed, OFFSET_METADATA_BYTES_MAX};
use silt_actors::group::GroupError;
use silt_actors::{now_ms, TopicPartition};

use super::{topic_name, wire};
use crate::protocol::RequestContext;

/// OffsetCommit v6 added the committed leader epoch.
const COMMIT_LEADER_EPOCH_SINCE_VERSION: i16 = 6;
/// OffsetCommit v7 added the group instance id (static membership).
const COMMIT_INSTANCE_ID_SINCE_VERSION: i16 = 7;
/// OffsetFetch v2 added a top-level error code.
const FETCH_TOP_LEVEL_ERROR_SINCE_VERSION: i16 = 2;
/// OffsetFetch v5 added the committed leader epoch.
const FETCH_LEADER_EPOCH_SINCE_VERSION: i16 = 5;
/// OffsetFetch v8 asks for several groups at once.
const FETCH_GROUPS_SINCE_VERSION: i16 = 8;

/// The consumer protocol's type name: its member metadata is a subscription.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Per-topic, per-partition values in request order.
type PerTopic<T> = Vec<(String, Vec<(i32, T)>)>;

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition { topic: topic.into(), partition }
}

pub async fn commit(ctx: &RequestContext, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let node = &ctx.broker.node;
    let group_id = request.group_id.0.to_string();
    // Each partition: Ok(offset to commit) or the error code already decided.
    let mut checked: PerTopic<Result<Committed, i16>> = Vec::new();
    let now = now_ms();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
                let result = if let Err(e) = node.partition(&name, p.partition_index) {
                    Err(ctx.error_code(&e))
                } else if metadata.len() > OFFSET_METADATA_BYTES_MAX {
                    Err(ctx.error_code(&GroupError::OffsetMetadataTooLarge { size: metadata.len(), max: OFFSET_METADATA_BYTES_MAX }.into()))
                } else {
                    let leader_epoch = if ctx.version >= COMMIT_LEADER_EPOCH_SINCE_VERSION { p.committed_leader_epoch } else { -1 };
                    Ok(Committed { offset: p.committed_offset, leader_epoch, metadata, commit_timestamp_ms: now })
                };
                (p.partition_index, result)
            })
            .collect();
        checked.push((name, partitions));
    }
    let valid: Vec<(TopicPartition, Committed)> =
        checked.iter().flat_map(|(name, parts)| parts.iter().filter_map(move |(p, r)| r.as_ref().ok().map(|c| (tp(name, *p), c.clone())))).collect();
    let group_result: Result<(), i16> = if valid.is_empty() {
        Ok(())
    } else {
        let msg = Commit {
            member_id: request.member_id.to_string(),
            instance_id: if ctx.version >= COMMIT_INSTANCE_ID_SINCE_VERSION { request.group_instance_id.as_ref().map(|s| s.to_string()) } else { None },
            generation_id: request.generation_id_or_member_epoch,
            offsets: valid,
        };
        ctx.broker.groups.ask(&group_id, msg).await.and_then(|r| r).map_err(|e| ctx.error_code(&e))
    };
    let topics = checked
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, r)| {
                    let code = match r {
                        Ok(_) => group_result.err().unwrap_or(0),
                        Err(code) => code,
                    };
                    OffsetCommitResponsePartition::default().with_partition_index(p).with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(topic_name(&name)).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The committed offsets of one group: `None` topics asks for all of them.
/// Unknown partitions answer offset -1, as Kafka does. A group actor that
/// cannot answer (restarting) is an error code, never "nothing committed":
/// that would send consumers back to their reset policy.
async fn fetch_group(ctx: &RequestContext, group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Result<PerTopic<Option<Committed>>, i16> {
    let wanted: Option<Vec<TopicPartition>> = topics.as_ref().map(|t| t.iter().flat_map(|(name, parts)| parts.iter().map(move |p| tp(name, *p))).collect());
    let existing = ctx.broker.groups.existing(group_id).map_err(|e| ctx.error_code(&e))?;
    let found = match existing {
        Some(addr) => match addr.send(FetchOffsets(wanted.clone())).await {
            Ok(found) => found,
            Err(e) => return Err(ctx.error_code(&GroupError::CoordinatorNotAvailable(e.to_string()).into())),
        },
        None => wanted.unwrap_or_default().into_iter().map(|tp| (tp, None)).collect(),
    };
    let mut out: PerTopic<Option<Committed>> = Vec::new();
    for (tp, committed) in found {
        match out.last_mut() {
            Some((name, parts)) if name.as_str() == tp.topic.as_ref() => parts.push((tp.partition, committed)),
            _ => out.push((tp.topic.to_string(), vec![(tp.partition, committed)])),
        }
    }
    Ok(out)
}

pub async fn fetch(ctx: &RequestContext, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    let with_epoch = ctx.version >= FETCH_LEADER_EPOCH_SINCE_VERSION;
    if ctx.version >= FETCH_GROUPS_SINCE_VERSION {
        for group in request.groups {
            let topics = group.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
            let found = match fetch_group(ctx, group.group_id.as_str(), topics).await {
                Ok(found) => found,
                Err(code) => {
                    response.groups.push(OffsetFetchResponseGroup::default().with_group_id(group.group_id).with_error_code(code));
                    continue;
                }
            };
            let topics = found
                .into_iter()
                .map(|(name, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(p, c)| {
                            let c = c.unwrap_or(Committed { offset: -1, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: 0 });
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(p)
                                .with_committed_offset(c.offset)
                                .with_committed_leader_epoch(c.leader_epoch)
                                .with_metadata(Some(wire(c.metadata)))
                        })
                        .collect();
                    OffsetFetchResponseTopics::default().with_name(topic_name(&name)).with_partitions(partitions)
                })
                .collect();
            response.groups.push(OffsetFetchResponseGroup::default().with_group_id(group.group_id).with_topics(topics));
        }
        return response;
    }
    let topics: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
    let found = match fetch_group(ctx, request.group_id.as_str(), topics.clone()).await {
        Ok(found) => found,
        // v2 added a top-level error; v1 reports it on every partition asked for.
        Err(code) if ctx.version >= FETCH_TOP_LEVEL_ERROR_SINCE_VERSION => {
            response.error_code = code;
            return response;
        }
        Err(code) => {
            response.topics = topics
                .unwrap_or_default()
                .into_iter()
                .map(|(name, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|p| OffsetFetchResponsePartition::default().with_partition_index(p).with_committed_offset(-1).with_error_code(code))
                        .collect();
                    OffsetFetchResponseTopic::default().with_name(topic_name(&name)).with_partitions(partitions)
                })
                .collect();
            return response;
        }
    };
    response.topics = found
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, c)| {
                    let c = c.unwrap_or(Committed { offset: -1, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: 0 });
                    let mut out =
                        OffsetFetchResponsePartition::default().with_partition_index(p).with_committed_offset(c.offset).with_metadata(Some(wire(c.metadata)));
                    if with_epoch {
                        out.committed_leader_epoch = c.leader_epoch;
                    }
                    out
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(topic_name(&name)).with_partitions(partitions)
        })
        .collect();
    response
}

/// The topics a consumer-protocol member subscribes to (its JoinGroup metadata).
fn subscribed_topics(metadata: &bytes::Bytes) -> Vec<String> {
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16();
    // Versions past the codec's are decoded as its newest: their fields are appended at the end.
    match ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
        Ok(subscription) => subscription.topics.iter().map(|t| t.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

pub async fn delete(ctx: &RequestContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let mut response = OffsetDeleteResponse::default();
    let group_id = request.group_id.0.to_string();
    let addr = match ctx.broker.groups.existing(&group_id) {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            response.error_code = ctx.error_code(&GroupError::GroupIdNotFound(group_id).into());
            return response;
        }
        Err(e) => {
            response.error_code = ctx.error_code(&e);
            return response;
        }
    };
    let description = match addr.send(Describe).await {
        Ok(d) => d,
        Err(e) => {
            response.error_code = ctx.error_code(&GroupError::CoordinatorNotAvailable(e.to_string()).into());
            return response;
        }
    };
    let empty = matches!(description.phase, silt_actors::group::state::Phase::Empty);
    if !empty && description.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
        response.error_code = ctx.error_code(&GroupError::NonEmptyGroup(group_id).into());
        return response;
    }
    let protocol = description.protocol.clone().unwrap_or_default();
    let mut subscribed: HashSet<String> = description.members.iter().flat_map(|m| subscribed_topics(&m.metadata(&protocol))).collect();
    // Members of a consumer-protocol group name their topics in their heartbeats.
    subscribed.extend(description.consumer.iter().flat_map(|c| c.members.values().flat_map(|m| m.subscription().map(str::to_owned))));
    let node = &ctx.broker.node;
    let mut known = Vec::new();
    let mut codes: PerTopic<Option<i16>> = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let parts = topic
            .partitions
            .iter()
            .map(|p| match node.partition(&name, p.partition_index) {
                Ok(_) => {
                    known.push(tp(&name, p.partition_index));
                    (p.partition_index, None)
                }
                Err(e) => (p.partition_index, Some(ctx.error_code(&e))),
            })
            .collect();
        codes.push((name, parts));
    }
    let results = match addr.send(DeleteOffsets { partitions: known, subscribed }).await {
        Ok(Ok(results)) => results,
        Ok(Err(e)) => {
            response.error_code = ctx.error_code(&e);
            return response;
        }
        Err(e) => {
            response.error_code = ctx.error_code(&GroupError::CoordinatorNotAvailable(e.to_string()).into());
            return response;
        }
    };
    response.topics = codes
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, code)| {
                    let code = code.unwrap_or_else(|| {
                        results
                            .iter()
                            .find(|(tp, _)| tp.topic.as_ref() == name && tp.partition == p)
                            .and_then(|(_, e)| e.clone())
                            .map_or(0, |e| ctx.error_code(&e.into()))
                    });
                    OffsetDeleteResponsePartition::default().with_partition_index(p).with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(topic_name(&name)).with_partitions(partitions)
        })
        .collect();
    response
}
