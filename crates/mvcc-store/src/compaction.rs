//! Removing compacted revisions from the backend.
//!
//! A compaction takes effect in two steps. [`KvStore::compact`](crate::KvStore::compact)
//! records it (`scheduled_compact_revision`, with the applied index) and
//! compacts the in-memory index, which says which revisions at or below the
//! compaction are still needed: from then on nothing reads the others. Then the
//! [`Compactor`]'s thread deletes them from RocksDB in the background, in small
//! batches with a pause between them (etcd's `compaction-batch-limit` and
//! `compaction-sleep-interval`), and records the compaction finished: the apply
//! that scheduled it (on the raft thread) does not wait. A crash in between leaves a
//! scheduled but unfinished compaction, which [`KvStore::open`](crate::KvStore::open)
//! finishes ([`remove_compacted`]).
//!
//! While the removal runs, RocksDB still holds revisions the index dropped: HashKV
//! leaves them out ([`Pending::drops`]), so members agree whatever their progress.
//! A restore stops the removal first ([`Compactor::reset`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use rocksdb::{ReadOptions, WriteBatch};

use crate::backend::{Backend, CF_KEY, CF_META};
use crate::error::MvccError;
use crate::meta::META_FINISHED_COMPACT;
use crate::revision::Revision;

/// Revisions removed per batch by the background removal (etcd's default
/// `--experimental-compaction-batch-limit`).
pub const BACKGROUND_BATCH: usize = 1000;
/// The pause between two background batches, so that applies and reads keep the disk
/// (etcd's default `--experimental-compaction-sleep-interval`).
pub const BACKGROUND_PAUSE: Duration = Duration::from_millis(10);

/// A compaction scheduled and not yet removed from RocksDB.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    /// Its revision.
    pub rev: i64,
    /// The revisions at or below `rev` that stay.
    pub keep: Arc<HashSet<Revision>>,
}

impl Pending {
    /// Whether the stored revision `rev` is one the compaction drops (still in
    /// RocksDB until the removal reaches it).
    pub fn drops(&self, rev: Revision) -> bool {
        rev.main <= self.rev && !self.keep.contains(&rev)
    }
}

/// What the compactor's thread and the store share.
#[derive(Default)]
struct Shared {
    /// The latest scheduled compaction, until it is removed.
    pending: Mutex<Option<Pending>>,
    /// Wakes the thread (a new job, or the store closing).
    wake: Condvar,
    /// The highest compaction removed from RocksDB.
    finished: Mutex<i64>,
    /// Wakes waiters for a finished compaction.
    finished_changed: Condvar,
    /// Bumped by [`Compactor::reset`]; a batch is written under the read lock and
    /// only if the generation it started in is still current.
    generation: RwLock<u64>,
    closing: std::sync::atomic::AtomicBool,
}

