//! The RocksDB database every piece of applied state lives in.
//!
//! One database, one column family per concern. The store owns `key` and
//! `meta`; `lease`, `auth`, `members` and `alarm` are created empty for the
//! crates that persist those, so that all of them can put their writes into
//! the store's write batch and commit them atomically with the applied raft
//! index (ARCHITECTURE.md, invariant 2).
//!
//! Writes are not synced: the raft log is the durability point, and replaying
//! it after a crash re-applies whatever RocksDB lost.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch, WriteOptions, DB,
};

use crate::error::MvccError;

/// Revision-encoded key -> encoded `mvccpb::KeyValue` (see [`crate::revision`]).
pub const CF_KEY: &str = "key";
/// The store's bookkeeping: applied raft index, current and compaction revisions.
pub const CF_META: &str = "meta";
/// Reserved for the lease manager.
pub const CF_LEASE: &str = "lease";
/// Reserved for authentication (users, roles, the enabled flag).
pub const CF_AUTH: &str = "auth";
/// Reserved for cluster membership.
pub const CF_MEMBERS: &str = "members";
/// Reserved for alarms (NOSPACE, CORRUPT).
pub const CF_ALARM: &str = "alarm";

/// Every column family [`Backend::open`] creates, besides RocksDB's `default`.
pub const COLUMN_FAMILIES: [&str; 6] = [CF_KEY, CF_META, CF_LEASE, CF_AUTH, CF_MEMBERS, CF_ALARM];

/// The RocksDB database with cairn's column families.
pub struct Backend {
    db: DB,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("path", &self.db.path())
            .finish()
    }
}

impl Backend {
    /// Opens (creating if needed) the database at `path` with every column
    /// family of [`COLUMN_FAMILIES`].
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<Backend>, MvccError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(10);
        let families = COLUMN_FAMILIES.iter().map(|name| {
            let mut cf_options = Options::default();
            cf_options.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(*name, cf_options)
        });
        let db = DB::open_cf_descriptors(&options, path.as_ref(), families)?;
        tracing::debug!(path = %path.as_ref().display(), "backend opened");
        Ok(Arc::new(Backend { db }))
    }

    /// The RocksDB handle, for reads by other crates.
    pub fn db(&self) -> &DB {
        &self.db
    }

    /// The handle of a column family; `None` if `name` is not one of
    /// [`COLUMN_FAMILIES`] (or `default`).
    pub fn cf_handle(&self, name: &str) -> Option<&ColumnFamily> {
        self.db.cf_handle(name)
    }

    /// The handle of a column family, or [`MvccError::UnknownColumnFamily`].
    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily, MvccError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| MvccError::UnknownColumnFamily(name.to_owned()))
    }

    /// Commits `batch` atomically, without syncing.
    ///
    /// Code that applies raft entries should not call this directly but pass
    /// its batch to the store's write (or `record_applied_with`), so that the
    /// applied index is committed with it.
    pub fn write(&self, batch: BackendBatch) -> Result<(), MvccError> {
        let mut raw = WriteBatch::default();
        self.append(&mut raw, batch)?;
        self.write_raw(raw)
    }

    /// Adds the operations of `batch` to a RocksDB batch.
    pub(crate) fn append(
        &self,
        raw: &mut WriteBatch,
        batch: BackendBatch,
    ) -> Result<(), MvccError> {
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => raw.put_cf(self.cf(&cf)?, key, value),
                BatchOp::Delete { cf, key } => raw.delete_cf(self.cf(&cf)?, key),
            }
        }
        Ok(())
    }

    /// Commits a RocksDB batch without syncing.
    pub(crate) fn write_raw(&self, raw: WriteBatch) -> Result<(), MvccError> {
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.db.write_opt(raw, &options)?;
        Ok(())
    }

    /// Makes every write so far durable (fsyncs RocksDB's own WAL); used before
    /// a snapshot is taken or the raft log is truncated.
    pub fn sync(&self) -> Result<(), MvccError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Bytes the database occupies: every SST file plus every memtable
    /// (etcd's `etcd_mvcc_db_total_size_in_bytes`, the quota's measure).
    pub fn size_bytes(&self) -> u64 {
        self.sum_property(c"rocksdb.total-sst-files-size")
            + self.sum_property(c"rocksdb.size-all-mem-tables")
    }

    /// Bytes in use: live SST files plus the memtables not yet flushed
    /// (etcd's `etcd_mvcc_db_total_size_in_use_in_bytes`).
    pub fn size_in_use_bytes(&self) -> u64 {
        self.sum_property(c"rocksdb.live-sst-files-size")
            + self.sum_property(c"rocksdb.cur-size-all-mem-tables")
    }

    /// An integer property summed over every column family; RocksDB answers
    /// these from memory.
    fn sum_property(&self, name: &std::ffi::CStr) -> u64 {
        std::iter::once("default")
            .chain(COLUMN_FAMILIES)
            .filter_map(|cf| self.db.cf_handle(cf))
            .filter_map(|cf| self.db.property_int_value_cf(cf, name).ok().flatten())
            .sum()
    }
}

