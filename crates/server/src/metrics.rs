//! The Prometheus exporter set up with etcd's histogram buckets, and the lease metrics
//! the server records when it applies lease requests (named and described by
//! `cairn-lease-manager`). [`describe`] gives every crate's metrics their HELP lines;
//! [`crate::run`] calls it at start.

use cairn_lease_manager::metrics::{GRANTED_TOTAL, RENEWED_TOTAL, REVOKED_TOTAL, TTL_TOTAL};
use cairn_raft_node::metrics::WAL_FSYNC_DURATION_SECONDS;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// etcd's version gauge: 1 with the reported etcd version as its label.
const SERVER_VERSION: &str = "etcd_server_version";
/// Counter: compactions the automatic compaction asked for (etcd's debugging metric).
pub(crate) const AUTO_COMPACTIONS_TOTAL: &str = "etcd_debugging_mvcc_db_compaction_total";
/// cairn's own version: 1 with the cairn release as its label.
const CAIRN_BUILD_INFO: &str = "cairn_build_info";
/// Gauge: 1, labelled with the cluster version.
pub const CLUSTER_VERSION: &str = "etcd_cluster_version";
/// Gauge: 1, labelled with this member's id in hex.
pub const SERVER_ID: &str = "etcd_server_id";
/// Gauge: the backend quota (`--quota-backend-bytes`, or its default).
pub const QUOTA_BACKEND_BYTES: &str = "etcd_server_quota_backend_bytes";
pub use cairn_mvcc_store::metrics::BACKEND_COMMIT_DURATION_SECONDS;

/// Gauge: file descriptors this process has open (etcd's `os_fd_used`).
pub const OS_FD_USED: &str = "os_fd_used";
/// Gauge: the limit of open file descriptors (etcd's `os_fd_limit`).
pub const OS_FD_LIMIT: &str = "os_fd_limit";

/// Sets [`OS_FD_USED`] and [`OS_FD_LIMIT`] from `/proc/self` (nothing where there is none).
pub fn record_fds() {
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!(OS_FD_USED).set(entries.count() as f64);
    }
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<f64>().ok())
        });
    if let Some(limit) = limit {
        metrics::gauge!(OS_FD_LIMIT).set(limit);
    }
}

/// Records the etcd version cairn reports and cairn's own, and the cluster version
/// (major.minor, as etcd's `etcd_cluster_version`).
pub fn record_versions(etcd: &'static str, cairn: &'static str) {
    metrics::gauge!(SERVER_VERSION, "server_version" => etcd).set(1.0);
    metrics::gauge!(CAIRN_BUILD_INFO, "version" => cairn).set(1.0);
    let cluster: String = etcd.split('.').take(2).collect::<Vec<_>>().join(".");
    metrics::gauge!(CLUSTER_VERSION, "cluster_version" => cluster).set(1.0);
}

/// Records this member's id (etcd's `etcd_server_id{server_id="<hex>"} 1`).
pub fn record_member_id(id: u64) {
    metrics::gauge!(SERVER_ID, "server_id" => format!("{id:x}")).set(1.0);
}

