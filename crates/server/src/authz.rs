//! The permission check of every client request, in one place: each of etcd's services
//! is served through a [`Guarded`] wrapper that finds out who sends the request (its
//! token or its client certificate's common name, see
//! [`cairn_grpc_gateway::credentials`]), refuses it with etcd's error when that user may
//! not do it, and otherwise runs it as that user's (so that what it proposes carries the
//! user for the check while applying, see [`crate::auth_state::Proposer`]). The checks
//! themselves are `cairn_auth`'s; this file only says which one each RPC gets:
//!
//! | service | RPC | check |
//! |---|---|---|
//! | KV | Range, RangeStream | READ on the range |
//! | KV | Put, DeleteRange, Txn | `check_put`, `check_delete_range`, `check_txn` (nested ops included) |
//! | KV | Compact | root |
//! | Watch | each create request | READ on the watched range; refused watches are answered as etcd does |
//! | Lease | LeaseGrant | valid credentials if any |
//! | Lease | LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases | the attached keys |
//! | Cluster | MemberList | valid credentials if any |
//! | Cluster | MemberAdd/Remove/Update/Promote | root |
//! | Maintenance | Status | valid credentials if any (as etcd 3.4 and 3.5) |
//! | Maintenance | Alarm GET | credentials |
//! | Maintenance | Alarm (de)activate, Defragment, Hash, HashKV, Snapshot, MoveLeader, Downgrade | root |
//! | Auth | Authenticate | none (the password is the credential) |
//! | Auth | AuthStatus | valid credentials if any |
//! | Auth | UserGet, RoleGet | root, the user itself, a holder of the role |
//! | Auth | the rest | root |
//!
//! The Lock and Election services are recipes over KV and Watch: their requests meet
//! the KV and Watch checks. The JSON gateway calls the same services.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_auth::{Auth, AuthError, AuthInfo, AuthStore};
use cairn_grpc_gateway::api::{
    AuthApi, ClusterApi, KvApi, LeaseApi, MaintenanceApi, RangeChunks, SnapshotChunks, WatchApi,
    WatchResponses, WatchSession,
};
use cairn_grpc_gateway::credentials::{self, Credentials};
use cairn_grpc_gateway::EtcdError;
use cairn_lease_manager::Lessor;
use cairn_proto::etcdserverpb::{self as pb, alarm_request::AlarmAction, watch_request};

use crate::auth_state::as_client;
use crate::client_error;
use crate::member::Member;

/// etcd's cancel reason of a watch refused for permissions: the gRPC error's text.
const WATCH_DENIED: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

/// What every check needs: the auth state, the member (to wait for a token's entry
/// and to fill headers) and the lessor (the keys attached to a lease).
pub(crate) struct Guard {
    auth: Arc<Auth>,
    member: Arc<Member>,
    lessor: Arc<Lessor>,
}

impl Guard {
    /// The guard of a member.
    pub(crate) fn new(auth: Arc<Auth>, member: Arc<Member>, lessor: Arc<Lessor>) -> Arc<Self> {
        Arc::new(Guard {
            auth,
            member,
            lessor,
        })
    }

    /// Wraps one of the member's services.
    pub(crate) fn wrap<A: ?Sized>(self: &Arc<Self>, inner: Arc<A>) -> Arc<Guarded<A>> {
        Arc::new(Guarded {
            guard: self.clone(),
            inner,
        })
    }

    /// Who sends a request with `credentials`: nobody while auth is off or without
    /// credentials; an invalid token is refused. A simple token issued by an entry this
    /// member has not applied yet is waited for (etcd's index waiter).
    async fn who(&self, credentials: &Credentials) -> Result<Option<AuthInfo>, EtcdError> {
        if !self.auth.is_enabled() {
            return Ok(None);
        }
        if let Some(index) = credentials
            .token
            .as_deref()
            .and_then(|t| self.auth.token_wait_index(t))
        {
            let raft = self.member.raft();
            if raft.applied_index() < index {
                let timeout = self.member.limits.request_timeout;
                let _ = tokio::time::timeout(timeout, raft.wait_applied(index)).await;
            }
        }
        self.auth
            .auth_info(
                credentials.token.as_deref(),
                credentials.common_name.as_deref(),
            )
            .map_err(|e| client_error::auth(&e))
    }

