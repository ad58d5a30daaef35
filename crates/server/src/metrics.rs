//! The metrics the server records, under etcd's names and help texts so that etcd's
//! dashboards and alerts read them unchanged, and the Prometheus exporter set up with
//! etcd's histogram buckets. [`describe`] gives them their HELP lines; [`crate::run`]
//! calls it (and the gateway's) at start.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Leases granted (applied LeaseGrant entries).
pub const LEASE_GRANTED_TOTAL: &str = "etcd_debugging_lease_granted_total";
/// Leases revoked, by a client or on expiry (applied LeaseRevoke entries).
pub const LEASE_REVOKED_TOTAL: &str = "etcd_debugging_lease_revoked_total";
/// Keep-alives answered by the leader.
pub const LEASE_RENEWED_TOTAL: &str = "etcd_debugging_lease_renewed_total";
/// The TTLs of granted leases, in seconds.
pub const LEASE_TTL_TOTAL: &str = "etcd_debugging_lease_ttl_total";
/// The backend's size on disk.
pub const DB_TOTAL_SIZE_IN_BYTES: &str = "etcd_mvcc_db_total_size_in_bytes";
/// The part of the backend's size that holds live data.
pub const DB_TOTAL_SIZE_IN_USE_IN_BYTES: &str = "etcd_mvcc_db_total_size_in_use_in_bytes";
/// WAL fsync latency, recorded by `cairn-raft-node`; named here for its buckets.
const WAL_FSYNC_DURATION_SECONDS: &str = "etcd_disk_wal_fsync_duration_seconds";

/// Describes every metric of this crate to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(LEASE_GRANTED_TOTAL, "The total number of granted leases.");
    metrics::describe_counter!(LEASE_REVOKED_TOTAL, "The total number of revoked leases.");
    metrics::describe_counter!(
        LEASE_RENEWED_TOTAL,
        "The number of renewed leases seen by the leader."
    );
    metrics::describe_histogram!(LEASE_TTL_TOTAL, "Bucketed histogram of lease TTLs.");
    metrics::describe_gauge!(
        DB_TOTAL_SIZE_IN_BYTES,
        "Total size of the underlying database physically allocated in bytes."
    );
    metrics::describe_gauge!(
        DB_TOTAL_SIZE_IN_USE_IN_BYTES,
        "Total size of the underlying database logically in use in bytes."
    );
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
        .set_buckets_for_metric(Matcher::Full(LEASE_TTL_TOTAL.into()), &lease_ttl_buckets())
}

pub(crate) fn lease_granted(ttl: i64) {
    metrics::counter!(LEASE_GRANTED_TOTAL).increment(1);
    metrics::histogram!(LEASE_TTL_TOTAL).record(ttl as f64);
}

pub(crate) fn lease_revoked() {
    metrics::counter!(LEASE_REVOKED_TOTAL).increment(1);
}

pub(crate) fn lease_renewed() {
    metrics::counter!(LEASE_RENEWED_TOTAL).increment(1);
}

pub(crate) fn backend_size(total: u64, in_use: u64) {
    metrics::gauge!(DB_TOTAL_SIZE_IN_BYTES).set(total as f64);
    metrics::gauge!(DB_TOTAL_SIZE_IN_USE_IN_BYTES).set(in_use as f64);
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
            backend_size(4096, 1024);
        });
        let text = handle.render();
        for line in [
            "# HELP etcd_debugging_lease_granted_total The total number of granted leases.",
            "# TYPE etcd_debugging_lease_granted_total counter",
            "etcd_debugging_lease_granted_total 1",
            "# TYPE etcd_debugging_lease_ttl_total histogram",
            "etcd_debugging_lease_ttl_total_bucket{le=\"64\"} 1",
            "etcd_mvcc_db_total_size_in_bytes 4096",
            "etcd_mvcc_db_total_size_in_use_in_bytes 1024",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        // Described but never recorded: no lonely HELP line.
        assert!(!text.contains(LEASE_REVOKED_TOTAL), "{text}");
    }
}
