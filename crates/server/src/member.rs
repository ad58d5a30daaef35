//! A member's request handling ([`Member`]): reads served from the local store (after a
//! ReadIndex barrier when linearizable), writes proposed through raft and answered once
//! applied, and the `/health` check. The KV service is served from here (behind the
//! backend quota); the other services build on it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_grpc_gateway::api::{KvApi, RangeChunks};
use cairn_grpc_gateway::EtcdError;
use cairn_mvcc_store::{self as mvcc, Backend, KvStore};
use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::{
    self as pb, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, ResponseHeader,
    TxnRequest, TxnResponse,
};
use cairn_raft_node::RaftHandle;
use prost::Message as _;
use tonic::transport::Channel;

use crate::apply::Applied;
use crate::client_error;
use crate::members::Membership;

/// The version of etcd's API that cairn reports.
pub const ETCD_VERSION: &str = "3.7.0";
/// The cluster version cairn reports (major.minor of [`ETCD_VERSION`]).
pub const ETCD_CLUSTER_VERSION: &str = "3.7.0";
/// The storage version in Status (etcd 3.6's `storageVersion`).
pub const STORAGE_VERSION: &str = "3.7.0";

/// The limits a member enforces on requests.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// `--max-request-bytes`: the largest encoded proposal.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// How long a request may wait for raft.
    pub request_timeout: Duration,
    /// `--max-learners`.
    pub max_learners: usize,
}

/// Who this member is and how it presents itself in the member list.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// `--name`.
    pub name: String,
    /// Advertised peer URLs.
    pub peer_urls: Vec<String>,
    /// Advertised client URLs.
    pub client_urls: Vec<String>,
}

