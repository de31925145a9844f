//! [`GroupCoordinator`]: this node's group coordinator. It creates the
//! `__consumer_offsets` topic, starts a supervised [`GroupActor`] per group
//! on demand, answers questions across groups (ListGroups, metrics) from the
//! groups' published summaries, and keeps the offsets topic bounded.
//!
//! Leadership, as in Kafka (`GroupCoordinator.onElection`/`onResignation`):
//! the coordinator serves only the groups whose offsets partition
//! (`abs(hash(group)) % partitions`) this node leads. It watches the node's
//! registry; when it gains a partition it replays it ([`super::load`]) and
//! its groups answer COORDINATOR_LOAD_IN_PROGRESS meanwhile; when it loses
//! one it unloads its groups. Groups of partitions it does not lead answer
//! NOT_COORDINATOR. On a single node it leads every partition and loads
//! them all before serving.
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

use super::actor::{GroupActor, GroupSummary, GroupTimers, Rewrite, Unload};
use super::error::GroupError;
use super::leadership::{changes, led_partitions, Led};
use super::load::load;
use super::offsets::{Offsets, StoredGroup};
use super::state::Limits;
use super::{offsets_partition, OFFSETS_TOPIC};
use crate::error::Error;
use crate::metadata::quorum::BrokerId;
use crate::node::{CreateTopic, NodeHandle};
use crate::partition::DeleteRecords;
use crate::{PartitionHandle, TopicPartition};

/// Records in an offsets partition that trigger its compaction.
pub const COMPACT_AFTER_RECORDS: i64 = 100_000;
/// How often the offsets partitions are checked for compaction.
pub const COMPACTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);
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
    /// Replicas of each offsets partition (`offsets.topic.replication.factor`),
    /// capped at the number of voters: a single node holds one.
    pub offsets_topic_replication_factor: i16,
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
            offsets_topic_replication_factor: 3,
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

/// An offsets partition this node leads: its groups are loading or served.
#[derive(Clone)]
enum Slot {
    Loading { leader_epoch: i32 },
    Loaded { leader_epoch: i32, log: PartitionHandle },
}

impl Slot {
    fn leader_epoch(&self) -> i32 {
        match self {
            Slot::Loading { leader_epoch } | Slot::Loaded { leader_epoch, .. } => *leader_epoch,
        }
    }
}

/// The served partitions and their groups, under one lock so that a group
/// is never started in a partition being unloaded.
#[derive(Default)]
struct Served {
    slots: HashMap<i32, Slot>,
    groups: HashMap<String, Entry>,
}

