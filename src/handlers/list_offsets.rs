//! ListOffsets: earliest, latest, max-timestamp and by-timestamp lookups.

use futures::future::join_all;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use silt_actors::partition::{CheckedListOffset, OffsetSpec};

use crate::protocol::RequestContext;

/// ListOffsets v4 added the leader epoch.
const LEADER_EPOCH_SINCE_VERSION: i16 = 4;

/// Kafka's special timestamps.
fn offset_spec(timestamp: i64) -> OffsetSpec {
    match timestamp {
        -1 => OffsetSpec::Latest,
        -2 => OffsetSpec::Earliest,
        -3 => OffsetSpec::MaxTimestamp,
        -4 => OffsetSpec::EarliestLocal,
        -5 => OffsetSpec::LatestTiered,
        ts => OffsetSpec::Timestamp(ts.max(0)),
    }
}

pub async fn handle(ctx: &RequestContext, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let node = &ctx.broker.node;
    let topics = join_all(request.topics.into_iter().map(|topic| async move {
        let name = topic.name.0.as_str();
        let partitions = join_all(topic.partitions.iter().map(|p| async move {
            let mut out = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index).with_timestamp(-1).with_offset(-1);
            // -1 (v4+; the default before) asks for no leader-epoch check.
            let current_leader_epoch = (p.current_leader_epoch >= 0).then_some(p.current_leader_epoch);
            let (result, leader_epoch) = match node.partition(name, p.partition_index) {
                Ok(handle) => (handle.ask(CheckedListOffset { spec: offset_spec(p.timestamp), current_leader_epoch }).await, handle.watermarks().leader_epoch),
                Err(e) => (Err(e), -1),
            };
            match result {
                Ok(Some((offset, timestamp))) => {
                    out.offset = offset;
                    out.timestamp = timestamp;
                    // ListOffsets v4 added the leader epoch; older versions must leave it unset.
                    if ctx.version >= LEADER_EPOCH_SINCE_VERSION {
                        out.leader_epoch = leader_epoch;
                    }
                }
                Ok(None) => {}
                Err(e) => out.error_code = ctx.error_code(&e),
            }
            out
        }))
        .await;
        ListOffsetsTopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions)
    }))
    .await;
    ListOffsetsResponse::default().with_topics(topics)
}
