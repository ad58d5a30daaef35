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

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, Cache, ColumnFamily, ColumnFamilyDescriptor,
    CompactOptions, DBCompressionType, DBIteratorWithThreadMode, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};

use crate::error::MvccError;

/// Histogram: how long a commit to the backend takes, in seconds: every RocksDB batch
/// (an applied entry's changes, a compaction step) and every sync of RocksDB's WAL —
/// what etcd measures of its bbolt commits.
pub const BACKEND_COMMIT_DURATION_SECONDS: &str = "etcd_disk_backend_commit_duration_seconds";

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

/// RocksDB's own column family; cairn stores nothing in it, but checkpoints,
/// restores and defragmentation cover it too.
pub const CF_DEFAULT: &str = "default";

/// `members` key of this member's own id (u64, big-endian), written at
/// bootstrap; it differs on every member.
pub const MEMBER_ID_KEY: &[u8] = b"member_id";

/// Keys that describe this member, not the replicated state, as
/// `(column family, key)`: [`Backend::hash`](crate::Backend::hash) skips them and
/// [`KvStore::restore_from_checkpoint`](crate::KvStore::restore_from_checkpoint)
/// keeps the live values instead of the checkpoint's.
pub const MEMBER_LOCAL_KEYS: [(&str, &[u8]); 1] = [(CF_MEMBERS, MEMBER_ID_KEY)];

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

/// The block cache shared by every column family.
const BLOCK_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// The memtable budget of the whole database.
const DB_WRITE_BUFFER_BYTES: usize = 32 * 1024 * 1024;
/// One memtable of the key column family (where nearly all writes go).
const KEY_WRITE_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// One memtable of the other column families (small, rarely written).
const SMALL_WRITE_BUFFER_BYTES: usize = 2 * 1024 * 1024;

