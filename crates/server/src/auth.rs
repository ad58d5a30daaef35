//! etcd's Auth service on a member: passwords hashed and logins checked before
//! proposing (never in the log in clear), changes through raft, reads after a ReadIndex
//! barrier. The state and its entries are [`crate::auth_state`]; the checks before a
//! request runs live in [`crate::authz`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_auth::{Auth, AuthRequest, AuthResponse};
use cairn_grpc_gateway::api::AuthApi;
use cairn_grpc_gateway::EtcdError;
use cairn_proto::etcdserverpb as pb;

use crate::apply::Applied;
use crate::auth_state::{current_proposer, to_entry, Proposer};
use crate::client_error;
use crate::member::Member;

/// How many times a login is checked and proposed again when the auth state changed
/// in between (etcd retries without a bound; a change per login is rare).
const LOGIN_ATTEMPTS: usize = 5;

/// The Auth service of a member.
pub struct AuthService {
    member: Arc<Member>,
    auth: Arc<Auth>,
}

impl AuthService {
    /// The Auth service over `member`'s raft log and the auth state.
    pub fn new(member: Arc<Member>, auth: Arc<Auth>) -> Self {
        AuthService { member, auth }
    }

    /// Runs `request` as the client of this task: changes go through raft, reads are
    /// served after a ReadIndex barrier. The answer's header is filled.
    async fn run(&self, request: AuthRequest) -> Result<AuthResponse, EtcdError> {
        if !request.is_change() {
            self.member.linearizable_barrier().await?;
            let who = match current_proposer() {
                Proposer::Client(who) => who,
                Proposer::Member => None,
            };
            let applied = self
                .auth
                .apply(&request, who.as_ref(), self.member.raft().applied_index())
                .map_err(|e| client_error::auth(&e))?;
            return Ok(applied.response);
        }
        match self.member.propose(to_entry(request)).await? {
            Applied::Auth(response) => Ok(response),
            other => Err(EtcdError::Internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    /// `work` (bcrypt) off the async workers.
    async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Auth) -> Result<T, cairn_auth::AuthError> + Send + 'static,
    ) -> Result<T, EtcdError> {
        let auth = self.auth.clone();
        tokio::task::spawn_blocking(move || work(&auth))
            .await
            .map_err(|e| EtcdError::Internal(e.to_string()))?
            .map_err(|e| client_error::auth(&e))
    }
}

/// The method's response out of an [`AuthResponse`], its header filled.
macro_rules! answer {
    ($self:ident, $request:expr, $variant:ident) => {{
        match $self.run($request).await? {
            AuthResponse::$variant(mut response) => {
                $self.member.fill(&mut response.header);
                Ok(response)
            }
            other => Err(EtcdError::Internal(format!(
                "unexpected auth answer {other:?}"
            ))),
        }
    }};
}

#[async_trait]
impl AuthApi for AuthService {
    async fn auth_enable(
        &self,
        req: pb::AuthEnableRequest,
    ) -> Result<pb::AuthEnableResponse, EtcdError> {
        answer!(self, AuthRequest::AuthEnable(req), AuthEnable)
    }

    async fn auth_disable(
        &self,
        req: pb::AuthDisableRequest,
    ) -> Result<pb::AuthDisableResponse, EtcdError> {
        answer!(self, AuthRequest::AuthDisable(req), AuthDisable)
    }

    async fn auth_status(
        &self,
        req: pb::AuthStatusRequest,
    ) -> Result<pb::AuthStatusResponse, EtcdError> {
        answer!(self, AuthRequest::AuthStatus(req), AuthStatus)
    }

    async fn authenticate(
        &self,
        req: pb::AuthenticateRequest,
    ) -> Result<pb::AuthenticateResponse, EtcdError> {
        self.member.linearizable_barrier().await?;
        for _ in 0..LOGIN_ATTEMPTS {
            let login = req.clone();
            let prepared = self
                .hashing(move |auth| auth.prepare_authenticate(&login))
                .await?;
            let response = answer!(
                self,
                AuthRequest::Authenticate(prepared.entry),
                Authenticate
            )?;
            if self.auth.revision() == prepared.checked_revision {
                return Ok(response);
            }
            tracing::info!("revision when password checked became stale; retrying");
        }
        Err(EtcdError::AuthFailed)
    }

