//! `--discovery <url>`: bootstrapping through a discovery service (discovery.etcd.io's
//! protocol, as etcd up to 3.6 speaks it; `cairn-discovery` serves it). A new member
//! registers `<name>=<peer URLs>` under its member id, waits until the token's size is
//! reached, and starts with the first `size` registrants (in creation order) as its
//! `--initial-cluster`, the discovery URL as its cluster token (as etcd: the ids then
//! match etcd's). A member beyond the size stops with etcd's `discovery: cluster is
//! full`; a member whose data dir holds a member already ignores discovery.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::Config;
use crate::error::ServerError;

/// How many times an unreachable service is tried, with a doubling pause from 1 s.
const ATTEMPTS: u32 = 6;

fn failed(why: impl Into<String>) -> ServerError {
    ServerError::Discovery(why.into())
}

/// A registration: the member's key (its id in hex) and value.
struct Node {
    key: String,
    value: String,
    created: i64,
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One request to the service: the status, the `X-Etcd-Index` and the body, retried with
/// backoff while the service cannot be reached.
async fn call(
    http: &Http,
    method: &str,
    url: &str,
    body: Option<String>,
) -> Result<(u16, i64, Vec<u8>), ServerError> {
    let mut pause = Duration::from_secs(1);
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let mut request = hyper::Request::builder().method(method).uri(url);
        if body.is_some() {
            request = request.header("content-type", "application/x-www-form-urlencoded");
        }
        let request = request
            .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
            .map_err(|e| failed(format!("discovery: bad URL {url}: {e}")))?;
        match http.request(request).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let index = resp
                    .headers()
                    .get("X-Etcd-Index")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| failed(format!("discovery: reading {url}: {e}")))?
                    .to_bytes();
                if status < 500 {
                    return Ok((status, index, bytes.to_vec()));
                }
                last = format!("{url} answered {status}");
            }
            Err(e) => last = format!("{url}: {e}"),
        }
        tracing::warn!(attempt, error = %last, "discovery service not reachable; retrying");
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    Err(failed(format!(
        "discovery: the service did not answer after {ATTEMPTS} attempts ({last})"
    )))
}

