//! Every client surface of the gateway, served from an in-memory fake of the [`api`]
//! traits on a real local port and called with the generated gRPC clients and plain
//! HTTP/1.1: the exact responses, status codes and messages a client sees.

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_grpc_gateway::api::*;
use cairn_grpc_gateway::grpc::Limits;
use cairn_grpc_gateway::serve::{self, ClientApis};
use cairn_grpc_gateway::{http, EtcdError};
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::*;
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use futures::StreamExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

/// `--max-request-bytes` of the served fake.
const MAX_REQUEST_BYTES: usize = 1024;

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision,
        raft_term: 3,
    })
}

fn kv(key: &Bytes, value: &str) -> KeyValue {
    KeyValue {
        key: key.clone(),
        create_revision: 2,
        mod_revision: 7,
        version: 3,
        value: Bytes::from(value.to_owned()),
        lease: 0,
    }
}

fn member(id: u64) -> Member {
    Member {
        id,
        name: format!("m{id}"),
        peer_ur_ls: vec![format!("http://10.0.0.{id}:2380")],
        client_ur_ls: vec![format!("http://10.0.0.{id}:2379")],
        is_learner: false,
    }
}

/// A server that answers from its arguments: keys and ids named below fail with etcd's
/// errors, everything else succeeds with a fixed response.
struct Fake {
    healthy: AtomicBool,
    alarms: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl KvApi for Fake {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        if req.key == "compacted" {
            return Err(EtcdError::Compacted);
        }
        Ok(RangeResponse {
            header: header(7),
            kvs: vec![kv(&req.key, "v")],
            more: false,
            count: 1,
        })
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse, EtcdError> {
        if req.ignore_value && !req.value.is_empty() {
            return Err(EtcdError::ValueProvided);
        }
        Ok(PutResponse {
            header: header(8),
            prev_kv: req.prev_kv.then(|| kv(&req.key, "old")),
        })
    }

    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        Ok(DeleteRangeResponse {
            header: header(9),
            deleted: 1,
            prev_kvs: vec![kv(&req.key, "gone")],
        })
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        if req.success.len() > 2 {
            return Err(EtcdError::TooManyOps);
        }
        Ok(TxnResponse {
            header: header(10),
            succeeded: true,
            responses: Vec::new(),
        })
    }

    async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        if req.revision > 100 {
            return Err(EtcdError::FutureRevision);
        }
        Ok(CompactionResponse { header: header(11) })
    }
}

#[async_trait]
impl LeaseApi for Fake {
    async fn lease_grant(&self, req: LeaseGrantRequest) -> Result<LeaseGrantResponse, EtcdError> {
        if req.ttl > 9_000_000_000 {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        Ok(LeaseGrantResponse {
            header: header(4),
            id: if req.id == 0 { 42 } else { req.id },
            ttl: req.ttl,
            error: String::new(),
        })
    }

    async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, EtcdError> {
        if req.id == 404 {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(LeaseRevokeResponse { header: header(5) })
    }

    async fn lease_keep_alive(
        &self,
        req: LeaseKeepAliveRequest,
    ) -> Result<LeaseKeepAliveResponse, EtcdError> {
        if req.id == 503 {
            return Err(EtcdError::NotLeader);
        }
        Ok(LeaseKeepAliveResponse {
            header: header(5),
            id: req.id,
            ttl: if req.id == 404 { 0 } else { 30 },
        })
    }

    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        Ok(LeaseTimeToLiveResponse {
            header: header(5),
            id: req.id,
            ttl: 20,
            granted_ttl: 30,
            keys: if req.keys {
                vec![Bytes::from_static(b"k")]
            } else {
                Vec::new()
            },
        })
    }

    async fn lease_leases(
        &self,
        _req: LeaseLeasesRequest,
    ) -> Result<LeaseLeasesResponse, EtcdError> {
        Ok(LeaseLeasesResponse {
            header: header(5),
            leases: vec![LeaseStatus { id: 1 }, LeaseStatus { id: 2 }],
        })
    }
}

#[async_trait]
impl ClusterApi for Fake {
    async fn member_list(&self, _req: MemberListRequest) -> Result<MemberListResponse, EtcdError> {
        Ok(MemberListResponse {
            header: header(1),
            members: vec![member(1), member(2)],
        })
    }

