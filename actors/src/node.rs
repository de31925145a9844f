//! The node: supervisor of every partition actor on this broker and keeper of
//! the topic catalog.
//!
//! Admin changes (create, delete, grow, reconfigure topics; producer ids) are
//! messages to the [`Node`] actor, which handles them one at a time: it writes
//! the catalog durably, then starts or retires partition actors and publishes
//! the new [`Registry`]. Request handlers read the registry through a
//! [`NodeHandle`] without a message round trip.
//!
//! Partition actors run under [`actix::Supervisor`] on a small pool of
//! arbiters (threads), so a panicking partition is restarted in place.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;
use tokio::sync::watch;
use uuid::Uuid;

use crate::catalog::{self, CatalogState, TopicRecord, PRODUCER_ID_BLOCK};
use crate::error::{Error, MetadataError};
use crate::meta_properties;
use crate::partition::{
    ArchiveOptions, ArchiveStatus, Close, PartitionActor, PartitionHandle, PartitionOptions, Reconfigure, ReplicationOptions, Retire, Watermarks,
};
use crate::replication::PartitionRole;
use crate::topic_config::{TopicConfigs, TopicDefaults};
use crate::TopicPartition;

/// The most partitions one topic may have.
pub const PARTITIONS_MAX: i32 = 100_000;
/// Mailbox bound of the node actor (admin requests queue here).
pub const NODE_MAILBOX_CAPACITY: usize = 1024;
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const LOCK_FILE: &str = ".lock";
const DELETED_SUFFIX: &str = "-delete";

/// How a node starts.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub node_id: i32,
    /// The cluster id given to a fresh data directory (random if `None`).
    pub cluster_id: Option<String>,
    pub topic_defaults: TopicDefaults,
    /// Partitions of a topic created without a count (and of auto-created topics).
    pub default_partitions: i32,
    pub maintenance_interval: Duration,
    /// Threads that partition actors are spread over.
    pub partition_threads: usize,
    /// Archiving of sealed segments to object storage; `None` keeps data local.
    pub archive: Option<NodeArchiveOptions>,
}

/// How the node's partitions archive (see [`silt_tiering::archive`]).
#[derive(Debug, Clone)]
pub struct NodeArchiveOptions {
    pub archive: Arc<silt_tiering::archive::Archive>,
    /// How often each partition looks for sealed segments to upload.
    pub check_interval: Duration,
    /// The longest wait between retries of a failed upload.
    pub retry_backoff_max: Duration,
}

/// Internal topics (`__consumer_offsets`) manage their own retention and are
/// never archived.
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with("__")
}

/// A topic as request handlers see it.
#[derive(Debug, Clone)]
pub struct TopicView {
    pub name: Arc<str>,
    pub id: Uuid,
    pub configs: TopicConfigs,
    pub partitions: Vec<PartitionHandle>,
}

/// The live topics, published by the node actor after every change.
#[derive(Debug, Default)]
pub struct Registry {
    topics: HashMap<Arc<str>, TopicView>,
    names_by_id: HashMap<Uuid, Arc<str>>,
}

impl Registry {
    fn insert(&mut self, view: TopicView) {
        self.names_by_id.insert(view.id, view.name.clone());
        self.topics.insert(view.name.clone(), view);
    }
    fn remove(&mut self, name: &str) -> Option<TopicView> {
        let view = self.topics.remove(name)?;
        self.names_by_id.remove(&view.id);
        Some(view)
    }
}

/// A change to one config of a topic (IncrementalAlterConfigs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

#[derive(Debug, Message)]
#[rtype(result = "Result<TopicView, Error>")]
pub struct CreateTopic {
    pub name: String,
    /// `None` (or Kafka's -1): the broker default.
    pub partitions: Option<i32>,
    pub replication_factor: Option<i32>,
    pub configs: Vec<(String, String)>,
    pub validate_only: bool,
}

#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct DeleteTopic {
    pub name: String,
}