/// Writes to any column family, committed together with a store write.
///
/// Other crates (leases, auth, membership) fill one and hand it to the store,
/// which commits it in the same RocksDB write batch as its own change and the
/// applied raft index. Operations run in the order they were added, after the
/// store's own.
///
/// ```
/// use cairn_mvcc_store::backend::{BackendBatch, CF_LEASE};
///
/// let mut batch = BackendBatch::new();
/// batch.put_cf(CF_LEASE, 7u64.to_be_bytes(), b"ttl=10");
/// batch.delete_cf(CF_LEASE, 6u64.to_be_bytes());
/// assert_eq!(batch.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendBatch {
    ops: Vec<BatchOp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum BatchOp {
    Put {
        cf: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: String,
        key: Vec<u8>,
    },
}

impl BackendBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` in column family `cf` (one of [`COLUMN_FAMILIES`];
    /// an unknown name fails the whole write with
    /// [`MvccError::UnknownColumnFamily`]).
    pub fn put_cf(&mut self, cf: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops.push(BatchOp::Put {
            cf: cf.to_owned(),
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        });
    }

    /// Removes `key` from column family `cf`.
    pub fn delete_cf(&mut self, cf: &str, key: impl AsRef<[u8]>) {
        self.ops.push(BatchOp::Delete {
            cf: cf.to_owned(),
            key: key.as_ref().to_vec(),
        });
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_with_every_column_family_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = Backend::open(dir.path()).unwrap();
            for cf in COLUMN_FAMILIES {
                assert!(backend.cf_handle(cf).is_some(), "{cf}");
            }
            assert!(backend.cf_handle("nope").is_none());
            let mut batch = BackendBatch::new();
            batch.put_cf(CF_LEASE, b"l1", b"one");
            batch.put_cf(CF_AUTH, b"enabled", b"1");
            batch.put_cf(CF_LEASE, b"l2", b"two");
            batch.delete_cf(CF_LEASE, b"l1");
            backend.write(batch).unwrap();
            backend.sync().unwrap();
        }
        let backend = Backend::open(dir.path()).unwrap();
        let lease = backend.cf_handle(CF_LEASE).unwrap();
        assert_eq!(backend.db().get_cf(lease, b"l1").unwrap(), None);
        assert_eq!(
            backend.db().get_cf(lease, b"l2").unwrap(),
            Some(b"two".to_vec())
        );
        let auth = backend.cf_handle(CF_AUTH).unwrap();
        assert_eq!(
            backend.db().get_cf(auth, b"enabled").unwrap(),
            Some(b"1".to_vec())
        );
    }

    #[test]
    fn unknown_column_family_fails_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let mut batch = BackendBatch::new();
        batch.put_cf(CF_LEASE, b"l1", b"one");
        batch.put_cf("leases", b"l2", b"two");
        assert_eq!(
            backend.write(batch),
            Err(MvccError::UnknownColumnFamily("leases".into()))
        );
        let lease = backend.cf_handle(CF_LEASE).unwrap();
        assert_eq!(backend.db().get_cf(lease, b"l1").unwrap(), None);
    }

    #[test]
    fn sizes_grow_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let (total_before, in_use_before) = (backend.size_bytes(), backend.size_in_use_bytes());
        let mut batch = BackendBatch::new();
        for i in 0u32..1000 {
            batch.put_cf(CF_KEY, i.to_be_bytes(), [7u8; 1024]);
        }
        backend.write(batch).unwrap();
        assert!(backend.size_bytes() >= total_before + 1000 * 1024);
        assert!(backend.size_in_use_bytes() >= in_use_before + 1000 * 1024);
        backend
            .db()
            .flush_cf(backend.cf_handle(CF_KEY).unwrap())
            .unwrap();
        assert!(backend.size_bytes() > 0);
        assert!(backend.size_in_use_bytes() <= backend.size_bytes());
    }
}