    /// The sender of the request served on this task, if `check` allows it.
    async fn authorize(
        &self,
        check: impl FnOnce(&AuthStore, Option<&AuthInfo>) -> Result<(), AuthError>,
    ) -> Result<Option<AuthInfo>, EtcdError> {
        let who = self.who(&credentials::current()).await?;
        check(&self.auth.store(), who.as_ref()).map_err(|e| client_error::auth(&e))?;
        Ok(who)
    }

    /// The keys attached to a lease, as the lessor knows them now.
    fn lease_keys(&self, id: i64) -> Option<Vec<Bytes>> {
        self.lessor.time_to_live(id, true).map(|ttl| ttl.keys)
    }

    /// The keys attached to any lease.
    fn all_lease_keys(&self) -> Vec<Bytes> {
        self.lessor
            .leases()
            .into_iter()
            .filter_map(|id| self.lease_keys(id))
            .flatten()
            .collect()
    }
}

/// Anybody, but a token must be valid.
fn anyone(_: &AuthStore, _: Option<&AuthInfo>) -> Result<(), AuthError> {
    Ok(())
}

/// Only root.
fn root(store: &AuthStore, who: Option<&AuthInfo>) -> Result<(), AuthError> {
    store.check_admin(who)
}

/// One of the member's services behind the permission checks.
pub(crate) struct Guarded<A: ?Sized> {
    guard: Arc<Guard>,
    inner: Arc<A>,
}

/// Checks, then runs the inner call as the checked user.
macro_rules! guarded {
    ($self:ident, $check:expr, $call:expr) => {{
        let who = $self.guard.authorize($check).await?;
        as_client(who, $call).await
    }};
}

#[async_trait]
impl KvApi for Guarded<dyn KvApi> {
    async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, EtcdError> {
        guarded!(self, |s, w| s.check_range(w, &req), self.inner.range(req))
    }

    async fn range_stream(&self, req: pb::RangeRequest) -> Result<RangeChunks, EtcdError> {
        guarded!(
            self,
            |s, w| s.check_range(w, &req),
            self.inner.range_stream(req)
        )
    }

    async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse, EtcdError> {
        let keys = |id| self.guard.lease_keys(id);
        guarded!(
            self,
            |s, w| s.check_put(w, &req, &keys),
            self.inner.put(req)
        )
    }

    async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, EtcdError> {
        guarded!(
            self,
            |s, w| s.check_delete_range(w, &req),
            self.inner.delete_range(req)
        )
    }

    async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, EtcdError> {
        let keys = |id| self.guard.lease_keys(id);
        guarded!(
            self,
            |s, w| s.check_txn(w, &req, &keys),
            self.inner.txn(req)
        )
    }

