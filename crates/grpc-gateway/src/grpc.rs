//! etcd's gRPC services over the [`crate::api`] traits. One adapter, [`Service`], serves
//! each of them: it checks the message size, calls the trait, counts the call the way
//! go-grpc-prometheus does and turns the error into etcd's status. The Watch service's
//! stream lives in [`crate::watch`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb as pb;
use futures::{Stream, StreamExt as _};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::api::{AuthApi, ClusterApi, KvApi, LeaseApi, MaintenanceApi};
use crate::error::EtcdError;
use crate::metrics::{self, RpcType};

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

pub use crate::service_name;
use service_name::{AUTH, CLUSTER, KV, LEASE, MAINTENANCE};

/// What a trait method returns (an `async_trait` future borrowing the server).
type ApiFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, EtcdError>> + Send + 'a>>;

/// A stream of responses as tonic sends it.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How many keep-alive answers may wait for a slow client before reading pauses.
const KEEP_ALIVE_BUFFER: usize = 16;

/// One of etcd's gRPC services over `A`, the trait object (or type) that serves it: the
/// tonic service traits of KV, Lease, Cluster, Maintenance and Watch are implemented for
/// `Service<A>` wherever `A` implements the matching [`crate::api`] trait.
pub struct Service<A: ?Sized> {
    pub(crate) api: Arc<A>,
    pub(crate) limits: Limits,
}

impl<A: ?Sized> Service<A> {
    /// Serves `api` within `limits`.
    pub fn new(api: Arc<A>, limits: Limits) -> Self {
        Service { api, limits }
    }

    /// One unary call: size check, the server's answer, metrics, etcd's status.
    async fn unary<Req, Resp>(
        &self,
        service: &'static str,
        method: &'static str,
        request: Request<Req>,
        call: impl for<'a> FnOnce(&'a A, Req) -> ApiFuture<'a, Resp>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message,
    {
        metrics::started(RpcType::Unary, service, method);
        let deadline = crate::deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        metrics::client_received(&req);
        let result = match self.limits.check(&req) {
            Ok(()) => crate::deadline::scope(deadline, call(&self.api, req)).await,
            Err(e) => Err(e),
        };
        let code = result.as_ref().map_or_else(EtcdError::code, |_| Code::Ok);
        if let Ok(resp) = &result {
            metrics::client_sent(resp);
        }
        metrics::handled(RpcType::Unary, service, method, code);
        result.map(Response::new).map_err(Status::from)
    }
}

#[tonic::async_trait]
impl<A: KvApi + ?Sized> pb::kv_server::Kv for Service<A> {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.unary(KV, "Range", request, |api, req| api.range(req))
            .await
    }

    type RangeStreamStream = ResponseStream<pb::RangeStreamResponse>;

    async fn range_stream(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        metrics::started(RpcType::ServerStream, KV, "RangeStream");
        let req = request.into_inner();
        let chunks = match self.limits.check(&req) {
            Ok(()) => self.api.range_stream(req).await,
            Err(e) => Err(e),
        };
        let chunks = chunks.inspect_err(|e| {
            metrics::handled(RpcType::ServerStream, KV, "RangeStream", e.code());
        })?;
        let stream: Self::RangeStreamStream = Box::pin(chunks.map(|r| {
            if let Ok(chunk) = &r {
                metrics::client_sent(chunk);
            }
            r.map_err(Status::from)
        }));
        Ok(Response::new(stream))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.unary(KV, "Put", request, |api, req| api.put(req))
            .await
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        self.unary(KV, "DeleteRange", request, |api, req| api.delete_range(req))
            .await
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        self.unary(KV, "Txn", request, |api, req| api.txn(req))
            .await
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        self.unary(KV, "Compact", request, |api, req| api.compact(req))
            .await
    }
}

#[tonic::async_trait]
impl<A: LeaseApi + ?Sized> pb::lease_server::Lease for Service<A> {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        self.unary(LEASE, "LeaseGrant", request, |api, req| {
            api.lease_grant(req)
        })
        .await
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        self.unary(LEASE, "LeaseRevoke", request, |api, req| {
            api.lease_revoke(req)
        })
        .await
    }

    type LeaseKeepAliveStream = ResponseStream<pb::LeaseKeepAliveResponse>;

    /// Answers each request in order; the stream ends after the first error.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        metrics::started(RpcType::BidiStream, LEASE, "LeaseKeepAlive");
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(KEEP_ALIVE_BUFFER);
        let api = self.api.clone();
        let credentials = crate::credentials::current();
        tokio::spawn(crate::credentials::scope(credentials, async move {
            while let Some(next) = inbound.next().await {
                let Ok(req) = next else { break };
                metrics::client_received(&req);
                let answer = api.lease_keep_alive(req).await.map_err(Status::from);
                if let Ok(resp) = &answer {
                    metrics::client_sent(resp);
                }
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        }));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        self.unary(LEASE, "LeaseTimeToLive", request, |api, req| {
            api.lease_time_to_live(req)
        })
        .await
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.unary(LEASE, "LeaseLeases", request, |api, req| {
            api.lease_leases(req)
        })
        .await
    }
}

