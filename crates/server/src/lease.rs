//! Leases on this member: applying LeaseGrant / LeaseRevoke entries to the [`Lessor`] and
//! the key space, the Lease service's server side, and the leader's expiry loop that
//! turns expired leases into revoke proposals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cairn_grpc_gateway::lease::LeaseApi;
use cairn_grpc_gateway::EtcdError;
use cairn_lease_manager::{LeaseError, Lessor, MAX_LEASE_TTL};
use cairn_mvcc_store::{BackendBatch, KvStore, MvccError, WriteOutcome};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    request_op, DeleteRangeRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event};
use cairn_raft_node::Role;
use tonic::transport::Channel;

use crate::apply::Applied;
use crate::client_error::{self, ForwardedCall};
use crate::server::EtcdServer;

/// How often the leader looks for expired leases (etcd checks every 500 ms).
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// etcd's buckets for `etcd_debugging_lease_ttl_total`: 1 s doubling 14 times.
pub fn ttl_buckets() -> Vec<f64> {
    (0..14).map(|i| 2f64.powi(i)).collect()
}

/// A lessor error while applying an entry: the member's own fault stops it (as a store
/// fault does); anything else is the client's answer.
fn lease_error(e: LeaseError) -> Result<EtcdError, MvccError> {
    match e {
        LeaseError::Backend(e) => Err(e),
        LeaseError::Corrupt(what) => Err(MvccError::Corrupt(what)),
        e @ (LeaseError::NotFound
        | LeaseError::Exists
        | LeaseError::TtlTooLarge
        | LeaseError::NotPrimary) => Ok(client_error::lease(&e)),
    }
}

/// Applies a LeaseGrant entry: the lease record joins the applied index's batch.
pub(crate) fn apply_grant(
    store: &KvStore,
    lessor: &Lessor,
    index: u64,
    req: &LeaseGrantRequest,
) -> Result<Applied, MvccError> {
    let mut batch = BackendBatch::new();
    match lessor.grant(req.id, req.ttl, &mut batch) {
        Ok(ttl) => {
            store.record_applied_with(index, batch)?;
            metrics::counter!("etcd_debugging_lease_granted_total").increment(1);
            metrics::histogram!("etcd_debugging_lease_ttl_total").record(ttl as f64);
            Ok(Applied::LeaseGrant(LeaseGrantResponse {
                header: Some(ResponseHeader {
                    revision: store.current_revision(),
                    ..Default::default()
                }),
                id: req.id,
                ttl,
                error: String::new(),
            }))
        }
        Err(e) => {
            let e = lease_error(e)?;
            store.record_applied(index)?;
            Ok(Applied::Failed(e))
        }
    }
}

/// Applies a LeaseRevoke entry: every attached key is deleted in one revision, in the
/// same batch as the lease record's deletion. `Ok(Err(..))` is a client error (nothing
/// changed but the applied index); `Err(..)` is the member's own fault.
pub(crate) fn apply_revoke(
    store: &KvStore,
    lessor: &Lessor,
    index: u64,
    req: &LeaseRevokeRequest,
) -> Result<Result<WriteOutcome<TxnResponse>, EtcdError>, MvccError> {
    let mut batch = BackendBatch::new();
    let keys = match lessor.revoke(req.id, &mut batch) {
        Ok(keys) => keys,
        Err(e) => {
            let e = lease_error(e)?;
            store.record_applied(index)?;
            return Ok(Err(e));
        }
    };
    let deletes = TxnRequest {
        success: keys
            .into_iter()
            .map(|key| RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key,
                        ..Default::default()
                    },
                )),
            })
            .collect(),
        ..Default::default()
    };
    let outcome = store.txn(index, &deletes, batch)?;
    metrics::counter!("etcd_debugging_lease_revoked_total").increment(1);
    Ok(Ok(outcome))
}

/// Keeps the lessor's attached keys in step with one applied revision's events.
pub(crate) fn track_attachments(lessor: &Lessor, events: &[Event]) {
    for event in events {
        if let Some(prev) = &event.prev_kv {
            if prev.lease != 0 {
                lessor.detach(prev.lease, &prev.key);
            }
        }
        if event.r#type == EventType::Put as i32 {
            if let Some(kv) = &event.kv {
                if kv.lease != 0 {
                    lessor.attach(kv.lease, kv.key.clone());
                }
            }
        }
    }
}

