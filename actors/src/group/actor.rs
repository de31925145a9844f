//! [`GroupActor`]: one consumer group, its timers and its durable offsets.
//!
//! The actor owns a [`GroupState`] and the group's committed [`Offsets`].
//! JoinGroup and SyncGroup answers wait for the rebalance: the actor keeps a
//! `oneshot` sender per waiting member and the handler's future awaits the
//! receiver. Timers are `run_later` handles: one session timer per member
//! (re-armed by every heartbeat), the rebalance timeout, and the initial
//! rebalance delay of a group that was empty.
//!
//! Commits are appended to the group's partition of `__consumer_offsets`
//! through that partition's actor and applied to memory once written; the
//! actor handles nothing else meanwhile (`AtomicResponse`), so memory never
//! runs ahead of the log. Group metadata is written after each completed
//! rebalance without holding up the members' answers.
//!
//! The same actor hosts a consumer-protocol group ([`ConsumerGroup`]) instead
//! when the group's type is "consumer": heartbeats are answered at once (the
//! protocol has no waiting), members keep a session timer each, and the
//! group's state is written after every heartbeat that changed it. Requests of
//! the other protocol are refused unless the group is empty.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use silt_tiering::LogError;
use tokio::sync::{oneshot, watch};

use super::consumer::{self, ConsumerGroup, HeartbeatAnswer};
use super::error::GroupError;
use super::offsets::{Committed, Offsets, OffsetsRecord, StoredGroup, StoredMember};
use super::state::{GroupState, JoinOutcome, JoinRequest, JoinResult, Limits, Member, Phase};
use super::GroupType;
use crate::error::Error;
use crate::partition::{Append, RequiredAcks};
use crate::{now_ms, PartitionHandle, TopicPartition};

/// Messages a group queues before senders wait.
pub const MAILBOX_CAPACITY: usize = 1024;
/// How often committed offsets of empty groups are checked for expiry.
pub const OFFSETS_EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Records per batch when the actor writes many at once (rewrite, delete).
pub const RECORDS_PER_BATCH_MAX: usize = 1000;

/// Timers and limits of a group.
#[derive(Debug, Clone, Copy)]
pub struct GroupTimers {
    pub initial_rebalance_delay_ms: u64,
    pub offsets_retention_ms: u64,
    pub limits: Limits,
    /// How often consumer-protocol members heartbeat (`group.consumer.heartbeat.interval.ms`).
    pub consumer_heartbeat_interval_ms: i32,
    /// How long a consumer-protocol member lives without heartbeating (`group.consumer.session.timeout.ms`).
    pub consumer_session_timeout_ms: i32,
}

/// What the rest of the node sees of a group without asking it.
#[derive(Debug, Clone, Default)]
pub struct GroupSummary {
    pub phase: Option<Phase>,
    pub group_type: GroupType,
    /// The state's name for a consumer-protocol group (`phase` is Empty or Stable then).
    pub consumer_state: Option<&'static str>,
    pub protocol_type: Option<String>,
    pub members: usize,
    pub rebalances: u64,
    pub offsets: Vec<(TopicPartition, i64)>,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// A consumer-protocol group is described as `Empty` or `Stable`.
    pub phase: Phase,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub members: Vec<Member>,
    /// The group's state if it is a consumer-protocol group (then `members` is empty).
    pub consumer: Option<ConsumerGroup>,
}

/// JoinGroup.
#[derive(Debug, Message)]
#[rtype(result = "Result<JoinResult, Error>")]
pub struct Join(pub JoinRequest);

/// SyncGroup. `assignments` is empty except from the leader.
#[derive(Debug, Message)]
#[rtype(result = "Result<Bytes, Error>")]
pub struct Sync {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

/// Heartbeat.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Heartbeat {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation_id: i32,
}

/// LeaveGroup of one member, named by member id or (v3+) instance id.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, Error>")]
pub struct Leave {
    pub member_id: String,
    pub instance_id: Option<String>,
}

/// OffsetCommit of already validated offsets.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Commit {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation_id: i32,
    pub offsets: Vec<(TopicPartition, Committed)>,
}

/// OffsetFetch: `None` asks for every committed offset.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(TopicPartition, Option<Committed>)>")]
pub struct FetchOffsets(pub Option<Vec<TopicPartition>>);

/// OffsetDelete. `subscribed` are the topics the members' subscriptions name.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<(TopicPartition, Option<GroupError>)>, Error>")]
pub struct DeleteOffsets {
    pub partitions: Vec<TopicPartition>,
    pub subscribed: HashSet<String>,
}