#[tonic::async_trait]
impl<A: ClusterApi + ?Sized> pb::cluster_server::Cluster for Service<A> {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.unary(CLUSTER, "MemberAdd", request, |api, req| {
            api.member_add(req)
        })
        .await
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.unary(CLUSTER, "MemberRemove", request, |api, req| {
            api.member_remove(req)
        })
        .await
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.unary(CLUSTER, "MemberUpdate", request, |api, req| {
            api.member_update(req)
        })
        .await
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.unary(CLUSTER, "MemberList", request, |api, req| {
            api.member_list(req)
        })
        .await
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.unary(CLUSTER, "MemberPromote", request, |api, req| {
            api.member_promote(req)
        })
        .await
    }
}

#[tonic::async_trait]
impl<A: MaintenanceApi + ?Sized> pb::maintenance_server::Maintenance for Service<A> {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        self.unary(MAINTENANCE, "Alarm", request, |api, req| api.alarm(req))
            .await
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.unary(MAINTENANCE, "Status", request, |api, req| api.status(req))
            .await
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.unary(MAINTENANCE, "Defragment", request, |api, req| {
            api.defragment(req)
        })
        .await
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.unary(MAINTENANCE, "Hash", request, |api, req| api.hash(req))
            .await
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.unary(MAINTENANCE, "HashKV", request, |api, req| api.hash_kv(req))
            .await
    }

    type SnapshotStream = ResponseStream<pb::SnapshotResponse>;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        metrics::started(RpcType::ServerStream, MAINTENANCE, "Snapshot");
        let chunks = self.api.snapshot().await.map_err(Status::from)?;
        let stream: Self::SnapshotStream = Box::pin(chunks.map(|r| {
            if let Ok(chunk) = &r {
                metrics::client_sent(chunk);
            }
            r.map_err(Status::from)
        }));
        Ok(Response::new(stream))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.unary(MAINTENANCE, "MoveLeader", request, |api, req| {
            api.move_leader(req)
        })
        .await
    }

    async fn downgrade(
        &self,
        request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        self.unary(MAINTENANCE, "Downgrade", request, |api, req| {
            api.downgrade(req)
        })
        .await
    }
}

#[tonic::async_trait]
impl<A: AuthApi + ?Sized> pb::auth_server::Auth for Service<A> {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        self.unary(AUTH, "AuthEnable", request, |api, req| api.auth_enable(req))
            .await
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        self.unary(AUTH, "AuthDisable", request, |api, req| {
            api.auth_disable(req)
        })
        .await
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        self.unary(AUTH, "AuthStatus", request, |api, req| api.auth_status(req))
            .await
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        self.unary(AUTH, "Authenticate", request, |api, req| {
            api.authenticate(req)
        })
        .await
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        self.unary(AUTH, "UserAdd", request, |api, req| api.user_add(req))
            .await
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        self.unary(AUTH, "UserGet", request, |api, req| api.user_get(req))
            .await
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        self.unary(AUTH, "UserList", request, |api, req| api.user_list(req))
            .await
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        self.unary(AUTH, "UserDelete", request, |api, req| api.user_delete(req))
            .await
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        self.unary(AUTH, "UserChangePassword", request, |api, req| {
            api.user_change_password(req)
        })
        .await
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        self.unary(AUTH, "UserGrantRole", request, |api, req| {
            api.user_grant_role(req)
        })
        .await
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        self.unary(AUTH, "UserRevokeRole", request, |api, req| {
            api.user_revoke_role(req)
        })
        .await
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        self.unary(AUTH, "RoleAdd", request, |api, req| api.role_add(req))
            .await
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        self.unary(AUTH, "RoleGet", request, |api, req| api.role_get(req))
            .await
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        self.unary(AUTH, "RoleList", request, |api, req| api.role_list(req))
            .await
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        self.unary(AUTH, "RoleDelete", request, |api, req| api.role_delete(req))
            .await
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        self.unary(AUTH, "RoleGrantPermission", request, |api, req| {
            api.role_grant_permission(req)
        })
        .await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        self.unary(AUTH, "RoleRevokePermission", request, |api, req| {
            api.role_revoke_permission(req)
        })
        .await
    }
}