impl Backend {
    /// Opens (creating if needed) the database at `path` with every column
    /// family of [`COLUMN_FAMILIES`].
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<Backend>, MvccError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(10);
        // Bounded memory: all memtables together stay under DB_WRITE_BUFFER_BYTES (RocksDB
        // flushes the largest when they reach it) instead of 64 MiB per column family.
        options.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES);
        // One block cache for every column family, of a fixed size.
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let families = COLUMN_FAMILIES.iter().map(|name| {
            let mut cf_options = Options::default();
            cf_options.set_block_based_table_factory(&table);
            cf_options.set_compression_type(DBCompressionType::Lz4);
            let buffer = if *name == CF_KEY {
                KEY_WRITE_BUFFER_BYTES
            } else {
                SMALL_WRITE_BUFFER_BYTES
            };
            cf_options.set_write_buffer_size(buffer);
            ColumnFamilyDescriptor::new(*name, cf_options)
        });
        let db = DB::open_cf_descriptors(&options, path.as_ref(), families)
            .map_err(MvccError::backend)?;
        tracing::debug!(path = %path.as_ref().display(), "backend opened");
        Ok(Arc::new(Backend { db }))
    }

    /// The RocksDB handle; RocksDB stays inside this crate.
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// The value of `key` in column family `cf` (one of [`COLUMN_FAMILIES`]).
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        self.db
            .get_cf(self.cf(cf)?, key)
            .map_err(MvccError::backend)
    }

    /// Every entry of column family `cf` (one of [`COLUMN_FAMILIES`]), in key
    /// order, as the database stands now. Meant for the small families other
    /// crates keep (leases, members, alarms); the store reads `key` itself.
    ///
    /// ```
    /// use cairn_mvcc_store::backend::{Backend, BackendBatch, CF_ALARM};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let backend = Backend::open(dir.path())?;
    /// let mut batch = BackendBatch::new();
    /// batch.put_cf(CF_ALARM, b"b", b"2");
    /// batch.put_cf(CF_ALARM, b"a", b"1");
    /// backend.write(batch)?;
    /// let keys: Vec<Box<[u8]>> = backend
    ///     .scan(CF_ALARM)?
    ///     .map(|entry| entry.map(|(key, _value)| key))
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(keys, [b"a".to_vec().into_boxed_slice(), b"b".to_vec().into_boxed_slice()]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn scan(&self, cf: &str) -> Result<Scan<'_>, MvccError> {
        Ok(Scan {
            inner: self.db.iterator_cf(self.cf(cf)?, IteratorMode::Start),
            prefix: None,
            done: false,
        })
    }

    /// The entries of column family `cf` whose key starts with `prefix`, in
    /// key order.
    pub fn scan_prefix(&self, cf: &str, prefix: &[u8]) -> Result<Scan<'_>, MvccError> {
        Ok(Scan {
            inner: self
                .db
                .iterator_cf(self.cf(cf)?, IteratorMode::From(prefix, Direction::Forward)),
            prefix: Some(prefix.to_vec()),
            done: false,
        })
    }

    /// Whether the database has column family `name` (every one of
    /// [`COLUMN_FAMILIES`] and `default` after [`Backend::open`]).
    pub fn has_column_family(&self, name: &str) -> bool {
        self.db.cf_handle(name).is_some()
    }

    /// The handle of a column family, or [`MvccError::UnknownColumnFamily`].
    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily, MvccError> {
        column_family(&self.db, name)
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
        // Fault tests make the disk fail here: `backend::write=return(ENOSPC)` (or EIO).
        #[cfg(feature = "failpoints")]
        fail::fail_point!("backend::write", |errno: Option<String>| {
            Err(MvccError::Io(format!(
                "write to the backend: injected {}",
                errno.as_deref().unwrap_or("EIO")
            )))
        });
        let mut options = WriteOptions::default();
        options.set_sync(false);
        let started = std::time::Instant::now();
        let written = self.db.write_opt(raw, &options).map_err(MvccError::backend);
        metrics::histogram!(BACKEND_COMMIT_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        written
    }

    /// Makes every write so far durable (fsyncs RocksDB's own WAL); used before
    /// a snapshot is taken or the raft log is truncated.
    pub fn sync(&self) -> Result<(), MvccError> {
        let started = std::time::Instant::now();
        let synced = self.db.flush_wal(true).map_err(MvccError::backend);
        metrics::histogram!(BACKEND_COMMIT_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        synced
    }

    /// Writes a consistent point-in-time copy of every column family to
    /// `dir`, which must not exist yet (its parent must). The copy is a
    /// RocksDB database of its own (hard links to the immutable SST files
    /// plus the memtables flushed), openable read-only and archivable with
    /// [`crate::snapshot::ArchiveReader`].
    pub fn checkpoint(&self, dir: &Path) -> Result<(), MvccError> {
        if dir.symlink_metadata().is_ok() {
            return Err(MvccError::Io(format!("{} already exists", dir.display())));
        }
        Checkpoint::new(&self.db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(dir))
            .map_err(MvccError::backend)?;
        tracing::info!(dir = %dir.display(), "backend checkpoint created");
        Ok(())
    }

    /// Compacts every column family through all levels, dropping deleted
    /// and overwritten data (etcd's Defragment). Reads and writes go on
    /// meanwhile: RocksDB compacts in the background of its own write path,
    /// and automatic compactions are not blocked. Returns when done.
    pub fn defragment(&self) -> Result<(), MvccError> {
        let before = self.size_bytes()?;
        let mut options = CompactOptions::default();
        options.set_exclusive_manual_compaction(false);
        options.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        for name in std::iter::once(CF_DEFAULT).chain(COLUMN_FAMILIES) {
            let cf = self.cf(name)?;
            self.db.flush_cf(cf).map_err(MvccError::backend)?;
            self.db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
        }
        tracing::info!(
            size_before = before,
            size_after = self.size_bytes()?,
            "backend defragmented"
        );
        Ok(())
    }

    /// Bytes the database occupies: every SST file plus every memtable
    /// (etcd's `etcd_mvcc_db_total_size_in_bytes`, the quota's measure). An
    /// error is never read as a size: the quota must not turn off.
    pub fn size_bytes(&self) -> Result<u64, MvccError> {
        Ok(self.sum_property(c"rocksdb.total-sst-files-size")?
            + self.sum_property(c"rocksdb.size-all-mem-tables")?)
    }

    /// Bytes in use: live SST files plus the memtables not yet flushed
    /// (etcd's `etcd_mvcc_db_total_size_in_use_in_bytes`).
    pub fn size_in_use_bytes(&self) -> Result<u64, MvccError> {
        Ok(self.sum_property(c"rocksdb.live-sst-files-size")?
            + self.sum_property(c"rocksdb.cur-size-all-mem-tables")?)
    }

    /// An integer property summed over every column family; RocksDB answers
    /// these from memory.
    fn sum_property(&self, name: &std::ffi::CStr) -> Result<u64, MvccError> {
        let mut sum = 0;
        for cf in std::iter::once(CF_DEFAULT).chain(COLUMN_FAMILIES) {
            let value = self
                .db
                .property_int_value_cf(self.cf(cf)?, name)
                .map_err(MvccError::backend)?;
            sum += value.ok_or_else(|| {
                MvccError::Corrupt(format!("RocksDB does not know the property {name:?}"))
            })?;
        }
        Ok(sum)
    }
}

/// The handle of column family `name` of any database (the live one or a
/// checkpoint opened read-only), or [`MvccError::UnknownColumnFamily`].
pub(crate) fn column_family<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, MvccError> {
    db.cf_handle(name)
        .ok_or_else(|| MvccError::UnknownColumnFamily(name.to_owned()))
}

/// The entries of one column family in key order, from [`Backend::scan`] or
/// [`Backend::scan_prefix`]: `(key, value)` pairs, or the error that ended the
/// scan.
pub struct Scan<'a> {
    inner: DBIteratorWithThreadMode<'a, DB>,
    /// Set for a prefix scan: the scan ends at the first key without it.
    prefix: Option<Vec<u8>>,
    /// Past the prefix, or after an error.
    done: bool,
}