/// DescribeGroups.
#[derive(Debug, Message)]
#[rtype(result = "GroupDescription")]
pub struct Describe;

/// DeleteGroups: refuse unless empty, then write tombstones for everything.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct DeleteGroup;

/// Compaction: write the group's live state again at the log end.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Rewrite;

/// The coordinator lost leadership of the group's offsets partition: the
/// group stops its timers, fails its waiting joins and syncs, and stops once
/// no one holds its address.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unload;

/// Resolves a topic name to its id and partition count (`None`: no such topic).
pub type TopicLookup = Box<dyn Fn(&str) -> Option<(uuid::Uuid, i32)> + Send>;
/// Lists every topic name (for members that subscribe by regex).
pub type TopicNames = Box<dyn Fn() -> Vec<String> + Send>;

/// ConsumerGroupHeartbeat. Answers the member's state and the heartbeat
/// interval. `topics` is only used while the heartbeat is handled (the actor
/// keeps no handle on the node, whose resources must go when it shuts down).
#[derive(Message)]
#[rtype(result = "Result<(HeartbeatAnswer, i32), Error>")]
pub struct ConsumerHeartbeat {
    pub heartbeat: consumer::Heartbeat,
    pub topics: TopicLookup,
    pub topic_names: TopicNames,
}

/// One group. See the module docs.
pub struct GroupActor {
    state: GroupState,
    offsets: Offsets,
    timers: GroupTimers,
    log: PartitionHandle,
    join_waiters: HashMap<String, oneshot::Sender<Result<JoinResult, GroupError>>>,
    sync_waiters: HashMap<String, oneshot::Sender<Result<Bytes, GroupError>>>,
    session_timers: HashMap<String, SpawnHandle>,
    rebalance_timer: Option<SpawnHandle>,
    delay_timer: Option<SpawnHandle>,
    summary: watch::Sender<GroupSummary>,
    /// `Some` while the group is a consumer-protocol group.
    consumer: Option<ConsumerGroup>,
    /// Consumer-protocol members that must revoke partitions, with the timer
    /// that removes them if they have not within their rebalance timeout.
    revocation_timers: HashMap<String, SpawnHandle>,
    /// The origin of [`GroupActor::clock_ms`].
    created: tokio::time::Instant,
    /// Set by [`Unload`]: another broker coordinates the group now.
    unloaded: bool,
}

/// How long a write to the offsets topic waits for the ISR (Kafka's `offsets.commit.timeout.ms`).
pub const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The coordinator error for a failed write to the offsets partition, as
/// Kafka's `GroupMetadataManager` maps it: the partition led elsewhere now is
/// NOT_COORDINATOR; too few in-sync replicas or an offline partition is
/// COORDINATOR_NOT_AVAILABLE (the client retries).
pub fn append_error(group_id: &str, partition: i32, e: Error) -> Error {
    match e {
        Error::NotLeaderOrFollower { .. } | Error::FencedLeaderEpoch { .. } => GroupError::NotCoordinator { group_id: group_id.to_owned(), partition }.into(),
        Error::NotEnoughReplicas { .. } | Error::NotEnoughReplicasAfterAppend { .. } | Error::Unavailable(..) | Error::UnknownTopicOrPartition(_) => {
            GroupError::CoordinatorNotAvailable(format!("group {group_id}: {e}")).into()
        }
        other => other,
    }
}

fn not_available(group_id: &str) -> GroupError {
    GroupError::CoordinatorNotAvailable(format!("group {group_id} is restarting"))
}

impl GroupActor {
    /// A group, possibly restored from the offsets topic.
    pub fn new(
        group_id: String,
        stored: Option<StoredGroup>,
        offsets: Offsets,
        timers: GroupTimers,
        log: PartitionHandle,
        summary: watch::Sender<GroupSummary>,
    ) -> GroupActor {
        let mut state = GroupState::new(group_id, timers.limits);
        let mut consumer = None;
        if let Some(mut stored) = stored {
            consumer = stored.consumer.take();
            state.generation_id = stored.generation_id;
            state.protocol_type = stored.protocol_type;
            state.protocol = stored.protocol;
            for m in stored.members {
                if let Some(instance) = &m.instance_id {
                    state.static_members.insert(instance.clone(), m.member_id.clone());
                }
                state.members.insert(
                    m.member_id.clone(),
                    Member {
                        member_id: m.member_id,
                        instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        session_timeout_ms: m.session_timeout_ms,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        protocols: m.protocols.into_iter().map(|(n, b)| (n, Bytes::from(b))).collect(),
                        assignment: Bytes::from(m.assignment),
                        awaiting_join: false,
                        awaiting_sync: false,
                    },
                );
            }
            state.leader = stored.leader.filter(|l| state.members.contains_key(l)).or_else(|| state.members.keys().next().cloned());
            state.phase = if state.members.is_empty() { Phase::Empty } else { Phase::Stable };
        }
        GroupActor {
            state,
            offsets,
            timers,
            log,
            join_waiters: HashMap::new(),
            sync_waiters: HashMap::new(),
            session_timers: HashMap::new(),
            rebalance_timer: None,
            delay_timer: None,
            summary,
            consumer,
            revocation_timers: HashMap::new(),
            created: tokio::time::Instant::now(),
            unloaded: false,
        }
    }

