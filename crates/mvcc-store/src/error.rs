//! The store's errors: [`MvccError`], and [`ArchiveError`] for snapshot
//! archives (see [`crate::snapshot`]).

/// Everything that can go wrong in the store.
///
/// The variants a client can see display **exactly** etcd's messages, so the
/// gateway only has to pick the gRPC code; the intended code is written next to
/// each variant. A request that fails with any of them changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    /// The requested revision was compacted away. gRPC `OutOfRange`.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store. gRPC `OutOfRange`.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A request (or a txn compare or op) has an empty key. gRPC `InvalidArgument`.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a missing key, or an empty op in a txn.
    /// gRPC `InvalidArgument`.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put has both `ignore_value` and a value. gRPC `InvalidArgument`.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put has both `ignore_lease` and a lease. gRPC `InvalidArgument`.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn has more compares or ops than allowed. gRPC `InvalidArgument`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn writes one key twice, or puts a key it also deletes.
    /// gRPC `InvalidArgument`.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A range has a sort order or sort target etcd does not know.
    /// gRPC `InvalidArgument`.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// RocksDB failed (its message); the in-memory state is unchanged. gRPC
    /// `Internal`.
    #[error("mvcc: backend: {0}")]
    Backend(String),
    /// A batch named a column family the backend does not have (a bug in
    /// the caller). gRPC `Internal`.
    #[error("mvcc: unknown column family {0:?}")]
    UnknownColumnFamily(String),
    /// Stored data does not decode or contradicts itself. gRPC `Internal`
    /// (`DataLoss` would also fit).
    #[error("mvcc: corrupt data: {0}")]
    Corrupt(String),
    /// A file-system operation failed (message names the path). gRPC `Internal`.
    #[error("mvcc: io: {0}")]
    Io(String),
    /// A snapshot archive was rejected; nothing was written. gRPC
    /// `InvalidArgument` when it came from a client, `Internal` otherwise.
    #[error("mvcc: snapshot archive: {0}")]
    Archive(#[from] ArchiveError),
    /// A restore was asked for something it cannot do (the message says what);
    /// nothing changed. gRPC `Internal` (a bug in the caller).
    #[error("mvcc: restore: {0}")]
    Restore(String),
}

impl MvccError {
    /// An [`MvccError::Backend`] from RocksDB's error; RocksDB's types stay
    /// out of the crate's interface.
    pub(crate) fn backend(err: rocksdb::Error) -> MvccError {
        MvccError::Backend(err.into_string())
    }

    /// An [`MvccError::Io`] naming what was being done to which path.
    pub(crate) fn io(what: &str, path: &std::path::Path, err: std::io::Error) -> MvccError {
        MvccError::Io(format!("{what} {}: {err}", path.display()))
    }
}

/// Why an archive was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// The stream does not start with [`MAGIC`](crate::snapshot::MAGIC): not a
    /// cairn snapshot.
    #[error("not a cairn snapshot (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u32),
    /// The stream ended before the checksum.
    #[error("truncated")]
    Truncated,
    /// A byte where a file or the end was expected.
    #[error("unexpected tag {0}")]
    BadTag(u8),
    /// A file name that is empty, too long, not UTF-8, absolute, or leaves
    /// the directory.
    #[error("bad file name {0:?}")]
    BadName(String),
    /// The same file twice.
    #[error("duplicate file {0:?}")]
    DuplicateName(String),
    /// The checksum does not match the content.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum the archive ends with.
        stored: u32,
        /// The checksum of the bytes received.
        computed: u32,
    },
    /// Bytes after the checksum.
    #[error("data after the checksum")]
    TrailingData,
}
