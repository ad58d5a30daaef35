//! The store's one error type, [`MvccError`] (snapshot archives have theirs in
//! [`crate::snapshot`]).

/// Everything that can go wrong in the store.
///
/// The variants a client can see correspond one to one to etcd's client errors;
/// the intended gRPC code is written next to each. etcd's exact wording on the
/// wire belongs to the gateway (`cairn_grpc_gateway::EtcdError`), which the server
/// maps these to; the messages here are the store's own. A request that fails
/// with any of them changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    /// The requested revision was compacted away. gRPC `OutOfRange`.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store. gRPC `OutOfRange`.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A request (or a txn compare or op) has an empty key. gRPC `InvalidArgument`.
    #[error("mvcc: empty key")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a missing key, or an empty op in a txn.
    /// gRPC `InvalidArgument`.
    #[error("mvcc: ignore_value or ignore_lease on a missing key, or an empty txn op")]
    KeyNotFound,
    /// A put has both `ignore_value` and a value. gRPC `InvalidArgument`.
    #[error("mvcc: a value given with ignore_value")]
    ValueProvided,
    /// A put has both `ignore_lease` and a lease. gRPC `InvalidArgument`.
    #[error("mvcc: a lease given with ignore_lease")]
    LeaseProvided,
    /// A txn has more compares or ops than allowed. gRPC `InvalidArgument`.
    #[error("mvcc: more txn compares or ops than allowed")]
    TooManyOps,
    /// A txn writes one key twice, or puts a key it also deletes.
    /// gRPC `InvalidArgument`.
    #[error("mvcc: a txn writes one key twice")]
    DuplicateKey,
    /// A range has a sort order or sort target etcd does not know.
    /// gRPC `InvalidArgument`.
    #[error("mvcc: unknown sort order or target")]
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
