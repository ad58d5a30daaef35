//! etcd's authentication for cairn: users with bcrypt-hashed passwords, roles, READ /
//! WRITE / READWRITE permissions on keys, ranges, prefixes and from-key ranges, the
//! `root` user and role, the auth revision, simple and JWT tokens, and the permission
//! check of every RPC — with etcd's semantics and etcd's exact errors.
//!
//! The crate does no I/O on its own. The replicated state ([`AuthStore`]) is rebuilt
//! from the `(key, value)` records of the backend's `auth` column family
//! ([`record`] describes the layout), and every change returns the records to write,
//! for the caller to commit in the same write batch as the applied raft index. bcrypt
//! runs on the member that receives a request, before it is proposed, never while
//! applying. Time comes from a [`Clock`], so token expiry is tested without sleeping.
//! [`Auth`] joins the store and this member's [`TokenProvider`] behind one lock for
//! the server and the gateway; [`AuthError`] carries etcd's gRPC code and message.
//!
//! | module | what |
//! |---|---|
//! | [`store`] | the state and each Auth operation as a state transition |
//! | [`check`] | the permission check of each RPC family |
//! | [`permission`] | merged key ranges per user |
//! | [`password`] | bcrypt, off the apply path |
//! | [`token`] | `--auth-token` parsing, simple and JWT tokens |
//! | [`record`] | the persisted layout |
//! | [`service`] | [`Auth`]: what the server drives |
//! | [`metrics`] | `etcd_debugging_auth_revision` |
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use cairn_auth::{Auth, AuthRequest, AuthResponse, AuthStore, ManualClock, NoLeases, TokenProvider};
//! use cairn_proto::authpb::{permission::Type, Permission};
//! use cairn_proto::etcdserverpb::*;
//!
//! let clock = ManualClock::new();
//! let tokens = TokenProvider::from_flag("simple", Duration::from_secs(300), clock.clone()).unwrap();
//! let auth = Auth::new(AuthStore::new(4), tokens); // --bcrypt-cost 4, for a fast example
//! let mut index = 0;
//! let mut apply = |request: AuthRequest| {
//!     index += 1;
//!     let applied = auth.apply(&request, None, index)?;
//!     // The server commits applied.writes with index `index` in one write batch.
//!     Ok::<_, cairn_auth::AuthError>(applied.response)
//! };
//!
//! // Passwords are hashed before proposing; applying only stores the hash.
//! for (name, password) in [("root", "rootpw"), ("alice", "alicepw")] {
//!     let add = AuthUserAddRequest { name: name.into(), password: password.into(), ..Default::default() };
//!     apply(AuthRequest::UserAdd(auth.hash_user_add(add)?))?;
//! }
//! apply(AuthRequest::UserGrantRole(AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() }))?;
//! apply(AuthRequest::RoleAdd(AuthRoleAddRequest { name: "app".into() }))?;
//! let perm = Permission { perm_type: Type::Readwrite as i32, key: "/app/".into(), range_end: "/app0".into() };
//! apply(AuthRequest::RoleGrantPermission(AuthRoleGrantPermissionRequest { name: "app".into(), perm: Some(perm) }))?;
//! apply(AuthRequest::UserGrantRole(AuthUserGrantRoleRequest { user: "alice".into(), role: "app".into() }))?;
//! apply(AuthRequest::AuthEnable(AuthEnableRequest {}))?;
//!
//! // Login: the password is checked by the receiving member, the entry goes through raft.
//! let login = auth.prepare_authenticate(&AuthenticateRequest { name: "alice".into(), password: "alicepw".into() })?;
//! let AuthResponse::Authenticate(AuthenticateResponse { token, .. }) = apply(AuthRequest::Authenticate(login.entry))? else {
//!     unreachable!()
//! };
//!
//! // A later request carries the token; the check runs before proposing and at apply.
//! let alice = auth.auth_info(Some(&token), None)?;
//! let allowed = PutRequest { key: "/app/config".into(), value: "v".into(), ..Default::default() };
//! let denied = PutRequest { key: "/other".into(), value: "v".into(), ..Default::default() };
//! assert!(auth.store().check_put(alice.as_ref(), &allowed, &NoLeases).is_ok());
//! let err = auth.store().check_put(alice.as_ref(), &denied, &NoLeases).unwrap_err();
//! assert_eq!((err.code(), err.to_string().as_str()), (tonic::Code::PermissionDenied, "etcdserver: permission denied"));
//! # Ok::<(), cairn_auth::AuthError>(())
//! ```
#![deny(missing_docs)]

pub mod check;
mod clock;
mod error;
pub mod metrics;
pub mod password;
pub mod permission;
pub mod record;
pub mod service;
pub mod store;
pub mod token;

pub use check::{LeaseKeys, NoLeases};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::AuthError;
pub use password::{hash_change_password, hash_user_add, DEFAULT_BCRYPT_COST};
pub use permission::Access;
pub use record::{AuthWrite, RecordError};
pub use service::{
    token_from_metadata, Auth, AuthRequest, AuthResponse, AuthenticateEntry, PreparedAuthenticate,
};
pub use store::{Applied, AuthInfo, AuthStore, ROOT_ROLE, ROOT_USER};
pub use token::{TokenConfigError, TokenOptions, TokenProvider};

#[cfg(test)]
mod tests;
