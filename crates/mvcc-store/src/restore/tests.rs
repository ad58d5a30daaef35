//! [`KvStore::restore_from_checkpoint`]: the live store takes the
//! checkpoint's content whole, and readers never see a mix.

use std::sync::atomic::AtomicBool;

use bytes::Bytes;

use super::*;
use crate::backend::{CF_LEASE, CF_MEMBERS, MEMBER_ID_KEY};
use crate::meta::{META_APPLIED_INDEX, META_CURRENT_REVISION};
use crate::test_util::*;

/// A store with history and a compaction: revision 10, compacted at 5, keys
/// b1..b4 with b2 deleted, and lease `l-new`.
fn newer_store() -> (tempfile::TempDir, KvStore) {
    let (dir, store) = new_store();
    store.record_applied(100).unwrap();
    for i in 1..=4 {
        put(&store, &format!("b{i}"), "v1");
    }
    put(&store, "b1", "v2");
    put(&store, "b3", "v2");
    delete(&store, "b2", "");
    compact_at(&store, 5).unwrap();
    put(&store, "b4", "v2");
    put(&store, "b5", "v1");
    let mut lease = BackendBatch::new();
    lease.put_cf(CF_LEASE, b"l-new", b"ttl=60");
    store
        .record_applied_with(next_index(&store), lease)
        .unwrap();
    assert_eq!(store.current_revision(), 10);
    (dir, store)
}

/// A store at revision 3 with keys a1, a2, lease `l-old` and member id 7.
fn older_store() -> (tempfile::TempDir, KvStore) {
    let (dir, store) = new_store();
    let mut local = BackendBatch::new();
    local.put_cf(CF_MEMBERS, MEMBER_ID_KEY, 7u64.to_be_bytes());
    local.put_cf(CF_LEASE, b"l-old", b"ttl=5");
    store.record_applied_with(1, local).unwrap();
    put(&store, "a1", "x");
    put(&store, "a2", "y");
    (dir, store)
}

