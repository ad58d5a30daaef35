//! The Auth service as the server drives it: one handle, [`Auth`], shared by the
//! gateway (credentials and checks) and the apply loop (state changes).
//!
//! A request goes through three places, and only the middle one is on the apply path:
//!
//! 1. **Before proposing**, on the member that received it: passwords are hashed
//!    ([`Auth::hash_user_add`], [`Auth::hash_change_password`]), a login password is
//!    checked and an [`AuthenticateEntry`] made ([`Auth::prepare_authenticate`]),
//!    credentials are resolved ([`Auth::auth_info`]) and the permission checks can
//!    refuse early (through [`Auth::store`]).
//! 2. **Applying** the committed entry, on every member in log order:
//!    [`Auth::apply`] checks the proposer's rights (the [`AuthInfo`] of the request
//!    header, as etcd's `authApplierV3`), changes the state, issues the token, and
//!    returns the records to commit with the applied index.
//! 3. **Answering**: the member holding the waiter fills the response header.

use cairn_proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse,
};
use parking_lot::{RwLock, RwLockReadGuard};

use crate::error::AuthError;
use crate::password::{self, verify_password};
use crate::record::RecordError;
use crate::store::{Applied, AuthInfo, AuthStore};
use crate::token::TokenProvider;

/// The Authenticate entry that goes through raft, without the password (checked by
/// the proposer): etcd's `InternalAuthenticateRequest`, same field numbers.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AuthenticateEntry {
    /// User name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The proposer's random simple-token prefix (empty for JWT).
    #[prost(string, tag = "3")]
    pub simple_token: String,
}

/// A checked login, ready to propose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedAuthenticate {
    /// What to propose.
    pub entry: AuthenticateEntry,
    /// The auth revision the password was checked at: if the store's revision differs
    /// once the entry is applied, the password may have changed meanwhile, and the
    /// proposer checks and proposes again (etcd's loop in `EtcdServer.Authenticate`).
    pub checked_revision: u64,
}

/// Every Auth-service operation, as it is applied.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthRequest {
    /// AuthEnable.
    AuthEnable(AuthEnableRequest),
    /// AuthDisable.
    AuthDisable(AuthDisableRequest),
    /// AuthStatus.
    AuthStatus(AuthStatusRequest),
    /// Authenticate, as proposed after the password check.
    Authenticate(AuthenticateEntry),
    /// UserAdd, with its password hashed.
    UserAdd(AuthUserAddRequest),
    /// UserGet.
    UserGet(AuthUserGetRequest),
    /// UserList.
    UserList(AuthUserListRequest),
    /// UserDelete.
    UserDelete(AuthUserDeleteRequest),
    /// UserChangePassword, with its password hashed.
    UserChangePassword(AuthUserChangePasswordRequest),
    /// UserGrantRole.
    UserGrantRole(AuthUserGrantRoleRequest),
    /// UserRevokeRole.
    UserRevokeRole(AuthUserRevokeRoleRequest),
    /// RoleAdd.
    RoleAdd(AuthRoleAddRequest),
    /// RoleGet.
    RoleGet(AuthRoleGetRequest),
    /// RoleList.
    RoleList(AuthRoleListRequest),
    /// RoleDelete.
    RoleDelete(AuthRoleDeleteRequest),
    /// RoleGrantPermission.
    RoleGrantPermission(AuthRoleGrantPermissionRequest),
    /// RoleRevokePermission.
    RoleRevokePermission(AuthRoleRevokePermissionRequest),
}

/// The response of each [`AuthRequest`], header left empty.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthResponse {
    /// AuthEnable.
    AuthEnable(AuthEnableResponse),
    /// AuthDisable.
    AuthDisable(AuthDisableResponse),
    /// AuthStatus.
    AuthStatus(AuthStatusResponse),
    /// Authenticate.
    Authenticate(AuthenticateResponse),
    /// UserAdd.
    UserAdd(AuthUserAddResponse),
    /// UserGet.
    UserGet(AuthUserGetResponse),
    /// UserList.
    UserList(AuthUserListResponse),
    /// UserDelete.
    UserDelete(AuthUserDeleteResponse),
    /// UserChangePassword.
    UserChangePassword(AuthUserChangePasswordResponse),
    /// UserGrantRole.
    UserGrantRole(AuthUserGrantRoleResponse),
    /// UserRevokeRole.
    UserRevokeRole(AuthUserRevokeRoleResponse),
    /// RoleAdd.
    RoleAdd(AuthRoleAddResponse),
    /// RoleGet.
    RoleGet(AuthRoleGetResponse),
    /// RoleList.
    RoleList(AuthRoleListResponse),
    /// RoleDelete.
    RoleDelete(AuthRoleDeleteResponse),
    /// RoleGrantPermission.
    RoleGrantPermission(AuthRoleGrantPermissionResponse),
    /// RoleRevokePermission.
    RoleRevokePermission(AuthRoleRevokePermissionResponse),
}

