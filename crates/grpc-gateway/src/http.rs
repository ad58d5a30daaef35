//! The plain HTTP endpoints etcd serves on its client port: `/health`, `/livez`,
//! `/readyz`, `/version` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::api::HealthApi;

/// The versions `/version` reports.
#[derive(Debug, Clone)]
pub struct Versions {
    /// The server's etcd-compatible version.
    pub server: String,
    /// The cluster's version.
    pub cluster: String,
}

struct HttpState {
    health: Arc<dyn HealthApi>,
    metrics: Option<PrometheusHandle>,
    versions: Versions,
}

/// The router of the HTTP endpoints.
pub fn router(
    health: Arc<dyn HealthApi>,
    metrics: Option<PrometheusHandle>,
    versions: Versions,
) -> Router {
    let state = Arc::new(HttpState {
        health,
        metrics,
        versions,
    });
    Router::new()
        .route("/health", get(health_handler))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(health_text_handler))
        .route("/version", get(version_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn health_handler(State(state): State<Arc<HttpState>>) -> Response {
    let h = state.health.health().await;
    let status = if h.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        serde_json::json!({ "health": h.healthy.to_string(), "reason": h.reason }),
    )
}

async fn health_text_handler(State(state): State<Arc<HttpState>>) -> Response {
    let h = state.health.health().await;
    if h.healthy {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, h.reason).into_response()
    }
}

async fn version_handler(State(state): State<Arc<HttpState>>) -> Response {
    json(
        StatusCode::OK,
        serde_json::json!({
            "etcdserver": state.versions.server,
            "etcdcluster": state.versions.cluster,
        }),
    )
}

async fn metrics_handler(State(state): State<Arc<HttpState>>) -> Response {
    match &state.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}