    async fn member_add(&self, req: MemberAddRequest) -> Result<MemberAddResponse, EtcdError> {
        if req.peer_ur_ls.is_empty() {
            return Err(EtcdError::MemberBadUrls);
        }
        let added = Member {
            id: 3,
            name: String::new(),
            peer_ur_ls: req.peer_ur_ls,
            client_ur_ls: Vec::new(),
            is_learner: req.is_learner,
        };
        Ok(MemberAddResponse {
            header: header(1),
            member: Some(added.clone()),
            members: vec![member(1), added],
        })
    }

    async fn member_remove(
        &self,
        req: MemberRemoveRequest,
    ) -> Result<MemberRemoveResponse, EtcdError> {
        if req.id == 404 {
            return Err(EtcdError::MemberNotFound);
        }
        Ok(MemberRemoveResponse {
            header: header(1),
            members: vec![member(1)],
        })
    }

    async fn member_update(
        &self,
        req: MemberUpdateRequest,
    ) -> Result<MemberUpdateResponse, EtcdError> {
        Ok(MemberUpdateResponse {
            header: header(1),
            members: vec![Member {
                peer_ur_ls: req.peer_ur_ls,
                ..member(req.id)
            }],
        })
    }

    async fn member_promote(
        &self,
        _req: MemberPromoteRequest,
    ) -> Result<MemberPromoteResponse, EtcdError> {
        Err(EtcdError::LearnerNotReady)
    }
}

#[async_trait]
impl MaintenanceApi for Fake {
    async fn status(&self, _req: StatusRequest) -> Result<StatusResponse, EtcdError> {
        Ok(StatusResponse {
            header: header(6),
            version: "3.5.0".into(),
            db_size: 4096,
            leader: 2,
            raft_index: 10,
            raft_term: 3,
            ..Default::default()
        })
    }

    async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, EtcdError> {
        Ok(AlarmResponse {
            header: header(6),
            alarms: vec![AlarmMember {
                member_id: req.member_id,
                alarm: req.alarm,
            }],
        })
    }

    async fn defragment(&self, _req: DefragmentRequest) -> Result<DefragmentResponse, EtcdError> {
        Ok(DefragmentResponse { header: header(6) })
    }

    async fn hash(&self, _req: HashRequest) -> Result<HashResponse, EtcdError> {
        Ok(HashResponse {
            header: header(6),
            hash: 99,
        })
    }

    async fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, EtcdError> {
        Ok(HashKvResponse {
            header: header(req.revision),
            hash: 98,
            compact_revision: 3,
            hash_revision: 5,
        })
    }

    async fn move_leader(&self, req: MoveLeaderRequest) -> Result<MoveLeaderResponse, EtcdError> {
        if req.target_id == 404 {
            return Err(EtcdError::BadLeaderTransferee);
        }
        Ok(MoveLeaderResponse { header: header(6) })
    }

