//! Client streams: one per gRPC `Watch` call, taking create, cancel and
//! progress requests.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cairn_mvcc_store::KeyRange;
use cairn_proto::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;

use crate::delivery::WatchReceiver;
use crate::hub::WatchHub;
use crate::registry::{StreamKey, StreamState, Watcher};
use crate::response::{EventShape, DUPLICATE_WATCH_ID, EMPTY_WATCH_RANGE};

impl WatchHub {
    /// Opens a stream: its handle takes requests, the receiver yields responses. Dropping
    /// the handle removes the stream's watchers.
    pub fn open_stream(self: &Arc<Self>) -> (WatchStream, WatchReceiver) {
        let (tx, rx) = mpsc::channel(self.config.stream_buffer.max(1));
        let mut inner = self.registry.lock();
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
            WatchReceiver::new(rx),
        )
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
        let mut inner = self.hub.registry.lock();
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
        let mut inner = hub.registry.lock();
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
        let mut inner = self.hub.registry.lock();
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
        let mut inner = self.hub.registry.lock();
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
