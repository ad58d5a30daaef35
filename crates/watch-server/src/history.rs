//! Where the hub reads the past: the [`EventSource`] a [`WatchHub`](crate::WatchHub) is
//! built over, and its implementation for the MVCC store.

use bytes::Bytes;
use cairn_mvcc_store::{KvStore, MvccError};
use cairn_proto::mvccpb::Event;

/// The store's history, as far as watchers need it. [`KvStore`] implements it; tests use
/// an in-memory one.
pub trait EventSource: Send + Sync + 'static {
    /// The revision of the last change the store holds.
    fn current_revision(&self) -> i64;

    /// The revision of the last compaction (0 before the first): history below it is gone.
    fn compact_revision(&self) -> i64;

    /// The events on the keys `(key, range_end)` names (etcd's convention) from revision
    /// `from_rev` through `to_rev` (both inclusive, `to_rev` capped at the current
    /// revision), in revision order, each with `prev_kv` where it is known.
    ///
    /// `limit` (0: none) caps the number of events, but the events of one revision are
    /// never split: the last revision returned is always complete. Fails with
    /// [`HistoryError::Compacted`] when `from_rev` is below the compaction revision.
    fn events_between(
        &self,
        from_rev: i64,
        to_rev: i64,
        key: &Bytes,
        range_end: &Bytes,
        limit: usize,
    ) -> Result<Vec<Event>, HistoryError>;
}

/// Why history could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The revisions asked for were compacted away: the watcher is cancelled with the
    /// compaction revision.
    #[error("required revision has been compacted")]
    Compacted,
    /// The store failed (its message); the hub tries again later.
    #[error("reading history: {0}")]
    Unavailable(String),
}

impl EventSource for KvStore {
    fn current_revision(&self) -> i64 {
        KvStore::current_revision(self)
    }

    fn compact_revision(&self) -> i64 {
        KvStore::compact_revision(self)
    }

    fn events_between(
        &self,
        from_rev: i64,
        to_rev: i64,
        key: &Bytes,
        range_end: &Bytes,
        limit: usize,
    ) -> Result<Vec<Event>, HistoryError> {
        KvStore::events_between(self, from_rev, to_rev, key, range_end, limit).map_err(
            |e| match e {
                MvccError::Compacted => HistoryError::Compacted,
                other => HistoryError::Unavailable(other.to_string()),
            },
        )
    }
}
