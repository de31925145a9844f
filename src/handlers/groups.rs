//! Group coordination: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups and DeleteGroups. Requests become
//! messages to the group's actor (`silt_actors::group::actor`); JoinGroup and
//! SyncGroup answers wait there until the rebalance completes.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use silt_actors::group::actor::{DeleteGroup, Describe, GroupDescription, Heartbeat, Join, Leave, Sync};
use silt_actors::group::state::{JoinRequest, Phase};
use silt_actors::group::GroupError;

use bytes::BufMut;
use kafka_protocol::protocol::Encodable;
use silt_actors::group::consumer;

use super::{authorized_operations, topic_name, wire};
use crate::protocol::RequestContext;

/// FindCoordinator v1 added the key type and the error message.
const FIND_KEY_TYPE_SINCE_VERSION: i16 = 1;
/// FindCoordinator v4 asks for several keys at once.
const FIND_BATCHED_SINCE_VERSION: i16 = 4;
/// JoinGroup v1 added the rebalance timeout (before, the session timeout served).
const JOIN_REBALANCE_TIMEOUT_SINCE_VERSION: i16 = 1;
/// JoinGroup v4: a new member first gets MEMBER_ID_REQUIRED and joins again with its id (KIP-394).
const JOIN_KNOWN_MEMBER_ID_SINCE_VERSION: i16 = 4;
/// JoinGroup v5 added the group instance id (static membership).
const JOIN_INSTANCE_ID_SINCE_VERSION: i16 = 5;
/// JoinGroup v7 made the protocol name nullable.
const JOIN_NULLABLE_PROTOCOL_SINCE_VERSION: i16 = 7;
/// SyncGroup v3 added the group instance id.
const SYNC_INSTANCE_ID_SINCE_VERSION: i16 = 3;
/// SyncGroup v5 added the protocol type and name.
const SYNC_PROTOCOL_SINCE_VERSION: i16 = 5;
/// Heartbeat v3 added the group instance id.
const HEARTBEAT_INSTANCE_ID_SINCE_VERSION: i16 = 3;
/// LeaveGroup v3 names several members (with instance ids) instead of one member id.
const LEAVE_BATCHED_SINCE_VERSION: i16 = 3;
/// ListGroups v4 added the states filter and each group's state.
const LIST_STATES_SINCE_VERSION: i16 = 4;
/// ListGroups v5 added the types filter and each group's type.
const LIST_TYPES_SINCE_VERSION: i16 = 5;
/// DescribeGroups v3 added authorized operations.
const DESCRIBE_AUTHORIZED_OPERATIONS_SINCE_VERSION: i16 = 3;
/// DescribeGroups v4 added members' group instance ids.
const DESCRIBE_INSTANCE_ID_SINCE_VERSION: i16 = 4;

/// FindCoordinator's key type of a consumer group (1 is a transactional id).
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
/// The version prefix of the embedded consumer protocol structures DescribeGroups carries.
const CONSUMER_PROTOCOL_VERSION: i16 = 0;

fn opt(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

fn invalid_group_id(group_id: &str) -> silt_actors::Error {
    GroupError::InvalidGroupId(group_id.to_owned()).into()
}

/// Checks that a member names a group that exists: SyncGroup, Heartbeat and
/// LeaveGroup of an unknown group answer UNKNOWN_MEMBER_ID (as Kafka does)
/// without creating it.
fn known_group(ctx: &RequestContext, group_id: &str, member_id: &str) -> Result<(), silt_actors::Error> {
    if group_id.is_empty() {
        return Err(invalid_group_id(group_id));
    }
    match ctx.broker.groups.existing(group_id)? {
        Some(_) => Ok(()),
        None => Err(GroupError::UnknownMemberId { group_id: group_id.to_owned(), member_id: member_id.to_owned() }.into()),
    }
}

/// One coordinator lookup: for a group, the broker that leads its offsets
/// partition (Kafka's `abs(hash(group)) % partitions`); none for transactions.
fn coordinator_for(ctx: &RequestContext, key_type: i8, key: &str) -> Result<(i32, String, i32), (i16, String)> {
    match key_type {
        KEY_TYPE_GROUP => {
            let leader = ctx.broker.groups.coordinator_of(key).map_err(|e| (ctx.error_code(&e.clone().into()), e.to_string()))?;
            let broker = &ctx.broker;
            if leader == broker.node.node_id {
                let own = broker.advertised(ctx.listener);
                return Ok((leader, own.host.clone(), own.port));
            }
            super::metadata::live_brokers(ctx)
                .into_iter()
                .find(|b| b.id == leader)
                .map(|b| (b.id, b.host, b.port))
                .ok_or_else(|| (ctx.count(ResponseError::CoordinatorNotAvailable.code()), format!("the coordinator, broker {leader}, is not live")))
        }
        KEY_TYPE_TRANSACTION => Err((ctx.count(ResponseError::CoordinatorNotAvailable.code()), "transactions are not supported".to_owned())),
        other => Err((ctx.count(ResponseError::InvalidRequest.code()), format!("unknown coordinator key type {other}"))),
    }
}

pub async fn find_coordinator(ctx: &RequestContext, request: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let mut response = FindCoordinatorResponse::default();
    if ctx.version >= FIND_BATCHED_SINCE_VERSION {
        response.coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let out = Coordinator::default().with_key(key.clone());
                match coordinator_for(ctx, request.key_type, key.as_str()) {
                    Ok((id, host, port)) => out.with_node_id(BrokerId(id)).with_host(wire(host)).with_port(port),
                    Err((code, msg)) => out.with_node_id(BrokerId(-1)).with_port(-1).with_error_code(code).with_error_message(Some(wire(msg))),
                }
            })
            .collect();
        return response;
    }
    let key_type = if ctx.version >= FIND_KEY_TYPE_SINCE_VERSION { request.key_type } else { KEY_TYPE_GROUP };
    match coordinator_for(ctx, key_type, request.key.as_str()) {
        Ok((id, host, port)) => {
            response.node_id = BrokerId(id);
            response.host = wire(host);
            response.port = port;
        }
        Err((code, msg)) => {
            response.error_code = code;
            response.node_id = BrokerId(-1);
            response.port = -1;
            if ctx.version >= FIND_KEY_TYPE_SINCE_VERSION {
                response.error_message = Some(wire(msg));
            }
        }
    }
    response
}