    /// Milliseconds since the actor was created, on the runtime's monotonic
    /// clock: the clock its timers run on. The group state's rebalance and
    /// pending-member times are measured with it, never with the wall clock,
    /// so a clock step cannot cut short or stretch a delay, and tests on
    /// tokio's paused clock drive both alike.
    fn clock_ms(&self) -> i64 {
        i64::try_from(self.created.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn group_type(&self) -> GroupType {
        if self.consumer.is_some() {
            GroupType::Consumer
        } else {
            GroupType::Classic
        }
    }

    /// Publishes the group's summary (state, members, offsets) to its watchers.
    pub fn publish(&self) {
        let (phase, protocol_type, members) = match &self.consumer {
            Some(c) if self.state.phase != Phase::Dead => {
                (if c.members.is_empty() { Phase::Empty } else { Phase::Stable }, Some("consumer".to_owned()), c.members.len())
            }
            _ => (self.state.phase, self.state.protocol_type.clone(), self.state.members.len()),
        };
        let summary = GroupSummary {
            phase: Some(phase),
            group_type: self.group_type(),
            consumer_state: self.consumer.as_ref().map(consumer::state_name),
            protocol_type,
            members,
            rebalances: self.state.rebalances,
            offsets: self.offsets.iter().map(|(tp, c)| (tp.clone(), c.offset)).collect(),
        };
        self.summary.send_replace(summary);
    }

    fn stored_group(&self) -> StoredGroup {
        StoredGroup {
            protocol_type: self.state.protocol_type.clone(),
            generation_id: self.state.generation_id,
            protocol: self.state.protocol.clone(),
            leader: self.state.leader.clone(),
            members: self
                .state
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m.protocols.iter().map(|(n, b)| (n.clone(), b.to_vec())).collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
            consumer: self.consumer.clone(),
        }
    }

    /// Appends records to the group's offsets partition, in batches of at most
    /// [`RECORDS_PER_BATCH_MAX`].
    ///
    /// Each batch is written with `acks=all` and answered once the ISR has it
    /// (the partition's high watermark passed it), within
    /// [`OFFSETS_COMMIT_TIMEOUT`]; partition errors become the coordinator
    /// errors Kafka answers ([`append_error`]).
    fn append(&self, records: Vec<OffsetsRecord>) -> LocalBoxFuture<'static, Result<(), Error>> {
        let log = self.log.clone();
        let group_id = self.state.group_id.clone();
        Box::pin(async move {
            for chunk in records.chunks(RECORDS_PER_BATCH_MAX) {
                let pairs: Vec<(Bytes, Option<Bytes>)> = chunk.iter().map(OffsetsRecord::encode).collect();
                let batch = silt_tiering::batch::encode_key_values(&pairs, now_ms()).map_err(|e| Error::Log(LogError::InvalidBatch(e)))?;
                let append = log.ask(Append { records: batch, acks: RequiredAcks::All });
                match tokio::time::timeout(OFFSETS_COMMIT_TIMEOUT, append).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(append_error(&group_id, log.tp.partition, e)),
                    Err(_) => {
                        return Err(GroupError::CoordinatorNotAvailable(format!(
                            "group {group_id}: the offsets write was not replicated within {OFFSETS_COMMIT_TIMEOUT:?}"
                        ))
                        .into())
                    }
                }
            }
            Ok(())
        })
    }

    /// Writes the group metadata in the background (a failure is logged; the
    /// members' offsets, the state that matters across restarts, are written
    /// synchronously by their commits).
    fn persist_group(&self, ctx: &mut Context<Self>) {
        let record = OffsetsRecord::Group { group: self.state.group_id.clone(), value: Some(self.stored_group()) };
        let group_id = self.state.group_id.clone();
        ctx.spawn(self.append(vec![record]).into_actor(self).map(move |result, _, _| {
            if let Err(e) = result {
                tracing::warn!(group = %group_id, cause = %e, "could not write group metadata");
            }
        }));
    }

