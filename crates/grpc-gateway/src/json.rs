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
    auth: Service<dyn crate::api::AuthApi>,
    recipes: Recipes,
    watch: Arc<dyn crate::api::WatchApi>,
}

/// The router of `/v3/...` over `apis`, within `limits`.
pub fn router(apis: &ClientApis, limits: Limits) -> Router {
    let gateway = Arc::new(Gateway {
        kv: Service::new(apis.kv.clone(), limits),
        lease: Service::new(apis.lease.clone(), limits),
        cluster: Service::new(apis.cluster.clone(), limits),
        maintenance: Service::new(apis.maintenance.clone(), limits),
        auth: Service::new(apis.auth.clone(), limits),
        recipes: Recipes::new(apis.kv.clone(), apis.watch.clone()),
        watch: apis.watch.clone(),
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

/// The unary paths: each one's request and response message names and the gRPC method
/// it calls. One table makes both [`route`] and [`call`].
macro_rules! unary_routes {
    ($($path:pat => $service:ident . $method:ident ($trait:path, $input:literal, $output:literal)),* $(,)?) => {
        /// The request and response message names of a path.
        fn route(path: &str) -> Option<(&'static str, &'static str)> {
            match path {
                $($path => Some(($input, $output)),)*
                _ => None,
            }
        }

        /// Calls the gRPC method of `path` with the encoded request; the encoded response.
        async fn call(gw: &Gateway, path: &str, body: &[u8]) -> Result<Vec<u8>, Status> {
            match path {
                $($path => {
                    let req = prost::Message::decode(body)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                    let resp = <_ as $trait>::$method(&gw.$service, Request::new(req)).await?;
                    Ok(resp.into_inner().encode_to_vec())
                })*
                _ => Err(Status::unimplemented(format!("unknown path /v3/{path}"))),
            }
        }
    };
}

use pb::auth_server::Auth as AuthService;
use pb::cluster_server::Cluster;
use pb::kv_server::Kv;
use pb::lease_server::Lease;
use pb::maintenance_server::Maintenance;

unary_routes! {
    "kv/range" => kv.range(Kv, "etcdserverpb.RangeRequest", "etcdserverpb.RangeResponse"),
    "kv/put" => kv.put(Kv, "etcdserverpb.PutRequest", "etcdserverpb.PutResponse"),
    "kv/deleterange" => kv.delete_range(Kv, "etcdserverpb.DeleteRangeRequest", "etcdserverpb.DeleteRangeResponse"),
    "kv/txn" => kv.txn(Kv, "etcdserverpb.TxnRequest", "etcdserverpb.TxnResponse"),
    "kv/compaction" => kv.compact(Kv, "etcdserverpb.CompactionRequest", "etcdserverpb.CompactionResponse"),
    "lease/grant" => lease.lease_grant(Lease, "etcdserverpb.LeaseGrantRequest", "etcdserverpb.LeaseGrantResponse"),
    "lease/revoke" | "kv/lease/revoke" => lease.lease_revoke(Lease, "etcdserverpb.LeaseRevokeRequest", "etcdserverpb.LeaseRevokeResponse"),
    "lease/timetolive" | "kv/lease/timetolive" => lease.lease_time_to_live(Lease, "etcdserverpb.LeaseTimeToLiveRequest", "etcdserverpb.LeaseTimeToLiveResponse"),
    "lease/leases" | "kv/lease/leases" => lease.lease_leases(Lease, "etcdserverpb.LeaseLeasesRequest", "etcdserverpb.LeaseLeasesResponse"),
    "cluster/member/list" => cluster.member_list(Cluster, "etcdserverpb.MemberListRequest", "etcdserverpb.MemberListResponse"),
    "cluster/member/add" => cluster.member_add(Cluster, "etcdserverpb.MemberAddRequest", "etcdserverpb.MemberAddResponse"),
    "cluster/member/remove" => cluster.member_remove(Cluster, "etcdserverpb.MemberRemoveRequest", "etcdserverpb.MemberRemoveResponse"),
    "cluster/member/update" => cluster.member_update(Cluster, "etcdserverpb.MemberUpdateRequest", "etcdserverpb.MemberUpdateResponse"),
    "cluster/member/promote" => cluster.member_promote(Cluster, "etcdserverpb.MemberPromoteRequest", "etcdserverpb.MemberPromoteResponse"),
    "maintenance/status" => maintenance.status(Maintenance, "etcdserverpb.StatusRequest", "etcdserverpb.StatusResponse"),
    "maintenance/alarm" => maintenance.alarm(Maintenance, "etcdserverpb.AlarmRequest", "etcdserverpb.AlarmResponse"),
    "maintenance/defragment" => maintenance.defragment(Maintenance, "etcdserverpb.DefragmentRequest", "etcdserverpb.DefragmentResponse"),
    "maintenance/hash" => maintenance.hash(Maintenance, "etcdserverpb.HashRequest", "etcdserverpb.HashResponse"),
    "maintenance/hashkv" => maintenance.hash_kv(Maintenance, "etcdserverpb.HashKVRequest", "etcdserverpb.HashKVResponse"),
    "maintenance/transfer-leadership" => maintenance.move_leader(Maintenance, "etcdserverpb.MoveLeaderRequest", "etcdserverpb.MoveLeaderResponse"),
    "maintenance/downgrade" => maintenance.downgrade(Maintenance, "etcdserverpb.DowngradeRequest", "etcdserverpb.DowngradeResponse"),
    "auth/enable" => auth.auth_enable(AuthService, "etcdserverpb.AuthEnableRequest", "etcdserverpb.AuthEnableResponse"),
    "auth/disable" => auth.auth_disable(AuthService, "etcdserverpb.AuthDisableRequest", "etcdserverpb.AuthDisableResponse"),
    "auth/status" => auth.auth_status(AuthService, "etcdserverpb.AuthStatusRequest", "etcdserverpb.AuthStatusResponse"),
    "auth/authenticate" => auth.authenticate(AuthService, "etcdserverpb.AuthenticateRequest", "etcdserverpb.AuthenticateResponse"),
    "auth/user/add" => auth.user_add(AuthService, "etcdserverpb.AuthUserAddRequest", "etcdserverpb.AuthUserAddResponse"),
    "auth/user/get" => auth.user_get(AuthService, "etcdserverpb.AuthUserGetRequest", "etcdserverpb.AuthUserGetResponse"),
    "auth/user/list" => auth.user_list(AuthService, "etcdserverpb.AuthUserListRequest", "etcdserverpb.AuthUserListResponse"),
    "auth/user/delete" => auth.user_delete(AuthService, "etcdserverpb.AuthUserDeleteRequest", "etcdserverpb.AuthUserDeleteResponse"),
    "auth/user/changepw" => auth.user_change_password(AuthService, "etcdserverpb.AuthUserChangePasswordRequest", "etcdserverpb.AuthUserChangePasswordResponse"),
    "auth/user/grant" => auth.user_grant_role(AuthService, "etcdserverpb.AuthUserGrantRoleRequest", "etcdserverpb.AuthUserGrantRoleResponse"),
    "auth/user/revoke" => auth.user_revoke_role(AuthService, "etcdserverpb.AuthUserRevokeRoleRequest", "etcdserverpb.AuthUserRevokeRoleResponse"),
    "auth/role/add" => auth.role_add(AuthService, "etcdserverpb.AuthRoleAddRequest", "etcdserverpb.AuthRoleAddResponse"),
    "auth/role/get" => auth.role_get(AuthService, "etcdserverpb.AuthRoleGetRequest", "etcdserverpb.AuthRoleGetResponse"),
    "auth/role/list" => auth.role_list(AuthService, "etcdserverpb.AuthRoleListRequest", "etcdserverpb.AuthRoleListResponse"),
    "auth/role/delete" => auth.role_delete(AuthService, "etcdserverpb.AuthRoleDeleteRequest", "etcdserverpb.AuthRoleDeleteResponse"),
    "auth/role/grant" => auth.role_grant_permission(AuthService, "etcdserverpb.AuthRoleGrantPermissionRequest", "etcdserverpb.AuthRoleGrantPermissionResponse"),
    "auth/role/revoke" => auth.role_revoke_permission(AuthService, "etcdserverpb.AuthRoleRevokePermissionRequest", "etcdserverpb.AuthRoleRevokePermissionResponse"),
    "lock/lock" => recipes.lock(Lock, "v3lockpb.LockRequest", "v3lockpb.LockResponse"),
    "lock/unlock" => recipes.unlock(Lock, "v3lockpb.UnlockRequest", "v3lockpb.UnlockResponse"),
    "election/campaign" => recipes.campaign(Election, "v3electionpb.CampaignRequest", "v3electionpb.CampaignResponse"),
    "election/proclaim" => recipes.proclaim(Election, "v3electionpb.ProclaimRequest", "v3electionpb.ProclaimResponse"),
    "election/leader" => recipes.leader(Election, "v3electionpb.LeaderRequest", "v3electionpb.LeaderResponse"),
    "election/resign" => recipes.resign(Election, "v3electionpb.ResignRequest", "v3electionpb.ResignResponse"),
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
    let request = decode(input, body)?;
    let answer = call(gw, method, &request).await?;
    to_json(&answer, output)
}

/// A JSON request body of message type `input` decoded as the gateway decodes it, to
/// the message's protobuf encoding. An empty body is an empty request, as in etcd's
/// gateway; anything that is not one JSON object of that message is InvalidArgument.
fn decode(input: &str, body: &[u8]) -> Result<Vec<u8>, Status> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let request = DynamicMessage::deserialize(descriptor(input)?, &mut de)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(request.encode_to_vec())
}

/// What the gateway makes of a POST to `/v3/<path>` with `body`, short of calling the
/// server: the request's protobuf encoding, and that request written back as JSON
/// (the fuzz target `json_request` drives this). `None` for a path it does not serve.
pub fn decode_request(path: &str, body: &[u8]) -> Option<Result<(Vec<u8>, String), Status>> {
    let (input, _) = route(path)?;
    Some(decode(input, body).and_then(|encoded| {
        let json = to_json(&encoded, input)?;
        Ok((encoded, json))
    }))
}

/// The descriptor of message `name`.
fn descriptor(name: &str) -> Result<prost_reflect::MessageDescriptor, Status> {
    pool()?
        .get_message_by_name(name)
        .ok_or_else(|| Status::internal(format!("no descriptor for {name}")))
}

/// An encoded message of type `name` as etcd's gateway writes it: proto field names,
/// default values left out.
fn to_json(encoded: &[u8], name: &str) -> Result<String, Status> {
    let message = DynamicMessage::decode(descriptor(name)?, encoded)
        .map_err(|e| Status::internal(format!("decoding the answer: {e}")))?;
    let mut out = serde_json::Serializer::new(Vec::new());
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    message
        .serialize_with_options(&mut out, &options)
        .map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
    String::from_utf8(out.into_inner()).map_err(|e| Status::internal(e.to_string()))
}

/// The JSON requests of a streaming call's body (one or more objects), decoded.
fn stream_requests<T: prost::Message + Default>(
    body: &[u8],
    input: &str,
) -> Result<Vec<T>, Status> {
    let descriptor = descriptor(input)?;
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
    match to_json(&message.encode_to_vec(), output) {
        Ok(json) => format!("{{\"result\":{json}}}\n"),
        Err(status) => error_line(&status),
    }
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
    let leases = gw.lease.api.clone();
    let credentials = crate::credentials::current();
    let answers = futures::stream::iter(requests)
        .then(move |req| {
            let leases = leases.clone();
            crate::credentials::scope(credentials.clone(), async move {
                leases.lease_keep_alive(req).await
            })
        })
        .take_while(|answer| futures::future::ready(answer.is_ok()))
        .map(|answer| match answer {
            Ok(resp) => result_line(&resp, "etcdserverpb.LeaseKeepAliveResponse"),
            Err(_) => String::new(),
        });
    stream_response(answers)
}

async fn snapshot_stream(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.maintenance.api.snapshot().await {
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
    fn decoded_requests_round_trip_and_bad_ones_are_invalid_arguments() {
        let (encoded, json) = decode_request("kv/range", br#"{"key":"Zm9v","limit":"10"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(json, r#"{"key":"Zm9v","limit":"10"}"#);
        assert_eq!(
            decode_request("kv/range", json.as_bytes())
                .unwrap()
                .unwrap()
                .0,
            encoded
        );
        // An empty body is an empty request.
        assert_eq!(decode_request("kv/put", b" \n").unwrap().unwrap().1, "{}");
        for bad in [
            &br#"{"key":"!!!"}"#[..],
            br#"{"key":"Zm9v"} {"key":"Zm9v"}"#,
            br#"{"limit":"-99999999999999999999"}"#,
            br#"["key"]"#,
            b"\xff\xfe",
        ] {
            let status = decode_request("kv/range", bad).unwrap().unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        }
        assert!(decode_request("kv/nosuch", b"{}").is_none());
    }

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
            "auth/enable",
            "auth/disable",
            "auth/status",
            "auth/authenticate",
            "auth/user/add",
            "auth/user/get",
            "auth/user/list",
            "auth/user/delete",
            "auth/user/changepw",
            "auth/user/grant",
            "auth/user/revoke",
            "auth/role/add",
            "auth/role/get",
            "auth/role/list",
            "auth/role/delete",
            "auth/role/grant",
            "auth/role/revoke",
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
