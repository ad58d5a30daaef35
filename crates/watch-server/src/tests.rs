use std::sync::Arc;

use cairn_mvcc_store::{Backend, BackendBatch, KvStore};
use cairn_proto::etcdserverpb::{
    request_op, watch_create_request::FilterType, CompactionRequest, DeleteRangeRequest,
    PutRequest, RequestOp, ResponseHeader, TxnRequest, WatchCreateRequest, WatchResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event};
use tempfile::TempDir;

use crate::{WatchConfig, WatchHub, WatchReceiver, WatchStream, DUPLICATE_WATCH_ID};

struct Fixture {
    _dir: TempDir,
    store: Arc<KvStore>,
    hub: Arc<WatchHub>,
}

fn fixture(config: WatchConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(KvStore::open(Backend::open(dir.path()).unwrap()).unwrap());
    let header = |revision| ResponseHeader {
        cluster_id: 7,
        member_id: 9,
        revision,
        raft_term: 2,
    };
    let hub = WatchHub::new(store.clone(), config, Arc::new(header));
    Fixture {
        _dir: dir,
        store,
        hub,
    }
}

impl Fixture {
    fn index(&self) -> u64 {
        self.store.applied_index() + 1
    }

    fn put(&self, key: &str, value: &str) -> i64 {
        let req = PutRequest {
            key: key.to_string().into(),
            value: value.to_string().into(),
            ..Default::default()
        };
        let out = self
            .store
            .put(self.index(), &req, BackendBatch::new())
            .unwrap();
        self.hub.notify(out.revision, &out.events);
        out.revision
    }

    fn delete(&self, key: &str) -> i64 {
        let req = DeleteRangeRequest {
            key: key.to_string().into(),
            ..Default::default()
        };
        let out = self
            .store
            .delete_range(self.index(), &req, BackendBatch::new())
            .unwrap();
        self.hub.notify(out.revision, &out.events);
        out.revision
    }

    fn put_many(&self, pairs: &[(&str, &str)]) -> i64 {
        let success = pairs
            .iter()
            .map(|(k, v)| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: k.to_string().into(),
                    value: v.to_string().into(),
                    ..Default::default()
                })),
            })
            .collect();
        let req = TxnRequest {
            success,
            ..Default::default()
        };
        let out = self
            .store
            .txn(self.index(), &req, BackendBatch::new())
            .unwrap();
        self.hub.notify(out.revision, &out.events);
        out.revision
    }

    fn compact(&self, revision: i64) {
        let req = CompactionRequest {
            revision,
            physical: true,
        };
        let out = self.store.compact(self.index(), &req).unwrap();
        self.hub.notify(out.revision, &out.events);
    }

    async fn watch(&self, req: WatchCreateRequest) -> (WatchStream, WatchReceiver, i64) {
        let (stream, mut rx) = self.hub.open_stream();
        stream.create(req).await;
        let created = rx.try_recv().expect("created response");
        assert!(created.created && !created.canceled, "{created:?}");
        (stream, rx, created.watch_id)
    }

    /// Runs catch-up rounds and drains `rx` until every watcher is synced and nothing is
    /// queued.
    fn drain(&self, rx: &mut WatchReceiver) -> Vec<WatchResponse> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            while let Some(r) = rx.try_recv() {
                out.push(r);
            }
            let unsynced = self.hub.sync_unsynced();
            if unsynced == 0 {
                while let Some(r) = rx.try_recv() {
                    out.push(r);
                }
                return out;
            }
        }
        panic!("watchers never caught up");
    }
}

fn create(key: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.to_string().into(),
        ..Default::default()
    }
}

fn summary(events: &[Event]) -> Vec<(String, i64, bool)> {
    events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
                e.r#type == EventType::Delete as i32,
            )
        })
        .collect()
}

fn all_events(responses: &[WatchResponse]) -> Vec<Event> {
    responses.iter().flat_map(|r| r.events.clone()).collect()
}

