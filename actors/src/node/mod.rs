//! The node: this broker's partition actors and its door to the cluster's
//! metadata.
//!
//! | module | owns |
//! |---|---|
//! | [`admin`] | admin requests (create, delete, grow, reconfigure topics; producer ids) as proposals to the metadata store |
//! | [`replica_manager`] | the applied image → partition actors: start, re-role, reconfigure, retire; the registry |
//! | [`reassignments`] | AlterPartitionReassignments: start, change or cancel a partition's reassignment |
//! | [`placement`] | where new replicas go: rack-aware round robin over the live brokers |
//! | [`registry`] | [`TopicView`], [`PartitionView`], [`BrokerView`]: what request handlers read |
//! | [`migration`] | the in-place upgrade of a `catalog.json` directory into the metadata log |
//! | [`data_dir`] | the data directory's lock, identity, markers and leftovers at start |
//!
//! Metadata lives in the [`MetadataStore`] (an openraft log, one voter on a
//! single node): the node never changes it directly. An admin message makes the
//! controller's decisions, proposes them, and answers once the replica manager
//! has applied the committed image; images committed by others (a cluster's
//! controller) reach the replica manager the same way, through the store's
//! watch channel. Request handlers read the [`Registry`] through a
//! [`NodeHandle`] without a message round trip.
//!
//! Partition actors run under [`actix::Supervisor`] on a small pool of
//! arbiters (threads), so a panicking partition is restarted in place.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;
use openraft::{BasicNode, RaftNetworkFactory};
use uuid::Uuid;

use crate::cleaner::{CleanerOptions, CleanerRegistry, CleanerStats, LogCleaner};
use crate::error::{Error, MetadataError};
use crate::metadata::quorum::{BrokerId, Endpoint, MetadataBatch, MetadataRecord, MetadataResponse, MetadataTypeConfig};
use crate::metadata::store::{MetadataStore, ProposalForwarder, RaftTiming, SingleVoterNetwork, StoreOptions, METADATA_DIR, PROPOSAL_TIMEOUT};
use crate::partition::{ArchiveStatus, Close, IsrChangeCounts, PartitionHandle, Watermarks};
use crate::replication::ReplicaFetchers;
use crate::topic_config::TopicDefaults;
use crate::TopicPartition;

mod admin;
mod credentials;
mod data_dir;
pub mod elections;
pub mod migration;
pub mod placement;
pub mod reassignments;
mod registry;
pub mod replica_manager;
#[cfg(test)]
mod tests;

pub use admin::AlterIsr;
pub use credentials::{AlterScramCredentials, ScramCredentialChange};
pub use registry::{BrokerView, PartitionCounts, PartitionView, Registry, TopicView};

use admin::ProducerIds;
use replica_manager::{ManagerOptions, ReplicaManager};

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
    /// The Kafka listeners this broker advertises (registered in the metadata).
    pub endpoints: Vec<Endpoint>,
    /// `broker.rack`, for rack-aware replica placement.
    pub rack: Option<String>,
    pub cluster: ClusterOptions,
    /// The log cleaner (`log.cleaner.*`).
    pub cleaner: CleanerOptions,
}

/// The node's part in a cluster. The default is the embedded single node: a
/// one-voter metadata quorum that registers this broker itself.
#[derive(Clone)]
pub struct ClusterOptions {
    /// The metadata quorum's voters; empty means this node alone.
    pub voters: BTreeMap<u64, BasicNode>,
    /// Where proposals go when another voter is the active controller.
    pub forwarder: Option<Arc<dyn ProposalForwarder>>,
    /// The replica fetchers that feed this node's follower partitions.
    pub fetchers: Option<Arc<dyn ReplicaFetchers>>,
    pub timing: RaftTiming,
    pub proposal_timeout: Duration,
    /// Register and unfence this broker at start, as a single node does. A
    /// cluster turns it off: brokers register and heartbeat to the controller.
    pub register_self: bool,
}

#[cfg(test)]
impl NodeOptions {
    /// An embedded single node on `dir` for tests: one partition per topic
    /// by default, one partition thread, no archive, no maintenance in sight.
    pub(crate) fn for_tests(dir: &std::path::Path) -> NodeOptions {
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
            cleaner: CleanerOptions::default(),
        }
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            voters: BTreeMap::new(),
            forwarder: None,
            fetchers: None,
            timing: RaftTiming::default(),
            proposal_timeout: PROPOSAL_TIMEOUT,
            register_self: true,
        }
    }
}

