//! The replicated auth state and every Auth-service operation as a state transition.
//!
//! [`AuthStore`] holds users, roles, the enabled flag and the auth revision, plus the
//! merged per-user permission cache derived from them. Each changing operation is
//! applied by every member in log order, mutates the state, and returns the records to
//! write ([`Applied::writes`]) so the caller commits them in the write batch of the
//! applied index. Nothing here does I/O, reads a clock or hashes a password.
//!
//! Behaviour follows etcd's `server/auth/store.go`, quirks included:
//! - every change increments the auth revision, except AuthEnable (which only sets the
//!   flag) and the no-op cases (enabling twice, disabling twice, granting a role the
//!   user already has);
//! - while auth is on, deleting the `root` user or the `root` role, or revoking the
//!   `root` role from `root`, is refused with [`AuthError::InvalidAuthMgmt`];
//! - the `root` role may be granted without existing as a role record, and RoleGet of
//!   an existing `root` role shows READWRITE on every key whatever the record holds;
//! - a user's roles stay sorted; a role's permissions stay sorted by key, and granting
//!   an existing `(key, range_end)` again only changes its type.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use cairn_proto::authpb::{Permission, Role, User, UserAddOptions};
use cairn_proto::etcdserverpb::{
    AuthDisableResponse, AuthEnableResponse, AuthRoleAddRequest, AuthRoleAddResponse,
    AuthRoleDeleteRequest, AuthRoleDeleteResponse, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusResponse,
    AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListResponse, AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse,
};

use crate::error::AuthError;
use crate::metrics;
use crate::password::{effective_bcrypt_cost, stored_password, DEFAULT_BCRYPT_COST};
use crate::permission::{is_valid_permission_range, root_permission, Access, UserPermissions};
use crate::record::{self, AuthWrite, RecordError};

/// The user that AuthEnable requires and that can never lose its powers while auth is on.
pub const ROOT_USER: &str = "root";
/// The role that allows everything.
pub const ROOT_ROLE: &str = "root";

/// Who sends a request: the user name and the auth revision its credentials carry
/// (etcd's `AuthInfo`, which also travels in the raft request header).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AuthInfo {
    /// User name.
    pub username: String,
    /// Auth revision the credentials were checked at; 0 means none.
    pub revision: u64,
}

/// The outcome of an applied operation: its response and the records to commit with the
/// applied index. Responses have no header; the caller fills it.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<R> {
    /// What the client gets.
    pub response: R,
    /// Writes to the `auth` column family, in order.
    pub writes: Vec<AuthWrite>,
}

impl<R> Applied<R> {
    fn new(response: R, writes: Vec<AuthWrite>) -> Self {
        Applied { response, writes }
    }

    /// The same writes with another response.
    pub fn map<S>(self, f: impl FnOnce(R) -> S) -> Applied<S> {
        Applied {
            response: f(self.response),
            writes: self.writes,
        }
    }
}

/// Users, roles, the enabled flag and the auth revision (see the [module](self) docs).
#[derive(Debug, Clone)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<Bytes, User>,
    roles: BTreeMap<Bytes, Role>,
    /// User name -> merged permissions of its roles; rebuilt after every change.
    permissions: HashMap<Bytes, UserPermissions>,
    bcrypt_cost: u32,
}

impl Default for AuthStore {
    fn default() -> Self {
        AuthStore::new(DEFAULT_BCRYPT_COST)
    }
}

impl AuthStore {
    /// An empty store: auth off, revision 1, no users or roles. `bcrypt_cost` is
    /// `--bcrypt-cost` (out of bcrypt's 4..=31, the default 10 is used).
    pub fn new(bcrypt_cost: u32) -> Self {
        let store = AuthStore {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            permissions: HashMap::new(),
            bcrypt_cost: effective_bcrypt_cost(bcrypt_cost),
        };
        metrics::set_revision(store.revision);
        store
    }

