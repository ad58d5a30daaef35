//! `/v2/members`, `/v2/members/leader`, `/v2/machines` and `/v2/stats/{self,leader}`
//! from the Cluster and Maintenance services.

use serde::Serialize;

use cairn_proto::etcdserverpb as pb;

use super::error::V2Error;
use crate::api::{ClusterApi, MaintenanceApi};

/// A member as `/v2/members` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct V2Member {
    /// The ID in hex.
    pub id: String,
    /// The name.
    pub name: String,
    /// The peer URLs.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// The client URLs.
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

impl From<&pb::Member> for V2Member {
    fn from(m: &pb::Member) -> V2Member {
        V2Member {
            id: format!("{:x}", m.id),
            name: m.name.clone(),
            peer_urls: m.peer_ur_ls.clone(),
            client_urls: m.client_ur_ls.clone(),
        }
    }
}

/// The members (learners included), in the Cluster service's order.
pub async fn members(cluster: &dyn ClusterApi) -> Result<Vec<V2Member>, V2Error> {
    let resp = cluster
        .member_list(pb::MemberListRequest {
            linearizable: false,
        })
        .await?;
    Ok(resp.members.iter().map(V2Member::from).collect())
}

/// This member's ID, the leader's ID and the raft position.
pub async fn status(maintenance: &dyn MaintenanceApi) -> Result<pb::StatusResponse, V2Error> {
    Ok(maintenance.status(pb::StatusRequest {}).await?)
}

/// `/v2/members`' body.
pub fn members_json(members: &[V2Member]) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        members: &'a [V2Member],
    }
    serde_json::to_string(&Body { members }).unwrap_or_default()
}

/// `/v2/stats/self`'s body.
pub fn self_stats_json(
    name: &str,
    status: &pb::StatusResponse,
    start_time: &str,
    uptime_secs: f64,
) -> String {
    let id = status.header.as_ref().map_or(0, |h| h.member_id);
    let state = if status.leader == id && id != 0 {
        "StateLeader"
    } else {
        "StateFollower"
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct LeaderInfo {
        leader: String,
        uptime: String,
        start_time: String,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        name: &'a str,
        id: String,
        state: &'a str,
        start_time: &'a str,
        leader_info: LeaderInfo,
        recv_append_request_cnt: u64,
        send_append_request_cnt: u64,
    }
    serde_json::to_string(&Body {
        name,
        id: format!("{id:x}"),
        state,
        start_time,
        leader_info: LeaderInfo {
            leader: format!("{:x}", status.leader),
            uptime: format!("{uptime_secs:.9}s"),
            start_time: start_time.to_string(),
        },
        recv_append_request_cnt: 0,
        send_append_request_cnt: 0,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_written_as_etcd_writes_them() {
        let m = pb::Member {
            id: 0x2e1259d415f2a040,
            name: "default".into(),
            peer_ur_ls: vec!["http://127.0.0.1:23800".into()],
            client_ur_ls: vec!["http://127.0.0.1:23790".into()],
            is_learner: false,
        };
        assert_eq!(
            members_json(&[V2Member::from(&m)]),
            r#"{"members":[{"id":"2e1259d415f2a040","name":"default","peerURLs":["http://127.0.0.1:23800"],"clientURLs":["http://127.0.0.1:23790"]}]}"#
        );
    }
}