    fn arm_session(&mut self, member_id: &str, ctx: &mut Context<Self>) {
        let timeout_ms = match (&self.consumer, self.state.members.get(member_id)) {
            (Some(c), _) if c.members.contains_key(member_id) => self.timers.consumer_session_timeout_ms,
            (_, Some(member)) => member.session_timeout_ms,
            _ => return,
        };
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        let id = member_id.to_owned();
        let handle = ctx.run_later(timeout, move |act, ctx| act.session_expired(id, ctx));
        if let Some(old) = self.session_timers.insert(member_id.to_owned(), handle) {
            ctx.cancel_future(old);
        }
    }

    fn session_expired(&mut self, member_id: String, ctx: &mut Context<Self>) {
        self.session_timers.remove(&member_id);
        if let Some(c) = &mut self.consumer {
            if c.remove(&member_id) {
                tracing::info!(group = %self.state.group_id, member = %member_id, "consumer member session expired");
                self.persist_group(ctx);
                self.publish();
            }
            return;
        }
        let Some(member) = self.state.members.get(&member_id) else { return };
        if member.awaiting_join || member.awaiting_sync {
            // Kafka keeps members waiting for an answer alive.
            self.arm_session(&member_id, ctx);
            return;
        }
        tracing::info!(group = %self.state.group_id, member = %member_id, "member session expired");
        self.remove(&member_id, ctx);
    }

    fn remove(&mut self, member_id: &str, ctx: &mut Context<Self>) {
        if let Some(handle) = self.session_timers.remove(member_id) {
            ctx.cancel_future(handle);
        }
        match self.state.leave(member_id, self.clock_ms()) {
            Ok(answers) => self.answer_syncs(answers),
            Err(e) => tracing::debug!(group = %self.state.group_id, cause = %e, "member already gone"),
        }
        if let Some(tx) = self.join_waiters.remove(member_id) {
            let _ = tx.send(Err(GroupError::UnknownMemberId { group_id: self.state.group_id.clone(), member_id: member_id.to_owned() }));
        }
        self.maybe_complete_join(ctx);
        self.publish();
    }

    fn answer_syncs(&mut self, answers: super::state::Completed<Bytes>) {
        for (member_id, answer) in answers {
            if let Some(tx) = self.sync_waiters.remove(&member_id) {
                // The member may have gone: its answer has nowhere to go.
                let _ = tx.send(answer);
            }
        }
    }

    /// Completes the rebalance when every member has rejoined (after the
    /// initial delay of a group that was empty), and arms its timers.
    fn maybe_complete_join(&mut self, ctx: &mut Context<Self>) {
        if self.state.phase != Phase::PreparingRebalance {
            return;
        }
        // Syncs of the generation a new rebalance replaced must rejoin (Kafka's
        // resetAndPropagateAssignmentError).
        if !self.sync_waiters.is_empty() {
            for m in self.state.members.values_mut() {
                m.awaiting_sync = false;
            }
            let rebalance = GroupError::RebalanceInProgress(self.state.group_id.clone());
            for (_, tx) in self.sync_waiters.drain() {
                let _ = tx.send(Err(rebalance.clone()));
            }
        }
        let elapsed = (self.clock_ms() - self.state.rebalance_started_ms).max(0) as u64;
        if self.rebalance_timer.is_none() {
            let timeout = (self.state.rebalance_timeout_ms().max(0) as u64).saturating_sub(elapsed);
            self.rebalance_timer = Some(ctx.run_later(Duration::from_millis(timeout), |act, ctx| {
                act.rebalance_timer = None;
                act.complete_join(ctx);
            }));
        }
        if self.state.initial_rebalance && elapsed < self.timers.initial_rebalance_delay_ms {
            if self.delay_timer.is_none() {
                let wait = Duration::from_millis(self.timers.initial_rebalance_delay_ms - elapsed);
                self.delay_timer = Some(ctx.run_later(wait, |act, ctx| {
                    act.delay_timer = None;
                    act.maybe_complete_join(ctx);
                }));
            }
            return;
        }
        if self.state.all_joined() {
            self.complete_join(ctx);
        }
    }