    async fn user_add(
        &self,
        req: pb::AuthUserAddRequest,
    ) -> Result<pb::AuthUserAddResponse, EtcdError> {
        let req = self.hashing(move |auth| auth.hash_user_add(req)).await?;
        answer!(self, AuthRequest::UserAdd(req), UserAdd)
    }

    async fn user_get(
        &self,
        req: pb::AuthUserGetRequest,
    ) -> Result<pb::AuthUserGetResponse, EtcdError> {
        answer!(self, AuthRequest::UserGet(req), UserGet)
    }

    async fn user_list(
        &self,
        req: pb::AuthUserListRequest,
    ) -> Result<pb::AuthUserListResponse, EtcdError> {
        answer!(self, AuthRequest::UserList(req), UserList)
    }

    async fn user_delete(
        &self,
        req: pb::AuthUserDeleteRequest,
    ) -> Result<pb::AuthUserDeleteResponse, EtcdError> {
        answer!(self, AuthRequest::UserDelete(req), UserDelete)
    }

    async fn user_change_password(
        &self,
        req: pb::AuthUserChangePasswordRequest,
    ) -> Result<pb::AuthUserChangePasswordResponse, EtcdError> {
        let req = self
            .hashing(move |auth| auth.hash_change_password(req))
            .await?;
        answer!(
            self,
            AuthRequest::UserChangePassword(req),
            UserChangePassword
        )
    }

    async fn user_grant_role(
        &self,
        req: pb::AuthUserGrantRoleRequest,
    ) -> Result<pb::AuthUserGrantRoleResponse, EtcdError> {
        answer!(self, AuthRequest::UserGrantRole(req), UserGrantRole)
    }

    async fn user_revoke_role(
        &self,
        req: pb::AuthUserRevokeRoleRequest,
    ) -> Result<pb::AuthUserRevokeRoleResponse, EtcdError> {
        answer!(self, AuthRequest::UserRevokeRole(req), UserRevokeRole)
    }

    async fn role_add(
        &self,
        req: pb::AuthRoleAddRequest,
    ) -> Result<pb::AuthRoleAddResponse, EtcdError> {
        answer!(self, AuthRequest::RoleAdd(req), RoleAdd)
    }

    async fn role_get(
        &self,
        req: pb::AuthRoleGetRequest,
    ) -> Result<pb::AuthRoleGetResponse, EtcdError> {
        answer!(self, AuthRequest::RoleGet(req), RoleGet)
    }

    async fn role_list(
        &self,
        req: pb::AuthRoleListRequest,
    ) -> Result<pb::AuthRoleListResponse, EtcdError> {
        answer!(self, AuthRequest::RoleList(req), RoleList)
    }

    async fn role_delete(
        &self,
        req: pb::AuthRoleDeleteRequest,
    ) -> Result<pb::AuthRoleDeleteResponse, EtcdError> {
        answer!(self, AuthRequest::RoleDelete(req), RoleDelete)
    }

    async fn role_grant_permission(
        &self,
        req: pb::AuthRoleGrantPermissionRequest,
    ) -> Result<pb::AuthRoleGrantPermissionResponse, EtcdError> {
        answer!(
            self,
            AuthRequest::RoleGrantPermission(req),
            RoleGrantPermission
        )
    }

    async fn role_revoke_permission(
        &self,
        req: pb::AuthRoleRevokePermissionRequest,
    ) -> Result<pb::AuthRoleRevokePermissionResponse, EtcdError> {
        answer!(
            self,
            AuthRequest::RoleRevokePermission(req),
            RoleRevokePermission
        )
    }
}

/// Forgets expired simple tokens once a second.
pub(crate) fn spawn_token_sweeper(auth: Arc<Auth>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            auth.sweep_expired_tokens();
        }
    })
}
