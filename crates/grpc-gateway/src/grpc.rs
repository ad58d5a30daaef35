//! tonic services adapting the [`crate::api`] traits to etcd's gRPC API.

use std::sync::Arc;

use cairn_proto::etcdserverpb as pb;
use tonic::{Code, Request, Response, Status};

use crate::api::{ClusterApi, KvApi, MaintenanceApi};
use crate::error::EtcdError;

/// etcd's extra allowance over `--max-request-bytes` for gRPC framing (grpcOverheadBytes).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Limits applied before a request reaches the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest gRPC message accepted: `--max-request-bytes` plus the gRPC overhead.
    pub max_recv_bytes: usize,
}

impl Limits {
    /// Limits for a server started with `--max-request-bytes=max_request_bytes`.
    pub fn for_max_request_bytes(max_request_bytes: usize) -> Self {
        Limits {
            max_recv_bytes: max_request_bytes + GRPC_OVERHEAD_BYTES,
        }
    }

    /// The decoding limit given to tonic: generous, so that oversized messages reach our
    /// own check and get grpc-go's wording; beyond it tonic refuses them itself.
    pub fn transport_limit(&self) -> usize {
        self.max_recv_bytes.saturating_mul(4).max(16 * 1024 * 1024)
    }

    pub(crate) fn check<M: prost::Message>(&self, msg: &M) -> Result<(), EtcdError> {
        let got = msg.encoded_len();
        if got > self.max_recv_bytes {
            return Err(EtcdError::MessageTooLarge {
                got,
                max: self.max_recv_bytes,
            });
        }
        Ok(())
    }
}

/// The name grpc-go gives a status code (used in metric labels).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Counts a unary call the way go-grpc-prometheus does and turns the result into tonic's.
pub(crate) fn observe<T>(
    service: &'static str,
    method: &'static str,
    result: Result<T, EtcdError>,
) -> Result<Response<T>, Status> {
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(e) => e.code(),
    };
    metrics::counter!(
        "grpc_server_handled_total",
        "grpc_type" => "unary",
        "grpc_service" => service,
        "grpc_method" => method,
        "grpc_code" => code_name(code),
    )
    .increment(1);
    result.map(Response::new).map_err(Status::from)
}

pub(crate) fn started(service: &'static str, method: &'static str) {
    metrics::counter!(
        "grpc_server_started_total",
        "grpc_type" => "unary",
        "grpc_service" => service,
        "grpc_method" => method,
    )
    .increment(1);
}

macro_rules! unary {
    ($self:ident, $service:literal, $method:literal, $req:ident, $call:ident) => {{
        started($service, $method);
        let req = $req.into_inner();
        let result = match $self.limits.check(&req) {
            Ok(()) => $self.api.$call(req).await,
            Err(e) => Err(e),
        };
        observe($service, $method, result)
    }};
}

/// etcd's `KV` service over a [`KvApi`].
pub struct KvService<A> {
    api: Arc<A>,
    limits: Limits,
}

impl<A> KvService<A> {
    /// Serves `api` within `limits`.
    pub fn new(api: Arc<A>, limits: Limits) -> Self {
        KvService { api, limits }
    }
}

#[tonic::async_trait]
impl<A: KvApi> pb::kv_server::Kv for KvService<A> {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        unary!(self, "etcdserverpb.KV", "Range", request, range)
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        unary!(self, "etcdserverpb.KV", "Put", request, put)
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        unary!(
            self,
            "etcdserverpb.KV",
            "DeleteRange",
            request,
            delete_range
        )
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        unary!(self, "etcdserverpb.KV", "Txn", request, txn)
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        unary!(self, "etcdserverpb.KV", "Compact", request, compact)
    }
}

/// etcd's `Maintenance` service over a [`MaintenanceApi`]; RPCs not served yet answer
/// `Unimplemented`.
pub struct MaintenanceService<A> {
    api: Arc<A>,
    limits: Limits,
}

impl<A> MaintenanceService<A> {
    /// Serves `api` within `limits`.
    pub fn new(api: Arc<A>, limits: Limits) -> Self {
        MaintenanceService { api, limits }
    }
}

fn unimplemented<T>(method: &'static str) -> Result<Response<T>, Status> {
    unimplemented_in("etcdserverpb.Maintenance", method)
}

fn unimplemented_in<T>(service: &'static str, method: &'static str) -> Result<Response<T>, Status> {
    started(service, method);
    observe(
        service,
        method,
        Err(EtcdError::Unimplemented(format!("/{service}/{method}"))),
    )
}

type SnapshotStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl<A: MaintenanceApi> pb::maintenance_server::Maintenance for MaintenanceService<A> {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        unary!(self, "etcdserverpb.Maintenance", "Alarm", request, alarm)
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        unary!(self, "etcdserverpb.Maintenance", "Status", request, status)
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        unary!(
            self,
            "etcdserverpb.Maintenance",
            "Defragment",
            request,
            defragment
        )
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        unary!(self, "etcdserverpb.Maintenance", "Hash", request, hash)
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        unary!(self, "etcdserverpb.Maintenance", "HashKV", request, hash_kv)
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        use futures::StreamExt as _;
        started("etcdserverpb.Maintenance", "Snapshot");
        let chunks = self.api.snapshot().await.map_err(Status::from)?;
        let stream: SnapshotStream = Box::pin(chunks.map(|r| r.map_err(Status::from)));
        Ok(Response::new(stream))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        unary!(
            self,
            "etcdserverpb.Maintenance",
            "MoveLeader",
            request,
            move_leader
        )
    }

    async fn downgrade(
        &self,
        _request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        unimplemented("Downgrade")
    }
}

/// etcd's `Cluster` service over a [`ClusterApi`].
pub struct ClusterService<A> {
    api: Arc<A>,
    limits: Limits,
}

impl<A> ClusterService<A> {
    /// Serves `api` within `limits`.
    pub fn new(api: Arc<A>, limits: Limits) -> Self {
        ClusterService { api, limits }
    }
}

#[tonic::async_trait]
impl<A: ClusterApi> pb::cluster_server::Cluster for ClusterService<A> {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        unary!(
            self,
            "etcdserverpb.Cluster",
            "MemberAdd",
            request,
            member_add
        )
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        unary!(
            self,
            "etcdserverpb.Cluster",
            "MemberRemove",
            request,
            member_remove
        )
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        unary!(
            self,
            "etcdserverpb.Cluster",
            "MemberUpdate",
            request,
            member_update
        )
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        unary!(
            self,
            "etcdserverpb.Cluster",
            "MemberList",
            request,
            member_list
        )
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        unary!(
            self,
            "etcdserverpb.Cluster",
            "MemberPromote",
            request,
            member_promote
        )
    }
}
