//! The replica manager: turns each applied metadata image into running
//! partition actors on this node.
//!
//! For every partition whose replicas include this node it keeps one partition
//! actor, started with the role the image gives (leader or follower, epochs,
//! replicas, ISR). When a later image changes the role, it sends `SetRole`; when
//! the topic's configs change, `Reconfigure`; when the topic goes away or the
//! partition no longer lists this node, it retires the actor and moves its
//! directory aside. Followers are handed to the [`ReplicaFetchers`] (none on a
//! single node). After each image it publishes a fresh [`Registry`].
//!
//! Applying an image has two steps because retiring is asynchronous and must
//! finish first: a recreated topic of the same name reuses the directory
//! names (`<topic>-<partition>`, Kafka's layout), so the old actors must have
//! let go of them before new ones open. [`ReplicaManager::plan`] takes the
//! retirements out of the map, [`prepare_dirs`] retires them and settles every
//! new partition's directory off the actor thread (its `partition.metadata`
//! names the topic id, so a directory left by a deleted topic of the same name
//! is moved aside instead of being adopted), and [`ReplicaManager::finish`]
//! starts, re-roles and publishes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;
use tokio::sync::watch;
use uuid::Uuid;

use super::registry::{BrokerView, PartitionView, Registry, TopicView};
use super::{is_internal, NodeArchiveOptions, DELETED_SUFFIX};
use crate::cleaner::CleanerRegistry;
use crate::metadata::quorum::{AppliedState, BrokerId, MetadataImage, PartitionImage, TopicImage};
use crate::partition::{
    ArchiveOptions, ArchiveStatus, IsrChangeCounts, PartitionActor, PartitionHandle, PartitionOptions, Reconfigure, ReplicationOptions, Retire, Watermarks,
    REPLICA_LAG_TIME_MAX_DEFAULT,
};
use crate::replication::{AlterPartition, FollowedPartition, LeaderEndpoint, PartitionRole, ReplicaFetchers, SetRole};
use crate::topic_config::{TopicConfigs, TopicDefaults};
use crate::TopicPartition;

/// The file in a partition directory that names the topic id it belongs to.
const PARTITION_METADATA: &str = "partition.metadata";

/// What the replica manager needs from the node's options.
#[derive(Clone)]
pub(super) struct ManagerOptions {
    pub node_id: BrokerId,
    pub data_dir: PathBuf,
    pub topic_defaults: TopicDefaults,
    pub maintenance_interval: Duration,
    pub archive: Option<NodeArchiveOptions>,
    pub fetchers: Option<Arc<dyn ReplicaFetchers>>,
    /// How leaders ask the controller to change their ISR.
    pub alter_partition: Option<Arc<dyn AlterPartition>>,
    /// Where partitions register their logs for the log cleaner.
    pub cleaner: CleanerRegistry,
}

/// One partition actor of this node.
struct Local {
    handle: PartitionHandle,
    role: PartitionRole,
    configs: TopicConfigs,
}

/// A partition actor to retire, and the topic id its directory belongs to.
pub(super) struct Retiring {
    handle: PartitionHandle,
    topic_id: Uuid,
}

/// What [`ReplicaManager::plan`] decided for one image.
pub(super) struct Plan {
    state: Arc<AppliedState>,
    retiring: Vec<Retiring>,
    /// Directories of partitions about to start, with their topic ids.
    starting: Vec<(PathBuf, Uuid)>,
    /// Topics whose archive goes with them.
    deleted_topics: Vec<String>,
}

pub(super) struct ReplicaManager {
    options: ManagerOptions,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    restarts: Arc<AtomicU64>,
    isr_changes: Arc<IsrChangeCounts>,
    registry: Arc<RwLock<Registry>>,
    /// Bumped after every registry swap, so that leadership watchers (the
    /// group coordinator) re-read it.
    published: watch::Sender<u64>,
    local: HashMap<(Uuid, i32), Local>,
    /// Followed partitions and the leader each is followed from.
    following: HashMap<(Uuid, i32), BrokerId>,
    /// Topic names of the last image, to tell deletions apart.
    known_topics: HashMap<Uuid, String>,
    /// The log index of the last image applied.
    applied: Option<u64>,
    /// Whether the last shutdown was clean: trusted by the partitions opened
    /// from the first image only.
    clean_start: bool,
}

