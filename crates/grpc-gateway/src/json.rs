//! etcd's v3 JSON gateway: `POST /v3/<service>/<method>` with the request as protobuf JSON
//! (base64 bytes, 64-bit integers as strings, proto or camelCase field names), answered
//! as etcd's gateway answers — the proto field names, default values left out — or with
//! `{"error", "message", "code"}` and the HTTP status of the gRPC code.
//!
//! Each path calls the same gRPC service implementation a gRPC client reaches (limits,
//! metrics and errors included); the JSON mapping is `prost-reflect`'s, driven by the
//! descriptors of cairn's `.proto` files.
//!
//! The streaming methods answer a stream of `{"result": ...}` lines, as etcd's gateway
//! does: `/v3/watch` and `/v3/lease/keepalive` take one or more JSON requests in the body
//! (the watch stays open until the client goes away), `/v3/maintenance/snapshot` and
//! `/v3/election/observe` one.

use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3lockpb::lock_server::Lock;
use futures::StreamExt as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use tonic::{Code, Request, Status};

use crate::grpc::{Limits, Service};
use crate::recipes::Recipes;
use crate::serve::ClientApis;

/// What the JSON routes call.
struct Gateway {
    kv: Service<dyn crate::api::KvApi>,
    lease: Service<dyn crate::api::LeaseApi>,
    cluster: Service<dyn crate::api::ClusterApi>,
    maintenance: Service<dyn crate::api::MaintenanceApi>,
    recipes: Recipes,
    watch: Arc<dyn crate::api::WatchApi>,
    leases: Arc<dyn crate::api::LeaseApi>,
    snapshots: Arc<dyn crate::api::MaintenanceApi>,
}

/// The router of `/v3/...` over `apis`, within `limits`.
pub fn router(apis: &ClientApis, limits: Limits) -> Router {
    let gateway = Arc::new(Gateway {
        kv: Service::new(apis.kv.clone(), limits),
        lease: Service::new(apis.lease.clone(), limits),
        cluster: Service::new(apis.cluster.clone(), limits),
        maintenance: Service::new(apis.maintenance.clone(), limits),
        recipes: Recipes::new(apis.kv.clone(), apis.watch.clone()),
        watch: apis.watch.clone(),
        leases: apis.lease.clone(),
        snapshots: apis.maintenance.clone(),
    });
    Router::new()
        .route("/v3/watch", post(watch_stream))
        .route("/v3/lease/keepalive", post(keep_alive_stream))
        .route("/v3/maintenance/snapshot", post(snapshot_stream))
        .route("/v3/election/observe", post(observe_stream))
        .route("/v3/{*method}", post(handle))
        .with_state(gateway)
}

fn pool() -> Result<&'static DescriptorPool, Status> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(cairn_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Status::internal(format!("descriptors: {e}")))
}

