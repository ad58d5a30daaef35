use super::*;
use crate::backend::{BackendBatch, CF_LEASE, CF_MEMBERS, MEMBER_ID_KEY};
use crate::test_util::*;
use crate::KvStore;

/// The same history in a store: puts, a delete, a txn-free overwrite.
fn same_writes(store: &KvStore) {
    put(store, "a", "1");
    put(store, "b", "2");
    put(store, "a", "3");
    delete(store, "b", "");
    put(store, "c", "4");
}

#[test]
fn hash_kv_is_equal_for_the_same_writes_and_differs_after_one_differing_write() {
    let (_d1, one) = new_store();
    let (_d2, two) = new_store();
    same_writes(&one);
    same_writes(&two);
    let now = one.hash_kv(0).unwrap();
    assert_eq!(now, two.hash_kv(0).unwrap());
    assert_eq!(
        now,
        HashKv {
            hash: now.hash,
            compact_revision: 0,
            hash_revision: 6
        }
    );
    for rev in 1..=6 {
        assert_eq!(
            one.hash_kv(rev).unwrap(),
            two.hash_kv(rev).unwrap(),
            "{rev}"
        );
    }
    assert_ne!(one.hash_kv(5).unwrap().hash, now.hash);

    put(&one, "d", "5");
    put(&two, "d", "6");
    assert_ne!(one.hash_kv(0).unwrap().hash, two.hash_kv(0).unwrap().hash);
    // The history both share still hashes the same.
    assert_eq!(one.hash_kv(6).unwrap(), two.hash_kv(6).unwrap());
    assert_eq!(one.hash_kv(6).unwrap(), now);
}

#[test]
fn hash_kv_ignores_the_applied_index_and_survives_a_reopen() {
    let (_d1, one) = new_store();
    let (d2, two) = new_store();
    same_writes(&one);
    two.record_applied(40).unwrap();
    same_writes(&two);
    assert_ne!(one.applied_index(), two.applied_index());
    assert_eq!(one.hash_kv(0).unwrap(), two.hash_kv(0).unwrap());
    let two = reopen(&d2, two);
    assert_eq!(one.hash_kv(0).unwrap(), two.hash_kv(0).unwrap());
}

#[test]
fn hash_kv_refuses_future_and_compacted_revisions() {
    let (_dir, store) = new_store();
    same_writes(&store);
    assert_eq!(store.hash_kv(7), Err(MvccError::FutureRevision));
    compact_at(&store, 4).unwrap();
    assert_eq!(store.hash_kv(3), Err(MvccError::Compacted));
    let at_compaction = store.hash_kv(4).unwrap();
    assert_eq!(at_compaction.compact_revision, 4);
    assert_eq!(at_compaction.hash_revision, 4);
    assert_eq!(store.hash_kv(0).unwrap().hash_revision, 6);
    assert_eq!(store.hash_kv(0).unwrap().compact_revision, 4);
}

#[test]
fn hash_kv_is_equal_after_the_same_compaction() {
    let (_d1, one) = new_store();
    let (d2, two) = new_store();
    same_writes(&one);
    same_writes(&two);
    let before = one.hash_kv(0).unwrap();
    compact_at(&one, 5).unwrap();
    compact_at(&two, 5).unwrap();
    let after = one.hash_kv(0).unwrap();
    assert_eq!(after, two.hash_kv(0).unwrap());
    // Revisions were removed, so the hash moved.
    assert_ne!(after.hash, before.hash);
    let two = reopen(&d2, two);
    assert_eq!(after, two.hash_kv(0).unwrap());
}

#[test]
fn backend_hash_covers_replicated_state_but_not_member_local_keys() {
    let (_d1, one) = new_store();
    let (_d2, two) = new_store();
    for (store, member) in [(&one, 1u64), (&two, 2u64)] {
        let mut batch = BackendBatch::new();
        batch.put_cf(CF_MEMBERS, MEMBER_ID_KEY, member.to_be_bytes());
        batch.put_cf(CF_MEMBERS, b"cluster_id", 9u64.to_be_bytes());
        batch.put_cf(CF_LEASE, b"l1", b"ttl=10");
        store.record_applied_with(1, batch).unwrap();
    }
    two.record_applied(20).unwrap();
    same_writes(&one);
    same_writes(&two);
    let hash = one.backend().hash().unwrap();
    assert_eq!(hash, two.backend().hash().unwrap());

    let mut lease = BackendBatch::new();
    lease.put_cf(CF_LEASE, b"l2", b"ttl=5");
    two.record_applied_with(next_index(&two), lease).unwrap();
    assert_ne!(two.backend().hash().unwrap(), hash);

    let mut cluster = BackendBatch::new();
    cluster.put_cf(CF_MEMBERS, b"cluster_id", 8u64.to_be_bytes());
    one.record_applied_with(next_index(&one), cluster).unwrap();
    assert_ne!(one.backend().hash().unwrap(), hash);
}

#[test]
fn backend_hash_sees_key_writes() {
    let (_d1, one) = new_store();
    let empty = one.backend().hash().unwrap();
    put(&one, "a", "1");
    let written = one.backend().hash().unwrap();
    assert_ne!(written, empty);
    // Field boundaries count: key "ab" value "c" is not key "a" value "bc".
    let (_d2, two) = new_store();
    let (_d3, three) = new_store();
    put(&two, "ab", "c");
    put(&three, "a", "bc");
    assert_ne!(
        two.backend().hash().unwrap(),
        three.backend().hash().unwrap()
    );
}
