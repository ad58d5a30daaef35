//! How the auth state is persisted: `(key, value)` records of the backend's `auth`
//! column family.
//!
//! The layout follows etcd's three bbolt buckets, folded into one keyspace by prefix:
//!
//! | record key | value | etcd bucket / key |
//! |---|---|---|
//! | `enabled` | one byte, `1` on, `0` off | `auth` / `authEnabled` |
//! | `authRevision` | u64, big-endian | `auth` / `authRevision` |
//! | `user/<name>` | `authpb.User`, protobuf | `authUsers` / `<name>` |
//! | `role/<name>` | `authpb.Role`, protobuf | `authRoles` / `<name>` |
//!
//! A missing `enabled` reads as off, a missing `authRevision` as 1 (the revision etcd
//! commits when it creates an empty store). [`etcd_bucket`] maps a record to etcd's
//! bucket and key, for writing etcd's snapshot format.

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_proto::authpb::{Role, User};
use prost::Message as _;

/// Key of the enabled flag.
pub const ENABLED_KEY: &[u8] = b"enabled";
/// Key of the auth revision.
pub const REVISION_KEY: &[u8] = b"authRevision";
/// Prefix of user records.
pub const USER_PREFIX: &[u8] = b"user/";
/// Prefix of role records.
pub const ROLE_PREFIX: &[u8] = b"role/";

/// One change to the `auth` column family, to be committed in the same write batch as
/// the applied raft index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthWrite {
    /// Set `key` to `value`.
    Put {
        /// Record key.
        key: Vec<u8>,
        /// Record value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Record key.
        key: Vec<u8>,
    },
}

impl AuthWrite {
    /// The record key written or deleted.
    pub fn key(&self) -> &[u8] {
        match self {
            AuthWrite::Put { key, .. } | AuthWrite::Delete { key } => key,
        }
    }
}

/// A record that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt auth record {key:?}: {reason}")]
pub struct RecordError {
    /// The record's key, lossily as text.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RecordError {
    fn new(key: &[u8], reason: impl Into<String>) -> Self {
        RecordError {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.into(),
        }
    }
}

/// etcd's bucket and key for a record (`None` for a key this layout does not define).
pub fn etcd_bucket(key: &[u8]) -> Option<(&'static str, &[u8])> {
    if key == ENABLED_KEY {
        Some(("auth", b"authEnabled"))
    } else if key == REVISION_KEY {
        Some(("auth", b"authRevision"))
    } else if let Some(name) = key.strip_prefix(USER_PREFIX) {
        Some(("authUsers", name))
    } else {
        key.strip_prefix(ROLE_PREFIX)
            .map(|name| ("authRoles", name))
    }
}

/// The record key of etcd's `key` in `bucket` (the inverse of [`etcd_bucket`]); `None`
/// for a key this layout does not define.
pub fn from_etcd_bucket(bucket: &str, key: &[u8]) -> Option<Vec<u8>> {
    match (bucket, key) {
        ("auth", b"authEnabled") => Some(ENABLED_KEY.to_vec()),
        ("auth", b"authRevision") => Some(REVISION_KEY.to_vec()),
        ("authUsers", name) => Some(user_key(name)),
        ("authRoles", name) => Some(role_key(name)),
        _ => None,
    }
}

pub(crate) fn user_key(name: &[u8]) -> Vec<u8> {
    [USER_PREFIX, name].concat()
}

pub(crate) fn role_key(name: &[u8]) -> Vec<u8> {
    [ROLE_PREFIX, name].concat()
}

pub(crate) fn put_user(user: &User) -> AuthWrite {
    AuthWrite::Put {
        key: user_key(&user.name),
        value: user.encode_to_vec(),
    }
}

pub(crate) fn put_role(role: &Role) -> AuthWrite {
    AuthWrite::Put {
        key: role_key(&role.name),
        value: role.encode_to_vec(),
    }
}

pub(crate) fn put_enabled(enabled: bool) -> AuthWrite {
    AuthWrite::Put {
        key: ENABLED_KEY.to_vec(),
        value: vec![u8::from(enabled)],
    }
}

pub(crate) fn put_revision(revision: u64) -> AuthWrite {
    AuthWrite::Put {
        key: REVISION_KEY.to_vec(),
        value: revision.to_be_bytes().to_vec(),
    }
}

