//! The hub's rules over an in-memory history: no RocksDB, and history reads that can be
//! counted, made to fail, compacted or replaced at will.

use std::sync::Arc;

use bytes::Bytes;
use cairn_mvcc_store::KeyRange;
use cairn_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use parking_lot::Mutex;

use crate::{EventSource, HistoryError, WatchConfig, WatchHub, WatchReceiver, WatchStream};

#[derive(Default)]
struct History {
    /// Every event, in revision order.
    events: Vec<Event>,
    current: i64,
    compacted: i64,
    /// Reads still to fail.
    failures: usize,
    /// Reads answered (failed ones included).
    reads: usize,
}

/// A store's history in memory, with etcd's rules for reading it.
struct MemoryHistory(Mutex<History>);

impl MemoryHistory {
    fn new() -> Arc<Self> {
        Arc::new(MemoryHistory(Mutex::new(History {
            current: 1,
            ..History::default()
        })))
    }

    /// One new revision putting each of `keys`; returns it with its events.
    fn put(&self, keys: &[&str]) -> (i64, Vec<Event>) {
        let mut h = self.0.lock();
        h.current += 1;
        let revision = h.current;
        let events: Vec<Event> = keys
            .iter()
            .map(|key| Event {
                r#type: EventType::Put as i32,
                kv: Some(KeyValue {
                    key: Bytes::from(key.to_string()),
                    value: Bytes::from(format!("v{revision}")),
                    create_revision: revision,
                    mod_revision: revision,
                    version: 1,
                    lease: 0,
                }),
                prev_kv: None,
            })
            .collect();
        h.events.extend(events.iter().cloned());
        (revision, events)
    }

    fn compact(&self, revision: i64) {
        let mut h = self.0.lock();
        h.compacted = revision;
        h.events.retain(|e| rev(e) >= revision);
    }

    fn fail_next_reads(&self, count: usize) {
        self.0.lock().failures = count;
    }

    fn reads(&self) -> usize {
        self.0.lock().reads
    }
}

fn rev(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

impl EventSource for MemoryHistory {
    fn current_revision(&self) -> i64 {
        self.0.lock().current
    }

    fn compact_revision(&self) -> i64 {
        self.0.lock().compacted
    }

    fn events_between(
        &self,
        from_rev: i64,
        to_rev: i64,
        key: &Bytes,
        range_end: &Bytes,
        limit: usize,
    ) -> Result<Vec<Event>, HistoryError> {
        let mut h = self.0.lock();
        h.reads += 1;
        if h.failures > 0 {
            h.failures -= 1;
            return Err(HistoryError::Unavailable("injected".into()));
        }
        if from_rev < h.compacted {
            return Err(HistoryError::Compacted);
        }
        let keys = KeyRange::new(key, range_end);
        let to_rev = to_rev.min(h.current);
        let mut out: Vec<Event> = Vec::new();
        for event in &h.events {
            let at = rev(event);
            if at < from_rev || at > to_rev {
                continue;
            }
            if limit > 0 && out.len() >= limit && out.last().map(rev) != Some(at) {
                break;
            }
            if keys.contains(&event.kv.as_ref().expect("kv").key) {
                out.push(event.clone());
            }
        }
        Ok(out)
    }
}

fn hub(history: &Arc<MemoryHistory>, config: WatchConfig) -> Arc<WatchHub> {
    let header = |revision| ResponseHeader {
        revision,
        ..Default::default()
    };
    WatchHub::new(history.clone(), config, Arc::new(header))
}

async fn watch(hub: &Arc<WatchHub>, req: WatchCreateRequest) -> (WatchStream, WatchReceiver) {
    let (stream, mut rx) = hub.open_stream();
    stream.create(req).await;
    let created = rx.try_recv().expect("created response");
    assert!(created.created && !created.canceled, "{created:?}");
    (stream, rx)
}

fn prefix(key: &str, start_revision: i64) -> WatchCreateRequest {
    let mut end = key.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    WatchCreateRequest {
        key: Bytes::from(key.to_string()),
        range_end: Bytes::from(end),
        start_revision,
        ..Default::default()
    }
}

fn received(rx: &mut WatchReceiver) -> Vec<WatchResponse> {
    std::iter::from_fn(|| rx.try_recv()).collect()
}

/// `(key, revision)` of every event, in order.
fn events(responses: &[WatchResponse]) -> Vec<(String, i64)> {
    responses
        .iter()
        .flat_map(|r| &r.events)
        .map(|e| {
            let kv = e.kv.as_ref().expect("kv");
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            )
        })
        .collect()
}

