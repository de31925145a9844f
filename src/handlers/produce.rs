//! Produce: append producers' record batches to partitions.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use silt_actors::partition::{Append, RequiredAcks};

use super::{message, topic_name, wire};
use crate::protocol::RequestContext;

/// Produce v13 names topics by id instead of by name.
const TOPIC_IDS_SINCE_VERSION: i16 = 13;
/// Produce v8 added per-partition error messages.
const ERROR_MESSAGE_SINCE_VERSION: i16 = 8;

fn required_acks(acks: i16) -> Option<RequiredAcks> {
    match acks {
        0 => Some(RequiredAcks::None),
        1 => Some(RequiredAcks::Leader),
        -1 => Some(RequiredAcks::All),
        _ => None,
    }
}

/// Waits for an append, for at most `timeout` when it waits for the ISR
/// (acks=all): `None` when the time ran out (REQUEST_TIMED_OUT; the batch is
/// written and may still be committed, as in Kafka). A timeout of 0 does not
/// bound the wait: a sole replica answers as soon as it has written, and
/// Kafka's own zero-timeout produce completes whatever is already satisfied.
async fn within<T>(timeout: Duration, acks: RequiredAcks, append: impl Future<Output = T>) -> Option<T> {
    if acks != RequiredAcks::All || timeout.is_zero() {
        return Some(append.await);
    }
    tokio::time::timeout(timeout, append).await.ok()
}

/// Handles a produce request; `None` when acks=0 asks for no response.
pub async fn handle(ctx: &RequestContext, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = required_acks(request.acks);
    let refused = if request.transactional_id.is_some() {
        // Transactions are not supported (InitProducerId refuses transactional ids).
        Some((ResponseError::InvalidRequest.code(), "transactional produce is not supported"))
    } else if acks.is_none() {
        Some((ResponseError::InvalidRequiredAcks.code(), "acks must be 0, 1 or -1"))
    } else {
        None
    };
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let node = &ctx.broker.node;
    let metrics = &ctx.broker.metrics;
    let topics = join_all(request.topic_data.into_iter().map(|topic| async move {
        let name = if ctx.version >= TOPIC_IDS_SINCE_VERSION { node.topic_name(topic.topic_id).map(|n| n.to_string()) } else { Some(topic.name.0.to_string()) };
        let partitions = join_all(topic.partition_data.into_iter().map(|p| {
            let name = name.clone();
            async move {
                let mut out = PartitionProduceResponse::default().with_index(p.index).with_base_offset(-1);
                let fail = |out: &mut PartitionProduceResponse, code: i16, text: &dyn std::fmt::Display| {
                    out.error_code = ctx.count(code);
                    if ctx.version >= ERROR_MESSAGE_SINCE_VERSION {
                        out.error_message = message(text);
                    }
                };
                if let Some((code, text)) = refused {
                    fail(&mut out, code, &text);
                    return out;
                }
                let Some(name) = name else {
                    fail(&mut out, ResponseError::UnknownTopicId.code(), &"unknown topic id");
                    return out;
                };
                let records = p.records.unwrap_or_else(Bytes::new);
                let Some(acks) = acks else { return out };
                let appended = match node.partition(&name, p.index) {
                    Ok(handle) => within(timeout, acks, handle.ask(Append { records, acks })).await,
                    Err(e) => Some(Err(e)),
                };
                let appended = match appended {
                    Some(appended) => appended,
                    None => {
                        fail(
                            &mut out,
                            ResponseError::RequestTimedOut.code(),
                            &"the batch was not replicated to the in-sync replicas within the request's timeout",
                        );
                        return out;
                    }
                };
                match appended {
                    Ok(result) => {
                        out.base_offset = result.base_offset;
                        out.log_append_time_ms = result.log_append_time_ms.unwrap_or(-1);
                        out.log_start_offset = result.log_start_offset;
                        metrics.bytes_in.with_label_values(&[&name]).inc_by(result.bytes_appended);
                        metrics.records_in.with_label_values(&[&name]).inc_by(result.records_appended);
                    }
                    Err(e) => {
                        out.error_code = ctx.error_code(&e);
                        if ctx.version >= ERROR_MESSAGE_SINCE_VERSION {
                            out.error_message = Some(wire(e.to_string()));
                        }
                    }
                }
                out
            }
        }))
        .await;
        let mut out = TopicProduceResponse::default().with_partition_responses(partitions);
        if ctx.version >= TOPIC_IDS_SINCE_VERSION {
            out.topic_id = topic.topic_id;
        } else {
            out.name = topic_name(topic.name.0.as_str());
        }
        out
    }))
    .await;
    if acks == Some(RequiredAcks::None) {
        return None;
    }
    Some(ProduceResponse::default().with_responses(topics))
}
