//! `/metrics`, `/healthz` and `/readyz` on `--listen`.

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// What the endpoints report; shared with the agent loop.
pub struct Health {
    pub metrics: Metrics,
    /// `None` when ready; otherwise why not, in one line.
    not_ready: Mutex<Option<String>>,
}

impl Health {
    pub fn new() -> Health {
        Health {
            metrics: Metrics::new(),
            not_ready: Mutex::new(Some("starting".into())),
        }
    }

    /// Sets readiness: `None` means ready, `Some(reason)` not ready because of `reason`.
    pub fn set_not_ready(&self, reason: Option<String>) {
        self.metrics.ready(reason.is_none());
        *self.not_ready.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    pub fn not_ready(&self) -> Option<String> {
        self.not_ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, String) {
    match h.not_ready() {
        None => (StatusCode::OK, "ready\n".into()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}
