//! A disk that fails and a raft thread that cannot keep up. cairn-only (fail points, and
//! a file system the test mounts).
//!
//! - The WAL or RocksDB returns ENOSPC/EIO: the member stops with a clear message and
//!   acknowledges nothing it could not make durable; restarted once the disk works, it
//!   rejoins with every acknowledged write.
//! - A real full disk (a small tmpfs as the data dir, when the test may mount one): the
//!   same, and it starts again once space is freed.
//! - Proposals flood a member whose raft thread is held up: its memory stays bounded and
//!   clients get etcd's `etcdserver: too many requests` instead of an ever longer queue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::history::{assert_each_value_once, member_history};
use cairn_tests::{http_request, runtime, server_kind, Cluster, Server, ServerKind, ServerOpts};

static SERIAL: Mutex<()> = Mutex::new(());

fn cairn_only() -> bool {
    if server_kind() == ServerKind::Etcd {
        eprintln!("cairn-only: fail points");
        return false;
    }
    true
}

fn set_failpoint(server: &Server, name: &str, actions: &str) {
    let resp = http_request(
        &server.client_addr(),
        "PUT",
        &format!("/debug/failpoints/{name}"),
        actions,
    )
    .expect("configure fail point");
    assert_eq!(resp.status, 200, "{}", resp.body);
}

/// Writers putting unique values through the members in `endpoints`; returns the stop
/// flag, the acknowledged (key, value, revision) and the tasks.
type Acks = Arc<Mutex<Vec<(String, String, i64)>>>;

