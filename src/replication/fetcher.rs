//! One source broker's fetcher task (Kafka's `ReplicaFetcherThread`).
//!
//! Each round it first settles partitions whose epoch is new to it: it asks
//! the leader with OffsetForLeaderEpoch where this replica's latest epoch
//! ends and has the partition truncate there (`TruncateToLeader`), before
//! any fetch of the new epoch. Then it sends one Fetch for every partition
//! it copies, with this broker's replica id and the leader epoch it expects,
//! and hands each partition's bytes to its actor (`AppendAsFollower`).
//!
//! Errors: a connection or codec failure reconnects after a bounded,
//! doubling backoff. A partition error delays only that partition, as
//! Kafka's `replica.fetch.backoff.ms` does: FENCED_LEADER_EPOCH parks it until
//! the replica manager gives it a new role (`follow` again), since its epoch
//! is stale; OFFSET_OUT_OF_RANGE and OFFSET_MOVED_TO_TIERED_STORAGE ask the
//! leader where its log starts, and a replica whose log ends before that
//! starts again there (a new replica of an archived partition copies only
//! the hot tail); anything else
//! (NOT_LEADER_OR_FOLLOWER or an unknown topic while the leader has not yet
//! learnt its role, UNKNOWN_LEADER_EPOCH, ...) is asked again after the
//! partition backoff, so a follower that learns of a topic before its leader
//! does never stops copying it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{BrokerId as WireBrokerId, FetchRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use silt_actors::metadata::quorum::BrokerId;
use silt_actors::partition::{AppendAsFollower, GetReplicaPosition, StartAt, TruncateToLeader};
use silt_actors::replication::{FollowedPartition, LeaderEndpoint};
use silt_actors::TopicPartition;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::connection::LeaderConnection;
use super::ReplicationError;

/// Fetch v15 moved the replica id into `ReplicaState` (KIP-903).
const REPLICA_STATE_SINCE_VERSION: i16 = 15;
/// Fetch v13 names topics by id.
const TOPIC_IDS_SINCE_VERSION: i16 = 13;
/// The highest Fetch version a fetcher sends.
const FETCH_VERSION_MAX: i16 = 17;
/// OffsetForLeaderEpoch v3 carries the replica id; v4 is flexible.
const OFFSET_FOR_LEADER_EPOCH_VERSION_MAX: i16 = 4;
/// Rounds of OffsetForLeaderEpoch one truncation may take (KIP-279 asks
/// again while the leader answers an epoch this replica does not have).
const TRUNCATION_ROUNDS_MAX: usize = 16;
/// ListOffsets v8 knows the earliest local offset (-4, KIP-405); v10 is the newest asked for.
const EARLIEST_LOCAL_SINCE_VERSION: i16 = 8;
const LIST_OFFSETS_VERSION_MAX: i16 = 10;
/// ListOffsets timestamps: the log start, and the local log start.
const EARLIEST_TIMESTAMP: i64 = -2;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
/// How long an idle fetcher sleeps before it looks at its partitions again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Kafka's replica fetcher settings (`replica.fetch.*`).
#[derive(Debug, Clone)]
pub struct FetcherSettings {
    pub max_wait: Duration,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a partition whose fetch failed waits before it is asked again
    /// (`replica.fetch.backoff.ms`); the fetcher's other partitions go on.
    pub partition_backoff: Duration,
}

impl Default for FetcherSettings {
    fn default() -> Self {
        FetcherSettings {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 10 << 20,
            partition_max_bytes: 1 << 20,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            // Kafka waits 1 s; a refused fetch costs a few bytes, and after a
            // leader change the follower often learns its role first.
            partition_backoff: Duration::from_millis(250),
        }
    }
}

/// Where a followed partition stands in its fetcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A new epoch: truncate (OffsetForLeaderEpoch) before fetching.
    Truncating,
    Fetching {
        offset: i64,
    },
    /// Fenced or not a replica on the leader: wait for a new role.
    Parked,
    /// The leader refused the fetch offset (OFFSET_OUT_OF_RANGE, or
    /// OFFSET_MOVED_TO_TIERED_STORAGE when `tiered`): ask where its log
    /// starts before fetching again.
    OutOfRange {
        tiered: bool,
    },
}

