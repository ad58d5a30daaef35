//! The Watch service through the `etcd-client` crate.
//!
//! A fresh store is at revision 1, so the n-th write of a test is revision n+1.

use std::time::Duration;

use cairn_tests::etcd_client::{
    Client, EventType, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};
use cairn_tests::{Server, ServerOpts};

const DEADLINE: Duration = Duration::from_secs(10);

async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a watch response before the deadline")
        .expect("watch stream error")
        .expect("watch stream ended")
}

async fn created(stream: &mut WatchStream) -> WatchResponse {
    let resp = next(stream).await;
    assert!(
        resp.created(),
        "first response is the created one: {resp:?}"
    );
    assert!(!resp.canceled(), "{resp:?}");
    resp
}

/// (key, value, mod_revision, is_delete) of every event of `resp`.
fn events(resp: &WatchResponse) -> Vec<(String, String, i64, bool)> {
    resp.events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("event kv");
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
                kv.mod_revision(),
                e.event_type() == EventType::Delete,
            )
        })
        .collect()
}

/// Reads responses until `n` events came, asserting they all belong to `watch_id`.
async fn collect(
    stream: &mut WatchStream,
    watch_id: i64,
    n: usize,
) -> Vec<(String, String, i64, bool)> {
    let mut out = Vec::new();
    while out.len() < n {
        let resp = next(stream).await;
        assert_eq!(resp.watch_id(), watch_id, "{resp:?}");
        assert!(!resp.canceled(), "{resp:?}");
        out.extend(events(&resp));
    }
    assert_eq!(out.len(), n, "{out:?}");
    out
}

fn ev(key: &str, value: &str, rev: i64, delete: bool) -> (String, String, i64, bool) {
    (key.into(), value.into(), rev, delete)
}

async fn put(client: &mut Client, key: &str, value: &str) -> i64 {
    let resp = client.put(key, value, None).await.expect("put");
    resp.header().expect("header").revision()
}

#[tokio::test]
async fn live_events_with_full_headers() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let mut stream = client.watch("foo", None).await.unwrap();
    let resp = created(&mut stream).await;
    assert_eq!(resp.watch_id(), 0);
    let header = resp.header().expect("header");
    assert_eq!(header.revision(), 1);
    assert_ne!(header.cluster_id(), 0);
    assert_ne!(header.member_id(), 0);
    assert_ne!(header.raft_term(), 0);

    put(&mut client, "foo", "1").await;
    put(&mut client, "other", "x").await;
    put(&mut client, "foo", "2").await;
    client.delete("foo", None).await.unwrap();

    let first = next(&mut stream).await;
    assert_eq!(events(&first), vec![ev("foo", "1", 2, false)]);
    assert_eq!(first.header().unwrap().revision(), 2);
    assert!(
        first.events()[0].prev_kv().is_none(),
        "no prev_kv unless asked"
    );
    let rest = collect(&mut stream, 0, 2).await;
    assert_eq!(rest, vec![ev("foo", "2", 4, false), ev("foo", "", 5, true)]);
}

#[tokio::test]
async fn history_replay_then_live() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    for i in 0..5 {
        put(&mut client, "k", &format!("v{i}")).await; // revisions 2..=6
    }
    let options = WatchOptions::new().with_start_revision(3);
    let mut stream = client.watch("k", Some(options)).await.unwrap();
    let resp = created(&mut stream).await;
    assert_eq!(resp.header().unwrap().revision(), 6);
    let history = collect(&mut stream, 0, 4).await;
    assert_eq!(
        history,
        vec![
            ev("k", "v1", 3, false),
            ev("k", "v2", 4, false),
            ev("k", "v3", 5, false),
            ev("k", "v4", 6, false)
        ]
    );
    put(&mut client, "k", "live").await;
    assert_eq!(
        collect(&mut stream, 0, 1).await,
        vec![ev("k", "live", 7, false)]
    );
}

#[tokio::test]
async fn prefix_range_and_from_key_watches() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let mut prefix = client
        .watch("p/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    created(&mut prefix).await;
    let mut range = client
        .watch("b", Some(WatchOptions::new().with_range("d")))
        .await
        .unwrap();
    created(&mut range).await;
    let mut from_key = client
        .watch("x", Some(WatchOptions::new().with_from_key()))
        .await
        .unwrap();
    created(&mut from_key).await;

    for key in ["a", "b", "p/1", "c", "d", "p", "x", "zz", "p/2"] {
        put(&mut client, key, "v").await; // revisions 2..=10
    }
    assert_eq!(
        collect(&mut prefix, 0, 2).await,
        vec![ev("p/1", "v", 4, false), ev("p/2", "v", 10, false)]
    );
    assert_eq!(
        collect(&mut range, 0, 2).await,
        vec![ev("b", "v", 3, false), ev("c", "v", 5, false)]
    );
    assert_eq!(
        collect(&mut from_key, 0, 2).await,
        vec![ev("x", "v", 8, false), ev("zz", "v", 9, false)]
    );
}