#[tokio::test]
async fn live_events_arrive_in_order_one_response_per_revision() {
    let f = fixture(WatchConfig::default());
    let (_s, mut rx, id) = f.watch(create("a")).await;
    assert_eq!(id, 0);
    f.put("a", "1");
    f.put("b", "x");
    f.put("a", "2");
    f.delete("a");
    let got = f.drain(&mut rx);
    assert_eq!(got.len(), 3);
    assert_eq!(
        summary(&all_events(&got)),
        vec![
            ("a".into(), 2, false),
            ("a".into(), 4, false),
            ("a".into(), 5, true)
        ]
    );
    let header = got[2].header.unwrap();
    assert_eq!(
        (
            header.cluster_id,
            header.member_id,
            header.revision,
            header.raft_term
        ),
        (7, 9, 5, 2)
    );
    // No prev_kv unless asked.
    assert!(got
        .iter()
        .all(|r| r.events.iter().all(|e| e.prev_kv.is_none())));
}

#[tokio::test]
async fn created_response_carries_current_revision_and_auto_ids_count_up() {
    let f = fixture(WatchConfig::default());
    f.put("a", "1");
    let (stream, mut rx) = f.hub.open_stream();
    stream.create(create("a")).await;
    stream
        .create(WatchCreateRequest {
            watch_id: 5,
            ..create("b")
        })
        .await;
    stream.create(create("c")).await;
    stream
        .create(WatchCreateRequest {
            watch_id: 5,
            ..create("d")
        })
        .await;
    let r: Vec<WatchResponse> = std::iter::from_fn(|| rx.try_recv()).collect();
    assert_eq!(r.len(), 4);
    assert_eq!(r[0].header.as_ref().unwrap().revision, 2);
    assert_eq!((r[0].watch_id, r[1].watch_id, r[2].watch_id), (0, 5, 1));
    assert!(r[3].created && r[3].canceled);
    assert_eq!(r[3].watch_id, -1);
    assert_eq!(r[3].cancel_reason, DUPLICATE_WATCH_ID);
}

#[tokio::test]
async fn prefix_and_from_key_ranges() {
    let f = fixture(WatchConfig::default());
    let (_s1, mut prefix, _) = f
        .watch(WatchCreateRequest {
            key: "p/".into(),
            range_end: "p0".into(),
            ..Default::default()
        })
        .await;
    let (_s2, mut from_key, _) = f
        .watch(WatchCreateRequest {
            key: "m".into(),
            range_end: "\0".into(),
            ..Default::default()
        })
        .await;
    f.put("p/1", "v");
    f.put("a", "v");
    f.put("z", "v");
    f.put("p", "v");
    let p = summary(&all_events(&f.drain(&mut prefix)));
    let k = summary(&all_events(&f.drain(&mut from_key)));
    assert_eq!(p, vec![("p/1".into(), 2, false)]);
    assert_eq!(
        k,
        vec![
            ("p/1".into(), 2, false),
            ("z".into(), 4, false),
            ("p".into(), 5, false)
        ]
    );
}

#[tokio::test]
async fn one_revision_stays_in_one_response() {
    let f = fixture(WatchConfig::default());
    let (_s, mut rx, _) = f
        .watch(WatchCreateRequest {
            key: "\0".into(),
            range_end: "\0".into(),
            ..Default::default()
        })
        .await;
    f.put_many(&[("a", "1"), ("b", "2"), ("c", "3")]);
    let got = f.drain(&mut rx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].events.len(), 3);
    assert!(got[0]
        .events
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == 2));
}

