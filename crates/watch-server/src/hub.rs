//! The hub of all watchers of a member and the live delivery of applied
//! revisions to the synced ones. Catching up unsynced watchers is in
//! `catch_up.rs`, client streams in `stream.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use cairn_proto::mvccpb::Event;
use parking_lot::{Condvar, Mutex};

use crate::config::{HeaderSource, WatchConfig};
use crate::delivery::{deliver, Delivery};
use crate::history::EventSource;
use crate::registry::{Registry, WatcherKey};
use crate::response::fragment;

/// Wakes the background catch-up thread.
#[derive(Default)]
pub(crate) struct Wake {
    pub state: Mutex<(bool, bool)>, // (woken, stopped)
    pub cond: Condvar,
}

impl Wake {
    pub fn wake(&self) {
        self.state.lock().0 = true;
        self.cond.notify_one();
    }
}

/// Every watcher of a member. See the crate documentation.
pub struct WatchHub {
    pub(crate) store: Arc<dyn EventSource>,
    pub(crate) config: WatchConfig,
    header: Arc<dyn HeaderSource>,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) wake: Arc<Wake>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.registry.lock();
        f.debug_struct("WatchHub")
            .field("notified_rev", &inner.notified_rev)
            .field("watchers", &inner.watchers.len())
            .field("unsynced", &inner.unsynced.len())
            .finish()
    }
}

impl Drop for WatchHub {
    fn drop(&mut self) {
        self.wake.state.lock().1 = true;
        self.wake.cond.notify_all();
    }
}

impl WatchHub {
    /// A hub over `store`'s history, synced with its current revision: create it before
    /// the apply loop applies anything new.
    pub fn new(
        store: Arc<dyn EventSource>,
        config: WatchConfig,
        header: Arc<dyn HeaderSource>,
    ) -> Arc<WatchHub> {
        let inner = Registry {
            notified_rev: store.current_revision(),
            ..Registry::default()
        };
        Arc::new(WatchHub {
            store,
            config,
            header,
            registry: Mutex::new(inner),
            wake: Arc::new(Wake::default()),
        })
    }

    /// The hub's configuration.
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// The last revision the apply loop reported.
    pub fn revision(&self) -> i64 {
        self.registry.lock().notified_rev
    }

    /// How many watchers exist, and how many of them are unsynced.
    pub fn watcher_counts(&self) -> (usize, usize) {
        let inner = self.registry.lock();
        (inner.watchers.len(), inner.unsynced.len())
    }

    pub(crate) fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.header.header(revision))
    }

    /// Hands the events of one applied revision (with `prev_kv` filled) to the synced
    /// watchers. Never blocks on a client: a watcher whose stream buffer is full
    /// becomes unsynced and catches up from history later.
    pub fn notify(&self, revision: i64, events: &[Event]) {
        let mut inner = self.registry.lock();
        inner.notified_rev = inner.notified_rev.max(revision);
        if inner.watchers.is_empty() {
            return;
        }
        let mut matched: BTreeMap<WatcherKey, Vec<&Event>> = BTreeMap::new();
        for event in events {
            let Some(kv) = &event.kv else { continue };
            if let Some(list) = inner.synced_keys.get(&kv.key) {
                for wk in list {
                    matched.entry(*wk).or_default().push(event);
                }
            }
            for wk in &inner.synced_ranges {
                if inner
                    .watchers
                    .get(wk)
                    .is_some_and(|w| w.range.contains(&kv.key))
                {
                    matched.entry(*wk).or_default().push(event);
                }
            }
        }
        let mut victims = Vec::new();
        let mut closed = Vec::new();
        for (wk, evs) in matched {
            let Some(w) = inner.watchers.get(&wk) else {
                continue;
            };
            if revision < w.next_rev {
                continue;
            }
            let shaped: Vec<Event> = evs.into_iter().filter_map(|e| w.shape.apply(e)).collect();
            let mut responses = Vec::new();
            if !shaped.is_empty() {
                let response = WatchResponse {
                    header: self.header(revision),
                    watch_id: w.id,
                    events: shaped,
                    ..Default::default()
                };
                responses = self.maybe_fragment(w.fragment, response);
            }
            let outcome = if responses.is_empty() {
                Delivery::Sent
            } else {
                match inner.streams.get(&w.stream) {
                    Some(stream) => deliver(&stream.tx, responses),
                    None => Delivery::Closed,
                }
            };
            let Some(w) = inner.watchers.get_mut(&wk) else {
                continue;
            };
            match outcome {
                Delivery::Sent => {
                    w.next_rev = revision + 1;
                    w.sent_since_tick = true;
                }
                Delivery::Full => victims.push(wk),
                Delivery::Closed => closed.push(wk),
            }
        }
        for wk in closed {
            inner.remove_watcher(wk);
        }
        if !victims.is_empty() {
            tracing::debug!(
                revision,
                watchers = victims.len(),
                "stream buffers full; watchers fall back to catching up from history"
            );
            for wk in victims {
                inner.make_unsynced(wk);
            }
            inner.publish_gauges();
            drop(inner);
            self.wake.wake();
        }
    }

    /// The store's whole content was replaced (a snapshot from the leader) and now stands
    /// at `revision`: every watcher catches up from the new store's history from its own
    /// next revision, so no watcher ever sees a revision twice or going backwards; one
    /// whose next revision was compacted away is cancelled as compacted.
    pub fn on_restore(&self, revision: i64) {
        let mut inner = self.registry.lock();
        inner.notified_rev = inner.notified_rev.max(revision);
        let all: Vec<WatcherKey> = inner.watchers.keys().copied().collect();
        for wk in all {
            inner.make_unsynced(wk);
        }
        inner.publish_gauges();
        drop(inner);
        self.wake.wake();
    }

    pub(crate) fn maybe_fragment(
        &self,
        fragmented: bool,
        response: WatchResponse,
    ) -> Vec<WatchResponse> {
        if fragmented {
            fragment(response, self.config.max_response_bytes)
        } else {
            vec![response]
        }
    }

    pub(crate) fn progress_response(&self, revision: i64, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: self.header(revision),
            watch_id,
            ..Default::default()
        }
    }

    /// A periodic progress notification: every synced watcher that asked for them
    /// and got no events since the previous tick gets an empty response carrying the
    /// current revision.
    pub fn progress_tick(&self) {
        let mut inner = self.registry.lock();
        let revision = inner.notified_rev;
        let Registry {
            watchers, streams, ..
        } = &mut *inner;
        for w in watchers.values_mut() {
            if w.progress_notify && w.synced && !w.sent_since_tick {
                if let Some(stream) = streams.get(&w.stream) {
                    let _ = deliver(&stream.tx, vec![self.progress_response(revision, w.id)]);
                }
            }
            w.sent_since_tick = false;
        }
    }
}