pub async fn join(ctx: &RequestContext, request: JoinGroupRequest) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    // Nullable strings of v7+; before, an empty string.
    let none = |s: Option<String>| if ctx.version >= JOIN_NULLABLE_PROTOCOL_SINCE_VERSION { s.map(wire) } else { Some(wire(s.unwrap_or_default())) };
    let result = if group_id.is_empty() {
        Err(invalid_group_id(&group_id))
    } else {
        let join = JoinRequest {
            member_id: request.member_id.to_string(),
            instance_id: if ctx.version >= JOIN_INSTANCE_ID_SINCE_VERSION { opt(&request.group_instance_id) } else { None },
            client_id: ctx.client_id.clone().unwrap_or_default(),
            client_host: ctx.client_host.clone(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: if ctx.version >= JOIN_REBALANCE_TIMEOUT_SINCE_VERSION { request.rebalance_timeout_ms } else { -1 },
            protocol_type: request.protocol_type.to_string(),
            protocols: request.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
            require_known_member_id: ctx.version >= JOIN_KNOWN_MEMBER_ID_SINCE_VERSION,
        };
        match ctx.broker.groups.ask(&group_id, Join(join)).await {
            Ok(result) => result,
            Err(e) => Err(e),
        }
    };
    let mut response = JoinGroupResponse::default();
    match result {
        Ok(joined) => {
            response.generation_id = joined.generation_id;
            response.protocol_type = none(joined.protocol_type);
            response.protocol_name = none(joined.protocol_name);
            response.leader = wire(joined.leader);
            response.member_id = wire(joined.member_id);
            response.members = joined
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    let mut m = JoinGroupResponseMember::default().with_member_id(wire(id)).with_metadata(metadata);
                    if ctx.version >= JOIN_INSTANCE_ID_SINCE_VERSION {
                        m.group_instance_id = instance.map(wire);
                    }
                    m
                })
                .collect();
        }
        Err(e) => {
            response.error_code = ctx.error_code(&e);
            response.generation_id = -1;
            response.protocol_type = none(None);
            response.protocol_name = none(None);
            // MEMBER_ID_REQUIRED hands out the id to rejoin with; other errors echo the request's.
            response.member_id = match &e {
                silt_actors::Error::Group(GroupError::MemberIdRequired { member_id, .. }) => wire(member_id.clone()),
                _ => request.member_id.clone(),
            };
        }
    }
    response
}

