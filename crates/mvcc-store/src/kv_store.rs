//! The revisioned key space: etcd's KV service over the [`Backend`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::{Event, KeyValue};
use parking_lot::{RwLock, RwLockUpgradableReadGuard};
use prost::Message;
use rocksdb::{ReadOptions, WriteBatch};

use crate::backend::{Backend, BackendBatch, CF_KEY, CF_META};
use crate::compaction::{remove_compacted, Compactor};
use crate::error::MvccError;
use crate::hash::{self, HashKv};
use crate::key_index::TreeIndex;
use crate::key_range::KeyRange;
use crate::meta::{StoredMeta, META_APPLIED_INDEX, META_CURRENT_REVISION, META_SCHEDULED_COMPACT};
use crate::range;
use crate::revision::Revision;
use crate::stored::{decode_kv, load_kvs, scan_key_index, Fields};
use crate::txn::{Change, WriteTxn};

/// What a write did.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOutcome<R> {
    /// The response for the client; its header carries only the revision.
    pub response: R,
    /// One event per changed key, in order, each with `prev_kv` when the key
    /// existed before (the watch server drops it for watchers that did not
    /// ask).
    pub events: Vec<Event>,
    /// The store revision after the write.
    pub revision: i64,
}

/// The state readers share with the writer.
pub(crate) struct State {
    tree: TreeIndex,
    /// Reads at revision 0 read this; the tree may already hold newer
    /// revisions while a write is being published, readers ignore them.
    pub current_rev: i64,
    /// The last compaction; -1 before the first (etcd's convention, which
    /// lets a compaction at revision 0 through).
    pub compact_rev: i64,
    /// Bumped by every restore: a reader that released the lock and takes it
    /// again checks it to know its RocksDB snapshot still matches the index.
    pub epoch: u64,
    /// Keys that exist at the current revision (etcd's `keys_total` gauge).
    pub live_keys: i64,
}

/// The readers' state as [`KvStore::open`] computes it from RocksDB's
/// content, with the compaction a crash interrupted (its revision and the
/// revisions it keeps) if any.
pub(crate) struct Loaded {
    pub state: State,
    pub applied_index: u64,
    pub unfinished_compaction: Option<(i64, HashSet<Revision>)>,
}

impl Loaded {
    /// Combines the key index built from the `key` column family (whose
    /// last main revision is `last_main`) with the `meta` bookkeeping.
    pub fn new(mut tree: TreeIndex, last_main: i64, meta: &StoredMeta, epoch: u64) -> Loaded {
        let scheduled = meta.scheduled_compact;
        let finished = meta.finished_compact;
        let compact_rev = scheduled.max(finished).unwrap_or(-1);
        let current_rev = [1, meta.current_rev.unwrap_or(1), last_main, compact_rev]
            .into_iter()
            .max()
            .unwrap_or(1);
        let unfinished = scheduled.filter(|s| finished.is_none_or(|f| f < *s));
        let unfinished_compaction = unfinished.map(|rev| (rev, tree.compact(rev)));
        let every_key = KeyRange::new(&Bytes::from_static(b"\0"), &Bytes::from_static(b"\0"));
        let live_keys = tree.range(&every_key, current_rev).count() as i64;
        crate::metrics::record_keys(live_keys);
        Loaded {
            state: State {
                tree,
                current_rev,
                compact_rev,
                epoch,
                live_keys,
            },
            applied_index: meta.applied_index,
            unfinished_compaction,
        }
    }
}

/// etcd's MVCC key space: every key's history, readable at any revision since
/// the last compaction.
///
/// One writer at a time (writes serialize on an internal lock; raft applies
/// them in log order anyway) and any number of concurrent readers. A write
/// computes its whole change first, commits it to RocksDB in one batch with
/// the applied raft index, and only then publishes it to readers, so a failed
/// write leaves nothing behind.
pub struct KvStore {
    pub(crate) backend: Arc<Backend>,
    pub(crate) state: RwLock<State>,
    pub(crate) applied_index: AtomicU64,
    /// Removes compacted revisions from RocksDB in the background.
    pub(crate) compactor: Compactor,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("current_revision", &self.current_revision())
            .field("compact_revision", &self.compact_revision())
            .field("applied_index", &self.applied_index())
            .finish()
    }
}