    async fn snapshot(&self) -> Result<SnapshotChunks, EtcdError> {
        let chunks = [("abc", 3), ("def", 0)].map(|(blob, remaining)| {
            Ok(SnapshotResponse {
                header: header(6),
                remaining_bytes: remaining,
                blob: Bytes::from_static(blob.as_bytes()),
                version: "3.7.0".into(),
            })
        });
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

/// A watch session that answers a create request with `created`, then one event on the
/// watched key; a cancel request with `canceled`.
struct FakeSession(tokio::sync::mpsc::Sender<WatchResponse>);

#[async_trait]
impl WatchSession for FakeSession {
    async fn handle(&mut self, request: WatchRequest) {
        use watch_request::RequestUnion;
        let responses = match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => vec![
                WatchResponse {
                    header: header(7),
                    watch_id: 0,
                    created: true,
                    ..Default::default()
                },
                WatchResponse {
                    header: header(8),
                    watch_id: 0,
                    events: vec![Event {
                        r#type: EventType::Put as i32,
                        kv: Some(kv(&create.key, "new")),
                        prev_kv: None,
                    }],
                    ..Default::default()
                },
            ],
            Some(RequestUnion::CancelRequest(cancel)) => vec![WatchResponse {
                header: header(8),
                watch_id: cancel.watch_id,
                canceled: true,
                ..Default::default()
            }],
            _ => Vec::new(),
        };
        for response in responses {
            let _ = self.0.send(response).await;
        }
    }
}

impl WatchApi for Fake {
    fn open_stream(&self) -> (Box<dyn WatchSession>, WatchResponses) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (Box::new(FakeSession(tx)), Box::pin(ReceiverStream::new(rx)))
    }
}

#[async_trait]
impl HealthApi for Fake {
    fn alarms(&self) -> Vec<String> {
        self.alarms.lock().unwrap().clone()
    }

    fn has_leader(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn is_learner(&self) -> bool {
        false
    }

    async fn read(&self, serializable: bool) -> Result<(), String> {
        match serializable || self.healthy.load(Ordering::Relaxed) {
            true => Ok(()),
            false => Err("etcdserver: no leader".into()),
        }
    }
}

/// One recorder for the whole test binary (the `metrics` facade allows one).
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("install the recorder");
            cairn_grpc_gateway::metrics::describe();
            handle
        })
        .clone()
}

/// Auth: AuthStatus tells whether the call carried a token (the credentials reach the
/// server); everything else is refused.
#[async_trait]
impl AuthApi for Fake {
    async fn auth_status(
        &self,
        _req: pb::AuthStatusRequest,
    ) -> Result<pb::AuthStatusResponse, EtcdError> {
        let credentials = cairn_grpc_gateway::credentials::current();
        Ok(pb::AuthStatusResponse {
            enabled: credentials.token.as_deref() == Some("secret"),
            ..Default::default()
        })
    }
    async fn auth_enable(
        &self,
        _req: pb::AuthEnableRequest,
    ) -> Result<pb::AuthEnableResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn auth_disable(
        &self,
        _req: pb::AuthDisableRequest,
    ) -> Result<pb::AuthDisableResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn authenticate(
        &self,
        _req: pb::AuthenticateRequest,
    ) -> Result<pb::AuthenticateResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn user_add(
        &self,
        _req: pb::AuthUserAddRequest,
    ) -> Result<pb::AuthUserAddResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn user_get(
        &self,
        _req: pb::AuthUserGetRequest,
    ) -> Result<pb::AuthUserGetResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn user_list(
        &self,
        _req: pb::AuthUserListRequest,
    ) -> Result<pb::AuthUserListResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn user_delete(
        &self,
        _req: pb::AuthUserDeleteRequest,
    ) -> Result<pb::AuthUserDeleteResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn user_change_password(
        &self,
        _req: pb::AuthUserChangePasswordRequest,
    ) -> Result<pb::AuthUserChangePasswordResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn user_grant_role(
        &self,
        _req: pb::AuthUserGrantRoleRequest,
    ) -> Result<pb::AuthUserGrantRoleResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn user_revoke_role(
        &self,
        _req: pb::AuthUserRevokeRoleRequest,
    ) -> Result<pb::AuthUserRevokeRoleResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn role_add(
        &self,
        _req: pb::AuthRoleAddRequest,
    ) -> Result<pb::AuthRoleAddResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn role_get(
        &self,
        _req: pb::AuthRoleGetRequest,
    ) -> Result<pb::AuthRoleGetResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn role_list(
        &self,
        _req: pb::AuthRoleListRequest,
    ) -> Result<pb::AuthRoleListResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn role_delete(
        &self,
        _req: pb::AuthRoleDeleteRequest,
    ) -> Result<pb::AuthRoleDeleteResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn role_grant_permission(
        &self,
        _req: pb::AuthRoleGrantPermissionRequest,
    ) -> Result<pb::AuthRoleGrantPermissionResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
    async fn role_revoke_permission(
        &self,
        _req: pb::AuthRoleRevokePermissionRequest,
    ) -> Result<pb::AuthRoleRevokePermissionResponse, EtcdError> {
        Err(EtcdError::PermissionDenied)
    }
}

