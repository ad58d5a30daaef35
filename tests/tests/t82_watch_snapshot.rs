//! A watcher on a member that is cut off long enough to need a snapshot: after the
//! partition heals and the member catches up by snapshot, the watcher has seen every
//! revision exactly once and in order — nothing repeated, nothing skipped, never going
//! backwards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::etcd_client::{self, EventType};
use cairn_tests::{server_kind, watch_all_from, Cluster, ServerKind};

const SNAPSHOT_COUNT: usize = 100;
/// Keys written on the majority while the member is cut off.
const WRITES: usize = 400;
/// Keys written before the partition.
const BEFORE: usize = 5;
const DEADLINE: Duration = Duration::from_secs(60);

/// What the watcher saw, in arrival order: (revision, key, value), plus any stream ends.
#[derive(Default)]
struct Watched {
    events: Vec<(i64, String, String)>,
    restarts: Vec<String>,
}

#[test]
fn watcher_on_a_partitioned_member_sees_every_revision_once_after_snapshot_catch_up() {
    // etcd 3.4 (the reference) has no --experimental-snapshot-catchup-entries (it keeps
    // 5000 entries), so there the member catches up from the log instead.
    let cluster = Cluster::start_with_proxies(3, |o| {
        let o = o.arg("--snapshot-count").arg(&SNAPSHOT_COUNT.to_string());
        match server_kind() {
            ServerKind::Cairn => o.arg("--experimental-snapshot-catchup-entries").arg("10"),
            ServerKind::Etcd => o,
        }
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (leader, _) = rt.block_on(cluster.wait_leader(None));
    let cut = (leader + 1) % 3;
    let majority: Vec<String> = (0..3)
        .filter(|&i| i != cut)
        .map(|i| cluster.members[i].client_url())
        .collect();
    let cut_endpoint = cluster.members[cut].client_url();

    // The writes before the partition, through the majority.
    let mut expected: BTreeMap<i64, (String, String)> = BTreeMap::new();
    let mut writer = rt.block_on(async {
        etcd_client::Client::connect(&majority, None)
            .await
            .expect("connect")
    });
    let mut put = |expected: &mut BTreeMap<i64, (String, String)>, key: String, value: String| {
        let rev = rt.block_on(async {
            writer
                .put(key.as_str(), value.as_str(), None)
                .await
                .expect("put")
                .header()
                .expect("header")
                .revision()
        });
        assert!(
            expected.insert(rev, (key, value)).is_none(),
            "revision {rev} twice"
        );
    };
    for i in 0..BEFORE {
        put(&mut expected, format!("before{i}"), format!("b{i}"));
    }

    // The watcher, on the member to be cut off, from revision 1. It stays on that member:
    // if its stream ends it watches again there from the revision after the last it saw.
    let watched: Arc<Mutex<Watched>> = Arc::default();
    {
        let watched = Arc::clone(&watched);
        let endpoint = cut_endpoint.clone();
        rt.spawn(async move {
            let mut next_rev = 1;
            loop {
                let stream = watch_all_from(&endpoint, next_rev);
                let why = match stream.await {
                    Err(e) => e,
                    Ok(mut stream) => loop {
                        match stream.message().await {
                            Ok(Some(resp)) if resp.canceled() => {
                                break format!("canceled: {}", resp.cancel_reason())
                            }
                            Ok(Some(resp)) => {
                                let mut w = watched.lock().unwrap();
                                for ev in resp.events() {
                                    let kv = ev.kv().expect("event kv");
                                    assert_eq!(ev.event_type(), EventType::Put);
                                    let rev = kv.mod_revision();
                                    w.events.push((
                                        rev,
                                        String::from_utf8_lossy(kv.key()).into_owned(),
                                        String::from_utf8_lossy(kv.value()).into_owned(),
                                    ));
                                    next_rev = next_rev.max(rev + 1);
                                }
                            }
                            Ok(None) => break "stream ended".to_string(),
                            Err(e) => break e.to_string(),
                        }
                    },
                };
                watched.lock().unwrap().restarts.push(why);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let last_before = *expected.keys().last().expect("writes before");
    wait_for(&watched, last_before, "the writes before the partition");

    // Cut the member off and write on the majority until its log is long compacted.
    cluster.isolate(cut);
    eprintln!("isolated m{cut} (leader m{leader})");
    for i in 0..WRITES {
        put(&mut expected, format!("key{i:04}"), format!("value{i}"));
    }
    let cut_view = rt.block_on(cluster.view(cut));
    eprintln!("cut member while isolated: {cut_view:?}");
    // Only for cairn, whose peer streams are dialed by the sender: etcd's rafthttp
    // streams are dialed by the receiver, so the proxy cut does not stop the leader's
    // appends to the member there (see `cairn_tests::Proxy`).
    if cluster.members[cut].kind() == ServerKind::Cairn {
        let w = watched.lock().unwrap();
        assert!(
            w.events.len() <= BEFORE,
            "the cut-off member's watcher saw {} events during the partition",
            w.events.len()
        );
    }

    // Heal: the member catches up (by snapshot) and the watcher gets the rest.
    cluster.heal(cut);
    let healed = Instant::now();
    let final_rev = *expected.keys().last().expect("writes");
    wait_for(&watched, final_rev, "every write after the heal");
    eprintln!(
        "watcher on m{cut} reached revision {final_rev} {:?} after the heal",
        healed.elapsed()
    );

    let w = watched.lock().unwrap();
    let revs: Vec<i64> = w.events.iter().map(|e| e.0).collect();
    for pair in revs.windows(2) {
        assert!(
            pair[1] > pair[0],
            "watcher revisions went backwards or repeated: {} then {}",
            pair[0],
            pair[1]
        );
    }
    let got: BTreeMap<i64, (String, String)> = w
        .events
        .iter()
        .map(|(r, k, v)| (*r, (k.clone(), v.clone())))
        .collect();
    assert_eq!(got.len(), expected.len(), "revisions watched vs written");
    assert_eq!(got, expected, "events watched vs writes acknowledged");
    eprintln!(
        "watched {} revisions {}..={final_rev}; stream restarts: {:?}",
        revs.len(),
        revs[0],
        w.restarts
    );
    if cluster.members[cut].kind() == ServerKind::Cairn {
        let log = std::fs::read_to_string(cluster.members[cut].log_path()).expect("log");
        assert!(
            log.contains("installed a snapshot from the leader"),
            "m{cut} did not install a snapshot"
        );
    }
}

/// Waits until the watcher has seen revision `rev`.
fn wait_for(watched: &Mutex<Watched>, rev: i64, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        {
            let w = watched.lock().unwrap();
            if w.events.iter().any(|e| e.0 >= rev) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "watcher did not see revision {rev} ({what}) within {DEADLINE:?}; last {:?}, stream restarts {:?}",
                w.events.last(),
                w.restarts
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