#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct CreatePartitions {
    pub name: String,
    pub count: i32,
    pub validate_only: bool,
}

/// Change a topic's config overrides, all or none.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct AlterTopicConfigs {
    pub name: String,
    pub changes: Vec<ConfigChange>,
    /// Start from no overrides rather than the current ones, so that the
    /// changes' `Set`s become the topic's only overrides (the replace-all
    /// semantics of Kafka's legacy AlterConfigs).
    pub replace_all: bool,
    pub validate_only: bool,
}

/// Hand out a producer id for an idempotent producer.
#[derive(Debug, Message)]
#[rtype(result = "Result<i64, Error>")]
pub struct AllocateProducerId;

/// Close every partition and mark the shutdown clean.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Shutdown;

/// The node actor. See the module docs.
pub struct Node {
    options: NodeOptions,
    catalog: CatalogState,
    registry: Arc<RwLock<Registry>>,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    next_producer_id: i64,
    restarts: Arc<AtomicU64>,
    shutting_down: bool,
    _lock: File,
}

/// What request handlers hold: the node's address and a read view of its topics.
#[derive(Clone)]
pub struct NodeHandle {
    pub addr: Addr<Node>,
    registry: Arc<RwLock<Registry>>,
    pub node_id: i32,
    pub cluster_id: String,
    pub topic_defaults: TopicDefaults,
    pub default_partitions: i32,
    /// Partition actor restarts since the node started.
    pub partition_restarts: Arc<AtomicU64>,
    /// The threads partition actors run on (see [`NodeHandle::partition_thread`]).
    partition_threads: Arc<[ArbiterHandle]>,
}

fn blocking_error(e: tokio::task::JoinError) -> Error {
    MetadataError::Task { source: e }.into()
}

impl NodeHandle {
    /// Opens the data directory (taking its lock), loads the catalog and starts
    /// the node actor and every partition actor.
    pub async fn start(options: NodeOptions) -> Result<NodeHandle, Error> {
        let opts = options.clone();
        let (catalog, lock, clean) = tokio::task::spawn_blocking(move || prepare_data_dir(&opts)).await.map_err(blocking_error)??;
        let registry = Arc::new(RwLock::new(Registry::default()));
        let restarts = Arc::new(AtomicU64::new(0));
        let threads = options.partition_threads.max(1);
        let cluster_id = catalog.cluster_id.clone();
        let mut node = Node {
            next_producer_id: catalog.producer_id_high_mark,
            options: options.clone(),
            catalog,
            registry: registry.clone(),
            arbiters: (0..threads).map(|_| Arbiter::new()).collect(),
            next_arbiter: 0,
            restarts: restarts.clone(),
            shutting_down: false,
            _lock: lock,
        };
        for topic in node.catalog.topics.clone() {
            let view = node.start_topic(&topic, 0, clean);
            registry.write().expect("registry lock").insert(view);
        }
        tracing::info!(topics = node.catalog.topics.len(), clean_shutdown = clean, %cluster_id, "node started");
        let partition_threads: Arc<[ArbiterHandle]> = node.arbiters.iter().map(Arbiter::handle).collect();
        let addr = Node::create(|ctx| {
            ctx.set_mailbox_capacity(NODE_MAILBOX_CAPACITY);
            node
        });
        Ok(NodeHandle {
            addr,
            registry,
            node_id: options.node_id,
            cluster_id,
            topic_defaults: options.topic_defaults,
            default_partitions: options.default_partitions,
            partition_restarts: restarts,
            partition_threads,
        })
    }