/// The state read back from the records.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub enabled: bool,
    pub revision: u64,
    pub users: BTreeMap<Bytes, User>,
    pub roles: BTreeMap<Bytes, Role>,
}

pub(crate) fn load<K, V>(records: impl IntoIterator<Item = (K, V)>) -> Result<Loaded, RecordError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut loaded = Loaded {
        revision: 1,
        ..Loaded::default()
    };
    for (key, value) in records {
        let (key, value) = (key.as_ref(), value.as_ref());
        if key == ENABLED_KEY {
            loaded.enabled = match value {
                [0] => false,
                [1] => true,
                _ => return Err(RecordError::new(key, "not a 0 or 1 byte")),
            };
        } else if key == REVISION_KEY {
            let bytes: [u8; 8] = value
                .try_into()
                .map_err(|_| RecordError::new(key, "not 8 bytes"))?;
            loaded.revision = u64::from_be_bytes(bytes);
        } else if let Some(name) = key.strip_prefix(USER_PREFIX) {
            let user = User::decode(value).map_err(|e| RecordError::new(key, e.to_string()))?;
            if user.name != name {
                return Err(RecordError::new(key, "user name differs from the key"));
            }
            loaded.users.insert(user.name.clone(), user);
        } else if let Some(name) = key.strip_prefix(ROLE_PREFIX) {
            let role = Role::decode(value).map_err(|e| RecordError::new(key, e.to_string()))?;
            if role.name != name {
                return Err(RecordError::new(key, "role name differs from the key"));
            }
            loaded.roles.insert(role.name.clone(), role);
        } else {
            return Err(RecordError::new(key, "unknown auth record"));
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_etcds_buckets() {
        assert_eq!(etcd_bucket(b"enabled"), Some(("auth", &b"authEnabled"[..])));
        assert_eq!(
            etcd_bucket(b"authRevision"),
            Some(("auth", &b"authRevision"[..]))
        );
        assert_eq!(
            etcd_bucket(b"user/alice"),
            Some(("authUsers", &b"alice"[..]))
        );
        assert_eq!(etcd_bucket(b"role/root"), Some(("authRoles", &b"root"[..])));
        assert_eq!(etcd_bucket(b"other"), None);
    }

    #[test]
    fn empty_records_are_a_fresh_store() {
        let loaded = load(Vec::<(Vec<u8>, Vec<u8>)>::new()).unwrap();
        assert!(!loaded.enabled);
        assert_eq!(loaded.revision, 1);
        assert!(loaded.users.is_empty() && loaded.roles.is_empty());
    }

    #[test]
    fn values_round_trip() {
        let user = User {
            name: "u".into(),
            password: "hash".into(),
            roles: vec!["r".into()],
            options: None,
        };
        let role = Role {
            name: "r".into(),
            key_permission: vec![],
        };
        let writes = [
            put_enabled(true),
            put_revision(7),
            put_user(&user),
            put_role(&role),
        ];
        let records = writes.iter().map(|w| match w {
            AuthWrite::Put { key, value } => (key.clone(), value.clone()),
            AuthWrite::Delete { .. } => unreachable!(),
        });
        let loaded = load(records).unwrap();
        assert!(loaded.enabled);
        assert_eq!(loaded.revision, 7);
        assert_eq!(loaded.users[&Bytes::from("u")], user);
        assert_eq!(loaded.roles[&Bytes::from("r")], role);
        assert_eq!(
            writes[1],
            AuthWrite::Put {
                key: b"authRevision".to_vec(),
                value: vec![0, 0, 0, 0, 0, 0, 0, 7]
            }
        );
    }

    #[test]
    fn corrupt_records_are_refused() {
        let cases: [(&[u8], &[u8], &str); 5] = [
            (b"enabled", b"\x02", "not a 0 or 1 byte"),
            (b"authRevision", b"\x01", "not 8 bytes"),
            (b"user/a", b"\xff", "failed to decode"),
            (
                b"user/a",
                &[0x0a, 1, b'b'],
                "user name differs from the key",
            ),
            (b"bogus", b"", "unknown auth record"),
        ];
        for (key, value, reason) in cases {
            let err = load([(key, value)]).unwrap_err();
            assert!(err.reason.contains(reason), "{key:?}: {err}");
        }
    }
}
