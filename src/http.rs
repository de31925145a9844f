//! The HTTP listener: `/metrics` (Prometheus text format), `/health` (the
//! process serves) and `/ready` (every partition's log has opened, so every
//! request is answered from a recovered log: what a load balancer or a
//! Kubernetes readiness probe should wait for).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::broker::Broker;

/// Serves until `stop` fires (subscribed by the caller before spawning this,
/// so a shutdown sent before the task first runs is not missed).
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, mut stop: broadcast::Receiver<()>) {
    let app = Router::new().route("/metrics", get(metrics)).route("/health", get(health)).route("/ready", get(ready)).with_state(broker);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.recv().await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(cause = %e, "HTTP listener failed");
    }
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], broker.metrics.render(&broker.node, &broker.groups))
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(broker): State<Arc<Broker>>) -> (StatusCode, String) {
    let partitions = broker.node.partition_watermarks();
    let opening = partitions.iter().filter(|(_, marks)| !marks.open).count();
    if opening == 0 {
        (StatusCode::OK, format!("ready: {} partitions open\n", partitions.len()))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {opening} of {} partitions still opening\n", partitions.len()))
    }
}
