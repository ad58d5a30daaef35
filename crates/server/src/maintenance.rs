//! etcd's Maintenance service on a member: status, alarms, hashes, defragment, leader
//! moves and snapshots.

use async_trait::async_trait;
use cairn_grpc_gateway::api::{MaintenanceApi, SnapshotChunks};
use cairn_grpc_gateway::EtcdError;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    StatusRequest, StatusResponse,
};

use crate::server::{EtcdServer, ETCD_VERSION};

#[async_trait]
impl MaintenanceApi for EtcdServer {
    async fn status(&self, _req: StatusRequest) -> Result<StatusResponse, EtcdError> {
        let st = self.raft.status();
        Ok(StatusResponse {
            header: Some(self.header(self.store.current_revision())),
            version: ETCD_VERSION.to_string(),
            db_size: self.backend.size_bytes() as i64,
            leader: st.leader_id,
            raft_index: st.commit_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors: Vec::new(),
            db_size_in_use: self.backend.size_in_use_bytes() as i64,
            is_learner: st.learners.contains(&self.member_id),
        })
    }

    async fn alarm(&self, _req: AlarmRequest) -> Result<AlarmResponse, EtcdError> {
        Err(EtcdError::Unimplemented(
            "etcdserverpb.Maintenance/Alarm".into(),
        ))
    }

    async fn defragment(&self, _req: DefragmentRequest) -> Result<DefragmentResponse, EtcdError> {
        Err(EtcdError::Unimplemented(
            "etcdserverpb.Maintenance/Defragment".into(),
        ))
    }

    async fn hash(&self, _req: HashRequest) -> Result<HashResponse, EtcdError> {
        Err(EtcdError::Unimplemented(
            "etcdserverpb.Maintenance/Hash".into(),
        ))
    }

    async fn hash_kv(&self, _req: HashKvRequest) -> Result<HashKvResponse, EtcdError> {
        Err(EtcdError::Unimplemented(
            "etcdserverpb.Maintenance/HashKV".into(),
        ))
    }

    async fn move_leader(&self, _req: MoveLeaderRequest) -> Result<MoveLeaderResponse, EtcdError> {
        Err(EtcdError::Unimplemented(
            "etcdserverpb.Maintenance/MoveLeader".into(),
        ))
    }

    async fn snapshot(&self) -> Result<SnapshotChunks, EtcdError> {
        Err(EtcdError::Unimplemented(
            "etcdserverpb.Maintenance/Snapshot".into(),
        ))
    }
}