    fn complete_join(&mut self, ctx: &mut Context<Self>) {
        if self.state.phase != Phase::PreparingRebalance {
            return;
        }
        for handle in [self.rebalance_timer.take(), self.delay_timer.take()].into_iter().flatten() {
            ctx.cancel_future(handle);
        }
        let answers = self.state.complete_join();
        let removed: Vec<String> = self.session_timers.keys().filter(|id| !self.state.members.contains_key(*id)).cloned().collect();
        for id in removed {
            if let Some(handle) = self.session_timers.remove(&id) {
                ctx.cancel_future(handle);
            }
        }
        for (member_id, answer) in answers {
            self.arm_session(&member_id, ctx);
            if let Some(tx) = self.join_waiters.remove(&member_id) {
                let _ = tx.send(answer);
            }
        }
        // Waiters the completion dropped (removed members) learn they are gone.
        for (member_id, tx) in self.join_waiters.drain() {
            let _ = tx.send(Err(GroupError::UnknownMemberId { group_id: self.state.group_id.clone(), member_id }));
        }
        tracing::info!(group = %self.state.group_id, generation = self.state.generation_id, members = self.state.members.len(), "rebalance completed");
        if self.state.phase == Phase::Empty {
            self.persist_group(ctx);
        }
        self.publish();
    }

    /// Whether the group has members of either protocol (offsets of empty groups expire).
    fn has_members(&self) -> bool {
        self.state.phase != Phase::Empty || self.consumer.as_ref().is_some_and(|c| !c.members.is_empty())
    }

    fn expire_offsets(&mut self, ctx: &mut Context<Self>) {
        if self.has_members() || self.offsets.is_empty() {
            return;
        }
        let horizon = now_ms().saturating_sub(i64::try_from(self.timers.offsets_retention_ms).unwrap_or(i64::MAX));
        let expired: Vec<TopicPartition> = self.offsets.iter().filter(|(_, c)| c.commit_timestamp_ms < horizon).map(|(tp, _)| tp.clone()).collect();
        if expired.is_empty() {
            return;
        }
        let group = self.state.group_id.clone();
        let records = expired.iter().map(|tp| OffsetsRecord::Offset { group: group.clone(), tp: tp.clone(), committed: None }).collect();
        ctx.wait(self.append(records).into_actor(self).map(move |result, act, _| match result {
            Ok(()) => {
                tracing::info!(group = %group, partitions = expired.len(), "expired committed offsets");
                for tp in expired {
                    act.offsets.remove(&tp);
                }
                act.publish();
            }
            Err(e) => tracing::warn!(group = %group, cause = %e, "could not expire committed offsets"),
        }));
    }
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        // Restored members must heartbeat within their session, as after a coordinator move in Kafka.
        let mut members: Vec<String> = self.state.members.keys().cloned().collect();
        members.extend(self.consumer.iter().flat_map(|c| c.members.keys().cloned()));
        for id in members {
            self.arm_session(&id, ctx);
        }
        ctx.run_interval(OFFSETS_EXPIRY_CHECK_INTERVAL, |act, ctx| {
            // A deleted group stops once the coordinator has forgotten it (stopping
            // while addresses remain would make the supervisor restart it).
            if (act.state.phase == Phase::Dead || act.unloaded) && !ctx.connected() {
                ctx.stop();
                return;
            }
            if act.unloaded {
                return;
            }
            act.expire_offsets(ctx);
        });
        self.publish();
    }
}

impl Supervised for GroupActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Waiters get an error (their senders drop); timers died with the old context.
        self.join_waiters.clear();
        self.sync_waiters.clear();
        self.session_timers.clear();
        self.revocation_timers.clear();
        self.rebalance_timer = None;
        self.delay_timer = None;
        for m in self.state.members.values_mut() {
            m.awaiting_join = false;
            m.awaiting_sync = false;
        }
    }
}

type Reply<T> = LocalBoxFuture<'static, Result<T, Error>>;

fn now<T: 'static>(result: Result<T, GroupError>) -> Reply<T> {
    Box::pin(futures::future::ready(result.map_err(Error::from)))
}

fn wait<T: 'static>(rx: oneshot::Receiver<Result<T, GroupError>>, group_id: String) -> Reply<T> {
    Box::pin(async move { rx.await.unwrap_or_else(|_| Err(not_available(&group_id))).map_err(Error::from) })
}

