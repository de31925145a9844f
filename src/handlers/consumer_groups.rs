//! The KIP-848 consumer group protocol: ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe. Requests are checked here (Kafka's request
//! validation) and become [`silt_actors::group::consumer::Heartbeat`]s for the
//! group's actor, which assigns partitions on the server.

use std::collections::BTreeMap;

use kafka_protocol::messages::consumer_group_describe_response::{self as describe_response, DescribedGroup};
use kafka_protocol::messages::consumer_group_heartbeat_response::{self as heartbeat_response};
use kafka_protocol::messages::*;
use silt_actors::group::actor::ConsumerHeartbeat;
use silt_actors::group::assignors::{Assignment, Assignor};
use silt_actors::group::consumer::{self, Heartbeat, LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH};
use silt_actors::group::GroupError;

use super::{authorized_operations, message, topic_name, wire};
use crate::protocol::RequestContext;

/// ConsumerGroupHeartbeat v1: the client generates its member id, so it is never empty.
const CLIENT_MEMBER_ID_SINCE_VERSION: i16 = 1;
/// ConsumerGroupDescribe v1 added the member type.
const MEMBER_TYPE_SINCE_VERSION: i16 = 1;

/// ConsumerGroupDescribe v1's member type of a consumer-protocol member.
const MEMBER_TYPE_CONSUMER: i8 = 1;

fn invalid(reason: &str) -> silt_actors::Error {
    GroupError::InvalidRequest(reason.to_owned()).into()
}

/// Kafka's checks of a heartbeat's fields (`throwIfConsumerGroupHeartbeatRequestIsInvalid`).
fn validate(ctx: &RequestContext, request: &ConsumerGroupHeartbeatRequest) -> Result<Option<Assignor>, silt_actors::Error> {
    if request.group_id.is_empty() {
        return Err(invalid("group_id must not be empty"));
    }
    if ctx.version >= CLIENT_MEMBER_ID_SINCE_VERSION && request.member_id.is_empty() {
        return Err(invalid("member_id must not be empty (ConsumerGroupHeartbeat v1+)"));
    }
    match request.member_epoch {
        0 => {
            if request.rebalance_timeout_ms < 0 {
                return Err(invalid("rebalance_timeout_ms must be set when a member joins"));
            }
            if request.subscribed_topic_names.is_none() && request.subscribed_topic_regex.is_none() {
                return Err(invalid("subscribed_topic_names or subscribed_topic_regex must be set when a member joins"));
            }
            if request.topic_partitions.as_ref().is_none_or(|t| !t.is_empty()) {
                return Err(invalid("topic_partitions must be empty when a member joins"));
            }
        }
        LEAVE_GROUP_STATIC_MEMBER_EPOCH if request.instance_id.is_none() => {
            return Err(invalid("member epoch -2 is for static members (instance_id must be set)"));
        }
        e if e < LEAVE_GROUP_STATIC_MEMBER_EPOCH => return Err(invalid("member_epoch must be -2, -1, 0 or a member's epoch")),
        _ => {
            if request.member_id.is_empty() {
                return Err(invalid("member_id must not be empty"));
            }
        }
    }
    match &request.server_assignor {
        None => Ok(None),
        Some(name) => Assignor::from_name(name.as_str()).map(Some).ok_or_else(|| GroupError::UnsupportedAssignor(name.to_string()).into()),
    }
}

fn to_wire(assignment: &Assignment) -> heartbeat_response::Assignment {
    let topic_partitions = assignment
        .iter()
        .map(|(id, parts)| heartbeat_response::TopicPartitions::default().with_topic_id(*id).with_partitions(parts.iter().copied().collect()))
        .collect();
    heartbeat_response::Assignment::default().with_topic_partitions(topic_partitions)
}

