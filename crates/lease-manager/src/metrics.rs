//! The lease metrics, by etcd's names, and their descriptions.
//!
//! The lessor is a plain data structure: the code that applies lease requests records
//! these (a grant or revoke once it is committed, a renewal once it is answered). Call
//! [`describe`] once after installing a `metrics` recorder to give each its etcd HELP
//! text.

/// Counter: leases granted (applied LeaseGrant requests that succeeded).
pub const GRANTED_TOTAL: &str = "etcd_debugging_lease_granted_total";
/// Counter: leases revoked (applied LeaseRevoke requests, expiry included).
pub const REVOKED_TOTAL: &str = "etcd_debugging_lease_revoked_total";
/// Counter: keep-alives answered by the leader.
pub const RENEWED_TOTAL: &str = "etcd_debugging_lease_renewed_total";
/// Histogram: the TTLs leases were granted with, in seconds.
pub const TTL_TOTAL: &str = "etcd_debugging_lease_ttl_total";

/// Registers each metric's type and etcd's HELP text with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(GRANTED_TOTAL, "The total number of granted leases.");
    metrics::describe_counter!(REVOKED_TOTAL, "The total number of revoked leases.");
    metrics::describe_counter!(
        RENEWED_TOTAL,
        "The number of renewed leases seen by the leader."
    );
    metrics::describe_histogram!(TTL_TOTAL, "Bucketed histogram of lease TTLs.");
}
