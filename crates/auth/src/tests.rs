//! The crate as the server drives it: requests applied in log order through [`Auth`],
//! their writes committed to an in-memory `auth` column family, credentials and checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_proto::authpb::{permission::Type, Permission, UserAddOptions};
use cairn_proto::etcdserverpb::{
    request_op::Request, AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest,
    AuthRoleDeleteRequest, AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
    AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest, AuthenticateRequest,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest,
};

use crate::permission::root_permission;
use crate::*;

const COST: u32 = 4;
const JWT_PRIV: &[u8] = include_bytes!("../testdata/ec-priv.pem");
const JWT_PUB: &[u8] = include_bytes!("../testdata/ec-pub.pem");

/// One member: the Auth handle, its committed `auth` column family, its raft index.
struct Member {
    auth: Auth,
    clock: Arc<ManualClock>,
    backend: BTreeMap<Vec<u8>, Vec<u8>>,
    index: u64,
}

impl Member {
    fn simple() -> Self {
        let clock = ManualClock::new();
        let tokens =
            TokenProvider::from_flag("simple", Duration::from_secs(300), clock.clone()).unwrap();
        Self::with(tokens, clock)
    }

    fn jwt() -> Self {
        let clock = ManualClock::new();
        let tokens = TokenProvider::Jwt(
            token::JwtTokens::new(
                jsonwebtoken::Algorithm::ES256,
                Some(JWT_PUB),
                Some(JWT_PRIV),
                Duration::from_secs(300),
                clock.clone(),
            )
            .unwrap(),
        );
        Self::with(tokens, clock)
    }

    fn with(tokens: TokenProvider, clock: Arc<ManualClock>) -> Self {
        Member {
            auth: Auth::new(AuthStore::new(COST), tokens),
            clock,
            backend: BTreeMap::new(),
            index: 0,
        }
    }

    /// Applies as the server would: the next index, writes committed only on success.
    fn apply_as(
        &mut self,
        who: Option<&AuthInfo>,
        request: AuthRequest,
    ) -> Result<AuthResponse, AuthError> {
        self.index += 1;
        let applied = self.auth.apply(&request, who, self.index)?;
        for write in applied.writes {
            match write {
                AuthWrite::Put { key, value } => self.backend.insert(key, value),
                AuthWrite::Delete { key } => self.backend.remove(&key),
            };
        }
        Ok(applied.response)
    }

    fn apply(&mut self, request: AuthRequest) -> Result<AuthResponse, AuthError> {
        let root = self.root();
        self.apply_as(root.as_ref(), request)
    }

    /// Root's credentials at the current revision, once auth is on.
    fn root(&self) -> Option<AuthInfo> {
        self.auth
            .is_enabled()
            .then(|| who("root", self.auth.revision()))
    }

    fn add_user(&mut self, name: &str, password: &str) {
        let request = self.auth.hash_user_add(user_add(name, password)).unwrap();
        self.apply(AuthRequest::UserAdd(request)).unwrap();
    }

    fn grant_role(&mut self, user: &str, role: &str) {
        self.apply(AuthRequest::UserGrantRole(AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        }))
        .unwrap();
    }

    fn add_role(&mut self, role: &str) {
        self.apply(AuthRequest::RoleAdd(AuthRoleAddRequest {
            name: role.into(),
        }))
        .unwrap();
    }

    fn grant(&mut self, role: &str, perm_type: Type, key: &str, range_end: &str) {
        self.apply(grant_permission(role, perm_type, key, range_end))
            .unwrap();
    }

    /// root (root role), alice (role `app`: READWRITE `/app/` prefix, READ `/ro`,
    /// WRITE `/wo`), bob (no role); auth on.
    fn cluster() -> Self {
        let mut m = Member::simple();
        m.setup();
        m
    }

    fn setup(&mut self) {
        self.add_user("root", "rootpw");
        self.grant_role("root", "root");
        self.add_role("app");
        self.grant("app", Type::Readwrite, "/app/", "/app0");
        self.grant("app", Type::Read, "/ro", "");
        self.grant("app", Type::Write, "/wo", "");
        self.add_user("alice", "alicepw");
        self.grant_role("alice", "app");
        self.add_user("bob", "bobpw");
        self.apply(AuthRequest::AuthEnable(AuthEnableRequest {}))
            .unwrap();
    }

    fn login(&mut self, name: &str, password: &str) -> Result<String, AuthError> {
        let prepared = self.auth.prepare_authenticate(&AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })?;
        match self.apply_as(None, AuthRequest::Authenticate(prepared.entry))? {
            AuthResponse::Authenticate(r) => Ok(r.token),
            other => panic!("{other:?}"),
        }
    }

    /// Opens a second store from the committed records.
    fn reopened(&self) -> AuthStore {
        AuthStore::open(self.backend.clone(), COST).unwrap()
    }
}

fn who(name: &str, revision: u64) -> AuthInfo {
    AuthInfo {
        username: name.into(),
        revision,
    }
}