pub async fn heartbeat(ctx: &RequestContext, request: ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
    let mut response = ConsumerGroupHeartbeatResponse::default();
    let group_id = request.group_id.0.to_string();
    let result = match validate(ctx, &request) {
        Err(e) => Err(e),
        Ok(server_assignor) => {
            let owned = request.topic_partitions.as_ref().map(|tps| {
                let mut owned: Assignment = BTreeMap::new();
                for t in tps {
                    owned.entry(t.topic_id).or_default().extend(t.partitions.iter().copied());
                }
                owned
            });
            let heartbeat = Heartbeat {
                member_id: request.member_id.to_string(),
                member_epoch: request.member_epoch,
                instance_id: request.instance_id.as_ref().map(|s| s.to_string()),
                rack_id: request.rack_id.as_ref().map(|s| s.to_string()),
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                subscribed_topic_names: request.subscribed_topic_names.as_ref().map(|ts| ts.iter().map(|t| t.0.to_string()).collect()),
                // librdkafka sends an empty regex alongside topic names: an empty regex is "no regex".
                subscribed_topic_regex: request.subscribed_topic_regex.as_ref().map(|r| r.to_string()),
                server_assignor,
                owned,
                client_id: ctx.client_id.clone().unwrap_or_default(),
                client_host: ctx.client_host.clone(),
            };
            // A leave of a group that does not exist must not create it.
            let leaving = matches!(request.member_epoch, LEAVE_GROUP_MEMBER_EPOCH | LEAVE_GROUP_STATIC_MEMBER_EPOCH);
            let existing = if leaving { ctx.broker.groups.existing(&group_id).map(|a| a.is_some()) } else { Ok(true) };
            if let Err(e) = existing {
                Err(e)
            } else if matches!(existing, Ok(false)) {
                Err(GroupError::UnknownMemberId { group_id: group_id.clone(), member_id: heartbeat.member_id.clone() }.into())
            } else {
                let node = ctx.broker.node.clone();
                let names = node.clone();
                let topics = Box::new(move |name: &str| node.topic(name).map(|view| (view.id, view.partitions.len() as i32)));
                let topic_names = Box::new(move || names.topics().iter().map(|view| view.name.to_string()).collect());
                ctx.broker.groups.ask(&group_id, ConsumerHeartbeat { heartbeat, topics, topic_names }).await.and_then(|r| r)
            }
        }
    };
    match result {
        Ok((answer, interval_ms)) => {
            response.member_id = Some(wire(answer.member_id));
            response.member_epoch = answer.member_epoch;
            response.heartbeat_interval_ms = interval_ms;
            response.assignment = answer.assignment.as_ref().map(to_wire);
        }
        Err(e) => {
            response.error_code = ctx.error_code(&e);
            response.error_message = message(&e);
        }
    }
    response
}

/// An assignment with topic names, for ConsumerGroupDescribe.
fn describe_assignment(ctx: &RequestContext, assignment: &Assignment) -> describe_response::Assignment {
    let topic_partitions = assignment
        .iter()
        .map(|(id, parts)| {
            let name = ctx.broker.node.topic_name(*id).map(|n| n.to_string()).unwrap_or_default();
            describe_response::TopicPartitions::default().with_topic_id(*id).with_topic_name(topic_name(&name)).with_partitions(parts.iter().copied().collect())
        })
        .collect();
    describe_response::Assignment::default().with_topic_partitions(topic_partitions)
}

pub async fn describe(ctx: &RequestContext, request: ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(request.group_ids.len());
    for group_id in &request.group_ids {
        let id = group_id.as_str().to_owned();
        let mut out = DescribedGroup::default().with_group_id(group_id.clone());
        let described = match super::groups::describe_live(ctx, &id).await {
            Ok(d) => d,
            Err(code) => {
                out.error_code = code;
                groups.push(out);
                continue;
            }
        };
        let group = match described {
            Some(d) => match d.consumer {
                Some(c) => Ok(c),
                None => Err(GroupError::WrongGroupType { group_id: id.clone(), expected: "consumer" }),
            },
            _ => Err(GroupError::GroupIdNotFound(id.clone())),
        };
        match group {
            Err(e) => {
                let e = silt_actors::Error::from(e);
                out.error_code = ctx.error_code(&e);
                out.error_message = message(&e);
            }
            Ok(c) => {
                out.group_state = wire(consumer::state_name(&c));
                out.group_epoch = c.group_epoch;
                out.assignment_epoch = c.assignment_epoch;
                out.assignor_name = wire(c.assignor.name());
                if request.include_authorized_operations {
                    out.authorized_operations = authorized_operations::GROUP;
                }
                out.members = c
                    .members
                    .values()
                    .map(|m| {
                        let target = c.target.get(&m.member_id).cloned().unwrap_or_default();
                        let mut member = describe_response::Member::default()
                            .with_member_id(wire(m.member_id.clone()))
                            .with_instance_id(m.instance_id.clone().map(wire))
                            .with_rack_id(m.rack_id.clone().map(wire))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(wire(m.client_id.clone()))
                            .with_client_host(wire(m.client_host.clone()))
                            .with_subscribed_topic_names(m.subscribed_topic_names.iter().map(|t| topic_name(t)).collect())
                            .with_subscribed_topic_regex(m.subscribed_topic_regex.clone().map(wire))
                            .with_assignment(describe_assignment(ctx, &m.assigned))
                            .with_target_assignment(describe_assignment(ctx, &target));
                        if ctx.version >= MEMBER_TYPE_SINCE_VERSION {
                            member.member_type = MEMBER_TYPE_CONSUMER;
                        }
                        member
                    })
                    .collect();
            }
        }
        groups.push(out);
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