impl AuthRequest {
    /// Whether only root may send it (etcd's `needAdminPermission`): everything but
    /// AuthStatus, Authenticate, UserGet and RoleGet, which have their own rules.
    pub fn needs_admin(&self) -> bool {
        !matches!(
            self,
            AuthRequest::AuthStatus(_)
                | AuthRequest::Authenticate(_)
                | AuthRequest::UserGet(_)
                | AuthRequest::RoleGet(_)
        )
    }

    /// Whether applying it can change the state (the others are reads, which a member
    /// may also serve after a ReadIndex without proposing).
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            AuthRequest::AuthStatus(_)
                | AuthRequest::UserGet(_)
                | AuthRequest::UserList(_)
                | AuthRequest::RoleGet(_)
                | AuthRequest::RoleList(_)
        )
    }
}

/// The replicated [`AuthStore`] and this member's [`TokenProvider`], behind one lock.
#[derive(Debug)]
pub struct Auth {
    store: RwLock<AuthStore>,
    tokens: TokenProvider,
}

/// The metadata keys a token is read from, in order: `token` (etcd's clients) and
/// `authorization` (the JSON gateway's), as etcd's `rpctypes.TokenFieldName*`.
pub const TOKEN_METADATA_KEYS: [&str; 2] = ["token", "authorization"];

/// The token a gRPC request carries (the first value of the first key of
/// [`TOKEN_METADATA_KEYS`] present). A value that is not text is returned empty, so
/// that it is refused as an invalid token rather than ignored.
pub fn token_from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    TOKEN_METADATA_KEYS
        .iter()
        .find_map(|key| metadata.get(*key))
        .map(|value| value.to_str().unwrap_or_default())
}

/// A token as clients send it: etcd accepts an `Authorization`-style `Bearer ` prefix.
fn bare_token(token: &str) -> &str {
    token.strip_prefix("Bearer ").unwrap_or(token)
}

impl Auth {
    /// Joins a store (rebuilt from the records) and the member's token provider.
    pub fn new(store: AuthStore, tokens: TokenProvider) -> Self {
        if store.is_enabled() {
            tokens.enable();
        }
        Auth {
            store: RwLock::new(store),
            tokens,
        }
    }

