//! Assembly of a node: the node actor, the Kafka and HTTP listeners, and an
//! orderly shutdown on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use silt_actors::group::GroupCoordinator;
use silt_actors::metadata::RaftTiming;
use silt_actors::NodeHandle;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, Semaphore};

use crate::cluster::broker_session::BrokerSessionState;
use crate::cluster::edge::{BrokerIdentity, ClusterEdge, RunningEdge};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::replication::ReplicaFetcherPool;
use crate::security::listener::{AdvertisedListener, Listeners};

/// How long shutdown waits for open connections to finish their request.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Everything a request handler may need, shared by all connections.
pub struct Broker {
    pub node: NodeHandle,
    /// The group coordinator (every group's coordinator is this node).
    pub groups: Arc<GroupCoordinator>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// What clients of each listener are told to connect to, the `[kafka]`
    /// listener first. Never empty.
    pub listeners: Vec<AdvertisedListener>,
    /// Node-wide budget of request bytes being read or handled.
    pub request_memory: Arc<Semaphore>,
    /// Open connections across every listener (`kafka.max_connections`).
    pub connection_slots: Arc<Semaphore>,
}

impl Broker {
    /// A broker serving `listeners` (at least one).
    pub fn new(node: NodeHandle, groups: Arc<GroupCoordinator>, metrics: Arc<Metrics>, config: Config, listeners: Vec<AdvertisedListener>) -> Broker {
        assert!(!listeners.is_empty(), "a broker has at least one listener");
        let queued = usize::try_from(config.kafka.queued_max_request_bytes).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        let connection_slots = Arc::new(Semaphore::new(config.kafka.max_connections.min(Semaphore::MAX_PERMITS)));
        Broker { node, groups, metrics, config, listeners, request_memory: Arc::new(Semaphore::new(queued)), connection_slots }
    }

    /// The advertised address of listener number `listener` (the first listener's for an unknown number).
    pub fn advertised(&self, listener: usize) -> &AdvertisedListener {
        self.listeners.get(listener).unwrap_or(&self.listeners[0])
    }
}