/// The request and response message names of a path, and how to call it.
fn route(path: &str) -> Option<(&'static str, &'static str)> {
    Some(match path {
        "kv/range" => ("etcdserverpb.RangeRequest", "etcdserverpb.RangeResponse"),
        "kv/put" => ("etcdserverpb.PutRequest", "etcdserverpb.PutResponse"),
        "kv/deleterange" => (
            "etcdserverpb.DeleteRangeRequest",
            "etcdserverpb.DeleteRangeResponse",
        ),
        "kv/txn" => ("etcdserverpb.TxnRequest", "etcdserverpb.TxnResponse"),
        "kv/compaction" => (
            "etcdserverpb.CompactionRequest",
            "etcdserverpb.CompactionResponse",
        ),
        "lease/grant" => (
            "etcdserverpb.LeaseGrantRequest",
            "etcdserverpb.LeaseGrantResponse",
        ),
        "lease/revoke" | "kv/lease/revoke" => (
            "etcdserverpb.LeaseRevokeRequest",
            "etcdserverpb.LeaseRevokeResponse",
        ),
        "lease/timetolive" | "kv/lease/timetolive" => (
            "etcdserverpb.LeaseTimeToLiveRequest",
            "etcdserverpb.LeaseTimeToLiveResponse",
        ),
        "lease/leases" | "kv/lease/leases" => (
            "etcdserverpb.LeaseLeasesRequest",
            "etcdserverpb.LeaseLeasesResponse",
        ),
        "cluster/member/list" => (
            "etcdserverpb.MemberListRequest",
            "etcdserverpb.MemberListResponse",
        ),
        "cluster/member/add" => (
            "etcdserverpb.MemberAddRequest",
            "etcdserverpb.MemberAddResponse",
        ),
        "cluster/member/remove" => (
            "etcdserverpb.MemberRemoveRequest",
            "etcdserverpb.MemberRemoveResponse",
        ),
        "cluster/member/update" => (
            "etcdserverpb.MemberUpdateRequest",
            "etcdserverpb.MemberUpdateResponse",
        ),
        "cluster/member/promote" => (
            "etcdserverpb.MemberPromoteRequest",
            "etcdserverpb.MemberPromoteResponse",
        ),
        "maintenance/status" => ("etcdserverpb.StatusRequest", "etcdserverpb.StatusResponse"),
        "maintenance/alarm" => ("etcdserverpb.AlarmRequest", "etcdserverpb.AlarmResponse"),
        "maintenance/defragment" => (
            "etcdserverpb.DefragmentRequest",
            "etcdserverpb.DefragmentResponse",
        ),
        "maintenance/hash" => ("etcdserverpb.HashRequest", "etcdserverpb.HashResponse"),
        "maintenance/hashkv" => ("etcdserverpb.HashKVRequest", "etcdserverpb.HashKVResponse"),
        "maintenance/transfer-leadership" => (
            "etcdserverpb.MoveLeaderRequest",
            "etcdserverpb.MoveLeaderResponse",
        ),
        "maintenance/downgrade" => (
            "etcdserverpb.DowngradeRequest",
            "etcdserverpb.DowngradeResponse",
        ),
        "lock/lock" => ("v3lockpb.LockRequest", "v3lockpb.LockResponse"),
        "lock/unlock" => ("v3lockpb.UnlockRequest", "v3lockpb.UnlockResponse"),
        "election/campaign" => (
            "v3electionpb.CampaignRequest",
            "v3electionpb.CampaignResponse",
        ),
        "election/proclaim" => (
            "v3electionpb.ProclaimRequest",
            "v3electionpb.ProclaimResponse",
        ),
        "election/leader" => ("v3electionpb.LeaderRequest", "v3electionpb.LeaderResponse"),
        "election/resign" => ("v3electionpb.ResignRequest", "v3electionpb.ResignResponse"),
        _ => return None,
    })
}

/// Calls the gRPC method of `path` with the encoded request; the encoded response.
async fn call(gw: &Gateway, path: &str, body: &[u8]) -> Result<Vec<u8>, Status> {
    macro_rules! unary {
        ($service:expr, $trait:path, $method:ident) => {{
            let req = prost::Message::decode(body)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let resp = <_ as $trait>::$method($service, Request::new(req)).await?;
            Ok(resp.into_inner().encode_to_vec())
        }};
    }
    use pb::cluster_server::Cluster;
    use pb::kv_server::Kv;
    use pb::lease_server::Lease;
    use pb::maintenance_server::Maintenance;
    match path {
        "kv/range" => unary!(&gw.kv, Kv, range),
        "kv/put" => unary!(&gw.kv, Kv, put),
        "kv/deleterange" => unary!(&gw.kv, Kv, delete_range),
        "kv/txn" => unary!(&gw.kv, Kv, txn),
        "kv/compaction" => unary!(&gw.kv, Kv, compact),
        "lease/grant" => unary!(&gw.lease, Lease, lease_grant),
        "lease/revoke" | "kv/lease/revoke" => unary!(&gw.lease, Lease, lease_revoke),
        "lease/timetolive" | "kv/lease/timetolive" => {
            unary!(&gw.lease, Lease, lease_time_to_live)
        }
        "lease/leases" | "kv/lease/leases" => unary!(&gw.lease, Lease, lease_leases),
        "cluster/member/list" => unary!(&gw.cluster, Cluster, member_list),
        "cluster/member/add" => unary!(&gw.cluster, Cluster, member_add),
        "cluster/member/remove" => unary!(&gw.cluster, Cluster, member_remove),
        "cluster/member/update" => unary!(&gw.cluster, Cluster, member_update),
        "cluster/member/promote" => unary!(&gw.cluster, Cluster, member_promote),
        "maintenance/status" => unary!(&gw.maintenance, Maintenance, status),
        "maintenance/alarm" => unary!(&gw.maintenance, Maintenance, alarm),
        "maintenance/defragment" => unary!(&gw.maintenance, Maintenance, defragment),
        "maintenance/hash" => unary!(&gw.maintenance, Maintenance, hash),
        "maintenance/hashkv" => unary!(&gw.maintenance, Maintenance, hash_kv),
        "maintenance/transfer-leadership" => unary!(&gw.maintenance, Maintenance, move_leader),
        "maintenance/downgrade" => unary!(&gw.maintenance, Maintenance, downgrade),
        "lock/lock" => unary!(&gw.recipes, Lock, lock),
        "lock/unlock" => unary!(&gw.recipes, Lock, unlock),
        "election/campaign" => unary!(&gw.recipes, Election, campaign),
        "election/proclaim" => unary!(&gw.recipes, Election, proclaim),
        "election/leader" => unary!(&gw.recipes, Election, leader),
        "election/resign" => unary!(&gw.recipes, Election, resign),
        _ => Err(Status::unimplemented(format!("unknown path /v3/{path}"))),
    }
}