/// One member's request handling.
pub struct Member {
    pub(crate) info: MemberInfo,
    pub(crate) members: Arc<Membership>,
    pub(crate) store: Arc<KvStore>,
    pub(crate) backend: Arc<Backend>,
    pub(crate) raft: RaftHandle<Applied>,
    pub(crate) cluster_id: u64,
    pub(crate) member_id: u64,
    pub(crate) limits: RequestLimits,
    leader_channel: parking_lot::Mutex<Option<(u64, Channel)>>,
    /// How to reach a leader that serves clients over TLS only.
    leader_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Member {
    /// Request handling over a running raft node and its store.
    pub fn new(
        store: Arc<KvStore>,
        backend: Arc<Backend>,
        raft: RaftHandle<Applied>,
        limits: RequestLimits,
        info: MemberInfo,
        members: Arc<Membership>,
    ) -> Self {
        Member {
            cluster_id: info.cluster_id,
            member_id: info.member_id,
            info,
            members,
            store,
            backend,
            raft,
            limits,
            leader_channel: parking_lot::Mutex::new(None),
            leader_tls: None,
        }
    }

    /// Reaches a leader whose client URLs are all `https://` with this configuration
    /// (this member's client TLS: its CA, its certificate as the client's).
    pub fn with_leader_tls(mut self, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        self.leader_tls = tls;
        self
    }

    /// The raft node.
    pub fn raft(&self) -> &RaftHandle<Applied> {
        &self.raft
    }

    /// The MVCC store.
    pub fn store(&self) -> &Arc<KvStore> {
        &self.store
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// A channel to the current leader's first plain client URL, else its first TLS one
    /// (followers forward requests only the leader can answer there), kept while the
    /// leader stays the same.
    pub(crate) fn leader_channel(&self) -> Result<Channel, EtcdError> {
        let leader = self.raft.status().leader_id;
        if leader == 0 {
            return Err(EtcdError::NoLeader);
        }
        let mut cached = self.leader_channel.lock();
        if let Some((id, channel)) = cached.as_ref() {
            if *id == leader {
                return Ok(channel.clone());
            }
        }
        let urls = self
            .members
            .get(leader)
            .map(|m| m.client_ur_ls)
            .unwrap_or_default();
        let channel = match urls.iter().find(|u| !u.starts_with("https://")) {
            Some(url) => tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| EtcdError::Internal(e.to_string()))?
                .connect_timeout(Duration::from_secs(1))
                .timeout(self.limits.request_timeout)
                .connect_lazy(),
            None => {
                let url = urls.first().ok_or(EtcdError::NoLeader)?;
                cairn_raft_node::dial_lazy(url, self.leader_tls.as_ref())
                    .map_err(EtcdError::Internal)?
            }
        };
        *cached = Some((leader, channel.clone()));
        Ok(channel)
    }

    /// A channel to the leader that carries this call's auth token, for calls forwarded
    /// there (the leader checks the credentials again).
    pub(crate) fn leader_with_token(&self) -> Result<ForwardedChannel, EtcdError> {
        let token = cairn_grpc_gateway::credentials::current()
            .token
            .and_then(|t| t.parse().ok());
        Ok(tonic::service::interceptor::InterceptedService::new(
            self.leader_channel()?,
            ForwardToken(token),
        ))
    }

    /// A response header at the store's current revision.
    pub(crate) fn header_now(&self) -> Option<ResponseHeader> {
        Some(self.header(self.store.current_revision()))
    }

    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft.status().term,
        }
    }

    pub(crate) fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header
            .as_ref()
            .map(|h| h.revision)
            .unwrap_or_else(|| self.store.current_revision());
        *header = Some(self.header(revision));
    }

    /// Proposes `request` and answers with its applied response, header filled.
    pub(crate) async fn propose_for<R: AppliedResponse>(
        &self,
        request: Request,
    ) -> Result<R, EtcdError> {
        let mut resp = R::from_applied(self.propose(request).await?)
            .map_err(|other| EtcdError::Internal(format!("unexpected apply result {other:?}")))?;
        self.fill(resp.header_mut());
        Ok(resp)
    }

    pub(crate) async fn propose(&self, request: Request) -> Result<Applied, EtcdError> {
        let data = InternalRequest {
            id: 0,
            header: crate::auth_state::current_proposer().header(),
            request: Some(request),
        }
        .encode_to_vec();
        if data.len() > self.limits.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        // Raft must not take the proposal once its client stopped waiting (the client's
        // own deadline, or ours): a late copy applied after a client retried would apply
        // the write twice.
        let wait = cairn_grpc_gateway::deadline::current()
            .map(|d| d.saturating_duration_since(std::time::Instant::now()))
            .map_or(self.limits.request_timeout, |left| {
                left.min(self.limits.request_timeout)
            });
        let proposal = self
            .raft
            .propose_until(data, std::time::SystemTime::now() + wait);
        match tokio::time::timeout(self.limits.request_timeout, proposal).await {
            Ok(Ok(Applied::Failed(e))) => Err(e),
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(e)) => Err(client_error::raft(&e, self.raft.status().leader_id != 0)),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    pub(crate) async fn linearizable_barrier(&self) -> Result<(), EtcdError> {
        match tokio::time::timeout(
            self.limits.request_timeout,
            self.raft.linearizable_barrier(),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(client_error::raft(&e, self.raft.status().leader_id != 0)),
            Err(_) => Err(EtcdError::Timeout),
        }
    }
}

/// A channel to the leader whose calls carry the forwarding call's auth token.
pub(crate) type ForwardedChannel =
    tonic::service::interceptor::InterceptedService<Channel, ForwardToken>;

