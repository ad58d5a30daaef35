//! etcd's Cluster service on a member: the member list and runtime membership changes,
//! with etcd's rules (strict reconfiguration checks, one learner at most, promotion only
//! of a learner in sync with the leader).

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cairn_grpc_gateway::api::ClusterApi;
use cairn_grpc_gateway::EtcdError;
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use cairn_raft_node::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use cairn_raft_node::Role;

use crate::apply::Applied;
use crate::client_error::{self, ForwardedCall};
use crate::members::change_context;
use crate::server::EtcdServer;

/// etcd's limit on learners in a cluster.
const MAX_LEARNERS: usize = 1;
/// A learner may be promoted once its log matches at least this share of the leader's.
const LEARNER_READY_PERCENT: f64 = 0.9;

fn valid_peer_urls(urls: &[String]) -> bool {
    !urls.is_empty()
        && urls.iter().all(|u| {
            let Some(rest) = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"))
            else {
                return false;
            };
            let host_port = rest.trim_end_matches('/');
            matches!(host_port.rsplit_once(':'), Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok())
        })
}

/// A majority of `voters`.
fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

impl EtcdServer {
    fn members_response(&self, applied: Applied) -> Result<Vec<Member>, EtcdError> {
        match applied {
            Applied::Members(list) => Ok(list),
            Applied::Failed(e) => Err(e),
            other => Err(EtcdError::Internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    async fn propose_change(
        &self,
        kind: ConfChangeType,
        member: &Member,
    ) -> Result<Vec<Member>, EtcdError> {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(kind);
        single.node_id = member.id;
        let mut cc = ConfChangeV2::default();
        cc.mut_changes().push(single);
        cc.context = change_context(member).into();
        let has_leader = self.raft.status().leader_id != 0;
        if !has_leader {
            return Err(EtcdError::NoLeader);
        }
        match tokio::time::timeout(
            self.limits.request_timeout,
            self.raft.propose_conf_change(cc),
        )
        .await
        {
            Ok(Ok(applied)) => self.members_response(applied),
            Ok(Err(e)) => Err(client_error::raft(&e, has_leader)),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// Voters that answered the leader recently enough to count as started.
    async fn started_voters(&self) -> usize {
        let st = self.raft.status();
        if st.role != Role::Leader {
            // Only the leader knows; followers trust the voter list.
            return st.voters.len();
        }
        let progress = self.raft.progress().await.unwrap_or_default();
        let leader_match = progress.get(&self.member_id).copied().unwrap_or(0);
        st.voters
            .iter()
            .filter(|id| {
                **id == self.member_id
                    || progress
                        .get(id)
                        .is_some_and(|m| *m > 0 && leader_match.saturating_sub(*m) < 10_000)
            })
            .count()
    }
}

#[async_trait]
impl ClusterApi for EtcdServer {
    async fn member_list(&self, req: MemberListRequest) -> Result<MemberListResponse, EtcdError> {
        if req.linearizable {
            self.linearizable_barrier().await?;
        }
        Ok(MemberListResponse {
            header: Some(self.header(self.store.current_revision())),
            members: self.members.list(),
        })
    }

    async fn member_add(&self, req: MemberAddRequest) -> Result<MemberAddResponse, EtcdError> {
        if !valid_peer_urls(&req.peer_ur_ls) {
            return Err(EtcdError::MemberBadUrls);
        }
        let existing = self.members.list();
        if existing
            .iter()
            .any(|m| m.peer_ur_ls.iter().any(|u| req.peer_ur_ls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExist);
        }
        if req.is_learner {
            if existing.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
                return Err(EtcdError::TooManyLearners);
            }
        } else {
            // Strict reconfiguration check: the new voter set must have a quorum of
            // started members.
            let voters = existing.iter().filter(|m| !m.is_learner).count();
            let started = self.started_voters().await;
            if started < quorum(voters + 1) {
                return Err(EtcdError::MemberNotEnoughStarted);
            }
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = crate::ids::member_id(&req.peer_ur_ls, &nanos.to_string());
        if self.members.get(id).is_some() {
            return Err(EtcdError::MemberExist);
        }
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: req.peer_ur_ls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: req.is_learner,
        };
        let kind = if req.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let members = self.propose_change(kind, &member).await?;
        tracing::info!(member = %format!("{id:x}"), peer_urls = ?member.peer_ur_ls, learner = member.is_learner, "member added");
        Ok(MemberAddResponse {
            header: Some(self.header(self.store.current_revision())),
            member: Some(member),
            members,
        })
    }

    async fn member_remove(
        &self,
        req: MemberRemoveRequest,
    ) -> Result<MemberRemoveResponse, EtcdError> {
        let member = self.members.get(req.id).ok_or(EtcdError::MemberNotFound)?;
        if !member.is_learner {
            let voters = self.members.list().iter().filter(|m| !m.is_learner).count();
            let started = self.started_voters().await;
            let remaining_started = if self.raft.status().voters.contains(&req.id) {
                started.saturating_sub(1)
            } else {
                started
            };
            if voters <= 1 || remaining_started < quorum(voters - 1) {
                return Err(EtcdError::MemberNotEnoughStarted);
            }
        }
        let members = self
            .propose_change(ConfChangeType::RemoveNode, &member)
            .await?;
        tracing::info!(member = %format!("{:x}", req.id), "member removed");
        Ok(MemberRemoveResponse {
            header: Some(self.header(self.store.current_revision())),
            members,
        })
    }

    async fn member_update(
        &self,
        req: MemberUpdateRequest,
    ) -> Result<MemberUpdateResponse, EtcdError> {
        if !valid_peer_urls(&req.peer_ur_ls) {
            return Err(EtcdError::MemberBadUrls);
        }
        if self.members.get(req.id).is_none() {
            return Err(EtcdError::MemberNotFound);
        }
        if self
            .members
            .list()
            .iter()
            .any(|m| m.id != req.id && m.peer_ur_ls.iter().any(|u| req.peer_ur_ls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExist);
        }
        let update = Member {
            id: req.id,
            peer_ur_ls: req.peer_ur_ls,
            ..Default::default()
        };
        let applied = self.propose(Request::MemberUpdate(update)).await?;
        let members = self.members_response(applied)?;
        Ok(MemberUpdateResponse {
            header: Some(self.header(self.store.current_revision())),
            members,
        })
    }

    async fn member_promote(
        &self,
        req: MemberPromoteRequest,
    ) -> Result<MemberPromoteResponse, EtcdError> {
        if self.raft.status().role != Role::Leader {
            // Only the leader knows how far the learner is: ask it.
            let mut client = ClusterClient::new(self.leader_channel()?);
            return client
                .member_promote(req)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| client_error::forwarded(&s, ForwardedCall::Membership));
        }
        let member = self.members.get(req.id).ok_or(EtcdError::MemberNotFound)?;
        if !member.is_learner {
            return Err(EtcdError::MemberNotLearner);
        }
        let progress = self.raft.progress().await.unwrap_or_default();
        let leader_match = progress.get(&self.member_id).copied().unwrap_or(0);
        let learner_match = progress.get(&req.id).copied().unwrap_or(0);
        if (learner_match as f64) < (leader_match as f64) * LEARNER_READY_PERCENT {
            return Err(EtcdError::LearnerNotReady);
        }
        let members = self
            .propose_change(ConfChangeType::AddNode, &member)
            .await?;
        tracing::info!(member = %format!("{:x}", req.id), "learner promoted");
        Ok(MemberPromoteResponse {
            header: Some(self.header(self.store.current_revision())),
            members,
        })
    }
}
