//! A discovery service as discovery.etcd.io serves it, for members that bootstrap with
//! `--discovery <url>` (cairn, and etcd up to 3.6): `GET /new?size=N` makes a token and
//! answers its URL; members read `/<token>/_config/size`, register with `PUT
//! /<token>/<member id> value=<name>=<peer URL>`, list `/<token>` (in creation order)
//! and wait for the others with `?wait=true&waitIndex=`. The answers are etcd's v2 keys
//! API JSON, which etcd's discovery client reads.
//!
//! The state lives in cairn (or any etcd) under `/_discovery/<token>/...`: a node's
//! index is its key's revision, waits are v3 watches from that revision, and each token
//! lives on a lease that expires it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let kv = etcd_client::Client::connect(["127.0.0.1:2379"], None).await?;
//! let service = cairn_discovery::Service::new(kv, "http://127.0.0.1:8087".into(), std::time::Duration::from_secs(7 * 24 * 3600));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8087").await?;
//! axum::serve(listener, service.router()).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use serde_json::{json, Value};

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backing store failed.
    #[error("discovery backend: {0}")]
    Store(#[from] etcd_client::Error),
    /// A token name or size that cannot be.
    #[error("{0}")]
    BadToken(String),
}

/// Where the tokens live in the backing store.
pub const PREFIX: &str = "/_discovery/";
/// The largest cluster a token may be made for.
pub const MAX_SIZE: u64 = 1000;
/// How long a wait is held before it answers with no event (clients ask again).
const WAIT: Duration = Duration::from_secs(300);

/// The discovery service over a cairn or etcd client.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    kv: Client,
    base: String,
    ttl: Duration,
}

impl Service {
    /// Serves tokens as `<base>/<token>`, stored through `kv`, expiring after `ttl`.
    pub fn new(kv: Client, base: String, ttl: Duration) -> Self {
        Service {
            inner: Arc::new(Inner {
                kv,
                base: base.trim_end_matches('/').to_string(),
                ttl,
            }),
        }
    }

    /// Makes sure a token named `token` exists (of `size` members, on a lease as
    /// `/new` makes them; an existing one is kept as it is); its URL.
    pub async fn ensure_token(&self, token: &str, size: u64) -> Result<String, Error> {
        if token.is_empty() || token.contains('/') || !(1..=MAX_SIZE).contains(&size) {
            return Err(Error::BadToken(format!(
                "token {token:?} of size {size}: a name without '/', a size from 1 to {MAX_SIZE}"
            )));
        }
        let mut kv = self.inner.kv.clone();
        if token_lease(&mut kv, token).await?.is_none() {
            let lease = kv
                .lease_grant(self.inner.ttl.as_secs() as i64, None)
                .await?
                .id();
            let key = format!("{PREFIX}{token}/_config/size");
            let create = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key,
                    size.to_string(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            kv.txn(create).await?;
        }
        Ok(format!("{}/{token}", self.inner.base))
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/new", get(new_token))
            .route("/health", get(health))
            .route("/{token}", get(get_node))
            .route("/{token}/{*key}", get(get_node).put(put_node))
            .with_state(self.clone())
    }
}

/// A v2 error body with its HTTP status.
fn v2_error(status: StatusCode, code: u32, message: &str, cause: &str, index: i64) -> Response {
    let body = json!({"errorCode": code, "message": message, "cause": cause, "index": index});
    with_index(status, body, index)
}

fn with_index(status: StatusCode, body: Value, index: i64) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&index.to_string()) {
        resp.headers_mut().insert("X-Etcd-Index", v);
    }
    resp
}

fn internal(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("discovery backend: {e}\n"),
    )
        .into_response()
}