/// A partition a fetcher copies.
pub(super) struct Followed {
    part: FollowedPartition,
    state: State,
    /// Set after a partition error: not asked again before then.
    retry_at: Option<Instant>,
}

impl Followed {
    pub(super) fn new(part: FollowedPartition) -> Self {
        Followed { part, state: State::Truncating, retry_at: None }
    }

    fn due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| at <= now)
    }
}

/// The partitions of one fetcher, shared with the pool that changes them.
pub(super) struct Shared {
    pub(super) partitions: Mutex<BTreeMap<TopicPartition, Followed>>,
    pub(super) changed: Notify,
    pub(super) stats: Arc<super::FetcherStats>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TopicPartition, Followed>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Adds or re-roles partitions: one already copied at the same epoch keeps
    /// its place; a new epoch (or a parked partition) truncates first.
    pub(super) fn insert(&self, partitions: Vec<Followed>) {
        let mut map = self.lock();
        for followed in partitions {
            let tp = followed.part.handle.tp.clone();
            match map.get_mut(&tp) {
                Some(existing) if existing.part.leader_epoch == followed.part.leader_epoch && existing.state != State::Parked => existing.part = followed.part,
                _ => {
                    map.insert(tp, followed);
                }
            }
        }
        drop(map);
        self.changed.notify_one();
    }

    pub(super) fn remove(&self, partitions: &[TopicPartition]) {
        let mut map = self.lock();
        for tp in partitions {
            map.remove(tp);
        }
    }

    pub(super) fn take_all(&self) -> Vec<Followed> {
        std::mem::take(&mut *self.lock()).into_values().map(|f| Followed { state: State::Truncating, retry_at: None, ..f }).collect()
    }

    /// The partitions due to be asked now, with their states.
    fn snapshot(&self) -> Vec<(FollowedPartition, State)> {
        let now = Instant::now();
        self.lock().values().filter(|f| f.due(now)).map(|f| (f.part.clone(), f.state)).collect()
    }

    /// When the earliest delayed partition is due again.
    fn next_retry(&self) -> Option<Instant> {
        self.lock().values().filter_map(|f| f.retry_at).min()
    }

    /// Records a partition's new state, unless it was re-roled or removed
    /// meanwhile; `retry_after` delays it (a partition error).
    fn update(&self, part: &FollowedPartition, state: State, retry_after: Option<Duration>) {
        if let Some(f) = self.lock().get_mut(&part.handle.tp).filter(|f| f.part.leader_epoch == part.leader_epoch) {
            f.state = state;
            f.retry_at = retry_after.map(|d| Instant::now() + d);
        }
    }
}

/// How a round went.
enum Round {
    Fetched,
    /// Nothing was due: wait for a change or the next delayed partition.
    Idle,
}

/// The fetcher task: runs until the pool drops (aborts) it.
pub(super) async fn run(endpoint: LeaderEndpoint, local: BrokerId, shared: Arc<Shared>, settings: FetcherSettings) {
    let addr = format!("{}:{}", endpoint.host, endpoint.port);
    let mut backoff = settings.backoff_min;
    let pause = |backoff: &mut Duration| {
        let now = *backoff;
        *backoff = (*backoff * 2).min(settings.backoff_max);
        tokio::time::sleep(now)
    };
    loop {
        let mut conn = match LeaderConnection::open(&addr).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(leader = endpoint.broker_id, %addr, cause = %e, "replica fetcher cannot reach its leader");
                pause(&mut backoff).await;
                continue;
            }
        };
        tracing::info!(leader = endpoint.broker_id, %addr, "replica fetcher connected");
        loop {
            match round(&mut conn, local, &shared, &settings).await {
                Ok(Round::Fetched) => backoff = settings.backoff_min,
                Ok(Round::Idle) => {
                    let wake = Instant::now() + IDLE_WAIT;
                    let wake = shared.next_retry().map_or(wake, |at| at.min(wake));
                    let _ = tokio::time::timeout_at(wake, shared.changed.notified()).await;
                }
                Err(e) => {
                    tracing::warn!(leader = endpoint.broker_id, %addr, cause = %e, "replica fetch failed; reconnecting");
                    pause(&mut backoff).await;
                    break;
                }
            }
        }
    }
}

