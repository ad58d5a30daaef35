//! Hashes of the stored state, compared across members to detect
//! divergence (etcd's Maintenance.Hash and HashKV).
//!
//! Both are CRC-32 (IEEE, `crc32fast`) over length-prefixed fields (each
//! field preceded by its length as a big-endian u64), so that moving a byte
//! from one field to the next changes the hash. They are cairn's own: equal
//! across cairn members that applied the same log, not comparable with
//! etcd's values.

use rocksdb::{ReadOptions, Snapshot};

use crate::backend::{Backend, CF_KEY, CF_MEMBERS, CF_META, COLUMN_FAMILIES, MEMBER_LOCAL_KEYS};
use crate::error::MvccError;
use crate::meta::META_APPLIED_INDEX;
use crate::revision::Revision;

/// Keys [`Backend::hash`] skips besides [`MEMBER_LOCAL_KEYS`]: the applied
/// raft index, which etcd's hash ignores too (it moves with entries that
/// change nothing else), the metadata of the last raft snapshot a member
/// installed (members that never needed one have none), and the proposal
/// ledger written with each raft snapshot a member makes (at its own times).
pub const HASH_IGNORED_KEYS: [(&str, &[u8]); 3] = [
    (CF_META, META_APPLIED_INDEX),
    (CF_MEMBERS, RAFT_SNAPSHOT_KEY),
    (CF_MEMBERS, PROPOSAL_LEDGER_KEY),
];

/// Where a member keeps the metadata of the last raft snapshot it installed.
pub const RAFT_SNAPSHOT_KEY: &[u8] = b"raft_snapshot";

/// Where the raft layer's proposal ledger (which proposals were applied, for
/// exactly-once apply) is written just before a raft snapshot is taken, so
/// that it travels with the snapshot.
pub const PROPOSAL_LEDGER_KEY: &[u8] = b"proposal_ledger";

/// etcd's HashKV answer: a hash of the key space's history up to a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKv {
    /// CRC-32 (IEEE) of every stored key revision at or below
    /// `hash_revision`: for each, in revision order, the encoded revision
    /// (with its tombstone mark) and the stored `mvccpb::KeyValue` bytes,
    /// each prefixed with its length as a big-endian u64, after the column
    /// family name `key` prefixed the same way.
    pub hash: u32,
    /// The store's compaction revision when the hash was taken (0 before
    /// the first compaction).
    pub compact_revision: i64,
    /// The revision the hash covers up to.
    pub hash_revision: i64,
}

impl Backend {
    /// A CRC-32 of the replicated state: every key and value of every
    /// column family of [`COLUMN_FAMILIES`] except [`MEMBER_LOCAL_KEYS`] and
    /// [`HASH_IGNORED_KEYS`], read from one RocksDB snapshot. Members that
    /// applied the same log have the same hash (etcd's Maintenance.Hash).
    ///
    /// Reads the whole database; call it off the async runtime.
    pub fn hash(&self) -> Result<u32, MvccError> {
        let snapshot = self.db().snapshot();
        let mut hasher = crc32fast::Hasher::new();
        for name in COLUMN_FAMILIES {
            let cf = self.cf(name)?;
            hash_field(&mut hasher, name.as_bytes());
            let mut options = ReadOptions::default();
            options.set_snapshot(&snapshot);
            let mut it = self.db().raw_iterator_cf_opt(cf, options);
            it.seek_to_first();
            while let (Some(key), Some(value)) = (it.key(), it.value()) {
                let skipped = MEMBER_LOCAL_KEYS
                    .iter()
                    .chain(&HASH_IGNORED_KEYS)
                    .any(|(ignored_cf, ignored)| *ignored_cf == name && *ignored == key);
                if !skipped {
                    hash_field(&mut hasher, key);
                    hash_field(&mut hasher, value);
                }
                it.next();
            }
            it.status().map_err(MvccError::backend)?;
        }
        Ok(hasher.finalize())
    }
}

/// The hash of every stored key revision at or below `rev` in `snapshot`
/// (see [`HashKv::hash`]), leaving out those a compaction still being removed
/// dropped.
pub(crate) fn key_history(
    backend: &Backend,
    snapshot: &Snapshot<'_>,
    rev: i64,
    pending: Option<&crate::compaction::Pending>,
) -> Result<u32, MvccError> {
    let mut options = ReadOptions::default();
    options.set_snapshot(snapshot);
    options.set_iterate_upper_bound(Revision::new(rev + 1, 0).to_key(false));
    let mut it = backend
        .db()
        .raw_iterator_cf_opt(backend.cf(CF_KEY)?, options);
    it.seek_to_first();
    let mut hasher = crc32fast::Hasher::new();
    hash_field(&mut hasher, CF_KEY.as_bytes());
    while let (Some(key), Some(value)) = (it.key(), it.value()) {
        let dropped = match pending {
            Some(pending) => pending.drops(Revision::from_key(key)?.0),
            None => false,
        };
        if !dropped {
            hash_field(&mut hasher, key);
            hash_field(&mut hasher, value);
        }
        it.next();
    }
    it.status().map_err(MvccError::backend)?;
    Ok(hasher.finalize())
}

/// Feeds one length-prefixed field to a hash.
fn hash_field(hasher: &mut crc32fast::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests;