pub(super) fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// The role the image gives `node` for partition `p`.
pub(super) fn role_of(node: BrokerId, p: &PartitionImage) -> PartitionRole {
    if p.leader == Some(node) {
        PartitionRole::Leader { leader_epoch: p.leader_epoch, partition_epoch: p.partition_epoch, replicas: p.replicas.clone(), isr: p.isr.clone() }
    } else {
        PartitionRole::Follower { leader_epoch: p.leader_epoch, partition_epoch: p.partition_epoch, leader: p.leader, replicas: p.replicas.clone() }
    }
}

/// A topic's config overrides as stored in the image; values written by
/// this version always validate, so a failure is logged and the defaults used.
fn topic_configs(topic: &TopicImage) -> TopicConfigs {
    TopicConfigs::from_pairs(topic.configs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_or_else(|e| {
        tracing::warn!(topic = %topic.name, cause = %e, "invalid config override in the metadata image; using the defaults");
        TopicConfigs::default()
    })
}

impl ReplicaManager {
    pub(super) fn new(options: ManagerOptions, threads: usize, registry: Arc<RwLock<Registry>>, published: watch::Sender<u64>, clean_start: bool) -> Self {
        ReplicaManager {
            options,
            arbiters: (0..threads.max(1)).map(|_| Arbiter::new()).collect(),
            next_arbiter: 0,
            restarts: Arc::new(AtomicU64::new(0)),
            isr_changes: Arc::default(),
            registry,
            published,
            local: HashMap::new(),
            following: HashMap::new(),
            known_topics: HashMap::new(),
            applied: None,
            clean_start,
        }
    }

    pub(super) fn restarts(&self) -> Arc<AtomicU64> {
        self.restarts.clone()
    }

    pub(super) fn isr_changes(&self) -> Arc<IsrChangeCounts> {
        self.isr_changes.clone()
    }

    pub(super) fn arbiter_handles(&self) -> Vec<ArbiterHandle> {
        self.arbiters.iter().map(Arbiter::handle).collect()
    }

    /// Every partition actor of this node.
    pub(super) fn handles(&self) -> Vec<PartitionHandle> {
        self.local.values().map(|l| l.handle.clone()).collect()
    }

    pub(super) fn stop_threads(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }

    /// Whether `state` is newer than the last image applied.
    pub(super) fn is_new(&self, state: &AppliedState) -> bool {
        let index = state.last_applied.map(|id| id.index);
        index.is_some() && index > self.applied
    }

    /// Decides what `state` changes, taking the partitions to retire out of
    /// the map (and the registry) at once. `None` when it is not newer.
    pub(super) fn plan(&mut self, state: Arc<AppliedState>) -> Option<Plan> {
        if !self.is_new(&state) {
            return None;
        }
        let node = self.options.node_id;
        let image = &state.image;
        let wanted: HashSet<(Uuid, i32)> = hosted(image, node).map(|(t, i, _)| (t.topic_id, i)).collect();
        let gone: Vec<(Uuid, i32)> = self.local.keys().filter(|k| !wanted.contains(k)).copied().collect();
        let retiring: Vec<Retiring> =
            gone.into_iter().filter_map(|key| self.local.remove(&key).map(|l| Retiring { handle: l.handle, topic_id: key.0 })).collect();
        let starting = hosted(image, node)
            .filter(|(t, i, _)| !self.local.contains_key(&(t.topic_id, *i)))
            .map(|(t, i, _)| (partition_dir(&self.options.data_dir, &t.name, i), t.topic_id))
            .collect();
        let deleted_topics = self.known_topics.iter().filter(|(id, _)| !image.topics.contains_key(id)).map(|(_, name)| name.clone()).collect();
        if !retiring.is_empty() {
            self.publish(image);
        }
        Some(Plan { state, retiring, starting, deleted_topics })
    }

    /// Starts the new partitions, re-roles and reconfigures the others,
    /// updates the fetchers and publishes the registry.
    pub(super) fn finish(&mut self, plan: Plan) {
        let node = self.options.node_id;
        let image = &plan.state.image;
        let clean = std::mem::replace(&mut self.clean_start, true);
        let mut started = 0usize;
        for (topic, index, p) in hosted(image, node) {
            let role = role_of(node, p);
            let key = (topic.topic_id, index);
            match self.local.get_mut(&key) {
                Some(local) => {
                    if local.role != role {
                        if let Err(e) = local.handle.tell(SetRole(role.clone())) {
                            tracing::warn!(partition = %local.handle.tp, cause = %e, "could not deliver a new role");
                        }
                        local.role = role;
                    }
                    let configs = topic_configs(topic);
                    if local.configs != configs {
                        let defaults = &self.options.topic_defaults;
                        let reconfigure = Reconfigure { log: configs.resolve(defaults), min_insync_replicas: configs.min_insync_replicas(defaults) };
                        // Bounded mailbox: try_send reports a full one instead of ignoring it.
                        if let Err(e) = local.handle.tell(reconfigure) {
                            tracing::warn!(partition = %local.handle.tp, cause = %e, "could not deliver new topic configs");
                        }
                        local.configs = configs;
                    }
                }
                None => {
                    let configs = topic_configs(topic);
                    let handle = self.start_partition(topic, index, &configs, role.clone(), clean);
                    self.local.insert(key, Local { handle, role, configs });
                    started += 1;
                }
            }
        }
        self.update_fetchers(image);
        self.known_topics = image.topics.values().map(|t| (t.topic_id, t.name.clone())).collect();
        self.applied = plan.state.last_applied.map(|id| id.index);
        self.publish(image);
        if started > 0 || !plan.retiring.is_empty() {
            tracing::debug!(started, retired = plan.retiring.len(), index = ?self.applied, "applied a metadata image");
        }
    }

    fn start_partition(&mut self, topic: &TopicImage, partition: i32, configs: &TopicConfigs, role: PartitionRole, clean: bool) -> PartitionHandle {
        let tp = TopicPartition { topic: topic.name.as_str().into(), partition };
        let defaults = &self.options.topic_defaults;
        let mut log = configs.resolve(defaults);
        let archive = self.options.archive.as_ref().filter(|_| log.archived && !is_internal(&topic.name)).map(|a| ArchiveOptions {
            archive: Arc::clone(&a.archive),
            topic_id: topic.topic_id.to_string(),
            check_interval: a.check_interval,
            retry_backoff_max: a.retry_backoff_max,
        });
        log.archived = archive.is_some();
        let options = PartitionOptions {
            dir: partition_dir(&self.options.data_dir, &topic.name, partition),
            log,
            min_insync_replicas: configs.min_insync_replicas(defaults),
            clean_start: clean,
            maintenance_interval: self.maintenance_interval(configs),
            archive,
            role,
            replication: ReplicationOptions {
                local_broker: self.options.node_id,
                topic_id: topic.topic_id,
                alter_partition: self.options.alter_partition.clone(),
                replica_lag_time_max: REPLICA_LAG_TIME_MAX_DEFAULT,
                isr_changes: self.isr_changes.clone(),
            },
            cleaner: Some(self.options.cleaner.clone()),
        };
        let (tx, rx) = watch::channel(Watermarks::default());
        let restarts = self.restarts.clone();
        let archive_status = Arc::new(ArchiveStatus::default());
        let arbiter = self.arbiters[self.next_arbiter % self.arbiters.len()].handle();
        self.next_arbiter += 1;
        let actor_tp = tp.clone();
        let status = archive_status.clone();
        let addr = Supervisor::start_in_arbiter(&arbiter, move |_| PartitionActor::new(actor_tp, options, tx, restarts, status));
        PartitionHandle::new(tp, addr, rx, archive_status)
    }

    fn maintenance_interval(&self, configs: &TopicConfigs) -> Duration {
        let flush_ms = configs.resolve(&self.options.topic_defaults).flush_ms;
        match flush_ms {
            Some(ms) => self.options.maintenance_interval.min(Duration::from_millis(ms.max(10))),
            None => self.options.maintenance_interval,
        }
    }

    /// Follows every partition this node follows from a live leader, and
    /// unfollows those it no longer does.
    fn update_fetchers(&mut self, image: &MetadataImage) {
        let Some(fetchers) = self.options.fetchers.clone() else { return };
        let node = self.options.node_id;
        let mut wanted: HashMap<(Uuid, i32), BrokerId> = HashMap::new();
        let mut by_leader: BTreeMap<BrokerId, Vec<FollowedPartition>> = BTreeMap::new();
        for (topic, index, p) in hosted(image, node) {
            let Some(leader) = p.leader.filter(|&l| l != node) else { continue };
            let key = (topic.topic_id, index);
            wanted.insert(key, leader);
            let Some(local) = self.local.get(&key) else { continue };
            if self.following.get(&key) != Some(&leader) || local.role.leader_epoch() != p.leader_epoch {
                by_leader.entry(leader).or_default().push(FollowedPartition {
                    handle: local.handle.clone(),
                    topic_id: topic.topic_id,
                    leader_epoch: p.leader_epoch,
                });
            }
        }
        let dropped: Vec<TopicPartition> = self
            .following
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .filter_map(|(id, p)| {
                self.known_topics
                    .get(id)
                    .or_else(|| image.topics.get(id).map(|t| &t.name))
                    .map(|name| TopicPartition { topic: name.as_str().into(), partition: *p })
            })
            .collect();
        if !dropped.is_empty() {
            fetchers.unfollow(&dropped);
        }
        for (leader, partitions) in by_leader {
            let endpoint = image.brokers.get(&leader).and_then(|b| b.endpoints.first());
            match endpoint {
                Some(e) => fetchers.follow(LeaderEndpoint { broker_id: leader, host: e.host.clone(), port: e.port }, partitions),
                None => tracing::warn!(leader, "the leader broker has no endpoint to fetch from"),
            }
        }
        self.following = wanted;
    }

    /// Swaps in a registry built from `image` and the local actors.
    fn publish(&self, image: &MetadataImage) {
        let mut registry = Registry::default();
        for topic in image.topics.values() {
            let partitions = topic
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| PartitionView {
                    leader: p.leader,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    adding_replicas: p.adding_replicas.clone(),
                    removing_replicas: p.removing_replicas.clone(),
                    local: i32::try_from(i).ok().and_then(|i| self.local.get(&(topic.topic_id, i))).map(|l| l.handle.clone()),
                })
                .collect();
            registry.insert(TopicView { name: topic.name.as_str().into(), id: topic.topic_id, configs: topic_configs(topic), partitions });
        }
        let view = |b: &crate::metadata::quorum::BrokerRegistration| BrokerView { id: b.broker_id, endpoints: b.endpoints.clone(), rack: b.rack.clone() };
        registry.brokers = image.brokers.values().filter(|b| !b.fenced).map(view).collect();
        registry.fenced_brokers = image.brokers.values().filter(|b| b.fenced).map(view).collect();
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = registry;
        self.published.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The partitions of `image` that list `node` as a replica.
fn hosted(image: &MetadataImage, node: BrokerId) -> impl Iterator<Item = (&TopicImage, i32, &PartitionImage)> {
    image.topics.values().flat_map(move |t| {
        t.partitions.iter().enumerate().filter(move |(_, p)| p.replicas.contains(&node)).filter_map(move |(i, p)| i32::try_from(i).ok().map(|i| (t, i, p)))
    })
}

/// Retires the plan's partitions and moves their directories aside, then
/// makes sure each partition about to start has a directory of its own topic
/// id. Answers the directories moved aside, for [`remove_deleted`].
pub(super) async fn prepare_dirs(plan: &Plan) -> Vec<PathBuf> {
    let retired = join_all(plan.retiring.iter().map(|r| async move { r.handle.ask(Retire).await.map(|dir| (dir, r.topic_id)) })).await;
    let retired: Vec<(PathBuf, Uuid)> =
        retired.into_iter().filter_map(|r| r.map_err(|e| tracing::warn!(cause = %e, "could not retire a partition")).ok()).collect();
    let starting = plan.starting.clone();
    tokio::task::spawn_blocking(move || {
        let mut moved: Vec<PathBuf> = retired.iter().filter_map(|(dir, id)| move_aside(dir, *id)).collect();
        for (dir, topic_id) in starting {
            moved.extend(claim_dir(&dir, topic_id));
        }
        moved
    })
    .await
    .unwrap_or_else(|e| {
        tracing::warn!(cause = %e, "the partition directory task failed");
        Vec::new()
    })
}

/// Removes directories moved aside and the archives of deleted topics, in
/// the background.
pub(super) fn remove_deleted(plan: &Plan, moved: Vec<PathBuf>, archive: Option<Arc<silt_tiering::archive::Archive>>) {
    if let Some(archive) = archive {
        for topic in plan.deleted_topics.clone() {
            let archive = Arc::clone(&archive);
            // Kafka deletes a topic's remote data with the topic. A failure
            // here leaves files that a recreated topic (new id) discards when
            // it first loads its manifest.
            actix::spawn(async move {
                if let Err(e) = archive.delete_topic(&topic).await {
                    tracing::warn!(topic = %topic, cause = %e, "could not delete the topic's archive");
                }
            });
        }
    }
    for topic in &plan.deleted_topics {
        tracing::info!(topic = %topic, "topic deleted");
    }
    if moved.is_empty() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        for dir in moved {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), cause = %e, "could not remove a deleted partition");
            }
        }
    });
}