fn writers(
    rt: &tokio::runtime::Runtime,
    endpoints: Vec<String>,
    n: usize,
) -> (Arc<AtomicBool>, Acks, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let tasks = (0..n)
        .map(|w| {
            let (stop, acks, next, endpoints) =
                (stop.clone(), acks.clone(), next.clone(), endpoints.clone());
            rt.spawn(async move {
                let mut member = w % endpoints.len();
                while !stop.load(Ordering::SeqCst) {
                    let options = etcd_client::ConnectOptions::new()
                        .with_connect_timeout(Duration::from_millis(500))
                        .with_timeout(Duration::from_secs(3));
                    let Ok(mut c) =
                        etcd_client::Client::connect([&endpoints[member]], Some(options)).await
                    else {
                        member = (member + 1) % endpoints.len();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    while !stop.load(Ordering::SeqCst) {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        let (key, value) = (format!("disk/k{}", n % 8), format!("v{n}"));
                        match c.put(key.as_str(), value.as_str(), None).await {
                            Ok(r) => acks.lock().unwrap().push((
                                key,
                                value,
                                r.header().unwrap().revision(),
                            )),
                            Err(_) => break,
                        }
                    }
                    member = (member + 1) % endpoints.len();
                }
            })
        })
        .collect();
    (stop, acks, tasks)
}

/// The members hold the same history, each value once, with every acknowledged write.
fn assert_converged(rt: &tokio::runtime::Runtime, cluster: &Cluster, acks: &Acks) {
    rt.block_on(async {
        let mut c = cluster.members[0].client().await;
        let rev = c
            .get("disk/", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let mut histories = Vec::new();
        for m in &cluster.members {
            histories.push(member_history(&m.client_url(), 1, rev).await.unwrap());
        }
        for h in &histories[1..] {
            assert_eq!(h, &histories[0], "members' histories differ");
        }
        assert_each_value_once(&histories[0]);
        let by_rev: std::collections::HashMap<i64, _> =
            histories[0].iter().map(|c| (c.revision, c)).collect();
        for (key, value, r) in acks.lock().unwrap().iter() {
            let c = by_rev.get(r).expect("acknowledged write in the history");
            assert_eq!(
                (c.key.as_slice(), c.value.as_deref()),
                (key.as_bytes(), Some(value.as_bytes()))
            );
        }
    });
}

/// Member 1's disk fails at fail point `name` with `errno` while clients write.
fn disk_error_stops_the_member_and_it_recovers(name: &str, errno: &str, message: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start_with(3, |o| o.env("CAIRN_FAILPOINTS_HTTP", "1"));
    let rt = runtime();
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    let (stop, acks, tasks) = writers(&rt, endpoints, 6);
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "no writes");
        std::thread::sleep(Duration::from_millis(20));
    }
    set_failpoint(&cluster.members[1], name, &format!("return({errno})"));
    // A write through the failing member is not acknowledged. (It may still be applied:
    // the other members may have committed it before this one failed — an unknown
    // outcome for the client, as etcd's errors mean.)
    let refused = rt.block_on(async {
        let mut c = cluster.members[1].client().await;
        c.put("disk/after", "never", None).await
    });
    assert!(refused.is_err(), "{refused:?}");
    let status = cluster.members[1].wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{status}");
    let log = cluster.members[1].log_tail(400);
    assert!(
        log.contains(message),
        "the member's last words do not say {message:?}:\n{log}"
    );
    // The disk works again: the member restarts and catches up.
    let before = acks.lock().unwrap().len();
    cluster.members[1].respawn();
    cluster.members[1].wait_ready();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.lock().unwrap().len() < before + 100 {
        assert!(Instant::now() < deadline, "no writes after the restart");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    assert_converged(&rt, &cluster, &acks);
}

#[test]
fn a_wal_that_cannot_write_stops_the_member_until_the_disk_works() {
    if cairn_only() {
        disk_error_stops_the_member_and_it_recovers(
            "wal::append",
            "ENOSPC",
            "No space left on device",
        );
    }
}

#[test]
fn a_backend_that_cannot_write_stops_the_member_until_the_disk_works() {
    if cairn_only() {
        disk_error_stops_the_member_and_it_recovers("backend::write", "EIO", "injected EIO");
    }
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(megabytes: u64) -> Result<SmallFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(SmallFs { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_stops_the_member_and_freeing_space_brings_it_back() {
    if !cairn_only() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fs = match SmallFs::mount(96) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped: cannot mount a small tmpfs here ({e}); needs root");
            return;
        }
    };
    // Part of the space is a file the test frees once the disk is full.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 24 << 20]).unwrap();
    let data_dir = fs.path().join("data");
    let mut server = Server::start(ServerOpts::new().data_dir(&data_dir));
    let rt = runtime();
    let value = "x".repeat(256 * 1024);
    let mut acked = Vec::new();
    let stopped = rt.block_on(async {
        let mut c = server.client().await;
        for i in 0..2_000 {
            match c.put(format!("full/{i:04}"), value.as_str(), None).await {
                Ok(_) => acked.push(i),
                Err(e) => return Some(e.to_string()),
            }
        }
        None
    });
    let why = stopped.expect("the disk never filled up");
    eprintln!("first refused write: {why}; {} acknowledged", acked.len());
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{status}");
    let log = server.log_tail(400);
    assert!(log.contains("No space left on device"), "{log}");
    std::fs::remove_file(&filler).unwrap();
    server.respawn();
    server.wait_ready();
    rt.block_on(async {
        let mut c = server.client().await;
        for i in &acked {
            let got = c.get(format!("full/{i:04}"), None).await.unwrap();
            assert_eq!(got.kvs().len(), 1, "acknowledged full/{i:04} lost");
            assert_eq!(got.kvs()[0].value().len(), value.len());
        }
        c.put("full/after", "ok", None)
            .await
            .expect("writes work again");
    });
    drop(server);
}

#[test]
fn a_flood_while_the_raft_thread_is_held_gets_too_many_requests_in_bounded_memory() {
    if !cairn_only() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(ServerOpts::new().env("CAIRN_FAILPOINTS_HTTP", "1"));
    let rt = runtime();
    let baseline = server.rss_bytes().unwrap();
    set_failpoint(&server, "raft::advance", "pause");
    let value = "f".repeat(1024 * 1024);
    let (errors, _, peak) = server.rss_during(|| {
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let tasks: Vec<_> = (0..32)
            .map(|t| {
                let (endpoint, errors, value) =
                    (server.client_url(), errors.clone(), value.clone());
                rt.spawn(async move {
                    let options =
                        etcd_client::ConnectOptions::new().with_timeout(Duration::from_millis(300));
                    let mut c = etcd_client::Client::connect([endpoint], Some(options))
                        .await
                        .unwrap();
                    let until = Instant::now() + Duration::from_secs(6);
                    let mut i = 0;
                    while Instant::now() < until {
                        i += 1;
                        if let Err(e) = c.put(format!("flood/{t}/{i}"), value.as_str(), None).await
                        {
                            errors.lock().unwrap().push(e.to_string());
                        }
                    }
                })
            })
            .collect();
        rt.block_on(async {
            for t in tasks {
                t.await.unwrap();
            }
        });
        let errors = errors.lock().unwrap().clone();
        errors
    });
    let too_many = errors
        .iter()
        .filter(|e| e.contains("etcdserver: too many requests"))
        .count();
    eprintln!(
        "{} failed puts, {too_many} with 'too many requests'; RSS {} MiB before, peak {} MiB",
        errors.len(),
        baseline >> 20,
        peak >> 20
    );
    assert!(
        too_many > 0,
        "no 'too many requests' among {:?}",
        &errors[..errors.len().min(5)]
    );
    // 64 MiB of queued proposals at most, plus the requests in flight and the runtime.
    assert!(
        peak < baseline + (320 << 20),
        "RSS grew from {} MiB to {} MiB",
        baseline >> 20,
        peak >> 20
    );
    // Released, the member serves again.
    set_failpoint(&server, "raft::advance", "off");
    rt.block_on(async {
        let mut c = server.client().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.put("flood/after", "ok", None).await {
                Ok(_) => break,
                Err(e) => assert!(Instant::now() < deadline, "still failing: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
