//! What the gateway needs from a server: one trait per etcd service. The server crate
//! implements them; the gateway adapts them to every client surface (gRPC now, the JSON
//! gateway later), and its tests serve them from in-memory fakes.

use std::pin::Pin;

use async_trait::async_trait;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, CompactionRequest, CompactionResponse, DefragmentRequest,
    DefragmentResponse, DeleteRangeRequest, DeleteRangeResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, MoveLeaderRequest,
    MoveLeaderResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RangeStreamResponse,
    SnapshotResponse, StatusRequest, StatusResponse, TxnRequest, TxnResponse, WatchRequest,
    WatchResponse,
};
use futures::Stream;

use crate::error::EtcdError;

/// etcd's KV service.
#[async_trait]
pub trait KvApi: Send + Sync + 'static {
    /// Reads keys (linearizable unless `serializable`).
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError>;
    /// Reads keys as a stream of chunks at one revision (etcd 3.7's RangeStream). A
    /// server without it answers `Unimplemented`, as etcd before 3.7 does.
    async fn range_stream(&self, req: RangeRequest) -> Result<RangeChunks, EtcdError> {
        let _ = req;
        Err(EtcdError::Unimplemented(
            "/etcdserverpb.KV/RangeStream".to_string(),
        ))
    }
    /// Writes one key.
    async fn put(&self, req: PutRequest) -> Result<PutResponse, EtcdError>;
    /// Deletes a key or a range.
    async fn delete_range(&self, req: DeleteRangeRequest)
        -> Result<DeleteRangeResponse, EtcdError>;
    /// An atomic compare-then-branch transaction.
    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError>;
    /// Compacts history up to a revision.
    async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, EtcdError>;
}

/// A stream of range chunks (KV.RangeStream): only the last has the header, `more` and
/// `count`.
pub type RangeChunks = Pin<Box<dyn Stream<Item = Result<RangeStreamResponse, EtcdError>> + Send>>;

/// A stream of snapshot chunks (Maintenance.Snapshot).
pub type SnapshotChunks = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, EtcdError>> + Send>>;

/// etcd's Maintenance service.
#[async_trait]
pub trait MaintenanceApi: Send + Sync + 'static {
    /// Member status: version, sizes, leader, raft index and term.
    async fn status(&self, req: StatusRequest) -> Result<StatusResponse, EtcdError>;
    /// Lists, raises or clears alarms.
    async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, EtcdError>;
    /// Reclaims the backend's free space (online).
    async fn defragment(&self, req: DefragmentRequest) -> Result<DefragmentResponse, EtcdError>;
    /// A hash of the whole backend.
    async fn hash(&self, req: HashRequest) -> Result<HashResponse, EtcdError>;
    /// A hash of the key space up to a revision.
    async fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, EtcdError>;
    /// Hands leadership to another member (asked of the leader).
    async fn move_leader(&self, req: MoveLeaderRequest) -> Result<MoveLeaderResponse, EtcdError>;
    /// A consistent point-in-time copy of the backend, in chunks.
    async fn snapshot(&self) -> Result<SnapshotChunks, EtcdError>;
    /// Validates, enables or cancels a cluster downgrade (etcd 3.5+). A server without
    /// it answers `Unimplemented`.
    async fn downgrade(&self, req: DowngradeRequest) -> Result<DowngradeResponse, EtcdError> {
        let _ = req;
        Err(EtcdError::Unimplemented(
            "/etcdserverpb.Maintenance/Downgrade".to_string(),
        ))
    }
}

/// etcd's Cluster service.
#[async_trait]
pub trait ClusterApi: Send + Sync + 'static {
    /// The cluster's members.
    async fn member_list(&self, req: MemberListRequest) -> Result<MemberListResponse, EtcdError>;
    /// Adds a member (or a learner).
    async fn member_add(&self, req: MemberAddRequest) -> Result<MemberAddResponse, EtcdError>;
    /// Removes a member.
    async fn member_remove(
        &self,
        req: MemberRemoveRequest,
    ) -> Result<MemberRemoveResponse, EtcdError>;
    /// Changes a member's peer URLs.
    async fn member_update(
        &self,
        req: MemberUpdateRequest,
    ) -> Result<MemberUpdateResponse, EtcdError>;
    /// Promotes a learner to a voting member.
    async fn member_promote(
        &self,
        req: MemberPromoteRequest,
    ) -> Result<MemberPromoteResponse, EtcdError>;
}

/// etcd's Lease service.
#[async_trait]
pub trait LeaseApi: Send + Sync + 'static {
    /// Creates a lease (`ID` 0: the server chooses one).
    async fn lease_grant(&self, req: LeaseGrantRequest) -> Result<LeaseGrantResponse, EtcdError>;
    /// Revokes a lease and deletes its keys.
    async fn lease_revoke(&self, req: LeaseRevokeRequest)
        -> Result<LeaseRevokeResponse, EtcdError>;
    /// Restarts a lease's TTL; an unknown lease is answered with TTL 0, as etcd does. The
    /// gateway calls it once per request of a keep-alive stream, in order.
    async fn lease_keep_alive(
        &self,
        req: LeaseKeepAliveRequest,
    ) -> Result<LeaseKeepAliveResponse, EtcdError>;
    /// A lease's remaining and granted TTL (TTL -1 for an unknown lease), with its keys
    /// when asked.
    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError>;
    /// Every lease.
    async fn lease_leases(&self, req: LeaseLeasesRequest)
        -> Result<LeaseLeasesResponse, EtcdError>;
}

