//! Every error an auth operation can answer, with etcd's gRPC code and exact message.
//!
//! etcd clients recognise errors by code **and** message (`api/v3rpc/rpctypes`), so the
//! strings below are part of the wire contract: the gateway turns an [`AuthError`] into
//! `tonic::Status::new(err.code(), err.to_string())` and nothing else.

use tonic::Code;

/// A client-visible auth error: [`Display`](std::fmt::Display) is etcd's message,
/// [`code`](AuthError::code) its gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// AuthEnable without a `root` user (etcd's `ErrRootUserNotExist`).
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while `root` lacks the `root` role (`ErrRootRoleNotExist`).
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of a name in use (`ErrUserAlreadyExist`).
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// An empty user name, or a request without credentials while auth is on
    /// (`ErrUserEmpty`).
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// No user of that name (`ErrUserNotFound`).
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of a name in use (`ErrRoleAlreadyExist`).
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// No role of that name (`ErrRoleNotFound`).
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// An empty role name (`ErrRoleEmpty`).
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Unknown user, wrong password, or a password login of a no-password user
    /// (`ErrAuthFailed`).
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// RoleGrantPermission without a permission (`ErrPermissionNotGiven`).
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// The user's roles do not allow the request (`ErrPermissionDenied`).
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// UserRevokeRole of a role the user does not have (`ErrRoleNotGranted`).
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have
    /// (`ErrPermissionNotGranted`).
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticate while auth is off (`ErrAuthNotEnabled`).
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A token that is unknown, expired, malformed or badly signed
    /// (`ErrInvalidAuthToken`).
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// Deleting `root` (user or role) or revoking root's `root` role while auth is on,
    /// or granting an empty or inverted key range (`ErrInvalidAuthMgmt`).
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// The request's auth revision is older than the store's: the client must
    /// authenticate again (`ErrAuthOldRevision`).
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// Authenticate of a user created with `no_password`, seen by the password check
    /// (etcd's `auth.ErrNoPasswordUser`, which has no gRPC mapping: `Unknown` with the
    /// `auth:` message). Also a `hashedPassword` that is not base64.
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// Authenticate on a member whose JWT provider only has a public key
    /// (`auth.ErrVerifyOnly`, unmapped in etcd: `Unknown`).
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
    /// A password over bcrypt's 72 bytes (Go's `bcrypt.ErrPasswordTooLong`, unmapped in
    /// etcd: `Unknown`).
    #[error("bcrypt: password length exceeds 72 bytes")]
    PasswordTooLong,
    /// A UserAdd/UserChangePassword reached the apply path with a clear-text password
    /// and no hash: the proposer must call [`hash_user_add`](crate::hash_user_add) /
    /// [`hash_change_password`](crate::hash_change_password) first, so that bcrypt
    /// (slow, salted at random) never runs while applying. etcd hashes such legacy
    /// entries at apply time; cairn has no such legacy and refuses.
    #[error("auth: password reached the apply path without its hash")]
    PasswordNotHashed,
    /// Signing a token or hashing a password failed for another reason (`Unknown`).
    #[error("auth: {0}")]
    Internal(String),
}

impl AuthError {
    /// The gRPC code etcd answers with (`rpctypes.ErrGRPC*`; `Unknown` for the errors
    /// etcd's `togRPCError` does not map).
    pub fn code(&self) -> Code {
        match self {
            Self::RootUserNotExist
            | Self::RootRoleNotExist
            | Self::UserAlreadyExist
            | Self::UserNotFound
            | Self::RoleAlreadyExist
            | Self::RoleNotFound
            | Self::RoleNotGranted
            | Self::PermissionNotGranted
            | Self::AuthNotEnabled => Code::FailedPrecondition,
            Self::UserEmpty
            | Self::RoleEmpty
            | Self::AuthFailed
            | Self::PermissionNotGiven
            | Self::InvalidAuthMgmt
            | Self::AuthOldRevision => Code::InvalidArgument,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::InvalidAuthToken => Code::Unauthenticated,
            Self::NoPasswordUser
            | Self::VerifyOnly
            | Self::PasswordTooLong
            | Self::PasswordNotHashed
            | Self::Internal(_) => Code::Unknown,
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(err: AuthError) -> Self {
        tonic::Status::new(err.code(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant against etcd's `api/v3rpc/rpctypes/error.go` (code and message) and,
    /// for the unmapped ones, `server/auth/store.go` as `togRPCError` passes them.
    #[test]
    fn codes_and_messages_are_etcds() {
        #[rustfmt::skip]
        let table: &[(AuthError, Code, &str)] = &[
            (AuthError::RootUserNotExist, Code::FailedPrecondition, "etcdserver: root user does not exist"),
            (AuthError::RootRoleNotExist, Code::FailedPrecondition, "etcdserver: root user does not have root role"),
            (AuthError::UserAlreadyExist, Code::FailedPrecondition, "etcdserver: user name already exists"),
            (AuthError::UserEmpty, Code::InvalidArgument, "etcdserver: user name is empty"),
            (AuthError::UserNotFound, Code::FailedPrecondition, "etcdserver: user name not found"),
            (AuthError::RoleAlreadyExist, Code::FailedPrecondition, "etcdserver: role name already exists"),
            (AuthError::RoleNotFound, Code::FailedPrecondition, "etcdserver: role name not found"),
            (AuthError::RoleEmpty, Code::InvalidArgument, "etcdserver: role name is empty"),
            (AuthError::AuthFailed, Code::InvalidArgument, "etcdserver: authentication failed, invalid user ID or password"),
            (AuthError::PermissionNotGiven, Code::InvalidArgument, "etcdserver: permission not given"),
            (AuthError::PermissionDenied, Code::PermissionDenied, "etcdserver: permission denied"),
            (AuthError::RoleNotGranted, Code::FailedPrecondition, "etcdserver: role is not granted to the user"),
            (AuthError::PermissionNotGranted, Code::FailedPrecondition, "etcdserver: permission is not granted to the role"),
            (AuthError::AuthNotEnabled, Code::FailedPrecondition, "etcdserver: authentication is not enabled"),
            (AuthError::InvalidAuthToken, Code::Unauthenticated, "etcdserver: invalid auth token"),
            (AuthError::InvalidAuthMgmt, Code::InvalidArgument, "etcdserver: invalid auth management"),
            (AuthError::AuthOldRevision, Code::InvalidArgument, "etcdserver: revision of auth store is old"),
            (AuthError::NoPasswordUser, Code::Unknown, "auth: authentication failed, password was given for no password user"),
            (AuthError::VerifyOnly, Code::Unknown, "auth: token signing attempted with verify-only key"),
            (AuthError::PasswordTooLong, Code::Unknown, "bcrypt: password length exceeds 72 bytes"),
        ];
        for (err, code, message) in table {
            assert_eq!(err.code(), *code, "{err:?}");
            assert_eq!(err.to_string(), *message, "{err:?}");
            let status = tonic::Status::from(err.clone());
            assert_eq!((status.code(), status.message()), (*code, *message));
        }
    }
}
