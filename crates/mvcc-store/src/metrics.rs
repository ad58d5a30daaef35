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

/// Counter: revisions removed by compactions.
pub const DB_COMPACTION_KEYS_TOTAL: &str = "etcd_debugging_mvcc_db_compaction_keys_total";
/// Histogram: how long removing a compaction's revisions took, in milliseconds.
pub const DB_COMPACTION_TOTAL_DURATION_MS: &str =
    "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds";

/// Registers each metric's type and etcd's HELP text with the installed recorder.
pub fn describe() {
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
