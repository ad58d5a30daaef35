//! etcd's leases for cairn: the [`Lessor`] keeps the lease table (id, TTL, expiry, attached
//! keys), persists it in the backend's `lease` column family through the same
//! [`BackendBatch`] that records the applied raft entry, rebuilds it at start from a
//! [`LeaseStore`] (the store, or an in-memory stand-in in tests), and tells
//! the leader which leases have expired. It never revokes anything itself: expiry becomes
//! a revoke proposal through raft, made by the caller, so every member applies the same
//! revocation at the same point of the log.
//!
//! Time comes from a [`Clock`], so the expiry logic is tested without sleeping.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cairn_lease_manager::{Lessor, ManualClock};
//! use cairn_mvcc_store::BackendBatch;
//!
//! let clock = Arc::new(ManualClock::new());
//! let lessor = Lessor::new(2, clock.clone());
//! lessor.promote(Duration::ZERO); // this member leads
//! let mut batch = BackendBatch::new();
//! assert_eq!(lessor.grant(7, 10, &mut batch).unwrap(), 10);
//! lessor.attach(7, "job/1".into());
//! clock.advance(Duration::from_secs(11));
//! assert_eq!(lessor.expired(), vec![7]); // the caller proposes LeaseRevoke(7)
//! let keys = lessor.revoke(7, &mut BackendBatch::new()).unwrap();
//! assert_eq!(keys, vec![bytes::Bytes::from("job/1")]);
//! ```
#![deny(missing_docs)]

pub mod metrics;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_mvcc_store::backend::CF_LEASE;
use cairn_mvcc_store::{BackendBatch, KvStore, MvccError};
use cairn_proto::etcdserverpb::{LeaseGrantRequest, RangeRequest};
use parking_lot::Mutex;
use prost::Message as _;

/// etcd's largest lease TTL in seconds (`MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// How long an expired lease waits before it is reported again while its revoke is in
/// flight (etcd's `expiredLeaseRetryInterval`).
pub const EXPIRED_RETRY_INTERVAL: Duration = Duration::from_secs(3);

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// No lease with that id.
    #[error("lease not found")]
    NotFound,
    /// A lease with that id exists already.
    #[error("lease already exists")]
    Exists,
    /// The TTL is over [`MAX_LEASE_TTL`].
    #[error("too large lease TTL")]
    TtlTooLarge,
    /// Only the leader's lessor renews leases.
    #[error("not the primary lessor")]
    NotPrimary,
    /// A stored lease cannot be decoded.
    #[error("corrupt lease record: {0}")]
    Corrupt(String),
    /// The backend failed while rebuilding the table.
    #[error(transparent)]
    Backend(#[from] MvccError),
}

/// What a [`Lessor`] persists and recovers from: the records it writes into the `lease`
/// column family ([`CF_LEASE`], through the caller's [`BackendBatch`]) and the keys that
/// name a lease. [`KvStore`] implements it over its backend; tests use an in-memory one.
pub trait LeaseStore {
    /// Every lease record written under [`CF_LEASE`] and not deleted, in any order.
    fn lease_records(&self) -> Result<Vec<Vec<u8>>, LeaseError>;

    /// Every live key whose `lease` is set, with that lease id, in any order.
    fn leased_keys(&self) -> Result<Vec<(i64, Bytes)>, LeaseError>;
}

impl LeaseStore for KvStore {
    fn lease_records(&self) -> Result<Vec<Vec<u8>>, LeaseError> {
        let mut records = Vec::new();
        for entry in self.backend().scan(CF_LEASE)? {
            let (_, value) = entry?;
            records.push(value.into_vec());
        }
        Ok(records)
    }

    fn leased_keys(&self) -> Result<Vec<(i64, Bytes)>, LeaseError> {
        let everything = RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        };
        Ok(self
            .range(&everything)?
            .kvs
            .into_iter()
            .filter(|kv| kv.lease != 0)
            .map(|kv| (kv.lease, kv.key))
            .collect())
    }
}

/// A source of monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at the moment it is made.
    pub fn new() -> Self {
        ManualClock {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock() += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *self.offset.lock()
    }
}

