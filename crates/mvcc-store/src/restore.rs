//! Replacing a live store's whole content with a checkpoint (a raft
//! snapshot from the leader, or a restored backup), atomically.

use std::path::Path;
use std::sync::atomic::Ordering;

use parking_lot::{RwLockUpgradableReadGuard, RwLockWriteGuard};
use rocksdb::{Options, WriteBatch, WriteOptions, DB};

use crate::backend::{
    column_family, BackendBatch, CF_DEFAULT, CF_KEY, CF_META, COLUMN_FAMILIES, MEMBER_LOCAL_KEYS,
};
use crate::compaction::remove_compacted;
use crate::error::MvccError;
use crate::kv_store::{KvStore, Loaded};
use crate::meta::StoredMeta;
use crate::stored::scan_key_index;

impl KvStore {
    /// [`KvStore::restore_from_checkpoint_with`] with nothing extra.
    pub fn restore_from_checkpoint(&self, dir: &Path) -> Result<(), MvccError> {
        self.restore_from_checkpoint_with(dir, BackendBatch::new())
    }

    /// Replaces the whole content of the live backend with the checkpoint in
    /// `dir` (made by [`Backend::checkpoint`](crate::Backend::checkpoint),
    /// possibly on another member and shipped with [`crate::snapshot`]), then
    /// reloads the store from it as [`KvStore::open`] would (key index,
    /// current and compaction revisions, applied index).
    ///
    /// Every column family is emptied and refilled from the checkpoint, and
    /// `extra` applied after that (raft's snapshot metadata, say), in ONE
    /// synced RocksDB write batch: after a crash the backend holds either the
    /// old or the new content. Two exceptions: the live values of
    /// [`MEMBER_LOCAL_KEYS`] are kept
    /// (unless `extra` sets them), and `extra` may not write the `key`
    /// column family ([`MvccError::Restore`]).
    ///
    /// Readers see the old store or the new one, never a mix: they wait only
    /// while the batch is committed. Other writes wait for the whole restore;
    /// writes made straight to the [`Backend`](crate::Backend) must not run concurrently.
    /// The whole checkpoint is held in memory while the batch is built. On
    /// error nothing changed.
    pub fn restore_from_checkpoint_with(
        &self,
        dir: &Path,
        extra: BackendBatch,
    ) -> Result<(), MvccError> {
        if extra.touches(CF_KEY) {
            return Err(MvccError::Restore(
                "the extra batch may not write the key column family".into(),
            ));
        }
        let checkpoint = open_checkpoint(dir)?;
        let (tree, last_main) = scan_key_index(&checkpoint)?;
        let checkpoint_meta = column_family(&checkpoint, CF_META)?;
        let meta = StoredMeta::read(|key| match extra.last_write(CF_META, key) {
            Some(value) => Ok(value.map(<[u8]>::to_vec)),
            None => checkpoint
                .get_cf(checkpoint_meta, key)
                .map_err(MvccError::backend),
        })?;

        let state = self.state.upgradable_read();
        let db = self.backend.db();
        let mut batch = WriteBatch::default();
        let mut copied = 0u64;
        for name in std::iter::once(CF_DEFAULT).chain(COLUMN_FAMILIES) {
            let live = self.backend.cf(name)?;
            let mut it = db.raw_iterator_cf(live);
            it.seek_to_last();
            if let Some(last) = it.key() {
                // [empty key, the key right after the last one): all of it.
                let mut end = last.to_vec();
                end.push(0);
                batch.delete_range_cf(live, Vec::new(), end);
            }
            it.status().map_err(MvccError::backend)?;
            drop(it);
            let mut it = checkpoint.raw_iterator_cf(column_family(&checkpoint, name)?);
            it.seek_to_first();
            while let (Some(key), Some(value)) = (it.key(), it.value()) {
                if !is_member_local(name, key) {
                    batch.put_cf(live, key, value);
                    copied += 1;
                }
                it.next();
            }
            it.status().map_err(MvccError::backend)?;
        }
        for (name, key) in MEMBER_LOCAL_KEYS {
            let cf = self.backend.cf(name)?;
            if let Some(value) = db.get_cf(cf, key).map_err(MvccError::backend)? {
                batch.put_cf(cf, key, value);
            }
        }
        self.backend.append(&mut batch, extra)?;
        drop(checkpoint);

        let mut options = WriteOptions::default();
        options.set_sync(true);
        let mut state = RwLockUpgradableReadGuard::upgrade(state);
        // No batch of a removal of the old content may land on the new one.
        self.compactor.reset(i64::MAX);
        db.write_opt(batch, &options).map_err(MvccError::backend)?;
        let Loaded {
            state: loaded,
            applied_index,
            unfinished_compaction,
        } = Loaded::new(tree, last_main, &meta, state.epoch + 1);
        *state = loaded;
        self.applied_index.store(applied_index, Ordering::Release);
        let (current_rev, compact_rev) = (state.current_rev, state.compact_rev);
        let _writer = RwLockWriteGuard::downgrade_to_upgradable(state);
        crate::metrics::record_revisions(current_rev, compact_rev);
        tracing::info!(
            dir = %dir.display(),
            copied,
            current_revision = current_rev,
            compact_revision = compact_rev,
            applied_index,
            "mvcc store restored from checkpoint"
        );
        if let Some((rev, keep)) = unfinished_compaction {
            if let Err(err) = remove_compacted(&self.backend, rev, &keep) {
                // As after a crash: the compaction is in effect, and the
                // next open removes what is left.
                tracing::error!(compact_revision = rev, error = %err, "removing compacted revisions after a restore failed");
            }
        }
        self.compactor.reset(compact_rev);
        Ok(())
    }
}

/// Opens the checkpoint in `dir` read-only, with exactly cairn's column
/// families.
fn open_checkpoint(dir: &Path) -> Result<DB, MvccError> {
    let options = Options::default();
    let families = DB::list_cf(&options, dir).map_err(MvccError::backend)?;
    let known: Vec<&str> = std::iter::once(CF_DEFAULT).chain(COLUMN_FAMILIES).collect();
    if let Some(unknown) = families.iter().find(|f| !known.contains(&f.as_str())) {
        return Err(MvccError::Restore(format!(
            "checkpoint {} has unknown column family {unknown:?}",
            dir.display()
        )));
    }
    if let Some(missing) = known.iter().find(|k| !families.iter().any(|f| f == *k)) {
        return Err(MvccError::Restore(format!(
            "checkpoint {} lacks column family {missing:?}",
            dir.display()
        )));
    }
    DB::open_cf_for_read_only(&options, dir, known, false).map_err(MvccError::backend)
}

/// Whether `key` of column family `cf` is one of [`MEMBER_LOCAL_KEYS`].
pub(crate) fn is_member_local(cf: &str, key: &[u8]) -> bool {
    MEMBER_LOCAL_KEYS
        .iter()
        .any(|(local_cf, local)| *local_cf == cf && *local == key)
}

#[cfg(test)]
mod tests;
