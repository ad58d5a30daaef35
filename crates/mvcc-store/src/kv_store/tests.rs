//! Behaviour of the store through its public API. Where a test says "etcd
//! answered", the same requests were sent to etcd 3.4.23 and the expected
//! values are its answers.

use bytes::Bytes;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::{Event, KeyValue};

use super::*;
use crate::backend::{BackendBatch, CF_LEASE};
use crate::meta::META_FINISHED_COMPACT;
use crate::test_util::*;

/// Compacts at `rev` and waits for the background removal.
fn compact(store: &KvStore, rev: i64) -> Result<WriteOutcome<CompactionResponse>, MvccError> {
    let outcome = store.compact(
        next_index(store),
        &CompactionRequest {
            revision: rev,
            physical: false,
        },
    )?;
    if rev > 0 {
        assert!(store.wait_compacted(rev, std::time::Duration::from_secs(30)));
    }
    Ok(outcome)
}

#[test]
fn a_compaction_removes_revisions_in_the_background_and_hash_kv_ignores_the_rest() {
    let (_dir, store) = new_store();
    for i in 0..5000 {
        put(&store, &format!("k{}", i % 10), "v");
    }
    let (_dir2, twin) = new_store();
    for i in 0..5000 {
        put(&twin, &format!("k{}", i % 10), "v");
    }
    let before = stored_revisions(&store).len();
    assert_eq!(before, 5000);
    // The apply returns at once; the removal (5 batches with pauses) follows.
    store
        .compact(
            next_index(&store),
            &CompactionRequest {
                revision: 4990,
                physical: false,
            },
        )
        .unwrap();
    // Reads and HashKV already see the compacted store, whatever is still stored.
    assert_eq!(
        store.range(&range_req("k0", "")).unwrap().kvs[0].mod_revision,
        4992
    );
    let while_removing = store.hash_kv(0).unwrap();
    assert!(store.wait_compacted(4990, std::time::Duration::from_secs(30)));
    // Revisions 4991..=5001, and each key's last one at or below 4990.
    assert_eq!(stored_revisions(&store).len(), 11 + 10);
    assert_eq!(store.hash_kv(0).unwrap(), while_removing);
    compact(&twin, 4990).unwrap();
    assert_eq!(twin.hash_kv(0).unwrap(), while_removing);
}

fn put_event(kv: KeyValue, prev: Option<KeyValue>) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(kv),
        prev_kv: prev,
    }
}

fn delete_event(kv: KeyValue, prev: Option<KeyValue>) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(kv),
        prev_kv: prev,
    }
}

/// The data set of the range tests (etcd: a=v3 b=v1 c=v1 a=v0 d=a b=v1):
/// a(v0, create 2, mod 5, version 2), b(v1, 3, 7, 2), c(v1, 4, 4, 1),
/// d("a", 6, 6, 1); revision 7.
fn range_fixture() -> (tempfile::TempDir, KvStore) {
    let (dir, store) = new_store();
    for (k, v) in [
        ("a", "v3"),
        ("b", "v1"),
        ("c", "v1"),
        ("a", "v0"),
        ("d", "a"),
        ("b", "v1"),
    ] {
        put(&store, k, v);
    }
    assert_eq!(store.current_revision(), 7);
    (dir, store)
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KvStore>();
    assert_send_sync::<Backend>();
}

#[test]
fn empty_store_starts_at_revision_one() {
    let (_dir, store) = new_store();
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.compact_revision(), 0);
    assert_eq!(store.applied_index(), 0);
    let resp = range(&store, "\0", "\0");
    assert_eq!(resp.kvs, vec![]);
    assert_eq!(resp.count, 0);
    assert!(!resp.more);
    assert_eq!(resp.header.unwrap().revision, 1);
}