#[tokio::test]
async fn history_replay_then_live_without_gap() {
    let f = fixture(WatchConfig::default());
    for i in 0..5 {
        f.put("k", &i.to_string());
    }
    let (_s, mut rx, _) = f
        .watch(WatchCreateRequest {
            start_revision: 3,
            ..create("k")
        })
        .await;
    assert_eq!(f.hub.watcher_counts(), (1, 1));
    let history = f.drain(&mut rx);
    assert_eq!(f.hub.watcher_counts(), (1, 0));
    f.put("k", "live");
    let live = f.drain(&mut rx);
    let revs: Vec<i64> = summary(&all_events(&history))
        .into_iter()
        .chain(summary(&all_events(&live)))
        .map(|(_, rev, _)| rev)
        .collect();
    assert_eq!(revs, vec![3, 4, 5, 6, 7]);
}

#[tokio::test]
async fn slow_consumer_becomes_victim_and_catches_up_exactly_once() {
    let f = fixture(WatchConfig {
        stream_buffer: 4,
        catch_up_events: 3,
        ..WatchConfig::default()
    });
    let (_s, mut rx, _) = f.watch(create("k")).await;
    for i in 0..40 {
        f.put("k", &i.to_string());
        f.put("other", "x");
    }
    assert_eq!(
        f.hub.watcher_counts().1,
        1,
        "a full buffer makes the watcher a victim"
    );
    let mut got = Vec::new();
    // Interleave live writes with the catch-up.
    for i in 0..10 {
        if let Some(r) = rx.try_recv() {
            got.push(r);
        }
        f.hub.sync_unsynced();
        f.put("k", &format!("late{i}"));
    }
    got.extend(f.drain(&mut rx));
    let revs: Vec<i64> = summary(&all_events(&got))
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    let want: Vec<i64> = (0..40).map(|i| 2 + 2 * i).chain(82..92).collect();
    assert_eq!(revs, want);
    assert_eq!(f.hub.watcher_counts(), (1, 0));
}

#[tokio::test]
async fn compacted_start_revision_cancels_with_compact_revision() {
    let f = fixture(WatchConfig::default());
    for i in 0..5 {
        f.put("k", &i.to_string());
    }
    f.compact(4);
    let (stream, mut rx, id) = f
        .watch(WatchCreateRequest {
            start_revision: 2,
            ..create("k")
        })
        .await;
    let got = f.drain(&mut rx);
    assert_eq!(got.len(), 1);
    assert!(got[0].canceled);
    assert_eq!(got[0].watch_id, id);
    assert_eq!(got[0].compact_revision, 4);
    assert_eq!(
        got[0].header.unwrap().revision,
        0,
        "etcd's header revision here"
    );
    assert!(got[0].events.is_empty());
    assert_eq!(f.hub.watcher_counts(), (0, 0));
    // The id stays taken until the client cancels it.
    stream.cancel(id).await;
    let r = rx.try_recv().unwrap();
    assert!(r.canceled && r.compact_revision == 0);
    assert_eq!(r.watch_id, id);
}

#[tokio::test]
async fn filters_and_prev_kv() {
    let f = fixture(WatchConfig::default());
    let (_s1, mut no_put, _) = f
        .watch(WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            prev_kv: true,
            ..create("k")
        })
        .await;
    let (_s2, mut no_delete, _) = f
        .watch(WatchCreateRequest {
            filters: vec![FilterType::Nodelete as i32],
            prev_kv: true,
            ..create("k")
        })
        .await;
    f.put("k", "1");
    f.put("k", "2");
    f.delete("k");
    let deletes = all_events(&f.drain(&mut no_put));
    let puts = all_events(&f.drain(&mut no_delete));
    assert_eq!(summary(&deletes), vec![("k".into(), 4, true)]);
    assert_eq!(deletes[0].prev_kv.as_ref().unwrap().value, "2");
    assert_eq!(
        summary(&puts),
        vec![("k".into(), 2, false), ("k".into(), 3, false)]
    );
    assert!(puts[0].prev_kv.is_none());
    assert_eq!(puts[1].prev_kv.as_ref().unwrap().value, "1");
}

