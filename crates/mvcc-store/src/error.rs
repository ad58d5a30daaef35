//! The store's one error type, [`MvccError`] (snapshot archives have theirs in
//! [`crate::snapshot`]).

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
    Archive(#[from] cairn_snapshot_archive::ArchiveError),
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
}
