//! [`GroupCoordinator`]: this node's group coordinator. It creates the
//! `__consumer_offsets` topic, loads every group from it before serving,
//! starts a supervised [`GroupActor`] per group on demand, answers questions
//! across groups (ListGroups, metrics) from the groups' published summaries,
//! and keeps the offsets topic bounded.
//!
//! Compaction: when a partition of the offsets topic holds more than
//! [`COMPACT_AFTER_RECORDS`] records, the coordinator notes its log end
//! offset, asks every group of that partition to write its live state again
//! (each group finishes the writes it has started first: its handlers are
//! atomic), then deletes the records before the noted offset. The groups'
//! memory is the truth, so the rewritten records are all a restart needs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;
use tokio::sync::watch;

use super::actor::{GroupActor, GroupSummary, GroupTimers, Rewrite};
use super::error::GroupError;
use super::offsets::{Offsets, OffsetsRecord, StoredGroup};
use super::state::Limits;
use super::{offsets_partition, OFFSETS_TOPIC};
use crate::error::Error;
use crate::node::{CreateTopic, NodeHandle};
use crate::partition::{DeleteRecords, Read};
use crate::{PartitionHandle, TopicPartition};

/// Records in an offsets partition that trigger its compaction.
pub const COMPACT_AFTER_RECORDS: i64 = 100_000;
/// How often the offsets partitions are checked for compaction.
pub const COMPACTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Bytes per read while loading the offsets topic.
const LOAD_READ_BYTES: usize = 4 * 1024 * 1024;
/// How long loading waits for an offsets partition's log to open.
const LOAD_OPEN_TIMEOUT: Duration = Duration::from_secs(120);
/// Segment size of the offsets topic (small, so compaction frees space soon).
const OFFSETS_SEGMENT_BYTES: &str = "16777216";

/// The coordinator's settings (the `[groups]` configuration section).
#[derive(Debug, Clone, Copy)]
pub struct GroupsConfig {
    pub initial_rebalance_delay_ms: u64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub max_size: usize,
    pub offsets_topic_partitions: i32,
    pub offsets_retention_ms: u64,
    /// The heartbeat interval consumer-protocol members are told (`group.consumer.heartbeat.interval.ms`).
    pub consumer_heartbeat_interval_ms: i32,
    /// How long a consumer-protocol member lives without a heartbeat (`group.consumer.session.timeout.ms`).
    pub consumer_session_timeout_ms: i32,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_size: usize::MAX,
            offsets_topic_partitions: 50,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_session_timeout_ms: 45_000,
        }
    }
}

#[derive(Clone)]
struct Entry {
    addr: Addr<GroupActor>,
    summary: watch::Receiver<GroupSummary>,
    partition: i32,
}

/// A group's id and its published summary.
pub type GroupListing = (String, GroupSummary);

/// The group coordinator. See the module docs.
pub struct GroupCoordinator {
    node: NodeHandle,
    config: GroupsConfig,
    partitions: Vec<PartitionHandle>,
    /// The thread group actors run on (request handlers run on tokio's
    /// workers, outside any arbiter, so actors must be started on one).
    arbiter: Arbiter,
    /// Never held across an await.
    groups: Mutex<HashMap<String, Entry>>,
}

fn timers(config: &GroupsConfig) -> GroupTimers {
    GroupTimers {
        initial_rebalance_delay_ms: config.initial_rebalance_delay_ms,
        offsets_retention_ms: config.offsets_retention_ms,
        limits: Limits {
            min_session_timeout_ms: config.min_session_timeout_ms,
            max_session_timeout_ms: config.max_session_timeout_ms,
            max_size: config.max_size,
        },
        consumer_heartbeat_interval_ms: config.consumer_heartbeat_interval_ms,
        consumer_session_timeout_ms: config.consumer_session_timeout_ms,
    }
}