/// etcd's minimum lease TTL in seconds for a raft timing: 1.5 election timeouts, rounded
/// up to whole seconds (2 s with the default 100 ms heartbeat and 10-tick election).
pub fn min_ttl(election_ticks: u64, tick: Duration) -> i64 {
    let min = tick.as_secs_f64() * ((3 * election_ticks) / 2) as f64;
    min.ceil() as i64
}

/// What `LeaseTimeToLive` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeToLive {
    /// Remaining seconds, truncated (etcd's `int64(Remaining().Seconds())`).
    pub remaining: i64,
    /// The TTL the lease was granted with (after the minimum-TTL rule).
    pub granted: i64,
    /// The attached keys, sorted, when asked for.
    pub keys: Vec<Bytes>,
}

#[derive(Debug)]
struct Lease {
    ttl: i64,
    /// `None` while this member is not the primary: a follower's leases never expire.
    expiry: Option<Instant>,
    keys: BTreeSet<Bytes>,
    /// When the lease was last reported expired, so that it is not reported again while
    /// its revoke is in flight.
    reported: Option<Instant>,
}

impl Lease {
    fn refresh(&mut self, now: Instant, extend: Duration) {
        self.expiry = Some(now + extend + Duration::from_secs(self.ttl as u64));
        self.reported = None;
    }

    fn remaining(&self, now: Instant) -> i64 {
        match self.expiry {
            // etcd: a lease without expiry has math.MaxInt64 nanoseconds left.
            None => i64::MAX / 1_000_000_000,
            Some(at) if at >= now => (at - now).as_secs() as i64,
            Some(at) => -((now - at).as_secs() as i64),
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    leases: HashMap<i64, Lease>,
    primary: bool,
}

/// The lease table of one member. Cheap to share (`Arc<Lessor>`); every method takes a
/// short lock and never blocks on I/O.
pub struct Lessor {
    clock: Arc<dyn Clock>,
    min_ttl: i64,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Lessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table.lock();
        f.debug_struct("Lessor")
            .field("min_ttl", &self.min_ttl)
            .field("leases", &table.leases.len())
            .field("primary", &table.primary)
            .finish()
    }
}

fn lease_key(id: i64) -> [u8; 8] {
    id.to_be_bytes()
}

impl Lessor {
    /// An empty, non-primary lessor whose leases live at least `min_ttl` seconds.
    pub fn new(min_ttl: i64, clock: Arc<dyn Clock>) -> Self {
        Lessor {
            clock,
            min_ttl,
            table: Mutex::new(Table::default()),
        }
    }

    /// Rebuilds the table from the lease records in `store` and attaches every key that
    /// names a lease. Leases come back without expiry until [`Lessor::promote`].
    pub fn recover(&self, store: &dyn LeaseStore) -> Result<(), LeaseError> {
        let mut leases = HashMap::new();
        for record in store.lease_records()? {
            let record = LeaseGrantRequest::decode(record.as_slice())
                .map_err(|e| LeaseError::Corrupt(e.to_string()))?;
            leases.insert(
                record.id,
                Lease {
                    ttl: record.ttl,
                    expiry: None,
                    keys: BTreeSet::new(),
                    reported: None,
                },
            );
        }
        // Nothing to attach: do not read the whole key space.
        if !leases.is_empty() {
            for (id, key) in store.leased_keys()? {
                match leases.get_mut(&id) {
                    Some(lease) => {
                        lease.keys.insert(key);
                    }
                    None => tracing::warn!(lease = id, "key names a lease that does not exist"),
                }
            }
        }
        let count = leases.len();
        let mut table = self.table.lock();
        table.leases = leases;
        table.primary = false;
        tracing::info!(leases = count, "lease table recovered");
        Ok(())
    }

    /// The minimum TTL in seconds.
    pub fn min_ttl(&self) -> i64 {
        self.min_ttl
    }

    /// Creates lease `id` (applied from the raft log) and adds its record to `batch`.
    /// Returns the TTL granted: at least the minimum TTL.
    pub fn grant(&self, id: i64, ttl: i64, batch: &mut BackendBatch) -> Result<i64, LeaseError> {
        if ttl > MAX_LEASE_TTL {
            return Err(LeaseError::TtlTooLarge);
        }
        let mut table = self.table.lock();
        if table.leases.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        let ttl = ttl.max(self.min_ttl);
        let mut lease = Lease {
            ttl,
            expiry: None,
            keys: BTreeSet::new(),
            reported: None,
        };
        if table.primary {
            lease.refresh(self.clock.now(), Duration::ZERO);
        }
        batch.put_cf(
            CF_LEASE,
            lease_key(id),
            LeaseGrantRequest { ttl, id }.encode_to_vec(),
        );
        table.leases.insert(id, lease);
        Ok(ttl)
    }