/// Lease ids as etcd's request id generator makes them: the member id's low 16 bits, then
/// the start time in milliseconds, then a counter.
struct LeaseIds {
    next: AtomicU64,
}

impl LeaseIds {
    fn new(member_id: u64) -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        LeaseIds {
            next: AtomicU64::new(((member_id & 0xffff) << 48) | ((millis & 0xff_ffff_ffff) << 8)),
        }
    }

    fn next(&self) -> i64 {
        (self.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1) & (i64::MAX as u64)) as i64
    }
}

/// The Lease service's server side.
pub struct LeaseFrontend {
    server: Arc<EtcdServer>,
    lessor: Arc<Lessor>,
    ids: LeaseIds,
    quota: Option<crate::maintenance::Quota>,
}

impl LeaseFrontend {
    /// A Lease client to the current leader (followers forward keep-alives and
    /// time-to-live requests there, as etcd's members do).
    fn leader(&self) -> Result<LeaseClient<Channel>, EtcdError> {
        Ok(LeaseClient::new(self.server.leader_channel()?))
    }

    async fn forward_keep_alive(
        &self,
        req: LeaseKeepAliveRequest,
    ) -> Result<LeaseKeepAliveResponse, EtcdError> {
        let mut client = self.leader()?;
        let mut stream = client
            .lease_keep_alive(futures::stream::iter([req]))
            .await
            .map_err(|s| client_error::forwarded(&s, ForwardedCall::Lease))?
            .into_inner();
        let resp = stream
            .message()
            .await
            .map_err(|s| client_error::forwarded(&s, ForwardedCall::Lease))?
            .ok_or(EtcdError::LeaderChanged)?;
        Ok(LeaseKeepAliveResponse {
            header: self.header(),
            ..resp
        })
    }
}

impl LeaseFrontend {
    /// Serves leases of `lessor` through `server`'s raft node.
    pub fn new(server: Arc<EtcdServer>, lessor: Arc<Lessor>) -> Self {
        let ids = LeaseIds::new(server.member_id());
        LeaseFrontend {
            server,
            lessor,
            ids,
            quota: None,
        }
    }

    /// Grants are refused (and NOSPACE raised) when the backend is over `quota`.
    pub(crate) fn with_quota(mut self, quota: crate::maintenance::Quota) -> Self {
        self.quota = Some(quota);
        self
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.server.header(self.server.store().current_revision()))
    }
}

#[async_trait]
impl LeaseApi for LeaseFrontend {
    async fn lease_grant(
        &self,
        mut req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, EtcdError> {
        if req.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        if let Some(quota) = &self.quota {
            quota.check(crate::alarms::LEASE_OVERHEAD_BYTES).await?;
        }
        if req.id == 0 {
            // Chosen before proposing, so that every member applies the same id.
            req.id = loop {
                let id = self.ids.next();
                if id != 0 && !self.lessor.exists(id) {
                    break id;
                }
            };
        }
        self.server.propose_for(Request::LeaseGrant(req)).await
    }

    async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, EtcdError> {
        self.server.propose_for(Request::LeaseRevoke(req)).await
    }

    async fn lease_keep_alive(
        &self,
        req: LeaseKeepAliveRequest,
    ) -> Result<LeaseKeepAliveResponse, EtcdError> {
        if self.server.raft().status().role != Role::Leader {
            // Only the leader's lessor renews; this member may not even have applied the
            // grant yet, so it must not answer "unknown lease" (TTL 0) itself.
            return self.forward_keep_alive(req).await;
        }
        // As etcd's leader does: renew only once everything committed is applied, so
        // that a lease granted just before is known here.
        let committed = self.server.raft().committed_index();
        let applied = tokio::time::timeout(
            self.server.limits.request_timeout,
            self.server.raft().wait_applied(committed),
        )
        .await;
        if !matches!(applied, Ok(Ok(()))) {
            return Err(EtcdError::Timeout);
        }
        let ttl = match self.lessor.renew(req.id) {
            Ok(ttl) => {
                metrics::counter!("etcd_debugging_lease_renewed_total").increment(1);
                ttl
            }
            // etcd answers an unknown lease with TTL 0 rather than an error.
            Err(LeaseError::NotFound) => 0,
            // A leader whose lessor is not promoted yet (just elected): the client retries.
            Err(e) => return Err(client_error::lease(&e)),
        };
        Ok(LeaseKeepAliveResponse {
            header: self.header(),
            id: req.id,
            ttl,
        })
    }

    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        if !self.lessor.is_primary() && self.server.raft().status().role != Role::Leader {
            // Only the leader's lessor knows the remaining time.
            let mut client = self.leader()?;
            let resp = client
                .lease_time_to_live(req)
                .await
                .map_err(|s| client_error::forwarded(&s, ForwardedCall::Lease))?
                .into_inner();
            return Ok(LeaseTimeToLiveResponse {
                header: self.header(),
                ..resp
            });
        }
        let header = self.header();
        Ok(match self.lessor.time_to_live(req.id, req.keys) {
            Some(ttl) => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: ttl.remaining,
                granted_ttl: ttl.granted,
                keys: ttl.keys,
            },
            None => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                ..Default::default()
            },
        })
    }

    async fn lease_leases(
        &self,
        _req: LeaseLeasesRequest,
    ) -> Result<LeaseLeasesResponse, EtcdError> {
        Ok(LeaseLeasesResponse {
            header: self.header(),
            leases: self
                .lessor
                .leases()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        })
    }
}

