//! Removing compacted revisions from the backend.
//!
//! A compaction takes effect in two steps. [`KvStore::compact`](crate::KvStore::compact)
//! records it (`scheduled_compact_revision`, with the applied index) and
//! compacts the in-memory index, which says which revisions at or below the
//! compaction are still needed; then [`remove_compacted`] deletes the others
//! from RocksDB in chunks and records the compaction finished. A crash in
//! between leaves a scheduled but unfinished compaction, which
//! [`KvStore::open`](crate::KvStore::open) finishes.

use std::collections::HashSet;

use rocksdb::{ReadOptions, WriteBatch};

use crate::backend::{Backend, CF_KEY, CF_META};
use crate::error::MvccError;
use crate::meta::META_FINISHED_COMPACT;
use crate::revision::Revision;

/// Revisions removed per RocksDB batch while compacting.
const COMPACTION_CHUNK: usize = 10_000;

/// Removes from RocksDB every revision up to `at_rev` not in `keep`, in
/// chunks, then marks the compaction finished.
pub(crate) fn remove_compacted(
    backend: &Backend,
    at_rev: i64,
    keep: &HashSet<Revision>,
) -> Result<(), MvccError> {
    let db = backend.db();
    let key_cf = backend.cf(CF_KEY)?;
    let mut options = ReadOptions::default();
    options.set_iterate_upper_bound(Revision::new(at_rev + 1, 0).to_key(false));
    let mut it = db.raw_iterator_cf_opt(key_cf, options);
    it.seek_to_first();
    let mut batch = WriteBatch::default();
    let mut removed = 0usize;
    while let Some(raw_key) = it.key() {
        let (rev, _) = Revision::from_key(raw_key)?;
        if !keep.contains(&rev) {
            batch.delete_cf(key_cf, raw_key);
            removed += 1;
            if batch.len() >= COMPACTION_CHUNK {
                backend.write_raw(std::mem::take(&mut batch))?;
                crash_point!("mvcc::compact_chunk");
            }
        }
        it.next();
    }
    it.status().map_err(MvccError::backend)?;
    batch.put_cf(
        backend.cf(CF_META)?,
        META_FINISHED_COMPACT,
        at_rev.to_be_bytes(),
    );
    backend.write_raw(batch)?;
    tracing::info!(
        compact_revision = at_rev,
        removed,
        kept = keep.len(),
        "compaction finished"
    );
    Ok(())
}