/// Moves aside and removes the partition directories of topics the image no
/// longer has: a topic deleted while this node was down, or whose directories
/// a crash left behind after the deletion was committed. Only directories
/// with a `partition.metadata` are considered. Blocking; called at start on a
/// single-voter quorum only, whose image is complete once it has committed
/// (a cluster member's image may lag its peers' at start).
pub(super) fn remove_strays(data_dir: &Path, image: &MetadataImage) {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(found) = std::fs::read_to_string(dir.join(PARTITION_METADATA)) else { continue };
        let Some(topic_id) = found.lines().find_map(|l| l.strip_prefix("topic_id: ")).and_then(|id| id.trim().parse::<Uuid>().ok()) else { continue };
        if image.topics.contains_key(&topic_id) {
            continue;
        }
        tracing::info!(dir = %dir.display(), %topic_id, "removing the partition directory of a deleted topic");
        if let Some(moved) = move_aside(&dir, topic_id) {
            if let Err(e) = std::fs::remove_dir_all(&moved) {
                tracing::warn!(dir = %moved.display(), cause = %e, "could not remove a deleted partition");
            }
        }
    }
}

/// Renames `dir` to `<dir>.<topic id>-delete`; `None` if it could not.
fn move_aside(dir: &Path, topic_id: Uuid) -> Option<PathBuf> {
    let mut target = dir.as_os_str().to_owned();
    target.push(format!(".{}{DELETED_SUFFIX}", topic_id.simple()));
    match std::fs::rename(dir, &target) {
        Ok(()) => Some(PathBuf::from(target)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), cause = %e, "could not move a partition directory aside");
            None
        }
    }
}