fn user_add(name: &str, password: &str) -> AuthUserAddRequest {
    AuthUserAddRequest {
        name: name.into(),
        password: password.into(),
        ..Default::default()
    }
}

fn perm(perm_type: Type, key: &str, range_end: &str) -> Permission {
    Permission {
        perm_type: perm_type as i32,
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
    }
}

fn grant_permission(role: &str, perm_type: Type, key: &str, range_end: &str) -> AuthRequest {
    AuthRequest::RoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(perm(perm_type, key, range_end)),
    })
}

fn put(key: &str) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: "v".into(),
        ..Default::default()
    }
}

fn range(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        ..Default::default()
    }
}

fn op(request: Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

// ------------------------------------------------------------------ operations

#[test]
fn every_operation_error_is_etcds() {
    use AuthRequest as R;
    let hashed = |name: &str| hash_user_add(user_add(name, "pw"), COST).unwrap();
    #[rustfmt::skip]
    let table: Vec<(&str, bool, AuthRequest, AuthError)> = vec![
        ("user add empty name", true, R::UserAdd(hashed("")), AuthError::UserEmpty),
        ("user add existing", true, R::UserAdd(hashed("alice")), AuthError::UserAlreadyExist),
        ("user add unhashed", true, R::UserAdd(user_add("carol", "pw")), AuthError::PasswordNotHashed),
        ("user add bad hash", true, R::UserAdd(AuthUserAddRequest { name: "carol".into(), hashed_password: "%%".into(), ..Default::default() }), AuthError::NoPasswordUser),
        ("user get unknown", true, R::UserGet(AuthUserGetRequest { name: "nobody".into() }), AuthError::UserNotFound),
        ("user delete unknown", true, R::UserDelete(AuthUserDeleteRequest { name: "nobody".into() }), AuthError::UserNotFound),
        ("user delete root while on", true, R::UserDelete(AuthUserDeleteRequest { name: "root".into() }), AuthError::InvalidAuthMgmt),
        ("change password unknown", true, R::UserChangePassword(AuthUserChangePasswordRequest { name: "nobody".into(), ..Default::default() }), AuthError::UserNotFound),
        ("grant role unknown user", true, R::UserGrantRole(AuthUserGrantRoleRequest { user: "nobody".into(), role: "app".into() }), AuthError::UserNotFound),
        ("grant role unknown role", true, R::UserGrantRole(AuthUserGrantRoleRequest { user: "bob".into(), role: "nope".into() }), AuthError::RoleNotFound),
        ("revoke role unknown user", true, R::UserRevokeRole(AuthUserRevokeRoleRequest { name: "nobody".into(), role: "app".into() }), AuthError::UserNotFound),
        ("revoke role not granted", true, R::UserRevokeRole(AuthUserRevokeRoleRequest { name: "bob".into(), role: "app".into() }), AuthError::RoleNotGranted),
        ("revoke root's root role while on", true, R::UserRevokeRole(AuthUserRevokeRoleRequest { name: "root".into(), role: "root".into() }), AuthError::InvalidAuthMgmt),
        ("role add empty", true, R::RoleAdd(AuthRoleAddRequest { name: "".into() }), AuthError::RoleEmpty),
        ("role add existing", true, R::RoleAdd(AuthRoleAddRequest { name: "app".into() }), AuthError::RoleAlreadyExist),
        ("role get unknown", true, R::RoleGet(AuthRoleGetRequest { role: "nope".into() }), AuthError::RoleNotFound),
        ("role delete unknown", true, R::RoleDelete(AuthRoleDeleteRequest { role: "nope".into() }), AuthError::RoleNotFound),
        ("role delete root while on", true, R::RoleDelete(AuthRoleDeleteRequest { role: "root".into() }), AuthError::InvalidAuthMgmt),
        ("grant no permission", true, R::RoleGrantPermission(AuthRoleGrantPermissionRequest { name: "app".into(), perm: None }), AuthError::PermissionNotGiven),
        ("grant empty key", true, grant_permission("app", Type::Read, "", ""), AuthError::InvalidAuthMgmt),
        ("grant inverted range", true, grant_permission("app", Type::Read, "b", "a"), AuthError::InvalidAuthMgmt),
        ("grant to unknown role", true, grant_permission("nope", Type::Read, "a", ""), AuthError::RoleNotFound),
        ("revoke perm unknown role", true, R::RoleRevokePermission(AuthRoleRevokePermissionRequest { role: "nope".into(), key: "a".into(), range_end: "".into() }), AuthError::RoleNotFound),
        ("revoke perm not granted", true, R::RoleRevokePermission(AuthRoleRevokePermissionRequest { role: "app".into(), key: "/app/".into(), range_end: "".into() }), AuthError::PermissionNotGranted),
        ("authenticate while off", false, R::Authenticate(AuthenticateEntry { name: "alice".into(), simple_token: "p".into() }), AuthError::AuthNotEnabled),
        ("authenticate unknown", true, R::Authenticate(AuthenticateEntry { name: "nobody".into(), simple_token: "p".into() }), AuthError::AuthFailed),
    ];
    for (name, enabled, request, expected) in table {
        let mut m = Member::cluster();
        if !enabled {
            m.apply(AuthRequest::AuthDisable(AuthDisableRequest {}))
                .unwrap();
        }
        let (revision, backend) = (m.auth.revision(), m.backend.clone());
        assert_eq!(m.apply(request), Err(expected), "{name}");
        assert_eq!(m.auth.revision(), revision, "{name}: revision changed");
        assert_eq!(m.backend, backend, "{name}: records changed");
    }
}

#[test]
fn auth_enable_needs_root_with_the_root_role() {
    let mut m = Member::simple();
    assert_eq!(
        m.apply(AuthRequest::AuthEnable(AuthEnableRequest {})),
        Err(AuthError::RootUserNotExist)
    );
    m.add_user("root", "pw");
    assert_eq!(
        m.apply(AuthRequest::AuthEnable(AuthEnableRequest {})),
        Err(AuthError::RootRoleNotExist)
    );
    // The root role need not exist as a role record to be granted.
    m.grant_role("root", "root");
    assert!(m
        .apply(AuthRequest::AuthEnable(AuthEnableRequest {}))
        .is_ok());
    assert!(m.auth.is_enabled());
    assert_eq!(m.backend[b"enabled".as_slice()], vec![1]);
}

#[test]
fn revision_moves_as_etcds() {
    let mut m = Member::simple();
    let status = |m: &mut Member| match m
        .apply(AuthRequest::AuthStatus(AuthStatusRequest {}))
        .unwrap()
    {
        AuthResponse::AuthStatus(s) => (s.enabled, s.auth_revision),
        other => panic!("{other:?}"),
    };
    assert_eq!(status(&mut m), (false, 1), "a fresh store is at revision 1");
    m.add_user("root", "pw");
    assert_eq!(m.auth.revision(), 2);
    m.grant_role("root", "root");
    assert_eq!(m.auth.revision(), 3);
    m.grant_role("root", "root");
    assert_eq!(
        m.auth.revision(),
        3,
        "granting a role twice changes nothing"
    );
    m.apply(AuthRequest::AuthEnable(AuthEnableRequest {}))
        .unwrap();
    assert_eq!(status(&mut m), (true, 3), "enabling keeps the revision");
    m.apply(AuthRequest::AuthEnable(AuthEnableRequest {}))
        .unwrap();
    assert_eq!(m.auth.revision(), 3);
    m.add_role("r");
    assert_eq!(m.auth.revision(), 4);
    m.apply(AuthRequest::AuthDisable(AuthDisableRequest {}))
        .unwrap();
    assert_eq!(status(&mut m), (false, 5), "disabling bumps it");
    m.apply(AuthRequest::AuthDisable(AuthDisableRequest {}))
        .unwrap();
    assert_eq!(m.auth.revision(), 5);
    assert_eq!(m.backend[b"authRevision".as_slice()], 5u64.to_be_bytes());
}

#[test]
fn users_and_roles_read_back_as_etcd_shows_them() {
    let mut m = Member::cluster();
    for role in ["zeta", "beta"] {
        m.add_role(role);
        m.grant_role("bob", role);
    }
    m.grant_role("bob", "app");
    let AuthResponse::UserGet(user) = m
        .apply(AuthRequest::UserGet(AuthUserGetRequest {
            name: "bob".into(),
        }))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(user.roles, ["app", "beta", "zeta"]);
    let AuthResponse::UserList(users) = m
        .apply(AuthRequest::UserList(AuthUserListRequest {}))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(users.users, ["alice", "bob", "root"]);
    let AuthResponse::RoleList(roles) = m
        .apply(AuthRequest::RoleList(AuthRoleListRequest {}))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        roles.roles,
        ["app", "beta", "zeta"],
        "root was granted without a role record"
    );

    // RoleGet of a root role record shows READWRITE on everything, whatever it holds.
    m.add_role("root");
    m.grant("root", Type::Read, "x", "");
    let AuthResponse::RoleGet(root) = m
        .apply(AuthRequest::RoleGet(AuthRoleGetRequest {
            role: "root".into(),
        }))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(root.perm, [root_permission()]);
    assert_eq!(root_permission().range_end, Bytes::from_static(b"\0"));
}

