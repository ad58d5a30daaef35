//! What the crate records, under etcd's metric names, through the [`metrics`] facade
//! (whatever recorder the binary installs exports them).
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `etcd_debugging_auth_revision` | gauge | the current revision of the auth store |
//!
//! The gRPC handled counters with `PermissionDenied` / `Unauthenticated` codes come from
//! the gateway, which maps [`AuthError::code`](crate::AuthError::code).

/// etcd's `etcd_debugging_auth_revision`.
pub const AUTH_REVISION: &str = "etcd_debugging_auth_revision";

/// Registers the descriptions (etcd's help texts) with the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(AUTH_REVISION, "The current revision of auth store.");
}

pub(crate) fn set_revision(revision: u64) {
    metrics::gauge!(AUTH_REVISION).set(revision as f64);
}
