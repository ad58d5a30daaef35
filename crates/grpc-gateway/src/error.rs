//! Every error a client can see, with etcd's gRPC code and exact message: clients map
//! errors by both (etcd's `rpctypes`), so these strings are part of the wire contract.
//! This is the one place that spells them: other crates map their own errors to an
//! [`EtcdError`], and an answer forwarded from another member is read back with
//! [`EtcdError::from_status`].

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
    /// A downgrade target that is not a semantic version.
    #[error("etcdserver: wrong downgrade target version format")]
    WrongDowngradeVersionFormat,
    /// A downgrade target other than the previous minor version.
    #[error("etcdserver: invalid downgrade target version")]
    InvalidDowngradeTargetVersion,
    /// A downgrade cancelled while none is in progress.
    #[error("etcdserver: no inflight downgrade job")]
    NoInflightDowngrade,
    /// Unlock of a key that is not a lock (no lease, or not `<name>/<lease in hex>`).
    #[error("lock: key is not a lock")]
    NotALock,
    /// Proclaim or another leader-only call by a candidate that does not lead.
    #[error("election: not leader")]
    ElectionNotLeader,
    /// Leader of an election nobody leads.
    #[error("election: no leader")]
    ElectionNoLeader,
    /// The lease of a lock or candidacy expired while it waited.
    #[error("session expired")]
    SessionExpired,
    /// An Election call without its `leader` field.
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// A RangeStream with a sort or a revision filter (etcd 3.7 streams key order only).
    #[error("etcdserver: range stream does not support sorting or revision filters")]
    RangeStreamUnsupported,
    /// AuthEnable without a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while `root` lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of a name in use.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// An empty user name, or no credentials while auth is on.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// No user of that name.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of a name in use.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// No role of that name.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// An empty role name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// A wrong user name or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// RoleGrantPermission without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// UserRevokeRole of a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticate while auth is off.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// An unknown, expired or badly signed token.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// Deleting root, revoking root's role, or an invalid permission range.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// Credentials checked at an older auth revision: authenticate again.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// An auth failure etcd passes through without a status of its own (code Unknown,
    /// the message as it is: `auth: ...`, `bcrypt: ...`).
    #[error("{0}")]
    AuthUnknown(String),
    /// An RPC cairn does not serve (yet).
    #[error("unknown method {0}")]
    Unimplemented(String),
    /// A server-side failure with no etcd equivalent.
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl EtcdError {
    /// Every error whose message is fixed (all but those carrying details), for reading a
    /// status back ([`EtcdError::from_status`]).
    pub const FIXED: [EtcdError; 57] = {
        use EtcdError::*;
        [
            EmptyKey,
            KeyNotFound,
            ValueProvided,
            LeaseProvided,
            TooManyOps,
            DuplicateKey,
            InvalidSortOption,
            Compacted,
            FutureRevision,
            NoSpace,
            LeaseNotFound,
            LeaseExists,
            LeaseTtlTooLarge,
            RequestTooLarge,
            TooManyRequests,
            NoLeader,
            NotLeader,
            LeaderChanged,
            Stopped,
            Timeout,
            Unhealthy,
            Corrupt,
            PermissionDenied,
            MemberExist,
            PeerUrlExist,
            MemberNotEnoughStarted,
            MemberBadUrls,
            MemberNotFound,
            MemberNotLearner,
            LearnerNotReady,
            TooManyLearners,
            BadLeaderTransferee,
            RangeStreamUnsupported,
            WrongDowngradeVersionFormat,
            InvalidDowngradeTargetVersion,
            NoInflightDowngrade,
            NotALock,
            ElectionNotLeader,
            ElectionNoLeader,
            SessionExpired,
            MissingLeaderKey,
            RootUserNotExist,
            RootRoleNotExist,
            UserAlreadyExist,
            UserEmpty,
            UserNotFound,
            RoleAlreadyExist,
            RoleNotFound,
            RoleEmpty,
            AuthFailed,
            PermissionNotGiven,
            RoleNotGranted,
            PermissionNotGranted,
            AuthNotEnabled,
            InvalidAuthToken,
            InvalidAuthMgmt,
            AuthOldRevision,
        ]
    };

    /// The error an etcd status stands for when its code and message are one of etcd's
    /// fixed errors (an answer forwarded from another member); `None` for anything else.
    pub fn from_status(status: &Status) -> Option<EtcdError> {
        EtcdError::FIXED
            .iter()
            .find(|e| e.code() == status.code() && e.to_string() == status.message())
            .cloned()
    }

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
            | BadLeaderTransferee => Code::FailedPrecondition,
            MemberBadUrls | WrongDowngradeVersionFormat | InvalidDowngradeTargetVersion => {
                Code::InvalidArgument
            }
            NoInflightDowngrade => Code::FailedPrecondition,
            NotALock => Code::InvalidArgument,
            // Plain errors of etcd's concurrency package: grpc-go answers Unknown.
            ElectionNotLeader | ElectionNoLeader | SessionExpired | MissingLeaderKey => {
                Code::Unknown
            }
            NoLeader | LeaderChanged | Stopped | Timeout | Unhealthy => Code::Unavailable,
            Corrupt => Code::DataLoss,
            PermissionDenied => Code::PermissionDenied,
            RootUserNotExist | RootRoleNotExist | UserAlreadyExist | UserNotFound
            | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted
            | AuthNotEnabled => Code::FailedPrecondition,
            UserEmpty | RoleEmpty | AuthFailed | PermissionNotGiven | InvalidAuthMgmt
            | AuthOldRevision => Code::InvalidArgument,
            InvalidAuthToken => Code::Unauthenticated,
            Unimplemented(_) | RangeStreamUnsupported => Code::Unimplemented,
            Internal(_) | AuthUnknown(_) => Code::Unknown,
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcd's code and message for each variant (its `rpctypes`), with the variant's place
    /// in the table: the match has an arm for every variant, and the table test below
    /// fails unless `samples` holds one of each.
    fn etcd_answer(e: &EtcdError) -> (usize, Code, String) {
        use EtcdError::*;
        let (n, code, message) = match e {
            EmptyKey => (0, Code::InvalidArgument, "etcdserver: key is not provided"),
            KeyNotFound => (1, Code::InvalidArgument, "etcdserver: key not found"),
            ValueProvided => (2, Code::InvalidArgument, "etcdserver: value is provided"),
            LeaseProvided => (3, Code::InvalidArgument, "etcdserver: lease is provided"),
            TooManyOps => (
                4,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            DuplicateKey => (
                5,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            InvalidSortOption => (6, Code::InvalidArgument, "etcdserver: invalid sort option"),
            Compacted => (
                7,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            FutureRevision => (
                8,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            NoSpace => (
                9,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            LeaseNotFound => (10, Code::NotFound, "etcdserver: requested lease not found"),
            LeaseExists => (
                11,
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            LeaseTtlTooLarge => (12, Code::OutOfRange, "etcdserver: too large lease TTL"),
            RequestTooLarge => (
                13,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            TooManyRequests => (14, Code::ResourceExhausted, "etcdserver: too many requests"),
            NoLeader => (15, Code::Unavailable, "etcdserver: no leader"),
            NotLeader => (16, Code::FailedPrecondition, "etcdserver: not leader"),
            LeaderChanged => (17, Code::Unavailable, "etcdserver: leader changed"),
            Stopped => (18, Code::Unavailable, "etcdserver: server stopped"),
            Timeout => (19, Code::Unavailable, "etcdserver: request timed out"),
            Unhealthy => (20, Code::Unavailable, "etcdserver: unhealthy cluster"),
            Corrupt => (21, Code::DataLoss, "etcdserver: corrupt cluster"),
            PermissionDenied => (22, Code::PermissionDenied, "etcdserver: permission denied"),
            MemberExist => (
                23,
                Code::FailedPrecondition,
                "etcdserver: member ID already exist",
            ),
            PeerUrlExist => (
                24,
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            MemberNotEnoughStarted => (
                25,
                Code::FailedPrecondition,
                "etcdserver: re-configuration failed due to not enough started members",
            ),
            MemberBadUrls => (
                26,
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid",
            ),
            MemberNotFound => (27, Code::NotFound, "etcdserver: member not found"),
            MemberNotLearner => (
                28,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            LearnerNotReady => (
                29,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            TooManyLearners => (
                30,
                Code::FailedPrecondition,
                "etcdserver: too many learner members in cluster",
            ),
            BadLeaderTransferee => (
                31,
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ),
            // grpc-go's wording, as etcd's server answers an oversized message.
            MessageTooLarge { got, max } => {
                return (
                    32,
                    Code::ResourceExhausted,
                    format!("grpc: received message larger than max ({got} vs. {max})"),
                )
            }
            WrongDowngradeVersionFormat => (
                36,
                Code::InvalidArgument,
                "etcdserver: wrong downgrade target version format",
            ),
            InvalidDowngradeTargetVersion => (
                37,
                Code::InvalidArgument,
                "etcdserver: invalid downgrade target version",
            ),
            NoInflightDowngrade => (
                38,
                Code::FailedPrecondition,
                "etcdserver: no inflight downgrade job",
            ),
            NotALock => (39, Code::InvalidArgument, "lock: key is not a lock"),
            ElectionNotLeader => (40, Code::Unknown, "election: not leader"),
            ElectionNoLeader => (41, Code::Unknown, "election: no leader"),
            SessionExpired => (42, Code::Unknown, "session expired"),
            MissingLeaderKey => (43, Code::Unknown, "\"leader\" field must be provided"),
            RangeStreamUnsupported => (
                35,
                Code::Unimplemented,
                "etcdserver: range stream does not support sorting or revision filters",
            ),
            RootUserNotExist => (
                44,
                Code::FailedPrecondition,
                "etcdserver: root user does not exist",
            ),
            RootRoleNotExist => (
                45,
                Code::FailedPrecondition,
                "etcdserver: root user does not have root role",
            ),
            UserAlreadyExist => (
                46,
                Code::FailedPrecondition,
                "etcdserver: user name already exists",
            ),
            UserEmpty => (47, Code::InvalidArgument, "etcdserver: user name is empty"),
            UserNotFound => (
                48,
                Code::FailedPrecondition,
                "etcdserver: user name not found",
            ),
            RoleAlreadyExist => (
                49,
                Code::FailedPrecondition,
                "etcdserver: role name already exists",
            ),
            RoleNotFound => (
                50,
                Code::FailedPrecondition,
                "etcdserver: role name not found",
            ),
            RoleEmpty => (51, Code::InvalidArgument, "etcdserver: role name is empty"),
            AuthFailed => (
                52,
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            PermissionNotGiven => (
                53,
                Code::InvalidArgument,
                "etcdserver: permission not given",
            ),
            RoleNotGranted => (
                54,
                Code::FailedPrecondition,
                "etcdserver: role is not granted to the user",
            ),
            PermissionNotGranted => (
                55,
                Code::FailedPrecondition,
                "etcdserver: permission is not granted to the role",
            ),
            AuthNotEnabled => (
                56,
                Code::FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            InvalidAuthToken => (57, Code::Unauthenticated, "etcdserver: invalid auth token"),
            InvalidAuthMgmt => (
                58,
                Code::InvalidArgument,
                "etcdserver: invalid auth management",
            ),
            AuthOldRevision => (
                59,
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
            AuthUnknown(why) => return (60, Code::Unknown, why.clone()),
            // grpc-go's answer for a method the server does not register.
            Unimplemented(method) => {
                return (33, Code::Unimplemented, format!("unknown method {method}"))
            }
            // etcd answers an error it has no status for with code Unknown.
            Internal(why) => return (34, Code::Unknown, format!("etcdserver: {why}")),
        };
        (n, code, message.to_string())
    }

    #[test]
    fn every_variant_has_etcds_code_and_message() {
        let mut samples = EtcdError::FIXED.to_vec();
        samples.extend([
            EtcdError::MessageTooLarge {
                got: 2_097_162,
                max: 2_097_152,
            },
            EtcdError::Unimplemented("/etcdserverpb.Maintenance/Downgrade".into()),
            EtcdError::Internal("mvcc: backend: IO error".into()),
            EtcdError::AuthUnknown("bcrypt: password length exceeds 72 bytes".into()),
        ]);
        let mut seen = Vec::new();
        for e in &samples {
            let (n, code, message) = etcd_answer(e);
            let status = Status::from(e.clone());
            assert_eq!(
                (status.code(), status.message()),
                (code, message.as_str()),
                "{e:?}"
            );
            seen.push(n);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..samples.len()).collect::<Vec<_>>(), "one of each");
    }

    #[test]
    fn fixed_errors_read_back_from_their_status() {
        for e in EtcdError::FIXED {
            assert_eq!(EtcdError::from_status(&Status::from(e.clone())), Some(e));
        }
        // The same message with another code, or a message etcd does not have: unknown.
        assert_eq!(
            EtcdError::from_status(&Status::internal("etcdserver: no leader")),
            None
        );
        assert_eq!(
            EtcdError::from_status(&Status::unavailable("transport error")),
            None
        );
        assert_eq!(
            EtcdError::from_status(&Status::from(EtcdError::Internal("x".into()))),
            None
        );
    }
}
