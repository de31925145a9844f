//! DeleteRecords: advance partitions' log start offsets.

use futures::future::join_all;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use silt_actors::partition::DeleteRecords;

use crate::protocol::RequestContext;

pub async fn handle(ctx: &RequestContext, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let node = &ctx.broker.node;
    let topics = join_all(request.topics.into_iter().map(|topic| async move {
        let name = topic.name.0.as_str();
        let partitions = join_all(topic.partitions.iter().map(|p| async move {
            let result = match node.partition(name, p.partition_index) {
                Ok(handle) => handle.ask(DeleteRecords { before_offset: p.offset }).await,
                Err(e) => Err(e),
            };
            let mut out = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            match result {
                Ok(low_watermark) => out.low_watermark = low_watermark,
                Err(e) => {
                    out.low_watermark = -1;
                    out.error_code = ctx.error_code(&e);
                }
            }
            out
        }))
        .await;
        DeleteRecordsTopicResult::default().with_name(topic.name.clone()).with_partitions(partitions)
    }))
    .await;
    DeleteRecordsResponse::default().with_topics(topics)
}
