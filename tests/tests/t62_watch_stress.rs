//! Many watchers over several gRPC streams under concurrent writes, plus one
//! watcher whose reader stalls until the writes are done.
//!
//! Every watcher must see exactly the events of its range, each once, in
//! revision order. Peak RSS, elapsed time and delivery rate are printed for the
//! notes; only a generous memory bound is asserted.

use std::time::{Duration, Instant};

use cairn_tests::etcd_client::{Client, EventType, WatchOptions, WatchResponse, WatchStream};
use cairn_tests::{Server, ServerOpts};

/// Bound on the whole test.
const TOTAL_DEADLINE: Duration = Duration::from_secs(120);
/// Bound on any single wait for a watch response.
const STEP_DEADLINE: Duration = Duration::from_secs(30);

const STREAMS: usize = 10;
const WATCHERS_PER_STREAM: usize = 100;
const PREFIXES: usize = 10;
const PUTS: usize = 10_000;
const WRITERS: usize = 8;
/// Values large enough that the slow watcher's backlog (10,000 events) exceeds
/// the HTTP/2 stream window, so the server really has to hold events back.
const VALUE_LEN: usize = 256;
const PER_PREFIX: usize = PUTS / PREFIXES;
const RSS_BOUND_KIB: u64 = 2 * 1024 * 1024;

/// (mod_revision, put index) of one event.
type Seen = (i64, u32);

async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(STEP_DEADLINE, stream.message())
        .await
        .expect("a watch response before the deadline")
        .expect("watch stream error")
        .expect("watch stream ended")
}

/// The put index `n` of key `s/<p>/<n>`, checking it is under `prefix`.
fn seen(resp: &WatchResponse, prefix: &str) -> Vec<Seen> {
    resp.events()
        .iter()
        .map(|e| {
            assert_eq!(e.event_type(), EventType::Put);
            let kv = e.kv().expect("event kv");
            let key = kv.key_str().expect("utf-8 key");
            assert!(
                key.starts_with(prefix),
                "key {key:?} outside the watched prefix {prefix:?}"
            );
            let n = key
                .rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("numeric key suffix");
            assert_eq!(kv.value().len(), VALUE_LEN);
            (kv.mod_revision(), n)
        })
        .collect()
}

fn prefix(p: usize) -> String {
    format!("s/{p}/")
}

/// Opens one stream with `WATCHERS_PER_STREAM` watchers (watcher `i` of the
/// whole test watches prefix `i % PREFIXES`), all from revision `start`, and
/// returns it once every watcher is created, with the prefix index of each
/// watch ID.
async fn open_stream(client: &mut Client, first: usize, start: i64) -> (WatchStream, Vec<usize>) {
    let opts = || WatchOptions::new().with_prefix().with_start_revision(start);
    let mut stream = client
        .watch(prefix(first % PREFIXES), Some(opts()))
        .await
        .expect("open watch stream");
    for i in first + 1..first + WATCHERS_PER_STREAM {
        stream
            .watch(prefix(i % PREFIXES), Some(opts()))
            .await
            .expect("add watcher");
    }
    let mut ids = Vec::new();
    for k in 0..WATCHERS_PER_STREAM {
        let resp = next(&mut stream).await;
        assert!(resp.created() && !resp.canceled(), "watcher {k}: {resp:?}");
        ids.push(resp.watch_id());
    }
    // Watch IDs are handed out in request order.
    let mut by_id = vec![usize::MAX; WATCHERS_PER_STREAM];
    for (k, id) in ids.into_iter().enumerate() {
        let id = usize::try_from(id).expect("small watch id");
        assert!(id < WATCHERS_PER_STREAM, "unexpected watch id {id}");
        by_id[id] = (first + k) % PREFIXES;
    }
    (stream, by_id)
}