/// The group coordinator. See the module docs.
pub struct GroupCoordinator {
    node: NodeHandle,
    config: GroupsConfig,
    /// The offsets topic's partition count (fixed at creation).
    partition_count: i32,
    /// The thread group actors run on (request handlers run on tokio's
    /// workers, outside any arbiter, so actors must be started on one).
    arbiter: Arbiter,
    /// Never held across an await.
    served: Mutex<Served>,
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

/// The offsets topic's settings at creation, with `replication_factor` replicas.
fn create_offsets_topic(config: &GroupsConfig, replication_factor: i32) -> CreateTopic {
    CreateTopic {
        name: OFFSETS_TOPIC.to_owned(),
        partitions: Some(config.offsets_topic_partitions),
        replication_factor: Some(replication_factor),
        configs: vec![("retention.ms".into(), "-1".into()), ("retention.bytes".into(), "-1".into()), ("segment.bytes".into(), OFFSETS_SEGMENT_BYTES.into())],
        validate_only: false,
        assignments: None,
    }
}

/// How long a node waits for another node's `__consumer_offsets` to reach its
/// image, and for enough brokers to place its replicas.
const OFFSETS_TOPIC_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The replication factor to create the offsets topic with: the configured
/// one, capped at the voters (a single node holds one replica). As Kafka
/// refuses to create it until that many brokers are up, this waits (at most
/// [`OFFSETS_TOPIC_WAIT`]) for them: a cluster starting node by node must not
/// get an offsets topic that lives on the first node alone. After the wait it
/// settles for the brokers there are, and says so.
async fn offsets_replication_factor(node: &NodeHandle, config: &GroupsConfig) -> i32 {
    let wanted = usize::try_from(config.offsets_topic_replication_factor).unwrap_or(1).clamp(1, node.voter_count().max(1));
    let mut changes = node.registry_changes();
    let enough = tokio::time::timeout(OFFSETS_TOPIC_WAIT, async {
        while node.brokers().len() < wanted {
            if changes.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    let live = node.brokers().len().max(1);
    if enough.is_err() {
        tracing::warn!(wanted, live, "fewer brokers than offsets_topic_replication_factor after the wait: creating __consumer_offsets with fewer replicas");
    }
    i32::try_from(wanted.min(live)).unwrap_or(1)
}

/// The offsets topic another node created, once this node's image has it.
async fn wait_for_offsets_topic(node: &NodeHandle) -> Result<crate::node::TopicView, Error> {
    let mut changes = node.registry_changes();
    let found = tokio::time::timeout(OFFSETS_TOPIC_WAIT, async {
        loop {
            if let Some(view) = node.topic(OFFSETS_TOPIC) {
                return Some(view);
            }
            if changes.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    found.ok().flatten().ok_or_else(|| Error::TopicAlreadyExists(OFFSETS_TOPIC.to_owned()))
}

impl GroupCoordinator {
    /// Creates the offsets topic if missing, loads the groups of the offsets
    /// partitions this node leads (every one on a single node), then follows
    /// leadership changes and starts the compaction task. Must run inside an
    /// actix `System`.
    pub async fn start(node: NodeHandle, config: GroupsConfig) -> Result<Arc<GroupCoordinator>, Error> {
        let view = match node.topic(OFFSETS_TOPIC) {
            Some(view) => view,
            // In a cluster every node starting at once may try; one wins, the
            // others find the topic it created in their image.
            None => match node.create_topic(create_offsets_topic(&config, offsets_replication_factor(&node, &config).await)).await {
                Err(Error::TopicAlreadyExists(_)) => wait_for_offsets_topic(&node).await?,
                created => created?,
            },
        };
        let partition_count = i32::try_from(view.partitions.len()).unwrap_or(i32::MAX);
        let mut changes = node.registry_changes();
        changes.mark_unchanged();
        let coordinator = Arc::new(GroupCoordinator { node, config, partition_count, arbiter: Arbiter::new(), served: Mutex::new(Served::default()) });
        // The partitions led at start are loaded before serving (on a single node: all of them).
        let loads = coordinator.reconcile();
        for result in join_all(loads.into_iter().map(|(p, led)| coordinator.load_partition(p, led))).await {
            result?;
        }
        let (groups, partitions) = {
            let served = coordinator.lock();
            (served.groups.len(), served.slots.len())
        };
        tracing::info!(groups, partitions, "group coordinator loaded");
        let weak = Arc::downgrade(&coordinator);
        actix::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(coordinator) = weak.upgrade() else { break };
                coordinator.on_leadership_change();
            }
        });
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

    /// Unloads the partitions lost and loads those gained in the background
    /// (their groups answer COORDINATOR_LOAD_IN_PROGRESS meanwhile).
    fn on_leadership_change(self: &Arc<Self>) {
        for (partition, led) in self.reconcile() {
            let coordinator = self.clone();
            actix::spawn(async move {
                if let Err(e) = coordinator.load_partition(partition, led).await {
                    tracing::warn!(partition, cause = %e, "could not load the groups of an offsets partition");
                    coordinator.drop_loading(partition);
                }
            });
        }
    }

    /// Compares the offsets partitions led now with those served: unloads
    /// the lost ones and marks the gained ones loading. Answers the loads to run.
    fn reconcile(&self) -> Vec<(i32, Led)> {
        let led = match self.node.topic(OFFSETS_TOPIC) {
            Some(view) => led_partitions(&view, self.node.node_id),
            None => BTreeMap::new(),
        };
        let mut served = self.lock();
        let epochs: BTreeMap<i32, i32> = served.slots.iter().map(|(p, s)| (*p, s.leader_epoch())).collect();
        let changes = changes(&epochs, led);
        let mut unloaded = Vec::new();
        for partition in changes.lost.iter().copied().chain(changes.gained.iter().map(|(p, _)| *p)) {
            if served.slots.remove(&partition).is_some() {
                let gone: Vec<String> = served.groups.iter().filter(|(_, e)| e.partition == partition).map(|(g, _)| g.clone()).collect();
                unloaded.extend(gone.iter().filter_map(|g| served.groups.remove(g)).map(|e| e.addr));
                tracing::info!(partition, groups = gone.len(), "unloaded the groups of an offsets partition");
            }
        }
        for (partition, led) in &changes.gained {
            served.slots.insert(*partition, Slot::Loading { leader_epoch: led.leader_epoch });
        }
        drop(served);
        for addr in unloaded {
            addr.do_send(Unload);
        }
        changes.gained
    }

    /// Replays one offsets partition and serves its groups, unless its
    /// leadership changed meanwhile.
    async fn load_partition(&self, partition: i32, led: Led) -> Result<(), Error> {
        let loaded = load(&led.handle).await?;
        let mut served = self.lock();
        match served.slots.get(&partition) {
            Some(Slot::Loading { leader_epoch }) if *leader_epoch == led.leader_epoch => {}
            _ => return Ok(()),
        }
        served.slots.insert(partition, Slot::Loaded { leader_epoch: led.leader_epoch, log: led.handle.clone() });
        let count = loaded.len();
        for (group_id, (stored, offsets)) in loaded {
            let entry = self.spawn(group_id.clone(), stored, offsets, partition, led.handle.clone());
            served.groups.insert(group_id, entry);
        }
        tracing::info!(partition, leader_epoch = led.leader_epoch, groups = count, "loaded the groups of an offsets partition");
        Ok(())
    }

    /// A load that failed: the partition is not served until leadership changes again.
    fn drop_loading(&self, partition: i32) {
        let mut served = self.lock();
        if matches!(served.slots.get(&partition), Some(Slot::Loading { .. })) {
            served.slots.remove(&partition);
        }
    }

    fn spawn(&self, group_id: String, stored: Option<StoredGroup>, offsets: Offsets, partition: i32, log: PartitionHandle) -> Entry {
        let (tx, rx) = watch::channel(GroupSummary::default());
        let timers = timers(&self.config);
        let actor = GroupActor::new(group_id, stored, offsets, timers, log, tx);
        // Published before the actor runs, so that listings see the group at once.
        actor.publish();
        let addr = Supervisor::start_in_arbiter(&self.arbiter.handle(), move |_| actor);
        Entry { addr, summary: rx, partition }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Served> {
        self.served.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log of `group_id`'s offsets partition if this node serves it:
    /// NOT_COORDINATOR when it does not lead the partition,
    /// COORDINATOR_LOAD_IN_PROGRESS while its groups load.
    fn served_log(served: &Served, group_id: &str, partition: i32) -> Result<PartitionHandle, GroupError> {
        match served.slots.get(&partition) {
            Some(Slot::Loaded { log, .. }) => Ok(log.clone()),
            Some(Slot::Loading { .. }) => Err(GroupError::CoordinatorLoading),
            None => Err(GroupError::NotCoordinator { group_id: group_id.to_owned(), partition }),
        }
    }

    /// The actor of `group_id`, started if the group is new.
    pub fn group(&self, group_id: &str) -> Result<Addr<GroupActor>, Error> {
        let partition = offsets_partition(group_id, self.partition_count);
        let mut served = self.lock();
        let log = Self::served_log(&served, group_id, partition)?;
        if let Some(entry) = served.groups.get(group_id).filter(|e| e.addr.connected()) {
            return Ok(entry.addr.clone());
        }
        let entry = self.spawn(group_id.to_owned(), None, Offsets::new(), partition, log);
        served.groups.insert(group_id.to_owned(), entry.clone());
        Ok(entry.addr)
    }

    /// The actor of `group_id` if the group exists (without creating it);
    /// the same errors as [`GroupCoordinator::group`] if this node does not serve it.
    pub fn existing(&self, group_id: &str) -> Result<Option<Addr<GroupActor>>, Error> {
        let partition = offsets_partition(group_id, self.partition_count);
        let served = self.lock();
        Self::served_log(&served, group_id, partition)?;
        Ok(served.groups.get(group_id).filter(|e| e.addr.connected()).map(|e| e.addr.clone()))
    }

    /// The broker that coordinates `group_id`: the leader of its offsets
    /// partition (COORDINATOR_NOT_AVAILABLE while it has none).
    pub fn coordinator_of(&self, group_id: &str) -> Result<BrokerId, GroupError> {
        let partition = offsets_partition(group_id, self.partition_count);
        let view = self.node.topic(OFFSETS_TOPIC).ok_or_else(|| GroupError::CoordinatorNotAvailable(format!("{OFFSETS_TOPIC} does not exist")))?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| view.partitions.get(p))
            .and_then(|p| p.leader)
            .ok_or_else(|| GroupError::CoordinatorNotAvailable(format!("partition {partition} of {OFFSETS_TOPIC} has no leader")))
    }

    /// Sends a message to a group's actor.
    pub async fn ask<M>(&self, group_id: &str, msg: M) -> Result<M::Result, Error>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        GroupActor: Handler<M>,
    {
        self.group(group_id)?.send(msg).await.map_err(|e| GroupError::CoordinatorNotAvailable(format!("group {group_id}: {e}")).into())
    }

    /// Forgets a deleted group.
    pub fn forget(&self, group_id: &str) {
        self.lock().groups.remove(group_id);
    }

    /// Every live group and its summary, sorted by id.
    pub fn list(&self) -> Vec<GroupListing> {
        let mut groups: Vec<GroupListing> = self
            .lock()
            .groups
            .iter()
            .filter(|(_, e)| e.addr.connected())
            .map(|(id, e)| (id.clone(), e.summary.borrow().clone()))
            .filter(|(_, s)| s.phase.is_some_and(|p| p != super::state::Phase::Dead))
            .collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        groups
    }

    /// The offsets partitions whose groups this node serves, by partition.
    fn loaded_logs(&self) -> Vec<PartitionHandle> {
        let mut logs: Vec<PartitionHandle> = self
            .lock()
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Loaded { log, .. } => Some(log.clone()),
                Slot::Loading { .. } => None,
            })
            .collect();
        logs.sort_by_key(|l| l.tp.partition);
        logs
    }

    /// Compacts every offsets partition that has grown past the threshold.
    pub async fn compact_if_due(&self) {
        for partition in &self.loaded_logs() {
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
        let addrs: Vec<Addr<GroupActor>> = self.lock().groups.values().filter(|e| e.partition == index && e.addr.connected()).map(|e| e.addr.clone()).collect();
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
#[path = "coordinator_tests.rs"]
mod coordinator_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::actor::{Commit, FetchOffsets, Join};
    use crate::group::offsets::Committed;
    use crate::group::state::JoinRequest;
    use crate::node::NodeOptions;
    use bytes::Bytes;

    pub(super) fn options(dir: &std::path::Path) -> NodeOptions {
        NodeOptions::for_tests(dir)
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
        node.create_topic(CreateTopic {
            name: "t".into(),
            partitions: Some(1),
            replication_factor: None,
            configs: vec![],
            validate_only: false,
            assignments: None,
        })
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

        let partition = &coordinator.loaded_logs()[offsets_partition("g", 2) as usize];
        let before = partition.watermarks();
        assert!(before.log_end_offset >= 50, "{before:?}");
        for p in coordinator.loaded_logs() {
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
