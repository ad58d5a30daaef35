//! etcd's revisioned key space (MVCC) on RocksDB.
//!
//! Every write request gets the next store *revision*; every key keeps its
//! history, so a read can ask for the key space as it was at any revision
//! since the last compaction. [`KvStore`] implements etcd's Range, Put,
//! DeleteRange, Txn and Compact with etcd's exact semantics and error messages,
//! over a [`Backend`]: one RocksDB database whose `key` column family maps each
//! revision to the key-value written at it. An in-memory index (key ->
//! generations of revisions) answers which revision holds a key at a given
//! store revision; it is rebuilt from RocksDB at start.
//!
//! The store sits behind raft: every write takes the raft index it applies,
//! and commits that index in the same RocksDB batch as the change (plus any
//! [`BackendBatch`] of lease or auth writes), so replaying the raft log after a
//! crash applies each entry exactly once. Writes are not synced; the raft log
//! is the durable copy. The checks etcd's gRPC layer makes before proposing a
//! request are the `validate_*` functions.
//!
//! Other crates keep their state in the same database through the
//! [`Backend`]: they write into a [`BackendBatch`] and read back with
//! [`Backend::get`], [`Backend::scan`] and [`Backend::scan_prefix`]; RocksDB's
//! own types never leave this crate. [`metrics`] names and describes what the
//! store reports, and `examples/history.rs` is a longer tour than the one below.
//!
//! For maintenance and snapshots: [`Backend::checkpoint`] copies the database
//! at a point in time, [`snapshot`] streams such a copy as one archive and
//! rebuilds it elsewhere, [`KvStore::restore_from_checkpoint`] swaps a live
//! store's whole content for it atomically, [`KvStore::hash_kv`] and
//! [`Backend::hash`] let members compare their state ([`hash`]), and
//! [`Backend::defragment`] compacts RocksDB online.
//!
//! ```
//! use cairn_mvcc_store::{Backend, BackendBatch, KvStore};
//! use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = KvStore::open(Backend::open(dir.path())?)?;
//! assert_eq!(store.current_revision(), 1);
//!
//! let put = PutRequest { key: "greeting".into(), value: "hello".into(), ..Default::default() };
//! cairn_mvcc_store::validate_put(&put)?;
//! let outcome = store.put(7, &put, BackendBatch::new())?; // raft index 7
//! assert_eq!(outcome.revision, 2);
//! assert_eq!(outcome.events.len(), 1);
//!
//! let put = PutRequest { key: "greeting".into(), value: "hi".into(), ..Default::default() };
//! store.put(8, &put, BackendBatch::new())?;
//!
//! // The key as it was at revision 2.
//! let old = store.range(&RangeRequest { key: "greeting".into(), revision: 2, ..Default::default() })?;
//! assert_eq!(old.kvs[0].value, "hello");
//! assert_eq!(old.header.unwrap().revision, 3);
//! assert_eq!(store.applied_index(), 8);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

#[macro_use]
mod failpoint;

pub mod backend;
mod compaction;
pub mod error;
pub mod hash;
mod key_index;
pub mod key_range;
pub mod kv_store;
pub mod meta;
pub mod metrics;
mod range;
mod restore;
pub mod revision;
pub mod snapshot;
mod stored;
mod txn;
pub mod validate;

pub use backend::{Backend, BackendBatch, BatchOp};
pub use error::MvccError;
pub use hash::HashKv;
pub use key_range::KeyRange;
pub use kv_store::stream::RangeCursor;
pub use kv_store::{KvStore, WriteOutcome};
pub use revision::Revision;
pub use validate::{
    validate_delete_range, validate_put, validate_range, validate_txn, DEFAULT_MAX_TXN_OPS,
};

#[cfg(test)]
mod test_util;