/// Whether a partition error means "wait for a new role": only a fenced
/// epoch does, since the replica manager will bring a newer one. Every other
/// refusal is asked again after the partition backoff (Kafka's fetcher does
/// the same), so a follower whose leader has not yet learnt its role, or the
/// topic, catches up as soon as it has.
fn parks(code: i16) -> bool {
    code == ResponseError::FencedLeaderEpoch.code()
}

async fn round(conn: &mut LeaderConnection, local: BrokerId, shared: &Shared, settings: &FetcherSettings) -> Result<Round, ReplicationError> {
    for (part, state) in shared.snapshot() {
        let next = match state {
            State::Truncating => truncate(conn, local, &part).await?,
            State::OutOfRange { tiered } => restart_point(conn, local, &part, tiered).await?,
            State::Fetching { .. } | State::Parked => continue,
        };
        let delay = (next == state).then_some(settings.partition_backoff);
        shared.update(&part, next, delay);
    }
    let fetching: Vec<(FollowedPartition, i64)> = shared
        .snapshot()
        .into_iter()
        .filter_map(|(part, state)| match state {
            State::Fetching { offset } => Some((part, offset)),
            _ => None,
        })
        .collect();
    if fetching.is_empty() {
        return Ok(Round::Idle);
    }
    fetch(conn, local, shared, settings, fetching).await?;
    Ok(Round::Fetched)
}

fn partition_error(part: &FollowedPartition, source: silt_actors::Error) -> ReplicationError {
    ReplicationError::Partition { partition: part.handle.tp.clone(), source }
}

/// Settles where a partition's log and its leader's diverge (see the module
/// docs); answers the partition's next state.
async fn truncate(conn: &mut LeaderConnection, local: BrokerId, part: &FollowedPartition) -> Result<State, ReplicationError> {
    let tp = &part.handle.tp;
    let version = conn.pick::<OffsetForLeaderEpochRequest>(OFFSET_FOR_LEADER_EPOCH_VERSION_MAX)?;
    for _ in 0..TRUNCATION_ROUNDS_MAX {
        let position = match part.handle.ask(GetReplicaPosition).await {
            Ok(position) => position,
            Err(e) => {
                tracing::warn!(partition = %tp, cause = %partition_error(part, e), "follower not ready to truncate");
                return Ok(State::Truncating);
            }
        };
        let Some(epoch) = position.latest_epoch else {
            // An empty log (or one with no epochs): nothing can diverge.
            return Ok(State::Fetching { offset: position.log_end_offset });
        };
        let request = OffsetForLeaderEpochRequest::default().with_replica_id(WireBrokerId(local)).with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_string(tp.topic.to_string())))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(part.leader_epoch)
                .with_leader_epoch(epoch)])]);
        let response = conn.call(&request, version).await?;
        let answer = response.topics.iter().flat_map(|t| &t.partitions).find(|p| p.partition == tp.partition);
        let Some(answer) = answer else {
            return Err(ReplicationError::Protocol(format!("{} did not answer OffsetForLeaderEpoch for {tp}", conn.addr())));
        };
        if answer.error_code != 0 {
            tracing::info!(partition = %tp, error_code = answer.error_code, "OffsetForLeaderEpoch refused");
            return Ok(if parks(answer.error_code) { State::Parked } else { State::Truncating });
        }
        let truncation = part.handle.ask(TruncateToLeader { leader_epoch: answer.leader_epoch, end_offset: answer.end_offset }).await;
        match truncation {
            Ok(t) if t.completed => return Ok(State::Fetching { offset: t.position.log_end_offset }),
            Ok(_) => continue,
            Err(e @ silt_actors::Error::NotLeaderOrFollower { .. }) => {
                tracing::info!(partition = %tp, cause = %e, "no longer a follower");
                return Ok(State::Parked);
            }
            Err(e) => {
                tracing::warn!(partition = %tp, cause = %e, "truncation failed");
                return Ok(State::Truncating);
            }
        }
    }
    Ok(State::Truncating)
}