fn partition_metadata(topic_id: Uuid) -> String {
    format!("version: 0\ntopic_id: {topic_id}\n")
}

/// Makes `dir` the directory of a partition of `topic_id`: a directory of
/// another topic id (left by a deleted topic of the same name) is moved
/// aside (answered, to be removed); one with no `partition.metadata` (written
/// before it existed) is adopted.
fn claim_dir(dir: &Path, topic_id: Uuid) -> Option<PathBuf> {
    let file = dir.join(PARTITION_METADATA);
    let expected = partition_metadata(topic_id);
    let mut moved = None;
    match std::fs::read_to_string(&file) {
        Ok(found) if found == expected => return None,
        Ok(found) => {
            let other = found.lines().find_map(|l| l.strip_prefix("topic_id: ")).and_then(|id| id.trim().parse().ok()).unwrap_or_else(Uuid::nil);
            tracing::info!(dir = %dir.display(), %other, %topic_id, "a partition directory of a deleted topic is moved aside");
            moved = move_aside(dir, other);
        }
        Err(_) => {}
    }
    // Not fsynced (a topic creation would pay two syncs per partition): a
    // file lost in a crash only means the directory, created for this very
    // topic, is adopted again at the next start.
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&tmp, expected.as_bytes())).and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        tracing::warn!(dir = %dir.display(), cause = %e, "could not write partition.metadata");
    }
    moved
}
