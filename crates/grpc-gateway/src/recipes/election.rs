//! `v3electionpb.Election`: etcd's election recipe.

use std::pin::Pin;

use bytes::Bytes;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{created_at, prefix_end, queue_key, queue_prefix, unary, Recipes};
use crate::error::EtcdError;
use crate::metrics::{self, RpcType};

const SERVICE: &str = "v3electionpb.Election";

/// Leader values an Observe stream may hold for a slow client before it waits.
const OBSERVE_BUFFER: usize = 16;

fn put(key: &Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.clone(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

impl Recipes {
    /// Runs `op` if `leader` still leads (its key has the create revision it had).
    async fn if_leading(
        &self,
        leader: &LeaderKey,
        op: RequestOp,
    ) -> Result<TxnResponse, EtcdError> {
        let key = leader.key.clone();
        self.kv
            .txn(TxnRequest {
                compare: vec![created_at(&key, leader.rev)],
                success: vec![op],
                failure: Vec::new(),
            })
            .await
    }

    async fn campaign(&self, req: CampaignRequest) -> Result<CampaignResponse, EtcdError> {
        if req.lease == 0 {
            return Err(EtcdError::LeaseNotFound);
        }
        let prefix = queue_prefix(&req.name);
        let key = queue_key(&prefix, req.lease);
        let value = req.value;
        let (rev, existing) = self.join_queue(&key, value.clone(), req.lease).await?;
        let leader = LeaderKey {
            name: req.name.clone(),
            key: key.clone(),
            rev,
            lease: req.lease,
        };
        // This lease campaigned already: it keeps its place, with the new value.
        if existing.is_some_and(|kv| kv.value != value) {
            self.proclaim_as(&leader, value).await?;
        }
        let header = self.wait_turn(&prefix, &key, leader.rev).await?;
        Ok(CampaignResponse {
            header: Some(header),
            leader: Some(leader),
        })
    }

    async fn proclaim_as(
        &self,
        leader: &LeaderKey,
        value: Bytes,
    ) -> Result<ResponseHeader, EtcdError> {
        let key = leader.key.clone();
        let txn = self
            .if_leading(leader, put(&key, value, leader.lease))
            .await?;
        if !txn.succeeded {
            return Err(EtcdError::ElectionNotLeader);
        }
        Ok(txn.header.unwrap_or_default())
    }

    async fn proclaim(&self, req: ProclaimRequest) -> Result<ProclaimResponse, EtcdError> {
        let leader = req.leader.ok_or(EtcdError::MissingLeaderKey)?;
        let header = self.proclaim_as(&leader, req.value).await?;
        Ok(ProclaimResponse {
            header: Some(header),
        })
    }

    async fn resign(&self, req: ResignRequest) -> Result<ResignResponse, EtcdError> {
        let leader = req.leader.ok_or(EtcdError::MissingLeaderKey)?;
        let delete = RequestOp {
            request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                key: leader.key.clone(),
                ..Default::default()
            })),
        };
        // Resigning when no longer leading changes nothing and is no error (etcd).
        let txn = self.if_leading(&leader, delete).await?;
        Ok(ResignResponse { header: txn.header })
    }

    async fn leader(&self, req: LeaderRequest) -> Result<LeaderResponse, EtcdError> {
        let prefix = queue_prefix(&req.name);
        let (header, first) = self.by_create_revision(&prefix, true, 0).await?;
        let kv = first.ok_or(EtcdError::ElectionNoLeader)?;
        Ok(LeaderResponse {
            header: Some(header),
            kv: Some(kv),
        })
    }

    /// Sends every leader of `name` to `tx`, the current one first, until the receiver
    /// goes away or a read fails.
    async fn observe(
        self,
        name: Bytes,
        tx: tokio::sync::mpsc::Sender<Result<LeaderResponse, EtcdError>>,
    ) {
        let prefix = queue_prefix(&name);
        let end = prefix_end(&prefix);
        loop {
            let (header, first) = match self.by_create_revision(&prefix, true, 0).await {
                Ok(found) => found,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let leader = match first {
                Some(kv) => kv,
                None => {
                    // Nobody leads: the first key put under the prefix does.
                    let events = self
                        .watch_from(prefix.clone(), end.clone(), header.revision + 1)
                        .await;
                    let Ok(mut events) = events else { return };
                    let mut found = None;
                    while let Some((kind, kv)) = events.next().await {
                        if kind == EventType::Put {
                            found = Some(kv);
                            break;
                        }
                    }
                    match found {
                        Some(kv) => kv,
                        None => return,
                    }
                }
            };
            let announce = |kv: cairn_proto::mvccpb::KeyValue| LeaderResponse {
                header: Some(ResponseHeader {
                    revision: kv.mod_revision.max(header.revision),
                    ..header
                }),
                kv: Some(kv),
            };
            let key = leader.key.clone();
            let from = leader.mod_revision + 1;
            if tx.send(Ok(announce(leader))).await.is_err() {
                return;
            }
            // Follow this leader: new values, until its key is deleted.
            let Ok(mut events) = self.watch_from(key, Bytes::new(), from).await else {
                return;
            };
            while let Some((kind, kv)) = events.next().await {
                if kind == EventType::Delete {
                    break;
                }
                if tx.send(Ok(announce(kv))).await.is_err() {
                    return;
                }
            }
        }
    }
}

type LeaderStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Election for Recipes {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        unary(
            SERVICE,
            "Campaign",
            Recipes::campaign(self, request.into_inner()),
        )
        .await
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        unary(
            SERVICE,
            "Proclaim",
            Recipes::proclaim(self, request.into_inner()),
        )
        .await
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        unary(
            SERVICE,
            "Leader",
            Recipes::leader(self, request.into_inner()),
        )
        .await
    }

    type ObserveStream = LeaderStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        metrics::started(RpcType::ServerStream, SERVICE, "Observe");
        let (tx, rx) = tokio::sync::mpsc::channel(OBSERVE_BUFFER);
        let name = request.into_inner().name;
        // The task ends when the client goes away.
        let recipes = self.clone();
        let credentials = crate::credentials::current();
        tokio::spawn(crate::credentials::scope(credentials, async move {
            let gone = tx.clone();
            tokio::select! {
                _ = gone.closed() => {}
                _ = recipes.observe(name, tx) => {}
            }
        }));
        let stream: LeaderStream = Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(|r| r.map_err(Status::from)),
        );
        Ok(Response::new(stream))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        unary(
            SERVICE,
            "Resign",
            Recipes::resign(self, request.into_inner()),
        )
        .await
    }
}