/// The fake served on a local port, as the server serves its member.
struct Served {
    addr: std::net::SocketAddr,
    fake: Arc<Fake>,
    channel: Channel,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve_fake() -> Served {
    let fake = Arc::new(Fake {
        healthy: AtomicBool::new(true),
        alarms: std::sync::Mutex::new(Vec::new()),
    });
    let apis = ClientApis {
        kv: fake.clone(),
        watch: fake.clone(),
        lease: fake.clone(),
        cluster: fake.clone(),
        maintenance: fake.clone(),
        auth: fake.clone(),
    };
    let versions = http::Versions {
        server: "3.5.0".into(),
        cluster: "3.5.0".into(),
    };
    let limits = Limits::for_max_request_bytes(MAX_REQUEST_BYTES);
    let http_router = http::router(fake.clone(), Some(recorder()), versions)
        .merge(cairn_grpc_gateway::json::router(&apis, limits));
    let routes = serve::client_routes(apis, limits);
    let router = serve::into_router(routes, http_router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(serve::serve(listener, router, async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Served {
        addr,
        fake,
        channel,
        _stop: stop,
    }
}

fn assert_status<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    message: &str,
) {
    let status = result.expect_err("an error status");
    assert_eq!((status.code(), status.message()), (code, message));
}

#[tokio::test]
async fn kv_answers_what_the_server_says() {
    let served = serve_fake().await;
    let mut kv_client = KvClient::new(served.channel.clone());
    let key = Bytes::from_static(b"k");
    let range = kv_client
        .range(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        range,
        RangeResponse {
            header: header(7),
            kvs: vec![kv(&key, "v")],
            more: false,
            count: 1,
        }
    );
    let put = kv_client
        .put(PutRequest {
            key: key.clone(),
            value: Bytes::from_static(b"1"),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        put,
        PutResponse {
            header: header(8),
            prev_kv: Some(kv(&key, "old")),
        }
    );
    let deleted = kv_client
        .delete_range(DeleteRangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    let txn = kv_client
        .txn(TxnRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        txn,
        TxnResponse {
            header: header(10),
            succeeded: true,
            responses: Vec::new(),
        }
    );
    let compacted = kv_client
        .compact(CompactionRequest {
            revision: 5,
            physical: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(compacted.header, header(11));
}

#[tokio::test]
async fn kv_errors_carry_etcds_code_and_message() {
    let served = serve_fake().await;
    let mut kv_client = KvClient::new(served.channel.clone());
    assert_status(
        kv_client
            .range(RangeRequest {
                key: Bytes::from_static(b"compacted"),
                ..Default::default()
            })
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        kv_client
            .put(PutRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                ignore_value: true,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_status(
        kv_client
            .txn(TxnRequest {
                success: vec![RequestOp::default(); 3],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    assert_status(
        kv_client
            .compact(CompactionRequest {
                revision: 101,
                physical: false,
            })
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    // Over --max-request-bytes plus gRPC's allowance: grpc-go's wording, before the
    // server sees it.
    let max = MAX_REQUEST_BYTES + cairn_grpc_gateway::grpc::GRPC_OVERHEAD_BYTES;
    let value = vec![b'x'; max];
    let request = PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from(value),
        ..Default::default()
    };
    let got = prost::Message::encoded_len(&request);
    assert_status(
        kv_client.put(request).await,
        Code::ResourceExhausted,
        &format!("grpc: received message larger than max ({got} vs. {max})"),
    );
}

#[tokio::test]
async fn lease_unary_calls_and_the_keep_alive_stream() {
    let served = serve_fake().await;
    let mut lease = LeaseClient::new(served.channel.clone());
    let granted = lease
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        granted,
        LeaseGrantResponse {
            header: header(4),
            id: 42,
            ttl: 30,
            error: String::new(),
        }
    );
    assert_status(
        lease
            .lease_grant(LeaseGrantRequest {
                ttl: 9_000_000_001,
                id: 0,
            })
            .await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );
    assert_status(
        lease.lease_revoke(LeaseRevokeRequest { id: 404 }).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    let ttl = lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id: 9, keys: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ttl,
        LeaseTimeToLiveResponse {
            header: header(5),
            id: 9,
            ttl: 20,
            granted_ttl: 30,
            keys: vec![Bytes::from_static(b"k")],
        }
    );
    let leases = lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        leases.leases,
        vec![LeaseStatus { id: 1 }, LeaseStatus { id: 2 }]
    );

    // Answers come in request order; an error ends the stream with its status.
    let requests = [7, 404, 503, 8].map(|id| LeaseKeepAliveRequest { id });
    let mut answers = lease
        .lease_keep_alive(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert_eq!((first.id, first.ttl), (7, 30));
    let unknown = answers.message().await.unwrap().unwrap();
    assert_eq!((unknown.id, unknown.ttl), (404, 0));
    let status = answers.message().await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::FailedPrecondition, "etcdserver: not leader")
    );
}

#[tokio::test]
async fn cluster_calls_and_their_errors() {
    let served = serve_fake().await;
    let mut cluster = ClusterClient::new(served.channel.clone());
    let list = cluster
        .member_list(MemberListRequest { linearizable: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list,
        MemberListResponse {
            header: header(1),
            members: vec![member(1), member(2)],
        }
    );
    let added = cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: vec!["http://10.0.0.3:2380".into()],
            is_learner: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        added.member.map(|m| (m.id, m.is_learner, m.peer_ur_ls)),
        Some((3, true, vec!["http://10.0.0.3:2380".to_string()]))
    );
    assert_status(
        cluster.member_add(MemberAddRequest::default()).await,
        Code::InvalidArgument,
        "etcdserver: given member URLs are invalid",
    );
    assert_status(
        cluster.member_remove(MemberRemoveRequest { id: 404 }).await,
        Code::NotFound,
        "etcdserver: member not found",
    );
    let removed = cluster
        .member_remove(MemberRemoveRequest { id: 2 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.members, vec![member(1)]);
    let updated = cluster
        .member_update(MemberUpdateRequest {
            id: 2,
            peer_ur_ls: vec!["http://10.0.0.9:2380".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        updated.members[0].peer_ur_ls,
        vec!["http://10.0.0.9:2380".to_string()]
    );
    assert_status(
        cluster.member_promote(MemberPromoteRequest { id: 3 }).await,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member which is in sync with leader",
    );
}

#[tokio::test]
async fn maintenance_calls_snapshot_stream_and_unserved_methods() {
    let served = serve_fake().await;
    let mut maintenance = MaintenanceClient::new(served.channel.clone());
    let status = maintenance
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status,
        StatusResponse {
            header: header(6),
            version: "3.5.0".into(),
            db_size: 4096,
            leader: 2,
            raft_index: 10,
            raft_term: 3,
            ..Default::default()
        }
    );
    let alarms = maintenance
        .alarm(AlarmRequest {
            action: alarm_request::AlarmAction::Get as i32,
            member_id: 2,
            alarm: AlarmType::Nospace as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        alarms.alarms,
        vec![AlarmMember {
            member_id: 2,
            alarm: AlarmType::Nospace as i32,
        }]
    );
    let defragmented = maintenance
        .defragment(DefragmentRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(defragmented.header, header(6));
    let hash = maintenance.hash(HashRequest {}).await.unwrap().into_inner();
    assert_eq!(hash.hash, 99);
    let hash_kv = maintenance
        .hash_kv(HashKvRequest { revision: 5 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        hash_kv,
        HashKvResponse {
            header: header(5),
            hash: 98,
            compact_revision: 3,
            hash_revision: 5,
        }
    );
    assert_status(
        maintenance
            .move_leader(MoveLeaderRequest { target_id: 404 })
            .await,
        Code::FailedPrecondition,
        "etcdserver: bad leader transferee",
    );
    let chunks: Vec<(Bytes, u64)> = maintenance
        .snapshot(SnapshotRequest {})
        .await
        .unwrap()
        .into_inner()
        .map(|chunk| {
            let chunk = chunk.unwrap();
            (chunk.blob, chunk.remaining_bytes)
        })
        .collect()
        .await;
    assert_eq!(
        chunks,
        vec![
            (Bytes::from_static(b"abc"), 3),
            (Bytes::from_static(b"def"), 0)
        ]
    );
    assert_status(
        maintenance.downgrade(DowngradeRequest::default()).await,
        Code::Unimplemented,
        "unknown method /etcdserverpb.Maintenance/Downgrade",
    );
}

#[tokio::test]
async fn a_watch_stream_carries_the_sessions_responses_in_order() {
    let served = serve_fake().await;
    let mut watch = WatchClient::new(served.channel.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = watch
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: Bytes::from_static(b"w"),
                ..Default::default()
            },
        )),
    };
    tx.send(create).await.unwrap();
    let created = responses.message().await.unwrap().unwrap();
    assert!(created.created);
    assert_eq!(created.header, header(7));
    let event = responses.message().await.unwrap().unwrap();
    assert_eq!(
        event.events,
        vec![Event {
            r#type: EventType::Put as i32,
            kv: Some(kv(&Bytes::from_static(b"w"), "new")),
            prev_kv: None,
        }]
    );
    let cancel = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(
            WatchCancelRequest { watch_id: 0 },
        )),
    };
    tx.send(cancel).await.unwrap();
    let canceled = responses.message().await.unwrap().unwrap();
    assert!(canceled.canceled);
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let served = serve_fake().await;
    let mut health = HealthClient::new(served.channel.clone());
    let mut status = ServingStatus::Unknown;
    // The "" service is marked serving by a task the routes start.
    for _ in 0..50 {
        status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == ServingStatus::Serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, ServingStatus::Serving);
}

/// A plain HTTP/1.1 GET: the status code, the content type and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_string)
            })
            .unwrap_or_default();
        (status, content_type, body.to_string())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn http_endpoints() {
    let served = serve_fake().await;
    let addr = served.addr;
    assert_eq!(
        http_get(addr, "/health").await,
        (
            200,
            "application/json".into(),
            r#"{"health":"true","reason":""}"#.into()
        )
    );
    assert_eq!(http_get(addr, "/readyz").await.2, "ok\n");
    assert_eq!(
        http_get(addr, "/readyz?verbose").await.2,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n\
         [+]non_learner ok\nok\n"
    );
    assert_eq!(
        http_get(addr, "/livez?verbose").await,
        (
            200,
            "text/plain; charset=utf-8".into(),
            "[+]serializable_read ok\nok\n".into()
        )
    );
    served.fake.healthy.store(false, Ordering::Relaxed);
    assert_eq!(
        http_get(addr, "/health").await,
        (
            503,
            "application/json".into(),
            r#"{"health":"false","reason":"RAFT NO LEADER"}"#.into()
        )
    );
    // A serializable health check does not need a leader.
    assert_eq!(http_get(addr, "/health?serializable=true").await.0, 200);
    let (status, _, body) = http_get(addr, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "[+]data_corruption ok\n[+]serializable_read ok\n\
             [-]linearizable_read failed: etcdserver: no leader\n[+]non_learner ok\n\n"
        )
    );
    assert_eq!(
        http_get(addr, "/readyz?exclude=linearizable_read&verbose")
            .await
            .2,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]non_learner ok\nok\n"
    );
    assert_eq!(
        http_get(
            addr,
            "/readyz?allowlist=serializable_read&allowlist=non_learner"
        )
        .await
        .2,
        "ok\n"
    );
    assert_eq!(http_get(addr, "/readyz/linearizable_read").await.0, 503);
    assert_eq!(http_get(addr, "/readyz/serializable_read").await.2, "ok\n");
    assert_eq!(http_get(addr, "/readyz/no_such_check").await.0, 404);
    assert_eq!(http_get(addr, "/livez").await.2, "ok\n");
    served.fake.healthy.store(true, Ordering::Relaxed);
    // Alarms fail /health unless excluded; CORRUPT fails data_corruption.
    *served.fake.alarms.lock().unwrap() = vec!["NOSPACE".into()];
    assert_eq!(
        http_get(addr, "/health").await.2,
        r#"{"health":"false","reason":"ALARM NOSPACE"}"#
    );
    assert_eq!(http_get(addr, "/health?exclude=NOSPACE").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    *served.fake.alarms.lock().unwrap() = vec!["CORRUPT".into()];
    assert_eq!(
        http_get(addr, "/readyz/data_corruption").await.2,
        "[-]data_corruption failed: alarm activated: CORRUPT\n\n"
    );
    served.fake.alarms.lock().unwrap().clear();
    assert_eq!(
        http_get(addr, "/version").await,
        (
            200,
            "application/json".into(),
            r#"{"etcdcluster":"3.5.0","etcdserver":"3.5.0"}"#.into()
        )
    );
}

#[tokio::test]
async fn metrics_count_calls_by_service_method_and_code() {
    let served = serve_fake().await;
    let mut kv_client = KvClient::new(served.channel.clone());
    kv_client
        .range(RangeRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        })
        .await
        .unwrap();
    let _ = kv_client
        .range(RangeRequest {
            key: Bytes::from_static(b"compacted"),
            ..Default::default()
        })
        .await;
    let (status, content_type, body) = http_get(served.addr, "/metrics").await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/plain; version=0.0.4")
    );
    for line in [
        "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.",
        "# TYPE grpc_server_handled_total counter",
        "# HELP grpc_server_started_total Total number of RPCs started on the server.",
    ] {
        assert!(body.lines().any(|l| l == line), "{line:?} not in:\n{body}");
    }
    for labels in [
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="Range",grpc_code="OK"}"#,
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="Range",grpc_code="OutOfRange"}"#,
        r#"grpc_server_started_total{grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="Range"}"#,
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(labels)),
            "{labels} not in:\n{body}"
        );
    }
}

/// An HTTP/1.1 POST with extra headers: the status code and the body.
async fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let (path, headers, body) = (path.to_string(), headers.to_string(), body.to_string());
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_string())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_auth_token_reaches_the_server_from_grpc_metadata_and_the_json_gateway() {
    let served = serve_fake().await;
    let mut auth = pb::auth_client::AuthClient::new(served.channel.clone());
    let anonymous = auth.auth_status(AuthStatusRequest {}).await.unwrap();
    assert!(!anonymous.into_inner().enabled);
    let mut request = tonic::Request::new(AuthStatusRequest {});
    request
        .metadata_mut()
        .insert("token", "secret".parse().unwrap());
    assert!(
        auth.auth_status(request)
            .await
            .unwrap()
            .into_inner()
            .enabled
    );
    let refused = auth.user_list(AuthUserListRequest {}).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied"
        )
    );

    let status = "/v3/auth/status";
    assert_eq!(
        http_post(served.addr, status, "Authorization: secret\r\n", "{}").await,
        (200, r#"{"enabled":true}"#.to_string())
    );
    assert_eq!(
        http_post(served.addr, status, "", "{}").await,
        (200, "{}".to_string())
    );
}
