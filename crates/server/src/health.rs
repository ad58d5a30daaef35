//! What the HTTP health endpoints probe on a member: its alarms, its leader, whether it
//! is a learner, and etcd's health read.

use std::sync::Arc;

use async_trait::async_trait;
use cairn_grpc_gateway::api::HealthApi;
use cairn_proto::etcdserverpb::{AlarmType, RangeRequest};

use crate::alarms::Alarms;
use crate::member::Member;

/// A member as `/health`, `/livez` and `/readyz` see it.
pub(crate) struct MemberHealth {
    member: Arc<Member>,
    alarms: Arc<Alarms>,
}

impl MemberHealth {
    pub(crate) fn new(member: Arc<Member>, alarms: Arc<Alarms>) -> Self {
        MemberHealth { member, alarms }
    }
}

#[async_trait]
impl HealthApi for MemberHealth {
    fn alarms(&self) -> Vec<String> {
        self.alarms
            .list(AlarmType::None as i32)
            .iter()
            .map(|a| {
                AlarmType::try_from(a.alarm)
                    .map_or("UNKNOWN", |t| t.as_str_name())
                    .to_string()
            })
            .collect()
    }

    fn has_leader(&self) -> bool {
        self.member.raft.status().leader_id != 0
    }

    fn is_learner(&self) -> bool {
        let st = self.member.raft.status();
        st.learners.contains(&self.member.member_id)
    }

    async fn read(&self, serializable: bool) -> Result<(), String> {
        if self.member.raft.status().stopped {
            return Err("etcdserver: server stopped".into());
        }
        if !serializable {
            self.member
                .linearizable_barrier()
                .await
                .map_err(|e| e.to_string())?;
        }
        // etcd's probe: one key, keys only, read locally.
        let probe = RangeRequest {
            key: vec![0].into(),
            limit: 1,
            keys_only: true,
            ..Default::default()
        };
        self.member
            .store
            .range(&probe)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
