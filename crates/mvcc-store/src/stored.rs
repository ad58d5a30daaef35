//! How key revisions are kept in the `key` column family: each revision
//! (see [`crate::revision`]) maps to its encoded `mvccpb::KeyValue`. Reading
//! them back, one by one or to rebuild the whole key index.

use bytes::Bytes;
use cairn_proto::mvccpb::KeyValue;
use prost::Message;
use rocksdb::{ReadOptions, Snapshot, DB};

use crate::backend::{column_family, Backend, CF_KEY};
use crate::error::MvccError;
use crate::key_index::TreeIndex;
use crate::revision::Revision;

/// Rebuilds the key index from `db`'s `key` column family; also returns the
/// last main revision stored (0 if none).
pub(crate) fn scan_key_index(db: &DB) -> Result<(TreeIndex, i64), MvccError> {
    let mut tree = TreeIndex::default();
    let mut last_main = 0;
    let mut it = db.raw_iterator_cf(column_family(db, CF_KEY)?);
    it.seek_to_first();
    while let (Some(key), Some(value)) = (it.key(), it.value()) {
        let (rev, tombstone) = Revision::from_key(key)?;
        let kv = decode_kv_without_value(value)?;
        if tombstone {
            tree.restore_tombstone(&kv.key, rev);
        } else {
            tree.restore_put(&kv.key, rev, kv.create_revision, kv.version);
        }
        last_main = rev.main;
        it.next();
    }
    it.status().map_err(MvccError::backend)?;
    Ok((tree, last_main))
}

/// Decodes a stored key-value.
pub(crate) fn decode_kv(raw: &[u8]) -> Result<KeyValue, MvccError> {
    KeyValue::decode(Bytes::copy_from_slice(raw))
        .map_err(|err| MvccError::Corrupt(format!("undecodable key-value: {err}")))
}

/// `mvccpb.KeyValue` without its value (field 5), which decoding skips without
/// copying it.
#[derive(Clone, PartialEq, prost::Message)]
struct KeyValueWithoutValue {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(int64, tag = "2")]
    create_revision: i64,
    #[prost(int64, tag = "3")]
    mod_revision: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(int64, tag = "6")]
    lease: i64,
}

/// Decodes a stored key-value but its value (left empty): the key is the only
/// copy made, whatever the size of the value.
pub(crate) fn decode_kv_without_value(raw: &[u8]) -> Result<KeyValue, MvccError> {
    let kv = KeyValueWithoutValue::decode(raw)
        .map_err(|err| MvccError::Corrupt(format!("undecodable key-value: {err}")))?;
    Ok(KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: Bytes::new(),
        lease: kv.lease,
    })
}

/// Which fields of the stored key-values a read needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fields {
    /// The whole key-value.
    All,
    /// Everything but the value (`keys_only` reads that do not sort by value).
    WithoutValue,
}

/// Reads the key-values stored at `revs` (all puts), in the same order, from
/// `snapshot` or else the latest state; `fields` says whether values are needed.
pub(crate) fn load_kvs(
    backend: &Backend,
    snapshot: Option<&Snapshot<'_>>,
    revs: &[Revision],
    fields: Fields,
) -> Result<Vec<KeyValue>, MvccError> {
    if revs.is_empty() {
        return Ok(Vec::new());
    }
    let mut options = ReadOptions::default();
    if let Some(snapshot) = snapshot {
        options.set_snapshot(snapshot);
    }
    let keys: Vec<Vec<u8>> = revs.iter().map(|rev| rev.to_key(false)).collect();
    backend
        .db()
        .batched_multi_get_cf_opt(backend.cf(CF_KEY)?, &keys, false, &options)
        .into_iter()
        .zip(revs)
        .map(|(found, rev)| match found.map_err(MvccError::backend)? {
            Some(raw) if fields == Fields::WithoutValue => decode_kv_without_value(&raw),
            Some(raw) => decode_kv(&raw),
            None => Err(MvccError::Corrupt(format!(
                "revision {rev} is indexed but not stored"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_value_read_without_its_value_keeps_every_other_field() {
        let kv = KeyValue {
            key: Bytes::from_static(b"list/00000001"),
            create_revision: 7,
            mod_revision: 9,
            version: 3,
            value: Bytes::from(vec![0xab; 1024]),
            lease: 0x1234,
        };
        let raw = kv.encode_to_vec();
        assert_eq!(decode_kv(&raw).unwrap(), kv);
        let without = decode_kv_without_value(&raw).unwrap();
        assert_eq!(
            without,
            KeyValue {
                value: Bytes::new(),
                ..kv
            }
        );
        assert!(matches!(
            decode_kv_without_value(&raw[..raw.len() - 1]),
            Err(MvccError::Corrupt(_))
        ));
    }
}