    /// One of the threads partition actors run on, by `key` modulo their
    /// number. Work spawned there reaches the partitions on that thread
    /// without a thread switch: the Kafka listener serves each connection on
    /// one, so a request costs no wake-up of another thread for the
    /// partitions that share its thread. The thread stops when the node shuts down.
    pub fn partition_thread(&self, key: usize) -> &ArbiterHandle {
        &self.partition_threads[key % self.partition_threads.len()]
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        // Writers never panic while holding the lock; a poisoned lock still holds a consistent map.
        self.registry.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn topic(&self, name: &str) -> Option<TopicView> {
        self.read().topics.get(name).cloned()
    }

    pub fn topic_name(&self, id: Uuid) -> Option<Arc<str>> {
        self.read().names_by_id.get(&id).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<TopicView> {
        let mut topics: Vec<TopicView> = self.read().topics.values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Result<PartitionHandle, Error> {
        let registry = self.read();
        registry
            .topics
            .get(topic)
            .and_then(|t| usize::try_from(partition).ok().and_then(|p| t.partitions.get(p)))
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition(format!("{topic}-{partition}")))
    }

    /// Sends an admin message to the node actor.
    pub async fn ask<M>(&self, msg: M) -> Result<M::Result, Error>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Node: Handler<M>,
    {
        self.addr.send(msg).await.map_err(|_| Error::ShuttingDown)
    }

    pub async fn create_topic(&self, msg: CreateTopic) -> Result<TopicView, Error> {
        self.ask(msg).await?
    }

    pub async fn delete_topic(&self, name: String) -> Result<(), Error> {
        self.ask(DeleteTopic { name }).await?
    }

    pub async fn create_partitions(&self, msg: CreatePartitions) -> Result<(), Error> {
        self.ask(msg).await?
    }

    pub async fn alter_configs(&self, msg: AlterTopicConfigs) -> Result<(), Error> {
        self.ask(msg).await?
    }

    pub async fn allocate_producer_id(&self) -> Result<i64, Error> {
        self.ask(AllocateProducerId).await?
    }

    pub async fn shutdown(&self) -> Result<(), Error> {
        self.ask(Shutdown).await?
    }

    /// Archiving progress of every archived partition, for metrics.
    pub fn archive_statuses(&self) -> Vec<(TopicPartition, Arc<ArchiveStatus>)> {
        self.read().topics.values().flat_map(|t| t.partitions.iter().map(|p| (p.tp.clone(), p.archive_status.clone()))).collect()
    }

    /// Each partition's mailbox depth (messages queued or being handled), for metrics.
    pub fn partition_mailbox_depths(&self) -> Vec<u64> {
        self.read().topics.values().flat_map(|t| t.partitions.iter().map(PartitionHandle::mailbox_depth)).collect()
    }

    /// Watermarks of every partition, for metrics.
    pub fn partition_watermarks(&self) -> Vec<(TopicPartition, Watermarks)> {
        self.read().topics.values().flat_map(|t| t.partitions.iter().map(|p| (p.tp.clone(), p.watermarks()))).collect()
    }
}

/// Takes the data directory's lock, settles its identity (`meta.properties`,
/// written first in a fresh directory and added to one from before it
/// existed), reads the catalog and the clean-shutdown marker, and removes
/// leftovers of interrupted topic deletions.
fn prepare_data_dir(options: &NodeOptions) -> Result<(CatalogState, File, bool), Error> {
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).map_err(MetadataError::io("create data directory", dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = File::create(&lock_path).map_err(MetadataError::io("create the lock file", &lock_path))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => MetadataError::Locked { path: dir.clone() }.into(),
        std::fs::TryLockError::Error(source) => Error::from(MetadataError::Io { action: "lock", path: lock_path.clone(), source }),
    })?;
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = marker.exists();
    if clean {
        std::fs::remove_file(&marker).map_err(MetadataError::io("remove the clean-shutdown marker", &marker))?;
    }
    for entry in std::fs::read_dir(dir).map_err(MetadataError::io("list", dir))?.flatten() {
        if entry.file_name().to_string_lossy().ends_with(DELETED_SUFFIX) {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), cause = %e, "could not remove a deleted partition");
            }
        }
    }
    let stored = catalog::load(dir)?;
    let fresh_cluster_id = || CatalogState::new(options.cluster_id.clone()).cluster_id;
    let identity = meta_properties::resolve(dir, options.node_id, stored.as_ref().map(|c| c.cluster_id.as_str()), fresh_cluster_id)?;
    if let Some(configured) = options.cluster_id.as_deref().filter(|&c| c != identity.cluster_id) {
        tracing::warn!(configured, stored = %identity.cluster_id, "node.cluster_id applies to a fresh data directory only; keeping the stored cluster id");
    }
    let catalog = match stored {
        Some(state) => state,
        None => {
            let state = CatalogState::new(Some(identity.cluster_id));
            catalog::save(dir, &state)?;
            state
        }
    };
    Ok((catalog, lock, clean))
}

fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

type AdminFuture<T> = ResponseActFuture<Node, Result<T, Error>>;

fn ready<T: 'static>(result: Result<T, Error>) -> AdminFuture<T> {
    Box::pin(actix::fut::ready(result))
}

impl Node {
    fn start_partition(&mut self, topic: &TopicRecord, partition: i32, clean: bool) -> PartitionHandle {
        let tp = TopicPartition { topic: topic.name.as_str().into(), partition };
        let defaults = &self.options.topic_defaults;
        let mut log = topic.configs.resolve(defaults);
        let archive = self.options.archive.as_ref().filter(|_| log.archived && !is_internal(&topic.name)).map(|a| ArchiveOptions {
            archive: Arc::clone(&a.archive),
            topic_id: topic.id.to_string(),
            check_interval: a.check_interval,
            retry_backoff_max: a.retry_backoff_max,
        });
        log.archived = archive.is_some();
        let options = PartitionOptions {
            dir: partition_dir(&self.options.data_dir, &topic.name, partition),
            log,
            min_insync_replicas: topic.configs.min_insync_replicas(defaults),
            clean_start: clean,
            maintenance_interval: self.maintenance_interval(&topic.configs),
            archive,
            role: PartitionRole::sole_leader(self.options.node_id),
            replication: ReplicationOptions::single_node(self.options.node_id, topic.id),
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

    fn start_topic(&mut self, topic: &TopicRecord, from_partition: i32, clean: bool) -> TopicView {
        let existing = self.registry.read().ok().and_then(|r| r.topics.get(topic.name.as_str()).cloned());
        let mut partitions = existing.map(|v| v.partitions).unwrap_or_default();
        for p in from_partition..topic.partitions {
            partitions.push(self.start_partition(topic, p, clean));
        }
        TopicView { name: topic.name.as_str().into(), id: topic.id, configs: topic.configs.clone(), partitions }
    }

    fn maintenance_interval(&self, configs: &TopicConfigs) -> Duration {
        let flush_ms = configs.resolve(&self.options.topic_defaults).flush_ms;
        match flush_ms {
            Some(ms) => self.options.maintenance_interval.min(Duration::from_millis(ms.max(10))),
            None => self.options.maintenance_interval,
        }
    }

    fn publish(&self, view: TopicView) {
        self.registry.write().unwrap_or_else(|p| p.into_inner()).insert(view);
    }

    /// Writes `next` as the catalog, then runs `then` on the actor with it in place.
    fn commit<T: 'static>(&mut self, next: CatalogState, then: impl FnOnce(&mut Node) -> Result<T, Error> + 'static) -> AdminFuture<T> {
        let dir = self.options.data_dir.clone();
        let to_save = next.clone();
        let save = tokio::task::spawn_blocking(move || catalog::save(&dir, &to_save));
        Box::pin(save.into_actor(self).map(move |saved, node, _| {
            saved.map_err(blocking_error)??;
            node.catalog = next;
            then(node)
        }))
    }

    fn refuse_if_shutting_down(&self) -> Result<(), Error> {
        if self.shutting_down {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }
}

impl Actor for Node {
    type Context = Context<Self>;
}

impl Handler<CreateTopic> for Node {
    type Result = AtomicResponse<Self, Result<TopicView, Error>>;

    fn handle(&mut self, msg: CreateTopic, _ctx: &mut Context<Self>) -> Self::Result {
        let prepared = (|| {
            self.refuse_if_shutting_down()?;
            catalog::validate_topic_name(&msg.name)?;
            if self.catalog.topic(&msg.name).is_some() {
                return Err(Error::TopicAlreadyExists(msg.name.clone()));
            }
            let partitions = match msg.partitions {
                None | Some(-1) => self.options.default_partitions,
                Some(n) if (1..=PARTITIONS_MAX).contains(&n) => n,
                Some(n) => return Err(Error::InvalidPartitions(format!("{n} partitions; must be 1..={PARTITIONS_MAX}"))),
            };
            match msg.replication_factor {
                None | Some(-1) | Some(1) => {}
                Some(n) => return Err(Error::InvalidReplicationFactor(n)),
            }
            let configs = TopicConfigs::from_pairs(msg.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            Ok(TopicRecord { name: msg.name.clone(), id: Uuid::new_v4(), partitions, configs })
        })();
        let record = match prepared {
            Ok(record) => record,
            Err(e) => return AtomicResponse::new(ready(Err(e))),
        };
        if msg.validate_only {
            let view = TopicView { name: record.name.as_str().into(), id: record.id, configs: record.configs, partitions: Vec::new() };
            return AtomicResponse::new(ready(Ok(view)));
        }
        let mut next = self.catalog.clone();
        next.topics.push(record.clone());
        AtomicResponse::new(self.commit(next, move |node| {
            let view = node.start_topic(&record, 0, true);
            node.publish(view.clone());
            tracing::info!(topic = %record.name, partitions = record.partitions, "topic created");
            Ok(view)
        }))
    }
}

impl Handler<DeleteTopic> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, msg: DeleteTopic, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.refuse_if_shutting_down() {
            return AtomicResponse::new(ready(Err(e)));
        }
        let Some(record) = self.catalog.topic(&msg.name).cloned() else {
            return AtomicResponse::new(ready(Err(Error::UnknownTopicOrPartition(msg.name))));
        };
        let view = self.registry.write().unwrap_or_else(|p| p.into_inner()).remove(&msg.name);
        let partitions = view.map(|v| v.partitions).unwrap_or_default();
        // Retire the actors, move their directories aside, then forget the topic.
        let retire = join_all(partitions.into_iter().map(|p| async move { p.ask(Retire).await }));
        let suffix = format!(".{}{DELETED_SUFFIX}", record.id.simple());
        let doomed = async move {
            let dirs: Vec<PathBuf> = retire.await.into_iter().filter_map(Result::ok).collect();
            tokio::task::spawn_blocking(move || {
                let mut moved = Vec::new();
                for dir in dirs {
                    let mut target = dir.clone().into_os_string();
                    target.push(&suffix);
                    match std::fs::rename(&dir, &target) {
                        Ok(()) => moved.push(PathBuf::from(target)),
                        Err(e) => tracing::warn!(dir = %dir.display(), cause = %e, "could not move a deleted partition aside"),
                    }
                }
                moved
            })
            .await
            .unwrap_or_default()
        };
        let name = msg.name;
        let archive = self.options.archive.as_ref().map(|a| Arc::clone(&a.archive));
        AtomicResponse::new(Box::pin(doomed.into_actor(self).then(move |moved, node, _| {
            let mut next = node.catalog.clone();
            next.topics.retain(|t| t.name != name);
            node.commit(next, move |_| {
                if let Some(archive) = archive {
                    // Kafka deletes a topic's remote data with the topic. A
                    // failure here leaves files that a recreated topic (new
                    // id) discards when it first loads its manifest.
                    let topic = name.clone();
                    actix::spawn(async move {
                        if let Err(e) = archive.delete_topic(&topic).await {
                            tracing::warn!(topic = %topic, cause = %e, "could not delete the topic's archive");
                        }
                    });
                }
                tokio::task::spawn_blocking(move || {
                    for dir in moved {
                        if let Err(e) = std::fs::remove_dir_all(&dir) {
                            tracing::warn!(dir = %dir.display(), cause = %e, "could not remove a deleted partition");
                        }
                    }
                });
                tracing::info!(topic = %name, "topic deleted");
                Ok(())
            })
        })))
    }
}

impl Handler<CreatePartitions> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, msg: CreatePartitions, _ctx: &mut Context<Self>) -> Self::Result {
        let checked = (|| {
            self.refuse_if_shutting_down()?;
            let record = self.catalog.topic(&msg.name).ok_or_else(|| Error::UnknownTopicOrPartition(msg.name.clone()))?;
            if msg.count <= record.partitions {
                return Err(Error::InvalidPartitions(format!(
                    "topic {} has {} partitions; the new count {} must be larger",
                    msg.name, record.partitions, msg.count
                )));
            }
            if msg.count > PARTITIONS_MAX {
                return Err(Error::InvalidPartitions(format!("{} partitions; must be at most {PARTITIONS_MAX}", msg.count)));
            }
            Ok(record.partitions)
        })();
        let old_count = match checked {
            Ok(n) => n,
            Err(e) => return AtomicResponse::new(ready(Err(e))),
        };
        if msg.validate_only {
            return AtomicResponse::new(ready(Ok(())));
        }
        let mut next = self.catalog.clone();
        let record = next.topic_mut(&msg.name).expect("checked above");
        record.partitions = msg.count;
        let record = record.clone();
        AtomicResponse::new(self.commit(next, move |node| {
            let view = node.start_topic(&record, old_count, true);
            node.publish(view);
            Ok(())
        }))
    }
}