impl GroupCoordinator {
    /// Creates the offsets topic if missing, loads every group from it and
    /// starts the compaction task. Must run inside an actix `System`.
    pub async fn start(node: NodeHandle, config: GroupsConfig) -> Result<Arc<GroupCoordinator>, Error> {
        let view = match node.topic(OFFSETS_TOPIC) {
            Some(view) => view,
            None => {
                let create = CreateTopic {
                    name: OFFSETS_TOPIC.to_owned(),
                    partitions: Some(config.offsets_topic_partitions),
                    replication_factor: None,
                    configs: vec![
                        ("retention.ms".into(), "-1".into()),
                        ("retention.bytes".into(), "-1".into()),
                        ("segment.bytes".into(), OFFSETS_SEGMENT_BYTES.into()),
                    ],
                    validate_only: false,
                };
                node.create_topic(create).await?
            }
        };
        // Groups are coordinated where every offsets partition is local (a
        // single node); coordinating per led partition comes with clusters.
        let partitions = view
            .local_partitions()
            .ok_or_else(|| Error::Unavailable(OFFSETS_TOPIC.into(), "this node does not hold every partition of the offsets topic".into()))?;
        let coordinator = Arc::new(GroupCoordinator { node, config, partitions, arbiter: Arbiter::new(), groups: Mutex::new(HashMap::new()) });
        let loaded = coordinator.load().await?;
        let count = loaded.len();
        for (group_id, (stored, offsets)) in loaded {
            coordinator.spawn(group_id, stored, offsets);
        }
        tracing::info!(groups = count, partitions = coordinator.partitions.len(), "group coordinator loaded");
        let weak = Arc::downgrade(&coordinator);
        actix::spawn(async move {
            let mut tick = tokio::time::interval(COMPACTION_CHECK_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(coordinator) = weak.upgrade() else { break };
                coordinator.compact_if_due().await;
            }
        });
        Ok(coordinator)
    }

    /// Whether `topic` is an internal topic clients may not delete.
    pub fn is_internal(topic: &str) -> bool {
        topic == OFFSETS_TOPIC
    }

    /// Reads every partition of the offsets topic; the last record of a key wins.
    async fn load(&self) -> Result<BTreeMap<String, (Option<StoredGroup>, Offsets)>, Error> {
        let mut groups: BTreeMap<String, (Option<StoredGroup>, Offsets)> = BTreeMap::new();
        for partition in &self.partitions {
            let mut offset = partition.watermarks().log_start_offset;
            // Wait for the partition's log to open (it publishes its watermarks then).
            let mut opened = partition.watermarks.clone();
            let deadline = tokio::time::Instant::now() + LOAD_OPEN_TIMEOUT;
            let mut end = loop {
                match partition.ask(crate::partition::ListOffset(crate::partition::OffsetSpec::Latest)).await {
                    Ok(Some((end, _))) => break end,
                    Ok(None) => break 0,
                    Err(e @ Error::Unavailable(..)) if tokio::time::Instant::now() >= deadline => return Err(e),
                    Err(Error::Unavailable(..)) => {
                        if tokio::time::timeout(Duration::from_secs(1), opened.changed()).await.is_ok_and(|r| r.is_err()) {
                            return Err(Error::Unavailable(partition.tp.to_string(), "closed while loading groups".into()));
                        }
                    }
                    Err(e) => return Err(e),
                }
            };
            offset = offset.max(partition.watermarks().log_start_offset);
            while offset < end {
                let read = partition.ask(Read { offset, max_bytes: LOAD_READ_BYTES }).await?;
                end = read.high_watermark;
                let Some(records) = read.records else { break };
                let decoded = silt_tiering::batch::decode_key_values(&records).map_err(|e| Error::Log(silt_tiering::LogError::InvalidBatch(e)))?;
                let Some(last) = decoded.last() else { break };
                offset = last.offset + 1;
                for kv in decoded {
                    let Some(key) = kv.key else { continue };
                    match OffsetsRecord::decode(&key, kv.value.as_deref()) {
                        Ok(Some(OffsetsRecord::Offset { group, tp, committed })) => {
                            let entry = groups.entry(group).or_default();
                            match committed {
                                Some(c) => {
                                    entry.1.insert(tp, c);
                                }
                                None => {
                                    entry.1.remove(&tp);
                                }
                            }
                        }
                        Ok(Some(OffsetsRecord::Group { group, value })) => match value {
                            Some(v) => groups.entry(group).or_default().0 = Some(v),
                            None => {
                                groups.remove(&group);
                            }
                        },
                        Ok(None) => {}
                        Err(e) => tracing::warn!(partition = %partition.tp, offset = kv.offset, cause = %e, "skipping an undecodable offsets record"),
                    }
                }
            }
        }
        groups.retain(|_, (stored, offsets)| stored.is_some() || !offsets.is_empty());
        Ok(groups)
    }