impl Handler<Join> for GroupActor {
    type Result = ResponseFuture<Result<JoinResult, Error>>;

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        match &self.consumer {
            Some(c) if !c.members.is_empty() => return now(Err(GroupError::InconsistentGroupProtocol(self.state.group_id.clone()))),
            // An empty consumer group becomes a classic group.
            Some(_) => self.consumer = None,
            None => {}
        }
        let client_id = msg.0.client_id.clone();
        let outcome = self.state.join(msg.0, || format!("{client_id}-{}", uuid::Uuid::new_v4()), self.clock_ms());
        let result = match outcome {
            JoinOutcome::Now(Ok(joined)) => {
                // A member answered at once (a repeated join, or a static member
                // replacing its old id) keeps its session alive from here.
                self.arm_session(&joined.member_id, ctx);
                self.persist_group(ctx);
                now(Ok(joined))
            }
            JoinOutcome::Now(result) => now(result),
            JoinOutcome::Wait { member_id } => {
                let (tx, rx) = oneshot::channel();
                if let Some(old) = self.join_waiters.insert(member_id.clone(), tx) {
                    let _ = old.send(Err(GroupError::RebalanceInProgress(self.state.group_id.clone())));
                }
                self.arm_session(&member_id, ctx);
                // A member rejoining is no longer waiting for a sync.
                if let Some(old) = self.sync_waiters.remove(&member_id) {
                    let _ = old.send(Err(GroupError::RebalanceInProgress(self.state.group_id.clone())));
                }
                let reply = wait(rx, self.state.group_id.clone());
                self.maybe_complete_join(ctx);
                reply
            }
        };
        self.publish();
        result
    }
}

impl Handler<Sync> for GroupActor {
    type Result = ResponseFuture<Result<Bytes, Error>>;

    fn handle(&mut self, msg: Sync, ctx: &mut Context<Self>) -> Self::Result {
        let before = self.state.phase;
        let result = self.state.sync(
            &msg.member_id,
            msg.instance_id.as_deref(),
            msg.generation_id,
            msg.protocol_type.as_deref(),
            msg.protocol_name.as_deref(),
            msg.assignments,
        );
        let reply = match result {
            Err(e) => now(Err(e)),
            Ok(answers) => {
                self.arm_session(&msg.member_id, ctx);
                let (tx, rx) = oneshot::channel();
                self.sync_waiters.insert(msg.member_id.clone(), tx);
                if let Some(answers) = answers {
                    self.answer_syncs(answers);
                }
                if before == Phase::CompletingRebalance && self.state.phase == Phase::Stable {
                    self.persist_group(ctx);
                }
                wait(rx, self.state.group_id.clone())
            }
        };
        self.publish();
        reply
    }
}

impl Handler<Heartbeat> for GroupActor {
    type Result = Result<(), Error>;

    fn handle(&mut self, msg: Heartbeat, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.state.heartbeat(&msg.member_id, msg.instance_id.as_deref(), msg.generation_id);
        if matches!(result, Ok(()) | Err(GroupError::RebalanceInProgress(_))) {
            self.arm_session(&msg.member_id, ctx);
        }
        Ok(result?)
    }
}

impl Handler<Leave> for GroupActor {
    type Result = Result<String, Error>;

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) -> Self::Result {
        let member_id = match (&msg.instance_id, msg.member_id.is_empty()) {
            (Some(instance), _) => match self.state.member_for_instance(instance) {
                Some(id) if msg.member_id.is_empty() || id == msg.member_id => id.to_owned(),
                Some(_) => {
                    return Err(
                        GroupError::FencedInstanceId { group_id: self.state.group_id.clone(), instance_id: instance.clone(), member_id: msg.member_id }.into()
                    )
                }
                None => return Err(GroupError::UnknownMemberId { group_id: self.state.group_id.clone(), member_id: msg.member_id }.into()),
            },
            (None, _) => msg.member_id,
        };
        if !self.state.members.contains_key(&member_id) {
            return Err(GroupError::UnknownMemberId { group_id: self.state.group_id.clone(), member_id }.into());
        }
        tracing::info!(group = %self.state.group_id, member = %member_id, "member left");
        self.remove(&member_id, ctx);
        Ok(member_id)
    }
}

impl Handler<Commit> for GroupActor {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, msg: Commit, ctx: &mut Context<Self>) -> Self::Result {
        let checked = match &self.consumer {
            Some(c) => c.check_commit(&self.state.group_id, &msg.member_id, msg.generation_id),
            None => self.state.check_commit(&msg.member_id, msg.instance_id.as_deref(), msg.generation_id),
        };
        if let Err(e) = checked {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(e.into()))));
        }
        if self.state.members.contains_key(&msg.member_id) || self.consumer.as_ref().is_some_and(|c| c.members.contains_key(&msg.member_id)) {
            self.arm_session(&msg.member_id, ctx);
        }
        let group = self.state.group_id.clone();
        let records = msg.offsets.iter().map(|(tp, c)| OffsetsRecord::Offset { group: group.clone(), tp: tp.clone(), committed: Some(c.clone()) }).collect();
        let offsets = msg.offsets;
        AtomicResponse::new(Box::pin(self.append(records).into_actor(self).map(move |result, act, _| {
            result?;
            act.offsets.extend(offsets);
            act.publish();
            Ok(())
        })))
    }
}