    async fn compact(
        &self,
        req: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, EtcdError> {
        guarded!(self, root, self.inner.compact(req))
    }
}

#[async_trait]
impl LeaseApi for Guarded<dyn LeaseApi> {
    async fn lease_grant(
        &self,
        req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, EtcdError> {
        guarded!(self, anyone, self.inner.lease_grant(req))
    }

    async fn lease_revoke(
        &self,
        req: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, EtcdError> {
        let keys = |id| self.guard.lease_keys(id);
        guarded!(
            self,
            |s, w| s.check_lease_revoke(w, req.id, &keys),
            self.inner.lease_revoke(req)
        )
    }

    async fn lease_keep_alive(
        &self,
        req: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, EtcdError> {
        let attached = self.guard.lease_keys(req.id).unwrap_or_default();
        guarded!(
            self,
            |s, w| s.check_lease_keep_alive(w, &attached),
            self.inner.lease_keep_alive(req)
        )
    }

    async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, EtcdError> {
        let attached = req
            .keys
            .then(|| self.guard.lease_keys(req.id).unwrap_or_default());
        guarded!(
            self,
            |s, w| s.check_lease_time_to_live(w, attached.as_deref()),
            self.inner.lease_time_to_live(req)
        )
    }

    async fn lease_leases(
        &self,
        req: pb::LeaseLeasesRequest,
    ) -> Result<pb::LeaseLeasesResponse, EtcdError> {
        let attached = self.guard.all_lease_keys();
        guarded!(
            self,
            |s, w| s.check_lease_leases(w, &attached),
            self.inner.lease_leases(req)
        )
    }
}

#[async_trait]
impl ClusterApi for Guarded<dyn ClusterApi> {
    async fn member_list(
        &self,
        req: pb::MemberListRequest,
    ) -> Result<pb::MemberListResponse, EtcdError> {
        guarded!(self, anyone, self.inner.member_list(req))
    }

    async fn member_add(
        &self,
        req: pb::MemberAddRequest,
    ) -> Result<pb::MemberAddResponse, EtcdError> {
        guarded!(self, root, self.inner.member_add(req))
    }

    async fn member_remove(
        &self,
        req: pb::MemberRemoveRequest,
    ) -> Result<pb::MemberRemoveResponse, EtcdError> {
        guarded!(self, root, self.inner.member_remove(req))
    }

    async fn member_update(
        &self,
        req: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, EtcdError> {
        guarded!(self, root, self.inner.member_update(req))
    }

    async fn member_promote(
        &self,
        req: pb::MemberPromoteRequest,
    ) -> Result<pb::MemberPromoteResponse, EtcdError> {
        guarded!(self, root, self.inner.member_promote(req))
    }
}

#[async_trait]
impl MaintenanceApi for Guarded<dyn MaintenanceApi> {
    async fn status(&self, req: pb::StatusRequest) -> Result<pb::StatusResponse, EtcdError> {
        // As etcd 3.4 and 3.5: anybody (`etcdctl endpoint status` without a user).
        guarded!(self, anyone, self.inner.status(req))
    }

    async fn alarm(&self, req: pb::AlarmRequest) -> Result<pb::AlarmResponse, EtcdError> {
        let get = req.action == AlarmAction::Get as i32;
        guarded!(
            self,
            |s, w| if get {
                s.check_credentials(w)
            } else {
                s.check_admin(w)
            },
            self.inner.alarm(req)
        )
    }

    async fn defragment(
        &self,
        req: pb::DefragmentRequest,
    ) -> Result<pb::DefragmentResponse, EtcdError> {
        guarded!(self, root, self.inner.defragment(req))
    }

    async fn hash(&self, req: pb::HashRequest) -> Result<pb::HashResponse, EtcdError> {
        guarded!(self, root, self.inner.hash(req))
    }

    async fn hash_kv(&self, req: pb::HashKvRequest) -> Result<pb::HashKvResponse, EtcdError> {
        guarded!(self, root, self.inner.hash_kv(req))
    }

    async fn move_leader(
        &self,
        req: pb::MoveLeaderRequest,
    ) -> Result<pb::MoveLeaderResponse, EtcdError> {
        guarded!(self, root, self.inner.move_leader(req))
    }

    async fn snapshot(&self) -> Result<SnapshotChunks, EtcdError> {
        guarded!(self, root, self.inner.snapshot())
    }

    async fn downgrade(
        &self,
        req: pb::DowngradeRequest,
    ) -> Result<pb::DowngradeResponse, EtcdError> {
        guarded!(self, root, self.inner.downgrade(req))
    }
}

#[async_trait]
impl AuthApi for Guarded<dyn AuthApi> {
    async fn auth_enable(
        &self,
        req: pb::AuthEnableRequest,
    ) -> Result<pb::AuthEnableResponse, EtcdError> {
        guarded!(self, root, self.inner.auth_enable(req))
    }

    async fn auth_disable(
        &self,
        req: pb::AuthDisableRequest,
    ) -> Result<pb::AuthDisableResponse, EtcdError> {
        guarded!(self, root, self.inner.auth_disable(req))
    }

    async fn auth_status(
        &self,
        req: pb::AuthStatusRequest,
    ) -> Result<pb::AuthStatusResponse, EtcdError> {
        guarded!(self, anyone, self.inner.auth_status(req))
    }

    async fn authenticate(
        &self,
        req: pb::AuthenticateRequest,
    ) -> Result<pb::AuthenticateResponse, EtcdError> {
        // The password is the credential: a stale token sent along does not matter.
        as_client(None, self.inner.authenticate(req)).await
    }

    async fn user_add(
        &self,
        req: pb::AuthUserAddRequest,
    ) -> Result<pb::AuthUserAddResponse, EtcdError> {
        guarded!(self, root, self.inner.user_add(req))
    }

    async fn user_get(
        &self,
        req: pb::AuthUserGetRequest,
    ) -> Result<pb::AuthUserGetResponse, EtcdError> {
        guarded!(
            self,
            |s, w| s.check_user_get(w, &req.name),
            self.inner.user_get(req)
        )
    }

    async fn user_list(
        &self,
        req: pb::AuthUserListRequest,
    ) -> Result<pb::AuthUserListResponse, EtcdError> {
        guarded!(self, root, self.inner.user_list(req))
    }

    async fn user_delete(
        &self,
        req: pb::AuthUserDeleteRequest,
    ) -> Result<pb::AuthUserDeleteResponse, EtcdError> {
        guarded!(self, root, self.inner.user_delete(req))
    }

    async fn user_change_password(
        &self,
        req: pb::AuthUserChangePasswordRequest,
    ) -> Result<pb::AuthUserChangePasswordResponse, EtcdError> {
        guarded!(self, root, self.inner.user_change_password(req))
    }

    async fn user_grant_role(
        &self,
        req: pb::AuthUserGrantRoleRequest,
    ) -> Result<pb::AuthUserGrantRoleResponse, EtcdError> {
        guarded!(self, root, self.inner.user_grant_role(req))
    }

    async fn user_revoke_role(
        &self,
        req: pb::AuthUserRevokeRoleRequest,
    ) -> Result<pb::AuthUserRevokeRoleResponse, EtcdError> {
        guarded!(self, root, self.inner.user_revoke_role(req))
    }

    async fn role_add(
        &self,
        req: pb::AuthRoleAddRequest,
    ) -> Result<pb::AuthRoleAddResponse, EtcdError> {
        guarded!(self, root, self.inner.role_add(req))
    }

    async fn role_get(
        &self,
        req: pb::AuthRoleGetRequest,
    ) -> Result<pb::AuthRoleGetResponse, EtcdError> {
        guarded!(
            self,
            |s, w| s.check_role_get(w, &req.role),
            self.inner.role_get(req)
        )
    }

    async fn role_list(
        &self,
        req: pb::AuthRoleListRequest,
    ) -> Result<pb::AuthRoleListResponse, EtcdError> {
        guarded!(self, root, self.inner.role_list(req))
    }

    async fn role_delete(
        &self,
        req: pb::AuthRoleDeleteRequest,
    ) -> Result<pb::AuthRoleDeleteResponse, EtcdError> {
        guarded!(self, root, self.inner.role_delete(req))
    }

    async fn role_grant_permission(
        &self,
        req: pb::AuthRoleGrantPermissionRequest,
    ) -> Result<pb::AuthRoleGrantPermissionResponse, EtcdError> {
        guarded!(self, root, self.inner.role_grant_permission(req))
    }

    async fn role_revoke_permission(
        &self,
        req: pb::AuthRoleRevokePermissionRequest,
    ) -> Result<pb::AuthRoleRevokePermissionResponse, EtcdError> {
        guarded!(self, root, self.inner.role_revoke_permission(req))
    }
}

impl WatchApi for Guarded<dyn WatchApi> {
    fn open_stream(&self) -> (Box<dyn WatchSession>, WatchResponses) {
        let (inner, responses) = self.inner.open_stream();
        let (refusals_tx, refusals) = futures::channel::mpsc::unbounded();
        let session = GuardedSession {
            guard: self.guard.clone(),
            credentials: credentials::current(),
            inner,
            refusals: refusals_tx,
        };
        (
            Box::new(session),
            Box::pin(futures::stream::select(responses, refusals)),
        )
    }
}

/// A watch stream whose create requests are checked with the credentials it was opened
/// with.
struct GuardedSession {
    guard: Arc<Guard>,
    credentials: Credentials,
    inner: Box<dyn WatchSession>,
    refusals: futures::channel::mpsc::UnboundedSender<pb::WatchResponse>,
}

#[async_trait]
impl WatchSession for GuardedSession {
    async fn handle(&mut self, request: pb::WatchRequest) {
        if let Some(watch_request::RequestUnion::CreateRequest(create)) = &request.request_union {
            let allowed = match self.guard.who(&self.credentials).await {
                Ok(who) => self.guard.auth.store().check_watch(who.as_ref(), create),
                Err(_) => Err(AuthError::InvalidAuthToken),
            };
            if allowed.is_err() {
                let _ = self.refusals.unbounded_send(pb::WatchResponse {
                    header: self.guard.member.header_now(),
                    watch_id: create.watch_id,
                    created: true,
                    canceled: true,
                    cancel_reason: WATCH_DENIED.to_string(),
                    ..Default::default()
                });
                return;
            }
        }
        self.inner.handle(request).await;
    }
}
