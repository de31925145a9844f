//! What the raw load generator learns about the cluster before it sends
//! anything: the topic's partitions and their leaders (Metadata), the topic
//! itself when it is missing (CreateTopics), and each partition's log start
//! and high watermark (ListOffsets).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::wire::Connection;

/// How long the topic may take to have a leader for every partition.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between metadata polls while waiting for leaders.
const TOPIC_READY_POLL: Duration = Duration::from_millis(100);
/// The broker-side timeout of CreateTopics and ListOffsets.
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// Highest Metadata version asked for (any will do: names and leaders are in all).
const METADATA_VERSION_MAX: i16 = 12;
const CREATE_TOPICS_VERSION_MAX: i16 = 7;
/// ListOffsets names topics in every version this client speaks.
const LIST_OFFSETS_VERSION_MAX: i16 = 10;
/// Kafka's error codes the discovery acts on.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// ListOffsets timestamps meaning "log start" and "high watermark".
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

/// One partition of the topic and where its leader listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    pub partition: i32,
    pub leader: String,
}

/// Finds the topic's partitions and leaders through `bootstrap` (the first
/// of a comma-separated list that answers), creating the topic with
/// `create_partitions` partitions (replication factor 1, as `silt perf`
/// does) when it is missing and that is not `None`.
pub fn discover(bootstrap: &str, topic: &str, create_partitions: Option<i32>) -> anyhow::Result<Vec<PartitionLeader>> {
    let mut conn = connect_any(bootstrap)?;
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    let mut created = false;
    loop {
        let metadata = metadata(&mut conn, topic)?;
        let t = metadata.topics.iter().find(|t| t.name.as_deref().map(|n| &**n) == Some(topic));
        let error = t.map_or(UNKNOWN_TOPIC_OR_PARTITION, |t| t.error_code);
        match (error, create_partitions) {
            (0, _) => {
                if let Some(leaders) = t.and_then(|t| leaders(&metadata, t)) {
                    return Ok(leaders);
                }
            }
            (UNKNOWN_TOPIC_OR_PARTITION, Some(partitions)) if !created => {
                create_topic(&mut conn, topic, partitions)?;
                created = true;
            }
            (UNKNOWN_TOPIC_OR_PARTITION | LEADER_NOT_AVAILABLE, _) if created => {}
            (UNKNOWN_TOPIC_OR_PARTITION, _) => bail!("topic {topic} does not exist"),
            (LEADER_NOT_AVAILABLE, _) => {}
            (code, _) => bail!("metadata for topic {topic} failed with error code {code}"),
        }
        if Instant::now() >= deadline {
            bail!("topic {topic} has no leader for every partition after {TOPIC_READY_TIMEOUT:?}");
        }
        std::thread::sleep(TOPIC_READY_POLL);
    }
}

/// The first bootstrap server that accepts a connection.
fn connect_any(bootstrap: &str) -> anyhow::Result<Connection> {
    let mut last = None;
    for addr in bootstrap.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match Connection::open(addr) {
            Ok(conn) => return Ok(conn),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no bootstrap server given")))
}

fn metadata(conn: &mut Connection, topic: &str) -> anyhow::Result<MetadataResponse> {
    let version = conn.versions.pick::<MetadataRequest>(METADATA_VERSION_MAX)?;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic_name(topic)))]))
        // Below v4 the field does not exist (and the broker's setting decides).
        .with_allow_auto_topic_creation(version < 4);
    conn.call(&request, version).context("asking for metadata")
}

/// Every partition with its leader's address, or `None` while a partition
/// has no leader yet.
fn leaders(metadata: &MetadataResponse, topic: &kafka_protocol::messages::metadata_response::MetadataResponseTopic) -> Option<Vec<PartitionLeader>> {
    let brokers: BTreeMap<BrokerId, String> = metadata.brokers.iter().map(|b| (b.node_id, format!("{}:{}", b.host, b.port))).collect();
    let mut out: Vec<PartitionLeader> = topic
        .partitions
        .iter()
        .map(|p| {
            let leader = brokers.get(&p.leader_id).filter(|_| p.error_code == 0)?;
            Some(PartitionLeader { partition: p.partition_index, leader: leader.clone() })
        })
        .collect::<Option<_>>()?;
    out.sort_by_key(|p| p.partition);
    (!out.is_empty()).then_some(out)
}

fn create_topic(conn: &mut Connection, topic: &str, partitions: i32) -> anyhow::Result<()> {
    if partitions < 1 {
        bail!("--partitions must be at least 1, got {partitions}");
    }
    let version = conn.versions.pick::<CreateTopicsRequest>(CREATE_TOPICS_VERSION_MAX)?;
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default().with_name(topic_name(topic)).with_num_partitions(partitions).with_replication_factor(1)])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let response = conn.call(&request, version).context("creating the topic")?;
    for result in &response.topics {
        match result.error_code {
            0 | TOPIC_ALREADY_EXISTS => {}
            code => bail!("cannot create topic {topic}: error code {code} ({})", result.error_message.as_deref().unwrap_or("")),
        }
    }
    Ok(())
}

/// The log start offset and high watermark of each of `partitions` (one
/// leader's), asked of that leader.
pub fn offsets(conn: &mut Connection, topic: &str, partitions: &[i32]) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let version = conn.versions.pick::<ListOffsetsRequest>(LIST_OFFSETS_VERSION_MAX)?;
    let mut out: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for (at, timestamp) in [(0, EARLIEST), (1, LATEST)] {
        let request =
            ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_timeout_ms(ADMIN_TIMEOUT_MS).with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(partitions.iter().map(|&p| ListOffsetsPartition::default().with_partition_index(p).with_timestamp(timestamp)).collect())]);
        let response = conn.call(&request, version).context("listing offsets")?;
        for p in response.topics.iter().flat_map(|t| &t.partitions) {
            if p.error_code != 0 {
                bail!("listing the offsets of {topic}-{} failed with error code {}", p.partition_index, p.error_code);
            }
            let entry = out.entry(p.partition_index).or_insert((0, 0));
            if at == 0 {
                entry.0 = p.offset;
            } else {
                entry.1 = p.offset;
            }
        }
    }
    if out.len() != partitions.len() {
        bail!("listing offsets of {topic} answered {} of {} partitions", out.len(), partitions.len());
    }
    Ok(out)
}

pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}
