//! etcd's `Lease` service over a [`LeaseApi`]: grant, revoke, time-to-live and listing
//! as unary calls, keep-alive as a bidirectional stream answering each request in order.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use cairn_proto::etcdserverpb as pb;
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use crate::error::EtcdError;
use crate::grpc::{observe, started, Limits};

/// What the Lease service needs from a server.
#[async_trait]
pub trait LeaseApi: Send + Sync + 'static {
    /// Creates a lease (`ID` 0: the server chooses one).
    async fn lease_grant(
        &self,
        req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, EtcdError>;
    /// Revokes a lease and deletes its keys.
    async fn lease_revoke(
        &self,
        req: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, EtcdError>;
    /// Restarts a lease's TTL; an unknown lease is answered with TTL 0, as etcd does.
    async fn lease_keep_alive(
        &self,
        req: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, EtcdError>;
    /// A lease's remaining and granted TTL (TTL -1 for an unknown lease), with its keys
    /// when asked.
    async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, EtcdError>;
    /// Every lease.
    async fn lease_leases(
        &self,
        req: pb::LeaseLeasesRequest,
    ) -> Result<pb::LeaseLeasesResponse, EtcdError>;
}

const SERVICE: &str = "etcdserverpb.Lease";

/// How many keep-alive answers may wait for a slow client before reading pauses.
const KEEP_ALIVE_BUFFER: usize = 16;

/// etcd's `Lease` service over a [`LeaseApi`].
pub struct LeaseService<A> {
    api: Arc<A>,
    limits: Limits,
}

impl<A> LeaseService<A> {
    /// Serves `api` within `limits`.
    pub fn new(api: Arc<A>, limits: Limits) -> Self {
        LeaseService { api, limits }
    }
}

macro_rules! lease_unary {
    ($self:ident, $method:literal, $req:ident, $call:ident) => {{
        started(SERVICE, $method);
        let req = $req.into_inner();
        let result = match $self.limits.check(&req) {
            Ok(()) => $self.api.$call(req).await,
            Err(e) => Err(e),
        };
        observe(SERVICE, $method, result)
    }};
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<A: LeaseApi> pb::lease_server::Lease for LeaseService<A> {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        lease_unary!(self, "LeaseGrant", request, lease_grant)
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        lease_unary!(self, "LeaseRevoke", request, lease_revoke)
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        metrics::counter!(
            "grpc_server_started_total",
            "grpc_type" => "bidi_stream",
            "grpc_service" => SERVICE,
            "grpc_method" => "LeaseKeepAlive",
        )
        .increment(1);
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(KEEP_ALIVE_BUFFER);
        let api = self.api.clone();
        tokio::spawn(async move {
            while let Some(next) = inbound.next().await {
                let Ok(req) = next else { break };
                let answer = api.lease_keep_alive(req).await.map_err(Status::from);
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        lease_unary!(self, "LeaseTimeToLive", request, lease_time_to_live)
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        lease_unary!(self, "LeaseLeases", request, lease_leases)
    }
}

/// The tonic server for `api`, with the same message limits as the other services.
pub fn lease_server<A: LeaseApi>(
    api: Arc<A>,
    limits: Limits,
) -> pb::lease_server::LeaseServer<LeaseService<A>> {
    pb::lease_server::LeaseServer::new(LeaseService::new(api, limits))
        .max_decoding_message_size(limits.transport_limit())
        .max_encoding_message_size(usize::MAX)
}
