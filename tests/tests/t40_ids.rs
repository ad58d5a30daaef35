//! Member and cluster IDs are derived from the peer URLs and the cluster token
//! exactly as etcd derives them, and survive restarts.

use cairn_tests::{cluster_id, member_id, Server, ServerOpts};

async fn header_ids(server: &Server) -> (u64, u64) {
    let mut client = server.client().await;
    let resp = client.get("any", None).await.expect("range");
    let header = resp.header().expect("header");
    (header.cluster_id(), header.member_id())
}

/// etcd's documented defaults: `--name default`,
/// `--initial-cluster default=http://localhost:2380`, token `etcd-cluster`.
/// The server listens on a free peer port but advertises the default URL.
#[tokio::test]
async fn default_configuration_ids() {
    let server = Server::start(
        ServerOpts::new()
            .name("default")
            .advertise_peer_url("http://localhost:2380")
            .initial_cluster_token("etcd-cluster"),
    );
    let (cluster, member) = header_ids(&server).await;
    assert_eq!(format!("{member:x}"), "8e9e05c52164694d");
    assert_eq!(format!("{cluster:x}"), "cdf818194e3a8c32");

    assert_eq!(
        server.etcdctl(&["member", "list"]).ok(),
        format!(
            "8e9e05c52164694d, started, default, http://localhost:2380, {}, false\n",
            server.client_url()
        )
    );
}

#[tokio::test]
async fn ids_follow_peer_url_and_token_and_survive_restart() {
    let token = "cairn-test-token";
    let mut server = Server::start(ServerOpts::new().name("m1").initial_cluster_token(token));
    let member = member_id(&[&server.peer_url()], token);
    let cluster = cluster_id(&[member]);
    assert_eq!(header_ids(&server).await, (cluster, member));

    let doc: serde_json::Value =
        serde_json::from_str(server.etcdctl(&["member", "list", "-w", "json"]).ok())
            .expect("member list JSON");
    assert_eq!(doc["header"]["cluster_id"].as_u64(), Some(cluster), "{doc}");
    assert_eq!(doc["members"][0]["ID"].as_u64(), Some(member), "{doc}");
    assert_eq!(doc["members"][0]["name"], "m1", "{doc}");
    assert_eq!(
        doc["members"][0]["peerURLs"],
        serde_json::json!([server.peer_url()]),
        "{doc}"
    );
    assert_eq!(
        doc["members"][0]["clientURLs"],
        serde_json::json!([server.client_url()]),
        "{doc}"
    );

    server.restart();
    assert_eq!(header_ids(&server).await, (cluster, member));
    server.kill9();
    server.restart();
    assert_eq!(header_ids(&server).await, (cluster, member));
}
