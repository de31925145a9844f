//! Fetch: read batches from partitions, long-polling until `min_bytes` are
//! available or `max_wait_ms` passes.
//!
//! Waiting costs no actor round trips: the handler watches each partition's
//! published watermarks and reads only partitions with data past the fetch
//! offset. Fetch sessions (KIP-227) are not kept: every response carries
//! session id 0, which tells clients to send full fetch requests.
//!
//! A fetch with a replica id (a follower's, `ReplicaState` since v15) reads
//! up to the log end rather than the high watermark, and it tells every
//! partition the follower's position even without new data: the fetch
//! offset is the follower's log end, which may move the high watermark. A
//! partition with records to read learns it with the read (`ReplicaFetch`);
//! one where the follower is at the log end is told (`FollowerAtLogEnd`)
//! without a read or a wait, since a follower copies every partition of its
//! leader in one fetch and most of them are idle.
//! Every read carries the client's `current_leader_epoch` (FENCED_LEADER_EPOCH
//! / UNKNOWN_LEADER_EPOCH) and a follower refuses consumers with
//! NOT_LEADER_OR_FOLLOWER (no fetching from followers yet).

use std::time::Duration;

use bytes::Bytes;
use futures::future::{select_all, FutureExt};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use silt_actors::partition::Watermarks;
use silt_actors::partition::{CheckedRead, FollowerAtLogEnd, Read, ReplicaFetch};
use silt_actors::PartitionHandle;
use tokio::time::Instant;

use super::topic_name;
use crate::protocol::RequestContext;

/// Fetch v7 added fetch sessions (KIP-227).
const FETCH_SESSION_SINCE_VERSION: i16 = 7;

/// Fetch v13 names topics by id instead of by name.
const TOPIC_IDS_SINCE_VERSION: i16 = 13;
/// Fetch v15 moved the replica id into `ReplicaState` (KIP-903).
const REPLICA_STATE_SINCE_VERSION: i16 = 15;
/// The longest a fetch may wait, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

/// One requested partition and what was read for it.
struct Slot {
    partition: i32,
    handle: Result<PartitionHandle, silt_actors::Error>,
    fetch_offset: i64,
    /// The client's view of the leader epoch (`None`: -1, no check).
    current_leader_epoch: Option<i32>,
    partition_max_bytes: usize,
    /// Whether the actor has been asked once (a follower's fetch always is).
    asked: bool,
    records: Option<Bytes>,
    error: Option<silt_actors::Error>,
    high_watermark: i64,
    log_start_offset: i64,
}

struct TopicSlots {
    name: String,
    id: uuid::Uuid,
    slots: Vec<Slot>,
}

pub async fn handle(ctx: &RequestContext, request: FetchRequest) -> FetchResponse {
    let node = &ctx.broker.node;
    let mut response = FetchResponse::default();
    if ctx.version >= FETCH_SESSION_SINCE_VERSION && request.session_id != 0 {
        // We never hand out sessions, so an incremental fetch names one we do not know.
        response.error_code = ctx.count(ResponseError::FetchSessionIdNotFound.code());
        return response;
    }
    let mut topics: Vec<TopicSlots> = request
        .topics
        .iter()
        .map(|topic| {
            let (name, unknown_id) = if ctx.version >= TOPIC_IDS_SINCE_VERSION {
                match node.topic_name(topic.topic_id) {
                    Some(name) => (name.to_string(), false),
                    None => (String::new(), true),
                }
            } else {
                (topic.topic.0.to_string(), false)
            };
            let slots = topic
                .partitions
                .iter()
                .map(|p| Slot {
                    partition: p.partition,
                    handle: if unknown_id { Err(silt_actors::Error::UnknownTopicId(topic.topic_id)) } else { node.partition(&name, p.partition) },
                    fetch_offset: p.fetch_offset,
                    current_leader_epoch: (p.current_leader_epoch >= 0).then_some(p.current_leader_epoch),
                    partition_max_bytes: p.partition_max_bytes.max(0) as usize,
                    asked: false,
                    records: None,
                    error: None,
                    high_watermark: -1,
                    log_start_offset: -1,
                })
                .collect();
            TopicSlots { name, id: topic.topic_id, slots }
        })
        .collect();

    let replica_id = if ctx.version >= REPLICA_STATE_SINCE_VERSION { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    let replica = (replica_id >= 0).then_some(replica_id);
    let max_bytes = if request.max_bytes <= 0 { i32::MAX as usize } else { request.max_bytes as usize };
    let min_bytes = request.min_bytes.max(0) as usize;
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + wait;
    loop {
        let gathered = read_available(&mut topics, max_bytes, replica).await;
        let any_error = topics.iter().flat_map(|t| &t.slots).any(|s| s.error.is_some() || s.handle.is_err());
        if gathered >= min_bytes.max(1) || any_error || Instant::now() >= deadline {
            break;
        }
        if !wait_for_data(&topics, deadline, replica).await {
            break;
        }
    }

    let metrics = &ctx.broker.metrics;
    response.responses = topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .slots
                .into_iter()
                .map(|slot| {
                    let mut out = PartitionData::default()
                        .with_partition_index(slot.partition)
                        .with_high_watermark(slot.high_watermark)
                        .with_last_stable_offset(slot.high_watermark)
                        .with_log_start_offset(slot.log_start_offset)
                        .with_aborted_transactions(Some(Vec::new()));
                    let error = slot.error.or(slot.handle.err());
                    if let Some(e) = error {
                        out.error_code = ctx.error_code(&e);
                        out.records = Some(Bytes::new());
                        return out;
                    }
                    if let Some(records) = &slot.records {
                        metrics.bytes_out.with_label_values(&[&topic.name]).inc_by(records.len() as u64);
                        metrics.records_out.with_label_values(&[&topic.name]).inc_by(silt_tiering::batch::count_records(records));
                    }
                    out.records = Some(slot.records.unwrap_or_default());
                    out
                })
                .collect();
            let mut out = FetchableTopicResponse::default().with_partitions(partitions);
            if ctx.version >= TOPIC_IDS_SINCE_VERSION {
                out.topic_id = topic.id;
            } else {
                out.topic = topic_name(&topic.name);
            }
            out
        })
        .collect();
    response
}

