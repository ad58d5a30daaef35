//! What the gateway needs from a server. The server crate implements these traits; the
//! gateway adapts them to every client surface (gRPC now, the JSON gateway later).

use async_trait::async_trait;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    MemberListRequest, MemberListResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    StatusRequest, StatusResponse, TxnRequest, TxnResponse,
};

use crate::error::EtcdError;

/// etcd's KV service.
#[async_trait]
pub trait KvApi: Send + Sync + 'static {
    /// Reads keys (linearizable unless `serializable`).
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError>;
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

/// etcd's Maintenance service (the parts served so far).
#[async_trait]
pub trait MaintenanceApi: Send + Sync + 'static {
    /// Member status: version, sizes, leader, raft index and term.
    async fn status(&self, req: StatusRequest) -> Result<StatusResponse, EtcdError>;
}

/// etcd's Cluster service (the parts served so far).
#[async_trait]
pub trait ClusterApi: Send + Sync + 'static {
    /// The cluster's members.
    async fn member_list(&self, req: MemberListRequest) -> Result<MemberListResponse, EtcdError>;
}

/// The answer of `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Whether the member can serve a linearizable request.
    pub healthy: bool,
    /// Why not, when not.
    pub reason: String,
}

/// What the HTTP endpoints need.
#[async_trait]
pub trait HealthApi: Send + Sync + 'static {
    /// Checks that the member has a leader and can serve a linearizable read.
    async fn health(&self) -> Health;
}