/// The HTTP status grpc-gateway gives a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(status: &Status) -> Response {
    let body = serde_json::json!({
        "error": status.message(),
        "message": status.message(),
        "code": status.code() as i32,
    });
    json_response(http_status(status.code()), body.to_string())
}

async fn handle(
    State(gw): State<Arc<Gateway>>,
    Path(method): Path<String>,
    body: Bytes,
) -> Response {
    let Some((input, output)) = route(&method) else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    match translate(&gw, &method, input, output, &body).await {
        Ok(json) => json_response(StatusCode::OK, json),
        Err(status) => error_response(&status),
    }
}

async fn translate(
    gw: &Gateway,
    method: &str,
    input: &str,
    output: &str,
    body: &[u8],
) -> Result<String, Status> {
    let pool = pool()?;
    let descriptor = |name: &str| {
        pool.get_message_by_name(name)
            .ok_or_else(|| Status::internal(format!("no descriptor for {name}")))
    };
    // An empty body is an empty request, as in etcd's gateway.
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let request = DynamicMessage::deserialize(descriptor(input)?, &mut de)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let answer = call(gw, method, &request.encode_to_vec()).await?;
    let response = DynamicMessage::decode(descriptor(output)?, answer.as_slice())
        .map_err(|e| Status::internal(format!("decoding the answer: {e}")))?;
    let mut out = serde_json::Serializer::new(Vec::new());
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    response
        .serialize_with_options(&mut out, &options)
        .map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
    String::from_utf8(out.into_inner()).map_err(|e| Status::internal(e.to_string()))
}

/// The JSON requests of a streaming call's body (one or more objects), decoded.
fn stream_requests<T: prost::Message + Default>(
    body: &[u8],
    input: &str,
) -> Result<Vec<T>, Status> {
    let pool = pool()?;
    let descriptor = pool
        .get_message_by_name(input)
        .ok_or_else(|| Status::internal(format!("no descriptor for {input}")))?;
    let mut out = Vec::new();
    for value in serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>() {
        let value = value.map_err(|e| Status::invalid_argument(e.to_string()))?;
        let message = DynamicMessage::deserialize(descriptor.clone(), value)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        out.push(
            T::decode(message.encode_to_vec().as_slice())
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
        );
    }
    Ok(out)
}

/// One line of a streaming answer: `{"result": <message as JSON>}`.
fn result_line<T: prost::Message>(message: &T, output: &str) -> String {
    let encoded = message.encode_to_vec();
    let json = pool()
        .ok()
        .and_then(|pool| pool.get_message_by_name(output))
        .and_then(|desc| DynamicMessage::decode(desc, encoded.as_slice()).ok())
        .and_then(|m| {
            let mut out = serde_json::Serializer::new(Vec::new());
            let options = SerializeOptions::new()
                .use_proto_field_name(true)
                .skip_default_fields(true);
            m.serialize_with_options(&mut out, &options).ok()?;
            String::from_utf8(out.into_inner()).ok()
        })
        .unwrap_or_else(|| "{}".to_string());
    format!("{{\"result\":{json}}}\n")
}

