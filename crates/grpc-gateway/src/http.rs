//! The plain HTTP endpoints etcd serves on its client port: `/health`, `/livez`,
//! `/readyz`, `/version` and `/metrics`.
//!
//! `/health` answers etcd's JSON (`?exclude=ALARM`, `?serializable=true`). `/livez` and
//! `/readyz` run etcd 3.6's named checks — `serializable_read` for liveness;
//! `data_corruption`, `serializable_read`, `linearizable_read` and `non_learner` for
//! readiness — all of them, those not `?exclude=`d, or only the `?allowlist=`ed ones, or
//! one by its path (`/readyz/linearizable_read`). Success is `ok` (after a `[+]name ok`
//! line per check with `?verbose`); failure is 503 with a `[+]`/`[-]name failed: why`
//! line per check.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
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
        .route("/livez", get(livez_handler))
        .route("/livez/{check}", get(livez_check_handler))
        .route("/readyz", get(readyz_handler))
        .route("/readyz/{check}", get(readyz_check_handler))
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

/// The values of `name` in a query string (`a=1&b&a=2`); empty values are skipped.
fn query_values<'q>(query: &'q Option<String>, name: &'q str) -> impl Iterator<Item = &'q str> {
    query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name && !value.is_empty()).then_some(value)
        })
}

fn query_has(query: &Option<String>, name: &str) -> bool {
    query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair.split_once('=').map_or(pair, |(k, _)| k) == name)
}

async fn health_handler(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let excluded: Vec<&str> = query_values(&query, "exclude").collect();
    let serializable = query_values(&query, "serializable").any(|v| v == "true");
    let h = &state.health;
    let failure = if let Some(alarm) = h
        .alarms()
        .into_iter()
        .find(|a| !excluded.contains(&a.as_str()))
    {
        Some(match alarm.as_str() {
            "NOSPACE" | "CORRUPT" => format!("ALARM {alarm}"),
            _ => "ALARM UNKNOWN".to_string(),
        })
    } else if !serializable && !h.has_leader() {
        Some("RAFT NO LEADER".to_string())
    } else {
        h.read(serializable)
            .await
            .err()
            .map(|e| format!("RANGE ERROR:{e}"))
    };
    let (status, healthy, reason) = match failure {
        None => (StatusCode::OK, "true", String::new()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, "false", reason),
    };
    json(
        status,
        serde_json::json!({ "health": healthy, "reason": reason }),
    )
}

/// The checks of `/livez`, in the order they run.
const LIVEZ_CHECKS: [&str; 1] = ["serializable_read"];
/// The checks of `/readyz`, in the order they run.
const READYZ_CHECKS: [&str; 4] = [
    "data_corruption",
    "serializable_read",
    "linearizable_read",
    "non_learner",
];

/// Runs one named check.
async fn run_check(health: &dyn HealthApi, name: &str) -> Result<(), String> {
    match name {
        "serializable_read" => health.read(true).await,
        "linearizable_read" => health.read(false).await,
        "data_corruption" => match health.alarms().iter().any(|a| a == "CORRUPT") {
            true => Err("alarm activated: CORRUPT".into()),
            false => Ok(()),
        },
        "non_learner" => match health.is_learner() {
            true => Err("not supported for learner".into()),
            false => Ok(()),
        },
        other => Err(format!("unknown check {other}")),
    }
}

/// Runs `checks` and answers as etcd's `/livez` and `/readyz` do.
async fn run_checks(health: &dyn HealthApi, checks: &[&str], verbose: bool) -> Response {
    let mut report = String::new();
    let mut failed = false;
    for name in checks {
        match run_check(health, name).await {
            Ok(()) => report.push_str(&format!("[+]{name} ok\n")),
            Err(why) => {
                failed = true;
                report.push_str(&format!("[-]{name} failed: {why}\n"));
            }
        }
    }
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if failed {
        // Failures always say which check failed and why.
        report.push('\n');
        return (StatusCode::SERVICE_UNAVAILABLE, text, report).into_response();
    }
    let body = if verbose {
        report + "ok\n"
    } else {
        "ok\n".to_string()
    };
    (StatusCode::OK, text, body).into_response()
}

/// The checks of `all` a query asks for: the `allowlist`ed ones if any, else all but
/// the `exclude`d ones. Names that are not checks are ignored, as etcd does.
fn selected<'a>(all: &[&'a str], query: &Option<String>) -> Vec<&'a str> {
    let allow: Vec<&str> = query_values(query, "allowlist").collect();
    let exclude: Vec<&str> = query_values(query, "exclude").collect();
    all.iter()
        .copied()
        .filter(|c| allow.is_empty() || allow.contains(c))
        .filter(|c| !exclude.contains(c))
        .collect()
}

async fn probe(
    state: &HttpState,
    all: &[&str],
    query: Option<String>,
    only: Option<String>,
) -> Response {
    let checks = match only {
        Some(name) if all.contains(&name.as_str()) => vec![name],
        Some(_) => return (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
        None => selected(all, &query)
            .into_iter()
            .map(str::to_string)
            .collect(),
    };
    let names: Vec<&str> = checks.iter().map(String::as_str).collect();
    run_checks(state.health.as_ref(), &names, query_has(&query, "verbose")).await
}

async fn livez_handler(State(state): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> Response {
    probe(&state, &LIVEZ_CHECKS, query, None).await
}

async fn livez_check_handler(
    State(state): State<Arc<HttpState>>,
    Path(check): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    probe(&state, &LIVEZ_CHECKS, query, Some(check)).await
}

async fn readyz_handler(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> Response {
    probe(&state, &READYZ_CHECKS, query, None).await
}

async fn readyz_check_handler(
    State(state): State<Arc<HttpState>>,
    Path(check): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    probe(&state, &READYZ_CHECKS, query, Some(check)).await
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