    fn spawn(&self, group_id: String, stored: Option<StoredGroup>, offsets: Offsets) -> Entry {
        let partition = offsets_partition(&group_id, self.partitions.len() as i32);
        let log = self.partitions[partition as usize].clone();
        let (tx, rx) = watch::channel(GroupSummary::default());
        let timers = timers(&self.config);
        let actor = GroupActor::new(group_id.clone(), stored, offsets, timers, log, tx);
        // Published before the actor runs, so that listings see the group at once.
        actor.publish();
        let addr = Supervisor::start_in_arbiter(&self.arbiter.handle(), move |_| actor);
        let entry = Entry { addr, summary: rx, partition };
        self.lock().insert(group_id, entry.clone());
        entry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The actor of `group_id`, started if the group is new.
    pub fn group(&self, group_id: &str) -> Addr<GroupActor> {
        let existing = self.lock().get(group_id).filter(|e| e.addr.connected()).cloned();
        match existing {
            Some(entry) => entry.addr,
            None => self.spawn(group_id.to_owned(), None, Offsets::new()).addr,
        }
    }

    /// The actor of `group_id` if the group exists (without creating it).
    pub fn existing(&self, group_id: &str) -> Option<Addr<GroupActor>> {
        self.lock().get(group_id).filter(|e| e.addr.connected()).map(|e| e.addr.clone())
    }

    /// Sends a message to a group's actor.
    pub async fn ask<M>(&self, group_id: &str, msg: M) -> Result<M::Result, Error>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        GroupActor: Handler<M>,
    {
        self.group(group_id).send(msg).await.map_err(|e| GroupError::CoordinatorNotAvailable(format!("group {group_id}: {e}")).into())
    }

    /// Forgets a deleted group.
    pub fn forget(&self, group_id: &str) {
        self.lock().remove(group_id);
    }

    /// Every live group and its summary, sorted by id.
    pub fn list(&self) -> Vec<GroupListing> {
        let mut groups: Vec<GroupListing> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.addr.connected())
            .map(|(id, e)| (id.clone(), e.summary.borrow().clone()))
            .filter(|(_, s)| s.phase.is_some_and(|p| p != super::state::Phase::Dead))
            .collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        groups
    }

    /// Compacts every offsets partition that has grown past the threshold.
    pub async fn compact_if_due(&self) {
        for partition in &self.partitions {
            let marks = partition.watermarks();
            if marks.high_watermark - marks.log_start_offset > COMPACT_AFTER_RECORDS {
                if let Err(e) = self.compact(partition).await {
                    tracing::warn!(partition = %partition.tp, cause = %e, "could not compact the offsets partition");
                }
            }
        }
    }

