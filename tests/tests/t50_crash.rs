//! Crash safety: kill -9 at random moments under a write load; every
//! acknowledged write must survive with its revision, and revisions never go
//! backwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::etcd_client::{Client, GetOptions};
use cairn_tests::tonic::Code;
use cairn_tests::{assert_status, Server, ServerOpts};
use rand::Rng;

/// How many times the server is killed.
const KILLS: usize = 6;
/// Concurrent writers, so that several puts are in flight at each kill.
const WRITERS: usize = 4;
/// After a restart, the longest wait for the first acknowledged write.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(20);
const PREFIX: &str = "crash/";

/// A put the server acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    key: String,
    value: String,
    revision: i64,
}

#[derive(Default)]
struct Load {
    acked: Mutex<Vec<Acked>>,
    next_key: AtomicU64,
    failures: AtomicU64,
    stop: AtomicBool,
}

impl Load {
    fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Writes distinct keys until told to stop. A put that fails may or may not
/// have been applied, so its key is never reused and never checked.
async fn writer(mut client: Client, load: Arc<Load>, salt: u64) {
    while !load.stop.load(Ordering::Relaxed) {
        let n = load.next_key.fetch_add(1, Ordering::Relaxed);
        let key = format!("{PREFIX}{n:08}");
        let value = format!("value-{n}-{salt:x}");
        match client.put(key.clone(), value.clone(), None).await {
            Ok(resp) => {
                let revision = resp.header().expect("put header").revision();
                load.acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Acked {
                        key,
                        value,
                        revision,
                    });
            }
            Err(_) => {
                load.failures.fetch_add(1, Ordering::Relaxed);
                // Back off while the server is down instead of spinning.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Checks every acknowledged put against the store and returns the store's
/// revision, which must not be below `floor`.
async fn verify(server: &Server, acked: &[Acked], floor: i64) -> i64 {
    let mut client = server.client().await;
    let resp = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .expect("range after restart");
    let revision = resp.header().expect("header").revision();
    let max_acked = acked.iter().map(|a| a.revision).max().unwrap_or(0);
    assert!(
        revision >= floor && revision >= max_acked,
        "revision went backwards: now {revision}, seen before {floor}, max acknowledged {max_acked}"
    );
    let stored: HashMap<&[u8], (&[u8], i64)> = resp
        .kvs()
        .iter()
        .map(|kv| (kv.key(), (kv.value(), kv.mod_revision())))
        .collect();
    let mut lost = Vec::new();
    for a in acked {
        match stored.get(a.key.as_bytes()) {
            Some(&(value, mod_revision))
                if value == a.value.as_bytes() && mod_revision == a.revision => {}
            found => lost.push(format!(
                "{a:?} -> {:?}",
                found.map(|(v, r)| (String::from_utf8_lossy(v), r))
            )),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged puts lost or changed, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    revision
}

fn wait_for_acks(load: &Load, at_least: usize) {
    let deadline = Instant::now() + PROGRESS_DEADLINE;
    while load.acked_count() < at_least {
        assert!(
            Instant::now() < deadline,
            "no acknowledged put within {PROGRESS_DEADLINE:?} after restart \
             ({} failed puts so far)",
            load.failures.load(Ordering::Relaxed),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn acknowledged_puts_survive_kill9() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut server = Server::start(ServerOpts::new());
    let load = Arc::new(Load::default());
    let mut rng = rand::rng();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let client = runtime.block_on(server.client());
        writers.push(runtime.spawn(writer(client, load.clone(), rng.random())));
    }

    let mut floor = 0;
    for _ in 0..KILLS {
        let before = load.acked_count();
        std::thread::sleep(Duration::from_millis(rng.random_range(50..=500)));
        wait_for_acks(&load, before + 1);
        server.kill9();
        server.restart();
        let acked = load.acked();
        floor = runtime.block_on(verify(&server, &acked, floor));
    }

    load.stop.store(true, Ordering::Relaxed);
    for handle in writers {
        runtime.block_on(handle).expect("writer task");
    }
    let acked = load.acked();
    floor = runtime.block_on(verify(&server, &acked, floor));
    assert!(
        acked.len() > KILLS,
        "only {} puts acknowledged over {KILLS} kills",
        acked.len()
    );
    eprintln!(
        "{} puts acknowledged, {} failed, final revision {floor}, {KILLS} kills",
        acked.len(),
        load.failures.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn writes_and_compaction_survive_restarts() {
    let mut server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    for value in ["v1", "v2", "v3"] {
        client.put("k", value, None).await.expect("put"); // revs 2..=4
    }
    client.delete("k", None).await.expect("delete"); // rev 5
    client.put("k", "v4", None).await.expect("put"); // rev 6
    client.compact(3, None).await.expect("compact");

    for how in ["SIGTERM", "SIGKILL"] {
        if how == "SIGKILL" {
            server.kill9();
        }
        server.restart();
        let mut client = server.client().await;
        let resp = client.get("k", None).await.expect("get");
        assert_eq!(resp.header().map(|h| h.revision()), Some(6), "after {how}");
        let kv = &resp.kvs()[0];
        assert_eq!(
            (
                kv.value(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version()
            ),
            (b"v4".as_slice(), 6, 6, 1),
            "after {how}"
        );
        let old = client
            .get("k", Some(GetOptions::new().with_revision(4)))
            .await
            .expect("history after compaction point");
        assert_eq!(old.kvs()[0].value(), b"v3", "after {how}");
        assert_status(
            client
                .get("k", Some(GetOptions::new().with_revision(2)))
                .await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
    }
}
