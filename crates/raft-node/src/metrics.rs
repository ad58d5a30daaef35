//! The raft metrics, by etcd's names where etcd has them, and their descriptions.
//!
//! The node records these from its Ready loop, its storage and its peer streams. Call
//! [`describe`] once after installing a `metrics` recorder to give each its HELP text.

/// Gauge: 1 while this member knows a leader, else 0.
pub const HAS_LEADER: &str = "etcd_server_has_leader";
/// Gauge: 1 while this member is the leader, else 0.
pub const IS_LEADER: &str = "etcd_server_is_leader";
/// Gauge (as in etcd): the commit index.
pub const PROPOSALS_COMMITTED_TOTAL: &str = "etcd_server_proposals_committed_total";
/// Gauge (as in etcd): the applied index.
pub const PROPOSALS_APPLIED_TOTAL: &str = "etcd_server_proposals_applied_total";
/// Gauge: proposals this member made that are not applied yet.
pub const PROPOSALS_PENDING: &str = "etcd_server_proposals_pending";
/// Counter: proposals raft refused (no leader, dropped).
pub const PROPOSALS_FAILED_TOTAL: &str = "etcd_server_proposals_failed_total";
/// Counter: leader changes this member saw.
pub const LEADER_CHANGES_SEEN_TOTAL: &str = "etcd_server_leader_changes_seen_total";
/// Histogram: WAL fsync latency, in seconds.
pub const WAL_FSYNC_DURATION_SECONDS: &str = "etcd_disk_wal_fsync_duration_seconds";
/// Counter: forwarded proposals dropped because they reached the leader after their
/// deadline.
pub const PROPOSALS_EXPIRED_TOTAL: &str = "cairn_server_proposals_expired_total";
/// Counter: committed entries whose proposal was already applied (not applied again).
pub const PROPOSALS_REJECTED_TOTAL: &str = "cairn_server_proposals_rejected_total";
/// Counter: batches from a peer stream that a newer stream from the same peer replaced.
pub const PEER_STALE_BATCHES_TOTAL: &str = "cairn_network_peer_stale_batches_total";
/// Counter: raft messages dropped because a peer's send queue was full.
pub const PEER_DROPPED_MESSAGES_TOTAL: &str = "cairn_network_peer_dropped_messages_total";

/// Counter by `To` (the peer's id in hex): bytes of raft messages sent to a peer.
pub const PEER_SENT_BYTES_TOTAL: &str = "etcd_network_peer_sent_bytes_total";
/// Counter by `From`: bytes of raft messages received from a peer.
pub const PEER_RECEIVED_BYTES_TOTAL: &str = "etcd_network_peer_received_bytes_total";
/// Counter by `To`: failures to send to a peer (a stream that could not open or broke).
pub const PEER_SENT_FAILURES_TOTAL: &str = "etcd_network_peer_sent_failures_total";
/// Counter by `From`: failures receiving from a peer (a stream that broke or was refused).
pub const PEER_RECEIVED_FAILURES_TOTAL: &str = "etcd_network_peer_received_failures_total";

/// A peer's id as etcd labels it (`types.ID`'s string: hex).
pub(crate) fn peer_label(id: u64) -> String {
    format!("{id:x}")
}

/// Registers each metric's type and HELP text with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        HAS_LEADER,
        "Whether or not a leader exists. 1 is existence, 0 is not."
    );
    describe_gauge!(
        IS_LEADER,
        "Whether or not this member is a leader. 1 if is, 0 otherwise."
    );
    describe_gauge!(
        PROPOSALS_COMMITTED_TOTAL,
        "The total number of consensus proposals committed."
    );
    describe_gauge!(
        PROPOSALS_APPLIED_TOTAL,
        "The total number of consensus proposals applied."
    );
    describe_gauge!(
        PROPOSALS_PENDING,
        "The current number of pending proposals to commit."
    );
    describe_counter!(
        PROPOSALS_FAILED_TOTAL,
        "The total number of failed proposals seen."
    );
    describe_counter!(
        LEADER_CHANGES_SEEN_TOTAL,
        "The number of leader changes seen."
    );
    describe_histogram!(
        WAL_FSYNC_DURATION_SECONDS,
        "The latency distributions of fsync called by WAL."
    );
    describe_counter!(
        PROPOSALS_EXPIRED_TOTAL,
        "Forwarded proposals dropped because they reached the leader after their deadline."
    );
    describe_counter!(
        PROPOSALS_REJECTED_TOTAL,
        "Committed entries not applied because their proposal was applied before."
    );
    describe_counter!(
        PEER_STALE_BATCHES_TOTAL,
        "Message batches dropped from a peer stream that a newer stream replaced."
    );
    describe_counter!(
        PEER_DROPPED_MESSAGES_TOTAL,
        "Raft messages dropped because a peer's send queue was full."
    );
    describe_counter!(
        PEER_SENT_BYTES_TOTAL,
        "The total number of bytes sent to peers."
    );
    describe_counter!(
        PEER_RECEIVED_BYTES_TOTAL,
        "The total number of bytes received from peers."
    );
    describe_counter!(
        PEER_SENT_FAILURES_TOTAL,
        "The total number of send failures from peers."
    );
    describe_counter!(
        PEER_RECEIVED_FAILURES_TOTAL,
        "The total number of receive failures from peers."
    );
    // Unlabelled counters exist from the start, at zero, as etcd registers its families.
    for counter in [
        PROPOSALS_EXPIRED_TOTAL,
        PROPOSALS_REJECTED_TOTAL,
        PEER_STALE_BATCHES_TOTAL,
        PEER_DROPPED_MESSAGES_TOTAL,
    ] {
        metrics::counter!(counter).increment(0);
    }
}