/// Reads one stream until each of its watchers has `PER_PREFIX` events.
async fn drain_fast(mut stream: WatchStream, by_id: Vec<usize>) -> Vec<(usize, Vec<Seen>)> {
    let prefixes: Vec<String> = by_id.iter().map(|&p| prefix(p)).collect();
    let mut got: Vec<Vec<Seen>> = vec![Vec::with_capacity(PER_PREFIX); by_id.len()];
    let mut complete = 0;
    while complete < by_id.len() {
        let resp = next(&mut stream).await;
        assert!(!resp.canceled(), "fast watcher canceled: {resp:?}");
        let id = usize::try_from(resp.watch_id()).expect("watch id");
        let before = got[id].len();
        got[id].extend(seen(&resp, &prefixes[id]));
        let after = got[id].len();
        assert!(after <= PER_PREFIX, "watcher {id} got {after} events");
        if before < PER_PREFIX && after == PER_PREFIX {
            complete += 1;
        }
    }
    by_id.into_iter().zip(got).collect()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_watchers_and_a_slow_one_see_every_event_once_in_order() {
    let server = Server::start(ServerOpts::new());
    let pid = server.pid().expect("server pid");
    tokio::time::timeout(TOTAL_DEADLINE, run(&server))
        .await
        .expect("stress test within its total deadline");
    let peak = peak_rss_kib(pid);
    eprintln!(
        "{:?}: server peak RSS (VmHWM) {:.1} MiB",
        server.kind(),
        peak as f64 / 1024.0
    );
    assert!(peak < RSS_BOUND_KIB, "peak RSS {peak} KiB");
}

async fn run(server: &Server) {
    let started = Instant::now();
    let mut writer = server.client().await;
    let start = 1 + writer
        .get("s/", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();

    // The slow watcher: created now, then not read until the writes are done.
    let mut slow_client = server.client().await;
    let mut slow = slow_client
        .watch(
            "s/",
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .expect("slow watch");
    let created = next(&mut slow).await;
    assert!(created.created() && !created.canceled(), "{created:?}");

    let mut readers = Vec::new();
    for s in 0..STREAMS {
        let mut client = server.client().await;
        let (stream, by_id) = open_stream(&mut client, s * WATCHERS_PER_STREAM, start).await;
        readers.push(tokio::spawn(async move {
            let _client = client;
            drain_fast(stream, by_id).await
        }));
    }
    let setup = started.elapsed();

    let write_start = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = writer.clone();
        writers.push(tokio::spawn(async move {
            let value = vec![b'v'; VALUE_LEN];
            let mut done = Vec::new();
            for n in (w..PUTS).step_by(WRITERS) {
                let key = format!("{}{n}", prefix(n % PREFIXES));
                let resp = client.put(key, value.clone(), None).await.expect("put");
                done.push((n, resp.header().expect("header").revision()));
            }
            done
        }));
    }
    // expected[p]: (revision, n) of every put to prefix p, in revision order.
    let mut expected: Vec<Vec<Seen>> = vec![Vec::new(); PREFIXES];
    let mut all: Vec<Seen> = Vec::with_capacity(PUTS);
    for w in writers {
        for (n, rev) in w.await.expect("writer task") {
            let n32 = u32::try_from(n).expect("small index");
            expected[n % PREFIXES].push((rev, n32));
            all.push((rev, n32));
        }
    }
    let write_time = write_start.elapsed();
    for e in &mut expected {
        e.sort_unstable();
        assert_eq!(e.len(), PER_PREFIX);
    }
    all.sort_unstable();
    let revs: Vec<i64> = all.iter().map(|&(r, _)| r).collect();
    let want: Vec<i64> = (start..start + PUTS as i64).collect();
    assert!(revs == want, "one revision per put, no gaps");

    let mut fast_events = 0usize;
    let mut watchers = 0usize;
    for r in readers {
        for (p, got) in r.await.expect("reader task") {
            assert!(
                got == expected[p],
                "a watcher of {} saw {} events, not exactly the {} puts in revision order",
                prefix(p),
                got.len(),
                expected[p].len()
            );
            fast_events += got.len();
            watchers += 1;
        }
    }
    assert_eq!(watchers, STREAMS * WATCHERS_PER_STREAM);
    let fast_time = write_start.elapsed();

    // Now the slow watcher drains its whole backlog.
    let mut slow_got: Vec<Seen> = Vec::with_capacity(PUTS);
    let mut responses = 0usize;
    while slow_got.len() < PUTS {
        let resp = next(&mut slow).await;
        assert!(
            !resp.canceled(),
            "slow watcher canceled (compact_revision {}, reason {:?}) although nothing was compacted",
            resp.compact_revision(),
            resp.cancel_reason()
        );
        assert_eq!(resp.watch_id(), created.watch_id());
        slow_got.extend(seen(&resp, "s/"));
        responses += 1;
    }
    assert!(
        slow_got == all,
        "slow watcher: not every event exactly once in revision order"
    );
    let total = started.elapsed();
    let delivered = fast_events + slow_got.len();
    eprintln!(
        "{:?}: setup {:.2?}, {PUTS} puts in {:.2?} ({:.0} puts/s), {} fast watchers complete after {:.2?}, \
         slow watcher drained {} events in {responses} responses, total {:.2?}, {delivered} events delivered ({:.0} events/s)",
        server.kind(),
        setup,
        write_time,
        PUTS as f64 / write_time.as_secs_f64(),
        watchers,
        fast_time,
        slow_got.len(),
        total,
        delivered as f64 / (total - setup).as_secs_f64(),
    );
}
