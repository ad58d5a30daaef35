//! The auth state of a member as the rest of the server sees it: opened from the
//! backend's `auth` column family, its requests as raft entries, its records in the
//! batch of their index, and who proposed an entry ([`Proposer`]) for the permission
//! check while applying. The Auth service is [`crate::auth`]; the checks before a
//! request runs are [`crate::authz`].

use std::sync::Arc;
use std::time::Duration;

use cairn_auth::{Auth, AuthInfo, AuthRequest, AuthWrite, AuthenticateEntry};
use cairn_mvcc_store::backend::CF_AUTH;
use cairn_mvcc_store::{Backend, BackendBatch};
use cairn_proto::cairnpb::{internal_request::Request, InternalAuthenticateRequest, RequestHeader};

use crate::config::Config;
use crate::error::ServerError;

/// Who proposed an entry, as the apply loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Proposer {
    /// The member itself (lease expiry, its attributes): not checked.
    Member,
    /// A client, with its credentials (`None`: it sent none).
    Client(Option<AuthInfo>),
}

impl Proposer {
    /// The header an entry carries for this proposer.
    pub(crate) fn header(&self) -> Option<RequestHeader> {
        match self {
            Proposer::Member => None,
            Proposer::Client(who) => Some(RequestHeader {
                username: who.as_ref().map(|w| w.username.clone()).unwrap_or_default(),
                auth_revision: who.as_ref().map_or(0, |w| w.revision),
            }),
        }
    }

    /// The proposer an entry's header names.
    pub(crate) fn from_header(header: Option<&RequestHeader>) -> Self {
        match header {
            None => Proposer::Member,
            Some(h) if h.username.is_empty() => Proposer::Client(None),
            Some(h) => Proposer::Client(Some(AuthInfo {
                username: h.username.clone(),
                revision: h.auth_revision,
            })),
        }
    }
}

tokio::task_local! {
    static PROPOSER: Option<AuthInfo>;
}

/// Runs a client's request with `who` as the proposer of what it proposes.
pub(crate) async fn as_client<F: std::future::Future>(who: Option<AuthInfo>, work: F) -> F::Output {
    PROPOSER.scope(who, work).await
}

/// Who proposes from this task: a client inside [`as_client`], else the member.
pub(crate) fn current_proposer() -> Proposer {
    PROPOSER
        .try_with(|who| Proposer::Client(who.clone()))
        .unwrap_or(Proposer::Member)
}

/// Opens the auth state from the backend with the configured tokens and bcrypt cost.
pub(crate) fn open(cfg: &Config, backend: &Backend) -> Result<Arc<Auth>, ServerError> {
    let tokens = cairn_auth::TokenProvider::from_flag(
        &cfg.auth_token,
        Duration::from_secs(cfg.auth_token_ttl),
        Arc::new(cairn_auth::SystemClock),
    )
    .map_err(|e| ServerError::Auth(format!("--auth-token: {e}")))?;
    let auth = Auth::open(records(backend)?, cfg.bcrypt_cost, tokens)
        .map_err(|e| ServerError::Auth(format!("the stored auth state: {e}")))?;
    cairn_auth::metrics::describe();
    Ok(Arc::new(auth))
}

/// One record of the `auth` column family: key and value.
pub(crate) type Record = (Box<[u8]>, Box<[u8]>);

/// The `auth` column family's records.
pub(crate) fn records(backend: &Backend) -> Result<Vec<Record>, cairn_mvcc_store::MvccError> {
    backend.scan(CF_AUTH)?.collect()
}

/// Adds an applied change's records to the batch of its index.
pub(crate) fn write_records(writes: Vec<AuthWrite>, batch: &mut BackendBatch) {
    for write in writes {
        match write {
            AuthWrite::Put { key, value } => batch.put_cf(CF_AUTH, key, value),
            AuthWrite::Delete { key } => batch.delete_cf(CF_AUTH, key),
        }
    }
}

/// An Auth request as a raft entry's request.
pub(crate) fn to_entry(request: AuthRequest) -> Request {
    match request {
        AuthRequest::AuthEnable(r) => Request::AuthEnable(r),
        AuthRequest::AuthDisable(r) => Request::AuthDisable(r),
        AuthRequest::AuthStatus(r) => Request::AuthStatus(r),
        AuthRequest::Authenticate(e) => Request::Authenticate(InternalAuthenticateRequest {
            name: e.name,
            simple_token: e.simple_token,
        }),
        AuthRequest::UserAdd(r) => Request::AuthUserAdd(r),
        AuthRequest::UserGet(r) => Request::AuthUserGet(r),
        AuthRequest::UserList(r) => Request::AuthUserList(r),
        AuthRequest::UserDelete(r) => Request::AuthUserDelete(r),
        AuthRequest::UserChangePassword(r) => Request::AuthUserChangePassword(r),
        AuthRequest::UserGrantRole(r) => Request::AuthUserGrantRole(r),
        AuthRequest::UserRevokeRole(r) => Request::AuthUserRevokeRole(r),
        AuthRequest::RoleAdd(r) => Request::AuthRoleAdd(r),
        AuthRequest::RoleGet(r) => Request::AuthRoleGet(r),
        AuthRequest::RoleList(r) => Request::AuthRoleList(r),
        AuthRequest::RoleDelete(r) => Request::AuthRoleDelete(r),
        AuthRequest::RoleGrantPermission(r) => Request::AuthRoleGrantPermission(r),
        AuthRequest::RoleRevokePermission(r) => Request::AuthRoleRevokePermission(r),
    }
}

/// The Auth request a raft entry holds, or the entry's request back if it is another.
pub(crate) fn from_entry(request: Request) -> Result<AuthRequest, Request> {
    Ok(match request {
        Request::AuthEnable(r) => AuthRequest::AuthEnable(r),
        Request::AuthDisable(r) => AuthRequest::AuthDisable(r),
        Request::AuthStatus(r) => AuthRequest::AuthStatus(r),
        Request::Authenticate(r) => AuthRequest::Authenticate(AuthenticateEntry {
            name: r.name,
            simple_token: r.simple_token,
        }),
        Request::AuthUserAdd(r) => AuthRequest::UserAdd(r),
        Request::AuthUserGet(r) => AuthRequest::UserGet(r),
        Request::AuthUserList(r) => AuthRequest::UserList(r),
        Request::AuthUserDelete(r) => AuthRequest::UserDelete(r),
        Request::AuthUserChangePassword(r) => AuthRequest::UserChangePassword(r),
        Request::AuthUserGrantRole(r) => AuthRequest::UserGrantRole(r),
        Request::AuthUserRevokeRole(r) => AuthRequest::UserRevokeRole(r),
        Request::AuthRoleAdd(r) => AuthRequest::RoleAdd(r),
        Request::AuthRoleGet(r) => AuthRequest::RoleGet(r),
        Request::AuthRoleList(r) => AuthRequest::RoleList(r),
        Request::AuthRoleDelete(r) => AuthRequest::RoleDelete(r),
        Request::AuthRoleGrantPermission(r) => AuthRequest::RoleGrantPermission(r),
        Request::AuthRoleRevokePermission(r) => AuthRequest::RoleRevokePermission(r),
        other => return Err(other),
    })
}