pub async fn sync(ctx: &RequestContext, request: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let msg = Sync {
        member_id: request.member_id.to_string(),
        instance_id: if ctx.version >= SYNC_INSTANCE_ID_SINCE_VERSION { opt(&request.group_instance_id) } else { None },
        generation_id: request.generation_id,
        protocol_type: if ctx.version >= SYNC_PROTOCOL_SINCE_VERSION { opt(&request.protocol_type) } else { None },
        protocol_name: if ctx.version >= SYNC_PROTOCOL_SINCE_VERSION { opt(&request.protocol_name) } else { None },
        assignments: request.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect(),
    };
    let result = match known_group(ctx, &group_id, &msg.member_id) {
        Err(e) => Err(e),
        Ok(()) => ctx.broker.groups.ask(&group_id, msg).await.and_then(|r| r),
    };
    let mut response = SyncGroupResponse::default();
    match result {
        Ok(assignment) => {
            response.assignment = assignment;
            if ctx.version >= SYNC_PROTOCOL_SINCE_VERSION {
                // Answer with the group's chosen protocol, as Kafka does.
                let described = ctx.broker.groups.ask(&group_id, Describe).await.ok();
                response.protocol_type = described.as_ref().and_then(|d| d.protocol_type.clone()).map(wire);
                response.protocol_name = described.and_then(|d| d.protocol).map(wire);
            }
        }
        Err(e) => {
            response.error_code = ctx.error_code(&e);
            response.assignment = Bytes::new();
        }
    }
    response
}

pub async fn heartbeat(ctx: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let msg = Heartbeat {
        member_id: request.member_id.to_string(),
        instance_id: if ctx.version >= HEARTBEAT_INSTANCE_ID_SINCE_VERSION { opt(&request.group_instance_id) } else { None },
        generation_id: request.generation_id,
    };
    let result = match known_group(ctx, &group_id, &msg.member_id) {
        Err(e) => Err(e),
        Ok(()) => ctx.broker.groups.ask(&group_id, msg).await.and_then(|r| r),
    };
    let mut response = HeartbeatResponse::default();
    if let Err(e) = result {
        response.error_code = ctx.error_code(&e);
    }
    response
}

pub async fn leave(ctx: &RequestContext, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let mut response = LeaveGroupResponse::default();
    if let Err(e) = known_group(ctx, &group_id, request.member_id.as_str()) {
        response.error_code = ctx.error_code(&e);
        return response;
    }
    let groups = &ctx.broker.groups;
    if ctx.version < LEAVE_BATCHED_SINCE_VERSION {
        let msg = Leave { member_id: request.member_id.to_string(), instance_id: None };
        if let Err(e) = groups.ask(&group_id, msg).await.and_then(|r| r) {
            response.error_code = ctx.error_code(&e);
        }
        return response;
    }
    for member in &request.members {
        let msg = Leave { member_id: member.member_id.to_string(), instance_id: opt(&member.group_instance_id) };
        let mut out = MemberResponse::default().with_member_id(member.member_id.clone()).with_group_instance_id(member.group_instance_id.clone());
        match groups.ask(&group_id, msg).await.and_then(|r| r) {
            Ok(member_id) => out.member_id = wire(member_id),
            Err(e) => out.error_code = ctx.error_code(&e),
        }
        response.members.push(out);
    }
    response
}

