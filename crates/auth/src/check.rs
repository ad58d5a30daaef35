//! The permission check of every RPC family, as etcd makes it.
//!
//! | RPC | check |
//! |---|---|
//! | Range, Watch create | [`check_range`](AuthStore::check_range), [`check_watch`](AuthStore::check_watch): READ on the whole range |
//! | Put | [`check_put`](AuthStore::check_put): WRITE on the key; with `prev_kv` READ on it; with a lease, WRITE on every key already attached to that lease |
//! | DeleteRange | [`check_delete_range`](AuthStore::check_delete_range): WRITE on the range; with `prev_kv` READ on it |
//! | Txn | [`check_txn`](AuthStore::check_txn): READ for every compare, and every op of both branches as above, nested txns included |
//! | LeaseRevoke | [`check_lease_revoke`](AuthStore::check_lease_revoke): credentials, then WRITE on every attached key (root: all) |
//! | LeaseKeepAlive | [`check_lease_keep_alive`](AuthStore::check_lease_keep_alive): WRITE on every attached key (root: all) |
//! | LeaseTimeToLive | [`check_lease_time_to_live`](AuthStore::check_lease_time_to_live): credentials; with `keys`, READ on every attached key |
//! | LeaseLeases | [`check_lease_leases`](AuthStore::check_lease_leases): READ on every key of every lease (root: all) |
//! | Status, Alarm GET | [`check_credentials`](AuthStore::check_credentials): any authenticated user |
//! | Compact, Defragment, Snapshot, Hash, HashKV, MoveLeader, Downgrade, Alarm ACTIVATE/DEACTIVATE, Member* | [`check_admin`](AuthStore::check_admin): the `root` role |
//! | Auth* except AuthStatus, Authenticate, UserGet, RoleGet | [`check_admin`](AuthStore::check_admin) |
//! | UserGet / RoleGet | [`check_user_get`](AuthStore::check_user_get) / [`check_role_get`](AuthStore::check_role_get): root, or the user itself / a user holding the role |
//!
//! Every check passes while auth is off. `who` is `None` for a request without
//! credentials, which etcd answers with [`AuthError::UserEmpty`] once auth is on.
//! Each check is deterministic in the replicated state (and the lease keys at that
//! point of the log), so the same call serves both before proposing (to refuse early)
//! and while applying (the authoritative check, with the `AuthInfo` of the raft request
//! header: a change of permissions in between then shows as
//! [`AuthError::AuthOldRevision`]).

use bytes::Bytes;
use cairn_proto::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest,
};

use crate::error::AuthError;
use crate::permission::Access;
use crate::store::{AuthInfo, AuthStore};

/// The keys attached to a lease, as the lease manager knows them at the point of the
/// check. Closures `Fn(i64) -> Option<Vec<Bytes>>` implement it.
pub trait LeaseKeys {
    /// The keys attached to lease `id`; `None` if there is no such lease.
    fn lease_keys(&self, id: i64) -> Option<Vec<Bytes>>;
}

impl<F: Fn(i64) -> Option<Vec<Bytes>>> LeaseKeys for F {
    fn lease_keys(&self, id: i64) -> Option<Vec<Bytes>> {
        self(id)
    }
}

/// No leases at all (for callers without a lease manager, and tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLeases;

impl LeaseKeys for NoLeases {
    fn lease_keys(&self, _id: i64) -> Option<Vec<Bytes>> {
        None
    }
}

