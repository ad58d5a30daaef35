use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_mvcc_store::{Backend, BackendBatch, KvStore};
use cairn_proto::etcdserverpb::PutRequest;

use super::*;

fn primary() -> (Arc<ManualClock>, Lessor) {
    let clock = Arc::new(ManualClock::new());
    let lessor = Lessor::new(2, clock.clone());
    lessor.promote(Duration::ZERO);
    (clock, lessor)
}

fn grant(lessor: &Lessor, id: i64, ttl: i64) -> i64 {
    lessor.grant(id, ttl, &mut BackendBatch::new()).unwrap()
}

#[test]
fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
    assert_eq!(min_ttl(10, Duration::from_millis(100)), 2);
    assert_eq!(min_ttl(10, Duration::from_millis(500)), 8);
    assert_eq!(min_ttl(5, Duration::from_millis(100)), 1);
}

#[test]
fn grant_raises_small_ttls_and_refuses_huge_ones() {
    let (_, lessor) = primary();
    assert_eq!(grant(&lessor, 1, 1), 2);
    assert_eq!(grant(&lessor, 2, 60), 60);
    assert!(matches!(
        lessor.grant(3, MAX_LEASE_TTL + 1, &mut BackendBatch::new()),
        Err(LeaseError::TtlTooLarge)
    ));
    assert!(matches!(
        lessor.grant(2, 5, &mut BackendBatch::new()),
        Err(LeaseError::Exists)
    ));
    assert_eq!(lessor.leases(), vec![1, 2]);
}

#[test]
fn grant_and_revoke_write_the_lease_column_family() {
    let (_, lessor) = primary();
    let mut batch = BackendBatch::new();
    lessor.grant(5, 10, &mut batch).unwrap();
    assert_eq!(batch.len(), 1);
    let mut batch = BackendBatch::new();
    lessor.revoke(5, &mut batch).unwrap();
    assert_eq!(batch.len(), 1);
    assert!(matches!(
        lessor.revoke(5, &mut BackendBatch::new()),
        Err(LeaseError::NotFound)
    ));
}

#[test]
fn expiry_follows_the_clock_and_keep_alive_restarts_it() {
    let (clock, lessor) = primary();
    grant(&lessor, 1, 5);
    clock.advance(Duration::from_secs(4));
    assert!(lessor.expired().is_empty());
    assert_eq!(lessor.renew(1).unwrap(), 5);
    clock.advance(Duration::from_secs(4));
    assert!(lessor.expired().is_empty());
    assert_eq!(lessor.time_to_live(1, false).unwrap().remaining, 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(lessor.expired(), vec![1]);
    // Reported once while its revoke is in flight, then again after the retry interval.
    assert!(lessor.expired().is_empty());
    clock.advance(EXPIRED_RETRY_INTERVAL);
    assert_eq!(lessor.expired(), vec![1]);
    // An expired lease cannot be kept alive.
    assert!(matches!(lessor.renew(1), Err(LeaseError::NotFound)));
}

#[test]
fn expired_leases_come_oldest_first() {
    let (clock, lessor) = primary();
    grant(&lessor, 10, 9);
    grant(&lessor, 20, 3);
    grant(&lessor, 30, 6);
    clock.advance(Duration::from_secs(10));
    assert_eq!(lessor.expired(), vec![20, 30, 10]);
}

#[test]
fn followers_never_expire_and_promotion_restarts_every_ttl() {
    let clock = Arc::new(ManualClock::new());
    let lessor = Lessor::new(2, clock.clone());
    grant(&lessor, 1, 5);
    clock.advance(Duration::from_secs(60));
    assert!(lessor.expired().is_empty());
    assert!(matches!(lessor.renew(1), Err(LeaseError::NotPrimary)));
    lessor.promote(Duration::from_secs(1));
    clock.advance(Duration::from_secs(5));
    assert!(
        lessor.expired().is_empty(),
        "promotion extends by its margin"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(lessor.expired(), vec![1]);
    lessor.demote();
    clock.advance(Duration::from_secs(60));
    assert!(lessor.expired().is_empty());
}

#[test]
fn attached_keys_are_listed_and_returned_on_revoke() {
    let (_, lessor) = primary();
    grant(&lessor, 1, 30);
    lessor.attach(1, Bytes::from("b"));
    lessor.attach(1, Bytes::from("a"));
    lessor.attach(99, Bytes::from("ignored"));
    let ttl = lessor.time_to_live(1, true).unwrap();
    assert_eq!(ttl.granted, 30);
    assert_eq!(ttl.keys, vec![Bytes::from("a"), Bytes::from("b")]);
    assert!(lessor.time_to_live(1, false).unwrap().keys.is_empty());
    lessor.detach(1, b"b");
    assert_eq!(
        lessor.revoke(1, &mut BackendBatch::new()).unwrap(),
        vec![Bytes::from("a")]
    );
    assert!(lessor.time_to_live(1, true).is_none());
}

#[test]
fn recover_rebuilds_leases_and_attachments_from_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(dir.path()).unwrap();
    let store = KvStore::open(backend.clone()).unwrap();
    let (_, lessor) = primary();
    let mut batch = BackendBatch::new();
    lessor.grant(7, 30, &mut batch).unwrap();
    lessor.grant(8, 1, &mut batch).unwrap();
    store.record_applied_with(1, batch).unwrap();
    let put = |index: u64, key: &str, lease: i64| {
        let req = PutRequest {
            key: Bytes::from(key.to_owned()),
            value: Bytes::from_static(b"v"),
            lease,
            ..Default::default()
        };
        store.put(index, &req, BackendBatch::new()).unwrap();
    };
    put(2, "k1", 7);
    put(3, "k2", 7);
    put(4, "plain", 0);
    let mut batch = BackendBatch::new();
    lessor.revoke(8, &mut batch).unwrap();
    store.record_applied_with(5, batch).unwrap();
    drop(store);
    drop(backend);

    let backend = Backend::open(dir.path()).unwrap();
    let store = KvStore::open(backend.clone()).unwrap();
    let clock = Arc::new(ManualClock::new());
    let recovered = Lessor::new(2, clock.clone());
    recovered.recover(&backend, &store).unwrap();
    assert_eq!(recovered.leases(), vec![7]);
    assert!(!recovered.is_primary());
    let ttl = recovered.time_to_live(7, true).unwrap();
    assert_eq!(ttl.granted, 30);
    assert_eq!(ttl.keys, vec![Bytes::from("k1"), Bytes::from("k2")]);
    recovered.promote(Duration::ZERO);
    clock.advance(Duration::from_secs(29));
    assert!(recovered.expired().is_empty());
    clock.advance(Duration::from_secs(1));
    assert_eq!(recovered.expired(), vec![7]);
}
