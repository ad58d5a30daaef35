//! What a client sees when its request fails on this member. Every error of the store, the
//! lessor, the raft node and a call forwarded to the leader becomes one of etcd's errors
//! here, in one exhaustive match: a new variant anywhere does not compile until it is
//! given its answer. The codes and messages themselves belong to [`EtcdError`].

use cairn_auth::AuthError;
use cairn_grpc_gateway::EtcdError;
use cairn_lease_manager::LeaseError;
use cairn_mvcc_store::MvccError;
use cairn_raft_node::RaftError;

/// A failure on the way to answering a client.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Failure<'a> {
    /// The store refused or failed the request.
    Store(&'a MvccError),
    /// The lessor refused or failed the request.
    Lease(&'a LeaseError),
    /// Auth refused the request or its credentials.
    Auth(&'a AuthError),
    /// The raft node did not take the proposal or read.
    Raft {
        /// What it said.
        error: &'a RaftError,
        /// Whether the member knew of a leader when it failed.
        leader_known: bool,
    },
    /// The leader answered a forwarded call with an error, or could not be reached.
    Forwarded {
        /// The answer.
        status: &'a tonic::Status,
        /// What the call was for.
        call: ForwardedCall,
    },
}

/// Why a member forwarded a call to the leader; it decides what an unreachable leader
/// means to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardedCall {
    /// A lease keep-alive or time-to-live: the client retries on a leader change.
    Lease,
    /// A membership change only the leader can judge: etcd calls the cluster unhealthy.
    Membership,
}

impl Failure<'_> {
    /// etcd's answer to the client.
    pub(crate) fn to_client(self) -> EtcdError {
        match self {
            Failure::Store(MvccError::Compacted) => EtcdError::Compacted,
            Failure::Store(MvccError::FutureRevision) => EtcdError::FutureRevision,
            Failure::Store(MvccError::EmptyKey) => EtcdError::EmptyKey,
            Failure::Store(MvccError::KeyNotFound) => EtcdError::KeyNotFound,
            Failure::Store(MvccError::ValueProvided) => EtcdError::ValueProvided,
            Failure::Store(MvccError::LeaseProvided) => EtcdError::LeaseProvided,
            Failure::Store(MvccError::TooManyOps) => EtcdError::TooManyOps,
            Failure::Store(MvccError::DuplicateKey) => EtcdError::DuplicateKey,
            Failure::Store(MvccError::InvalidSortOption) => EtcdError::InvalidSortOption,
            // The member's own faults: etcd has no status for them and answers Unknown.
            Failure::Store(
                e @ (MvccError::Backend(_)
                | MvccError::UnknownColumnFamily(_)
                | MvccError::Corrupt(_)
                | MvccError::Io(_)
                | MvccError::Archive(_)
                | MvccError::Restore(_)),
            ) => EtcdError::Internal(e.to_string()),

            Failure::Lease(LeaseError::NotFound) => EtcdError::LeaseNotFound,
            Failure::Lease(LeaseError::Exists) => EtcdError::LeaseExists,
            Failure::Lease(LeaseError::TtlTooLarge) => EtcdError::LeaseTtlTooLarge,
            // A follower's lessor, or a new leader's not promoted yet: the client retries.
            Failure::Lease(LeaseError::NotPrimary) => EtcdError::NotLeader,
            Failure::Lease(e @ LeaseError::Corrupt(_)) => EtcdError::Internal(e.to_string()),
            Failure::Lease(LeaseError::Backend(e)) => Failure::Store(e).to_client(),

            Failure::Auth(e) => match e {
                AuthError::RootUserNotExist => EtcdError::RootUserNotExist,
                AuthError::RootRoleNotExist => EtcdError::RootRoleNotExist,
                AuthError::UserAlreadyExist => EtcdError::UserAlreadyExist,
                AuthError::UserEmpty => EtcdError::UserEmpty,
                AuthError::UserNotFound => EtcdError::UserNotFound,
                AuthError::RoleAlreadyExist => EtcdError::RoleAlreadyExist,
                AuthError::RoleNotFound => EtcdError::RoleNotFound,
                AuthError::RoleEmpty => EtcdError::RoleEmpty,
                AuthError::AuthFailed => EtcdError::AuthFailed,
                AuthError::PermissionNotGiven => EtcdError::PermissionNotGiven,
                AuthError::PermissionDenied => EtcdError::PermissionDenied,
                AuthError::RoleNotGranted => EtcdError::RoleNotGranted,
                AuthError::PermissionNotGranted => EtcdError::PermissionNotGranted,
                AuthError::AuthNotEnabled => EtcdError::AuthNotEnabled,
                AuthError::InvalidAuthToken => EtcdError::InvalidAuthToken,
                AuthError::InvalidAuthMgmt => EtcdError::InvalidAuthMgmt,
                AuthError::AuthOldRevision => EtcdError::AuthOldRevision,
                // etcd passes these through with code Unknown and their own words.
                AuthError::NoPasswordUser
                | AuthError::VerifyOnly
                | AuthError::PasswordTooLong
                | AuthError::PasswordNotHashed
                | AuthError::Internal(_) => EtcdError::AuthUnknown(e.to_string()),
            },

            Failure::Raft {
                error: RaftError::ProposalDropped(_),
                leader_known: false,
            } => EtcdError::NoLeader,
            Failure::Raft {
                error: RaftError::ProposalDropped(_),
                leader_known: true,
            } => EtcdError::LeaderChanged,
            Failure::Raft {
                error: RaftError::TooManyRequests,
                ..
            } => EtcdError::TooManyRequests,
            Failure::Raft {
                error: RaftError::DeadlineExceeded,
                ..
            } => EtcdError::Timeout,
            Failure::Raft {
                error: RaftError::Stopped | RaftError::Fatal(_),
                ..
            } => EtcdError::Stopped,

            Failure::Forwarded { status, call } => {
                EtcdError::from_status(status).unwrap_or_else(|| match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled => match call {
                        ForwardedCall::Lease => EtcdError::LeaderChanged,
                        ForwardedCall::Membership => EtcdError::Unhealthy,
                    },
                    _ => EtcdError::Internal(
                        status.message().trim_start_matches("etcdserver: ").into(),
                    ),
                })
            }
        }
    }
}

