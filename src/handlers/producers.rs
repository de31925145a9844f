//! DescribeProducers: the idempotent producers each partition remembers.

use futures::future::join_all;
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use silt_actors::partition::DescribeProducers;

use super::message;
use crate::protocol::RequestContext;

/// Each producer with its epoch, last sequence and last write. Silt has no
/// transactions, so no producer has a coordinator epoch or an open
/// transaction (-1 for both, as Kafka reports an idempotent producer).
/// `last_timestamp` is the max timestamp of the producer's last batch.
pub async fn describe(ctx: &RequestContext, request: DescribeProducersRequest) -> DescribeProducersResponse {
    let node = &ctx.broker.node;
    let topics = join_all(request.topics.into_iter().map(|topic| async move {
        let name = topic.name.0.as_str();
        let partitions = join_all(topic.partition_indexes.iter().map(|&partition| async move {
            let mut out = PartitionResponse::default().with_partition_index(partition);
            let result = match node.partition(name, partition) {
                Ok(handle) => handle.ask(DescribeProducers).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(producers) => {
                    out.active_producers = producers
                        .into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.epoch))
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp_ms)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(-1)
                        })
                        .collect();
                }
                Err(e) => {
                    out.error_code = ctx.error_code(&e);
                    out.error_message = message(&e);
                }
            }
            out
        }))
        .await;
        TopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions)
    }))
    .await;
    DescribeProducersResponse::default().with_topics(topics)
}