/// Whether a slot has an answer now, by its partition's published watermarks.
fn would_answer(marks: &Watermarks, slot: &Slot, replica: Option<i32>) -> bool {
    match replica {
        Some(_) => !slot.asked || marks.replica_fetch_would_answer(slot.fetch_offset),
        None => marks.refuses(slot.current_leader_epoch) || marks.fetch_would_answer(slot.fetch_offset),
    }
}

/// Whether a follower's fetch at `slot` has nothing to read (it is at the
/// log end) and the leader would not refuse it by its published role, so
/// that telling the partition the follower's position is the whole answer.
fn follower_at_log_end(marks: &Watermarks, slot: &Slot) -> bool {
    marks.open && !marks.refuses(slot.current_leader_epoch) && slot.fetch_offset == marks.log_end_offset && slot.fetch_offset >= marks.local_log_start_offset
}

/// Reads every partition that has data past its fetch offset and has not been
/// read yet, within the response's byte budget. Returns the bytes gathered so far.
async fn read_available(topics: &mut [TopicSlots], max_bytes: usize, replica: Option<i32>) -> usize {
    let mut gathered: usize = topics.iter().flat_map(|t| &t.slots).filter_map(|s| s.records.as_ref()).map(Bytes::len).sum();
    for slot in topics.iter_mut().flat_map(|t| t.slots.iter_mut()) {
        let Ok(handle) = &slot.handle else { continue };
        let marks = handle.watermarks();
        slot.high_watermark = marks.high_watermark;
        slot.log_start_offset = marks.log_start_offset;
        if slot.records.is_some() || slot.error.is_some() {
            continue;
        }
        if !would_answer(&marks, slot, replica) {
            continue; // nothing new yet
        }
        if let Some(replica) = replica.filter(|_| follower_at_log_end(&marks, slot)) {
            // Nothing to read: the leader only learns the follower's position.
            slot.asked = true;
            let told = FollowerAtLogEnd { replica, offset: slot.fetch_offset, current_leader_epoch: slot.current_leader_epoch };
            if let Err(e) = handle.tell(told) {
                slot.error = Some(e);
            }
            continue;
        }
        // Always let the first partition with data return one batch, even past max_bytes (KIP-74).
        let budget = max_bytes.saturating_sub(gathered).min(slot.partition_max_bytes);
        if budget == 0 && gathered > 0 {
            continue;
        }
        let read = Read { offset: slot.fetch_offset, max_bytes: budget.max(1) };
        slot.asked = true;
        let current_leader_epoch = slot.current_leader_epoch;
        let answer = match replica {
            Some(replica) => handle.ask(ReplicaFetch { replica, offset: read.offset, max_bytes: read.max_bytes, current_leader_epoch }).await,
            None => handle.ask(CheckedRead { read, current_leader_epoch }).await,
        };
        match answer {
            Ok(read) => {
                slot.high_watermark = read.high_watermark;
                slot.log_start_offset = read.log_start_offset;
                if let Some(records) = read.records {
                    gathered += records.len();
                    slot.records = Some(records);
                }
            }
            Err(e) => slot.error = Some(e),
        }
    }
    gathered
}

/// Waits until a partition without data publishes new watermarks, or the
/// deadline. Returns false at the deadline.
async fn wait_for_data(topics: &[TopicSlots], deadline: Instant, replica: Option<i32>) -> bool {
    let mut receivers: Vec<_> = topics
        .iter()
        .flat_map(|t| &t.slots)
        .filter(|s| s.records.is_none())
        .filter_map(|s| s.handle.as_ref().ok().map(|h| (h.watermarks.clone(), s)))
        .collect();
    if receivers.is_empty() {
        tokio::time::sleep_until(deadline).await;
        return false;
    }
    // Data may have arrived since the partitions were read: check before sleeping.
    for (rx, slot) in &mut receivers {
        if would_answer(&rx.borrow_and_update(), slot, replica) {
            return true;
        }
    }
    let mut receivers: Vec<_> = receivers.into_iter().map(|(rx, _)| rx).collect();
    let changes = select_all(receivers.iter_mut().map(|rx| rx.changed().boxed()));
    tokio::select! {
        _ = changes => true,
        _ = tokio::time::sleep_until(deadline) => false,
    }
}