impl std::fmt::Debug for Scan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<(Box<[u8]>, Box<[u8]>), MvccError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let entry = match self.inner.next()? {
            Ok(entry) => entry,
            Err(e) => {
                self.done = true;
                return Some(Err(MvccError::backend(e)));
            }
        };
        if let Some(prefix) = &self.prefix {
            if !entry.0.starts_with(prefix) {
                self.done = true;
                return None;
            }
        }
        Some(Ok(entry))
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

/// One write of a [`BackendBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Sets `key` to `value` in column family `cf`.
    Put {
        /// The column family.
        cf: String,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key` from column family `cf`.
    Delete {
        /// The column family.
        cf: String,
        /// The key.
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

    /// Whether any operation touches column family `cf`.
    pub(crate) fn touches(&self, cf: &str) -> bool {
        self.ops.iter().any(|op| match op {
            BatchOp::Put { cf: op_cf, .. } | BatchOp::Delete { cf: op_cf, .. } => op_cf == cf,
        })
    }

    /// What the batch leaves under `key` of column family `cf`: `None` if
    /// it does not write it, `Some(None)` if it deletes it last.
    pub(crate) fn last_write(&self, cf: &str, key: &[u8]) -> Option<Option<&[u8]>> {
        self.ops.iter().rev().find_map(|op| match op {
            BatchOp::Put {
                cf: op_cf,
                key: op_key,
                value,
            } if op_cf == cf && op_key == key => Some(Some(value.as_slice())),
            BatchOp::Delete {
                cf: op_cf,
                key: op_key,
            } if op_cf == cf && op_key == key => Some(None),
            _ => None,
        })
    }

    /// The operations, in the order they run; lets an in-memory stand-in for
    /// the backend (in another crate's tests, say) apply a batch.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
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
                assert!(backend.has_column_family(cf), "{cf}");
            }
            assert!(!backend.has_column_family("nope"));
            let mut batch = BackendBatch::new();
            batch.put_cf(CF_LEASE, b"l1", b"one");
            batch.put_cf(CF_AUTH, b"enabled", b"1");
            batch.put_cf(CF_LEASE, b"l2", b"two");
            batch.delete_cf(CF_LEASE, b"l1");
            backend.write(batch).unwrap();
            backend.sync().unwrap();
        }
        let backend = Backend::open(dir.path()).unwrap();
        assert_eq!(backend.get(CF_LEASE, b"l1").unwrap(), None);
        assert_eq!(backend.get(CF_LEASE, b"l2").unwrap(), Some(b"two".to_vec()));
        assert_eq!(
            backend.get(CF_AUTH, b"enabled").unwrap(),
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
        assert_eq!(backend.get(CF_LEASE, b"l1").unwrap(), None);
        assert_eq!(
            backend.get("leases", b"l2"),
            Err(MvccError::UnknownColumnFamily("leases".into()))
        );
        assert!(matches!(
            backend.scan("leases"),
            Err(MvccError::UnknownColumnFamily(_))
        ));
    }

    #[test]
    fn scans_list_a_family_or_a_prefix_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let mut batch = BackendBatch::new();
        for key in ["m/2", "a", "m/1", "n", "m"] {
            batch.put_cf(CF_MEMBERS, key, key.to_uppercase());
        }
        batch.put_cf(CF_ALARM, b"m/3", b"other family");
        backend.write(batch).unwrap();
        let entries = |scan: Scan<'_>| -> Vec<(String, String)> {
            scan.map(|entry| {
                let (key, value) = entry.unwrap();
                (
                    String::from_utf8(key.into()).unwrap(),
                    String::from_utf8(value.into()).unwrap(),
                )
            })
            .collect()
        };
        let pair = |k: &str| (k.to_owned(), k.to_uppercase());
        assert_eq!(
            entries(backend.scan(CF_MEMBERS).unwrap()),
            ["a", "m", "m/1", "m/2", "n"].map(pair)
        );
        assert_eq!(
            entries(backend.scan_prefix(CF_MEMBERS, b"m/").unwrap()),
            ["m/1", "m/2"].map(pair)
        );
        assert_eq!(
            entries(backend.scan_prefix(CF_MEMBERS, b"").unwrap()).len(),
            5
        );
        assert!(entries(backend.scan_prefix(CF_MEMBERS, b"z").unwrap()).is_empty());
        assert!(entries(backend.scan(CF_LEASE).unwrap()).is_empty());
    }

    #[test]
    fn sizes_grow_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let (total_before, in_use_before) = (
            backend.size_bytes().unwrap(),
            backend.size_in_use_bytes().unwrap(),
        );
        let mut batch = BackendBatch::new();
        for i in 0u32..1000 {
            batch.put_cf(CF_KEY, i.to_be_bytes(), [7u8; 1024]);
        }
        backend.write(batch).unwrap();
        assert!(backend.size_bytes().unwrap() >= total_before + 1000 * 1024);
        assert!(backend.size_in_use_bytes().unwrap() >= in_use_before + 1000 * 1024);
        backend.db().flush_cf(backend.cf(CF_KEY).unwrap()).unwrap();
        assert!(backend.size_bytes().unwrap() > 0);
        assert!(backend.size_in_use_bytes().unwrap() <= backend.size_bytes().unwrap());
    }

    #[test]
    fn defragment_keeps_every_live_key_while_writes_go_on() {
        let (_dir, store) = crate::test_util::new_store();
        for i in 0..2000 {
            crate::test_util::put(&store, &format!("k{i:05}"), &"x".repeat(100));
        }
        crate::test_util::delete(&store, "k00000", "k01000");
        crate::test_util::compact_at(&store, store.current_revision()).unwrap();
        let expected = crate::test_util::all_kvs(&store);
        assert_eq!(expected.len(), 1000);
        let revisions = crate::test_util::stored_revisions(&store);

        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                for i in 0..200 {
                    crate::test_util::put(&store, &format!("w{i:03}"), "during");
                }
            });
            store.backend().defragment().unwrap();
            writer.join().unwrap();
        });
        let after = crate::test_util::all_kvs(&store);
        assert_eq!(after.len(), 1200);
        assert_eq!(after[..1000], expected[..]);
        assert_eq!(
            crate::test_util::stored_revisions(&store)[..revisions.len()],
            revisions[..]
        );
        store.backend().defragment().unwrap();
        assert_eq!(crate::test_util::all_kvs(&store), after);
    }
}
