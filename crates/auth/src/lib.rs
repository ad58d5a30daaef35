//! etcd's authentication for cairn (work in progress): the errors with etcd's codes and
//! messages, merged key-range permissions, password hashing off the apply path, and an
//! injectable clock.
#![deny(missing_docs)]
// The apply half of password handling is used by the store, next.
#![allow(dead_code)]

mod clock;
mod error;
pub mod password;
pub mod permission;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::AuthError;
pub use permission::Access;
