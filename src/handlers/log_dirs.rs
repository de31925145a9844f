//! DescribeLogDirs and AlterReplicaLogDirs. Silt keeps every partition in
//! one log directory, `storage.data_dir`, which is what both report and accept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_replica_log_dirs_response::{AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult};
use kafka_protocol::messages::describe_log_dirs_response::{DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic};
use kafka_protocol::messages::*;

use super::{topic_name, wire};
use crate::protocol::RequestContext;

/// The data directory as Kafka names a log dir: an absolute path.
fn log_dir(ctx: &RequestContext) -> PathBuf {
    let dir = &ctx.broker.config.storage.data_dir;
    std::path::absolute(dir).unwrap_or_else(|_| dir.clone())
}

/// Every partition of the data directory, or those asked for (`topics`), with
/// its size on local disk, as Kafka's `ReplicaManager.describeLogDirs` lists
/// them. A partition still opening is not listed yet (Kafka lists loaded logs).
pub async fn describe(ctx: &RequestContext, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let node = &ctx.broker.node;
    let wanted: Option<BTreeMap<&str, &[i32]>> =
        request.topics.as_ref().map(|topics| topics.iter().map(|t| (t.topic.0.as_str(), t.partitions.as_slice())).collect());
    let mut topics = Vec::new();
    for topic in node.topics() {
        let asked = match &wanted {
            None => None,
            Some(map) => match map.get(topic.name.as_ref()) {
                Some(partitions) => Some(*partitions),
                None => continue,
            },
        };
        let partitions = topic
            .partitions
            .iter()
            .filter_map(|p| p.local.as_ref())
            .filter(|p| asked.is_none_or(|asked| asked.contains(&p.tp.partition)))
            .filter_map(|p| {
                let marks = p.watermarks();
                marks.open.then(|| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p.tp.partition)
                        .with_partition_size(i64::try_from(marks.size_bytes).unwrap_or(i64::MAX))
                        // The lag of a leader's own log behind its high watermark: none.
                        .with_offset_lag(0)
                        .with_is_future_key(false)
                })
            })
            .collect::<Vec<_>>();
        // Kafka leaves out a topic none of whose partitions are listed.
        if !partitions.is_empty() {
            topics.push(DescribeLogDirsTopic::default().with_name(topic_name(&topic.name)).with_partitions(partitions));
        }
    }
    let dir = log_dir(ctx);
    let mut result = DescribeLogDirsResult::default().with_log_dir(wire(dir.display().to_string())).with_topics(topics);
    // statvfs may wait on the device: off the partition thread.
    let statted = dir.clone();
    match tokio::task::spawn_blocking(move || crate::metrics::filesystem_bytes(&statted)).await {
        Ok(Some((total, usable))) => {
            // Kafka reports sizes beyond a long as Long.MAX_VALUE.
            result.total_bytes = i64::try_from(total).unwrap_or(i64::MAX);
            result.usable_bytes = i64::try_from(usable).unwrap_or(i64::MAX);
        }
        // Kafka reports an unreadable log dir as offline.
        _ => {
            tracing::warn!(dir = %dir.display(), "statvfs of the data directory failed");
            result.error_code = ctx.count(ResponseError::KafkaStorageError.code());
            result.topics.clear();
            result.total_bytes = -1;
            result.usable_bytes = -1;
        }
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// Moving a replica to another log dir: with one log dir, a partition is
/// always already where it is asked to be (NONE); another path is
/// LOG_DIR_NOT_FOUND and a partition this broker does not host is
/// REPLICA_NOT_AVAILABLE, as Kafka answers both.
pub async fn alter_replicas(ctx: &RequestContext, request: AlterReplicaLogDirsRequest) -> AlterReplicaLogDirsResponse {
    let node = &ctx.broker.node;
    let ours = log_dir(ctx);
    let mut results = Vec::new();
    for dir in &request.dirs {
        let asked = Path::new(dir.path.as_str());
        let known = std::path::absolute(asked).is_ok_and(|p| normalized(&p) == normalized(&ours));
        for topic in &dir.topics {
            let partitions = topic
                .partitions
                .iter()
                .map(|&partition| {
                    let code = if !known {
                        ResponseError::LogDirNotFound.code()
                    } else if node.partition(topic.name.0.as_str(), partition).is_err() {
                        ResponseError::ReplicaNotAvailable.code()
                    } else {
                        0
                    };
                    let code = if code == 0 { code } else { ctx.count(code) };
                    AlterReplicaLogDirPartitionResult::default().with_partition_index(partition).with_error_code(code)
                })
                .collect();
            results.push(AlterReplicaLogDirTopicResult::default().with_topic_name(topic.name.clone()).with_partitions(partitions));
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}

/// `path` without `.` components, redundant separators or a trailing slash.
fn normalized(path: &Path) -> PathBuf {
    path.components().collect()
}