/// The background removal of compacted revisions of one store.
pub(crate) struct Compactor {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Compactor {
    /// Starts the removal thread for `backend`; `finished` is the last compaction
    /// already removed.
    pub fn start(backend: Arc<Backend>, finished: i64) -> Result<Compactor, MvccError> {
        let shared = Arc::new(Shared {
            finished: Mutex::new(finished),
            ..Shared::default()
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mvcc-compactor".into())
            .spawn(move || run(&backend, &worker))
            .map_err(|e| MvccError::Io(e.to_string()))?;
        Ok(Compactor {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands the compaction at `rev`, keeping `keep`, to the thread (replacing any
    /// older one not started or half done: the newer removal covers it).
    pub fn schedule(&self, rev: i64, keep: HashSet<Revision>) {
        *self.shared.pending.lock() = Some(Pending {
            rev,
            keep: Arc::new(keep),
        });
        self.shared.wake.notify_all();
    }

    /// The compaction whose removal is under way, if any.
    pub fn pending(&self) -> Option<Pending> {
        self.shared.pending.lock().clone()
    }

    /// Stops any removal before the store's content is replaced: no batch of the old
    /// content is written after this returns. `finished` is the new content's
    /// removed compaction.
    pub fn reset(&self, finished: i64) {
        let mut generation = self.shared.generation.write();
        *generation += 1;
        *self.shared.pending.lock() = None;
        *self.shared.finished.lock() = finished;
        self.shared.finished_changed.notify_all();
    }

    /// Waits up to `timeout` until the compaction at `rev` is removed from RocksDB;
    /// whether it is.
    pub fn wait_finished(&self, rev: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut finished = self.shared.finished.lock();
        while *finished < rev {
            if self
                .shared
                .finished_changed
                .wait_until(&mut finished, deadline)
                .timed_out()
            {
                return *finished >= rev;
            }
        }
        true
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        {
            let _pending = self.shared.pending.lock();
            self.shared.wake.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The removal thread: takes the latest pending compaction and removes it.
fn run(backend: &Backend, shared: &Shared) {
    loop {
        let job = {
            let mut pending = shared.pending.lock();
            loop {
                if shared.closing.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                match pending.as_ref() {
                    Some(job) if job.rev > *shared.finished.lock() => break job.clone(),
                    _ => shared.wake.wait(&mut pending),
                }
            }
        };
        let generation = *shared.generation.read();
        match remove_in_background(backend, shared, &job, generation) {
            Ok(true) => {
                let mut pending = shared.pending.lock();
                if pending.as_ref().is_some_and(|p| p.rev == job.rev) {
                    *pending = None;
                }
            }
            Ok(false) => {} // replaced, reset or closing: look again
            Err(err) => {
                // The compaction is in effect; the next open removes what is left.
                tracing::error!(compact_revision = job.rev, error = %err, "removing compacted revisions failed");
                let mut pending = shared.pending.lock();
                if pending.as_ref().is_some_and(|p| p.rev == job.rev) {
                    *pending = None;
                }
            }
        }
    }
}

/// Removes `job`'s revisions in batches; false if it stopped early (a newer job, a
/// reset or the store closing), true once finished and recorded.
fn remove_in_background(
    backend: &Backend,
    shared: &Shared,
    job: &Pending,
    generation: u64,
) -> Result<bool, MvccError> {
    let started = Instant::now();
    let db = backend.db();
    let key_cf = backend.cf(CF_KEY)?;
    let mut options = ReadOptions::default();
    options.set_iterate_upper_bound(Revision::new(job.rev + 1, 0).to_key(false));
    let mut it = db.raw_iterator_cf_opt(key_cf, options);
    it.seek_to_first();
    let mut removed = 0usize;
    loop {
        let mut batch = WriteBatch::default();
        while let Some(raw_key) = it.key() {
            let (rev, _) = Revision::from_key(raw_key)?;
            if !job.keep.contains(&rev) {
                batch.delete_cf(key_cf, raw_key);
            }
            it.next();
            if batch.len() >= BACKGROUND_BATCH {
                break;
            }
        }
        it.status().map_err(MvccError::backend)?;
        let last = it.key().is_none();
        if last {
            batch.put_cf(
                backend.cf(CF_META)?,
                META_FINISHED_COMPACT,
                job.rev.to_be_bytes(),
            );
        }
        let batch_len = batch.len();
        {
            let current = shared.generation.read();
            let replaced = shared
                .pending
                .lock()
                .as_ref()
                .is_none_or(|p| p.rev != job.rev);
            if *current != generation
                || replaced
                || shared.closing.load(std::sync::atomic::Ordering::Acquire)
            {
                return Ok(false);
            }
            backend.write_raw(batch)?;
        }
        removed += batch_len - usize::from(last);
        metrics::counter!(crate::metrics::DB_COMPACTION_KEYS_TOTAL)
            .increment((batch_len - usize::from(last)) as u64);
        if last {
            break;
        }
        crash_point!("mvcc::compact_chunk");
        std::thread::sleep(BACKGROUND_PAUSE);
    }
    {
        let mut finished = shared.finished.lock();
        *finished = (*finished).max(job.rev);
        shared.finished_changed.notify_all();
    }
    let elapsed = started.elapsed();
    metrics::histogram!(crate::metrics::DB_COMPACTION_TOTAL_DURATION_MS)
        .record(elapsed.as_secs_f64() * 1000.0);
    tracing::info!(
        compact_revision = job.rev,
        removed,
        kept = job.keep.len(),
        took = ?elapsed,
        "compaction finished"
    );
    Ok(true)
}

/// Revisions removed per RocksDB batch while compacting.
const COMPACTION_CHUNK: usize = 10_000;

/// Removes from RocksDB every revision up to `at_rev` not in `keep`, in
/// chunks, then marks the compaction finished.
pub(crate) fn remove_compacted(
    backend: &Backend,
    at_rev: i64,
    keep: &HashSet<Revision>,
) -> Result<(), MvccError> {
    let db = backend.db();
    let key_cf = backend.cf(CF_KEY)?;
    let mut options = ReadOptions::default();
    options.set_iterate_upper_bound(Revision::new(at_rev + 1, 0).to_key(false));
    let mut it = db.raw_iterator_cf_opt(key_cf, options);
    it.seek_to_first();
    let mut batch = WriteBatch::default();
    let mut removed = 0usize;
    while let Some(raw_key) = it.key() {
        let (rev, _) = Revision::from_key(raw_key)?;
        if !keep.contains(&rev) {
            batch.delete_cf(key_cf, raw_key);
            removed += 1;
            if batch.len() >= COMPACTION_CHUNK {
                backend.write_raw(std::mem::take(&mut batch))?;
                crash_point!("mvcc::compact_chunk");
            }
        }
        it.next();
    }
    it.status().map_err(MvccError::backend)?;
    batch.put_cf(
        backend.cf(CF_META)?,
        META_FINISHED_COMPACT,
        at_rev.to_be_bytes(),
    );
    backend.write_raw(batch)?;
    tracing::info!(
        compact_revision = at_rev,
        removed,
        kept = keep.len(),
        "compaction finished"
    );
    Ok(())
}