impl std::fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("voters", &self.voters)
            .field("forwarder", &self.forwarder.is_some())
            .field("fetchers", &self.fetchers.is_some())
            .field("timing", &self.timing)
            .field("proposal_timeout", &self.proposal_timeout)
            .field("register_self", &self.register_self)
            .finish()
    }
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
    /// Explicit replicas per partition (`--replica-assignment`); then
    /// `partitions` and `replication_factor` are not used.
    pub assignments: Option<Vec<Vec<BrokerId>>>,
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
    /// The topic's new partition count.
    pub count: i32,
    pub validate_only: bool,
    /// One replica list per added partition (`kafka-topics --alter
    /// --replica-assignment`); `None` places them like a new topic's.
    pub assignments: Option<Vec<Vec<BrokerId>>>,
}

/// Remove a broker from the cluster (Kafka's UnregisterBroker): its
/// leaderships move and it leaves the ISRs, then its registration goes.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct UnregisterBroker {
    pub broker_id: BrokerId,
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

/// Close every partition, mark the shutdown clean and stop the metadata store.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Shutdown;

/// The store applied a newer image: let the replica manager follow it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct ImageChanged;

/// The node actor. See the module docs.
pub struct Node {
    options: NodeOptions,
    store: MetadataStore,
    manager: ReplicaManager,
    registry: Arc<RwLock<Registry>>,
    producer_ids: ProducerIds,
    shutting_down: bool,
    /// The log cleaner, stopped with the node.
    cleaner: Addr<LogCleaner>,
    _lock: File,
}

/// What request handlers hold: the node's address and a read view of its topics.
#[derive(Clone)]
pub struct NodeHandle {
    pub addr: Addr<Node>,
    registry: Arc<RwLock<Registry>>,
    /// Changes after every registry swap (see [`NodeHandle::registry_changes`]).
    registry_changes: tokio::sync::watch::Receiver<u64>,
    store: MetadataStore,
    pub node_id: i32,
    pub cluster_id: String,
    pub topic_defaults: TopicDefaults,
    pub default_partitions: i32,
    /// Partition actor restarts since the node started.
    pub partition_restarts: Arc<AtomicU64>,
    /// ISR shrinks and expands applied to partitions this node leads.
    pub isr_changes: Arc<IsrChangeCounts>,
    /// What the log cleaner has done.
    pub cleaner_stats: Arc<CleanerStats>,
    /// The threads partition actors run on (see [`NodeHandle::partition_thread`]).
    partition_threads: Arc<[ArbiterHandle]>,
}

/// The metadata quorum as this node's Raft instance sees it, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QuorumStatus {
    /// Whether this node is the active controller (the quorum's leader).
    pub active_controller: bool,
    pub current_term: u64,
    /// The index of the last entry in this node's Raft log (0 before any).
    pub last_log_index: u64,
    /// The index of the last entry applied to the metadata image (0 before any).
    pub applied_index: u64,
}

fn blocking_error(e: tokio::task::JoinError) -> Error {
    MetadataError::Task { source: e }.into()
}

/// Registers this broker and unfences it: the single node's stand-in for the
/// registration and heartbeat a cluster's brokers send to the controller.
/// Answers the new broker epoch.
pub async fn register_self(store: &MetadataStore, broker_id: BrokerId, endpoints: Vec<Endpoint>, rack: Option<String>) -> Result<u64, Error> {
    let registration = MetadataRecord::RegisterBroker { broker_id, incarnation_id: Uuid::new_v4(), endpoints, rack };
    let epoch = match admin::expect_applied(store.propose(MetadataBatch::one(registration)).await?)? {
        MetadataResponse::Applied { broker_epochs, .. } => broker_epochs.iter().find(|(id, _)| *id == broker_id).map(|(_, epoch)| *epoch),
        _ => None,
    };
    let broker_epoch =
        epoch.ok_or_else(|| Error::from(MetadataError::Raft { action: "register this broker", reason: "no broker epoch in the answer".into() }))?;
    admin::expect_applied(store.propose(MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id, broker_epoch })).await?)?;
    Ok(broker_epoch)
}

impl NodeHandle {
    /// Starts the embedded single node: a one-voter metadata quorum.
    pub async fn start(options: NodeOptions) -> Result<NodeHandle, Error> {
        Self::start_with(options, SingleVoterNetwork).await
    }