/// Runs a broker until SIGTERM or SIGINT. Must run inside an actix `System`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Installed first: a SIGTERM that arrives once "broker ready" is printed
    // (or while starting) is a graceful stop, not the default action's kill.
    let mut signals = ShutdownSignals::install()?;
    let listeners = Listeners::bind(&config).await?;
    let http_listener = TcpListener::bind(config.http.listen).await.with_context(|| format!("cannot listen on http.listen {}", config.http.listen))?;
    // A cluster node's followers copy their leaders' logs: one fetcher per
    // source broker, whose bytes and lag the metrics report.
    let fetchers = match config.cluster_config()? {
        Some(_) => Some(Arc::new(ReplicaFetcherPool::new(config.node.id, tokio::runtime::Handle::current(), Default::default()))),
        None => None,
    };
    let mut metrics = Metrics::with_per_partition(config.metrics.per_partition).watch_storage(config.storage.data_dir.clone());
    if let Some(pool) = &fetchers {
        metrics = metrics.watch_fetchers(pool.stats());
    }
    let metrics = Arc::new(metrics);
    let archive = match config.archive_settings()? {
        Some(settings) => {
            let url = settings.store.url.clone();
            let observer: Arc<dyn silt_tiering::archive::ArchiveObserver> = metrics.clone();
            let archive = silt_tiering::archive::Archive::open(settings, tokio::runtime::Handle::current(), observer)
                .with_context(|| format!("cannot open the archive tiering.archive_url {url}"))?;
            tracing::info!(archive_url = %url, "archiving sealed segments");
            Some(archive)
        }
        None => None,
    };
    let kafka_addr = listeners.bound[0].0.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let mut node_options = config.node_options(archive);
    if let Some(pool) = fetchers {
        node_options.cluster.fetchers = Some(pool);
    }
    node_options.endpoints = listeners.endpoints(config.kafka.inter_broker_listener.as_deref())?;
    if let Some(certificate) = &listeners.certificate {
        certificate.watch(Duration::from_millis(config.tls.reload_check_interval_ms));
    }
    let (node, edge) = start_node(&config, node_options).await?;
    if let Some(session) = edge.as_ref().and_then(RunningEdge::broker_session) {
        // As a KRaft broker does, serve nothing before the controller has
        // unfenced this broker: before that it can lead no partition, and the
        // group coordinator's offsets topic has nowhere to be placed.
        tokio::select! {
            unfenced = wait_unfenced(session, node.metadata_store().image(), node.node_id) => unfenced?,
            _ = signals.wait() => {
                tracing::info!("stopped while waiting for the controller to unfence this broker");
                return stop_before_serving(edge, &node).await;
            }
        }
    }
    // Every group is loaded before the listener serves a request. In a
    // cluster that waits for __consumer_offsets and its leaders, which may
    // never come if the other nodes are stopping too: a signal ends the wait.
    let groups = tokio::select! {
        started = GroupCoordinator::start(node.clone(), config.groups_config()) => started.context("loading consumer groups from __consumer_offsets")?,
        _ = signals.wait() => {
            tracing::info!("stopped while loading consumer groups");
            return stop_before_serving(edge, &node).await;
        }
    };
    crate::security::bootstrap_users(&node, &config).await?;
    let broker = Arc::new(Broker::new(node.clone(), groups, metrics, config, listeners.advertised.clone()));
    let (shutdown, _) = broadcast::channel(1);
    // Subscribed here, not in the tasks: a SIGTERM right after start would
    // otherwise be sent before a task subscribed, and it would never stop.
    let mut kafka = Vec::new();
    for (socket, listener) in listeners.bound {
        let address = socket.local_addr()?;
        tracing::info!(listener = %listener.name, protocol = %listener.protocol, %address, "kafka listener bound");
        kafka.push(tokio::spawn(crate::server::serve(socket, listener, broker.clone(), shutdown.clone(), shutdown.subscribe())));
    }
    let http = tokio::spawn(crate::http::serve(http_listener, broker.clone(), shutdown.subscribe()));
    tracing::info!(kafka_listener = %kafka_addr, http_listener = %http_addr, node_id = node.node_id, cluster_id = %node.cluster_id, "broker ready");

    signals.wait().await;
    if let Some(edge) = &edge {
        // Leaderships move while this node still answers, so clients are told
        // NOT_LEADER_OR_FOLLOWER and find the new leaders at once.
        let started = Instant::now();
        if edge.controlled_shutdown(CONTROLLED_SHUTDOWN_MAX).await {
            tracing::info!(took = ?started.elapsed(), "controlled shutdown: leaderships moved to other brokers");
        } else {
            tracing::warn!(waited = ?started.elapsed(), "controlled shutdown not confirmed by the controller; stopping anyway (the session will expire)");
        }
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    let _ = shutdown.send(());
    for listener in kafka {
        let _ = listener.await;
    }
    let deadline = Instant::now() + SHUTDOWN_DRAIN;
    while broker.metrics.connections.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = http.await;
    if let Some(edge) = edge {
        edge.shutdown().await;
    }
    node.shutdown().await.context("flushing partitions on shutdown")?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// openraft's timers in a cluster: Kafka's KRaft elects within about a second
/// (`controller.quorum.election.timeout.ms` 1000). openraft's defaults (heartbeat
/// 50 ms, election 150..300 ms) suit one voter, but three nodes sharing busy
/// cores would hold needless elections with them. A leader that dies with the
/// active controller waits for this election and then the new controller's
/// activation session, so the election is kept within about a second.
const CLUSTER_RAFT_TIMING: RaftTiming = RaftTiming { heartbeat_interval_ms: 150, election_timeout_min_ms: 600, election_timeout_max_ms: 1_200 };

/// Starts the node: the embedded single node without `[cluster]`; with it, a
/// member of the cluster whose metadata quorum runs over the node-to-node
/// transport, with broker sessions instead of registering itself.
async fn start_node(config: &Config, mut options: silt_actors::NodeOptions) -> anyhow::Result<(NodeHandle, Option<RunningEdge>)> {
    let opened = || format!("cannot open storage.data_dir {}", config.storage.data_dir.display());
    let Some(cluster) = config.cluster_config()? else {
        return Ok((NodeHandle::start(options).await.with_context(opened)?, None));
    };
    let edge = ClusterEdge::bind(cluster).await?;
    let identity = BrokerIdentity { endpoints: options.endpoints.clone(), rack: options.rack.clone() };
    options.cluster.voters = edge.voters();
    options.cluster.forwarder = Some(Arc::new(edge.forwarder()));
    options.cluster.register_self = false;
    options.cluster.timing = CLUSTER_RAFT_TIMING;
    let node = NodeHandle::start_with(options, edge.network()).await.with_context(opened)?;
    let store = node.metadata_store();
    tracing::info!(cluster_listener = ?edge.local_address(), voters = ?edge.voters().keys().collect::<Vec<_>>(), "joining the cluster");
    let edge = edge.serve(store.raft().clone(), store.image(), &config.broker, identity);
    Ok((node, Some(edge)))
}

/// Stops a node that was signalled before it served any client.
async fn stop_before_serving(edge: Option<RunningEdge>, node: &NodeHandle) -> anyhow::Result<()> {
    if let Some(edge) = edge {
        edge.shutdown().await;
    }
    node.shutdown().await.context("flushing partitions on shutdown")
}

/// The longest wait for the controller to confirm a controlled shutdown.
const CONTROLLED_SHUTDOWN_MAX: Duration = Duration::from_secs(5);

/// How often the wait for the controller's unfencing says it is still waiting.
const UNFENCE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Waits until the active controller has registered and unfenced this broker,
/// and this node's own metadata image shows it (admin requests read that
/// image: placing a topic's replicas needs the unfenced brokers in it).
async fn wait_unfenced(
    mut session: tokio::sync::watch::Receiver<BrokerSessionState>,
    mut image: tokio::sync::watch::Receiver<Arc<silt_actors::metadata::quorum::AppliedState>>,
    broker_id: i32,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let unfenced = tokio::time::timeout(UNFENCE_LOG_INTERVAL, async {
            session.wait_for(|s| matches!(s, BrokerSessionState::Registered { fenced: false, .. })).await.map(|_| ())?;
            image.wait_for(|state| state.image.brokers.get(&broker_id).is_some_and(|b| !b.fenced)).await.map(|_| ())
        })
        .await;
        match unfenced {
            Ok(Ok(())) => {
                tracing::info!(waited = ?started.elapsed(), "the controller unfenced this broker");
                return Ok(());
            }
            Ok(Err(_)) => anyhow::bail!("the broker session or the metadata quorum stopped before the controller unfenced this broker"),
            Err(_) => tracing::info!(waited = ?started.elapsed(), state = ?*session.borrow(), "waiting for the active controller to unfence this broker"),
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment `install` returns.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(Self { term, int })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
            _ = self.int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
        }
    }
}
