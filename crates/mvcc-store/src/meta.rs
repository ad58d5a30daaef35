//! The store's bookkeeping in the `meta` column family: the applied raft
//! index, the current revision and the compaction revisions, each an 8-byte
//! big-endian number under its own key.

use rocksdb::DB;

use crate::backend::{column_family, CF_META};
use crate::error::MvccError;

/// `meta` key of the last applied raft index (u64, big-endian).
pub const META_APPLIED_INDEX: &[u8] = b"consistent_index";
/// `meta` key of the current store revision (i64, big-endian).
pub const META_CURRENT_REVISION: &[u8] = b"current_revision";
/// `meta` key of the last compaction applied (i64, big-endian); written with
/// the applied index, before any revision is removed.
pub const META_SCHEDULED_COMPACT: &[u8] = b"scheduled_compact_revision";
/// `meta` key of the last compaction whose revisions are all removed.
pub const META_FINISHED_COMPACT: &[u8] = b"finished_compact_revision";

/// The bookkeeping the `meta` column family holds.
#[derive(Debug, Default)]
pub(crate) struct StoredMeta {
    pub applied_index: u64,
    pub current_rev: Option<i64>,
    pub scheduled_compact: Option<i64>,
    pub finished_compact: Option<i64>,
}

impl StoredMeta {
    /// Reads it through `get` (the stored bytes of a `meta` key, if any).
    pub fn read(
        mut get: impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, MvccError>,
    ) -> Result<StoredMeta, MvccError> {
        let mut number = |key: &[u8]| -> Result<Option<u64>, MvccError> {
            get(key)?.map(|raw| decode_meta(key, &raw)).transpose()
        };
        Ok(StoredMeta {
            applied_index: number(META_APPLIED_INDEX)?.unwrap_or(0),
            current_rev: number(META_CURRENT_REVISION)?.map(|v| v as i64),
            scheduled_compact: number(META_SCHEDULED_COMPACT)?.map(|v| v as i64),
            finished_compact: number(META_FINISHED_COMPACT)?.map(|v| v as i64),
        })
    }

    /// Reads it from `db`'s `meta` column family.
    pub fn read_db(db: &DB) -> Result<StoredMeta, MvccError> {
        let cf = column_family(db, CF_META)?;
        StoredMeta::read(|key| db.get_cf(cf, key).map_err(MvccError::backend))
    }
}

/// Decodes the 8-byte big-endian number stored under `meta` key `key`.
fn decode_meta(key: &[u8], raw: &[u8]) -> Result<u64, MvccError> {
    let bytes: [u8; 8] = raw.try_into().map_err(|_| {
        MvccError::Corrupt(format!(
            "meta {:?} has {} bytes, not 8",
            String::from_utf8_lossy(key),
            raw.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}
