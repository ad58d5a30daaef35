//! The hub of all watchers, their streams, and the catch-up of unsynced watchers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_mvcc_store::KeyRange;
use cairn_proto::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, ResponseHeader,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use cairn_proto::mvccpb::Event;
use parking_lot::{Condvar, Mutex};
use tokio::sync::mpsc;

use crate::history::{EventSource, HistoryError};
use crate::response::{
    batches, event_revision, fragment, EventShape, DUPLICATE_WATCH_ID, EMPTY_WATCH_RANGE,
};

/// Fills the header of every watch response (cluster and member ids, raft term) for a
/// store revision.
pub trait HeaderSource: Send + Sync + 'static {
    /// The header for a response at `revision`.
    fn header(&self, revision: i64) -> ResponseHeader;
}

impl<F> HeaderSource for F
where
    F: Fn(i64) -> ResponseHeader + Send + Sync + 'static,
{
    fn header(&self, revision: i64) -> ResponseHeader {
        self(revision)
    }
}

/// Tuning of the hub.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Responses a stream buffers before its watchers fall behind (etcd: 128).
    pub stream_buffer: usize,
    /// Size above which a response is split when its watcher asked for `fragment`, and
    /// the size catch-up batches aim under (etcd's `--max-request-bytes`).
    pub max_response_bytes: usize,
    /// Events read from history per catch-up step of one watcher.
    pub catch_up_events: usize,
    /// Watchers caught up per round of [`WatchHub::sync_unsynced`].
    pub catch_up_watchers: usize,
    /// Interval of progress notifications for watchers that asked for them
    /// (`--experimental-watch-progress-notify-interval`, default 10 minutes).
    pub progress_notify_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            stream_buffer: 128,
            max_response_bytes: 1_572_864,
            catch_up_events: 1000,
            catch_up_watchers: 512,
            progress_notify_interval: Duration::from_secs(600),
        }
    }
}

type WatcherKey = u64;
type StreamKey = u64;

struct Watcher {
    stream: StreamKey,
    id: i64,
    key: Bytes,
    range_end: Bytes,
    range: KeyRange,
    /// The first revision this watcher has not been sent (or skipped) yet.
    next_rev: i64,
    synced: bool,
    shape: EventShape,
    fragment: bool,
    progress_notify: bool,
    /// Whether events went out since the last progress tick.
    sent_since_tick: bool,
}

struct StreamState {
    tx: mpsc::Sender<WatchResponse>,
    ids: HashMap<i64, WatcherKey>,
    next_auto_id: i64,
    /// A progress request waits for every watcher of the stream to be synced.
    deferred_progress: bool,
}

#[derive(Default)]
struct Inner {
    /// The last revision [`WatchHub::notify`] was told about.
    notified_rev: i64,
    next_key: u64,
    streams: HashMap<StreamKey, StreamState>,
    watchers: HashMap<WatcherKey, Watcher>,
    /// Synced single-key watchers by key.
    synced_keys: HashMap<Bytes, Vec<WatcherKey>>,
    /// Synced range watchers.
    synced_ranges: Vec<WatcherKey>,
    unsynced: BTreeSet<WatcherKey>,
}

enum Delivery {
    Sent,
    Full,
    Closed,
}

/// Queues `responses` on a stream, all or none.
fn deliver(tx: &mpsc::Sender<WatchResponse>, responses: Vec<WatchResponse>) -> Delivery {
    if tx.is_closed() {
        return Delivery::Closed;
    }
    if tx.capacity() < responses.len() {
        return Delivery::Full;
    }
    for response in responses {
        let events = response.events.len();
        if let Err(e) = tx.try_send(response) {
            return match e {
                mpsc::error::TrySendError::Full(_) => Delivery::Full,
                mpsc::error::TrySendError::Closed(_) => Delivery::Closed,
            };
        }
        metrics::gauge!("etcd_debugging_mvcc_pending_events_total").increment(events as f64);
    }
    Delivery::Sent
}