impl AuthStore {
    /// Whether `who` may `access` the key (`range_end` empty), the range `[key,
    /// range_end)`, or every key from `key` on (`range_end == "\0"`) — etcd's
    /// `isOpPermitted`: no credentials -> [`UserEmpty`](AuthError::UserEmpty); a
    /// revision older than the store's -> [`AuthOldRevision`](AuthError::AuthOldRevision);
    /// an unknown user or an uncovered range ->
    /// [`PermissionDenied`](AuthError::PermissionDenied); root passes.
    pub fn check(
        &self,
        who: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let who = who
            .filter(|w| w.revision != 0)
            .ok_or(AuthError::UserEmpty)?;
        if who.revision < self.revision() {
            tracing::warn!(
                current_revision = self.revision(),
                request_revision = who.revision,
                "request auth revision is less than current node auth revision"
            );
            return Err(AuthError::AuthOldRevision);
        }
        if self.user(&who.username).is_none() {
            tracing::error!(user_name = %who.username, "cannot find a user for permission check");
            return Err(AuthError::PermissionDenied);
        }
        if self.allows(&who.username, access, key, range_end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `who` holds the `root` role (etcd's `IsAdminPermitted`).
    pub fn check_admin(&self, who: Option<&AuthInfo>) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let who = who
            .filter(|w| !w.username.is_empty())
            .ok_or(AuthError::UserEmpty)?;
        if self.user(&who.username).is_none() {
            return Err(AuthError::UserNotFound);
        }
        if !self.is_root(&who.username) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }

    /// Whether the request carries credentials at all (etcd's `requireAuthInfo`).
    pub fn check_credentials(&self, who: Option<&AuthInfo>) -> Result<(), AuthError> {
        if self.is_enabled() && who.is_none() {
            return Err(AuthError::UserEmpty);
        }
        Ok(())
    }

    /// Range (and RangeStream): READ on the range.
    pub fn check_range(
        &self,
        who: Option<&AuthInfo>,
        request: &RangeRequest,
    ) -> Result<(), AuthError> {
        self.check(who, &request.key, &request.range_end, Access::Read)
    }

    /// Watch create: READ on the whole watched range, checked once at creation.
    pub fn check_watch(
        &self,
        who: Option<&AuthInfo>,
        request: &WatchCreateRequest,
    ) -> Result<(), AuthError> {
        self.check(who, &request.key, &request.range_end, Access::Read)
    }

    /// Put: WRITE on the key; WRITE on every key already attached to its lease (a user
    /// who could not revoke the lease may not attach to it); READ on the key if
    /// `prev_kv` is asked (etcd's `checkPutAuth`).
    pub fn check_put(
        &self,
        who: Option<&AuthInfo>,
        request: &PutRequest,
        leases: &impl LeaseKeys,
    ) -> Result<(), AuthError> {
        self.check(who, &request.key, &[], Access::Write)?;
        self.check_lease_puts(who, request.lease, leases)?;
        if request.prev_kv {
            self.check(who, &request.key, &[], Access::Read)?;
        }
        Ok(())
    }

    /// DeleteRange: WRITE on the range; READ on it too if `prev_kv` is asked.
    pub fn check_delete_range(
        &self,
        who: Option<&AuthInfo>,
        request: &DeleteRangeRequest,
    ) -> Result<(), AuthError> {
        self.check(who, &request.key, &request.range_end, Access::Write)?;
        if request.prev_kv {
            self.check(who, &request.key, &request.range_end, Access::Read)?;
        }
        Ok(())
    }

    /// Txn: READ for every compare, then every op of the success and the failure
    /// branch, recursively through nested txns (etcd's `checkTxnPermission`): a
    /// forbidden op anywhere refuses the whole txn, whichever branch would run.
    pub fn check_txn(
        &self,
        who: Option<&AuthInfo>,
        request: &TxnRequest,
        leases: &impl LeaseKeys,
    ) -> Result<(), AuthError> {
        for compare in &request.compare {
            self.check(who, &compare.key, &compare.range_end, Access::Read)?;
        }
        self.check_ops(who, &request.success, leases)?;
        self.check_ops(who, &request.failure, leases)
    }

    fn check_ops(
        &self,
        who: Option<&AuthInfo>,
        ops: &[RequestOp],
        leases: &impl LeaseKeys,
    ) -> Result<(), AuthError> {
        for op in ops {
            match &op.request {
                None => {}
                Some(Request::RequestRange(range)) => self.check_range(who, range)?,
                Some(Request::RequestPut(put)) => self.check_put(who, put, leases)?,
                Some(Request::RequestDeleteRange(delete)) => {
                    if delete.prev_kv {
                        self.check(who, &delete.key, &delete.range_end, Access::Read)?;
                    }
                    self.check(who, &delete.key, &delete.range_end, Access::Write)?;
                }
                Some(Request::RequestTxn(txn)) => self.check_txn(who, txn, leases)?,
            }
        }
        Ok(())
    }

    /// WRITE on every key attached to `lease` (none for lease 0 or an unknown lease);
    /// root skips the per-key checks (etcd's `checkLeasePuts`).
    fn check_lease_puts(
        &self,
        who: Option<&AuthInfo>,
        lease: i64,
        leases: &impl LeaseKeys,
    ) -> Result<(), AuthError> {
        if lease == 0 {
            return Ok(());
        }
        match leases.lease_keys(lease) {
            Some(keys) => self.check_keys(who, &keys, Access::Write),
            None => Ok(()),
        }
    }

    /// `access` on each of `keys`, unless `who` is root.
    fn check_keys(
        &self,
        who: Option<&AuthInfo>,
        keys: &[Bytes],
        access: Access,
    ) -> Result<(), AuthError> {
        if self.check_admin(who).is_ok() {
            return Ok(());
        }
        for key in keys {
            self.check(who, key, &[], access)?;
        }
        Ok(())
    }

    /// LeaseRevoke of lease `id`: credentials, then WRITE on every attached key (a
    /// revoke deletes them). Revokes the leader proposes for expired leases are the
    /// server's own and are not checked.
    pub fn check_lease_revoke(
        &self,
        who: Option<&AuthInfo>,
        id: i64,
        leases: &impl LeaseKeys,
    ) -> Result<(), AuthError> {
        self.check_credentials(who)?;
        self.check_lease_puts(who, id, leases)
    }

    /// LeaseKeepAlive: WRITE on every key attached to the lease (etcd's
    /// `checkLeaseRenew`).
    pub fn check_lease_keep_alive(
        &self,
        who: Option<&AuthInfo>,
        attached: &[Bytes],
    ) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        self.check_credentials(who)?;
        self.check_keys(who, attached, Access::Write)
    }

    /// LeaseTimeToLive: credentials; with `keys` asked (`attached` is `Some`), READ on
    /// every attached key.
    pub fn check_lease_time_to_live(
        &self,
        who: Option<&AuthInfo>,
        attached: Option<&[Bytes]>,
    ) -> Result<(), AuthError> {
        self.check_credentials(who)?;
        match attached {
            Some(keys) if self.is_enabled() => self.check_keys(who, keys, Access::Read),
            _ => Ok(()),
        }
    }

    /// LeaseLeases: READ on every key attached to any lease (etcd's
    /// `checkLeaseLeases`).
    pub fn check_lease_leases(
        &self,
        who: Option<&AuthInfo>,
        all_attached: &[Bytes],
    ) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        self.check_credentials(who)?;
        self.check_keys(who, all_attached, Access::Read)
    }

    /// UserGet: root, or a user asking about itself.
    pub fn check_user_get(&self, who: Option<&AuthInfo>, name: &str) -> Result<(), AuthError> {
        match self.check_admin(who) {
            Err(err) if who.map_or("", |w| w.username.as_str()) != name => Err(err),
            _ => Ok(()),
        }
    }

    /// RoleGet: root, or a user that holds the role.
    pub fn check_role_get(&self, who: Option<&AuthInfo>, role: &str) -> Result<(), AuthError> {
        match self.check_admin(who) {
            Err(err) if !self.has_role(who.map_or("", |w| w.username.as_str()), role) => Err(err),
            _ => Ok(()),
        }
    }
}