    /// Rewrites the live state of `partition`'s groups at its end and deletes the records before.
    ///
    /// The mark is the high watermark before the rewrite: every record below
    /// it was written before the rewrite started (so the rewrite supersedes
    /// it) and is committed, which DeleteRecords requires. Records between
    /// the high watermark and the log end are left for the next compaction.
    pub async fn compact(&self, partition: &PartitionHandle) -> Result<(), Error> {
        let mark = partition.watermarks().high_watermark;
        let index = partition.tp.partition;
        let addrs: Vec<Addr<GroupActor>> = self.lock().values().filter(|e| e.partition == index && e.addr.connected()).map(|e| e.addr.clone()).collect();
        for result in join_all(addrs.iter().map(|a| a.send(Rewrite))).await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                // A group deleted meanwhile has written its tombstones; nothing of it must survive.
                Err(MailboxError::Closed) => {}
                Err(e) => return Err(GroupError::CoordinatorNotAvailable(e.to_string()).into()),
            }
        }
        let start = partition.ask(DeleteRecords { before_offset: mark }).await?;
        tracing::info!(partition = %partition.tp, log_start_offset = start, "compacted the offsets partition");
        Ok(())
    }

    /// The committed offset of every group, for lag metrics.
    pub fn committed(&self) -> Vec<(String, TopicPartition, i64)> {
        self.list().into_iter().flat_map(|(g, s)| s.offsets.into_iter().map(move |(tp, o)| (g.clone(), tp, o))).collect()
    }

    /// The node this coordinator serves.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::actor::{Commit, FetchOffsets, Join};
    use crate::group::offsets::Committed;
    use crate::group::state::JoinRequest;
    use crate::node::NodeOptions;
    use crate::topic_config::TopicDefaults;
    use bytes::Bytes;

    fn options(dir: &std::path::Path) -> NodeOptions {
        NodeOptions {
            data_dir: dir.to_owned(),
            node_id: 0,
            cluster_id: None,
            topic_defaults: TopicDefaults::default(),
            default_partitions: 1,
            maintenance_interval: Duration::from_secs(60),
            partition_threads: 1,
            archive: None,
            endpoints: vec![],
            rack: None,
            cluster: Default::default(),
        }
    }

    fn config() -> GroupsConfig {
        GroupsConfig { initial_rebalance_delay_ms: 0, offsets_topic_partitions: 2, ..GroupsConfig::default() }
    }

    fn committed(offset: i64) -> Committed {
        Committed { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: crate::now_ms() }
    }

    /// Starts a node on `dir`, waiting for the previous one to release its lock.
    async fn start_node(dir: &std::path::Path) -> NodeHandle {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match NodeHandle::start(options(dir)).await {
                Ok(node) => return node,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "the node did not restart: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    #[actix_rt::test]
    async fn offsets_and_groups_survive_compaction_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(dir.path()).await;
        node.create_topic(CreateTopic { name: "t".into(), partitions: Some(1), replication_factor: None, configs: vec![], validate_only: false })
            .await
            .unwrap();
        let coordinator = GroupCoordinator::start(node.clone(), config()).await.unwrap();
        let tp = TopicPartition { topic: "t".into(), partition: 0 };
        for offset in 0..50 {
            let commit = Commit { member_id: String::new(), instance_id: None, generation_id: -1, offsets: vec![(tp.clone(), committed(offset))] };
            coordinator.ask("g", commit).await.unwrap().unwrap();
        }
        let join = JoinRequest {
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: false,
        };
        let joined = coordinator.ask("h", Join(join)).await.unwrap().unwrap();
        assert_eq!(joined.generation_id, 1);

        let partition = &coordinator.partitions[offsets_partition("g", 2) as usize];
        let before = partition.watermarks();
        assert!(before.log_end_offset >= 50, "{before:?}");
        for p in coordinator.partitions.clone() {
            coordinator.compact(&p).await.unwrap();
        }
        let after = partition.watermarks();
        assert_eq!(before.high_watermark, before.log_end_offset, "a sole replica commits what it writes");
        assert_eq!(after.log_start_offset, before.high_watermark, "everything committed before the rewrite is deleted");
        assert!(after.log_end_offset > after.log_start_offset, "the live state was rewritten");

        node.shutdown().await.unwrap();
        drop(coordinator);
        drop(node);
        let node = start_node(dir.path()).await;
        let coordinator = GroupCoordinator::start(node, config()).await.unwrap();
        let fetched = coordinator.ask("g", FetchOffsets(None)).await.unwrap();
        assert_eq!(fetched, vec![(tp, Some(fetched[0].1.clone().unwrap()))]);
        assert_eq!(fetched[0].1.as_ref().unwrap().offset, 49, "the last commit survives compaction and restart");
        let listed: Vec<String> = coordinator.list().into_iter().map(|(g, _)| g).collect();
        assert!(listed.contains(&"h".to_owned()), "the group metadata was loaded: {listed:?}");
    }
}
