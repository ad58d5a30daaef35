//! etcd's Cluster service on a member: the member list and runtime membership changes,
//! checked with etcd's rules ([`crate::reconfig`]) and proposed through raft.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cairn_grpc_gateway::api::ClusterApi;
use cairn_grpc_gateway::EtcdError;
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::{
    self as pb, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use cairn_raft_node::eraftpb::ConfChangeType;
use cairn_raft_node::Role;

use crate::apply::Applied;
use crate::client_error::{self, ForwardedCall};
use crate::member::Member;
use crate::members;
use crate::reconfig;

impl Member {
    fn members_response(&self, applied: Applied) -> Result<Vec<pb::Member>, EtcdError> {
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
        member: &pb::Member,
    ) -> Result<Vec<pb::Member>, EtcdError> {
        let cc = members::change(kind, member);
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

    /// How far each member's log matches the leader's (empty if the raft node is gone).
    async fn replication(&self) -> HashMap<u64, u64> {
        self.raft.progress().await.unwrap_or_default()
    }

    /// The voters that count as started. Only the leader knows how far the others are;
    /// a follower trusts the voter list.
    async fn started_voters(&self) -> Vec<u64> {
        let st = self.raft.status();
        if st.role != Role::Leader {
            return st.voters;
        }
        reconfig::started_voters(&st.voters, self.member_id, &self.replication().await)
    }
}

#[async_trait]
impl ClusterApi for Member {
    async fn member_list(&self, req: MemberListRequest) -> Result<MemberListResponse, EtcdError> {
        if req.linearizable {
            self.linearizable_barrier().await?;
        }
        Ok(MemberListResponse {
            header: self.header_now(),
            members: self.members.list(),
        })
    }

    async fn member_add(&self, req: MemberAddRequest) -> Result<MemberAddResponse, EtcdError> {
        if !reconfig::valid_peer_urls(&req.peer_ur_ls) {
            return Err(EtcdError::MemberBadUrls);
        }
        let existing = self.members.list();
        reconfig::check_peer_urls_free(&existing, &req.peer_ur_ls, None)?;
        if req.is_learner {
            reconfig::check_learner_add(&existing, self.limits.max_learners)?;
        } else {
            reconfig::check_voter_add(&existing, &self.started_voters().await)?;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = crate::ids::member_id(&req.peer_ur_ls, &nanos.to_string());
        if self.members.get(id).is_some() {
            return Err(EtcdError::MemberExist);
        }
        let member = pb::Member {
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
            header: self.header_now(),
            member: Some(member),
            members,
        })
    }

    async fn member_remove(
        &self,
        req: MemberRemoveRequest,
    ) -> Result<MemberRemoveResponse, EtcdError> {
        let member =
            reconfig::check_remove(&self.members.list(), req.id, &self.started_voters().await)?;
        let members = self
            .propose_change(ConfChangeType::RemoveNode, &member)
            .await?;
        tracing::info!(member = %format!("{:x}", req.id), "member removed");
        Ok(MemberRemoveResponse {
            header: self.header_now(),
            members,
        })
    }

    async fn member_update(
        &self,
        req: MemberUpdateRequest,
    ) -> Result<MemberUpdateResponse, EtcdError> {
        if !reconfig::valid_peer_urls(&req.peer_ur_ls) {
            return Err(EtcdError::MemberBadUrls);
        }
        if self.members.get(req.id).is_none() {
            return Err(EtcdError::MemberNotFound);
        }
        reconfig::check_peer_urls_free(&self.members.list(), &req.peer_ur_ls, Some(req.id))?;
        let update = pb::Member {
            id: req.id,
            peer_ur_ls: req.peer_ur_ls,
            ..Default::default()
        };
        let applied = self.propose(Request::MemberUpdate(update)).await?;
        let members = self.members_response(applied)?;
        Ok(MemberUpdateResponse {
            header: self.header_now(),
            members,
        })
    }

    async fn member_promote(
        &self,
        req: MemberPromoteRequest,
    ) -> Result<MemberPromoteResponse, EtcdError> {
        if self.raft.status().role != Role::Leader {
            // Only the leader knows how far the learner is: ask it.
            let mut client = ClusterClient::new(self.leader_with_token()?);
            return client
                .member_promote(req)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| client_error::forwarded(&s, ForwardedCall::Membership));
        }
        let member = reconfig::check_promote(
            &self.members.list(),
            req.id,
            self.member_id,
            &self.replication().await,
        )?;
        let members = self
            .propose_change(ConfChangeType::AddNode, &member)
            .await?;
        tracing::info!(member = %format!("{:x}", req.id), "learner promoted");
        Ok(MemberPromoteResponse {
            header: self.header_now(),
            members,
        })
    }
}