#[test]
fn permissions_stay_sorted_and_regrants_update_the_type() {
    let mut m = Member::cluster();
    m.add_role("r");
    m.grant("r", Type::Read, "c", "");
    m.grant("r", Type::Write, "a", "\0");
    m.grant("r", Type::Read, "b", "d");
    m.grant("r", Type::Read, "a", "");
    m.grant("r", Type::Readwrite, "b", "d");
    let role_get = |m: &mut Member| match m
        .apply(AuthRequest::RoleGet(AuthRoleGetRequest {
            role: "r".into(),
        }))
        .unwrap()
    {
        AuthResponse::RoleGet(r) => r.perm,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        role_get(&mut m),
        [
            perm(Type::Write, "a", "\0"),
            perm(Type::Read, "a", ""),
            perm(Type::Readwrite, "b", "d"),
            perm(Type::Read, "c", ""),
        ]
    );
    let revoke = |key: &str, range_end: &str| {
        AuthRequest::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        })
    };
    m.apply(revoke("a", "\0")).unwrap();
    assert_eq!(
        m.apply(revoke("a", "\0")),
        Err(AuthError::PermissionNotGranted)
    );
    assert_eq!(
        m.apply(revoke("b", "")),
        Err(AuthError::PermissionNotGranted),
        "key and range end must both match"
    );
    assert_eq!(role_get(&mut m).len(), 3);
}