/// Describes the metrics of every crate the server records through.
pub fn describe() {
    metrics::describe_gauge!(OS_FD_USED, "The number of used file descriptors.");
    metrics::describe_gauge!(OS_FD_LIMIT, "The file descriptor limit.");
    record_fds();
    metrics::describe_gauge!(
        SERVER_VERSION,
        "Which version is running. 1 for 'server_version' label with current version."
    );
    metrics::describe_counter!(AUTO_COMPACTIONS_TOTAL, "Total number of db compaction.");
    metrics::describe_gauge!(
        CAIRN_BUILD_INFO,
        "Which cairn release is running. 1 for 'version' label with current version."
    );
    metrics::describe_gauge!(
        CLUSTER_VERSION,
        "Which version is running. 1 for 'cluster_version' label with current cluster version"
    );
    metrics::describe_gauge!(
        SERVER_ID,
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."
    );
    metrics::describe_gauge!(
        QUOTA_BACKEND_BYTES,
        "Current backend storage quota size in bytes."
    );
    metrics::describe_histogram!(
        BACKEND_COMMIT_DURATION_SECONDS,
        "The latency distributions of commit called by backend."
    );
    // As etcd registers every family at start: rate() and absent() work from the first
    // scrape, before anything happened.
    for counter in [
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_applied_total",
        "etcd_server_proposals_failed_total",
        "etcd_server_leader_changes_seen_total",
        "etcd_debugging_lease_granted_total",
        "etcd_debugging_lease_renewed_total",
        "etcd_debugging_lease_revoked_total",
        "etcd_debugging_mvcc_events_total",
        "etcd_debugging_mvcc_slow_watcher_total",
        "etcd_debugging_mvcc_db_compaction_keys_total",
        "cairn_server_proposals_expired_total",
        "cairn_server_proposals_rejected_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    for gauge in [
        "etcd_server_has_leader",
        "etcd_server_is_leader",
        "etcd_server_proposals_pending",
        "etcd_debugging_mvcc_watcher_total",
        "etcd_debugging_mvcc_watch_stream_total",
        "etcd_debugging_mvcc_pending_events_total",
    ] {
        metrics::gauge!(gauge).increment(0.0);
    }
    cairn_grpc_gateway::metrics::describe();
    cairn_mvcc_store::metrics::describe();
    cairn_lease_manager::metrics::describe();
    cairn_watch_server::metrics::describe();
    cairn_raft_node::metrics::describe();
}

/// etcd's buckets for disk latency histograms: 1 ms doubling to about 8 s.
fn disk_buckets() -> Vec<f64> {
    (0..14).map(|i| 0.001 * 2f64.powi(i)).collect()
}

/// etcd's buckets for lease TTLs: 1 s doubling 14 times.
fn lease_ttl_buckets() -> Vec<f64> {
    (0..14).map(|i| 2f64.powi(i)).collect()
}

/// A Prometheus exporter with etcd's buckets for the histograms cairn records; the
/// binary installs it as the recorder and serves it on `/metrics`.
pub fn prometheus_builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(WAL_FSYNC_DURATION_SECONDS.into()),
            &disk_buckets(),
        )?
        .set_buckets_for_metric(
            Matcher::Full(BACKEND_COMMIT_DURATION_SECONDS.into()),
            &disk_buckets(),
        )?
        .set_buckets_for_metric(Matcher::Full(TTL_TOTAL.into()), &lease_ttl_buckets())
}

pub(crate) fn lease_granted(ttl: i64) {
    metrics::counter!(GRANTED_TOTAL).increment(1);
    metrics::histogram!(TTL_TOTAL).record(ttl as f64);
}

pub(crate) fn lease_revoked() {
    metrics::counter!(REVOKED_TOTAL).increment(1);
}

pub(crate) fn lease_renewed() {
    metrics::counter!(RENEWED_TOTAL).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_etcds() {
        let disk = disk_buckets();
        assert_eq!((disk[0], disk.len()), (0.001, 14));
        assert!((disk[13] - 8.192).abs() < 1e-9);
        assert_eq!(lease_ttl_buckets()[13], 8192.0);
    }

    #[test]
    fn described_metrics_render_with_help_and_type() {
        let recorder = prometheus_builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            lease_granted(60);
        });
        let text = handle.render();
        for line in [
            "# HELP etcd_debugging_lease_granted_total The total number of granted leases.",
            "# TYPE etcd_debugging_lease_granted_total counter",
            "etcd_debugging_lease_granted_total 1",
            "# TYPE etcd_debugging_lease_ttl_total histogram",
            "etcd_debugging_lease_ttl_total_bucket{le=\"64\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        // Registered at zero from the start, as etcd's families are.
        assert!(
            text.lines().any(|l| l == format!("{REVOKED_TOTAL} 0")),
            "{text}"
        );
        // No HELP line without its TYPE and samples.
        for help in text.lines().filter_map(|l| l.strip_prefix("# HELP ")) {
            let name = help.split(' ').next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
        }
    }
}
