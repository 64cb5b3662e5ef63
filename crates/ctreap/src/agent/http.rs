//! `/metrics`, `/healthz` and `/readyz` on `--listen`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Something an operator must fix that does not stop the agent (a wrong --node-name).
    warning: Mutex<Option<String>>,
    /// The main loop's last sign of progress, in ms since `started`.
    beat_ms: AtomicU64,
    started: Instant,
    /// How long without progress makes /healthz fail.
    liveness_timeout: Mutex<Duration>,
}

impl Health {
    pub fn new() -> Health {
        Health {
            metrics: Metrics::new(),
            not_ready: Mutex::new(Some("starting".into())),
            warning: Mutex::new(None),
            beat_ms: AtomicU64::new(0),
            started: Instant::now(),
            liveness_timeout: Mutex::new(Duration::from_secs(60)),
        }
    }

    /// Sets readiness: `None` means ready, `Some(reason)` not ready because of `reason`.
    pub fn set_not_ready(&self, reason: Option<String>) {
        self.metrics.ready(reason.is_none());
        *self.not_ready.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// The main loop made progress.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.beat_ms.store(ms, Ordering::Relaxed);
    }

    pub fn set_liveness_timeout(&self, d: Duration) {
        *self
            .liveness_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// How long the main loop has gone without progress, if longer than the liveness timeout.
    fn stalled(&self) -> Option<Duration> {
        let now = self.started.elapsed();
        let last = Duration::from_millis(self.beat_ms.load(Ordering::Relaxed));
        let quiet = now.saturating_sub(last);
        let limit = *self
            .liveness_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (quiet > limit).then_some(quiet)
    }

    /// Sets the warning /readyz shows; returns whether it changed.
    pub fn set_warning(&self, warning: Option<String>) -> bool {
        let mut w = self.warning.lock().unwrap_or_else(|e| e.into_inner());
        let changed = *w != warning;
        *w = warning;
        changed
    }

    fn warning(&self) -> Option<String> {
        self.warning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

async fn healthz(State(h): State<Arc<Health>>) -> (StatusCode, String) {
    match h.stalled() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(quiet) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stalled: the main loop has made no progress for {:.1}s (--liveness-timeout)\n",
                quiet.as_secs_f64()
            ),
        ),
    }
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, String) {
    let warning = h
        .warning()
        .map_or(String::new(), |w| format!("; warning: {w}"));
    match h.not_ready() {
        None => (StatusCode::OK, format!("ready{warning}\n")),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}{warning}\n"),
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