impl KvStore {
    /// Opens the store kept in `backend`: rebuilds the key index from the
    /// `key` column family and finishes a compaction a crash interrupted.
    pub fn open(backend: Arc<Backend>) -> Result<KvStore, MvccError> {
        let meta = StoredMeta::read_db(backend.db())?;
        let (tree, last_main) = scan_key_index(backend.db())?;
        let Loaded {
            state,
            applied_index,
            unfinished_compaction,
        } = Loaded::new(tree, last_main, &meta, 0);
        let (current_rev, compact_rev) = (state.current_rev, state.compact_rev);
        if let Some((rev, keep)) = unfinished_compaction {
            tracing::info!(
                compact_revision = rev,
                "finishing an interrupted compaction"
            );
            remove_compacted(&backend, rev, &keep)?;
        }
        let compactor = Compactor::start(backend.clone(), compact_rev)?;
        let store = KvStore {
            backend,
            state: RwLock::new(state),
            applied_index: AtomicU64::new(applied_index),
            compactor,
        };
        crate::metrics::record_revisions(current_rev, compact_rev);
        tracing::info!(
            current_revision = current_rev,
            compact_revision = compact_rev,
            applied_index,
            "mvcc store opened"
        );
        Ok(store)
    }

    /// The backend the store lives in.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The revision of the last change (1 for an empty store).
    pub fn current_revision(&self) -> i64 {
        self.state.read().current_rev
    }

    /// The revision of the last compaction (0 before the first); reads below it
    /// fail with [`MvccError::Compacted`].
    pub fn compact_revision(&self) -> i64 {
        self.state.read().compact_rev.max(0)
    }