#[tokio::test]
async fn prev_kv_and_filters() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let mut no_put = client
        .watch(
            "k",
            Some(
                WatchOptions::new()
                    .with_prev_key()
                    .with_filters([WatchFilterType::NoPut]),
            ),
        )
        .await
        .unwrap();
    created(&mut no_put).await;
    let mut no_delete = client
        .watch(
            "k",
            Some(
                WatchOptions::new()
                    .with_prev_key()
                    .with_filters([WatchFilterType::NoDelete]),
            ),
        )
        .await
        .unwrap();
    created(&mut no_delete).await;

    put(&mut client, "k", "1").await;
    put(&mut client, "k", "2").await;
    client.delete("k", None).await.unwrap();

    let resp = next(&mut no_put).await;
    assert_eq!(events(&resp), vec![ev("k", "", 4, true)]);
    let prev = resp.events()[0].prev_kv().expect("prev_kv of the delete");
    assert_eq!((prev.value_str().unwrap(), prev.mod_revision()), ("2", 3));

    let first = next(&mut no_delete).await;
    assert_eq!(events(&first), vec![ev("k", "1", 2, false)]);
    assert!(
        first.events()[0].prev_kv().is_none(),
        "a create has no prev_kv"
    );
    let second = next(&mut no_delete).await;
    assert_eq!(events(&second), vec![ev("k", "2", 3, false)]);
    assert_eq!(
        second.events()[0].prev_kv().unwrap().value_str().unwrap(),
        "1"
    );
}

#[tokio::test]
async fn cancel_stops_events_of_that_watcher_only() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let mut stream = client.watch("k", None).await.unwrap();
    let id = created(&mut stream).await.watch_id();
    stream.cancel(id).await.unwrap();
    let resp = next(&mut stream).await;
    assert!(resp.canceled() && !resp.created(), "{resp:?}");
    assert_eq!((resp.watch_id(), resp.cancel_reason()), (id, ""));

    stream.watch("k", None).await.unwrap();
    let second = created(&mut stream).await.watch_id();
    assert_eq!(second, 1, "automatic ids count up");
    put(&mut client, "k", "v").await;
    let resp = next(&mut stream).await;
    assert_eq!(
        resp.watch_id(),
        second,
        "the canceled watcher sends nothing: {resp:?}"
    );
    assert_eq!(events(&resp), vec![ev("k", "v", 2, false)]);
}

#[tokio::test]
async fn progress_request_reports_the_current_revision() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let mut stream = client.watch("k", None).await.unwrap();
    created(&mut stream).await;
    put(&mut client, "other", "1").await;
    put(&mut client, "other", "2").await;
    stream.request_progress().await.unwrap();
    let resp = next(&mut stream).await;
    assert_eq!(resp.watch_id(), -1, "{resp:?}");
    assert!(resp.events().is_empty() && !resp.created() && !resp.canceled());
    assert_eq!(resp.header().unwrap().revision(), 3);
}

#[tokio::test]
async fn compacted_start_revision_is_canceled_with_compact_revision() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    for i in 0..5 {
        put(&mut client, "k", &i.to_string()).await; // revisions 2..=6
    }
    client.compact(4, None).await.unwrap();
    let options = WatchOptions::new().with_start_revision(2);
    let mut stream = client.watch("k", Some(options)).await.unwrap();
    let id = created(&mut stream).await.watch_id();
    let resp = next(&mut stream).await;
    assert!(resp.canceled(), "{resp:?}");
    assert_eq!(resp.watch_id(), id);
    assert_eq!(resp.compact_revision(), 4);
    assert!(resp.events().is_empty());
    // etcd leaves the header revision at 0 here, and the id taken until canceled.
    assert_eq!(resp.header().unwrap().revision(), 0);
    stream.cancel(id).await.unwrap();
    let resp = next(&mut stream).await;
    assert!(resp.canceled() && resp.compact_revision() == 0, "{resp:?}");
    assert_eq!(resp.watch_id(), id);

    // A negative start revision is below any compaction.
    let options = WatchOptions::new().with_start_revision(-3);
    let mut stream = client.watch("k", Some(options)).await.unwrap();
    created(&mut stream).await;
    let resp = next(&mut stream).await;
    assert!(resp.canceled(), "{resp:?}");
    assert_eq!(resp.compact_revision(), 4);

    // At the compaction revision itself history is still there.
    let options = WatchOptions::new().with_start_revision(4);
    let mut stream = client.watch("k", Some(options)).await.unwrap();
    created(&mut stream).await;
    assert_eq!(
        collect(&mut stream, 0, 3).await,
        vec![
            ev("k", "2", 4, false),
            ev("k", "3", 5, false),
            ev("k", "4", 6, false)
        ]
    );
}

