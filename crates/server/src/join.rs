//! Joining an existing cluster (`--initial-cluster-state existing`): the running members
//! tell a new member the cluster id and its own member id (given by `member add`), and
//! the peer service that answers them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::cairnpb::peer_cluster_client::PeerClusterClient;
use cairn_proto::cairnpb::peer_cluster_server::{PeerCluster, PeerClusterServer};
use cairn_proto::cairnpb::{PeerMembersRequest, PeerMembersResponse};
use tonic::{Request, Response, Status};

use cairn_proto::etcdserverpb as pb;

use crate::config::{Config, InitialMember};
use crate::error::ServerError;
use crate::members::Membership;

/// How long a joining member keeps asking the running members.
const JOIN_DEADLINE: Duration = Duration::from_secs(10);

fn same_urls(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

async fn fetch(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<PeerMembersResponse, String> {
    let channel =
        tokio::time::timeout(Duration::from_secs(2), cairn_raft_node::dial_peer(url, tls))
            .await
            .map_err(|_| format!("{url}: no answer within 2 s"))??;
    PeerClusterClient::new(channel)
        .members(PeerMembersRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_string())
}

/// What the running members told a joining member.
pub(crate) struct JoinedCluster {
    pub(crate) cluster_id: u64,
    /// The id `member add` gave this member.
    pub(crate) member_id: u64,
    /// The cluster's members as they know them.
    pub(crate) members: Vec<pb::Member>,
}

/// Asks the members of `--initial-cluster` (other than this one) who this member is.
pub(crate) async fn existing_cluster(
    cfg: &Config,
    members: &[InitialMember],
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<JoinedCluster, ServerError> {
    let mine = cfg.advertise_peer_urls();
    let peers: Vec<String> = members
        .iter()
        .filter(|m| m.name != cfg.name)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    let deadline = Instant::now() + JOIN_DEADLINE;
    let mut last_error = String::from("no other member in --initial-cluster");
    while Instant::now() < deadline {
        for url in &peers {
            match fetch(url, tls).await {
                Ok(resp) => {
                    let Some(me) = resp
                        .members
                        .iter()
                        .find(|m| same_urls(&m.peer_ur_ls, &mine))
                    else {
                        return Err(ServerError::Unsupported(format!(
                            "error validating peerURLs {}: this member's peer URLs are not in the cluster's member list; add it first with `etcdctl member add {} --peer-urls={}`",
                            mine.join(","),
                            cfg.name,
                            mine.join(",")
                        )));
                    };
                    tracing::info!(
                        cluster_id = %format!("{:x}", resp.cluster_id),
                        member_id = %format!("{:x}", me.id),
                        from = %url,
                        "joining an existing cluster"
                    );
                    return Ok(JoinedCluster {
                        cluster_id: resp.cluster_id,
                        member_id: me.id,
                        members: resp.members.clone(),
                    });
                }
                Err(e) => last_error = format!("{url}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(ServerError::Unsupported(format!(
        "cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs ({last_error})"
    )))
}

/// Answers joining members with the cluster id and the member list.
pub struct ClusterInfo {
    cluster_id: u64,
    members: Arc<Membership>,
}

impl ClusterInfo {
    /// The service for cluster `cluster_id` with `members`.
    pub fn server(cluster_id: u64, members: Arc<Membership>) -> PeerClusterServer<Self> {
        PeerClusterServer::new(ClusterInfo {
            cluster_id,
            members,
        })
    }
}

#[tonic::async_trait]
impl PeerCluster for ClusterInfo {
    async fn members(
        &self,
        _request: Request<PeerMembersRequest>,
    ) -> Result<Response<PeerMembersResponse>, Status> {
        Ok(Response::new(PeerMembersResponse {
            cluster_id: self.cluster_id,
            members: self.members.list(),
        }))
    }
}