impl Inner {
    fn add_synced(&mut self, wk: WatcherKey) {
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

    fn remove_synced(&mut self, wk: WatcherKey) {
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

    fn make_unsynced(&mut self, wk: WatcherKey) {
        self.remove_synced(wk);
        self.unsynced.insert(wk);
    }

    /// Stops a watcher but leaves its id taken on its stream.
    fn retire_watcher(&mut self, wk: WatcherKey) {
        self.remove_synced(wk);
        self.unsynced.remove(&wk);
        self.watchers.remove(&wk);
    }

    fn remove_watcher(&mut self, wk: WatcherKey) -> Option<Watcher> {
        self.remove_synced(wk);
        self.unsynced.remove(&wk);
        let w = self.watchers.remove(&wk)?;
        if let Some(stream) = self.streams.get_mut(&w.stream) {
            stream.ids.remove(&w.id);
        }
        Some(w)
    }

    fn all_synced(&self, stream: StreamKey) -> bool {
        self.streams.get(&stream).is_some_and(|s| {
            s.ids
                .values()
                .all(|wk| self.watchers.get(wk).is_none_or(|w| w.synced))
        })
    }

    fn publish_gauges(&self) {
        metrics::gauge!("etcd_debugging_mvcc_watcher_total").set(self.watchers.len() as f64);
        metrics::gauge!("etcd_debugging_mvcc_slow_watcher_total").set(self.unsynced.len() as f64);
        metrics::gauge!("etcd_debugging_mvcc_watch_stream_total").set(self.streams.len() as f64);
    }
}

/// Wakes the background catch-up thread.
#[derive(Default)]
struct Wake {
    state: Mutex<(bool, bool)>, // (woken, stopped)
    cond: Condvar,
}

impl Wake {
    fn wake(&self) {
        self.state.lock().0 = true;
        self.cond.notify_one();
    }
}

/// Every watcher of a member. See the crate documentation.
pub struct WatchHub {
    store: Arc<dyn EventSource>,
    config: WatchConfig,
    header: Arc<dyn HeaderSource>,
    inner: Mutex<Inner>,
    wake: Arc<Wake>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
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
        let inner = Inner {
            notified_rev: store.current_revision(),
            ..Inner::default()
        };
        Arc::new(WatchHub {
            store,
            config,
            header,
            inner: Mutex::new(inner),
            wake: Arc::new(Wake::default()),
        })
    }

    /// The hub's configuration.
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// The last revision the apply loop reported.
    pub fn revision(&self) -> i64 {
        self.inner.lock().notified_rev
    }

    /// How many watchers exist, and how many of them are unsynced.
    pub fn watcher_counts(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.watchers.len(), inner.unsynced.len())
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.header.header(revision))
    }

    /// Hands the events of one applied revision (with `prev_kv` filled) to the synced
    /// watchers. Never blocks on a client: a watcher whose stream buffer is full
    /// becomes unsynced and catches up from history later.
    pub fn notify(&self, revision: i64, events: &[Event]) {
        let mut inner = self.inner.lock();
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
        let mut inner = self.inner.lock();
        inner.notified_rev = inner.notified_rev.max(revision);
        let all: Vec<WatcherKey> = inner.watchers.keys().copied().collect();
        for wk in all {
            inner.make_unsynced(wk);
        }
        inner.publish_gauges();
        drop(inner);
        self.wake.wake();
    }

    fn maybe_fragment(&self, fragmented: bool, response: WatchResponse) -> Vec<WatchResponse> {
        if fragmented {
            fragment(response, self.config.max_response_bytes)
        } else {
            vec![response]
        }
    }

    /// Opens a stream: its handle takes requests, the receiver yields responses. Dropping
    /// the handle removes the stream's watchers.
    pub fn open_stream(self: &Arc<Self>) -> (WatchStream, WatchReceiver) {
        let (tx, rx) = mpsc::channel(self.config.stream_buffer.max(1));
        let mut inner = self.inner.lock();
        let key = inner.next_key;
        inner.next_key += 1;
        inner.streams.insert(
            key,
            StreamState {
                tx: tx.clone(),
                ids: HashMap::new(),
                next_auto_id: 0,
                deferred_progress: false,
            },
        );
        inner.publish_gauges();
        (
            WatchStream {
                hub: self.clone(),
                key,
                tx,
            },
            WatchReceiver { rx },
        )
    }

    /// One round of catch-up: reads history for up to `catch_up_watchers` unsynced
    /// watchers whose streams have room, queues it, and moves those that reached the
    /// current revision to the synced group. Returns how many watchers are still
    /// unsynced.
    pub fn sync_unsynced(&self) -> usize {
        let (upto, targets) = {
            let inner = self.inner.lock();
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
            let mut inner = self.inner.lock();
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
        let mut inner = self.inner.lock();
        self.flush_deferred_progress(&mut inner);
        inner.publish_gauges();
        inner.unsynced.len()
    }

    fn cancel_compacted(&self, inner: &mut Inner, wk: WatcherKey) {
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
    fn catch_up(&self, inner: &mut Inner, wk: WatcherKey, events: Vec<Event>, through: i64) {
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

    fn flush_deferred_progress(&self, inner: &mut Inner) {
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

    fn progress_response(&self, revision: i64, watch_id: i64) -> WatchResponse {
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
        let mut inner = self.inner.lock();
        let revision = inner.notified_rev;
        let Inner {
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

/// One client stream of watchers (one gRPC `Watch` call).
pub struct WatchStream {
    hub: Arc<WatchHub>,
    key: StreamKey,
    tx: mpsc::Sender<WatchResponse>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("key", &self.key)
            .finish()
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let mut inner = self.hub.inner.lock();
        if let Some(stream) = inner.streams.remove(&self.key) {
            for wk in stream.ids.into_values() {
                inner.remove_watcher(wk);
            }
        }
        inner.publish_gauges();
    }
}

impl WatchStream {
    /// Handles one request of the stream. Waits while the stream's buffer is full.
    pub async fn handle(&self, request: WatchRequest) {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
            Some(RequestUnion::ProgressRequest(_)) => self.request_progress().await,
            None => {}
        }
    }

    /// Creates a watcher; its `created` response comes before anything else it gets.
    pub async fn create(&self, req: WatchCreateRequest) {
        let Ok(permit) = self.tx.reserve().await else {
            return;
        };
        let hub = &self.hub;
        let mut inner = hub.inner.lock();
        let revision = inner.notified_rev;
        let mut key = req.key;
        if key.is_empty() {
            // etcd: "\0" is the smallest key.
            key = Bytes::from_static(b"\0");
        }
        let range_end = req.range_end;
        let rejected = |reason: &str| WatchResponse {
            header: hub.header(revision),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        if !range_end.is_empty() && range_end.as_ref() != b"\0" && key >= range_end {
            permit.send(rejected(EMPTY_WATCH_RANGE));
            return;
        }
        let Some(stream) = inner.streams.get_mut(&self.key) else {
            return;
        };
        let id = if req.watch_id == 0 {
            while stream.ids.contains_key(&stream.next_auto_id) {
                stream.next_auto_id += 1;
            }
            stream.next_auto_id += 1;
            stream.next_auto_id - 1
        } else if stream.ids.contains_key(&req.watch_id) {
            permit.send(rejected(DUPLICATE_WATCH_ID));
            return;
        } else {
            req.watch_id
        };
        let wk = inner.next_key;
        inner.next_key += 1;
        let filters = |f: FilterType| req.filters.contains(&(f as i32));
        // A negative start revision is in the past (and so, as in etcd, compacted).
        let next_rev = if req.start_revision == 0 {
            revision + 1
        } else {
            req.start_revision
        };
        let watcher = Watcher {
            stream: self.key,
            id,
            range: KeyRange::new(&key, &range_end),
            key,
            range_end,
            next_rev,
            synced: false,
            shape: EventShape {
                no_put: filters(FilterType::Noput),
                no_delete: filters(FilterType::Nodelete),
                prev_kv: req.prev_kv,
            },
            fragment: req.fragment,
            progress_notify: req.progress_notify,
            sent_since_tick: false,
        };
        inner.watchers.insert(wk, watcher);
        if let Some(stream) = inner.streams.get_mut(&self.key) {
            stream.ids.insert(id, wk);
        }
        permit.send(WatchResponse {
            header: hub.header(revision),
            watch_id: id,
            created: true,
            ..Default::default()
        });
        let behind = next_rev <= revision;
        if behind {
            inner.make_unsynced(wk);
        } else {
            inner.add_synced(wk);
        }
        inner.publish_gauges();
        drop(inner);
        if behind {
            hub.wake.wake();
        }
    }

    /// Cancels watcher `watch_id`; an unknown id gets no answer (as in etcd).
    pub async fn cancel(&self, watch_id: i64) {
        let Ok(permit) = self.tx.reserve().await else {
            return;
        };
        let mut inner = self.hub.inner.lock();
        let Some(wk) = inner
            .streams
            .get(&self.key)
            .and_then(|s| s.ids.get(&watch_id).copied())
        else {
            return;
        };
        inner.remove_watcher(wk);
        if let Some(stream) = inner.streams.get_mut(&self.key) {
            stream.ids.remove(&watch_id);
        }
        permit.send(WatchResponse {
            header: self.hub.header(inner.notified_rev),
            watch_id,
            canceled: true,
            ..Default::default()
        });
        inner.publish_gauges();
    }

    /// etcd 3.5's progress request: a response with watch id -1 and the current
    /// revision once every watcher of the stream is synced (at once if they are); a
    /// stream without watchers gets nothing.
    pub async fn request_progress(&self) {
        let Ok(permit) = self.tx.reserve().await else {
            return;
        };
        let mut inner = self.hub.inner.lock();
        let has_watchers = inner
            .streams
            .get(&self.key)
            .is_some_and(|s| !s.ids.is_empty());
        if !has_watchers {
            return;
        }
        if inner.all_synced(self.key) {
            permit.send(self.hub.progress_response(inner.notified_rev, -1));
        } else if let Some(stream) = inner.streams.get_mut(&self.key) {
            stream.deferred_progress = true;
        }
    }
}

/// The responses of one [`WatchStream`], in order.
#[derive(Debug)]
pub struct WatchReceiver {
    rx: mpsc::Receiver<WatchResponse>,
}

fn sent(response: &WatchResponse) {
    let events = response.events.len() as f64;
    metrics::gauge!("etcd_debugging_mvcc_pending_events_total").decrement(events);
    metrics::counter!("etcd_debugging_mvcc_events_total").increment(response.events.len() as u64);
}

impl WatchReceiver {
    /// The next response; `None` once the stream is dropped and drained.
    pub async fn recv(&mut self) -> Option<WatchResponse> {
        let r = self.rx.recv().await;
        r.inspect(sent)
    }

    /// The next response if one is queued.
    pub fn try_recv(&mut self) -> Option<WatchResponse> {
        self.rx.try_recv().ok().inspect(sent)
    }
}

impl futures::Stream for WatchReceiver {
    type Item = WatchResponse;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(r)) = &polled {
            sent(r);
        }
        polled
    }
}