    /// The raft index of the last entry applied (0 for a new store).
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// etcd's Range, with every option of `RangeRequest`. The header carries
    /// the current revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        crate::metrics::count(crate::metrics::Op::Range);
        let plan = range::plan(req)?;
        let db = self.backend.db();
        let (current, revs, count, snapshot) = {
            let state = self.state.read();
            let rev = range::resolve_revision(req.revision, state.current_rev, state.compact_rev)?;
            let mut revs = Vec::new();
            let mut count = 0i64;
            for (_, at) in state.tree.range(&plan.keys, rev) {
                if !plan.count_only && (plan.fetch_limit == 0 || revs.len() < plan.fetch_limit) {
                    revs.push(at.modified);
                }
                count += 1;
            }
            // Taken under the lock: a compaction removes revisions only after
            // it published itself, so the snapshot still has every one listed.
            let snapshot = (!revs.is_empty()).then(|| db.snapshot());
            (state.current_rev, revs, count, snapshot)
        };
        let kvs = load_kvs(&self.backend, snapshot.as_ref(), &revs, range::fields(req))?;
        range::finish(req, kvs, count, current)
    }

    /// etcd's Put, applied as raft entry `index` together with `extra`.
    pub fn put(
        &self,
        index: u64,
        req: &PutRequest,
        extra: BackendBatch,
    ) -> Result<WriteOutcome<PutResponse>, MvccError> {
        self.write(index, extra, |txn| txn.put(req))
    }

    /// etcd's DeleteRange, applied as raft entry `index` together with
    /// `extra`. Deleting nothing keeps the revision.
    pub fn delete_range(
        &self,
        index: u64,
        req: &DeleteRangeRequest,
        extra: BackendBatch,
    ) -> Result<WriteOutcome<DeleteRangeResponse>, MvccError> {
        self.write(index, extra, |txn| txn.delete_range(req))
    }

    /// etcd's Txn, applied as raft entry `index` together with `extra`: one
    /// revision for all its writes, none if it writes nothing.
    pub fn txn(
        &self,
        index: u64,
        req: &TxnRequest,
        extra: BackendBatch,
    ) -> Result<WriteOutcome<TxnResponse>, MvccError> {
        self.write(index, extra, |txn| txn.txn(req))
    }

    /// etcd's Compact, applied as raft entry `index`: afterwards no read below
    /// `req.revision` is possible and every revision superseded at or before
    /// it is removed from RocksDB. Crash-atomic: the compaction is recorded
    /// with the applied index first, and [`KvStore::open`] finishes the
    /// removal if it was interrupted. The removal is done before this
    /// returns, so `req.physical` always holds.
    pub fn compact(
        &self,
        index: u64,
        req: &CompactionRequest,
    ) -> Result<WriteOutcome<CompactionResponse>, MvccError> {
        let state = self.state.upgradable_read();
        let rev = req.revision;
        if rev <= state.compact_rev {
            return Err(MvccError::Compacted);
        }
        if rev > state.current_rev {
            return Err(MvccError::FutureRevision);
        }
        let current = state.current_rev;
        let outcome = WriteOutcome {
            response: CompactionResponse {
                header: Some(ResponseHeader {
                    revision: current,
                    ..Default::default()
                }),
            },
            events: Vec::new(),
            revision: current,
        };
        let meta = self.backend.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, META_APPLIED_INDEX, index.to_be_bytes());
        if rev <= 0 {
            // Only revision 0 before any compaction gets here; etcd accepts
            // it (any number of times) and it removes nothing.
            self.backend.write_raw(batch)?;
            self.applied_index.store(index, Ordering::Release);
            return Ok(outcome);
        }
        batch.put_cf(meta, META_SCHEDULED_COMPACT, rev.to_be_bytes());
        self.backend.write_raw(batch)?;

        let mut state = RwLockUpgradableReadGuard::upgrade(state);
        let keep = state.tree.compact(rev);
        state.compact_rev = rev;
        crate::metrics::record_revisions(state.current_rev, rev);
        self.applied_index.store(index, Ordering::Release);
        // Nothing reads the dropped revisions any more: they leave RocksDB in the
        // background, and this apply (on the raft thread) goes on at once.
        self.compactor.schedule(rev, keep);
        Ok(outcome)
    }

    /// Waits up to `timeout` until the compaction at `rev` has left RocksDB (a
    /// `physical` compaction's answer); whether it has.
    pub fn wait_compacted(&self, rev: i64, timeout: std::time::Duration) -> bool {
        self.compactor.wait_finished(rev, timeout)
    }

    /// Records raft entry `index` as applied when it changes nothing in the
    /// store (an empty entry, a request that failed).
    pub fn record_applied(&self, index: u64) -> Result<(), MvccError> {
        self.record_applied_with(index, BackendBatch::new())
    }

    /// Commits `extra` (lease, auth or membership state) together with raft
    /// entry `index` as applied, without touching the key space.
    pub fn record_applied_with(&self, index: u64, extra: BackendBatch) -> Result<(), MvccError> {
        let _writer = self.state.upgradable_read();
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.backend.cf(CF_META)?,
            META_APPLIED_INDEX,
            index.to_be_bytes(),
        );
        self.backend.append(&mut batch, extra)?;
        self.backend.write_raw(batch)?;
        self.applied_index.store(index, Ordering::Release);
        Ok(())
    }

    /// The history of the keys `(key, range_end)` names (etcd's convention)
    /// from revision `from_rev` through `to_rev` (both inclusive; `to_rev` is
    /// capped at the current revision), in revision order.
    ///
    /// Deletions carry the key and their `mod_revision`. `prev_kv` holds the
    /// key-value before each event when it is still stored (it may be gone for
    /// the first event of a key at or near the compaction revision).
    ///
    /// `limit` (0: none) caps the number of events, but the events of one
    /// revision are never split: the last revision is always complete, so
    /// more than `limit` events can come back. Fails with
    /// [`MvccError::Compacted`] if `from_rev` is below the compaction.
    pub fn events_between(
        &self,
        from_rev: i64,
        to_rev: i64,
        key: &Bytes,
        range_end: &Bytes,
        limit: usize,
    ) -> Result<Vec<Event>, MvccError> {
        loop {
            if let Some(events) =
                self.events_between_once(from_rev, to_rev, key, range_end, limit)?
            {
                return Ok(events);
            }
            tracing::debug!("store restored while reading history; reading again");
        }
    }

    /// [`KvStore::events_between`], or `None` if a restore replaced the
    /// store between its two looks at the index.
    fn events_between_once(
        &self,
        from_rev: i64,
        to_rev: i64,
        key: &Bytes,
        range_end: &Bytes,
        limit: usize,
    ) -> Result<Option<Vec<Event>>, MvccError> {
        let keys = KeyRange::new(key, range_end);
        let from_rev = from_rev.max(1);
        let db = self.backend.db();
        let (to_rev, snapshot, epoch) = {
            let state = self.state.read();
            if from_rev < state.compact_rev {
                return Err(MvccError::Compacted);
            }
            (to_rev.min(state.current_rev), db.snapshot(), state.epoch)
        };
        if from_rev > to_rev {
            return Ok(Some(Vec::new()));
        }
        let mut options = ReadOptions::default();
        options.set_snapshot(&snapshot);
        options.set_iterate_upper_bound(Revision::new(to_rev + 1, 0).to_key(false));
        let mut it = db.raw_iterator_cf_opt(self.backend.cf(CF_KEY)?, options);
        it.seek(Revision::new(from_rev, 0).to_key(false));

        let mut events: Vec<Event> = Vec::new();
        // The latest state of each key seen so far in the window.
        let mut latest: HashMap<Bytes, Option<KeyValue>> = HashMap::new();
        // Events whose key was not seen before in the window.
        let mut first_of_key = Vec::new();
        let mut last_main = None;
        while let (Some(raw_key), Some(raw_value)) = (it.key(), it.value()) {
            let (rev, tombstone) = Revision::from_key(raw_key)?;
            if limit > 0 && events.len() >= limit && last_main != Some(rev.main) {
                break;
            }
            let mut kv = decode_kv(raw_value)?;
            if keys.contains(&kv.key) {
                let kind = if tombstone {
                    kv.mod_revision = rev.main;
                    EventType::Delete
                } else {
                    EventType::Put
                };
                let now = (!tombstone).then(|| kv.clone());
                let prev_kv = match latest.insert(kv.key.clone(), now) {
                    Some(prev) => prev,
                    None => {
                        first_of_key.push(events.len());
                        None
                    }
                };
                events.push(Event {
                    r#type: kind as i32,
                    kv: Some(kv),
                    prev_kv,
                });
                last_main = Some(rev.main);
            }
            it.next();
        }
        it.status().map_err(MvccError::backend)?;
        drop(it);

        if !first_of_key.is_empty() {
            let found: Vec<(usize, Revision)> = {
                let state = self.state.read();
                if state.epoch != epoch {
                    return Ok(None);
                }
                first_of_key
                    .into_iter()
                    .filter_map(|i| {
                        let key = &events[i].kv.as_ref()?.key;
                        Some((i, state.tree.get(key, from_rev - 1)?.modified))
                    })
                    .collect()
            };
            let revs: Vec<Revision> = found.iter().map(|(_, rev)| *rev).collect();
            // Present in the snapshot: the index never names a revision a
            // compaction removed before the snapshot was taken.
            let prevs = load_kvs(&self.backend, Some(&snapshot), &revs, Fields::All)?;
            for ((i, _), prev) in found.into_iter().zip(prevs) {
                events[i].prev_kv = Some(prev);
            }
        }
        Ok(Some(events))
    }

    /// etcd's HashKV: a hash of every key revision stored at or below `rev`
    /// (0: the current revision), equal on every member that applied the
    /// same log. Fails with [`MvccError::FutureRevision`] above the current
    /// revision and [`MvccError::Compacted`] below the compaction.
    ///
    /// Reads the history from one RocksDB snapshot taken while no write or
    /// compaction is in progress; writes wait only for that instant. Call
    /// it off the async runtime.
    pub fn hash_kv(&self, rev: i64) -> Result<HashKv, MvccError> {
        let db = self.backend.db();
        let (rev, compact_rev, snapshot, pending) = {
            // A compaction schedules its removal under the writers' lock: with it
            // held, the removal under way (if any) and the snapshot agree on what
            // the snapshot may still hold that the compaction dropped.
            let state = self.state.upgradable_read();
            if rev > state.current_rev {
                return Err(MvccError::FutureRevision);
            }
            if rev > 0 && rev < state.compact_rev {
                return Err(MvccError::Compacted);
            }
            let rev = if rev <= 0 { state.current_rev } else { rev };
            let pending = self.compactor.pending();
            (rev, state.compact_rev.max(0), db.snapshot(), pending)
        };
        Ok(HashKv {
            hash: hash::key_history(&self.backend, &snapshot, rev, pending.as_ref())?,
            compact_revision: compact_rev,
            hash_revision: rev,
        })
    }

    /// Runs one write request: compute the change, commit it with the applied
    /// index and `extra` in one batch, then publish it.
    fn write<R>(
        &self,
        index: u64,
        extra: BackendBatch,
        op: impl FnOnce(&mut WriteTxn<'_>) -> Result<R, MvccError>,
    ) -> Result<WriteOutcome<R>, MvccError> {
        let state = self.state.upgradable_read();
        let begin = state.current_rev;
        let mut txn = WriteTxn::new(&self.backend, &state.tree, begin, state.compact_rev);
        let response = op(&mut txn)?;
        let changes = txn.into_changes();
        let revision = if changes.is_empty() { begin } else { begin + 1 };

        let mut batch = WriteBatch::default();
        let key_cf = self.backend.cf(CF_KEY)?;
        for change in &changes {
            let stored = if change.tombstone {
                // etcd stores only the key under a tombstone.
                KeyValue {
                    key: change.kv.key.clone(),
                    ..Default::default()
                }
                .encode_to_vec()
            } else {
                change.kv.encode_to_vec()
            };
            batch.put_cf(key_cf, change.rev.to_key(change.tombstone), stored);
        }
        let meta = self.backend.cf(CF_META)?;
        batch.put_cf(meta, META_APPLIED_INDEX, index.to_be_bytes());
        if !changes.is_empty() {
            batch.put_cf(meta, META_CURRENT_REVISION, revision.to_be_bytes());
        }
        self.backend.append(&mut batch, extra)?;
        self.backend.write_raw(batch)?;

        let mut state = RwLockUpgradableReadGuard::upgrade(state);
        for change in &changes {
            if change.tombstone {
                state.tree.tombstone(&change.kv.key, change.rev);
                state.live_keys -= 1;
            } else {
                state.tree.put(&change.kv.key, change.rev);
                state.live_keys += i64::from(change.prev.is_none());
            }
        }
        if !changes.is_empty() {
            crate::metrics::record_keys(state.live_keys);
        }
        state.current_rev = revision;
        self.applied_index.store(index, Ordering::Release);
        crate::metrics::record_revisions(revision, state.compact_rev);
        drop(state);

        let events = changes.into_iter().map(Change::into_event).collect();
        Ok(WriteOutcome {
            response,
            events,
            revision,
        })
    }
}

impl Change {
    fn into_event(self) -> Event {
        let kind = if self.tombstone {
            EventType::Delete
        } else {
            EventType::Put
        };
        Event {
            r#type: kind as i32,
            kv: Some(self.kv),
            prev_kv: self.prev,
        }
    }
}

pub mod stream;

#[cfg(test)]
mod tests;