#[tokio::test]
async fn synced_watchers_get_live_events_without_reading_history() {
    let history = MemoryHistory::new();
    let hub = hub(&history, WatchConfig::default());
    let (_stream, mut rx) = watch(&hub, prefix("k", 0)).await;
    for keys in [&["k1"][..], &["other"], &["k2", "k3"]] {
        let (revision, evs) = history.put(keys);
        hub.notify(revision, &evs);
    }
    assert_eq!(hub.sync_unsynced(), 0);
    let got = received(&mut rx);
    assert_eq!(
        events(&got),
        [("k1".into(), 2), ("k2".into(), 4), ("k3".into(), 4)]
    );
    assert_eq!(got.len(), 2, "one response per revision");
    assert_eq!(history.reads(), 0);
}

#[tokio::test]
async fn catch_up_reads_history_in_chunks_of_whole_revisions_then_goes_live() {
    let history = MemoryHistory::new();
    let hub = hub(
        &history,
        WatchConfig {
            catch_up_events: 2,
            ..WatchConfig::default()
        },
    );
    for keys in [&["k1"][..], &["k2", "k3", "k4"], &["x"], &["k5"], &["k6"]] {
        let (revision, evs) = history.put(keys);
        hub.notify(revision, &evs);
    }
    let (_stream, mut rx) = watch(&hub, prefix("k", 2)).await;
    assert_eq!(hub.watcher_counts(), (1, 1));
    let mut rounds = 0;
    while hub.sync_unsynced() > 0 {
        rounds += 1;
        assert!(rounds < 10, "the watcher never caught up");
    }
    // Revisions 2-3 (four events: revision 3 is not split), then 4-6.
    assert_eq!(history.reads(), 2);
    let (revision, evs) = history.put(&["k7"]);
    hub.notify(revision, &evs);
    let got = received(&mut rx);
    assert_eq!(
        events(&got),
        [
            ("k1".into(), 2),
            ("k2".into(), 3),
            ("k3".into(), 3),
            ("k4".into(), 3),
            ("k5".into(), 5),
            ("k6".into(), 6),
            ("k7".into(), 7),
        ]
    );
    let holding_3: Vec<usize> = got
        .iter()
        .map(|r| r.events.iter().filter(|e| rev(e) == 3).count())
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(holding_3, [3], "revision 3 stays in one response");
}

#[tokio::test]
async fn a_failing_history_read_is_retried_and_loses_nothing() {
    let history = MemoryHistory::new();
    let hub = hub(&history, WatchConfig::default());
    for key in ["k1", "k2", "k3"] {
        let (revision, evs) = history.put(&[key]);
        hub.notify(revision, &evs);
    }
    let (_stream, mut rx) = watch(&hub, prefix("k", 1)).await;
    history.fail_next_reads(2);
    assert_eq!(hub.sync_unsynced(), 1);
    assert_eq!(hub.sync_unsynced(), 1);
    assert!(received(&mut rx).is_empty());
    assert_eq!(hub.sync_unsynced(), 0);
    assert_eq!(
        events(&received(&mut rx)),
        [("k1".into(), 2), ("k2".into(), 3), ("k3".into(), 4)]
    );
    assert_eq!(history.reads(), 3);
}

#[tokio::test]
async fn history_compacted_under_a_catching_up_watcher_cancels_it() {
    let history = MemoryHistory::new();
    let hub = hub(&history, WatchConfig::default());
    for i in 0..6 {
        let (revision, evs) = history.put(&[&format!("k{i}")]);
        hub.notify(revision, &evs);
    }
    let (_stream, mut rx) = watch(&hub, prefix("k", 2)).await;
    history.compact(5);
    assert_eq!(hub.sync_unsynced(), 0);
    let got = received(&mut rx);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].canceled);
    assert_eq!(got[0].compact_revision, 5);
    assert_eq!(got[0].header.as_ref().map(|h| h.revision), Some(0));
    assert_eq!(hub.watcher_counts(), (0, 0));
}

#[tokio::test]
async fn after_a_restore_every_watcher_rereads_from_its_next_revision() {
    let history = MemoryHistory::new();
    let hub = hub(&history, WatchConfig::default());
    let (_stream, mut rx) = watch(&hub, prefix("k", 0)).await;
    let (revision, evs) = history.put(&["k1"]);
    hub.notify(revision, &evs);
    assert_eq!(events(&received(&mut rx)), [("k1".into(), 2)]);
    // A snapshot from the leader brings revisions 3 to 5 without the apply loop.
    history.put(&["k2"]);
    history.put(&["x"]);
    history.put(&["k3"]);
    hub.on_restore(history.current_revision());
    assert_eq!(hub.watcher_counts(), (1, 1));
    assert_eq!(hub.sync_unsynced(), 0);
    assert_eq!(
        events(&received(&mut rx)),
        [("k2".into(), 3), ("k3".into(), 5)]
    );
    let (revision, evs) = history.put(&["k4"]);
    hub.notify(revision, &evs);
    assert_eq!(events(&received(&mut rx)), [("k4".into(), 6)]);
}