fn cf_entries(store: &KvStore, cf: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .backend()
        .scan(cf)
        .unwrap()
        .map(|item| {
            let (k, v) = item.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[test]
fn restore_to_a_higher_revision_replaces_everything() {
    let (_sd, source) = newer_store();
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = checkpoint(&source, &tmp, "cp");
    let (target_dir, target) = older_store();

    target.restore_from_checkpoint(&checkpoint).unwrap();

    assert_eq!(target.current_revision(), 10);
    assert_eq!(target.compact_revision(), 5);
    assert_eq!(target.applied_index(), source.applied_index());
    assert_eq!(keys(&range(&target, "\0", "\0")), ["b1", "b3", "b4", "b5"]);
    assert_eq!(all_kvs(&target), all_kvs(&source));
    assert!(get(&target, "a1").is_none());
    assert_eq!(stored_revisions(&target), stored_revisions(&source));
    // History as the source has it, compaction included.
    let mut at_6 = range_req("b", "c");
    at_6.revision = 6;
    assert_eq!(
        target.range(&at_6).unwrap().kvs,
        source.range(&at_6).unwrap().kvs
    );
    at_6.revision = 4;
    assert_eq!(target.range(&at_6), Err(MvccError::Compacted));
    assert_eq!(
        target
            .events_between(
                6,
                10,
                &Bytes::from_static(b"b"),
                &Bytes::from_static(b"c"),
                0
            )
            .unwrap(),
        source
            .events_between(
                6,
                10,
                &Bytes::from_static(b"b"),
                &Bytes::from_static(b"c"),
                0
            )
            .unwrap()
    );
    assert_eq!(target.hash_kv(0).unwrap(), source.hash_kv(0).unwrap());
    // Leases are the checkpoint's; the member id stays this member's.
    assert_eq!(
        cf_entries(&target, CF_LEASE),
        [(b"l-new".to_vec(), b"ttl=60".to_vec())]
    );
    assert_eq!(
        cf_entries(&target, CF_MEMBERS),
        [(MEMBER_ID_KEY.to_vec(), 7u64.to_be_bytes().to_vec())]
    );
    assert_eq!(
        target.backend().hash().unwrap(),
        source.backend().hash().unwrap()
    );

    // Writes go on from the new revision, and a reopen sees the same store.
    assert_eq!(put(&target, "a1", "again").revision, 11);
    let expected = all_kvs(&target);
    let target = reopen(&target_dir, target);
    assert_eq!(all_kvs(&target), expected);
    assert_eq!(target.current_revision(), 11);
    assert_eq!(target.compact_revision(), 5);
}

#[test]
fn restore_to_a_lower_revision_replaces_everything_too() {
    let (_sd, source) = older_store();
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = checkpoint(&source, &tmp, "cp");
    let (target_dir, target) = newer_store();

    target.restore_from_checkpoint(&checkpoint).unwrap();

    assert_eq!(target.current_revision(), 3);
    assert_eq!(target.compact_revision(), 0);
    assert_eq!(target.applied_index(), 3);
    assert_eq!(keys(&range(&target, "\0", "\0")), ["a1", "a2"]);
    assert_eq!(stored_revisions(&target), stored_revisions(&source));
    // The source's member id is not taken: the target had none.
    assert!(cf_entries(&target, CF_MEMBERS).is_empty());
    let target = reopen(&target_dir, target);
    assert_eq!(target.current_revision(), 3);
    assert_eq!(all_kvs(&target), all_kvs(&source));
}

#[test]
fn extra_writes_commit_with_the_restore() {
    let (_sd, source) = newer_store();
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = checkpoint(&source, &tmp, "cp");
    let (target_dir, target) = older_store();

    let mut extra = BackendBatch::new();
    extra.put_cf(CF_META, b"snapshot_term", 3u64.to_be_bytes());
    extra.put_cf(CF_META, META_APPLIED_INDEX, 500u64.to_be_bytes());
    extra.put_cf(CF_MEMBERS, MEMBER_ID_KEY, 8u64.to_be_bytes());
    target
        .restore_from_checkpoint_with(&checkpoint, extra)
        .unwrap();
    assert_eq!(target.applied_index(), 500);
    let meta = cf_entries(&target, CF_META);
    assert!(meta.contains(&(b"snapshot_term".to_vec(), 3u64.to_be_bytes().to_vec())));
    assert_eq!(
        cf_entries(&target, CF_MEMBERS),
        [(MEMBER_ID_KEY.to_vec(), 8u64.to_be_bytes().to_vec())]
    );
    let target = reopen(&target_dir, target);
    assert_eq!(target.applied_index(), 500);
}

#[test]
fn a_refused_restore_changes_nothing() {
    let (_sd, source) = newer_store();
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = checkpoint(&source, &tmp, "cp");
    let (_td, target) = older_store();
    let before = (
        all_kvs(&target),
        target.current_revision(),
        target.applied_index(),
    );

    let mut extra = BackendBatch::new();
    extra.put_cf(CF_KEY, b"raw", b"x");
    assert!(matches!(
        target.restore_from_checkpoint_with(&checkpoint, extra),
        Err(MvccError::Restore(_))
    ));
    let mut bad_meta = BackendBatch::new();
    bad_meta.put_cf(CF_META, META_CURRENT_REVISION, b"short");
    assert!(matches!(
        target.restore_from_checkpoint_with(&checkpoint, bad_meta),
        Err(MvccError::Corrupt(_))
    ));
    assert!(target
        .restore_from_checkpoint(&tmp.path().join("missing"))
        .is_err());
    let not_a_db = tmp.path().join("empty");
    std::fs::create_dir(&not_a_db).unwrap();
    assert!(target.restore_from_checkpoint(&not_a_db).is_err());

    let after = (
        all_kvs(&target),
        target.current_revision(),
        target.applied_index(),
    );
    assert_eq!(after, before);
}

#[test]
fn checkpoint_refuses_an_existing_directory() {
    let (_sd, source) = older_store();
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        source.backend().checkpoint(tmp.path()),
        Err(MvccError::Io(_))
    ));
}

#[test]
fn readers_see_the_old_or_the_new_store_never_a_mix() {
    let (_sd, newer) = newer_store();
    let (_od, older) = older_store();
    let tmp = tempfile::tempdir().unwrap();
    let newer_cp = checkpoint(&newer, &tmp, "newer");
    let older_cp = checkpoint(&older, &tmp, "older");
    let states = [
        (all_kvs(&older), older.current_revision()),
        (all_kvs(&newer), newer.current_revision()),
    ];
    let (_td, target) = new_store();
    target.restore_from_checkpoint(&older_cp).unwrap();

    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut reads = 0u64;
                    while !done.load(Ordering::Acquire) {
                        let resp = target.range(&range_req("\0", "\0")).unwrap();
                        let seen = (resp.kvs, resp.header.unwrap().revision);
                        assert!(states.contains(&seen), "mixed state {seen:?}");
                        let events = target.events_between(
                            1,
                            i64::MAX,
                            &Bytes::from_static(b"\0"),
                            &Bytes::from_static(b"\0"),
                            0,
                        );
                        assert!(
                            matches!(events, Ok(_) | Err(MvccError::Compacted)),
                            "{events:?}"
                        );
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for round in 0..20 {
            let cp = if round % 2 == 0 { &newer_cp } else { &older_cp };
            target.restore_from_checkpoint(cp).unwrap();
        }
        done.store(true, Ordering::Release);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
    });
    assert_eq!((all_kvs(&target), target.current_revision()), states[0]);
}
