//! `v3lockpb.Lock`: etcd's mutex recipe.

use cairn_proto::v3lockpb::lock_server::Lock;
use cairn_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use super::{queue_key, queue_prefix, unary, Recipes};
use crate::error::EtcdError;

const SERVICE: &str = "v3lockpb.Lock";

impl Recipes {
    /// Takes the lock `name` for `lease`: joins the queue (or finds the lease's key in
    /// it) and waits until every key created before it is gone.
    async fn lock(&self, req: LockRequest) -> Result<LockResponse, EtcdError> {
        if req.lease == 0 {
            return Err(EtcdError::LeaseNotFound);
        }
        let prefix = queue_prefix(&req.name);
        let key = queue_key(&prefix, req.lease);
        // Join the queue unless this lease is in it already.
        let (my_revision, _) = self.join_queue(&key, Default::default(), req.lease).await?;
        let header = self.wait_turn(&prefix, &key, my_revision).await?;
        Ok(LockResponse {
            header: Some(header),
            key,
        })
    }

    /// Releases a lock: deletes its key. A key that is not a lock (no lease, or not
    /// `<name>/<its lease in hex>`) is refused and left alone; a key already gone is
    /// released.
    async fn unlock(&self, req: UnlockRequest) -> Result<UnlockResponse, EtcdError> {
        let key = req.key;
        if key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        let found = self.get(&key).await?;
        if let Some(kv) = found {
            let suffix = format!("/{:x}", kv.lease);
            if kv.lease == 0 || !key.ends_with(suffix.as_bytes()) {
                return Err(EtcdError::NotALock);
            }
        }
        let header = self.delete(key).await?;
        Ok(UnlockResponse {
            header: Some(header),
        })
    }
}

#[tonic::async_trait]
impl Lock for Recipes {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        unary(SERVICE, "Lock", Recipes::lock(self, request.into_inner())).await
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        unary(
            SERVICE,
            "Unlock",
            Recipes::unlock(self, request.into_inner()),
        )
        .await
    }
}