/// The registrations under the token, in creation order.
async fn registrations(http: &Http, token_url: &str) -> Result<(Vec<Node>, i64), ServerError> {
    let (status, index, body) = call(http, "GET", token_url, None).await?;
    if status != 200 {
        return Err(failed(format!(
            "discovery: {token_url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|_| failed("discovery: bad discovery endpoint (not a discovery service)"))?;
    let mut nodes: Vec<Node> = doc["node"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| !n["dir"].as_bool().unwrap_or(false))
        .map(|n| Node {
            key: n["key"].as_str().unwrap_or_default().to_string(),
            value: n["value"].as_str().unwrap_or_default().to_string(),
            created: n["createdIndex"].as_i64().unwrap_or(0),
        })
        .collect();
    nodes.sort_by_key(|n| n.created);
    Ok((nodes, index))
}

/// Resolves `--discovery` (or the v3 `--discovery-endpoints` and `--discovery-token`)
/// into `--initial-cluster` and the cluster token for a new member; nothing for a member
/// that has a data dir or no discovery flag.
pub(crate) async fn resolve(cfg: &mut Config) -> Result<(), ServerError> {
    if !cfg.discovery_endpoints.trim().is_empty() {
        if cfg.wal_dir().exists() {
            tracing::info!("the data dir holds a member: --discovery-endpoints ignored");
            return Ok(());
        }
        return v3::resolve(cfg).await;
    }
    let url = cfg.discovery.trim().trim_end_matches('/').to_string();
    if url.is_empty() {
        return Ok(());
    }
    if cfg.wal_dir().exists() {
        tracing::info!(%url, "the data dir holds a member: --discovery ignored");
        return Ok(());
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| failed(format!("--discovery {url}: not a URL ({e})")))?;
    if uri.scheme_str() != Some("http") || uri.path().trim_matches('/').is_empty() {
        return Err(failed(format!(
            "--discovery {url}: expected http://<host>/<token> (https is not supported)"
        )));
    }
    if cfg.initial_cluster.is_some() {
        tracing::warn!("--initial-cluster is ignored: --discovery decides the cluster");
    }
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let peer_urls = cfg.advertise_peer_urls();
    let id = crate::ids::member_id(&peer_urls, &url);
    let self_key = format!("{}/{id:x}", uri.path().trim_end_matches('/'));
    let value = peer_urls
        .iter()
        .map(|u| format!("{}={u}", cfg.name))
        .collect::<Vec<_>>()
        .join(",");

    let (status, _, body) = call(&http, "GET", &format!("{url}/_config/size"), None).await?;
    if status == 404 {
        return Err(failed("discovery: size key not found"));
    }
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|_| failed("discovery: bad discovery endpoint (not a discovery service)"))?;
    let size: usize = doc["node"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| failed("discovery: size key is bad"))?;
    let full = |nodes: &[Node]| {
        let position = nodes.iter().position(|n| n.key == self_key);
        nodes.len() >= size && position.is_none_or(|p| p >= size)
    };
    let (nodes, _) = registrations(&http, &url).await?;
    if full(&nodes) && !nodes.iter().any(|n| n.key == self_key) {
        return Err(failed("discovery: cluster is full"));
    }
    let form = serde_urlencoded::to_string([("value", value.as_str())])
        .map_err(|e| failed(format!("discovery: {e}")))?;
    let (status, _, body) = call(
        &http,
        "PUT",
        &format!("{url}/{id:x}?prevExist=false"),
        Some(form),
    )
    .await?;
    match status {
        200 | 201 => {}
        412 => return Err(failed("discovery: found duplicate id")),
        other => {
            return Err(failed(format!(
                "discovery: registering answered {other}: {}",
                String::from_utf8_lossy(&body)
            )))
        }
    }
    tracing::info!(%url, id = %format!("{id:x}"), size, "registered with the discovery service");
    loop {
        let (nodes, index) = registrations(&http, &url).await?;
        if full(&nodes) {
            return Err(failed("discovery: cluster is full"));
        }
        if nodes.len() >= size {
            let initial = nodes[..size]
                .iter()
                .map(|n| n.value.as_str())
                .collect::<Vec<_>>()
                .join(",");
            tracing::info!(initial_cluster = %initial, "discovery complete");
            cfg.initial_cluster = Some(initial);
            cfg.initial_cluster_token = url.clone();
            cfg.initial_cluster_state = "new".into();
            return Ok(());
        }
        tracing::info!(
            registered = nodes.len(),
            size,
            "waiting for the other members"
        );
        // The next change under the token (the service holds the request open).
        let wait = format!("{url}?wait=true&recursive=true&waitIndex={}", index + 1);
        call(&http, "GET", &wait, None).await?;
    }
}

/// The v3 discovery of etcd 3.6+: the registrations are keys of any etcd-compatible
/// cluster, `/_etcd/registry/<token>/_config/size` and
/// `/_etcd/registry/<token>/members/<member id>` = `<name>=<peer URLs>`.
mod v3 {
    use std::time::Duration;

    use cairn_proto::etcdserverpb::{
        kv_client::KvClient, watch_client::WatchClient, watch_request, PutRequest, RangeRequest,
        WatchCreateRequest, WatchRequest,
    };
    use futures::StreamExt as _;
    use tonic::transport::{Channel, Endpoint};

    use crate::config::Config;
    use crate::error::ServerError;

    fn failed(why: impl Into<String>) -> ServerError {
        ServerError::Discovery(why.into())
    }

    /// The first endpoint that answers.
    async fn connect(cfg: &Config) -> Result<Channel, ServerError> {
        let duration = |flag: &str, text: &str| {
            crate::config::parse_go_duration(text)
                .ok_or_else(|| failed(format!("{flag}: {text:?} is not a duration")))
        };
        let dial = duration("--discovery-dial-timeout", &cfg.discovery_dial_timeout)?;
        let request = duration(
            "--discovery-request-timeout",
            &cfg.discovery_request_timeout,
        )?;
        let mut last = String::new();
        for endpoint in cfg.discovery_endpoints.split(',').map(str::trim) {
            let url = if endpoint.contains("://") {
                endpoint.to_string()
            } else {
                format!("http://{endpoint}")
            };
            let ep = Endpoint::from_shared(url.clone())
                .map_err(|e| failed(format!("--discovery-endpoints {endpoint}: {e}")))?
                .connect_timeout(dial)
                .timeout(request);
            match ep.connect().await {
                Ok(channel) => return Ok(channel),
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        Err(failed(format!(
            "discovery: no discovery endpoint answers ({last})"
        )))
    }

    fn prefix_end(prefix: &[u8]) -> Vec<u8> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return end;
            }
        }
        vec![0]
    }

    pub(super) async fn resolve(cfg: &mut Config) -> Result<(), ServerError> {
        let token = cfg.discovery_token.trim().to_string();
        if token.is_empty() {
            return Err(failed("--discovery-endpoints needs --discovery-token"));
        }
        let channel = connect(cfg).await?;
        let mut kv = KvClient::new(channel.clone());
        let rpc = |e: tonic::Status| failed(format!("discovery: {}", e.message()));
        let root = format!("/_etcd/registry/{token}");
        let size_key = format!("{root}/_config/size");
        let size = kv
            .range(RangeRequest {
                key: size_key.clone().into(),
                ..Default::default()
            })
            .await
            .map_err(rpc)?
            .into_inner();
        let size: usize = match size.kvs.first() {
            None => return Err(failed("discovery: size key not found")),
            Some(kv) => std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| failed("discovery: size key is bad"))?,
        };
        let peer_urls = cfg.advertise_peer_urls();
        let id = crate::ids::member_id(&peer_urls, &token);
        let members = format!("{root}/members/");
        let self_key = format!("{members}{id:x}");
        let value = peer_urls
            .iter()
            .map(|u| format!("{}={u}", cfg.name))
            .collect::<Vec<_>>()
            .join(",");
        let list = |mut kv: KvClient<Channel>| {
            let members = members.clone();
            async move {
                let resp = kv
                    .range(RangeRequest {
                        key: members.clone().into(),
                        range_end: prefix_end(members.as_bytes()).into(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| failed(format!("discovery: {}", e.message())))?
                    .into_inner();
                let mut found: Vec<(i64, String, String)> = resp
                    .kvs
                    .iter()
                    .map(|kv| {
                        (
                            kv.create_revision,
                            String::from_utf8_lossy(&kv.key).into_owned(),
                            String::from_utf8_lossy(&kv.value).into_owned(),
                        )
                    })
                    .collect();
                found.sort();
                let revision = resp.header.map_or(0, |h| h.revision);
                Ok::<_, ServerError>((found, revision))
            }
        };
        let full = |found: &[(i64, String, String)]| {
            let position = found.iter().position(|(_, k, _)| *k == self_key);
            found.len() >= size && position.is_none_or(|p| p >= size)
        };
        let (found, _) = list(kv.clone()).await?;
        if full(&found) {
            return Err(failed("discovery: cluster is full"));
        }
        kv.put(PutRequest {
            key: self_key.clone().into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .map_err(rpc)?;
        tracing::info!(%token, id = %format!("{id:x}"), size, "registered with the v3 discovery service");
        loop {
            let (found, revision) = list(kv.clone()).await?;
            if full(&found) {
                return Err(failed("discovery: cluster is full"));
            }
            if found.len() >= size {
                let initial = found[..size]
                    .iter()
                    .map(|(_, _, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                tracing::info!(initial_cluster = %initial, "discovery complete");
                cfg.initial_cluster = Some(initial);
                cfg.initial_cluster_token = token;
                cfg.initial_cluster_state = "new".into();
                return Ok(());
            }
            tracing::info!(
                registered = found.len(),
                size,
                "waiting for the other members"
            );
            // The next registration: a watch from the revision after the listing.
            let create = WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: members.clone().into(),
                        range_end: prefix_end(members.as_bytes()).into(),
                        start_revision: revision + 1,
                        ..Default::default()
                    },
                )),
            };
            let requests = futures::stream::iter([create]).chain(futures::stream::pending());
            let mut events = WatchClient::new(channel.clone())
                .watch(requests)
                .await
                .map_err(rpc)?
                .into_inner();
            loop {
                match tokio::time::timeout(Duration::from_secs(60), events.message()).await {
                    Ok(Ok(Some(resp))) if !resp.events.is_empty() => break,
                    Ok(Ok(Some(_))) => continue,
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(e)) => return Err(rpc(e)),
                }
            }
        }
    }
}