#[test]
fn role_delete_takes_the_role_from_every_user() {
    let mut m = Member::cluster();
    m.grant_role("bob", "app");
    let revision = m.auth.revision();
    m.apply(AuthRequest::RoleDelete(AuthRoleDeleteRequest {
        role: "app".into(),
    }))
    .unwrap();
    assert_eq!(m.auth.revision(), revision + 1);
    for name in ["alice", "bob"] {
        let AuthResponse::UserGet(user) = m
            .apply(AuthRequest::UserGet(AuthUserGetRequest {
                name: name.into(),
            }))
            .unwrap()
        else {
            panic!()
        };
        assert!(user.roles.is_empty(), "{name}");
    }
    assert!(!m.backend.contains_key(b"role/app".as_slice()));
    assert_eq!(m.reopened().records(), m.auth.store().records());
}

#[test]
fn root_may_go_while_auth_is_off() {
    let mut m = Member::cluster();
    m.apply(AuthRequest::AuthDisable(AuthDisableRequest {}))
        .unwrap();
    m.apply(AuthRequest::UserRevokeRole(AuthUserRevokeRoleRequest {
        name: "root".into(),
        role: "root".into(),
    }))
    .unwrap();
    m.apply(AuthRequest::UserDelete(AuthUserDeleteRequest {
        name: "root".into(),
    }))
    .unwrap();
    m.add_role("root");
    m.apply(AuthRequest::RoleDelete(AuthRoleDeleteRequest {
        role: "root".into(),
    }))
    .unwrap();
    assert!(!m.backend.contains_key(b"user/root".as_slice()));
}

#[test]
fn no_password_users_log_in_by_certificate_only() {
    let mut m = Member::cluster();
    let request = AuthUserAddRequest {
        name: "svc".into(),
        password: "ignored".into(),
        options: Some(UserAddOptions { no_password: true }),
        ..Default::default()
    };
    let request = m.auth.hash_user_add(request).unwrap();
    m.apply(AuthRequest::UserAdd(request)).unwrap();
    let err = m.login("svc", "").unwrap_err();
    assert_eq!(
        (err, err_code(&m, "svc")),
        (AuthError::NoPasswordUser, tonic::Code::Unknown)
    );
    // An entry proposed anyway is refused at apply.
    let entry = AuthenticateEntry {
        name: "svc".into(),
        simple_token: "p".into(),
    };
    assert_eq!(
        m.apply(AuthRequest::Authenticate(entry)),
        Err(AuthError::AuthFailed)
    );
    // Changing the password of a no-password user stores none.
    let change = m
        .auth
        .hash_change_password(AuthUserChangePasswordRequest {
            name: "svc".into(),
            password: "pw".into(),
            ..Default::default()
        })
        .unwrap();
    m.apply(AuthRequest::UserChangePassword(change)).unwrap();
    assert_eq!(m.login("svc", "pw"), Err(AuthError::NoPasswordUser));
    // The certificate's common name is the user.
    assert_eq!(
        m.auth.auth_info(None, Some("svc")).unwrap(),
        Some(who("svc", m.auth.revision()))
    );

    // A user added without options is stored with explicit default options, as etcd.
    let stored = m.auth.store().user("alice").unwrap().options;
    assert_eq!(stored, Some(UserAddOptions { no_password: false }));
}

fn err_code(m: &Member, name: &str) -> tonic::Code {
    m.auth.store().login_hash(name).unwrap_err().code()
}

#[test]
fn the_records_rebuild_the_same_store() {
    let mut m = Member::cluster();
    m.add_role("ops");
    m.grant("ops", Type::Read, "/", "\0");
    m.grant_role("bob", "ops");
    m.apply(AuthRequest::UserDelete(AuthUserDeleteRequest {
        name: "alice".into(),
    }))
    .unwrap();
    let reopened = m.reopened();
    let store = m.auth.store();
    assert_eq!(reopened.records(), store.records());
    assert_eq!(
        (reopened.is_enabled(), reopened.revision()),
        (true, store.revision())
    );
    let bob = who("bob", store.revision());
    for store in [&reopened, &*store] {
        assert_eq!(store.check(Some(&bob), b"/x", b"\0", Access::Read), Ok(()));
        assert_eq!(
            store.check(Some(&bob), b"/x", b"", Access::Write),
            Err(AuthError::PermissionDenied)
        );
    }
    // Every record key is one of the layout's.
    assert!(m.backend.keys().all(|k| record::etcd_bucket(k).is_some()));
}

