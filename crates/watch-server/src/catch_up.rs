//! Catching unsynced watchers up from history: a watcher created at a past
//! revision, or whose stream's buffer was full when its events were applied,
//! reads the store's history in bounded chunks of whole revisions until it
//! reaches the current revision and joins the synced group again. The
//! background thread also sends the periodic progress notifications.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_proto::etcdserverpb::WatchResponse;
use cairn_proto::mvccpb::Event;

use crate::delivery::{deliver, Delivery};
use crate::history::HistoryError;
use crate::hub::WatchHub;
use crate::registry::{Registry, StreamKey, WatcherKey};
use crate::response::{batches, event_revision};

impl WatchHub {
    /// One round of catch-up: reads history for up to `catch_up_watchers` unsynced
    /// watchers whose streams have room, queues it, and moves those that reached the
    /// current revision to the synced group. Returns how many watchers are still
    /// unsynced.
    pub fn sync_unsynced(&self) -> usize {
        let (upto, targets) = {
            let inner = self.registry.lock();
            let targets: Vec<(WatcherKey, Bytes, Bytes, i64)> = inner
                .unsynced
                .iter()
                .filter_map(|wk| {
                    let w = inner.watchers.get(wk)?;
                    let stream = inner.streams.get(&w.stream)?;
                    (stream.tx.capacity() > 0)
                        .then(|| (*wk, w.key.clone(), w.range_end.clone(), w.next_rev))
                })
                .take(self.config.catch_up_watchers)
                .collect();
            (inner.notified_rev, targets)
        };
        for (wk, key, range_end, from) in targets {
            let limit = self.config.catch_up_events;
            let read = self
                .store
                .events_between(from, upto, &key, &range_end, limit);
            let mut inner = self.registry.lock();
            match inner.watchers.get(&wk) {
                Some(w) if !w.synced && w.next_rev == from => {}
                _ => continue,
            }
            match read {
                Err(HistoryError::Compacted) => self.cancel_compacted(&mut inner, wk),
                Err(e) => {
                    tracing::warn!(error = %e, "reading history for a watcher; retrying");
                }
                Ok(events) => {
                    let complete = limit == 0 || events.len() < limit;
                    let through = match events.last() {
                        Some(last) if !complete => event_revision(last),
                        _ => upto,
                    };
                    self.catch_up(&mut inner, wk, events, through);
                }
            }
        }
        let mut inner = self.registry.lock();
        self.flush_deferred_progress(&mut inner);
        inner.publish_gauges();
        inner.unsynced.len()
    }

    fn cancel_compacted(&self, inner: &mut Registry, wk: WatcherKey) {
        let Some(w) = inner.watchers.get(&wk) else {
            return;
        };
        // etcd sends this one with header revision 0.
        let response = WatchResponse {
            header: self.header(0),
            watch_id: w.id,
            canceled: true,
            compact_revision: self.store.compact_revision(),
            ..Default::default()
        };
        let outcome = match inner.streams.get(&w.stream) {
            Some(stream) => deliver(&stream.tx, vec![response]),
            None => Delivery::Closed,
        };
        match outcome {
            Delivery::Full => {}
            // As in etcd, the id stays taken on the stream until the client cancels it.
            Delivery::Sent => inner.retire_watcher(wk),
            Delivery::Closed => {
                inner.remove_watcher(wk);
            }
        }
    }

    /// Queues history `events` (revisions `next_rev..=through`) for an unsynced watcher,
    /// as far as its stream has room.
    fn catch_up(&self, inner: &mut Registry, wk: WatcherKey, events: Vec<Event>, through: i64) {
        let Some(w) = inner.watchers.get(&wk) else {
            return;
        };
        let shaped: Vec<Event> = events.iter().filter_map(|e| w.shape.apply(e)).collect();
        let groups = batches(shaped, self.config.max_response_bytes);
        let count = groups.len();
        let mut next_rev = through + 1;
        let mut sent_any = false;
        let mut closed = false;
        let mut sent_through: Option<i64> = None;
        if let Some(stream) = inner.streams.get(&w.stream) {
            for (i, (events, last_rev)) in groups.into_iter().enumerate() {
                let header_rev = if i + 1 == count { through } else { last_rev };
                let response = WatchResponse {
                    header: self.header(header_rev),
                    watch_id: w.id,
                    events,
                    ..Default::default()
                };
                match deliver(&stream.tx, self.maybe_fragment(w.fragment, response)) {
                    Delivery::Sent => {
                        sent_any = true;
                        sent_through = Some(last_rev);
                    }
                    Delivery::Full => {
                        // Batches hold whole revisions: resume right after the last one sent.
                        next_rev = sent_through.map_or(w.next_rev, |rev| rev + 1);
                        break;
                    }
                    Delivery::Closed => {
                        closed = true;
                        break;
                    }
                }
            }
        } else {
            closed = true;
        }
        if closed {
            inner.remove_watcher(wk);
            return;
        }
        let notified = inner.notified_rev;
        if let Some(w) = inner.watchers.get_mut(&wk) {
            w.next_rev = w.next_rev.max(next_rev);
            w.sent_since_tick |= sent_any;
            if w.next_rev > notified {
                inner.add_synced(wk);
            }
        }
    }

    fn flush_deferred_progress(&self, inner: &mut Registry) {
        let waiting: Vec<StreamKey> = inner
            .streams
            .iter()
            .filter(|(_, s)| s.deferred_progress)
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            if !inner.all_synced(key) {
                continue;
            }
            let response = self.progress_response(inner.notified_rev, -1);
            if let Some(stream) = inner.streams.get_mut(&key) {
                if !matches!(deliver(&stream.tx, vec![response]), Delivery::Full) {
                    stream.deferred_progress = false;
                }
            }
        }
    }

    /// Starts the thread that catches unsynced watchers up (every 10 ms while there are
    /// some, at once when a watcher falls behind) and sends periodic progress
    /// notifications. It stops when the hub is dropped.
    pub fn start_background(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let hub: Weak<WatchHub> = Arc::downgrade(self);
        let wake = self.wake.clone();
        let interval = self.config.progress_notify_interval;
        std::thread::Builder::new()
            .name("watch-sync".into())
            .spawn(move || {
                let mut next_tick = Instant::now() + interval;
                loop {
                    let remaining = match hub.upgrade() {
                        Some(hub) => {
                            let remaining = hub.sync_unsynced();
                            if Instant::now() >= next_tick {
                                hub.progress_tick();
                                next_tick = Instant::now() + interval;
                            }
                            remaining
                        }
                        None => return,
                    };
                    let mut state = wake.state.lock();
                    if state.1 {
                        return;
                    }
                    if !state.0 {
                        let wait = if remaining > 0 {
                            Duration::from_millis(10)
                        } else {
                            next_tick
                                .saturating_duration_since(Instant::now())
                                .min(Duration::from_millis(100))
                        };
                        wake.cond.wait_for(&mut state, wait);
                    }
                    state.0 = false;
                }
            })
    }
}