/// Kafka's answer to an out-of-range fetch (`ReplicaFetcherThread`'s
/// `handleOutOfRangeError`, and KIP-405's for a tiered offset): ask the leader
/// where its log starts (its local log start when the rest is archived). A
/// replica whose log ends before that empties its log and starts there, so a
/// new replica of an archived partition copies only the hot tail; any other
/// truncates as after a new epoch.
async fn restart_point(conn: &mut LeaderConnection, local: BrokerId, part: &FollowedPartition, tiered: bool) -> Result<State, ReplicationError> {
    let tp = &part.handle.tp;
    let version = conn.pick::<ListOffsetsRequest>(LIST_OFFSETS_VERSION_MAX)?;
    if tiered && version < EARLIEST_LOCAL_SINCE_VERSION {
        return Err(ReplicationError::Protocol(format!(
            "{} moved {tp} to tiered storage but does not serve ListOffsets v{EARLIEST_LOCAL_SINCE_VERSION}",
            conn.addr()
        )));
    }
    let timestamp = if tiered { EARLIEST_LOCAL_TIMESTAMP } else { EARLIEST_TIMESTAMP };
    let request = ListOffsetsRequest::default().with_replica_id(WireBrokerId(local)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(StrBytes::from_string(tp.topic.to_string())))
        .with_partitions(vec![ListOffsetsPartition::default()
            .with_partition_index(tp.partition)
            .with_current_leader_epoch(part.leader_epoch)
            .with_timestamp(timestamp)])]);
    let response = conn.call(&request, version).await?;
    let Some(answer) = response.topics.iter().flat_map(|t| &t.partitions).find(|p| p.partition_index == tp.partition) else {
        return Err(ReplicationError::Protocol(format!("{} did not answer ListOffsets for {tp}", conn.addr())));
    };
    if answer.error_code != 0 {
        tracing::info!(partition = %tp, error_code = answer.error_code, "ListOffsets refused");
        return Ok(if parks(answer.error_code) { State::Parked } else { State::OutOfRange { tiered } });
    }
    let position = match part.handle.ask(GetReplicaPosition).await {
        Ok(position) => position,
        Err(e) => {
            tracing::warn!(partition = %tp, cause = %partition_error(part, e), "follower not ready to restart");
            return Ok(State::OutOfRange { tiered });
        }
    };
    let leader_start = answer.offset;
    if leader_start <= position.log_end_offset {
        return Ok(State::Truncating);
    }
    match part.handle.ask(StartAt(leader_start)).await {
        Ok(position) => Ok(State::Fetching { offset: position.log_end_offset }),
        Err(e @ silt_actors::Error::NotLeaderOrFollower { .. }) => {
            tracing::info!(partition = %tp, cause = %e, "no longer a follower");
            Ok(State::Parked)
        }
        Err(e) => {
            tracing::warn!(partition = %tp, cause = %e, "restarting the log failed");
            Ok(State::OutOfRange { tiered })
        }
    }
}