impl Handler<FetchOffsets> for GroupActor {
    type Result = MessageResult<FetchOffsets>;

    fn handle(&mut self, msg: FetchOffsets, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(match msg.0 {
            None => self.offsets.iter().map(|(tp, c)| (tp.clone(), Some(c.clone()))).collect(),
            Some(partitions) => partitions
                .into_iter()
                .map(|tp| {
                    let c = self.offsets.get(&tp).cloned();
                    (tp, c)
                })
                .collect(),
        })
    }
}

impl Handler<DeleteOffsets> for GroupActor {
    type Result = AtomicResponse<Self, Result<Vec<(TopicPartition, Option<GroupError>)>, Error>>;

    fn handle(&mut self, msg: DeleteOffsets, _ctx: &mut Context<Self>) -> Self::Result {
        let group = self.state.group_id.clone();
        let has_members = self.has_members();
        let results: Vec<(TopicPartition, Option<GroupError>)> = msg
            .partitions
            .into_iter()
            .map(|tp| {
                let subscribed = has_members && msg.subscribed.contains(tp.topic.as_ref());
                let error = subscribed.then(|| GroupError::GroupSubscribedToTopic { group_id: group.clone(), topic: tp.topic.to_string() });
                (tp, error)
            })
            .collect();
        let doomed: Vec<TopicPartition> = results.iter().filter(|(tp, e)| e.is_none() && self.offsets.contains_key(tp)).map(|(tp, _)| tp.clone()).collect();
        let records = doomed.iter().map(|tp| OffsetsRecord::Offset { group: group.clone(), tp: tp.clone(), committed: None }).collect();
        AtomicResponse::new(Box::pin(self.append(records).into_actor(self).map(move |result, act, _| {
            result?;
            for tp in doomed {
                act.offsets.remove(&tp);
            }
            act.publish();
            Ok(results)
        })))
    }
}

impl Handler<Describe> for GroupActor {
    type Result = MessageResult<Describe>;

    fn handle(&mut self, _msg: Describe, _ctx: &mut Context<Self>) -> Self::Result {
        let (phase, protocol_type) = match &self.consumer {
            Some(c) if self.state.phase != Phase::Dead => (if c.members.is_empty() { Phase::Empty } else { Phase::Stable }, Some("consumer".to_owned())),
            _ => (self.state.phase, self.state.protocol_type.clone()),
        };
        MessageResult(GroupDescription {
            phase,
            protocol_type,
            protocol: self.state.protocol.clone(),
            members: self.state.members.values().cloned().collect(),
            consumer: self.consumer.clone(),
        })
    }
}

impl Handler<DeleteGroup> for GroupActor {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, _msg: DeleteGroup, _ctx: &mut Context<Self>) -> Self::Result {
        let group = self.state.group_id.clone();
        let refusal = match self.state.phase {
            Phase::Empty if self.consumer.as_ref().is_some_and(|c| !c.members.is_empty()) => Some(GroupError::NonEmptyGroup(group.clone())),
            Phase::Empty if self.consumer.is_some() => None,
            Phase::Empty if self.offsets.is_empty() && self.state.generation_id == 0 => Some(GroupError::GroupIdNotFound(group.clone())),
            Phase::Empty => None,
            Phase::Dead => Some(GroupError::GroupIdNotFound(group.clone())),
            _ => Some(GroupError::NonEmptyGroup(group.clone())),
        };
        if let Some(e) = refusal {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(e.into()))));
        }
        let mut records: Vec<OffsetsRecord> =
            self.offsets.keys().map(|tp| OffsetsRecord::Offset { group: group.clone(), tp: tp.clone(), committed: None }).collect();
        records.push(OffsetsRecord::Group { group: group.clone(), value: None });
        AtomicResponse::new(Box::pin(self.append(records).into_actor(self).map(move |result, act, _| {
            result?;
            act.offsets.clear();
            act.state.kill();
            act.consumer = None;
            act.publish();
            tracing::info!(group = %group, "group deleted");
            Ok(())
        })))
    }
}

impl Handler<Unload> for GroupActor {
    type Result = ();

    fn handle(&mut self, _msg: Unload, ctx: &mut Context<Self>) {
        self.unloaded = true;
        let timers = self.session_timers.drain().chain(self.revocation_timers.drain()).map(|(_, t)| t);
        for timer in timers.chain(self.rebalance_timer.take()).chain(self.delay_timer.take()).collect::<Vec<_>>() {
            ctx.cancel_future(timer);
        }
        // Their senders drop: the waiting members get COORDINATOR_NOT_AVAILABLE and look the coordinator up again.
        self.join_waiters.clear();
        self.sync_waiters.clear();
    }
}