#[test]
fn put_maintains_revisions_and_versions() {
    let (_dir, store) = new_store();
    let first = store
        .put(5, &put_req("a", "1"), BackendBatch::new())
        .unwrap();
    assert_eq!(first.revision, 2);
    assert_eq!(first.response.header.unwrap().revision, 2);
    assert_eq!(first.response.prev_kv, None);
    assert_eq!(first.events, vec![put_event(kv("a", "1", 2, 2, 1), None)]);
    assert_eq!(store.applied_index(), 5);

    let second = store
        .put(
            6,
            &PutRequest {
                prev_kv: true,
                lease: 42,
                ..put_req("a", "2")
            },
            BackendBatch::new(),
        )
        .unwrap();
    assert_eq!(second.revision, 3);
    assert_eq!(second.response.prev_kv, Some(kv("a", "1", 2, 2, 1)));
    let expected = KeyValue {
        lease: 42,
        ..kv("a", "2", 2, 3, 2)
    };
    assert_eq!(
        second.events,
        vec![put_event(expected.clone(), Some(kv("a", "1", 2, 2, 1)))]
    );
    assert_eq!(get(&store, "a"), Some(expected));

    put(&store, "b", "x");
    assert_eq!(get(&store, "b"), Some(kv("b", "x", 4, 4, 1)));
    assert_eq!(store.current_revision(), 4);
    assert_eq!(
        stored_revisions(&store),
        [(2, 0, false), (3, 0, false), (4, 0, false)]
    );
}

#[test]
fn put_ignore_value_and_ignore_lease() {
    let (_dir, store) = new_store();
    store
        .put(
            1,
            &PutRequest {
                lease: 7,
                ..put_req("a", "keep")
            },
            BackendBatch::new(),
        )
        .unwrap();
    let outcome = store
        .put(
            2,
            &PutRequest {
                ignore_value: true,
                lease: 8,
                ..put_req("a", "")
            },
            BackendBatch::new(),
        )
        .unwrap();
    let after = KeyValue {
        lease: 8,
        ..kv("a", "keep", 2, 3, 2)
    };
    assert_eq!(outcome.events[0].kv, Some(after.clone()));
    let outcome = store
        .put(
            3,
            &PutRequest {
                ignore_lease: true,
                ..put_req("a", "new")
            },
            BackendBatch::new(),
        )
        .unwrap();
    assert_eq!(
        outcome.events[0].kv,
        Some(KeyValue {
            lease: 8,
            ..kv("a", "new", 2, 4, 3)
        })
    );

    // A missing key: etcd's "key not found", nothing changes.
    for req in [
        PutRequest {
            ignore_value: true,
            ..put_req("missing", "")
        },
        PutRequest {
            ignore_lease: true,
            ..put_req("missing", "v")
        },
    ] {
        assert_eq!(
            store.put(4, &req, BackendBatch::new()),
            Err(MvccError::KeyNotFound)
        );
    }
    assert_eq!(store.current_revision(), 4);
    assert_eq!(store.applied_index(), 3);
    assert_eq!(get(&store, "missing"), None);
    store.record_applied(4).unwrap();
    assert_eq!(store.applied_index(), 4);
}

#[test]
fn range_single_prefix_from_key_and_all() {
    let (_dir, store) = new_store();
    for k in ["a", "ab", "abc", "b", "c\0", "c"] {
        put(&store, k, "v");
    }
    assert_eq!(keys(&range(&store, "ab", "")), ["ab"]);
    assert_eq!(keys(&range(&store, "zz", "")), Vec::<String>::new());
    // Prefix "ab": range_end "ac".
    assert_eq!(keys(&range(&store, "ab", "ac")), ["ab", "abc"]);
    // From key.
    assert_eq!(keys(&range(&store, "b", "\0")), ["b", "c", "c\0"]);
    // All keys.
    let all = range(&store, "\0", "\0");
    assert_eq!(keys(&all), ["a", "ab", "abc", "b", "c", "c\0"]);
    assert_eq!(all.count, 6);
    // range_end before key: nothing.
    let none = range(&store, "c", "a");
    assert_eq!((none.kvs.len(), none.count), (0, 0));
}