/// Follows this member's raft role: the leader's lessor decides expiry (promoted with
/// `extend` of grace, etcd gives an election timeout) and every expired lease becomes a
/// LeaseRevoke proposal.
pub fn spawn_expiry_loop(
    server: Arc<EtcdServer>,
    lessor: Arc<Lessor>,
    extend: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut status = server.raft().subscribe_status();
        let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
            let leading = server.raft().status().role == Role::Leader;
            if leading != lessor.is_primary() {
                if leading {
                    tracing::info!("leading: lease expiry starts, every lease gets its full TTL");
                    lessor.promote(extend);
                } else {
                    lessor.demote();
                }
            }
            if !leading {
                continue;
            }
            for id in lessor.expired() {
                let server = server.clone();
                tokio::spawn(async move {
                    match server
                        .propose(Request::LeaseRevoke(LeaseRevokeRequest { id }))
                        .await
                    {
                        Ok(_) | Err(EtcdError::LeaseNotFound) => {
                            tracing::debug!(lease = id, "expired lease revoked")
                        }
                        Err(e) => {
                            tracing::warn!(lease = id, error = %e, "revoking an expired lease")
                        }
                    }
                });
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_lease_manager::ManualClock;
    use cairn_proto::mvccpb::KeyValue;

    fn kv(key: &str, lease: i64) -> KeyValue {
        KeyValue {
            key: bytes::Bytes::from(key.to_owned()),
            lease,
            ..Default::default()
        }
    }

    fn event(kind: EventType, kv: KeyValue, prev: Option<KeyValue>) -> Event {
        Event {
            r#type: kind as i32,
            kv: Some(kv),
            prev_kv: prev,
        }
    }

    fn keys(lessor: &Lessor, id: i64) -> Vec<bytes::Bytes> {
        lessor.time_to_live(id, true).expect("lease").keys
    }

    #[test]
    fn puts_attach_and_overwrites_and_deletes_detach() {
        let lessor = Lessor::new(2, Arc::new(ManualClock::new()));
        let mut batch = BackendBatch::new();
        lessor.grant(1, 10, &mut batch).unwrap();
        lessor.grant(2, 10, &mut batch).unwrap();
        track_attachments(
            &lessor,
            &[
                event(EventType::Put, kv("a", 1), None),
                event(EventType::Put, kv("b", 1), None),
            ],
        );
        assert_eq!(keys(&lessor, 1), vec!["a", "b"]);
        // "a" moves to lease 2; "b" is overwritten without a lease; then "a" is deleted.
        track_attachments(
            &lessor,
            &[event(EventType::Put, kv("a", 2), Some(kv("a", 1)))],
        );
        track_attachments(
            &lessor,
            &[event(EventType::Put, kv("b", 0), Some(kv("b", 1)))],
        );
        assert!(keys(&lessor, 1).is_empty());
        assert_eq!(keys(&lessor, 2), vec!["a"]);
        track_attachments(
            &lessor,
            &[event(EventType::Delete, kv("a", 0), Some(kv("a", 2)))],
        );
        assert!(keys(&lessor, 2).is_empty());
    }

    #[test]
    fn server_chosen_ids_are_positive_and_distinct() {
        let ids = LeaseIds::new(0x61cc_76e8_3306_f2a4);
        let first = ids.next();
        let second = ids.next();
        assert!(first > 0 && second > 0);
        assert_eq!(second, first + 1);
        assert_eq!(first >> 48, 0xf2a4 & 0x7fff);
    }
}
