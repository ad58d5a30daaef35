//! `--quota-backend-bytes` in front of a member's writes (etcd's quotaKVServer and
//! quotaLeaseServer): a write that would take the backend over the quota is refused and
//! raises the NOSPACE alarm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cairn_grpc_gateway::api::{KvApi, RangeChunks};
use cairn_grpc_gateway::EtcdError;
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmType, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};

use crate::alarms;
use crate::member::Member;

/// `--quota-backend-bytes` in front of a member's writes (etcd's quotaKVServer and
/// quotaLeaseServer).
#[derive(Clone)]
pub(crate) struct Quota {
    member: Arc<Member>,
    bytes: u64,
    size: Arc<SizeCache>,
}

/// The backend size, read from RocksDB at most every [`SIZE_REFRESH`]: reading its
/// properties on every write cost about 2% of the server's CPU under load.
struct SizeCache {
    origin: Instant,
    bytes: AtomicU64,
    read_at_ms: AtomicU64,
}

impl Default for SizeCache {
    fn default() -> Self {
        SizeCache {
            origin: Instant::now(),
            bytes: AtomicU64::new(0),
            read_at_ms: AtomicU64::new(u64::MAX),
        }
    }
}

const SIZE_REFRESH: Duration = Duration::from_millis(100);

impl SizeCache {
    fn get(&self, backend: &cairn_mvcc_store::Backend) -> Result<u64, EtcdError> {
        let now = self.origin.elapsed().as_millis() as u64;
        let at = self.read_at_ms.load(Ordering::Relaxed);
        if at == u64::MAX || now.saturating_sub(at) >= SIZE_REFRESH.as_millis() as u64 {
            self.bytes.store(backend_size(backend)?, Ordering::Relaxed);
            self.read_at_ms.store(now, Ordering::Relaxed);
        }
        Ok(self.bytes.load(Ordering::Relaxed))
    }
}

/// The backend's size; a failure to read it refuses the request rather than pass as 0
/// bytes (which would turn the quota off).
pub(crate) fn backend_size(backend: &cairn_mvcc_store::Backend) -> Result<u64, EtcdError> {
    backend
        .size_bytes()
        .map_err(|e| EtcdError::Internal(format!("reading the backend size: {e}")))
}

impl Quota {
    /// Refuses a write of `cost` bytes that would take the backend over the quota, and
    /// raises NOSPACE for this member. Far from the quota a recent size is enough; near
    /// it the size is read afresh.
    pub(crate) async fn check(&self, cost: u64) -> Result<(), EtcdError> {
        if cost == 0 || self.size.get(&self.member.backend)? + cost < self.bytes / 10 * 9 {
            return Ok(());
        }
        if backend_size(&self.member.backend)? + cost < self.bytes {
            return Ok(());
        }
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.member.member_id,
            alarm: AlarmType::Nospace as i32,
        };
        if let Err(e) = self.member.propose(Request::Alarm(raise)).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm");
        }
        Err(EtcdError::NoSpace)
    }
}

impl Quota {
    /// A quota of `bytes` in front of `member`'s writes.
    pub(crate) fn new(member: Arc<Member>, bytes: u64) -> Self {
        Quota {
            member,
            bytes,
            size: Arc::new(SizeCache::default()),
        }
    }
}

/// The KV service of a member behind its quota.
pub(crate) struct QuotaKv(pub(crate) Quota);

#[async_trait]
impl KvApi for QuotaKv {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.0.member.range(req).await
    }

    async fn range_stream(&self, req: RangeRequest) -> Result<RangeChunks, EtcdError> {
        self.0.member.range_stream(req).await
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse, EtcdError> {
        self.0.check(alarms::put_cost(&req)).await?;
        self.0.member.put(req).await
    }

    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.0.member.delete_range(req).await
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.0.check(alarms::txn_cost(&req)).await?;
        self.0.member.txn(req).await
    }

    async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        self.0.member.compact(req).await
    }
}

/// Clears this member's NOSPACE alarm by itself once compaction and defragmentation
/// brought its backend back under 90 % of the quota (beyond etcd, where an operator must
/// `alarm disarm`), checking every second; says so in the log and in
/// `cairn_server_nospace_alarm_cleared_total`.
pub(crate) fn spawn_nospace_clearer(
    member: Arc<Member>,
    alarms: Arc<crate::alarms::Alarms>,
    bytes: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let mine = alarms
                .list(AlarmType::Nospace as i32)
                .iter()
                .any(|a| a.member_id == member.member_id);
            if !mine {
                continue;
            }
            let Ok(size) = backend_size(&member.backend) else {
                continue;
            };
            if size >= bytes / 10 * 9 {
                continue;
            }
            let clear = AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: member.member_id,
                alarm: AlarmType::Nospace as i32,
            };
            match member.propose(Request::Alarm(clear)).await {
                Ok(_) => {
                    metrics::counter!("cairn_server_nospace_alarm_cleared_total").increment(1);
                    tracing::info!(
                        size,
                        quota = bytes,
                        "the backend is back under its quota: NOSPACE alarm cleared"
                    );
                }
                Err(e) => tracing::debug!(error = %e, "clearing the NOSPACE alarm; will retry"),
            }
        }
    })
}