/// The responses of one watch stream, in the order they must reach the client.
pub type WatchResponses = Pin<Box<dyn Stream<Item = WatchResponse> + Send + 'static>>;

/// One client's watch stream on the server side.
#[async_trait]
pub trait WatchSession: Send + 'static {
    /// Handles one request (create, cancel, progress). May wait while the stream's
    /// response buffer is full.
    async fn handle(&mut self, request: WatchRequest);
}

/// etcd's Watch service: each gRPC call opens one stream.
pub trait WatchApi: Send + Sync + 'static {
    /// Opens a stream: the session takes requests, the stream yields responses. Dropping
    /// the session ends the stream's watchers.
    fn open_stream(&self) -> (Box<dyn WatchSession>, WatchResponses);
}

/// What the HTTP health endpoints (`/health`, `/livez`, `/readyz`) probe; each endpoint
/// combines them as etcd does.
#[async_trait]
pub trait HealthApi: Send + Sync + 'static {
    /// The active alarms, by etcd's names (`NOSPACE`, `CORRUPT`).
    fn alarms(&self) -> Vec<String>;
    /// Whether this member knows a leader.
    fn has_leader(&self) -> bool;
    /// Whether this member is a learner.
    fn is_learner(&self) -> bool;
    /// etcd's health read (keys only, limit 1): served locally when `serializable`, else
    /// linearizable; the client's error message when it fails.
    async fn read(&self, serializable: bool) -> Result<(), String>;
}

/// etcd's Auth service.
#[async_trait]
pub trait AuthApi: Send + Sync + 'static {
    /// Turns auth on (refused without a `root` user holding the `root` role).
    async fn auth_enable(
        &self,
        req: pb::AuthEnableRequest,
    ) -> Result<pb::AuthEnableResponse, EtcdError>;
    /// Turns auth off.
    async fn auth_disable(
        &self,
        req: pb::AuthDisableRequest,
    ) -> Result<pb::AuthDisableResponse, EtcdError>;
    /// Whether auth is on, and the auth revision.
    async fn auth_status(
        &self,
        req: pb::AuthStatusRequest,
    ) -> Result<pb::AuthStatusResponse, EtcdError>;
    /// Checks a user's password and answers a token.
    async fn authenticate(
        &self,
        req: pb::AuthenticateRequest,
    ) -> Result<pb::AuthenticateResponse, EtcdError>;
    /// Adds a user.
    async fn user_add(
        &self,
        req: pb::AuthUserAddRequest,
    ) -> Result<pb::AuthUserAddResponse, EtcdError>;
    /// A user's roles.
    async fn user_get(
        &self,
        req: pb::AuthUserGetRequest,
    ) -> Result<pb::AuthUserGetResponse, EtcdError>;
    /// Every user.
    async fn user_list(
        &self,
        req: pb::AuthUserListRequest,
    ) -> Result<pb::AuthUserListResponse, EtcdError>;
    /// Deletes a user.
    async fn user_delete(
        &self,
        req: pb::AuthUserDeleteRequest,
    ) -> Result<pb::AuthUserDeleteResponse, EtcdError>;
    /// Changes a user's password.
    async fn user_change_password(
        &self,
        req: pb::AuthUserChangePasswordRequest,
    ) -> Result<pb::AuthUserChangePasswordResponse, EtcdError>;
    /// Grants a role to a user.
    async fn user_grant_role(
        &self,
        req: pb::AuthUserGrantRoleRequest,
    ) -> Result<pb::AuthUserGrantRoleResponse, EtcdError>;
    /// Revokes a role from a user.
    async fn user_revoke_role(
        &self,
        req: pb::AuthUserRevokeRoleRequest,
    ) -> Result<pb::AuthUserRevokeRoleResponse, EtcdError>;
    /// Adds a role.
    async fn role_add(
        &self,
        req: pb::AuthRoleAddRequest,
    ) -> Result<pb::AuthRoleAddResponse, EtcdError>;
    /// A role's permissions.
    async fn role_get(
        &self,
        req: pb::AuthRoleGetRequest,
    ) -> Result<pb::AuthRoleGetResponse, EtcdError>;
    /// Every role.
    async fn role_list(
        &self,
        req: pb::AuthRoleListRequest,
    ) -> Result<pb::AuthRoleListResponse, EtcdError>;
    /// Deletes a role.
    async fn role_delete(
        &self,
        req: pb::AuthRoleDeleteRequest,
    ) -> Result<pb::AuthRoleDeleteResponse, EtcdError>;
    /// Grants a permission to a role.
    async fn role_grant_permission(
        &self,
        req: pb::AuthRoleGrantPermissionRequest,
    ) -> Result<pb::AuthRoleGrantPermissionResponse, EtcdError>;
    /// Revokes a permission from a role.
    async fn role_revoke_permission(
        &self,
        req: pb::AuthRoleRevokePermissionRequest,
    ) -> Result<pb::AuthRoleRevokePermissionResponse, EtcdError>;
}