#[tokio::test]
async fn many_watchers_on_one_stream_and_duplicate_ids() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let mut stream = client
        .watch("k0", Some(WatchOptions::new().with_watch_id(100)))
        .await
        .unwrap();
    assert_eq!(created(&mut stream).await.watch_id(), 100);
    for i in 1..50 {
        let options = WatchOptions::new().with_watch_id(100 + i);
        stream.watch(format!("k{i}"), Some(options)).await.unwrap();
        assert_eq!(created(&mut stream).await.watch_id(), 100 + i);
    }
    stream
        .watch("dup", Some(WatchOptions::new().with_watch_id(120)))
        .await
        .unwrap();
    let dup = next(&mut stream).await;
    assert!(dup.created() && dup.canceled(), "{dup:?}");
    assert_eq!(dup.watch_id(), -1);
    assert_eq!(
        dup.cancel_reason(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );

    for i in 0..50 {
        put(&mut client, &format!("k{i}"), "v").await;
    }
    let mut seen = Vec::new();
    while seen.len() < 50 {
        let resp = next(&mut stream).await;
        for (key, _, rev, _) in events(&resp) {
            assert_eq!(format!("k{}", resp.watch_id() - 100), key);
            seen.push(rev);
        }
    }
    assert_eq!(seen, (2..52).collect::<Vec<_>>());
}

#[tokio::test]
async fn resume_after_restart_misses_nothing() {
    let mut server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let mut stream = client
        .watch("", Some(WatchOptions::new().with_all_keys()))
        .await
        .unwrap();
    created(&mut stream).await;
    for i in 0..20 {
        put(&mut client, &format!("key{i}"), "before").await; // revisions 2..=21
    }
    let seen = collect(&mut stream, 0, 10).await;
    let mut last = seen.last().unwrap().2;
    let mut revisions: Vec<i64> = seen.iter().map(|e| e.2).collect();
    drop(stream);
    drop(client);

    server.restart();
    let mut client = server.client().await;
    for i in 20..30 {
        put(&mut client, &format!("key{i}"), "after").await; // revisions 22..=31
    }
    let options = WatchOptions::new()
        .with_all_keys()
        .with_start_revision(last + 1);
    let mut stream = client.watch("", Some(options)).await.unwrap();
    created(&mut stream).await;
    while last < 31 {
        let resp = next(&mut stream).await;
        for (_, _, rev, _) in events(&resp) {
            revisions.push(rev);
            last = rev;
        }
    }
    assert_eq!(revisions, (2..32).collect::<Vec<_>>());
}

#[tokio::test]
async fn periodic_progress_notify_reaches_idle_watchers_that_asked() {
    let server = Server::start(
        ServerOpts::new()
            .arg("--experimental-watch-progress-notify-interval")
            .arg("200ms"),
    );
    let mut client = server.client().await;
    put(&mut client, "other", "1").await;
    let options = WatchOptions::new().with_progress_notify();
    let mut stream = client.watch("k", Some(options)).await.unwrap();
    let id = created(&mut stream).await.watch_id();
    let resp = next(&mut stream).await;
    assert_eq!(resp.watch_id(), id, "{resp:?}");
    assert!(resp.events().is_empty() && !resp.canceled() && !resp.created());
    assert_eq!(resp.header().unwrap().revision(), 2);
}

#[tokio::test]
async fn slow_reader_gets_every_revision_exactly_once() {
    use cairn_tests::etcd_client::{Txn, TxnOp};
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let mut stream = client
        .watch("", Some(WatchOptions::new().with_all_keys()))
        .await
        .unwrap();
    created(&mut stream).await;
    // About 25 MiB of events while nobody reads the stream: more than the stream buffer
    // and the HTTP/2 windows (which grow to 16 MiB) hold, so the watcher falls behind.
    let value = "v".repeat(4096);
    for t in 0..300 {
        let ops: Vec<TxnOp> = (0..20)
            .map(|i| TxnOp::put(format!("key{t}/{i}"), value.as_str(), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.unwrap(); // revisions 2..=301
    }
    let mut seen: Vec<(i64, usize)> = Vec::new();
    while seen.last().map_or(0, |(rev, _)| *rev) < 301 {
        let resp = next(&mut stream).await;
        for e in resp.events() {
            let rev = e.kv().unwrap().mod_revision();
            match seen.last_mut() {
                Some((last, n)) if *last == rev => *n += 1,
                _ => seen.push((rev, 1)),
            }
        }
    }
    let want: Vec<(i64, usize)> = (2..=301).map(|rev| (rev, 20)).collect();
    assert_eq!(seen, want);
}