    /// Rebuilds the store and its permission cache from the `auth` column family's
    /// records (see [`record`]).
    pub fn open<K, V>(
        records: impl IntoIterator<Item = (K, V)>,
        bcrypt_cost: u32,
    ) -> Result<Self, RecordError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let loaded = record::load(records)?;
        let mut store = AuthStore {
            enabled: loaded.enabled,
            revision: loaded.revision,
            users: loaded.users,
            roles: loaded.roles,
            permissions: HashMap::new(),
            bcrypt_cost: effective_bcrypt_cost(bcrypt_cost),
        };
        store.refresh_permissions();
        metrics::set_revision(store.revision);
        Ok(store)
    }

    /// Every record of the current state, as [`open`](Self::open) reads them back (for a
    /// snapshot, or a test).
    pub fn records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut writes = vec![
            record::put_enabled(self.enabled),
            record::put_revision(self.revision),
        ];
        writes.extend(self.users.values().map(record::put_user));
        writes.extend(self.roles.values().map(record::put_role));
        writes
            .into_iter()
            .filter_map(|w| match w {
                AuthWrite::Put { key, value } => Some((key, value)),
                AuthWrite::Delete { .. } => None,
            })
            .collect()
    }

    /// The auth revision (etcd's `authRevision`).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether auth is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The bcrypt cost proposers hash new passwords with.
    pub fn bcrypt_cost(&self) -> u32 {
        self.bcrypt_cost
    }

    pub(crate) fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name.as_bytes())
    }

    /// Whether `user` exists and has `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.user(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// Whether `user` exists and has the `root` role (and so may do anything).
    pub fn is_root(&self, user: &str) -> bool {
        self.has_role(user, ROOT_ROLE)
    }

    /// Whether `user`'s roles allow `access` to `key` (`range_end` empty), `[key,
    /// range_end)` or from `key` on (`range_end == "\0"`), ignoring whether auth is on;
    /// root may do anything. See [`AuthStore::check`] for the full request check.
    pub fn allows(&self, user: &str, access: Access, key: &[u8], range_end: &[u8]) -> bool {
        if self.is_root(user) {
            return true;
        }
        self.permissions
            .get(user.as_bytes())
            .is_some_and(|p| p.allows(access, key, range_end))
    }

    fn commit_revision(&mut self, writes: &mut Vec<AuthWrite>) {
        self.revision += 1;
        writes.push(record::put_revision(self.revision));
        metrics::set_revision(self.revision);
    }

    /// Rebuilds the merged permissions of every user (etcd's `refreshRangePermCache`).
    fn refresh_permissions(&mut self) {
        let roles = &self.roles;
        self.permissions = self
            .users
            .iter()
            .map(|(name, user)| {
                let granted: Vec<&Permission> = user
                    .roles
                    .iter()
                    .filter_map(|r| roles.get(r.as_bytes()))
                    .flat_map(|r| r.key_permission.iter())
                    .collect();
                (
                    name.clone(),
                    UserPermissions::from_permissions(granted.iter().copied()),
                )
            })
            .collect();
    }

    /// Marks a change: bumps the revision and rebuilds the permission cache.
    fn changed(&mut self, writes: &mut Vec<AuthWrite>) {
        self.commit_revision(writes);
        self.refresh_permissions();
    }

    // ---------------------------------------------------------------- enable / status

    /// Turns auth on; refused unless user `root` exists with role `root`. Enabling twice
    /// is a no-op. Does not change the revision (as etcd).
    pub fn auth_enable(&mut self) -> Result<Applied<AuthEnableResponse>, AuthError> {
        if self.enabled {
            tracing::info!("authentication is already enabled; ignored auth enable request");
            return Ok(Applied::new(AuthEnableResponse::default(), vec![]));
        }
        let root = self.user(ROOT_USER).ok_or(AuthError::RootUserNotExist)?;
        if !root.roles.iter().any(|r| r == ROOT_ROLE) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        self.refresh_permissions();
        tracing::info!("enabled authentication");
        Ok(Applied::new(
            AuthEnableResponse::default(),
            vec![record::put_enabled(true)],
        ))
    }

    /// Turns auth off (a no-op when it is off).
    pub fn auth_disable(&mut self) -> Applied<AuthDisableResponse> {
        if !self.enabled {
            return Applied::new(AuthDisableResponse::default(), vec![]);
        }
        self.enabled = false;
        let mut writes = vec![record::put_enabled(false)];
        self.commit_revision(&mut writes);
        tracing::info!("disabled authentication");
        Applied::new(AuthDisableResponse::default(), writes)
    }

    /// Whether auth is on, and the revision.
    pub fn auth_status(&self) -> AuthStatusResponse {
        AuthStatusResponse {
            header: None,
            enabled: self.enabled,
            auth_revision: self.revision,
        }
    }

    // ---------------------------------------------------------------- login

    /// The stored hash and the current revision, for checking a login password outside
    /// any lock (etcd's `CheckPassword` before its bcrypt compare).
    pub fn login_hash(&self, name: &str) -> Result<(Bytes, u64), AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.user(name).ok_or(AuthError::AuthFailed)?;
        if user.options.is_some_and(|o| o.no_password) {
            return Err(AuthError::NoPasswordUser);
        }
        Ok((user.password.clone(), self.revision))
    }

    /// The apply-time half of Authenticate: whether a token may be issued to `name`
    /// (auth on, the user exists and has a password).
    pub fn check_authenticate(&self, name: &str) -> Result<(), AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.user(name).ok_or(AuthError::AuthFailed)?;
        if user.options.is_some_and(|o| o.no_password) {
            return Err(AuthError::AuthFailed);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- users

    /// Creates a user. The request must come from
    /// [`hash_user_add`](crate::hash_user_add): only `hashed_password` is stored.
    pub fn user_add(
        &mut self,
        request: &AuthUserAddRequest,
    ) -> Result<Applied<AuthUserAddResponse>, AuthError> {
        if request.name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.user(&request.name).is_some() {
            return Err(AuthError::UserAlreadyExist);
        }
        let options = request
            .options
            .unwrap_or(UserAddOptions { no_password: false });
        let password = if options.no_password {
            Vec::new()
        } else {
            stored_password(&request.password, &request.hashed_password)?
        };
        let user = User {
            name: Bytes::from(request.name.clone().into_bytes()),
            password: password.into(),
            roles: vec![],
            options: Some(options),
        };
        let mut writes = vec![record::put_user(&user)];
        self.users.insert(user.name.clone(), user);
        self.changed(&mut writes);
        tracing::info!(user_name = %request.name, "added a user");
        Ok(Applied::new(AuthUserAddResponse::default(), writes))
    }

    /// Deletes a user (refused for `root` while auth is on). The caller also drops the
    /// user's simple tokens.
    pub fn user_delete(
        &mut self,
        request: &AuthUserDeleteRequest,
    ) -> Result<Applied<AuthUserDeleteResponse>, AuthError> {
        if self.enabled && request.name == ROOT_USER {
            tracing::error!("cannot delete 'root' user");
            return Err(AuthError::InvalidAuthMgmt);
        }
        let user = self
            .users
            .remove(request.name.as_bytes())
            .ok_or(AuthError::UserNotFound)?;
        let mut writes = vec![AuthWrite::Delete {
            key: record::user_key(&user.name),
        }];
        self.changed(&mut writes);
        tracing::info!(user_name = %request.name, user_roles = ?user.roles, "deleted a user");
        Ok(Applied::new(AuthUserDeleteResponse::default(), writes))
    }

    /// Sets a user's password. The request must come from
    /// [`hash_change_password`](crate::hash_change_password); a no-password user keeps
    /// no password. The caller also drops the user's simple tokens.
    pub fn user_change_password(
        &mut self,
        request: &AuthUserChangePasswordRequest,
    ) -> Result<Applied<AuthUserChangePasswordResponse>, AuthError> {
        let user = self.user(&request.name).ok_or(AuthError::UserNotFound)?;
        let password = if user.options.is_some_and(|o| o.no_password) {
            Vec::new()
        } else {
            stored_password(&request.password, &request.hashed_password)?
        };
        let updated = User {
            password: password.into(),
            ..user.clone()
        };
        let mut writes = vec![record::put_user(&updated)];
        self.users.insert(updated.name.clone(), updated);
        self.changed(&mut writes);
        tracing::info!(user_name = %request.name, "changed a password of a user");
        Ok(Applied::new(
            AuthUserChangePasswordResponse::default(),
            writes,
        ))
    }

    /// Grants a role (which must exist, except `root`); granting it again is a no-op.
    pub fn user_grant_role(
        &mut self,
        request: &AuthUserGrantRoleRequest,
    ) -> Result<Applied<AuthUserGrantRoleResponse>, AuthError> {
        let user = self.user(&request.user).ok_or(AuthError::UserNotFound)?;
        if request.role != ROOT_ROLE && !self.roles.contains_key(request.role.as_bytes()) {
            return Err(AuthError::RoleNotFound);
        }
        let Err(at) = user.roles.binary_search(&request.role) else {
            tracing::warn!(user_name = %request.user, role_name = %request.role, "ignored grant role request to a user");
            return Ok(Applied::new(AuthUserGrantRoleResponse::default(), vec![]));
        };
        let mut updated = user.clone();
        updated.roles.insert(at, request.role.clone());
        let mut writes = vec![record::put_user(&updated)];
        self.users.insert(updated.name.clone(), updated);
        self.changed(&mut writes);
        tracing::info!(user_name = %request.user, role_name = %request.role, "granted a role to a user");
        Ok(Applied::new(AuthUserGrantRoleResponse::default(), writes))
    }

    /// Takes a role from a user (refused for `root`'s `root` role while auth is on).
    pub fn user_revoke_role(
        &mut self,
        request: &AuthUserRevokeRoleRequest,
    ) -> Result<Applied<AuthUserRevokeRoleResponse>, AuthError> {
        if self.enabled && request.name == ROOT_USER && request.role == ROOT_ROLE {
            tracing::error!("'root' user cannot revoke 'root' role");
            return Err(AuthError::InvalidAuthMgmt);
        }
        let user = self.user(&request.name).ok_or(AuthError::UserNotFound)?;
        let mut updated = user.clone();
        updated.roles.retain(|r| *r != request.role);
        if updated.roles.len() == user.roles.len() {
            return Err(AuthError::RoleNotGranted);
        }
        let mut writes = vec![record::put_user(&updated)];
        self.users.insert(updated.name.clone(), updated);
        self.changed(&mut writes);
        tracing::info!(user_name = %request.name, role_name = %request.role, "revoked a role from a user");
        Ok(Applied::new(AuthUserRevokeRoleResponse::default(), writes))
    }

    /// A user's roles, sorted.
    pub fn user_get(&self, request: &AuthUserGetRequest) -> Result<AuthUserGetResponse, AuthError> {
        let user = self.user(&request.name).ok_or(AuthError::UserNotFound)?;
        let mut roles = user.roles.clone();
        roles.sort();
        Ok(AuthUserGetResponse {
            header: None,
            roles,
        })
    }

    /// Every user name, sorted.
    pub fn user_list(&self) -> AuthUserListResponse {
        AuthUserListResponse {
            header: None,
            users: self
                .users
                .keys()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect(),
        }
    }

    // ---------------------------------------------------------------- roles

    /// Creates a role.
    pub fn role_add(
        &mut self,
        request: &AuthRoleAddRequest,
    ) -> Result<Applied<AuthRoleAddResponse>, AuthError> {
        if request.name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(request.name.as_bytes()) {
            return Err(AuthError::RoleAlreadyExist);
        }
        let role = Role {
            name: Bytes::from(request.name.clone().into_bytes()),
            key_permission: vec![],
        };
        let mut writes = vec![record::put_role(&role)];
        self.roles.insert(role.name.clone(), role);
        self.changed(&mut writes);
        tracing::info!(role_name = %request.name, "created a role");
        Ok(Applied::new(AuthRoleAddResponse::default(), writes))
    }

    /// Deletes a role and takes it from every user that has it (refused for `root`
    /// while auth is on).
    pub fn role_delete(
        &mut self,
        request: &AuthRoleDeleteRequest,
    ) -> Result<Applied<AuthRoleDeleteResponse>, AuthError> {
        if self.enabled && request.role == ROOT_ROLE {
            tracing::error!("cannot delete 'root' role");
            return Err(AuthError::InvalidAuthMgmt);
        }
        let role = self
            .roles
            .remove(request.role.as_bytes())
            .ok_or(AuthError::RoleNotFound)?;
        let mut writes = vec![AuthWrite::Delete {
            key: record::role_key(&role.name),
        }];
        for user in self.users.values_mut() {
            let before = user.roles.len();
            user.roles.retain(|r| *r != request.role);
            if user.roles.len() != before {
                writes.push(record::put_user(user));
            }
        }
        self.changed(&mut writes);
        tracing::info!(role_name = %request.role, "deleted a role");
        Ok(Applied::new(AuthRoleDeleteResponse::default(), writes))
    }

    /// Adds a permission to a role, or changes the type of the one with the same key and
    /// range end. The range must be grantable
    /// ([`is_valid_permission_range`]).
    pub fn role_grant_permission(
        &mut self,
        request: &AuthRoleGrantPermissionRequest,
    ) -> Result<Applied<AuthRoleGrantPermissionResponse>, AuthError> {
        let perm = request.perm.as_ref().ok_or(AuthError::PermissionNotGiven)?;
        if !is_valid_permission_range(&perm.key, &perm.range_end) {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let role = self
            .roles
            .get_mut(request.name.as_bytes())
            .ok_or(AuthError::RoleNotFound)?;
        match role
            .key_permission
            .iter_mut()
            .find(|p| p.key == perm.key && p.range_end == perm.range_end)
        {
            Some(existing) => existing.perm_type = perm.perm_type,
            None => {
                let at = role.key_permission.partition_point(|p| p.key <= perm.key);
                role.key_permission.insert(at, perm.clone());
            }
        }
        let mut writes = vec![record::put_role(role)];
        self.changed(&mut writes);
        tracing::info!(
            role_name = %request.name,
            perm_type = perm.perm_type,
            key = ?perm.key,
            range_end = ?perm.range_end,
            "granted/updated a permission to a role"
        );
        Ok(Applied::new(
            AuthRoleGrantPermissionResponse::default(),
            writes,
        ))
    }

    /// Removes the permissions with exactly this key and range end from a role.
    pub fn role_revoke_permission(
        &mut self,
        request: &AuthRoleRevokePermissionRequest,
    ) -> Result<Applied<AuthRoleRevokePermissionResponse>, AuthError> {
        let role = self
            .roles
            .get_mut(request.role.as_bytes())
            .ok_or(AuthError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission
            .retain(|p| p.key != request.key || p.range_end != request.range_end);
        if role.key_permission.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        let mut writes = vec![record::put_role(role)];
        self.changed(&mut writes);
        tracing::info!(role_name = %request.role, key = ?request.key, range_end = ?request.range_end, "revoked a permission on range");
        Ok(Applied::new(
            AuthRoleRevokePermissionResponse::default(),
            writes,
        ))
    }

    /// A role's permissions; for `root`, READWRITE on every key.
    pub fn role_get(&self, request: &AuthRoleGetRequest) -> Result<AuthRoleGetResponse, AuthError> {
        let role = self
            .roles
            .get(request.role.as_bytes())
            .ok_or(AuthError::RoleNotFound)?;
        let perm = if role.name == ROOT_ROLE.as_bytes() {
            vec![root_permission()]
        } else {
            role.key_permission.clone()
        };
        Ok(AuthRoleGetResponse { header: None, perm })
    }

    /// Every role name, sorted.
    pub fn role_list(&self) -> AuthRoleListResponse {
        AuthRoleListResponse {
            header: None,
            roles: self
                .roles
                .keys()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect(),
        }
    }
}