/// Whether a store error is this member's own fault (its disk, its data) rather than an
/// answer to the request. Applying a committed entry must stop on such a fault: every
/// member applies the same log, and one that skipped an entry would diverge.
pub(crate) fn is_member_fault(e: &MvccError) -> bool {
    match e {
        MvccError::Compacted
        | MvccError::FutureRevision
        | MvccError::EmptyKey
        | MvccError::KeyNotFound
        | MvccError::ValueProvided
        | MvccError::LeaseProvided
        | MvccError::TooManyOps
        | MvccError::DuplicateKey
        | MvccError::InvalidSortOption => false,
        MvccError::Backend(_)
        | MvccError::UnknownColumnFamily(_)
        | MvccError::Corrupt(_)
        | MvccError::Io(_)
        | MvccError::Archive(_)
        | MvccError::Restore(_) => true,
    }
}

/// A store error as the client sees it.
pub(crate) fn store(e: &MvccError) -> EtcdError {
    Failure::Store(e).to_client()
}

/// A lessor error as the client sees it.
pub(crate) fn lease(e: &LeaseError) -> EtcdError {
    Failure::Lease(e).to_client()
}

/// An auth error as the client sees it.
pub(crate) fn auth(e: &AuthError) -> EtcdError {
    Failure::Auth(e).to_client()
}

/// A raft error as the client sees it.
pub(crate) fn raft(error: &RaftError, leader_known: bool) -> EtcdError {
    Failure::Raft {
        error,
        leader_known,
    }
    .to_client()
}