pub async fn list(ctx: &RequestContext, request: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> =
        if ctx.version >= LIST_STATES_SINCE_VERSION { request.states_filter.iter().map(|s| s.to_lowercase()).collect() } else { Vec::new() };
    let types: Vec<String> = if ctx.version >= LIST_TYPES_SINCE_VERSION { request.types_filter.iter().map(|s| s.to_lowercase()).collect() } else { Vec::new() };
    let groups = ctx
        .broker
        .groups
        .list()
        .into_iter()
        .filter_map(|(id, summary)| {
            let phase = summary.phase?;
            let state = summary.consumer_state.unwrap_or(phase.as_str());
            let group_type = summary.group_type.as_str();
            if !states.is_empty() && !states.iter().any(|s| s == &state.to_lowercase()) {
                return None;
            }
            if !types.is_empty() && !types.iter().any(|t| t == group_type) {
                return None;
            }
            let mut out = ListedGroup::default().with_group_id(GroupId(wire(id))).with_protocol_type(wire(summary.protocol_type.unwrap_or_default()));
            if ctx.version >= LIST_STATES_SINCE_VERSION {
                out.group_state = wire(state);
            }
            if ctx.version >= LIST_TYPES_SINCE_VERSION {
                out.group_type = wire(group_type);
            }
            Some(out)
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe(ctx: &RequestContext, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in &request.groups {
        let mut out = DescribedGroup::default().with_group_id(group_id.clone());
        if ctx.version >= DESCRIBE_AUTHORIZED_OPERATIONS_SINCE_VERSION && request.include_authorized_operations {
            out.authorized_operations = authorized_operations::GROUP;
        }
        let described = match describe_live(ctx, group_id.as_str()).await {
            Ok(d) => d,
            Err(code) => {
                out.error_code = code;
                groups.push(out);
                continue;
            }
        };
        let Some(d) = described else {
            // Kafka describes an unknown group as Dead, without an error.
            out.group_state = wire(Phase::Dead.as_str());
            groups.push(out);
            continue;
        };
        if let Some(c) = &d.consumer {
            // Kafka describes a consumer-protocol group in classic terms
            // (`ConsumerGroup.asDescribedGroup`): protocol type "consumer", the
            // assignor as protocol, and the embedded consumer protocol structures.
            out.group_state = wire(consumer::state_name(c));
            out.protocol_type = wire("consumer");
            out.protocol_data = wire(c.assignor.name());
            out.members = c
                .members
                .values()
                .map(|m| {
                    let mut member = DescribedGroupMember::default()
                        .with_member_id(wire(m.member_id.clone()))
                        .with_client_id(wire(m.client_id.clone()))
                        .with_client_host(wire(m.client_host.clone()))
                        .with_member_metadata(subscription_bytes(&m.subscribed_topic_names))
                        .with_member_assignment(assignment_bytes(ctx, &m.assigned));
                    if ctx.version >= DESCRIBE_INSTANCE_ID_SINCE_VERSION {
                        member.group_instance_id = m.instance_id.clone().map(wire);
                    }
                    member
                })
                .collect();
            groups.push(out);
            continue;
        }
        let protocol = d.protocol.clone().unwrap_or_default();
        out.group_state = wire(d.phase.as_str());
        out.protocol_type = wire(d.protocol_type.unwrap_or_default());
        out.protocol_data = wire(protocol.clone());
        let with_metadata = d.phase == Phase::Stable;
        out.members = d
            .members
            .into_iter()
            .map(|m| {
                let mut member = DescribedGroupMember::default()
                    .with_member_id(wire(m.member_id.clone()))
                    .with_client_id(wire(m.client_id.clone()))
                    .with_client_host(wire(m.client_host.clone()));
                if ctx.version >= DESCRIBE_INSTANCE_ID_SINCE_VERSION {
                    member.group_instance_id = m.instance_id.clone().map(wire);
                }
                if with_metadata {
                    member.member_metadata = m.metadata(&protocol);
                    member.member_assignment = m.assignment.clone();
                }
                member
            })
            .collect();
        groups.push(out);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete(ctx: &RequestContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let coordinator = &ctx.broker.groups;
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in &request.groups_names {
        let id = group_id.as_str();
        let result = match coordinator.existing(id) {
            Err(e) => Err(e),
            Ok(None) => Err(silt_actors::Error::from(GroupError::GroupIdNotFound(id.to_owned()))),
            Ok(Some(addr)) => match addr.send(DeleteGroup).await {
                Ok(result) => result,
                Err(e) => Err(GroupError::CoordinatorNotAvailable(e.to_string()).into()),
            },
        };
        let mut out = DeletableGroupResult::default().with_group_id(group_id.clone());
        match result {
            Ok(()) => coordinator.forget(id),
            Err(e) => out.error_code = ctx.error_code(&e),
        }
        results.push(out);
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// A `ConsumerProtocolSubscription` with its version prefix.
fn subscription_bytes(topics: &[String]) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| wire(t.clone())).collect());
    versioned(&subscription)
}

/// A `ConsumerProtocolAssignment` with its version prefix and topic names.
fn assignment_bytes(ctx: &RequestContext, assignment: &silt_actors::group::assignors::Assignment) -> Bytes {
    let partitions = assignment
        .iter()
        .filter_map(|(id, parts)| {
            let name = ctx.broker.node.topic_name(*id)?;
            Some(consumer_protocol_assignment::TopicPartition::default().with_topic(topic_name(&name)).with_partitions(parts.iter().copied().collect()))
        })
        .collect();
    versioned(&ConsumerProtocolAssignment::default().with_assigned_partitions(partitions))
}

fn versioned<T: Encodable>(value: &T) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    buf.put_i16(CONSUMER_PROTOCOL_VERSION);
    // Plain structures of strings and integers always encode at version 0.
    match value.encode(&mut buf, CONSUMER_PROTOCOL_VERSION) {
        Ok(()) => buf.freeze(),
        Err(e) => {
            tracing::warn!(cause = %e, "could not encode an embedded consumer protocol structure");
            Bytes::new()
        }
    }
}

/// Describes a group that exists and is not dead (`None` otherwise). A group
/// actor that cannot answer (restarting) is COORDINATOR_NOT_AVAILABLE, not a
/// dead or missing group, so the client retries.
pub(crate) async fn describe_live(ctx: &RequestContext, group_id: &str) -> Result<Option<GroupDescription>, i16> {
    let Some(addr) = ctx.broker.groups.existing(group_id).map_err(|e| ctx.error_code(&e))? else { return Ok(None) };
    match addr.send(Describe).await {
        Ok(d) => Ok(Some(d).filter(|d| d.phase != Phase::Dead)),
        Err(e) => Err(ctx.error_code(&GroupError::CoordinatorNotAvailable(e.to_string()).into())),
    }
}