async fn health(State(svc): State<Service>) -> Response {
    let mut kv = svc.inner.kv.clone();
    match kv.get("health", None).await {
        Ok(_) => (StatusCode::OK, "OK\n").into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /new?size=N`: a new token, its size set; the body is the token's URL.
async fn new_token(
    State(svc): State<Service>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let size = match q.get("size").map(|s| s.parse::<u64>()) {
        None => 3,
        Some(Ok(n)) if (1..=MAX_SIZE).contains(&n) => n,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("size must be a number from 1 to {MAX_SIZE}\n"),
            )
                .into_response()
        }
    };
    let token: String = {
        use rand::Rng as _;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:x}", rng.random_range(0..16u8)))
            .collect()
    };
    let mut kv = svc.inner.kv.clone();
    let lease = match kv.lease_grant(svc.inner.ttl.as_secs() as i64, None).await {
        Ok(l) => l.id(),
        Err(e) => return internal(e),
    };
    let key = format!("{PREFIX}{token}/_config/size");
    if let Err(e) = kv
        .put(
            key,
            size.to_string(),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
    {
        return internal(e);
    }
    tracing::info!(%token, size, "new discovery token");
    (StatusCode::OK, format!("{}/{token}", svc.inner.base)).into_response()
}

/// A v2 node for a stored key-value (its key shown without the store prefix).
fn node(kv: &etcd_client::KeyValue) -> Value {
    let key = kv.key_str().unwrap_or_default();
    json!({
        "key": format!("/{}", key.strip_prefix(PREFIX).unwrap_or(key)),
        "value": kv.value_str().unwrap_or_default(),
        "modifiedIndex": kv.mod_revision(),
        "createdIndex": kv.create_revision(),
    })
}

/// The token's lease (that of its size key), if the token exists.
async fn token_lease(kv: &mut Client, token: &str) -> Result<Option<i64>, etcd_client::Error> {
    let resp = kv
        .get(format!("{PREFIX}{token}/_config/size"), None)
        .await?;
    Ok(resp.kvs().first().map(|kv| kv.lease()))
}

/// `GET /<token>[/<key>]`: a node, or the token's directory (its registrations in
/// creation order, the `_config` directory first); with `wait=true`, the first change at
/// or after `waitIndex`.
async fn get_node(
    State(svc): State<Service>,
    path: Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let token = path.get("token").cloned().unwrap_or_default();
    let sub = path.get("key").cloned().unwrap_or_default();
    let mut kv = svc.inner.kv.clone();
    let key = if sub.is_empty() {
        format!("{PREFIX}{token}")
    } else {
        format!("{PREFIX}{token}/{sub}")
    };
    let shown = format!(
        "/{token}{}",
        if sub.is_empty() {
            String::new()
        } else {
            format!("/{sub}")
        }
    );
    if q.get("wait").map(String::as_str) == Some("true") {
        let from = match q.get("waitIndex").map(|s| s.parse::<i64>()) {
            None => 0,
            Some(Ok(n)) if n >= 0 => n,
            Some(_) => {
                return v2_error(
                    StatusCode::BAD_REQUEST,
                    203,
                    "The given index in POST form is not a number",
                    "",
                    0,
                )
            }
        };
        let recursive = q.get("recursive").map(String::as_str) == Some("true");
        return wait(&mut kv, &key, recursive || sub.is_empty(), from).await;
    }
    let prefix = format!("{key}/");
    let single = match kv.get(key.clone(), None).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let children = match kv
        .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
        .await
    {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let index = children.header().map_or(0, |h| h.revision());
    if let Some(found) = single.kvs().first() {
        return with_index(
            StatusCode::OK,
            json!({"action": "get", "node": node(found)}),
            index,
        );
    }
    if children.kvs().is_empty() {
        return v2_error(StatusCode::NOT_FOUND, 100, "Key not found", &shown, index);
    }
    // The directory's direct children: files, and sub-directories (`_config`).
    let mut nodes: Vec<Value> = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    let mut files: Vec<&etcd_client::KeyValue> = Vec::new();
    for child in children.kvs() {
        let rest = &child.key_str().unwrap_or_default()[prefix.len()..];
        match rest.split_once('/') {
            Some((dir, _)) => {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_string());
                }
            }
            None => files.push(child),
        }
    }
    for dir in dirs {
        nodes.push(json!({"key": format!("{shown}/{dir}"), "dir": true}));
    }
    files.sort_by_key(|kv| kv.create_revision());
    nodes.extend(files.into_iter().map(node));
    with_index(
        StatusCode::OK,
        json!({"action": "get", "node": {"key": shown, "dir": true, "nodes": nodes}}),
        index,
    )
}

/// Answers the first change of `key` (or under it) at or after revision `from`.
async fn wait(kv: &mut Client, key: &str, recursive: bool, from: i64) -> Response {
    let mut options = WatchOptions::new().with_start_revision(from.max(1));
    if recursive {
        options = options.with_prefix();
    }
    let mut stream = match kv.watch(key, Some(options)).await {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let deadline = tokio::time::sleep(WAIT);
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            _ = &mut deadline => return StatusCode::OK.into_response(),
        };
        let resp = match message {
            Ok(Some(resp)) => resp,
            Ok(None) => return internal("watch ended"),
            Err(e) => return internal(e),
        };
        if resp.canceled() {
            return v2_error(
                StatusCode::BAD_REQUEST,
                401,
                "The event in requested index is outdated and cleared",
                key,
                resp.compact_revision(),
            );
        }
        if let Some(event) = resp.events().first() {
            let Some(kv) = event.kv() else { continue };
            let action = match event.event_type() {
                EventType::Put if kv.version() == 1 => "create",
                EventType::Put => "set",
                EventType::Delete => "delete",
            };
            let index = resp.header().map_or(kv.mod_revision(), |h| h.revision());
            return with_index(
                StatusCode::OK,
                json!({"action": action, "node": node(kv)}),
                index,
            );
        }
    }
}

/// The fields of a v2 PUT body.
#[derive(serde::Deserialize)]
struct PutForm {
    value: Option<String>,
}

/// `PUT /<token>/<member id> value=...` (with `prevExist=false`, as etcd's discovery
/// client creates its key): registers a member on the token's lease.
async fn put_node(
    State(svc): State<Service>,
    path: Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let token = path.get("token").cloned().unwrap_or_default();
    let sub = path.get("key").cloned().unwrap_or_default();
    if sub.is_empty() || sub.starts_with('_') || sub.contains('/') {
        return v2_error(
            StatusCode::FORBIDDEN,
            107,
            "Root is read only",
            &format!("/{token}/{sub}"),
            0,
        );
    }
    let form = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    let value = if form || !body.is_empty() {
        match serde_urlencoded::from_bytes::<PutForm>(&body) {
            Ok(PutForm { value: Some(v) }) => v,
            _ => {
                return v2_error(
                    StatusCode::BAD_REQUEST,
                    209,
                    "Invalid form",
                    "value is required",
                    0,
                )
            }
        }
    } else {
        return v2_error(
            StatusCode::BAD_REQUEST,
            209,
            "Invalid form",
            "value is required",
            0,
        );
    };
    let mut kv = svc.inner.kv.clone();
    let lease = match token_lease(&mut kv, &token).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            return v2_error(
                StatusCode::NOT_FOUND,
                100,
                "Key not found",
                &format!("/{token}"),
                0,
            )
        }
        Err(e) => return internal(e),
    };
    let key = format!("{PREFIX}{token}/{sub}");
    let must_be_new = q.get("prevExist").map(String::as_str) == Some("false");
    let put = TxnOp::put(
        key.clone(),
        value,
        Some(PutOptions::new().with_lease(lease)),
    );
    let txn = if must_be_new {
        Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put])
    } else {
        Txn::new().and_then([put])
    };
    let done = match kv.txn(txn).await {
        Ok(done) => done,
        Err(e) => return internal(e),
    };
    let index = done.header().map_or(0, |h| h.revision());
    if !done.succeeded() {
        return v2_error(
            StatusCode::PRECONDITION_FAILED,
            105,
            "Key already exists",
            &format!("/{token}/{sub}"),
            index,
        );
    }
    let stored = match kv.get(key, None).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let Some(created) = stored.kvs().first() else {
        return internal("the registration vanished");
    };
    let status = if created.version() == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let action = if must_be_new { "create" } else { "set" };
    with_index(
        status,
        json!({"action": action, "node": node(created)}),
        index,
    )
}