impl Handler<AlterTopicConfigs> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, msg: AlterTopicConfigs, _ctx: &mut Context<Self>) -> Self::Result {
        let changed = (|| {
            self.refuse_if_shutting_down()?;
            let record = self.catalog.topic(&msg.name).ok_or_else(|| Error::UnknownTopicOrPartition(msg.name.clone()))?;
            let mut configs = if msg.replace_all { TopicConfigs::default() } else { record.configs.clone() };
            for change in &msg.changes {
                match change {
                    ConfigChange::Set(k, v) => configs.set(k, v)?,
                    ConfigChange::Delete(k) => configs.remove(k)?,
                }
            }
            Ok(configs)
        })();
        let configs = match changed {
            Ok(c) => c,
            Err(e) => return AtomicResponse::new(ready(Err(e))),
        };
        if msg.validate_only {
            return AtomicResponse::new(ready(Ok(())));
        }
        let mut next = self.catalog.clone();
        next.topic_mut(&msg.name).expect("checked above").configs = configs.clone();
        let name = msg.name;
        AtomicResponse::new(self.commit(next, move |node| {
            let defaults = &node.options.topic_defaults;
            let log = configs.resolve(defaults);
            let min_insync_replicas = configs.min_insync_replicas(defaults);
            let mut registry = node.registry.write().unwrap_or_else(|p| p.into_inner());
            if let Some(view) = registry.topics.get_mut(name.as_str()) {
                view.configs = configs;
                for p in &view.partitions {
                    // Bounded mailbox: try_send reports a full one instead of ignoring it.
                    if let Err(e) = p.tell(Reconfigure { log: log.clone(), min_insync_replicas }) {
                        tracing::warn!(partition = %p.tp, cause = %e, "could not deliver new topic configs");
                    }
                }
            }
            Ok(())
        }))
    }
}

