//! The store's metrics, by etcd's names, and their descriptions.
//!
//! Call [`describe`] once after installing a `metrics` recorder to give each its etcd
//! HELP text, and [`record_backend_size`] now and then (the server does every second):
//! RocksDB answers the sizes from memory.

use crate::backend::Backend;
use crate::error::MvccError;

/// Gauge: bytes the backend occupies, SST files and memtables ([`Backend::size_bytes`]).
pub const DB_TOTAL_SIZE_IN_BYTES: &str = "etcd_mvcc_db_total_size_in_bytes";
/// Gauge: bytes of live data ([`Backend::size_in_use_bytes`]).
pub const DB_TOTAL_SIZE_IN_USE_IN_BYTES: &str = "etcd_mvcc_db_total_size_in_use_in_bytes";

/// Gauge: the store's current revision.
pub const CURRENT_REVISION: &str = "etcd_debugging_mvcc_current_revision";
/// Gauge: the revision of the last compaction (-1 before the first, as etcd).
pub const COMPACT_REVISION: &str = "etcd_debugging_mvcc_compact_revision";

/// Sets [`CURRENT_REVISION`] and [`COMPACT_REVISION`].
pub(crate) fn record_revisions(current: i64, compact: i64) {
    metrics::gauge!(CURRENT_REVISION).set(current as f64);
    metrics::gauge!(COMPACT_REVISION).set(compact as f64);
}

pub use crate::backend::BACKEND_COMMIT_DURATION_SECONDS;

/// Gauge: keys that exist at the current revision.
pub const KEYS_TOTAL: &str = "etcd_debugging_mvcc_keys_total";
/// Counters of the store's operations, each under etcd's name and its older
/// `etcd_debugging_` one (etcd 3.4 and 3.5 expose both).
pub const RANGE_TOTAL: [&str; 2] = ["etcd_mvcc_range_total", "etcd_debugging_mvcc_range_total"];
/// Puts, in requests and in txns.
pub const PUT_TOTAL: [&str; 2] = ["etcd_mvcc_put_total", "etcd_debugging_mvcc_put_total"];
/// Deletes, in requests and in txns.
pub const DELETE_TOTAL: [&str; 2] = ["etcd_mvcc_delete_total", "etcd_debugging_mvcc_delete_total"];
/// Txns.
pub const TXN_TOTAL: [&str; 2] = ["etcd_mvcc_txn_total", "etcd_debugging_mvcc_txn_total"];

/// An operation [`count`] counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Range,
    Put,
    Delete,
    Txn,
}

impl Op {
    fn names(self) -> [&'static str; 2] {
        match self {
            Op::Range => RANGE_TOTAL,
            Op::Put => PUT_TOTAL,
            Op::Delete => DELETE_TOTAL,
            Op::Txn => TXN_TOTAL,
        }
    }
}

/// Counts one `op`.
pub(crate) fn count(op: Op) {
    for name in op.names() {
        metrics::counter!(name).increment(1);
    }
}

/// Sets [`KEYS_TOTAL`].
pub(crate) fn record_keys(live: i64) {
    metrics::gauge!(KEYS_TOTAL).set(live as f64);
}

/// Counter: revisions removed by compactions.
pub const DB_COMPACTION_KEYS_TOTAL: &str = "etcd_debugging_mvcc_db_compaction_keys_total";
/// Histogram: how long removing a compaction's revisions took, in milliseconds.
pub const DB_COMPACTION_TOTAL_DURATION_MS: &str =
    "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds";

/// Registers each metric's type and etcd's HELP text with the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(KEYS_TOTAL, "Total number of keys.");
    for (names, help) in [
        (RANGE_TOTAL, "Total number of ranges seen by this member."),
        (PUT_TOTAL, "Total number of puts seen by this member."),
        (DELETE_TOTAL, "Total number of deletes seen by this member."),
        (TXN_TOTAL, "Total number of txns seen by this member."),
    ] {
        for name in names {
            metrics::describe_counter!(name, help);
            metrics::counter!(name).increment(0);
        }
    }
    metrics::describe_gauge!(CURRENT_REVISION, "The current revision of store.");
    metrics::describe_gauge!(
        COMPACT_REVISION,
        "The revision of the last compaction in store."
    );
    metrics::describe_counter!(
        DB_COMPACTION_KEYS_TOTAL,
        "Total number of db keys compacted."
    );
    metrics::describe_histogram!(
        DB_COMPACTION_TOTAL_DURATION_MS,
        "Bucketed histogram of db compaction total duration."
    );
    metrics::describe_gauge!(
        DB_TOTAL_SIZE_IN_BYTES,
        "Total size of the underlying database physically allocated in bytes."
    );
    metrics::describe_gauge!(
        DB_TOTAL_SIZE_IN_USE_IN_BYTES,
        "Total size of the underlying database logically in use in bytes."
    );
}

/// Reads `backend`'s sizes and sets [`DB_TOTAL_SIZE_IN_BYTES`] and
/// [`DB_TOTAL_SIZE_IN_USE_IN_BYTES`]; on an error neither gauge changes.
pub fn record_backend_size(backend: &Backend) -> Result<(), MvccError> {
    let total = backend.size_bytes()?;
    let in_use = backend.size_in_use_bytes()?;
    metrics::gauge!(DB_TOTAL_SIZE_IN_BYTES).set(total as f64);
    metrics::gauge!(DB_TOTAL_SIZE_IN_USE_IN_BYTES).set(in_use as f64);
    Ok(())
}