#[test]
fn a_snapshot_install_replaces_the_state() {
    let mut m = Member::cluster();
    let token = m.login("alice", "alicepw").unwrap();
    let mut other = Member::simple();
    other.add_user("carol", "pw");
    m.auth.recover(other.backend.clone()).unwrap();
    assert!(!m.auth.is_enabled());
    assert_eq!(m.auth.store().user_list().users, ["carol"]);
    m.auth.recover(m.backend.clone()).unwrap();
    assert_eq!(
        m.auth.auth_info(Some(&token), None),
        Err(AuthError::InvalidAuthToken),
        "tokens went with auth off"
    );
}

// ------------------------------------------------------------------ checks

#[test]
fn request_credentials_are_checked_as_etcd() {
    let m = Member::cluster();
    let store = m.auth.store();
    let rev = store.revision();
    let check = |who: Option<&AuthInfo>| store.check(who, b"/app/a", b"", Access::Read);
    assert_eq!(check(None), Err(AuthError::UserEmpty));
    assert_eq!(check(Some(&who("alice", 0))), Err(AuthError::UserEmpty));
    assert_eq!(
        check(Some(&who("alice", rev - 1))),
        Err(AuthError::AuthOldRevision)
    );
    assert_eq!(check(Some(&who("alice", rev))), Ok(()));
    assert_eq!(check(Some(&who("alice", rev + 1))), Ok(()));
    assert_eq!(
        check(Some(&who("nobody", rev))),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        check(Some(&who("bob", rev))),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        store.check(Some(&who("root", rev)), b"", b"\0", Access::Write),
        Ok(())
    );

    assert_eq!(store.check_admin(None), Err(AuthError::UserEmpty));
    assert_eq!(
        store.check_admin(Some(&who("", rev))),
        Err(AuthError::UserEmpty)
    );
    assert_eq!(
        store.check_admin(Some(&who("nobody", rev))),
        Err(AuthError::UserNotFound)
    );
    assert_eq!(
        store.check_admin(Some(&who("alice", rev))),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        store.check_admin(Some(&who("root", 1))),
        Ok(()),
        "admin checks ignore the revision, as etcd"
    );
    assert_eq!(store.check_credentials(None), Err(AuthError::UserEmpty));
    assert_eq!(store.check_credentials(Some(&who("bob", rev))), Ok(()));
}

#[test]
fn everything_passes_while_auth_is_off() {
    let mut m = Member::cluster();
    m.apply(AuthRequest::AuthDisable(AuthDisableRequest {}))
        .unwrap();
    let store = m.auth.store();
    assert_eq!(store.check(None, b"/secret", b"\0", Access::Write), Ok(()));
    assert_eq!(store.check_admin(None), Ok(()));
    assert_eq!(store.check_credentials(None), Ok(()));
    assert_eq!(
        store.check_lease_keep_alive(None, &["/secret".into()]),
        Ok(())
    );
    assert_eq!(m.auth.auth_info(Some("garbage"), Some("cn")), Ok(None));
}