impl Handler<AllocateProducerId> for Node {
    type Result = AtomicResponse<Self, Result<i64, Error>>;

    fn handle(&mut self, _msg: AllocateProducerId, _ctx: &mut Context<Self>) -> Self::Result {
        if self.next_producer_id < self.catalog.producer_id_high_mark {
            let id = self.next_producer_id;
            self.next_producer_id += 1;
            return AtomicResponse::new(ready(Ok(id)));
        }
        let mut next = self.catalog.clone();
        next.producer_id_high_mark += PRODUCER_ID_BLOCK;
        AtomicResponse::new(self.commit(next, |node| {
            let id = node.next_producer_id;
            node.next_producer_id += 1;
            Ok(id)
        }))
    }
}

impl Handler<Shutdown> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let partitions: Vec<PartitionHandle> = self.registry.read().map(|r| r.topics.values().flat_map(|t| t.partitions.clone()).collect()).unwrap_or_default();
        let marker = self.options.data_dir.join(CLEAN_SHUTDOWN_FILE);
        let closing = async move {
            let results = join_all(partitions.iter().map(|p| p.ask(Close))).await;
            let failed: Vec<(TopicPartition, Error)> = partitions.iter().zip(results).filter_map(|(p, r)| r.err().map(|e| (p.tp.clone(), e))).collect();
            if !failed.is_empty() {
                // Not clean: the next start validates the logs.
                return Err(MetadataError::PartitionsNotClosed { failed }.into());
            }
            tokio::task::spawn_blocking(move || {
                silt_tiering::checkpoint::write_atomically(&marker, b"")
                    .map_err(|source| MetadataError::Write { what: "the clean-shutdown marker", source }.into())
            })
            .await
            .map_err(blocking_error)?
        };
        AtomicResponse::new(Box::pin(closing.into_actor(self).map(|result, node, _| {
            for arbiter in &node.arbiters {
                arbiter.stop();
            }
            result
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::{Append, Read, RequiredAcks};

    fn options(dir: &Path) -> NodeOptions {
        NodeOptions {
            data_dir: dir.to_owned(),
            node_id: 0,
            cluster_id: None,
            topic_defaults: TopicDefaults::default(),
            default_partitions: 2,
            maintenance_interval: Duration::from_secs(60),
            archive: None,
            partition_threads: 2,
        }
    }

    fn batch() -> bytes::Bytes {
        let mut b = vec![0u8; 61];
        b[8..12].copy_from_slice(&49i32.to_be_bytes());
        b[16] = 2;
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        b[57..61].copy_from_slice(&1i32.to_be_bytes());
        let crc = silt_tiering::batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes::Bytes::from(b)
    }

    fn create(name: &str) -> CreateTopic {
        CreateTopic { name: name.into(), partitions: None, replication_factor: None, configs: vec![], validate_only: false }
    }

    /// Starts a node once the previous one on the directory has let go of its
    /// lock (when its actor is gone), polling until a deadline.
    async fn start_when_unlocked(options: NodeOptions) -> Result<NodeHandle, Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match NodeHandle::start(options.clone()).await {
                Err(Error::Metadata(MetadataError::Locked { .. })) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => return other,
            }
        }
    }

    #[actix_rt::test]
    async fn a_data_dir_without_meta_properties_is_upgraded_in_place_and_keeps_its_node_id() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeHandle::start(options(dir.path())).await.unwrap();
        node.create_topic(create("orders")).await.unwrap();
        let cluster_id = node.cluster_id.clone();
        node.shutdown().await.unwrap();
        drop(node);
        // As a directory written before meta.properties existed: identity only in catalog.json.
        std::fs::remove_file(meta_properties::path(dir.path())).unwrap();

        let node = start_when_unlocked(NodeOptions { cluster_id: Some("ignored".into()), ..options(dir.path()) }).await.unwrap();
        assert_eq!(node.cluster_id, cluster_id, "the catalog's cluster id is kept");
        assert!(node.topic("orders").is_some());
        let stored = meta_properties::load(dir.path()).unwrap().expect("meta.properties written");
        assert_eq!((stored.node_id, stored.cluster_id.as_str()), (0, cluster_id.as_str()));
        node.shutdown().await.unwrap();
        drop(node);

        let other_id = start_when_unlocked(NodeOptions { node_id: 5, ..options(dir.path()) }).await;
        assert!(matches!(&other_id, Err(Error::Metadata(MetadataError::OtherNode { stored: 0, configured: 5, .. }))), "{:?}", other_id.err());
    }

    #[actix_rt::test]
    async fn replacing_configs_keeps_only_the_given_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeHandle::start(options(dir.path())).await.unwrap();
        node.create_topic(create("t")).await.unwrap();
        let set = |k: &str, v: &str| ConfigChange::Set(k.into(), v.into());
        let alter = |changes: Vec<ConfigChange>, replace_all: bool| AlterTopicConfigs { name: "t".into(), changes, replace_all, validate_only: false };
        node.alter_configs(alter(vec![set("retention.ms", "1000")], false)).await.unwrap();
        node.alter_configs(alter(vec![set("segment.ms", "5000")], true)).await.unwrap();
        let configs = node.topic("t").unwrap().configs;
        assert_eq!((configs.get("retention.ms"), configs.get("segment.ms")), (None, Some("5000")));
        let refused = node.alter_configs(alter(vec![set("retention.ms", "1"), set("no.such.config", "1")], true)).await;
        assert!(matches!(refused, Err(Error::InvalidConfig { .. })), "{refused:?}");
        let configs = node.topic("t").unwrap().configs;
        assert_eq!((configs.get("retention.ms"), configs.get("segment.ms")), (None, Some("5000")), "a refused change changes nothing");
        node.alter_configs(alter(vec![], true)).await.unwrap();
        assert_eq!(node.topic("t").unwrap().configs.get("segment.ms"), None, "an empty set removes every override");
        node.shutdown().await.unwrap();
    }

    #[actix_rt::test]
    async fn topics_survive_a_restart_and_deletion_frees_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeHandle::start(options(dir.path())).await.unwrap();
        assert!(NodeHandle::start(options(dir.path())).await.is_err(), "the data dir is locked");
        let view = node.create_topic(create("orders")).await.unwrap();
        assert_eq!(view.partitions.len(), 2);
        assert!(matches!(node.create_topic(create("orders")).await, Err(Error::TopicAlreadyExists(_))));
        let p = node.partition("orders", 1).unwrap();
        p.ask(Append { records: batch(), acks: RequiredAcks::All }).await.unwrap();
        node.create_partitions(CreatePartitions { name: "orders".into(), count: 3, validate_only: false }).await.unwrap();
        node.alter_configs(AlterTopicConfigs {
            name: "orders".into(),
            changes: vec![ConfigChange::Set("retention.ms".into(), "1000".into())],
            replace_all: false,
            validate_only: false,
        })
        .await
        .unwrap();
        let first_pid = node.allocate_producer_id().await.unwrap();
        node.shutdown().await.unwrap();
        let cluster_id = node.cluster_id.clone();
        drop(node);

        let node = start_when_unlocked(options(dir.path())).await.expect("node restarts on the same data dir");
        assert_eq!(node.cluster_id, cluster_id);
        let topic = node.topic("orders").unwrap();
        assert_eq!(topic.partitions.len(), 3);
        assert_eq!(topic.configs.get("retention.ms"), Some("1000"));
        let read = node.partition("orders", 1).unwrap().ask(Read { offset: 0, max_bytes: 1 << 20 }).await.unwrap();
        assert_eq!(read.high_watermark, 1);
        assert!(node.allocate_producer_id().await.unwrap() > first_pid, "producer ids never repeat");
        node.delete_topic("orders".into()).await.unwrap();
        assert!(node.topic("orders").is_none());
        let again = node.create_topic(create("orders")).await.unwrap();
        let read = again.partitions[1].ask(Read { offset: 0, max_bytes: 1 << 20 }).await.unwrap();
        assert_eq!(read.high_watermark, 0, "a recreated topic starts empty");
    }
}
