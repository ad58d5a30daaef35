//! The metrics the hub records, by etcd's names, and their descriptions.
//!
//! The names are etcd's, so that etcd's dashboards and alerts work unchanged; call
//! [`describe`] once after installing a `metrics` recorder to give each its etcd HELP
//! text.

/// Gauge: watchers, synced or not (etcd's `etcd_debugging_mvcc_watcher_total`).
pub const WATCHER_TOTAL: &str = "etcd_debugging_mvcc_watcher_total";
/// Gauge: unsynced watchers, catching up from history.
pub const SLOW_WATCHER_TOTAL: &str = "etcd_debugging_mvcc_slow_watcher_total";
/// Gauge: open watch streams.
pub const WATCH_STREAM_TOTAL: &str = "etcd_debugging_mvcc_watch_stream_total";
/// Gauge: events queued on streams and not yet taken by them.
pub const PENDING_EVENTS_TOTAL: &str = "etcd_debugging_mvcc_pending_events_total";
/// Counter: events handed to streams.
pub const EVENTS_TOTAL: &str = "etcd_debugging_mvcc_events_total";

/// Registers each metric's type and etcd's HELP text with the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(WATCHER_TOTAL, "Total number of watchers.");
    metrics::describe_gauge!(
        SLOW_WATCHER_TOTAL,
        "Total number of unsynced slow watchers."
    );
    metrics::describe_gauge!(WATCH_STREAM_TOTAL, "Total number of watch streams.");
    metrics::describe_gauge!(
        PENDING_EVENTS_TOTAL,
        "Total number of pending events to be sent."
    );
    metrics::describe_counter!(EVENTS_TOTAL, "Total number of events sent by this member.");
}
