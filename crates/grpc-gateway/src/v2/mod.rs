//! etcd's v2 HTTP API on the v3 store (as etcd 3.4's v2-on-v3 emulation): one key
//! space, one history, one revision counter. `/v2/keys` reads and writes v2 nodes kept
//! under their own v3 prefix ([`keyspace`]); `modifiedIndex` and `createdIndex` are v3
//! revisions and `X-Etcd-Index` the current one; TTLs are leases (one per node);
//! `wait=true` reads the v3 history ([`wait`]). `/v2/members`, `/v2/machines` and
//! `/v2/stats/*` come from the Cluster and Maintenance services.
//!
//! Everything goes through the [`ClientApis`] the gRPC services use, so the same
//! permission checks and limits apply.

pub mod cluster;
pub mod error;
pub mod keyspace;
pub mod node;
pub mod params;
pub mod store;
pub mod wait;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use crate::api::{ClusterApi, MaintenanceApi, WatchApi};
use crate::serve::ClientApis;
use error::V2Error;
use params::{KeyRequest, Method};
use store::{Outcome, Store};

/// What the v2 routes share.
struct V2 {
    store: Store,
    watch: Arc<dyn WatchApi>,
    cluster: Arc<dyn ClusterApi>,
    maintenance: Arc<dyn MaintenanceApi>,
    name: String,
    start_time: String,
    started: Instant,
}

/// The v2 routes over `apis` (`/v2/keys`, `/v2/members`, `/v2/machines`, `/v2/stats`),
/// which etcd 3.4 serves only with `--enable-v2`. `name` is this member's name
/// (`/v2/stats/self`).
pub fn router(apis: &ClientApis, name: &str) -> Router {
    let start_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let state = Arc::new(V2 {
        store: Store::new(apis.kv.clone(), apis.lease.clone()),
        watch: apis.watch.clone(),
        cluster: apis.cluster.clone(),
        maintenance: apis.maintenance.clone(),
        name: name.to_string(),
        start_time: node::rfc3339_nanos(start_nanos),
        started: Instant::now(),
    });
    Router::new()
        .route("/v2/members", get(members_handler))
        .route("/v2/members/leader", get(leader_handler))
        .route("/v2/machines", get(machines_handler))
        .route("/v2/keys", any(keys_handler))
        .route("/v2/keys/", any(keys_handler))
        .route("/v2/keys/{*path}", any(keys_handler))
        .route("/v2/stats/self", get(self_stats_handler))
        .route("/v2/stats/leader", get(leader_stats_handler))
        .route("/v2/stats/store", get(store_stats_handler))
        .with_state(state)
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

fn error_response(e: &V2Error, cluster_id: u64) -> Response {
    let mut resp = json(e.code.status(), format!("{}\n", e.body()));
    let headers = resp.headers_mut();
    if cluster_id != 0 {
        set_header(headers, "x-etcd-cluster-id", format!("{cluster_id:x}"));
    }
    set_header(headers, "x-etcd-index", e.index.to_string());
    resp
}

/// The action a request is counted under in `/v2/stats/store`.
fn counted_as(req: &KeyRequest) -> &'static str {
    let compare = req.prev_value.is_some() || req.prev_index != 0;
    match req.method {
        Method::Get => "get",
        Method::Post => "create",
        Method::Delete if compare => "compareAndDelete",
        Method::Delete => "delete",
        Method::Put if req.prev_exist == Some(false) => "create",
        Method::Put if compare => "compareAndSwap",
        Method::Put if req.prev_exist == Some(true) => "update",
        Method::Put => "set",
    }
}

async fn keys_handler(
    State(v2): State<Arc<V2>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(m) = Method::from_name(method.as_str()) else {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [
                (header::ALLOW, "HEAD,GET,PUT,POST,DELETE"),
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            ],
            "Method Not Allowed\n",
        )
            .into_response();
    };
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let path = uri.path().strip_prefix("/v2/keys").unwrap_or("");
    let req = match params::parse(m, path, uri.query(), is_form.then_some(&body[..])) {
        Ok(req) => req,
        Err(e) => return error_response(&e, 0),
    };
    let outcome = match (req.method, req.wait) {
        (Method::Get, true) => wait_for(&v2, &req).await,
        (Method::Get, false) => v2.store.get(&req).await,
        (Method::Put | Method::Post, _) => v2.store.write(&req).await,
        (Method::Delete, _) => v2.store.delete(&req).await,
    };
    if !req.wait {
        v2.store.stats.record(counted_as(&req), outcome.is_ok());
    }
    match outcome {
        Ok(outcome) => success(&v2, outcome).await,
        Err(e) => {
            tracing::debug!(path = %req.path, error = %e, "v2 keys request refused");
            error_response(&e, 0)
        }
    }
}

