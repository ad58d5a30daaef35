//! The other surfaces of the client port: Prometheus metrics with etcd's names, the
//! standard gRPC health service, `/version`, and RPCs not served yet answering
//! `Unimplemented` (never a panic or a hang).

use cairn_tests::tonic;
use cairn_tests::{http_get, Cluster, Server, ServerOpts};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
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
    // Counted as etcd counts them: one key, one put (and the puts' bytes), open files.
    for (name, at_least) in [
        ("etcd_debugging_mvcc_keys_total", 1.0),
        ("etcd_mvcc_put_total", 1.0),
        ("etcd_debugging_mvcc_put_total", 1.0),
        ("etcd_network_client_grpc_received_bytes_total", 1.0),
        ("etcd_network_client_grpc_sent_bytes_total", 1.0),
        ("os_fd_used", 1.0),
        ("os_fd_limit", 1.0),
    ] {
        let value = find(&metrics.body, name, &[]);
        assert!(
            value.is_some_and(|v| v >= at_least),
            "{name} is {value:?} in:\n{}",
            metrics.body
        );
    }
    assert_eq!(
        find(&metrics.body, "etcd_debugging_mvcc_keys_total", &[]),
        Some(1.0)
    );
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

/// A sample line of the exposition format: the name, the labels (in any order: etcd
/// sorts them, cairn keeps their order) and the value.
fn sample(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, labels)) = series.split_once('{') else {
        return Some((series, BTreeMap::new(), value));
    };
    let labels = labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect();
    Some((name, labels, value))
}

fn find(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    body.lines()
        .filter_map(sample)
        .find(|(n, l, _)| *n == name && *l == wanted)
        .map(|(_, _, v)| v)
}

#[tokio::test]
async fn grpc_counters_of_every_method_exist_from_the_start() {
    // As etcd's go-grpc-prometheus: every method's started counter, and its handled
    // counter for every code, are there at zero before any call.
    let server = Server::start(ServerOpts::new());
    let body = http_get(&server.client_addr(), "/metrics")
        .expect("GET /metrics")
        .body;
    let keep_alive = [
        ("grpc_type", "bidi_stream"),
        ("grpc_service", "etcdserverpb.Lease"),
        ("grpc_method", "LeaseKeepAlive"),
    ];
    assert_eq!(
        find(&body, "grpc_server_started_total", &keep_alive),
        Some(0.0),
        "{body}"
    );
    let role_add_denied = [
        ("grpc_type", "unary"),
        ("grpc_service", "etcdserverpb.Auth"),
        ("grpc_method", "RoleAdd"),
        ("grpc_code", "PermissionDenied"),
    ];
    assert_eq!(
        find(&body, "grpc_server_handled_total", &role_add_denied),
        Some(0.0),
        "{body}"
    );
}

#[tokio::test]
async fn peer_traffic_is_counted_by_peer() {
    let cluster = Cluster::start(3);
    let mut client = cluster.members[0].client().await;
    client.put("peer-traffic", "1", None).await.unwrap();
    let mut views = Vec::new();
    for i in 0..3 {
        views.push(cluster.view(i).await.expect("member status"));
    }
    let leader = views[0].leader;
    // Raft traffic runs between the leader and each follower: every member has sent
    // to and received from the members it talks to (heartbeats at least).
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, member) in cluster.members.iter().enumerate() {
        let partners: Vec<String> = views
            .iter()
            .filter(|v| v.id != views[i].id && (views[i].id == leader || v.id == leader))
            .map(|v| format!("{:x}", v.id))
            .collect();
        assert_eq!(partners.len(), if views[i].id == leader { 2 } else { 1 });
        loop {
            let body = http_get(&member.client_addr(), "/metrics")
                .expect("GET /metrics")
                .body;
            let counted = partners.iter().all(|peer| {
                find(&body, "etcd_network_peer_sent_bytes_total", &[("To", peer)])
                    .is_some_and(|v| v > 0.0)
                    && find(
                        &body,
                        "etcd_network_peer_received_bytes_total",
                        &[("From", peer)],
                    )
                    .is_some_and(|v| v > 0.0)
            });
            if counted {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {i}: no bytes counted to and from {partners:?} in:\n{body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
