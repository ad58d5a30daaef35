//! Helpers shared by the unit tests.

use bytes::Bytes;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
};
use cairn_proto::mvccpb::KeyValue;
use tempfile::TempDir;

use crate::backend::CF_KEY;
use crate::{Backend, BackendBatch, KvStore, Revision, WriteOutcome};

/// A store in a fresh temporary directory.
pub fn new_store() -> (TempDir, KvStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(Backend::open(dir.path()).unwrap()).unwrap();
    (dir, store)
}

/// Closes `store` and opens the same directory again.
pub fn reopen(dir: &TempDir, store: KvStore) -> KvStore {
    drop(store);
    KvStore::open(Backend::open(dir.path()).unwrap()).unwrap()
}

/// The raft index the next write applies.
pub fn next_index(store: &KvStore) -> u64 {
    store.applied_index() + 1
}

/// Puts `key = value`.
pub fn put(store: &KvStore, key: &str, value: &str) -> WriteOutcome<PutResponse> {
    store
        .put(next_index(store), &put_req(key, value), BackendBatch::new())
        .unwrap()
}

/// A plain put request.
pub fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    }
}

/// Deletes `[key, range_end)` (etcd's convention).
pub fn delete(store: &KvStore, key: &str, range_end: &str) -> i64 {
    store
        .delete_range(
            next_index(store),
            &delete_req(key, range_end),
            BackendBatch::new(),
        )
        .unwrap()
        .response
        .deleted
}

/// A delete request.
pub fn delete_req(key: &str, range_end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        prev_kv: false,
    }
}

/// A range request over `[key, range_end)`.
pub fn range_req(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        ..Default::default()
    }
}

/// Reads `[key, range_end)` at the current revision.
pub fn range(store: &KvStore, key: &str, range_end: &str) -> RangeResponse {
    store.range(&range_req(key, range_end)).unwrap()
}

/// The value of `key` now, if any.
pub fn get(store: &KvStore, key: &str) -> Option<KeyValue> {
    range(store, key, "").kvs.pop()
}

/// The keys of a response, as strings.
pub fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.to_vec()).unwrap())
        .collect()
}

/// A key-value with no lease.
pub fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        create_revision: create,
        mod_revision: modified,
        version,
        lease: 0,
    }
}

/// The key-value a deletion event carries.
pub fn tombstone(key: &str, modified: i64) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(key.as_bytes()),
        mod_revision: modified,
        ..Default::default()
    }
}

/// Txn op builders.
pub mod op {
    use super::*;

    pub fn put(key: &str, value: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(put_req(key, value))),
        }
    }

    pub fn get(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(range_req(key, ""))),
        }
    }

    pub fn range(req: RangeRequest) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(req)),
        }
    }

    pub fn delete(key: &str, range_end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(delete_req(key, range_end))),
        }
    }
}

/// Every `(main, sub, tombstone)` stored in the `key` column family, in order.
pub fn stored_revisions(store: &KvStore) -> Vec<(i64, i64, bool)> {
    store
        .backend()
        .scan(CF_KEY)
        .unwrap()
        .map(|item| {
            let (key, _) = item.unwrap();
            let (rev, tombstone) = Revision::from_key(&key).unwrap();
            (rev.main, rev.sub, tombstone)
        })
        .collect()
}

/// Compacts at `rev` as the next raft entry, and waits until the removal is done.
pub fn compact_at(store: &KvStore, rev: i64) -> Result<(), crate::MvccError> {
    store.compact(
        next_index(store),
        &cairn_proto::etcdserverpb::CompactionRequest {
            revision: rev,
            physical: true,
        },
    )?;
    assert!(
        store.wait_compacted(rev, std::time::Duration::from_secs(30)),
        "the compaction at {rev} was not removed within 30 s"
    );
    Ok(())
}

/// Every key-value of the store now, in key order.
pub fn all_kvs(store: &KvStore) -> Vec<KeyValue> {
    range(store, "\0", "\0").kvs
}

/// Checkpoints `store`'s backend into `parent/name` and returns its path.
pub fn checkpoint(store: &KvStore, parent: &TempDir, name: &str) -> std::path::PathBuf {
    let path = parent.path().join(name);
    store.backend().checkpoint(&path).unwrap();
    path
}