fn stream_response(lines: impl futures::Stream<Item = String> + Send + 'static) -> Response {
    let body = Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn watch_stream(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let requests: Vec<pb::WatchRequest> = match stream_requests(&body, "etcdserverpb.WatchRequest")
    {
        Ok(requests) => requests,
        Err(status) => return error_response(&status),
    };
    let (mut session, responses) = gw.watch.open_stream();
    for request in requests {
        session.handle(request).await;
    }
    // The session lives as long as the answer: dropping it ends the watchers.
    stream_response(responses.map(move |resp| {
        let _keep = &session;
        result_line(&resp, "etcdserverpb.WatchResponse")
    }))
}

async fn keep_alive_stream(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let requests: Vec<pb::LeaseKeepAliveRequest> =
        match stream_requests(&body, "etcdserverpb.LeaseKeepAliveRequest") {
            Ok(requests) => requests,
            Err(status) => return error_response(&status),
        };
    let leases = gw.leases.clone();
    let answers = futures::stream::iter(requests)
        .then(move |req| {
            let leases = leases.clone();
            async move { leases.lease_keep_alive(req).await }
        })
        .take_while(|answer| futures::future::ready(answer.is_ok()))
        .map(|answer| match answer {
            Ok(resp) => result_line(&resp, "etcdserverpb.LeaseKeepAliveResponse"),
            Err(_) => String::new(),
        });
    stream_response(answers)
}

async fn snapshot_stream(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.snapshots.snapshot().await {
        Ok(chunks) => stream_response(chunks.map(|chunk| match chunk {
            Ok(chunk) => result_line(&chunk, "etcdserverpb.SnapshotResponse"),
            Err(e) => error_line(&Status::from(e)),
        })),
        Err(e) => error_response(&Status::from(e)),
    }
}

async fn observe_stream(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let request = match stream_requests::<cairn_proto::v3electionpb::LeaderRequest>(
        &body,
        "v3electionpb.LeaderRequest",
    ) {
        Ok(requests) => requests.into_iter().next().unwrap_or_default(),
        Err(status) => return error_response(&status),
    };
    match Election::observe(&gw.recipes, Request::new(request)).await {
        Ok(leaders) => stream_response(leaders.into_inner().map(|leader| match leader {
            Ok(leader) => result_line(&leader, "v3electionpb.LeaderResponse"),
            Err(status) => error_line(&status),
        })),
        Err(status) => error_response(&status),
    }
}

/// A stream's failure as grpc-gateway writes it: `{"error": {...}}`.
fn error_line(status: &Status) -> String {
    let error = serde_json::json!({
        "error": {
            "grpc_code": status.code() as i32,
            "http_code": http_status(status.code()).as_u16(),
            "message": status.message(),
            "http_status": http_status(status.code())
                .canonical_reason()
                .unwrap_or_default(),
        }
    });
    format!("{error}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_descriptors() {
        let pool = pool().unwrap();
        for path in [
            "kv/range",
            "kv/put",
            "kv/deleterange",
            "kv/txn",
            "kv/compaction",
            "lease/grant",
            "lease/revoke",
            "lease/timetolive",
            "lease/leases",
            "cluster/member/list",
            "cluster/member/add",
            "cluster/member/remove",
            "cluster/member/update",
            "cluster/member/promote",
            "maintenance/status",
            "maintenance/alarm",
            "maintenance/defragment",
            "maintenance/hash",
            "maintenance/hashkv",
            "maintenance/transfer-leadership",
            "maintenance/downgrade",
            "lock/lock",
            "lock/unlock",
            "election/campaign",
            "election/proclaim",
            "election/leader",
            "election/resign",
        ] {
            let (input, output) = route(path).unwrap();
            assert!(pool.get_message_by_name(input).is_some(), "{input}");
            assert!(pool.get_message_by_name(output).is_some(), "{output}");
        }
        assert_eq!(route("kv/nothing"), None);
    }

    #[test]
    fn grpc_codes_map_to_grpc_gateways_http_statuses() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
    }
}