async fn wait_for(v2: &V2, req: &KeyRequest) -> Result<Outcome, V2Error> {
    let header = v2.store.current().await?;
    let start = match req.wait_index {
        0 => header.revision + 1,
        n => i64::try_from(n).unwrap_or(i64::MAX),
    };
    // Counted while it waits, however it ends: a client that goes away drops this
    // future (and its watch) midway.
    struct Waiting<'a>(&'a std::sync::atomic::AtomicU64);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    v2.store.stats.watchers.fetch_add(1, Ordering::Relaxed);
    let waiting = Waiting(&v2.store.stats.watchers);
    let answer = wait::wait(
        v2.watch.as_ref(),
        &req.path,
        req.recursive,
        start,
        header.revision,
    )
    .await;
    drop(waiting);
    Ok(Outcome {
        status: StatusCode::OK,
        answer: answer?,
        header,
    })
}

async fn success(v2: &V2, outcome: Outcome) -> Response {
    let mut resp = json(outcome.status, format!("{}\n", outcome.answer.to_json()));
    let headers = resp.headers_mut();
    let h = &outcome.header;
    set_header(headers, "x-etcd-cluster-id", format!("{:x}", h.cluster_id));
    set_header(headers, "x-etcd-index", h.revision.to_string());
    if let Ok(status) = cluster::status(v2.maintenance.as_ref()).await {
        set_header(headers, "x-raft-index", status.raft_index.to_string());
        set_header(headers, "x-raft-term", status.raft_term.to_string());
    }
    resp
}

async fn members_handler(State(v2): State<Arc<V2>>) -> Response {
    match cluster::members(v2.cluster.as_ref()).await {
        Ok(members) => json(
            StatusCode::OK,
            format!("{}\n", cluster::members_json(&members)),
        ),
        Err(e) => error_response(&e, 0),
    }
}

async fn leader_handler(State(v2): State<Arc<V2>>) -> Response {
    let (members, status) = match (
        cluster::members(v2.cluster.as_ref()).await,
        cluster::status(v2.maintenance.as_ref()).await,
    ) {
        (Ok(m), Ok(s)) => (m, s),
        (Err(e), _) | (_, Err(e)) => return error_response(&e, 0),
    };
    let leader = format!("{:x}", status.leader);
    match members.iter().find(|m| m.id == leader) {
        Some(m) => json(
            StatusCode::OK,
            format!("{}\n", serde_json::to_string(m).unwrap_or_default()),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "During election\n",
        )
            .into_response(),
    }
}

async fn machines_handler(State(v2): State<Arc<V2>>) -> Response {
    match cluster::members(v2.cluster.as_ref()).await {
        Ok(members) => {
            let urls: Vec<String> = members.into_iter().flat_map(|m| m.client_urls).collect();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                urls.join(", "),
            )
                .into_response()
        }
        Err(e) => error_response(&e, 0),
    }
}

async fn self_stats_handler(State(v2): State<Arc<V2>>) -> Response {
    match cluster::status(v2.maintenance.as_ref()).await {
        Ok(status) => json(
            StatusCode::OK,
            format!(
                "{}\n",
                cluster::self_stats_json(
                    &v2.name,
                    &status,
                    &v2.start_time,
                    v2.started.elapsed().as_secs_f64()
                )
            ),
        ),
        Err(e) => error_response(&e, 0),
    }
}

async fn leader_stats_handler(State(v2): State<Arc<V2>>) -> Response {
    let (members, status) = match (
        cluster::members(v2.cluster.as_ref()).await,
        cluster::status(v2.maintenance.as_ref()).await,
    ) {
        (Ok(m), Ok(s)) => (m, s),
        (Err(e), _) | (_, Err(e)) => return error_response(&e, 0),
    };
    let me = status.header.as_ref().map_or(0, |h| h.member_id);
    if status.leader != me {
        return json(
            StatusCode::FORBIDDEN,
            "{\"message\":\"not current leader\"}\n".to_string(),
        );
    }
    let me = format!("{me:x}");
    let followers: serde_json::Map<String, serde_json::Value> = members
        .iter()
        .filter(|m| m.id != me)
        .map(|m| {
            (
                m.id.clone(),
                serde_json::json!({
                    "latency": {"current": 0.0, "average": 0.0, "standardDeviation": 0.0,
                                "minimum": 0.0, "maximum": 0.0},
                    "counts": {"fail": 0, "success": 0},
                }),
            )
        })
        .collect();
    let body = format!(
        "{{\"leader\":\"{me}\",\"followers\":{}}}\n",
        serde_json::Value::Object(followers)
    );
    json(StatusCode::OK, body)
}

async fn store_stats_handler(State(v2): State<Arc<V2>>) -> Response {
    json(StatusCode::OK, format!("{}\n", v2.store.stats.to_json()))
}