/// One Fetch for every partition in `fetching`; a partition that fails is
/// delayed by the partition backoff.
async fn fetch(
    conn: &mut LeaderConnection,
    local: BrokerId,
    shared: &Shared,
    settings: &FetcherSettings,
    fetching: Vec<(FollowedPartition, i64)>,
) -> Result<(), ReplicationError> {
    let ids_known = fetching.iter().all(|(p, _)| !p.topic_id.is_nil());
    let version = conn.pick::<FetchRequest>(if ids_known { FETCH_VERSION_MAX } else { TOPIC_IDS_SINCE_VERSION - 1 })?;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (part, offset) in &fetching {
        let partition = FetchPartition::default()
            .with_partition(part.handle.tp.partition)
            .with_current_leader_epoch(part.leader_epoch)
            .with_fetch_offset(*offset)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(settings.partition_max_bytes);
        let name = &part.handle.tp.topic;
        match topics.iter_mut().find(|t| t.topic.0.as_str() == &**name) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                    .with_topic_id(part.topic_id)
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let mut request = FetchRequest::default()
        .with_max_wait_ms(i32::try_from(settings.max_wait.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(settings.min_bytes)
        .with_max_bytes(settings.max_bytes)
        .with_session_epoch(-1)
        .with_topics(topics);
    if version >= REPLICA_STATE_SINCE_VERSION {
        request.replica_state = ReplicaState::default().with_replica_id(WireBrokerId(local)).with_replica_epoch(-1);
    } else {
        request.replica_id = WireBrokerId(local);
    }
    let response = conn.call_waiting(&request, version, settings.max_wait).await?;
    if response.error_code != 0 {
        return Err(ReplicationError::Protocol(format!("{} answered Fetch with error code {}", conn.addr(), response.error_code)));
    }
    // Partitions are independent actors: their appends run side by side.
    let outcomes = response.responses.iter().flat_map(|topic| topic.partitions.iter().map(move |answer| (topic, answer))).filter_map(|(topic, answer)| {
        let found = fetching.iter().find(|(p, _)| {
            p.handle.tp.partition == answer.partition_index
                && if version >= TOPIC_IDS_SINCE_VERSION { p.topic_id == topic.topic_id } else { &*p.handle.tp.topic == topic.topic.0.as_str() }
        });
        found.map(|(part, offset)| async move { (part, settle(shared, settings, part, *offset, answer).await) })
    });
    for (part, (next, delay)) in join_all(outcomes).await {
        shared.update(part, next, delay);
    }
    Ok(())
}

/// A partition's next state (and backoff) after its leader's answer to a
/// fetch: its records appended, or its error handled (see the module docs).
async fn settle(shared: &Shared, settings: &FetcherSettings, part: &FollowedPartition, offset: i64, answer: &PartitionData) -> (State, Option<Duration>) {
    let retry = Some(settings.partition_backoff);
    if answer.error_code == 0 {
        let records = answer.records.clone().unwrap_or_default();
        let bytes = records.len();
        let appended = part.handle.ask(AppendAsFollower { records, leader_hw: answer.high_watermark, leader_log_start: answer.log_start_offset }).await;
        return match appended {
            Ok(position) => {
                shared.stats.fetched(&part.handle.tp, bytes, answer.high_watermark, position.log_end_offset);
                (State::Fetching { offset: position.log_end_offset }, None)
            }
            Err(e @ silt_actors::Error::NotLeaderOrFollower { .. }) => {
                tracing::info!(partition = %part.handle.tp, cause = %e, "no longer a follower");
                (State::Parked, None)
            }
            Err(e) => {
                tracing::warn!(partition = %part.handle.tp, cause = %e, "follower append failed; truncating again");
                (State::Truncating, retry)
            }
        };
    }
    if parks(answer.error_code) {
        tracing::info!(partition = %part.handle.tp, error_code = answer.error_code, "leader fenced the fetch; waiting for a new role");
        (State::Parked, None)
    } else if answer.error_code == ResponseError::OffsetOutOfRange.code() {
        (State::OutOfRange { tiered: false }, None)
    } else if answer.error_code == ResponseError::OffsetMovedToTieredStorage.code() {
        (State::OutOfRange { tiered: true }, None)
    } else {
        tracing::debug!(partition = %part.handle.tp, error_code = answer.error_code, "fetch refused; asking again after the backoff");
        (State::Fetching { offset }, retry)
    }
}