#[tokio::test]
async fn fragment_splits_a_large_revision() {
    let f = fixture(WatchConfig {
        max_response_bytes: 200,
        ..WatchConfig::default()
    });
    let all = |fragment| WatchCreateRequest {
        key: "\0".into(),
        range_end: "\0".into(),
        fragment,
        ..Default::default()
    };
    let (_s1, mut fragmented, _) = f.watch(all(true)).await;
    let (_s2, mut whole, _) = f.watch(all(false)).await;
    let value = "v".repeat(60);
    let pairs: Vec<(String, String)> = (0..6).map(|i| (format!("k{i}"), value.clone())).collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    f.put_many(&pairs);
    let parts = f.drain(&mut fragmented);
    assert!(parts.len() > 1, "{} parts", parts.len());
    assert!(parts[..parts.len() - 1].iter().all(|r| r.fragment));
    assert!(!parts.last().unwrap().fragment);
    assert_eq!(all_events(&parts).len(), 6);
    let one = f.drain(&mut whole);
    assert_eq!(one.len(), 1);
    assert!(!one[0].fragment);
    assert_eq!(all_events(&one), all_events(&parts));
}

#[tokio::test]
async fn cancel_answers_known_ids_only() {
    let f = fixture(WatchConfig::default());
    let (stream, mut rx, id) = f.watch(create("k")).await;
    stream.cancel(42).await;
    assert!(rx.try_recv().is_none());
    stream.cancel(id).await;
    let r = rx.try_recv().unwrap();
    assert!(r.canceled && !r.created);
    assert_eq!((r.watch_id, r.cancel_reason.as_str()), (id, ""));
    f.put("k", "1");
    assert!(rx.try_recv().is_none());
    assert_eq!(f.hub.watcher_counts(), (0, 0));
}

#[tokio::test]
async fn progress_request_waits_for_every_watcher_to_sync() {
    let f = fixture(WatchConfig::default());
    f.put("k", "1");
    let (stream, mut rx) = f.hub.open_stream();
    stream.request_progress().await;
    assert!(rx.try_recv().is_none(), "no watchers: no answer");
    stream.create(create("k")).await;
    stream
        .create(WatchCreateRequest {
            start_revision: 1,
            ..create("k")
        })
        .await;
    rx.try_recv().unwrap();
    rx.try_recv().unwrap();
    stream.request_progress().await;
    assert!(rx.try_recv().is_none(), "one watcher is unsynced");
    let rest = f.drain(&mut rx);
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert_eq!(rest[0].events.len(), 1);
    assert_eq!((rest[1].watch_id, rest[1].events.len()), (-1, 0));
    assert_eq!(rest[1].header.as_ref().unwrap().revision, 2);
    stream.request_progress().await;
    assert_eq!(rx.try_recv().unwrap().watch_id, -1);
}

#[tokio::test]
async fn progress_tick_goes_to_idle_watchers_that_asked() {
    let f = fixture(WatchConfig::default());
    let (_s1, mut asked, id) = f
        .watch(WatchCreateRequest {
            progress_notify: true,
            ..create("k")
        })
        .await;
    let (_s2, mut silent, _) = f.watch(create("k")).await;
    f.put("k", "1");
    assert_eq!(asked.try_recv().unwrap().events.len(), 1);
    silent.try_recv().unwrap();
    f.hub.progress_tick();
    assert!(
        asked.try_recv().is_none(),
        "events went out since the last tick"
    );
    f.hub.progress_tick();
    let r = asked.try_recv().unwrap();
    assert_eq!((r.watch_id, r.events.len()), (id, 0));
    assert_eq!(r.header.unwrap().revision, 2);
    assert!(silent.try_recv().is_none());
}

#[tokio::test]
async fn dropping_the_stream_removes_its_watchers() {
    let f = fixture(WatchConfig::default());
    let (stream, _rx, _) = f.watch(create("k")).await;
    assert_eq!(f.hub.watcher_counts(), (1, 0));
    drop(stream);
    assert_eq!(f.hub.watcher_counts(), (0, 0));
    f.put("k", "1");
}
