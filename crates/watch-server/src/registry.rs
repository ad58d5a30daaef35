//! The registry of a hub's watchers and streams, and of which watchers are
//! synced (getting events as they are applied, indexed by key for the
//! delivery) or unsynced (catching up from history).

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use cairn_mvcc_store::KeyRange;
use cairn_proto::etcdserverpb::WatchResponse;
use tokio::sync::mpsc;

use crate::metrics::{SLOW_WATCHER_TOTAL, WATCHER_TOTAL, WATCH_STREAM_TOTAL};
use crate::response::EventShape;

/// A watcher, unique in its hub.
pub(crate) type WatcherKey = u64;
/// A stream, unique in its hub.
pub(crate) type StreamKey = u64;

/// One watcher: what it watches, how far it got, what it wants to see.
pub(crate) struct Watcher {
    pub stream: StreamKey,
    pub id: i64,
    pub key: Bytes,
    pub range_end: Bytes,
    pub range: KeyRange,
    /// The first revision this watcher has not been sent (or skipped) yet.
    pub next_rev: i64,
    pub synced: bool,
    pub shape: EventShape,
    pub fragment: bool,
    pub progress_notify: bool,
    /// Whether events went out since the last progress tick.
    pub sent_since_tick: bool,
}

/// One stream: its queue of responses and its watchers by id.
pub(crate) struct StreamState {
    pub tx: mpsc::Sender<WatchResponse>,
    pub ids: HashMap<i64, WatcherKey>,
    pub next_auto_id: i64,
    /// A progress request waits for every watcher of the stream to be synced.
    pub deferred_progress: bool,
}

/// Every watcher and stream of a hub, and the synced and unsynced groups.
#[derive(Default)]
pub(crate) struct Registry {
    /// The last revision [`WatchHub::notify`](crate::WatchHub::notify) was told about.
    pub notified_rev: i64,
    pub next_key: u64,
    pub streams: HashMap<StreamKey, StreamState>,
    pub watchers: HashMap<WatcherKey, Watcher>,
    /// Synced single-key watchers by key.
    pub synced_keys: HashMap<Bytes, Vec<WatcherKey>>,
    /// Synced range watchers.
    pub synced_ranges: Vec<WatcherKey>,
    pub unsynced: BTreeSet<WatcherKey>,
}

impl Registry {
    pub fn add_synced(&mut self, wk: WatcherKey) {
        let Some(w) = self.watchers.get_mut(&wk) else {
            return;
        };
        w.synced = true;
        self.unsynced.remove(&wk);
        match &w.range {
            KeyRange::Key(k) => self.synced_keys.entry(k.clone()).or_default().push(wk),
            _ => self.synced_ranges.push(wk),
        }
    }

    pub fn remove_synced(&mut self, wk: WatcherKey) {
        let Some(w) = self.watchers.get_mut(&wk) else {
            return;
        };
        if !w.synced {
            return;
        }
        w.synced = false;
        match &w.range {
            KeyRange::Key(k) => {
                if let Some(list) = self.synced_keys.get_mut(k) {
                    list.retain(|x| *x != wk);
                    if list.is_empty() {
                        self.synced_keys.remove(k);
                    }
                }
            }
            _ => self.synced_ranges.retain(|x| *x != wk),
        }
    }

    pub fn make_unsynced(&mut self, wk: WatcherKey) {
        self.remove_synced(wk);
        self.unsynced.insert(wk);
    }

    /// Stops a watcher but leaves its id taken on its stream.
    pub fn retire_watcher(&mut self, wk: WatcherKey) {
        self.remove_synced(wk);
        self.unsynced.remove(&wk);
        self.watchers.remove(&wk);
    }

    pub fn remove_watcher(&mut self, wk: WatcherKey) -> Option<Watcher> {
        self.remove_synced(wk);
        self.unsynced.remove(&wk);
        let w = self.watchers.remove(&wk)?;
        if let Some(stream) = self.streams.get_mut(&w.stream) {
            stream.ids.remove(&w.id);
        }
        Some(w)
    }

    pub fn all_synced(&self, stream: StreamKey) -> bool {
        self.streams.get(&stream).is_some_and(|s| {
            s.ids
                .values()
                .all(|wk| self.watchers.get(wk).is_none_or(|w| w.synced))
        })
    }

    pub fn publish_gauges(&self) {
        metrics::gauge!(WATCHER_TOTAL).set(self.watchers.len() as f64);
        metrics::gauge!(SLOW_WATCHER_TOTAL).set(self.unsynced.len() as f64);
        metrics::gauge!(WATCH_STREAM_TOTAL).set(self.streams.len() as f64);
    }
}