    /// Removes lease `id` (applied from the raft log), adds the record's deletion to
    /// `batch` and returns the attached keys, sorted: the caller deletes them in the same
    /// batch.
    pub fn revoke(&self, id: i64, batch: &mut BackendBatch) -> Result<Vec<Bytes>, LeaseError> {
        let lease = self
            .table
            .lock()
            .leases
            .remove(&id)
            .ok_or(LeaseError::NotFound)?;
        batch.delete_cf(CF_LEASE, lease_key(id));
        Ok(lease.keys.into_iter().collect())
    }

    /// A keep-alive: restarts lease `id`'s full TTL and returns it. Only the primary renews;
    /// an expired lease is as good as revoked.
    pub fn renew(&self, id: i64) -> Result<i64, LeaseError> {
        let now = self.clock.now();
        let mut table = self.table.lock();
        if !table.primary {
            return Err(LeaseError::NotPrimary);
        }
        let lease = table.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        if lease.expiry.is_some_and(|at| at <= now) {
            return Err(LeaseError::NotFound);
        }
        lease.refresh(now, Duration::ZERO);
        Ok(lease.ttl)
    }

    /// Whether lease `id` exists.
    pub fn exists(&self, id: i64) -> bool {
        self.table.lock().leases.contains_key(&id)
    }

    /// Attaches `key` to lease `id` (a put naming it was applied); unknown leases are ignored.
    pub fn attach(&self, id: i64, key: Bytes) {
        if let Some(lease) = self.table.lock().leases.get_mut(&id) {
            lease.keys.insert(key);
        }
    }

    /// Detaches `key` from lease `id` (the key was overwritten or deleted).
    pub fn detach(&self, id: i64, key: &[u8]) {
        if let Some(lease) = self.table.lock().leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Lease `id`'s remaining and granted TTL, with its keys if `with_keys`.
    pub fn time_to_live(&self, id: i64, with_keys: bool) -> Option<TimeToLive> {
        let now = self.clock.now();
        let table = self.table.lock();
        let lease = table.leases.get(&id)?;
        Some(TimeToLive {
            remaining: lease.remaining(now),
            granted: lease.ttl,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Every lease id, soonest expiry first (etcd's order), ties by id.
    pub fn leases(&self) -> Vec<i64> {
        let mut ids: Vec<(Option<Instant>, i64)> = self
            .table
            .lock()
            .leases
            .iter()
            .map(|(id, lease)| (lease.expiry, *id))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// This member became the leader: every lease gets its full TTL plus `extend` from now
    /// (etcd's `Promote`), so none expires because of the change itself.
    pub fn promote(&self, extend: Duration) {
        let now = self.clock.now();
        let mut table = self.table.lock();
        table.primary = true;
        for lease in table.leases.values_mut() {
            lease.refresh(now, extend);
        }
    }

    /// This member stopped leading: leases stop expiring here.
    pub fn demote(&self) {
        let mut table = self.table.lock();
        table.primary = false;
        for lease in table.leases.values_mut() {
            lease.expiry = None;
            lease.reported = None;
        }
    }

    /// Whether this lessor decides expiry.
    pub fn is_primary(&self) -> bool {
        self.table.lock().primary
    }

    /// The leases whose time is up, ascending by expiry, each reported once per
    /// [`EXPIRED_RETRY_INTERVAL`] while it is not revoked. Empty unless primary.
    pub fn expired(&self) -> Vec<i64> {
        let now = self.clock.now();
        let mut table = self.table.lock();
        if !table.primary {
            return Vec::new();
        }
        let mut due: Vec<(Instant, i64)> = Vec::new();
        for (id, lease) in table.leases.iter_mut() {
            let Some(at) = lease.expiry else { continue };
            if at > now {
                continue;
            }
            if lease
                .reported
                .is_some_and(|r| now.duration_since(r) < EXPIRED_RETRY_INTERVAL)
            {
                continue;
            }
            lease.reported = Some(now);
            due.push((at, *id));
        }
        due.sort_unstable();
        due.into_iter().map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests;