#[test]
fn range_limit_more_and_count() {
    let (_dir, store) = range_fixture();
    let with = |limit| {
        store
            .range(&RangeRequest {
                limit,
                ..range_req("a", "z")
            })
            .unwrap()
    };
    // etcd answered: limit 3 -> a b c, more, count 4; limit 4 -> all, no more.
    let three = with(3);
    assert_eq!(
        (keys(&three), three.more, three.count),
        (vec!["a".into(), "b".into(), "c".into()], true, 4)
    );
    let four = with(4);
    assert_eq!((four.kvs.len(), four.more, four.count), (4, false, 4));
    let negative = with(-1);
    assert_eq!((negative.kvs.len(), negative.more), (4, false));
    assert_eq!(three.kvs[0], kv("a", "v0", 2, 5, 2));
}

#[test]
fn range_at_a_revision_and_its_errors() {
    let (_dir, store) = range_fixture();
    let at = |revision| {
        store.range(&RangeRequest {
            revision,
            ..range_req("a", "z")
        })
    };
    let old = at(4).unwrap();
    assert_eq!(
        old.kvs,
        vec![
            kv("a", "v3", 2, 2, 1),
            kv("b", "v1", 3, 3, 1),
            kv("c", "v1", 4, 4, 1)
        ]
    );
    assert_eq!(old.count, 3);
    // The header always carries the current revision.
    assert_eq!(old.header.unwrap().revision, 7);
    assert_eq!(at(1).unwrap().count, 0);
    // etcd answered: a negative revision reads the current one.
    assert_eq!(at(-5).unwrap().count, 4);
    assert_eq!(at(8), Err(MvccError::FutureRevision));
    compact(&store, 5).unwrap();
    assert_eq!(at(4), Err(MvccError::Compacted));
    // At exactly the compaction revision every key is still readable.
    assert_eq!(
        at(5).unwrap().kvs,
        vec![
            kv("a", "v0", 2, 5, 2),
            kv("b", "v1", 3, 3, 1),
            kv("c", "v1", 4, 4, 1)
        ]
    );
}

#[test]
fn range_sorts_as_etcd() {
    let (_dir, store) = range_fixture();
    let sorted = |target: SortTarget, order: SortOrder, limit: i64| {
        let resp = store
            .range(&RangeRequest {
                sort_target: target as i32,
                sort_order: order as i32,
                limit,
                ..range_req("a", "z")
            })
            .unwrap();
        (keys(&resp).concat(), resp.more, resp.count)
    };
    use SortOrder::*;
    use SortTarget::*;
    // Each expectation is etcd's answer.
    assert_eq!(sorted(Key, None, 0), ("abcd".into(), false, 4));
    assert_eq!(sorted(Key, Descend, 0), ("dcba".into(), false, 4));
    assert_eq!(sorted(Key, Descend, 1), ("d".into(), true, 4));
    // A non-KEY target with order NONE sorts ascending...
    assert_eq!(sorted(Value, None, 0), ("dabc".into(), false, 4));
    // ...but only the first limit+1 keys, read in key order.
    assert_eq!(sorted(Value, None, 2), ("ab".into(), true, 4));
    assert_eq!(sorted(Value, Ascend, 2), ("da".into(), true, 4));
    // Ties keep key order.
    assert_eq!(sorted(Value, Descend, 0), ("bcad".into(), false, 4));
    assert_eq!(sorted(Create, Descend, 0), ("dcba".into(), false, 4));
    assert_eq!(sorted(Mod, None, 0), ("cadb".into(), false, 4));
    assert_eq!(sorted(Mod, Descend, 0), ("bdac".into(), false, 4));
    assert_eq!(sorted(Version, Descend, 0), ("abcd".into(), false, 4));
    assert_eq!(sorted(Version, Ascend, 0), ("cdab".into(), false, 4));

    let bad = RangeRequest {
        sort_target: 9,
        ..range_req("a", "z")
    };
    assert_eq!(store.range(&bad), Err(MvccError::InvalidSortOption));
}

#[test]
fn range_keys_only_and_count_only() {
    let (_dir, store) = range_fixture();
    let resp = store
        .range(&RangeRequest {
            keys_only: true,
            ..range_req("a", "c")
        })
        .unwrap();
    assert_eq!(resp.kvs, vec![kv("a", "", 2, 5, 2), kv("b", "", 3, 7, 2)]);
    let resp = store
        .range(&RangeRequest {
            count_only: true,
            limit: 1,
            ..range_req("a", "z")
        })
        .unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (0, false, 4));
}