#[test]
fn range_put_delete_and_watch() {
    let m = Member::cluster();
    let store = m.auth.store();
    let alice = who("alice", store.revision());
    let a = Some(&alice);
    assert_eq!(store.check_range(a, &range("/app/", "/app0")), Ok(()));
    assert_eq!(
        store.check_range(a, &range("/app/", "\0")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(store.check_range(a, &range("/ro", "")), Ok(()));
    assert_eq!(
        store.check_range(a, &range("/wo", "")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(store.check_put(a, &put("/wo"), &NoLeases), Ok(()));
    assert_eq!(
        store.check_put(a, &put("/ro"), &NoLeases),
        Err(AuthError::PermissionDenied)
    );
    let prev_kv = PutRequest {
        prev_kv: true,
        ..put("/wo")
    };
    assert_eq!(
        store.check_put(a, &prev_kv, &NoLeases),
        Err(AuthError::PermissionDenied),
        "prev_kv reads"
    );
    let delete = |key: &str, range_end: &str, prev_kv| DeleteRangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        prev_kv,
    };
    assert_eq!(
        store.check_delete_range(a, &delete("/app/x", "/app/y", true)),
        Ok(())
    );
    assert_eq!(
        store.check_delete_range(a, &delete("/wo", "", false)),
        Ok(())
    );
    assert_eq!(
        store.check_delete_range(a, &delete("/wo", "", true)),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        store.check_delete_range(a, &delete("/app/", "/app1", false)),
        Err(AuthError::PermissionDenied)
    );
    let watch = |key: &str, range_end: &str| WatchCreateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        ..Default::default()
    };
    assert_eq!(store.check_watch(a, &watch("/app/", "/app0")), Ok(()));
    assert_eq!(
        store.check_watch(a, &watch("/app/", "/b")),
        Err(AuthError::PermissionDenied),
        "partly outside"
    );
    assert_eq!(store.check_watch(a, &watch("/ro", "")), Ok(()));
}

#[test]
fn a_txn_is_refused_for_any_forbidden_compare_or_op_at_any_depth() {
    let m = Member::cluster();
    let store = m.auth.store();
    let alice = who("alice", store.revision());
    let a = Some(&alice);
    let compare = |key: &str| Compare {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    };
    let allowed = TxnRequest {
        compare: vec![compare("/ro")],
        success: vec![
            op(Request::RequestPut(put("/app/a"))),
            op(Request::RequestRange(range("/ro", ""))),
        ],
        failure: vec![op(Request::RequestTxn(TxnRequest {
            compare: vec![compare("/app/x")],
            success: vec![op(Request::RequestPut(put("/wo")))],
            failure: vec![op(Request::RequestDeleteRange(DeleteRangeRequest {
                key: "/app/".into(),
                range_end: "/app0".into(),
                prev_kv: true,
            }))],
        }))],
    };
    assert_eq!(store.check_txn(a, &allowed, &NoLeases), Ok(()));

    let mut forbidden_compare = allowed.clone();
    forbidden_compare.compare.push(compare("/wo"));
    assert_eq!(
        store.check_txn(a, &forbidden_compare, &NoLeases),
        Err(AuthError::PermissionDenied)
    );

    // One forbidden op two levels down, in a branch that may never run.
    let mut nested = allowed.clone();
    let Some(Request::RequestTxn(inner)) = &mut nested.failure[0].request else {
        panic!()
    };
    inner.failure.push(op(Request::RequestTxn(TxnRequest {
        success: vec![op(Request::RequestPut(put("/etc/passwd")))],
        ..Default::default()
    })));
    assert_eq!(
        store.check_txn(a, &nested, &NoLeases),
        Err(AuthError::PermissionDenied)
    );

    // prev_kv on a write-only key inside a txn.
    let prev_kv = TxnRequest {
        success: vec![op(Request::RequestPut(PutRequest {
            prev_kv: true,
            ..put("/wo")
        }))],
        ..Default::default()
    };
    assert_eq!(
        store.check_txn(a, &prev_kv, &NoLeases),
        Err(AuthError::PermissionDenied)
    );
    let empty_op = TxnRequest {
        success: vec![RequestOp { request: None }],
        ..Default::default()
    };
    assert_eq!(store.check_txn(a, &empty_op, &NoLeases), Ok(()));
    let root = who("root", store.revision());
    assert_eq!(store.check_txn(Some(&root), &nested, &NoLeases), Ok(()));
}

#[test]
fn leases_need_write_on_every_attached_key() {
    let m = Member::cluster();
    let store = m.auth.store();
    let rev = store.revision();
    let (alice, root) = (who("alice", rev), who("root", rev));
    let leases = |id: i64| -> Option<Vec<Bytes>> {
        match id {
            5 => Some(vec!["/app/a".into(), "/secret".into()]),
            6 => Some(vec!["/app/b".into(), "/wo".into()]),
            7 => Some(vec!["/ro".into()]),
            _ => None,
        }
    };
    let with_lease = |lease| PutRequest {
        lease,
        ..put("/app/x")
    };
    assert_eq!(
        store.check_put(Some(&alice), &with_lease(5), &leases),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        store.check_put(Some(&alice), &with_lease(6), &leases),
        Ok(())
    );
    assert_eq!(
        store.check_put(Some(&alice), &with_lease(99), &leases),
        Ok(()),
        "an unknown lease is the lessor's error"
    );
    assert_eq!(
        store.check_put(Some(&root), &with_lease(5), &leases),
        Ok(())
    );
    let txn = TxnRequest {
        success: vec![op(Request::RequestPut(with_lease(5)))],
        ..Default::default()
    };
    assert_eq!(
        store.check_txn(Some(&alice), &txn, &leases),
        Err(AuthError::PermissionDenied)
    );

    assert_eq!(
        store.check_lease_revoke(None, 6, &leases),
        Err(AuthError::UserEmpty)
    );
    assert_eq!(store.check_lease_revoke(Some(&alice), 6, &leases), Ok(()));
    assert_eq!(
        store.check_lease_revoke(Some(&alice), 5, &leases),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        store.check_lease_revoke(Some(&alice), 7, &leases),
        Err(AuthError::PermissionDenied),
        "read is not enough"
    );
    assert_eq!(store.check_lease_revoke(Some(&root), 5, &leases), Ok(()));

    let keys = |id| leases(id).unwrap();
    assert_eq!(store.check_lease_keep_alive(Some(&alice), &keys(6)), Ok(()));
    assert_eq!(
        store.check_lease_keep_alive(Some(&alice), &keys(5)),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        store.check_lease_keep_alive(None, &[]),
        Err(AuthError::UserEmpty)
    );

    assert_eq!(store.check_lease_time_to_live(Some(&alice), None), Ok(()));
    assert_eq!(
        store.check_lease_time_to_live(None, None),
        Err(AuthError::UserEmpty)
    );
    assert_eq!(
        store.check_lease_time_to_live(Some(&alice), Some(&keys(7))),
        Ok(())
    );
    assert_eq!(
        store.check_lease_time_to_live(Some(&alice), Some(&keys(6))),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        store.check_lease_leases(Some(&alice), &[keys(5), keys(6)].concat()),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(store.check_lease_leases(Some(&alice), &keys(7)), Ok(()));
    assert_eq!(store.check_lease_leases(Some(&root), &keys(5)), Ok(()));
}

#[test]
fn admin_operations_are_root_only_and_gets_allow_self() {
    let mut m = Member::cluster();
    let rev = m.auth.revision();
    let alice = who("alice", rev);
    let a = Some(&alice);
    for request in [
        AuthRequest::UserList(AuthUserListRequest {}),
        AuthRequest::RoleList(AuthRoleListRequest {}),
        AuthRequest::RoleAdd(AuthRoleAddRequest {
            name: "mine".into(),
        }),
        AuthRequest::AuthDisable(AuthDisableRequest {}),
        grant_permission("app", Type::Readwrite, "/", "\0"),
    ] {
        assert_eq!(
            m.apply_as(a, request.clone()),
            Err(AuthError::PermissionDenied),
            "{request:?}"
        );
        assert_eq!(m.apply_as(None, request), Err(AuthError::UserEmpty));
    }
    assert!(m
        .apply_as(
            a,
            AuthRequest::UserGet(AuthUserGetRequest {
                name: "alice".into()
            })
        )
        .is_ok());
    assert_eq!(
        m.apply_as(
            a,
            AuthRequest::UserGet(AuthUserGetRequest { name: "bob".into() })
        ),
        Err(AuthError::PermissionDenied)
    );
    assert!(m
        .apply_as(
            a,
            AuthRequest::RoleGet(AuthRoleGetRequest { role: "app".into() })
        )
        .is_ok());
    m.add_role("other");
    assert_eq!(
        m.apply_as(
            a,
            AuthRequest::RoleGet(AuthRoleGetRequest {
                role: "other".into()
            })
        ),
        Err(AuthError::PermissionDenied)
    );
    assert!(m
        .apply_as(None, AuthRequest::AuthStatus(AuthStatusRequest {}))
        .is_ok());
    assert!(!AuthRequest::AuthStatus(AuthStatusRequest {}).is_change());
    assert!(AuthRequest::Authenticate(AuthenticateEntry::default()).is_change());
}

// ------------------------------------------------------------------ tokens

#[test]
fn simple_tokens_through_the_log() {
    let mut m = Member::cluster();
    assert_eq!(m.login("alice", "wrong"), Err(AuthError::AuthFailed));
    assert_eq!(m.login("nobody", "x"), Err(AuthError::AuthFailed));
    let token = m.login("alice", "alicepw").unwrap();
    assert_eq!(m.auth.token_wait_index(&token), Some(m.index));
    let alice = m.auth.auth_info(Some(&token), None).unwrap().unwrap();
    assert_eq!(alice, who("alice", m.auth.revision()));
    assert_eq!(
        m.auth
            .auth_info(Some(&format!("Bearer {token}")), None)
            .unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        m.auth.auth_info(Some("bogus.1"), Some("alice")),
        Err(AuthError::InvalidAuthToken)
    );
    assert_eq!(m.auth.auth_info(None, None), Ok(None));

    // A permission change: the token stays valid and reports the new revision, but a
    // request checked before the change fails at apply time with the old revision.
    m.grant("app", Type::Read, "/more", "");
    assert_eq!(
        m.auth
            .store()
            .check(Some(&alice), b"/more", b"", Access::Read),
        Err(AuthError::AuthOldRevision)
    );
    let fresh = m.auth.auth_info(Some(&token), None).unwrap();
    assert_eq!(
        m.auth
            .store()
            .check(fresh.as_ref(), b"/more", b"", Access::Read),
        Ok(())
    );

    // Expiry since the last use, by the injected clock.
    m.clock.advance(Duration::from_secs(299));
    assert!(m.auth.auth_info(Some(&token), None).unwrap().is_some());
    m.clock.advance(Duration::from_secs(299));
    assert!(
        m.auth.auth_info(Some(&token), None).unwrap().is_some(),
        "refreshed on use"
    );
    m.clock.advance(Duration::from_secs(301));
    assert_eq!(m.auth.sweep_expired_tokens(), 1);
    assert_eq!(
        m.auth.auth_info(Some(&token), None),
        Err(AuthError::InvalidAuthToken)
    );

    // A new password or a deleted user drops the user's tokens.
    let token = m.login("alice", "alicepw").unwrap();
    let change = m
        .auth
        .hash_change_password(AuthUserChangePasswordRequest {
            name: "alice".into(),
            password: "new".into(),
            ..Default::default()
        })
        .unwrap();
    m.apply(AuthRequest::UserChangePassword(change)).unwrap();
    assert_eq!(
        m.auth.auth_info(Some(&token), None),
        Err(AuthError::InvalidAuthToken)
    );
    assert_eq!(m.login("alice", "alicepw"), Err(AuthError::AuthFailed));
    let token = m.login("alice", "new").unwrap();
    m.apply(AuthRequest::UserDelete(AuthUserDeleteRequest {
        name: "alice".into(),
    }))
    .unwrap();
    assert_eq!(
        m.auth.auth_info(Some(&token), None),
        Err(AuthError::InvalidAuthToken)
    );
}

#[test]
fn the_proposer_retries_a_login_raced_by_a_change() {
    let mut m = Member::cluster();
    let prepared = m
        .auth
        .prepare_authenticate(&AuthenticateRequest {
            name: "alice".into(),
            password: "alicepw".into(),
        })
        .unwrap();
    assert_eq!(prepared.checked_revision, m.auth.revision());
    assert_eq!(prepared.entry.simple_token.len(), 16);
    m.add_role("meanwhile");
    assert_ne!(
        prepared.checked_revision,
        m.auth.revision(),
        "the proposer must check and propose again"
    );
}

#[test]
fn jwt_tokens_carry_their_revision() {
    let mut m = Member::jwt();
    m.setup();
    let token = m.login("alice", "alicepw").unwrap();
    let rev = m.auth.revision();
    assert_eq!(m.auth.token_wait_index(&token), None);
    let alice = m.auth.auth_info(Some(&token), None).unwrap();
    assert_eq!(alice, Some(who("alice", rev)));
    assert_eq!(
        m.auth
            .store()
            .check_put(alice.as_ref(), &put("/app/a"), &NoLeases),
        Ok(())
    );

    // Valid on another member that only has the public key.
    let clock: Arc<dyn Clock> = m.clock.clone();
    let verifier = token::JwtTokens::new(
        jsonwebtoken::Algorithm::ES256,
        Some(JWT_PUB),
        None,
        Duration::from_secs(300),
        clock,
    )
    .unwrap();
    let other = Auth::new(m.reopened(), TokenProvider::Jwt(verifier));
    assert_eq!(
        other.auth_info(Some(&token), None).unwrap(),
        Some(who("alice", rev))
    );

    // After any auth change the token is old: the client must authenticate again.
    m.grant("app", Type::Read, "/more", "");
    let stale = m.auth.auth_info(Some(&token), None).unwrap();
    assert_eq!(
        m.auth
            .store()
            .check_put(stale.as_ref(), &put("/app/a"), &NoLeases),
        Err(AuthError::AuthOldRevision)
    );
    let renewed = m.login("alice", "alicepw").unwrap();
    let alice = m.auth.auth_info(Some(&renewed), None).unwrap();
    assert_eq!(
        m.auth
            .store()
            .check_range(alice.as_ref(), &range("/more", "")),
        Ok(())
    );

    // A deleted user's token is old, and it cannot log in again.
    m.apply(AuthRequest::UserDelete(AuthUserDeleteRequest {
        name: "alice".into(),
    }))
    .unwrap();
    let gone = m.auth.auth_info(Some(&renewed), None).unwrap();
    assert_eq!(
        m.auth
            .store()
            .check_range(gone.as_ref(), &range("/app/a", "")),
        Err(AuthError::AuthOldRevision)
    );
    assert_eq!(m.login("alice", "alicepw"), Err(AuthError::AuthFailed));

    // Expired.
    let token = m.login("bob", "bobpw").unwrap();
    m.clock.advance(Duration::from_secs(300));
    assert_eq!(
        m.auth.auth_info(Some(&token), None),
        Err(AuthError::InvalidAuthToken)
    );
}

#[test]
fn the_token_wins_over_the_certificate() {
    let mut m = Member::cluster();
    let token = m.login("alice", "alicepw").unwrap();
    let rev = m.auth.revision();
    assert_eq!(
        m.auth.auth_info(Some(&token), Some("bob")).unwrap(),
        Some(who("alice", rev))
    );
    assert_eq!(
        m.auth.auth_info(None, Some("bob")).unwrap(),
        Some(who("bob", rev))
    );
}

#[test]
fn tokens_are_read_from_etcds_metadata_keys() {
    use tonic::metadata::{MetadataMap, MetadataValue};
    let mut md = MetadataMap::new();
    assert_eq!(token_from_metadata(&md), None);
    md.insert("authorization", MetadataValue::from_static("Bearer abc.1"));
    assert_eq!(token_from_metadata(&md), Some("Bearer abc.1"));
    md.insert("token", MetadataValue::from_static("xyz.2"));
    assert_eq!(token_from_metadata(&md), Some("xyz.2"), "token comes first");
    let mut md = MetadataMap::new();
    md.insert("token", MetadataValue::try_from(&b"\xffbad"[..]).unwrap());
    assert_eq!(token_from_metadata(&md), Some(""));
}