    /// [`AuthStore::open`] on the `auth` column family's records, then [`Auth::new`].
    pub fn open<K, V>(
        records: impl IntoIterator<Item = (K, V)>,
        bcrypt_cost: u32,
        tokens: TokenProvider,
    ) -> Result<Self, RecordError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        Ok(Auth::new(AuthStore::open(records, bcrypt_cost)?, tokens))
    }

    /// Replaces the whole state, e.g. after a snapshot install, from the new records.
    /// Simple tokens survive only if auth stays on (etcd's `Recover`).
    pub fn recover<K, V>(
        &self,
        records: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), RecordError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut store = self.store.write();
        let recovered = AuthStore::open(records, store.bcrypt_cost())?;
        if recovered.is_enabled() {
            self.tokens.enable();
        } else {
            self.tokens.disable();
        }
        *store = recovered;
        Ok(())
    }

    /// The state, for reads and the permission checks of [`check`](crate::check).
    pub fn store(&self) -> RwLockReadGuard<'_, AuthStore> {
        self.store.read()
    }

    /// This member's tokens.
    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.store.read().revision()
    }

    /// Whether auth is on.
    pub fn is_enabled(&self) -> bool {
        self.store.read().is_enabled()
    }

    // ---------------------------------------------------------------- before proposing

    /// [`password::hash_user_add`] at the store's bcrypt cost. Slow: run it off the
    /// async workers (e.g. `spawn_blocking`).
    pub fn hash_user_add(
        &self,
        request: AuthUserAddRequest,
    ) -> Result<AuthUserAddRequest, AuthError> {
        let cost = self.store.read().bcrypt_cost();
        password::hash_user_add(request, cost)
    }

    /// [`password::hash_change_password`] at the store's bcrypt cost. Slow, as above.
    pub fn hash_change_password(
        &self,
        request: AuthUserChangePasswordRequest,
    ) -> Result<AuthUserChangePasswordRequest, AuthError> {
        let cost = self.store.read().bcrypt_cost();
        password::hash_change_password(request, cost)
    }

    /// Checks a login and makes the entry to propose (etcd's `CheckPassword` and token
    /// prefix). Serve it after a linearizable read barrier, as etcd does, so the
    /// password is checked against the latest state. Slow (bcrypt), and no lock is held
    /// while hashing.
    pub fn prepare_authenticate(
        &self,
        request: &AuthenticateRequest,
    ) -> Result<PreparedAuthenticate, AuthError> {
        let (hash, checked_revision) = self.store.read().login_hash(&request.name)?;
        if !verify_password(&request.password, &hash) {
            tracing::info!(user_name = %request.name, "invalid password");
            return Err(AuthError::AuthFailed);
        }
        Ok(PreparedAuthenticate {
            entry: AuthenticateEntry {
                name: request.name.clone(),
                simple_token: self.tokens.gen_prefix(),
            },
            checked_revision,
        })
    }

    // ---------------------------------------------------------------- applying

    /// Applies an Auth request committed at raft `index`, sent by `who` (the request
    /// header's user and auth revision; `None` if it had none). Returns the response
    /// and the records to commit in the write batch of `index`; on an error nothing
    /// changed.
    pub fn apply(
        &self,
        request: &AuthRequest,
        who: Option<&AuthInfo>,
        index: u64,
    ) -> Result<Applied<AuthResponse>, AuthError> {
        let mut store = self.store.write();
        if request.needs_admin() {
            store.check_admin(who)?;
        }
        let read = |response| {
            Ok(Applied {
                response,
                writes: vec![],
            })
        };
        match request {
            AuthRequest::AuthEnable(_) => {
                let applied = store.auth_enable()?;
                self.tokens.enable();
                Ok(applied.map(AuthResponse::AuthEnable))
            }
            AuthRequest::AuthDisable(_) => {
                let applied = store.auth_disable();
                self.tokens.disable();
                Ok(applied.map(AuthResponse::AuthDisable))
            }
            AuthRequest::AuthStatus(_) => read(AuthResponse::AuthStatus(store.auth_status())),
            AuthRequest::Authenticate(entry) => {
                store.check_authenticate(&entry.name)?;
                let token = self.tokens.assign(
                    &entry.name,
                    store.revision(),
                    index,
                    &entry.simple_token,
                )?;
                tracing::debug!(user_name = %entry.name, "authenticated a user");
                read(AuthResponse::Authenticate(AuthenticateResponse {
                    header: None,
                    token,
                }))
            }
            AuthRequest::UserAdd(r) => Ok(store.user_add(r)?.map(AuthResponse::UserAdd)),
            AuthRequest::UserGet(r) => {
                store.check_user_get(who, &r.name)?;
                read(AuthResponse::UserGet(store.user_get(r)?))
            }
            AuthRequest::UserList(_) => read(AuthResponse::UserList(store.user_list())),
            AuthRequest::UserDelete(r) => {
                let applied = store.user_delete(r)?;
                self.tokens.invalidate_user(&r.name);
                Ok(applied.map(AuthResponse::UserDelete))
            }
            AuthRequest::UserChangePassword(r) => {
                let applied = store.user_change_password(r)?;
                self.tokens.invalidate_user(&r.name);
                Ok(applied.map(AuthResponse::UserChangePassword))
            }
            AuthRequest::UserGrantRole(r) => {
                Ok(store.user_grant_role(r)?.map(AuthResponse::UserGrantRole))
            }
            AuthRequest::UserRevokeRole(r) => {
                Ok(store.user_revoke_role(r)?.map(AuthResponse::UserRevokeRole))
            }
            AuthRequest::RoleAdd(r) => Ok(store.role_add(r)?.map(AuthResponse::RoleAdd)),
            AuthRequest::RoleGet(r) => {
                store.check_role_get(who, &r.role)?;
                read(AuthResponse::RoleGet(store.role_get(r)?))
            }
            AuthRequest::RoleList(_) => read(AuthResponse::RoleList(store.role_list())),
            AuthRequest::RoleDelete(r) => Ok(store.role_delete(r)?.map(AuthResponse::RoleDelete)),
            AuthRequest::RoleGrantPermission(r) => Ok(store
                .role_grant_permission(r)?
                .map(AuthResponse::RoleGrantPermission)),
            AuthRequest::RoleRevokePermission(r) => Ok(store
                .role_revoke_permission(r)?
                .map(AuthResponse::RoleRevokePermission)),
        }
    }

    // ---------------------------------------------------------------- credentials

    /// For a simple token, the raft index this member must have applied before
    /// [`auth_info`](Self::auth_info) can recognise it (etcd's `indexWaiter`).
    pub fn token_wait_index(&self, token: &str) -> Option<u64> {
        self.tokens.wait_index(bare_token(token))
    }

    /// Who sends a request (etcd's `EtcdServer.AuthInfoFromCtx`): nobody while auth is
    /// off; else the user of the `token` metadata (invalid ->
    /// [`InvalidAuthToken`](AuthError::InvalidAuthToken)); else, if the caller passes
    /// it, the common name of a verified client certificate (only with
    /// `--client-cert-auth`, and never for requests proxied by the JSON gateway);
    /// else nobody.
    pub fn auth_info(
        &self,
        token: Option<&str>,
        certificate_common_name: Option<&str>,
    ) -> Result<Option<AuthInfo>, AuthError> {
        let store = self.store.read();
        if !store.is_enabled() {
            return Ok(None);
        }
        if let Some(token) = token {
            return match self.tokens.info(bare_token(token), store.revision()) {
                Some(info) => Ok(Some(info)),
                None => {
                    tracing::warn!("invalid auth token");
                    Err(AuthError::InvalidAuthToken)
                }
            };
        }
        Ok(certificate_common_name.map(|cn| AuthInfo {
            username: cn.to_owned(),
            revision: store.revision(),
        }))
    }

    /// Forgets expired simple tokens; call about once a second.
    pub fn sweep_expired_tokens(&self) -> usize {
        self.tokens.sweep_expired()
    }
}