#[test]
fn range_revision_filters() {
    let (_dir, store) = range_fixture();
    let filtered = |f: fn(&mut RangeRequest)| {
        let mut req = range_req("a", "z");
        f(&mut req);
        let resp = store.range(&req).unwrap();
        (keys(&resp).concat(), resp.more, resp.count)
    };
    // etcd's answers; count ignores the filters.
    assert_eq!(
        filtered(|r| r.min_mod_revision = 5),
        ("abd".into(), false, 4)
    );
    assert_eq!(
        filtered(|r| {
            r.max_mod_revision = 5;
            r.limit = 1
        }),
        ("a".into(), true, 4)
    );
    assert_eq!(
        filtered(|r| {
            r.min_create_revision = 3;
            r.max_create_revision = 4
        }),
        ("bc".into(), false, 4)
    );
    assert_eq!(
        filtered(|r| {
            r.min_create_revision = 3;
            r.max_create_revision = 4;
            r.count_only = true
        }),
        ("".into(), false, 4)
    );
    assert_eq!(
        filtered(|r| {
            r.min_mod_revision = 100;
            r.limit = 1
        }),
        ("".into(), false, 4)
    );
}

#[test]
fn delete_single_range_and_from_key() {
    let (_dir, store) = new_store();
    for k in ["a", "b", "c", "d", "e"] {
        put(&store, k, k);
    }
    // Single key, with prev_kv.
    let outcome = store
        .delete_range(
            10,
            &DeleteRangeRequest {
                prev_kv: true,
                ..delete_req("a", "")
            },
            BackendBatch::new(),
        )
        .unwrap();
    assert_eq!(outcome.revision, 7);
    assert_eq!(outcome.response.deleted, 1);
    assert_eq!(outcome.response.prev_kvs, vec![kv("a", "a", 2, 2, 1)]);
    assert_eq!(outcome.response.header.unwrap().revision, 7);
    assert_eq!(
        outcome.events,
        vec![delete_event(tombstone("a", 7), Some(kv("a", "a", 2, 2, 1)))]
    );
    // A range, one revision with two sub-revisions; prev_kvs only if asked.
    let outcome = store
        .delete_range(11, &delete_req("b", "d"), BackendBatch::new())
        .unwrap();
    assert_eq!((outcome.revision, outcome.response.deleted), (8, 2));
    assert_eq!(outcome.response.prev_kvs, vec![]);
    assert_eq!(
        outcome.events,
        vec![
            delete_event(tombstone("b", 8), Some(kv("b", "b", 3, 3, 1))),
            delete_event(tombstone("c", 8), Some(kv("c", "c", 4, 4, 1))),
        ]
    );
    // From key.
    assert_eq!(delete(&store, "d", "\0"), 2);
    assert_eq!(store.current_revision(), 9);
    assert_eq!(range(&store, "\0", "\0").count, 0);
    assert_eq!(
        &stored_revisions(&store)[5..],
        [
            (7, 0, true),
            (8, 0, true),
            (8, 1, true),
            (9, 0, true),
            (9, 1, true)
        ]
    );
    // A deleted key comes back as a new generation.
    put(&store, "a", "again");
    assert_eq!(get(&store, "a"), Some(kv("a", "again", 10, 10, 1)));
}

#[test]
fn deleting_nothing_keeps_the_revision() {
    let (_dir, store) = new_store();
    put(&store, "a", "1");
    let outcome = store
        .delete_range(
            9,
            &DeleteRangeRequest {
                prev_kv: true,
                ..delete_req("zz", "")
            },
            BackendBatch::new(),
        )
        .unwrap();
    assert_eq!(outcome.revision, 2);
    assert_eq!(outcome.response.header.unwrap().revision, 2);
    assert_eq!(outcome.response.deleted, 0);
    assert_eq!(outcome.events, vec![]);
    assert_eq!(store.current_revision(), 2);
    // The raft index is still recorded.
    assert_eq!(store.applied_index(), 9);
}