/// The leader's answer to a forwarded call as the client sees it.
pub(crate) fn forwarded(status: &tonic::Status, call: ForwardedCall) -> EtcdError {
    Failure::Forwarded { status, call }.to_client()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_mvcc_store::snapshot::ArchiveError;
    use tonic::Code;

    /// A RocksDB error, as the store reports one (a database over a plain file).
    fn backend_error() -> MvccError {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        match cairn_mvcc_store::Backend::open(&file) {
            Err(e @ MvccError::Backend(_)) => e,
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    fn answer(f: Failure<'_>) -> (Code, String) {
        let status = tonic::Status::from(f.to_client());
        (status.code(), status.message().to_string())
    }

    fn expect(code: Code, message: &str) -> (Code, String) {
        (code, message.to_string())
    }

    #[test]
    fn every_auth_error_keeps_its_code_and_message() {
        for e in [
            AuthError::RootUserNotExist,
            AuthError::RootRoleNotExist,
            AuthError::UserAlreadyExist,
            AuthError::UserEmpty,
            AuthError::UserNotFound,
            AuthError::RoleAlreadyExist,
            AuthError::RoleNotFound,
            AuthError::RoleEmpty,
            AuthError::AuthFailed,
            AuthError::PermissionNotGiven,
            AuthError::PermissionDenied,
            AuthError::RoleNotGranted,
            AuthError::PermissionNotGranted,
            AuthError::AuthNotEnabled,
            AuthError::InvalidAuthToken,
            AuthError::InvalidAuthMgmt,
            AuthError::AuthOldRevision,
            AuthError::NoPasswordUser,
            AuthError::VerifyOnly,
            AuthError::PasswordTooLong,
            AuthError::PasswordNotHashed,
            AuthError::Internal("x".into()),
        ] {
            assert_eq!(
                answer(Failure::Auth(&e)),
                (e.code(), e.to_string()),
                "{e:?}"
            );
        }
    }

    #[test]
    fn every_store_error_has_etcds_answer() {
        let backend = backend_error();
        let backend_message = format!("etcdserver: {backend}");
        let table = [
            (
                MvccError::Compacted,
                expect(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision has been compacted",
                ),
                false,
            ),
            (
                MvccError::FutureRevision,
                expect(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision is a future revision",
                ),
                false,
            ),
            (
                MvccError::EmptyKey,
                expect(Code::InvalidArgument, "etcdserver: key is not provided"),
                false,
            ),
            (
                MvccError::KeyNotFound,
                expect(Code::InvalidArgument, "etcdserver: key not found"),
                false,
            ),
            (
                MvccError::ValueProvided,
                expect(Code::InvalidArgument, "etcdserver: value is provided"),
                false,
            ),
            (
                MvccError::LeaseProvided,
                expect(Code::InvalidArgument, "etcdserver: lease is provided"),
                false,
            ),
            (
                MvccError::TooManyOps,
                expect(
                    Code::InvalidArgument,
                    "etcdserver: too many operations in txn request",
                ),
                false,
            ),
            (
                MvccError::DuplicateKey,
                expect(
                    Code::InvalidArgument,
                    "etcdserver: duplicate key given in txn request",
                ),
                false,
            ),
            (
                MvccError::InvalidSortOption,
                expect(Code::InvalidArgument, "etcdserver: invalid sort option"),
                false,
            ),
            (backend, (Code::Unknown, backend_message), true),
            (
                MvccError::UnknownColumnFamily("x".into()),
                expect(
                    Code::Unknown,
                    "etcdserver: mvcc: unknown column family \"x\"",
                ),
                true,
            ),
            (
                MvccError::Corrupt("key index".into()),
                expect(Code::Unknown, "etcdserver: mvcc: corrupt data: key index"),
                true,
            ),
            (
                MvccError::Io("writing /d: full".into()),
                expect(Code::Unknown, "etcdserver: mvcc: io: writing /d: full"),
                true,
            ),
            (
                MvccError::Archive(ArchiveError::Truncated),
                expect(
                    Code::Unknown,
                    "etcdserver: mvcc: snapshot archive: truncated",
                ),
                true,
            ),
            (
                MvccError::Restore("busy".into()),
                expect(Code::Unknown, "etcdserver: mvcc: restore: busy"),
                true,
            ),
        ];
        for (error, expected, fault) in &table {
            assert_eq!(answer(Failure::Store(error)), *expected, "{error:?}");
            assert_eq!(is_member_fault(error), *fault, "{error:?}");
        }
        // One row for each variant: the match below has no catch-all arm.
        let mut rows: Vec<usize> = table
            .iter()
            .map(|(e, _, _)| match e {
                MvccError::Compacted => 0,
                MvccError::FutureRevision => 1,
                MvccError::EmptyKey => 2,
                MvccError::KeyNotFound => 3,
                MvccError::ValueProvided => 4,
                MvccError::LeaseProvided => 5,
                MvccError::TooManyOps => 6,
                MvccError::DuplicateKey => 7,
                MvccError::InvalidSortOption => 8,
                MvccError::Backend(_) => 9,
                MvccError::UnknownColumnFamily(_) => 10,
                MvccError::Corrupt(_) => 11,
                MvccError::Io(_) => 12,
                MvccError::Archive(_) => 13,
                MvccError::Restore(_) => 14,
            })
            .collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..15).collect::<Vec<_>>());
    }

    #[test]
    fn every_lease_error_has_etcds_answer() {
        let table = [
            (
                LeaseError::NotFound,
                expect(Code::NotFound, "etcdserver: requested lease not found"),
            ),
            (
                LeaseError::Exists,
                expect(Code::FailedPrecondition, "etcdserver: lease already exists"),
            ),
            (
                LeaseError::TtlTooLarge,
                expect(Code::OutOfRange, "etcdserver: too large lease TTL"),
            ),
            (
                LeaseError::NotPrimary,
                expect(Code::FailedPrecondition, "etcdserver: not leader"),
            ),
            (
                LeaseError::Corrupt("lease 7".into()),
                expect(Code::Unknown, "etcdserver: corrupt lease record: lease 7"),
            ),
            (
                LeaseError::Backend(MvccError::Corrupt("lease bucket".into())),
                expect(
                    Code::Unknown,
                    "etcdserver: mvcc: corrupt data: lease bucket",
                ),
            ),
        ];
        for (error, expected) in &table {
            assert_eq!(answer(Failure::Lease(error)), *expected, "{error:?}");
        }
        let mut rows: Vec<usize> = table
            .iter()
            .map(|(e, _)| match e {
                LeaseError::NotFound => 0,
                LeaseError::Exists => 1,
                LeaseError::TtlTooLarge => 2,
                LeaseError::NotPrimary => 3,
                LeaseError::Corrupt(_) => 4,
                LeaseError::Backend(_) => 5,
            })
            .collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn every_raft_error_has_etcds_answer() {
        let dropped = RaftError::ProposalDropped("no leader".into());
        let table = [
            (
                &dropped,
                false,
                expect(Code::Unavailable, "etcdserver: no leader"),
            ),
            (
                &dropped,
                true,
                expect(Code::Unavailable, "etcdserver: leader changed"),
            ),
            (
                &RaftError::TooManyRequests,
                true,
                expect(Code::ResourceExhausted, "etcdserver: too many requests"),
            ),
            (
                &RaftError::DeadlineExceeded,
                true,
                expect(Code::Unavailable, "etcdserver: request timed out"),
            ),
            (
                &RaftError::Stopped,
                true,
                expect(Code::Unavailable, "etcdserver: server stopped"),
            ),
            (
                &RaftError::Fatal("disk".into()),
                false,
                expect(Code::Unavailable, "etcdserver: server stopped"),
            ),
        ];
        for (error, leader_known, expected) in table.iter() {
            let failure = Failure::Raft {
                error,
                leader_known: *leader_known,
            };
            assert_eq!(answer(failure), *expected, "{error:?}");
        }
        let mut rows: Vec<usize> = table
            .iter()
            .map(|(e, _, _)| match e {
                RaftError::ProposalDropped(_) => 0,
                RaftError::TooManyRequests => 1,
                RaftError::DeadlineExceeded => 2,
                RaftError::Stopped => 3,
                RaftError::Fatal(_) => 4,
            })
            .collect();
        rows.dedup();
        assert_eq!(rows, (0..5).collect::<Vec<_>>());
    }

    #[test]
    fn forwarded_answers_keep_etcds_error_or_say_the_leader_is_gone() {
        use ForwardedCall::{Lease, Membership};
        let leader_said = tonic::Status::from(EtcdError::LearnerNotReady);
        let cases = [
            (
                leader_said.clone(),
                Membership,
                expect(
                    Code::FailedPrecondition,
                    "etcdserver: can only promote a learner member which is in sync with leader",
                ),
            ),
            (
                tonic::Status::from(EtcdError::LeaseNotFound),
                Lease,
                expect(Code::NotFound, "etcdserver: requested lease not found"),
            ),
            (
                tonic::Status::unavailable("tcp connect error"),
                Lease,
                expect(Code::Unavailable, "etcdserver: leader changed"),
            ),
            (
                tonic::Status::deadline_exceeded("timeout"),
                Lease,
                expect(Code::Unavailable, "etcdserver: leader changed"),
            ),
            (
                tonic::Status::unavailable("tcp connect error"),
                Membership,
                expect(Code::Unavailable, "etcdserver: unhealthy cluster"),
            ),
            (
                tonic::Status::unknown("etcdserver: mvcc: io: full"),
                Membership,
                expect(Code::Unknown, "etcdserver: mvcc: io: full"),
            ),
        ];
        for (status, call, expected) in &cases {
            let failure = Failure::Forwarded {
                status,
                call: *call,
            };
            assert_eq!(answer(failure), *expected, "{status:?}");
        }
    }
}