/// Puts an auth token in the `token` metadata of every call.
#[derive(Clone)]
pub(crate) struct ForwardToken(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for ForwardToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

/// A response that comes back from the apply loop as one [`Applied`] variant.
pub(crate) trait AppliedResponse: Sized {
    /// The response, or the unexpected result given back.
    fn from_applied(applied: Applied) -> Result<Self, Box<Applied>>;
    /// The response's header, filled before it goes to the client.
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! applied_response {
    ($($variant:ident => $response:ty),* $(,)?) => {$(
        impl AppliedResponse for $response {
            fn from_applied(applied: Applied) -> Result<Self, Box<Applied>> {
                match applied {
                    Applied::$variant(resp) => Ok(resp),
                    other => Err(Box::new(other)),
                }
            }
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )*};
}

applied_response!(
    Put => PutResponse,
    DeleteRange => DeleteRangeResponse,
    Txn => TxnResponse,
    Compaction => CompactionResponse,
    LeaseGrant => cairn_proto::etcdserverpb::LeaseGrantResponse,
    LeaseRevoke => cairn_proto::etcdserverpb::LeaseRevokeResponse,
);

#[async_trait]
impl KvApi for Member {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        mvcc::validate_range(&req).map_err(|e| client_error::store(&e))?;
        if !req.serializable {
            self.linearizable_barrier().await?;
        }
        let mut resp = self
            .store
            .range(&req)
            .map_err(|e| client_error::store(&e))?;
        self.fill(&mut resp.header);
        Ok(resp)
    }

    async fn range_stream(&self, req: RangeRequest) -> Result<RangeChunks, EtcdError> {
        mvcc::validate_range(&req).map_err(|e| client_error::store(&e))?;
        let sorted = req.sort_order != 0 || req.sort_target != 0;
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        if sorted || filtered {
            return Err(EtcdError::RangeStreamUnsupported);
        }
        if !req.serializable {
            self.linearizable_barrier().await?;
        }
        let cursor = self
            .store
            .range_cursor(&req)
            .map_err(|e| client_error::store(&e))?;
        Ok(range_chunks(
            self.store.clone(),
            cursor,
            self.header(0),
            self.limits.max_request_bytes,
        ))
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse, EtcdError> {
        mvcc::validate_put(&req).map_err(|e| client_error::store(&e))?;
        self.propose_for(Request::Put(req)).await
    }

    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        mvcc::validate_delete_range(&req).map_err(|e| client_error::store(&e))?;
        self.propose_for(Request::DeleteRange(req)).await
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        mvcc::validate_txn(&req, self.limits.max_txn_ops).map_err(|e| client_error::store(&e))?;
        self.propose_for(Request::Txn(req)).await
    }

    async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        let (rev, physical) = (req.revision, req.physical);
        let resp: CompactionResponse = self.propose_for(Request::Compaction(req)).await?;
        if physical {
            // The apply only scheduled the removal: answer once this member's is done.
            // As long as the client waits (a large removal takes a while, throttled).
            let store = self.store.clone();
            let timeout = cairn_grpc_gateway::deadline::current()
                .map_or(Duration::from_secs(300), |d| {
                    d.saturating_duration_since(std::time::Instant::now())
                });
            let done = tokio::task::spawn_blocking(move || store.wait_compacted(rev, timeout))
                .await
                .unwrap_or(false);
            if !done {
                return Err(EtcdError::Timeout);
            }
        }
        Ok(resp)
    }
}

/// The chunks of `cursor`'s read, each read when the client is ready for it (a slow
/// client holds back the reads, so the server holds about one chunk per stream); the
/// last chunk gets `header` with the read's revision.
fn range_chunks(
    store: Arc<KvStore>,
    cursor: mvcc::RangeCursor,
    header: ResponseHeader,
    max_bytes: usize,
) -> RangeChunks {
    let state = Some((store, cursor));
    Box::pin(futures::stream::unfold(state, move |state| async move {
        let (store, mut cursor) = state?;
        match store.next_range_chunk(&mut cursor, max_bytes) {
            Ok(Some(mut chunk)) => {
                if let Some(h) = chunk.header.as_mut() {
                    *h = ResponseHeader {
                        revision: h.revision,
                        ..header
                    };
                }
                let item = RangeStreamResponse {
                    range_response: Some(chunk),
                };
                Some((Ok(item), Some((store, cursor))))
            }
            Ok(None) => None,
            Err(e) => Some((Err(client_error::store(&e)), None)),
        }
    }))
}

/// Publishes this member's name and client URLs through raft (etcd does it at every start)
/// until it is applied; retried while there is no leader.
pub async fn publish_attributes(member: Arc<Member>) {
    let attrs = pb::Member {
        id: member.member_id,
        name: member.info.name.clone(),
        peer_ur_ls: Vec::new(),
        client_ur_ls: member.info.client_urls.clone(),
        is_learner: false,
    };
    let mut status = member.raft.subscribe_status();
    loop {
        if status.wait_for(|s| s.leader_id != 0).await.is_err() {
            return;
        }
        match member
            .propose(Request::MemberAttributes(attrs.clone()))
            .await
        {
            Ok(_) => {
                tracing::info!(name = %attrs.name, client_urls = ?attrs.client_ur_ls, "published member attributes to the cluster");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "publishing member attributes; will retry");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
