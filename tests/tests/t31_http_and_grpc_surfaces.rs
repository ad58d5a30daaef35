//! The other surfaces of the client port: Prometheus metrics with etcd's names, the
//! standard gRPC health service, `/version`, and RPCs not served yet answering
//! `Unimplemented` (never a panic or a hang).

use cairn_tests::tonic;
use cairn_tests::{http_get, Server, ServerOpts};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn metrics_use_etcds_names() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    client.put("m", "1", None).await.unwrap();
    let metrics = http_get(&server.client_addr(), "/metrics").expect("GET /metrics");
    assert_eq!(metrics.status, 200);
    let version = format!(
        "etcd_server_version{{server_version=\"{}\"}} 1",
        cairn_tests::expected_version()
    );
    let id = format!(
        "etcd_server_id{{server_id=\"{:x}\"}} 1",
        client.status().await.unwrap().header().unwrap().member_id()
    );
    let cluster_version = format!(
        "etcd_cluster_version{{cluster_version=\"{}\"}} 1",
        cairn_tests::expected_version().rsplit_once('.').unwrap().0
    );
    for line in [
        "etcd_server_has_leader 1",
        "etcd_server_is_leader 1",
        "etcd_debugging_mvcc_current_revision 2",
        "etcd_debugging_mvcc_compact_revision -1",
        &version,
        &id,
        &cluster_version,
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            metrics.body
        );
    }
    for name in [
        "etcd_server_proposals_committed_total",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_mvcc_db_total_size_in_bytes",
        "grpc_server_handled_total",
    ] {
        assert!(
            metrics.body.lines().any(|l| l.starts_with(name)),
            "missing {name} in:\n{}",
            metrics.body
        );
    }
}

#[tokio::test]
async fn grpc_health_service_reports_serving() {
    let server = Server::start(ServerOpts::new());
    let channel = tonic::transport::Channel::from_shared(server.client_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let resp = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn version_endpoint() {
    let server = Server::start(ServerOpts::new());
    let v = http_get(&server.client_addr(), "/version").expect("GET /version");
    assert_eq!(v.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&v.body).unwrap();
    let expected = cairn_tests::expected_version();
    assert_eq!(doc["etcdserver"], expected, "{}", v.body);
}
