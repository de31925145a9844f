//! The HTTP listener: `/metrics` (Prometheus text format) and `/health`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::broker::Broker;

/// Serves until `shutdown` fires.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: broadcast::Sender<()>) {
    let app = Router::new().route("/metrics", get(metrics)).route("/health", get(health)).with_state(broker);
    let mut stop = shutdown.subscribe();
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