#[test]
fn compaction_removes_superseded_revisions() {
    let (_dir, store) = new_store();
    put(&store, "a", "1"); // 2
    put(&store, "a", "2"); // 3
    put(&store, "b", "1"); // 4
    delete(&store, "b", ""); // 5
    put(&store, "c", "1"); // 6
    delete(&store, "c", ""); // 7
    put(&store, "a", "3"); // 8

    assert_eq!(compact(&store, 9), Err(MvccError::FutureRevision));
    let outcome = compact(&store, 7).unwrap();
    assert_eq!(outcome.revision, 8);
    assert_eq!(outcome.response.header.unwrap().revision, 8);
    assert_eq!(outcome.events, vec![]);
    assert_eq!(store.compact_revision(), 7);
    assert_eq!(store.current_revision(), 8);
    // a@3 is the latest of "a" at 7, a@8 is newer; b's whole life is before
    // 7; c's deletion is exactly at 7 and stays for watchers from 7.
    assert_eq!(
        stored_revisions(&store),
        [(3, 0, false), (7, 0, true), (8, 0, false)]
    );
    assert_eq!(
        store
            .range(&RangeRequest {
                revision: 7,
                ..range_req("\0", "\0")
            })
            .unwrap()
            .kvs,
        vec![kv("a", "2", 2, 3, 2)]
    );
    assert_eq!(compact(&store, 7), Err(MvccError::Compacted));
    assert_eq!(compact(&store, 6), Err(MvccError::Compacted));
    compact(&store, 8).unwrap();
    assert_eq!(stored_revisions(&store), [(8, 0, false)]);
    assert_eq!(get(&store, "a"), Some(kv("a", "3", 2, 8, 3)));
}

#[test]
fn compaction_at_zero_is_accepted_until_the_first_real_one() {
    // etcd answered: compact 0, compact 0 both fine; after compact 1, 0 is
    // compacted; a negative revision always is.
    let (_dir, store) = new_store();
    assert!(compact(&store, 0).is_ok());
    assert!(compact(&store, 0).is_ok());
    assert_eq!(compact(&store, -3), Err(MvccError::Compacted));
    assert_eq!(store.compact_revision(), 0);
    compact(&store, 1).unwrap();
    assert_eq!(store.compact_revision(), 1);
    assert_eq!(compact(&store, 1), Err(MvccError::Compacted));
    assert_eq!(compact(&store, 0), Err(MvccError::Compacted));
    // Reading at the compaction revision works.
    assert_eq!(
        store
            .range(&RangeRequest {
                revision: 1,
                ..range_req("a", "")
            })
            .unwrap()
            .count,
        0
    );
}

