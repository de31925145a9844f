//! Assembly of a node: the node actor, the Kafka and HTTP listeners, and an
//! orderly shutdown on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use silt_actors::group::GroupCoordinator;
use silt_actors::metadata::quorum::Endpoint;
use silt_actors::NodeHandle;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, Semaphore};

use crate::config::Config;
use crate::metrics::Metrics;

/// How long shutdown waits for open connections to finish their request.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Everything a request handler may need, shared by all connections.
pub struct Broker {
    pub node: NodeHandle,
    /// The group coordinator (every group's coordinator is this node).
    pub groups: Arc<GroupCoordinator>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// The host and port clients are told to use.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Node-wide budget of request bytes being read or handled.
    pub request_memory: Arc<Semaphore>,
}

fn advertised(config: &Config, bound: SocketAddr) -> (String, i32) {
    match config.kafka.advertised_address.as_deref().and_then(|a| a.rsplit_once(':')) {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(i32::from(bound.port()))),
        None => (bound.ip().to_string(), i32::from(bound.port())),
    }
}

/// Runs a broker until SIGTERM or SIGINT. Must run inside an actix `System`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Installed first: a SIGTERM that arrives once "broker ready" is printed
    // (or while starting) is a graceful stop, not the default action's kill.
    let mut signals = ShutdownSignals::install()?;
    let kafka_listener = TcpListener::bind(config.kafka.listen).await.with_context(|| format!("cannot listen on kafka.listen {}", config.kafka.listen))?;
    let http_listener = TcpListener::bind(config.http.listen).await.with_context(|| format!("cannot listen on http.listen {}", config.http.listen))?;
    let metrics = Arc::new(Metrics::with_per_partition(config.metrics.per_partition).watch_storage(config.storage.data_dir.clone()));
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
    let kafka_addr = kafka_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let (advertised_host, advertised_port) = advertised(&config, kafka_addr);
    let mut node_options = config.node_options(archive);
    node_options.endpoints = vec![Endpoint {
        listener: "PLAINTEXT".into(),
        host: advertised_host.clone(),
        port: u16::try_from(advertised_port).with_context(|| format!("the advertised port {advertised_port} is not a TCP port"))?,
    }];
    let node = NodeHandle::start(node_options).await.with_context(|| format!("cannot open storage.data_dir {}", config.storage.data_dir.display()))?;
    // Every group is loaded before the listener serves a request.
    let groups = GroupCoordinator::start(node.clone(), config.groups_config()).await.context("loading consumer groups from __consumer_offsets")?;
    let queued = usize::try_from(config.kafka.queued_max_request_bytes).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
    let broker =
        Arc::new(Broker { node: node.clone(), groups, metrics, request_memory: Arc::new(Semaphore::new(queued)), config, advertised_host, advertised_port });
    let (shutdown, _) = broadcast::channel(1);
    // Subscribed here, not in the tasks: a SIGTERM right after start would
    // otherwise be sent before a task subscribed, and it would never stop.
    let kafka = tokio::spawn(crate::server::serve(kafka_listener, broker.clone(), shutdown.clone(), shutdown.subscribe()));
    let http = tokio::spawn(crate::http::serve(http_listener, broker.clone(), shutdown.subscribe()));
    tracing::info!(kafka_listener = %kafka_addr, http_listener = %http_addr, node_id = node.node_id, cluster_id = %node.cluster_id, "broker ready");

    signals.wait().await;
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    let _ = shutdown.send(());
    let _ = kafka.await;
    let deadline = Instant::now() + SHUTDOWN_DRAIN;
    while broker.metrics.connections.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = http.await;
    node.shutdown().await.context("flushing partitions on shutdown")?;
    tracing::info!("shutdown complete");
    Ok(())
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
