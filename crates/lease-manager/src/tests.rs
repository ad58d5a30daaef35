use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_mvcc_store::backend::CF_LEASE;
use cairn_mvcc_store::{Backend, BackendBatch, BatchOp, KvStore, MvccError};
use cairn_proto::etcdserverpb::PutRequest;

use super::*;

fn primary() -> (Arc<ManualClock>, Lessor) {
    let clock = Arc::new(ManualClock::new());
    let lessor = Lessor::new(2, clock.clone());
    lessor.promote(Duration::ZERO);
    (clock, lessor)
}

/// The lease column family and the leased keys in memory: what [`Lessor::recover`] reads,
/// without RocksDB.
#[derive(Default)]
struct MemoryLeaseStore {
    records: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    keys: Vec<(i64, Bytes)>,
    /// Every read fails with this, as a failing disk would.
    failure: Option<MvccError>,
    /// How many times the key space was read.
    key_reads: std::cell::Cell<usize>,
}

impl MemoryLeaseStore {
    /// Applies the lease writes of `batch`, as the store's commit would.
    fn commit(&mut self, batch: &BackendBatch) {
        for op in batch.ops() {
            match op {
                BatchOp::Put { cf, key, value } if cf == CF_LEASE => {
                    self.records.insert(key.clone(), value.clone());
                }
                BatchOp::Delete { cf, key } if cf == CF_LEASE => {
                    self.records.remove(key);
                }
                other => panic!("the lessor wrote outside its column family: {other:?}"),
            }
        }
    }
}

impl LeaseStore for MemoryLeaseStore {
    fn lease_records(&self) -> Result<Vec<Vec<u8>>, LeaseError> {
        match &self.failure {
            Some(e) => Err(LeaseError::Backend(e.clone())),
            None => Ok(self.records.values().cloned().collect()),
        }
    }

    fn leased_keys(&self) -> Result<Vec<(i64, Bytes)>, LeaseError> {
        self.key_reads.set(self.key_reads.get() + 1);
        Ok(self.keys.clone())
    }
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
    recovered.recover(&store).unwrap();
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

#[test]
fn recover_reads_back_what_grant_and_revoke_persisted() {
    let (_, lessor) = primary();
    let mut store = MemoryLeaseStore::default();
    for (id, ttl) in [(7, 30), (8, 1), (9, 60)] {
        let mut batch = BackendBatch::new();
        lessor.grant(id, ttl, &mut batch).unwrap();
        store.commit(&batch);
    }
    let mut batch = BackendBatch::new();
    lessor.revoke(8, &mut batch).unwrap();
    store.commit(&batch);
    store.keys = vec![
        (9, Bytes::from("b")),
        (7, Bytes::from("k2")),
        (7, Bytes::from("k1")),
        (42, Bytes::from("orphan")),
    ];

    let clock = Arc::new(ManualClock::new());
    let recovered = Lessor::new(2, clock.clone());
    recovered.recover(&store).unwrap();
    assert_eq!(store.key_reads.get(), 1);
    assert!(!recovered.is_primary());
    assert!(!recovered.exists(8));
    assert!(
        !recovered.exists(42),
        "a key naming an unknown lease creates nothing"
    );
    let ttl = recovered.time_to_live(7, true).unwrap();
    assert_eq!(ttl.granted, 30);
    assert_eq!(ttl.keys, vec![Bytes::from("k1"), Bytes::from("k2")]);
    assert_eq!(
        recovered.time_to_live(9, true).unwrap().keys,
        vec![Bytes::from("b")]
    );
    // Followers' leases never expire; the promotion starts every TTL afresh.
    clock.advance(Duration::from_secs(600));
    assert!(recovered.expired().is_empty());
    recovered.promote(Duration::ZERO);
    clock.advance(Duration::from_secs(30));
    assert_eq!(recovered.expired(), vec![7]);
}

#[test]
fn recover_without_leases_does_not_read_the_key_space_and_replaces_the_table() {
    let (_, lessor) = primary();
    grant(&lessor, 1, 10);
    let store = MemoryLeaseStore::default();
    lessor.recover(&store).unwrap();
    assert_eq!(store.key_reads.get(), 0);
    assert!(lessor.leases().is_empty());
    assert!(!lessor.is_primary());
}

#[test]
fn recover_fails_on_an_undecodable_record_or_a_failing_store_and_keeps_the_table() {
    let (_, lessor) = primary();
    grant(&lessor, 1, 10);
    let mut store = MemoryLeaseStore::default();
    store
        .records
        .insert(b"bad".to_vec(), vec![0xff, 0xff, 0xff]);
    assert!(matches!(
        lessor.recover(&store),
        Err(LeaseError::Corrupt(_))
    ));
    let store = MemoryLeaseStore {
        failure: Some(MvccError::Io("disk on fire".into())),
        ..Default::default()
    };
    assert!(matches!(
        lessor.recover(&store),
        Err(LeaseError::Backend(MvccError::Io(_)))
    ));
    assert_eq!(lessor.leases(), vec![1]);
    assert!(lessor.is_primary());
}