#[test]
fn restart_rebuilds_the_same_state() {
    let (dir, store) = new_store();
    put(&store, "a", "1"); // 2
    put(&store, "b", "1"); // 3
    put(&store, "a", "2"); // 4
    delete(&store, "b", ""); // 5
    put(&store, "b", "2"); // 6
    put(&store, "c", "1"); // 7
    delete(&store, "c", ""); // 8
    compact(&store, 4).unwrap();
    put(&store, "a", "3"); // 9
    store.record_applied(42).unwrap();

    let snapshot = |store: &KvStore| {
        (4..=9)
            .map(|revision| {
                store
                    .range(&RangeRequest {
                        revision,
                        ..range_req("\0", "\0")
                    })
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let before = snapshot(&store);
    let store = reopen(&dir, store);
    assert_eq!(store.current_revision(), 9);
    assert_eq!(store.compact_revision(), 4);
    assert_eq!(store.applied_index(), 42);
    assert_eq!(snapshot(&store), before);
    assert_eq!(
        store.range(&RangeRequest {
            revision: 3,
            ..range_req("a", "")
        }),
        Err(MvccError::Compacted)
    );
    // Writes continue where they stopped.
    let outcome = store
        .put(43, &put_req("b", "3"), BackendBatch::new())
        .unwrap();
    assert_eq!(outcome.revision, 10);
    assert_eq!(get(&store, "b"), Some(kv("b", "3", 6, 10, 2)));
    put(&store, "a", "4");
    assert_eq!(get(&store, "a"), Some(kv("a", "4", 2, 11, 4)));
}

#[test]
fn restart_after_deleting_everything_keeps_the_revision() {
    let (dir, store) = new_store();
    put(&store, "a", "1");
    delete(&store, "a", "");
    compact(&store, 3).unwrap();
    compact(&store, 3).unwrap_err();
    put(&store, "a", "1");
    delete(&store, "a", "");
    compact(&store, 5).unwrap();
    let store = reopen(&dir, store);
    assert_eq!(store.current_revision(), 5);
    assert_eq!(store.compact_revision(), 5);
    assert_eq!(put(&store, "x", "y").revision, 6);
}

#[test]
fn an_interrupted_compaction_is_finished_at_open() {
    let (dir, store) = new_store();
    put(&store, "a", "1"); // 2
    put(&store, "a", "2"); // 3
    put(&store, "b", "1"); // 4
    delete(&store, "b", ""); // 5
    put(&store, "a", "3"); // 6
                           // The crash window: the compaction and its raft index are recorded, and
                           // only one of the revisions it removes (a@2) is gone.
    let backend = store.backend().clone();
    let meta = backend.cf(CF_META).unwrap();
    let key_cf = backend.cf(CF_KEY).unwrap();
    let mut batch = WriteBatch::default();
    batch.put_cf(meta, META_SCHEDULED_COMPACT, 5i64.to_be_bytes());
    batch.put_cf(meta, META_APPLIED_INDEX, 77u64.to_be_bytes());
    batch.delete_cf(key_cf, Revision::new(2, 0).to_key(false));
    backend.write_raw(batch).unwrap();
    drop(backend);

    let store = reopen(&dir, store);
    assert_eq!(store.compact_revision(), 5);
    assert_eq!(store.applied_index(), 77);
    assert_eq!(
        stored_revisions(&store),
        [(3, 0, false), (5, 0, true), (6, 0, false)]
    );
    assert_eq!(
        store.backend().get(CF_META, META_FINISHED_COMPACT).unwrap(),
        Some(5i64.to_be_bytes().to_vec())
    );
    assert_eq!(
        store.range(&RangeRequest {
            revision: 4,
            ..range_req("a", "")
        }),
        Err(MvccError::Compacted)
    );
    assert_eq!(get(&store, "a"), Some(kv("a", "3", 2, 6, 3)));
    assert_eq!(compact(&store, 5), Err(MvccError::Compacted));

    // Opening again finds nothing left to do.
    let store = reopen(&dir, store);
    assert_eq!(store.compact_revision(), 5);
    assert_eq!(
        stored_revisions(&store),
        [(3, 0, false), (5, 0, true), (6, 0, false)]
    );
}

#[test]
fn extra_batch_is_committed_with_the_write() {
    let (dir, store) = new_store();
    let mut extra = BackendBatch::new();
    extra.put_cf(CF_LEASE, b"lease-1", b"ttl");
    store.put(3, &put_req("a", "1"), extra).unwrap();
    let mut extra = BackendBatch::new();
    extra.put_cf(CF_LEASE, b"lease-2", b"ttl");
    store.record_applied_with(4, extra).unwrap();

    // A bad extra batch fails the whole write; nothing changes.
    let mut extra = BackendBatch::new();
    extra.put_cf(CF_LEASE, b"lease-3", b"ttl");
    extra.put_cf("nope", b"x", b"y");
    assert_eq!(
        store.put(5, &put_req("b", "1"), extra),
        Err(MvccError::UnknownColumnFamily("nope".into()))
    );
    assert_eq!(store.current_revision(), 2);
    assert_eq!(store.applied_index(), 4);
    assert_eq!(get(&store, "b"), None);

    let store = reopen(&dir, store);
    let backend = store.backend();
    assert!(backend.get(CF_LEASE, b"lease-1").unwrap().is_some());
    assert!(backend.get(CF_LEASE, b"lease-2").unwrap().is_some());
    assert!(backend.get(CF_LEASE, b"lease-3").unwrap().is_none());
    assert_eq!(store.applied_index(), 4);
    assert_eq!(store.current_revision(), 2);
    assert_eq!(stored_revisions(&store), [(2, 0, false)]);
}

#[test]
fn events_between_replays_history() {
    let (_dir, store) = new_store();
    put(&store, "a", "1"); // 2
    put(&store, "b", "1"); // 3
    put(&store, "a", "2"); // 4
    store
        .delete_range(
            next_index(&store),
            &delete_req("a", "c"),
            BackendBatch::new(),
        )
        .unwrap(); // 5.0 a, 5.1 b
    put(&store, "a", "3"); // 6
    put(&store, "zz", "1"); // 7

    let all = store
        .events_between(3, 100, &Bytes::from("a"), &Bytes::from("c"), 0)
        .unwrap();
    assert_eq!(
        all,
        vec![
            put_event(kv("b", "1", 3, 3, 1), None),
            put_event(kv("a", "2", 2, 4, 2), Some(kv("a", "1", 2, 2, 1))),
            delete_event(tombstone("a", 5), Some(kv("a", "2", 2, 4, 2))),
            delete_event(tombstone("b", 5), Some(kv("b", "1", 3, 3, 1))),
            put_event(kv("a", "3", 6, 6, 1), None),
        ]
    );
    // The same events as the writes reported.
    let single = store
        .events_between(4, 4, &Bytes::from("a"), &Bytes::new(), 0)
        .unwrap();
    assert_eq!(single, vec![all[1].clone()]);
    // A limit never splits a revision.
    let limited = store
        .events_between(4, 100, &Bytes::from("\0"), &Bytes::from("\0"), 2)
        .unwrap();
    assert_eq!(limited, all[1..4].to_vec());
    let limited = store
        .events_between(2, 100, &Bytes::from("\0"), &Bytes::from("\0"), 1)
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(
        store
            .events_between(8, 100, &Bytes::from("\0"), &Bytes::from("\0"), 0)
            .unwrap(),
        vec![]
    );

    compact(&store, 5).unwrap();
    assert_eq!(
        store.events_between(4, 100, &Bytes::from("a"), &Bytes::new(), 0),
        Err(MvccError::Compacted)
    );
    // From the compaction revision: the deletions at 5 are still there, their
    // previous values are gone.
    assert_eq!(
        store
            .events_between(5, 100, &Bytes::from("a"), &Bytes::from("c"), 0)
            .unwrap(),
        vec![
            delete_event(tombstone("a", 5), None),
            delete_event(tombstone("b", 5), None),
            put_event(kv("a", "3", 6, 6, 1), None),
        ]
    );
    // prev_kv of a first event comes from before the window when stored.
    assert_eq!(
        store
            .events_between(7, 7, &Bytes::from("zz"), &Bytes::new(), 0)
            .unwrap(),
        vec![put_event(kv("zz", "1", 7, 7, 1), None)]
    );
    put(&store, "zz", "2"); // 8
    assert_eq!(
        store
            .events_between(8, 8, &Bytes::from("zz"), &Bytes::new(), 0)
            .unwrap(),
        vec![put_event(
            kv("zz", "2", 7, 8, 2),
            Some(kv("zz", "1", 7, 7, 1))
        )]
    );
}

#[test]
fn readers_see_whole_revisions_while_writing() {
    let (_dir, store) = new_store();
    let store = std::sync::Arc::new(store);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                // Both keys change in one revision.
                let txn = cairn_proto::etcdserverpb::TxnRequest {
                    compare: vec![],
                    success: vec![op::put("x", &i.to_string()), op::put("y", &i.to_string())],
                    failure: vec![],
                };
                store
                    .txn(next_index(&store), &txn, BackendBatch::new())
                    .unwrap();
            }
        })
    };
    let mut checks = 0;
    while !writer.is_finished() || checks == 0 {
        let resp = range(&store, "x", "z");
        let revision = resp.header.unwrap().revision;
        if revision > 1 {
            assert_eq!(resp.kvs.len(), 2);
            assert_eq!(resp.kvs[0].value, resp.kvs[1].value);
            assert_eq!(resp.kvs[0].mod_revision, revision);
        }
        checks += 1;
    }
    writer.join().unwrap();
    assert_eq!(store.current_revision(), 301);
}
