//! Every error a client can see, with etcd's gRPC code and exact message: clients map
//! errors by both (etcd's `rpctypes`), so these strings are part of the wire contract.

use tonic::{Code, Status};

/// A client-visible etcd error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// A request without a key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A value given together with `ignore_value`.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A lease given together with `ignore_lease`.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// More operations in one txn branch than `--max-txn-ops`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// The same key written twice in one txn.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// An unknown sort order or target.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A revision older than the compaction point.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A revision newer than the store's.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The backend quota is exhausted (NOSPACE alarm).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// An unknown lease.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A lease id already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A lease TTL over the maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A proposal larger than `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// Too many proposals pending.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// No leader is known.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The request needs the leader.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// Leadership changed while the request was in flight.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The server is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The request did not complete in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The cluster is unhealthy.
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// Data corruption was detected.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// Missing permission.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// A gRPC message over the receive limit, worded as grpc-go words it.
    #[error("grpc: received message larger than max ({got} vs. {max})")]
    MessageTooLarge {
        /// Encoded size of the message received.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// MemberAdd of a member id that exists.
    #[error("etcdserver: member ID already exist")]
    MemberExist,
    /// MemberAdd/MemberUpdate with peer URLs another member has.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExist,
    /// A change that would leave too few started members for a quorum.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    MemberNotEnoughStarted,
    /// Malformed peer URLs.
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    /// No member with that id.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// MemberPromote of a voting member.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// MemberPromote of a learner still behind the leader.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// More learners than allowed.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// MoveLeader to a member that cannot lead.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// A member that was removed.
    #[error("etcdserver: ID removed")]
    IdRemoved,
    /// An RPC cairn does not serve (yet).
    #[error("unknown method {0}")]
    Unimplemented(String),
    /// A server-side failure with no etcd equivalent.
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl EtcdError {
    /// The gRPC status code etcd answers with.
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | InvalidSortOption | RequestTooLarge => Code::InvalidArgument,
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests | MessageTooLarge { .. } => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists
            | NotLeader
            | MemberExist
            | PeerUrlExist
            | MemberNotEnoughStarted
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | BadLeaderTransferee
            | IdRemoved => Code::FailedPrecondition,
            MemberBadUrls => Code::InvalidArgument,
            NoLeader | LeaderChanged | Stopped | Timeout | Unhealthy => Code::Unavailable,
            Corrupt => Code::DataLoss,
            PermissionDenied => Code::PermissionDenied,
            Unimplemented(_) => Code::Unimplemented,
            Internal(_) => Code::Unknown,
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}
