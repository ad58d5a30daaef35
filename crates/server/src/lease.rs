//! The Lease service on a member, and the leader's expiry loop that turns expired leases
//! into revoke proposals. Grants and revokes go through raft (see `apply::lease` for how
//! they are applied); keep-alives and time-to-live are answered by the leader's lessor,
//! to which a follower forwards them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_grpc_gateway::api::LeaseApi;
use cairn_grpc_gateway::EtcdError;
use cairn_lease_manager::{LeaseError, Lessor, MAX_LEASE_TTL};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use cairn_raft_node::{IdGenerator, Role};
use parking_lot::Mutex;

use crate::client_error::{self, ForwardedCall};
use crate::member::{ForwardedChannel, Member};
use crate::metrics;
use crate::quota::Quota;

/// How often the leader looks for expired leases (etcd checks every 500 ms).
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A lease id the member chooses: etcd's request id (see [`IdGenerator`]) as a positive
/// `i64`.
fn lease_id(ids: &Mutex<IdGenerator>) -> i64 {
    (ids.lock().next_id() & i64::MAX as u64) as i64
}

/// The Lease service on a member.
pub struct LeaseService {
    member: Arc<Member>,
    lessor: Arc<Lessor>,
    ids: Mutex<IdGenerator>,
    quota: Option<Quota>,
}

impl LeaseService {
    /// A Lease client to the current leader (followers forward keep-alives and
    /// time-to-live requests there, as etcd's members do).
    fn leader(&self) -> Result<LeaseClient<ForwardedChannel>, EtcdError> {
        Ok(LeaseClient::new(self.member.leader_with_token()?))
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
            header: self.member.header_now(),
            ..resp
        })
    }
}

impl LeaseService {
    /// Serves leases of `lessor` through `member`'s raft node.
    pub fn new(member: Arc<Member>, lessor: Arc<Lessor>) -> Self {
        let ids = Mutex::new(IdGenerator::new(member.member_id()));
        LeaseService {
            member,
            lessor,
            ids,
            quota: None,
        }
    }

    /// Grants are refused (and NOSPACE raised) when the backend is over `quota`.
    pub(crate) fn with_quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }
}

#[async_trait]
impl LeaseApi for LeaseService {
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
                let id = lease_id(&self.ids);
                if id != 0 && !self.lessor.exists(id) {
                    break id;
                }
            };
        }
        self.member.propose_for(Request::LeaseGrant(req)).await
    }

    async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, EtcdError> {
        self.member.propose_for(Request::LeaseRevoke(req)).await
    }

    async fn lease_keep_alive(
        &self,
        req: LeaseKeepAliveRequest,
    ) -> Result<LeaseKeepAliveResponse, EtcdError> {
        if self.member.raft().status().role != Role::Leader {
            // Only the leader's lessor renews; this member may not even have applied the
            // grant yet, so it must not answer "unknown lease" (TTL 0) itself.
            return self.forward_keep_alive(req).await;
        }
        // As etcd's leader does: renew only once everything committed is applied, so
        // that a lease granted just before is known here.
        let committed = self.member.raft().committed_index();
        let applied = tokio::time::timeout(
            self.member.limits.request_timeout,
            self.member.raft().wait_applied(committed),
        )
        .await;
        if !matches!(applied, Ok(Ok(()))) {
            return Err(EtcdError::Timeout);
        }
        let ttl = match self.lessor.renew(req.id) {
            Ok(ttl) => {
                metrics::lease_renewed();
                ttl
            }
            // etcd answers an unknown lease with TTL 0 rather than an error.
            Err(LeaseError::NotFound) => 0,
            // A leader whose lessor is not promoted yet (just elected): the client retries.
            Err(e) => return Err(client_error::lease(&e)),
        };
        Ok(LeaseKeepAliveResponse {
            header: self.member.header_now(),
            id: req.id,
            ttl,
        })
    }

    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        if !self.lessor.is_primary() && self.member.raft().status().role != Role::Leader {
            // Only the leader's lessor knows the remaining time.
            let mut client = self.leader()?;
            let resp = client
                .lease_time_to_live(req)
                .await
                .map_err(|s| client_error::forwarded(&s, ForwardedCall::Lease))?
                .into_inner();
            return Ok(LeaseTimeToLiveResponse {
                header: self.member.header_now(),
                ..resp
            });
        }
        let header = self.member.header_now();
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
            header: self.member.header_now(),
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
    member: Arc<Member>,
    lessor: Arc<Lessor>,
    extend: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut status = member.raft().subscribe_status();
        let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
            let leading = member.raft().status().role == Role::Leader;
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
                let member = member.clone();
                tokio::spawn(async move {
                    match member
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

    #[test]
    fn server_chosen_ids_are_positive_and_distinct() {
        let ids = Mutex::new(IdGenerator::with_time(
            0x61cc_76e8_3306_f2a4,
            1_700_000_000_000,
        ));
        let first = lease_id(&ids);
        let second = lease_id(&ids);
        assert!(first > 0 && second > 0);
        assert_eq!(second, first + 1);
        assert_eq!(first >> 48, 0xf2a4 & 0x7fff);
    }
}