impl Handler<Rewrite> for GroupActor {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, _msg: Rewrite, _ctx: &mut Context<Self>) -> Self::Result {
        let group = self.state.group_id.clone();
        let mut records = Vec::with_capacity(self.offsets.len() + 1);
        if self.state.generation_id > 0 || !self.state.members.is_empty() || self.consumer.is_some() {
            records.push(OffsetsRecord::Group { group: group.clone(), value: Some(self.stored_group()) });
        }
        records.extend(self.offsets.iter().map(|(tp, c)| OffsetsRecord::Offset { group: group.clone(), tp: tp.clone(), committed: Some(c.clone()) }));
        AtomicResponse::new(Box::pin(self.append(records).into_actor(self)))
    }
}

impl Handler<ConsumerHeartbeat> for GroupActor {
    type Result = Result<(HeartbeatAnswer, i32), Error>;

    fn handle(&mut self, msg: ConsumerHeartbeat, ctx: &mut Context<Self>) -> Self::Result {
        let group_id = self.state.group_id.clone();
        if self.state.phase == Phase::Dead {
            return Err(GroupError::CoordinatorNotAvailable(format!("group {group_id} was deleted")).into());
        }
        if self.consumer.is_none() {
            if self.state.phase != Phase::Empty {
                return Err(GroupError::WrongGroupType { group_id, expected: "consumer" }.into());
            }
            // An empty classic group (or a new one) becomes a consumer group.
            self.consumer = Some(ConsumerGroup::new());
        }
        let ConsumerHeartbeat { heartbeat, topics, topic_names } = msg;
        let client_id = heartbeat.client_id.clone();
        let max_size = self.timers.limits.max_size;
        let Some(group) = self.consumer.as_mut() else { return Err(GroupError::CoordinatorNotAvailable(group_id).into()) };
        let before = group.clone();
        let answer = group.heartbeat(&group_id, heartbeat, topics, topic_names, || format!("{client_id}-{}", uuid::Uuid::new_v4()), max_size);
        let changed = *group != before;
        match &answer {
            Ok(a) if a.member_epoch >= 0 => self.arm_session(&a.member_id, ctx),
            Ok(a) if a.member_epoch == consumer::LEAVE_GROUP_MEMBER_EPOCH => {
                tracing::info!(group = %group_id, member = %a.member_id, "consumer member left");
                if let Some(handle) = self.session_timers.remove(&a.member_id) {
                    ctx.cancel_future(handle);
                }
            }
            _ => {}
        }
        if let Ok(a) = &answer {
            self.watch_revocation(&a.member_id, ctx);
        }
        if changed {
            self.persist_group(ctx);
            self.publish();
        }
        Ok((answer?, self.timers.consumer_heartbeat_interval_ms))
    }
}

impl GroupActor {
    /// Arms the revocation timer of a consumer member that must give up
    /// partitions (Kafka fences a member that has not revoked within its
    /// rebalance timeout, so that the partitions reach their new owners), and
    /// disarms it once the member has.
    fn watch_revocation(&mut self, member_id: &str, ctx: &mut Context<Self>) {
        let revoking = self.consumer.as_ref().and_then(|c| c.members.get(member_id)).filter(|m| m.state == consumer::MemberState::UnrevokedPartitions);
        match revoking {
            None => {
                if let Some(handle) = self.revocation_timers.remove(member_id) {
                    ctx.cancel_future(handle);
                }
            }
            Some(_) if self.revocation_timers.contains_key(member_id) => {}
            Some(m) => {
                let timeout = Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64);
                let id = member_id.to_owned();
                let handle = ctx.run_later(timeout, move |act, ctx| {
                    act.revocation_timers.remove(&id);
                    let still = act.consumer.as_ref().and_then(|c| c.members.get(&id)).is_some_and(|m| m.state == consumer::MemberState::UnrevokedPartitions);
                    if let (true, Some(c)) = (still, act.consumer.as_mut()) {
                        tracing::info!(group = %act.state.group_id, member = %id, "consumer member did not revoke its partitions in time; removed");
                        c.remove(&id);
                        if let Some(handle) = act.session_timers.remove(&id) {
                            ctx.cancel_future(handle);
                        }
                        act.persist_group(ctx);
                        act.publish();
                    }
                });
                self.revocation_timers.insert(member_id.to_owned(), handle);
            }
        }
    }
}

#[cfg(test)]
mod tests;