    /// Opens the data directory (taking its lock), starts the metadata store
    /// on `network`, migrates a legacy `catalog.json`, and starts every
    /// partition actor the image gives this node.
    pub async fn start_with<N: RaftNetworkFactory<MetadataTypeConfig>>(options: NodeOptions, network: N) -> Result<NodeHandle, Error> {
        let opts = options.clone();
        let prepared = tokio::task::spawn_blocking(move || data_dir::prepare(&opts)).await.map_err(blocking_error)??;
        let node_id =
            u64::try_from(options.node_id).map_err(|_| MetadataError::Raft { action: "start", reason: format!("node.id {} is negative", options.node_id) })?;
        let cluster = &options.cluster;
        let voters = if cluster.voters.is_empty() { BTreeMap::from([(node_id, BasicNode::default())]) } else { cluster.voters.clone() };
        let store_options = StoreOptions {
            dir: options.data_dir.join(METADATA_DIR),
            node_id,
            voters,
            forwarder: cluster.forwarder.clone(),
            timing: cluster.timing,
            proposal_timeout: cluster.proposal_timeout,
        };
        let store = MetadataStore::start(store_options, network).await?;
        if cluster.register_self {
            store.wait_for_leader().await?;
            let epoch = register_self(&store, options.node_id, options.endpoints.clone(), options.rack.clone()).await?;
            if let Some(catalog) = prepared.legacy_catalog {
                migration::migrate(&store, options.node_id, epoch, &options.data_dir, catalog).await?;
            }
        } else if prepared.legacy_catalog.is_some() {
            return Err(MetadataError::Migration { reason: "a catalog.json directory upgrades on a single node only (cluster.register_self)".into() }.into());
        }

        let registry = Arc::new(RwLock::new(Registry::default()));
        let (published, registry_changes) = tokio::sync::watch::channel(0u64);
        let manager_options = ManagerOptions {
            node_id: options.node_id,
            data_dir: options.data_dir.clone(),
            topic_defaults: options.topic_defaults.clone(),
            maintenance_interval: options.maintenance_interval,
            archive: options.archive.clone(),
            fetchers: cluster.fetchers.clone(),
            alter_partition: Some(Arc::new(admin::StoreAlterPartition(store.clone()))),
            cleaner: CleanerRegistry::default(),
        };
        let cleaner_registry = manager_options.cleaner.clone();
        let mut manager = ReplicaManager::new(manager_options, options.partition_threads, registry.clone(), published, prepared.clean);
        let state = store.image().borrow().clone();
        if let Some(plan) = manager.plan(state) {
            let moved = replica_manager::prepare_dirs(&plan).await;
            replica_manager::remove_deleted(&plan, moved, None);
            manager.finish(plan);
        }
        if cluster.register_self && cluster.voters.len() <= 1 {
            let (dir, image) = (options.data_dir.clone(), store.image().borrow().clone());
            tokio::task::spawn_blocking(move || replica_manager::remove_strays(&dir, &image.image)).await.map_err(blocking_error)?;
        }
        let topics = registry.read().map(|r| r.topics.len()).unwrap_or_default();
        tracing::info!(topics, clean_shutdown = prepared.clean, cluster_id = %prepared.cluster_id, "node started");
        let partition_threads: Arc<[ArbiterHandle]> = manager.arbiter_handles().into();
        let restarts = manager.restarts();
        let isr_changes = manager.isr_changes();
        let mut changes = store.image();
        let cleaner_stats = Arc::new(CleanerStats::default());
        let (cleaner_options, stats) = (options.cleaner, Arc::clone(&cleaner_stats));
        let cleaner = Supervisor::start(move |_| LogCleaner::new(cleaner_options, cleaner_registry.clone(), Arc::clone(&stats)));
        let node = Node {
            options: options.clone(),
            store: store.clone(),
            manager,
            registry: registry.clone(),
            producer_ids: ProducerIds::default(),
            shutting_down: false,
            cleaner,
            _lock: prepared.lock,
        };
        let addr = Node::create(|ctx| {
            ctx.set_mailbox_capacity(NODE_MAILBOX_CAPACITY);
            node
        });
        let watcher = addr.clone();
        // Ends when the store stops (its state machine, the sender, is dropped)
        // or the node actor is gone. `watch` keeps only the newest image, so at
        // most one message is outstanding.
        actix::spawn(async move {
            while changes.changed().await.is_ok() {
                if watcher.send(ImageChanged).await.is_err() {
                    break;
                }
            }
        });
        Ok(NodeHandle {
            addr,
            registry,
            registry_changes,
            store,
            node_id: options.node_id,
            cluster_id: prepared.cluster_id,
            topic_defaults: options.topic_defaults,
            default_partitions: options.default_partitions,
            partition_restarts: restarts,
            isr_changes,
            cleaner_stats,
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

    /// A watch that changes after every swap of the registry (a new image
    /// applied: leaders, ISRs, topics). Watchers re-read what they need, e.g.
    /// the group coordinator the leadership of `__consumer_offsets`.
    pub fn registry_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.registry_changes.clone()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<TopicView> {
        let mut topics: Vec<TopicView> = self.read().topics.values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// The registered, unfenced brokers, by id.
    pub fn brokers(&self) -> Vec<BrokerView> {
        self.read().brokers.clone()
    }

    /// The registered brokers that are fenced (their session lapsed), by id.
    pub fn fenced_brokers(&self) -> Vec<BrokerView> {
        self.read().fenced_brokers.clone()
    }

    /// How many voters the metadata quorum has (1 for the embedded node).
    pub fn voter_count(&self) -> usize {
        self.store.raft().metrics().borrow().membership_config.membership().voter_ids().count()
    }

    /// The active controller (the metadata quorum's leader), if known.
    pub fn controller_id(&self) -> Option<i32> {
        self.store.raft().metrics().borrow().current_leader.and_then(|id| i32::try_from(id).ok())
    }

    /// Term and indexes of the metadata quorum, read from Raft's metrics channel (no round trip).
    pub fn quorum_status(&self) -> QuorumStatus {
        let metrics = self.store.raft().metrics().borrow().clone();
        QuorumStatus {
            active_controller: metrics.current_leader == Some(self.store.node_id()),
            current_term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
        }
    }

    /// Leaders, under-replicated and offline partitions as this node's image has them.
    pub fn partition_counts(&self) -> PartitionCounts {
        let registry = self.read();
        PartitionCounts::of(self.node_id, registry.topics.values().flat_map(|t| t.partitions.iter()))
    }

    /// The metadata store, for the cluster transport's RPC server.
    pub fn metadata_store(&self) -> &MetadataStore {
        &self.store
    }

    /// This node's replica of a partition. A partition of a known topic that
    /// this node holds no replica of answers NOT_LEADER_OR_FOLLOWER.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<PartitionHandle, Error> {
        let registry = self.read();
        let view = registry.topics.get(topic).and_then(|t| usize::try_from(partition).ok().and_then(|p| t.partitions.get(p)));
        match view {
            Some(PartitionView { local: Some(handle), .. }) => Ok(handle.clone()),
            Some(p) => Err(Error::NotLeaderOrFollower { partition: format!("{topic}-{partition}"), leader: p.leader, reason: "it holds no replica of it" }),
            None => Err(Error::UnknownTopicOrPartition(format!("{topic}-{partition}"))),
        }
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

    pub async fn unregister_broker(&self, broker_id: BrokerId) -> Result<(), Error> {
        self.ask(UnregisterBroker { broker_id }).await?
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

    fn local_partitions(&self) -> Vec<PartitionHandle> {
        self.read().topics.values().flat_map(|t| t.partitions.iter().filter_map(|p| p.local.clone())).collect()
    }

    /// Archiving progress of every archived partition, for metrics.
    pub fn archive_statuses(&self) -> Vec<(TopicPartition, Arc<ArchiveStatus>)> {
        self.local_partitions().into_iter().map(|p| (p.tp.clone(), p.archive_status.clone())).collect()
    }

    /// Each partition's mailbox depth (messages queued or being handled), for metrics.
    pub fn partition_mailbox_depths(&self) -> Vec<u64> {
        self.local_partitions().iter().map(PartitionHandle::mailbox_depth).collect()
    }

    /// Watermarks of every partition, for metrics.
    pub fn partition_watermarks(&self) -> Vec<(TopicPartition, Watermarks)> {
        self.local_partitions().into_iter().map(|p| (p.tp.clone(), p.watermarks())).collect()
    }
}

impl Node {
    /// Lets the replica manager catch up with the store's newest image.
    fn apply_image(&mut self) -> ResponseActFuture<Self, ()> {
        let state = self.store.image().borrow().clone();
        let Some(plan) = self.manager.plan(state) else { return Box::pin(actix::fut::ready(())) };
        let archive = self.options.archive.as_ref().map(|a| Arc::clone(&a.archive));
        Box::pin(
            async move {
                let moved = replica_manager::prepare_dirs(&plan).await;
                (plan, moved)
            }
            .into_actor(self)
            .map(move |(plan, moved), node, _| {
                replica_manager::remove_deleted(&plan, moved, archive);
                node.manager.finish(plan);
            }),
        )
    }
}

impl Actor for Node {
    type Context = Context<Self>;
}

impl Handler<ImageChanged> for Node {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _msg: ImageChanged, _ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        }
        AtomicResponse::new(self.apply_image())
    }
}

impl Handler<Shutdown> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        // A pass that finishes after its log closed is abandoned anyway; this stops new ones.
        if let Err(e) = self.cleaner.try_send(crate::cleaner::Pause) {
            tracing::debug!(cause = %e, "the log cleaner did not take the pause");
        }
        let partitions = self.manager.handles();
        let marker = self.options.data_dir.join(CLEAN_SHUTDOWN_FILE);
        let store = self.store.clone();
        let closing = async move {
            let results = join_all(partitions.iter().map(|p| p.ask(Close))).await;
            if let Err(e) = store.shutdown().await {
                tracing::warn!(cause = %e, "the metadata store did not stop cleanly");
            }
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
            node.manager.stop_threads();
            result
        })))
    }
}
