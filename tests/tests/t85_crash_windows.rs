//! Crashes where signals cannot reach: a member built with fail points (cairn's
//! `failpoints` feature, on in test builds) aborts at one crash window while clients
//! write, is restarted without it, and must rejoin with every acknowledged write, nothing
//! applied twice, and the same history as the others. cairn-only (fail points).
//!
//! The windows: after the WAL write and before the apply; between two applies of one
//! batch; after a snapshot mark and before the log is released; between two chunks of a
//! compaction; during a snapshot install (before the store is replaced, and after it but
//! before the log records it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::history::{assert_each_value_once, member_history};
use cairn_tests::{runtime, server_kind, Cluster, ServerKind};

/// One cluster at a time: each case runs three members.
static SERIAL: Mutex<()> = Mutex::new(());

/// The member that crashes.
const VICTIM: usize = 1;

/// An acknowledged write: key, value, revision.
type Ack = (String, String, i64);

struct Writers {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `n` clients putting unique values on 8 keys, each through its own member (they move
/// on when a request fails), until stopped.
fn start_writers(rt: &tokio::runtime::Runtime, endpoints: &[String], n: usize) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let tasks = (0..n)
        .map(|w| {
            let endpoints = endpoints.to_vec();
            let (stop, acks, next) = (stop.clone(), acks.clone(), next.clone());
            rt.spawn(async move {
                let mut member = w % endpoints.len();
                let mut client = None;
                while !stop.load(Ordering::SeqCst) {
                    if client.is_none() {
                        let options = etcd_client::ConnectOptions::new()
                            .with_connect_timeout(Duration::from_millis(500))
                            .with_timeout(Duration::from_secs(3));
                        client = etcd_client::Client::connect([&endpoints[member]], Some(options))
                            .await
                            .ok();
                        if client.is_none() {
                            member = (member + 1) % endpoints.len();
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                    let c = client.as_mut().expect("connected");
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let (key, value) = (format!("cw/k{}", n % 8), format!("v{n}-w{w}"));
                    match c.put(key.as_str(), value.as_str(), None).await {
                        Ok(resp) => {
                            let rev = resp.header().expect("header").revision();
                            acks.lock().unwrap().push((key, value, rev));
                        }
                        Err(_) => {
                            client = None;
                            member = (member + 1) % endpoints.len();
                        }
                    }
                }
            })
        })
        .collect();
    Writers { stop, acks, tasks }
}

impl Writers {
    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    fn finish(self, rt: &tokio::runtime::Runtime) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        rt.block_on(async {
            for t in self.tasks {
                let _ = t.await;
            }
        });
        let acks = self.acks.lock().unwrap().clone();
        acks
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Restarts the victim with fail point `spec` configured.
fn arm(cluster: &mut Cluster, spec: &str) {
    let victim = &mut cluster.members[VICTIM];
    victim.terminate();
    victim.set_env("FAILPOINTS", Some(spec));
    victim.respawn();
}

/// Waits for the victim to abort at `failpoint`, then starts it again without it.
fn expect_crash_and_restart(cluster: &mut Cluster, failpoint: &str) {
    let victim = &mut cluster.members[VICTIM];
    let status = victim.wait_exit(Duration::from_secs(60));
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "exit status {status}");
    let log = victim.log_tail(400);
    assert!(
        log.contains(&format!("fail point {failpoint} reached")),
        "no crash at {failpoint} in the log"
    );
    victim.set_env("FAILPOINTS", None);
    victim.respawn();
    victim.wait_ready();
}

/// Every member ends with the same history from `from` on, each value once, holding
/// every acknowledged write at its revision; the stores hash the same.
fn assert_converged(rt: &tokio::runtime::Runtime, cluster: &Cluster, acks: &[Ack], from: i64) {
    let (final_rev, hashes) = rt.block_on(async {
        let mut c = cluster.members[0].client().await;
        // A linearizable read: every member's final revision is at least this one.
        let rev = c
            .get("cw/", None)
            .await
            .expect("final read")
            .header()
            .unwrap()
            .revision();
        let mut hashes = Vec::new();
        for m in &cluster.members {
            let mut client = m.client().await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let st = client.status().await.expect("status");
                let applied_rev = st.header().unwrap().revision();
                if applied_rev >= rev {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} stuck at revision {applied_rev}",
                    m.name()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let h = client.hash_kv(rev).await.expect("hashkv");
            hashes.push(h.hash());
        }
        (rev, hashes)
    });
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "members' HashKV at revision {final_rev} differ: {hashes:?}"
    );
    let histories: Vec<_> = rt.block_on(async {
        let mut out = Vec::new();
        for m in &cluster.members {
            out.push(
                member_history(&m.client_url(), from, final_rev)
                    .await
                    .unwrap_or_else(|e| panic!("history of {}: {e}", m.name())),
            );
        }
        out
    });
    for (i, h) in histories.iter().enumerate().skip(1) {
        assert_eq!(h.len(), histories[0].len(), "member {i} history length");
        for (a, b) in histories[0].iter().zip(h) {
            assert_eq!(a, b, "member {i} differs from member 0");
        }
    }
    assert_each_value_once(&histories[0]);
    let by_rev: std::collections::HashMap<i64, &cairn_tests::history::Change> =
        histories[0].iter().map(|c| (c.revision, c)).collect();
    for (key, value, rev) in acks.iter().filter(|a| a.2 >= from) {
        let c = by_rev
            .get(rev)
            .unwrap_or_else(|| panic!("acknowledged {key}={value} at {rev} not in the history"));
        assert_eq!(
            (c.key.as_slice(), c.value.as_deref()),
            (key.as_bytes(), Some(value.as_bytes())),
            "revision {rev}"
        );
    }
    eprintln!(
        "converged: {} acknowledged writes, final revision {final_rev}, {} changes compared on {} members",
        acks.len(),
        histories[0].len(),
        histories.len()
    );
}

/// The common shape: arm the victim, write until it crashes and a bit after, restart
/// it, check convergence.
fn crash_while_writing(failpoint: &str, spec: &str, args: &[&str]) {
    if server_kind() == ServerKind::Etcd {
        eprintln!("cairn-only: fail points");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start_with(3, |mut o| {
        for a in args {
            o = o.arg(a);
        }
        o
    });
    let rt = runtime();
    arm(&mut cluster, spec);
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    let writers = start_writers(&rt, &endpoints, 6);
    expect_crash_and_restart(&mut cluster, failpoint);
    let before = writers.acked();
    wait_until(
        "more writes after the restart",
        Duration::from_secs(30),
        || writers.acked() > before + 50,
    );
    let acks = writers.finish(&rt);
    assert_converged(&rt, &cluster, &acks, 1);
}

#[test]
fn crash_after_the_wal_write_before_the_apply() {
    crash_while_writing(
        "raft::after_wal_write",
        "raft::after_wal_write=100*off->return",
        &[],
    );
}

#[test]
fn crash_between_two_applies_of_one_batch() {
    crash_while_writing(
        "raft::between_applies",
        "raft::between_applies=150*off->return",
        &[],
    );
}

#[test]
fn crash_after_a_snapshot_mark_before_the_log_is_released() {
    crash_while_writing(
        "raft::after_snapshot_mark",
        "raft::after_snapshot_mark=1*off->return",
        &["--snapshot-count", "100"],
    );
}

#[test]
fn crash_between_two_chunks_of_a_compaction() {
    if server_kind() == ServerKind::Etcd {
        eprintln!("cairn-only: fail points");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(3);
    let rt = runtime();
    // More than one chunk (10,000 revisions) to remove.
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    let writers = start_writers(&rt, &endpoints, 8);
    wait_until("12,000 writes", Duration::from_secs(120), || {
        writers.acked() >= 12_000
    });
    let acks = writers.finish(&rt);
    arm(&mut cluster, "mvcc::compact_chunk=return");
    cluster.members[VICTIM].wait_ready();
    let compact_at = rt.block_on(async {
        let mut c = cluster.members[0].client().await;
        let rev = c
            .get("cw/", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        c.compact(rev, None).await.expect("compact");
        rev
    });
    expect_crash_and_restart(&mut cluster, "mvcc::compact_chunk");
    // The restarted member finished the compaction it was in: old revisions are gone
    // there too.
    rt.block_on(async {
        let mut c = cluster.members[VICTIM].client().await;
        let old = c
            .get(
                "cw/k0",
                Some(
                    etcd_client::GetOptions::new()
                        .with_revision(compact_at - 1)
                        .with_serializable(),
                ),
            )
            .await;
        assert!(
            format!("{old:?}").contains("required revision has been compacted"),
            "{old:?}"
        );
    });
    let writers = start_writers(&rt, &endpoints, 4);
    wait_until(
        "writes after the compaction",
        Duration::from_secs(30),
        || writers.acked() > 100,
    );
    let mut later = writers.finish(&rt);
    later.extend(acks);
    assert_converged(&rt, &cluster, &later, compact_at);
}

/// The victim falls so far behind that it needs the leader's snapshot, and crashes while
/// installing it.
fn crash_during_snapshot_install(failpoint: &str) {
    if server_kind() == ServerKind::Etcd {
        eprintln!("cairn-only: fail points");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start_with(3, |o| {
        o.arg("--snapshot-count")
            .arg("50")
            .arg("--experimental-snapshot-catchup-entries")
            .arg("10")
    });
    let rt = runtime();
    cluster.members[VICTIM].terminate();
    let endpoints: Vec<String> = [0, 2]
        .iter()
        .map(|i| cluster.members[*i].client_url())
        .collect();
    let writers = start_writers(&rt, &endpoints, 4);
    wait_until(
        "300 writes while the victim is down",
        Duration::from_secs(60),
        || writers.acked() >= 300,
    );
    cluster.members[VICTIM].set_env("FAILPOINTS", Some(&format!("{failpoint}=return")));
    cluster.members[VICTIM].respawn();
    expect_crash_and_restart(&mut cluster, failpoint);
    let before = writers.acked();
    wait_until("writes after the restart", Duration::from_secs(30), || {
        writers.acked() > before + 50
    });
    let acks = writers.finish(&rt);
    let log = cluster.members[VICTIM].log_tail(2000);
    assert!(
        log.contains("installed a snapshot from the leader"),
        "no snapshot installed"
    );
    // History before the snapshot is not on the victim (the leader's store was copied,
    // history included), so compare everything.
    assert_converged(&rt, &cluster, &acks, 1);
}

#[test]
fn crash_during_a_snapshot_install_before_the_store_is_replaced() {
    crash_during_snapshot_install("apply::before_restore_write");
}

#[test]
fn crash_during_a_snapshot_install_before_the_log_records_it() {
    crash_during_snapshot_install("raft::after_snapshot_restore");
}
