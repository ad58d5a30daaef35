//! The Maintenance service through etcdctl: hashes, status, defragment, leader moves,
//! the NOSPACE alarm, and snapshots restored with `cairn snapshot restore`.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_tests::{Cluster, Server, ServerKind, ServerOpts};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `endpoint status` fields of one line: endpoint, id, version, size, leader, learner...
fn status_fields(line: &str) -> Vec<String> {
    line.split(", ").map(str::to_string).collect()
}

#[test]
fn hashkv_is_equal_on_every_member_and_status_names_one_leader() {
    let cluster = Cluster::start(3);
    for i in 0..20 {
        let key = format!("k{}", i % 7);
        assert_eq!(cluster.etcdctl(&["put", &key, &i.to_string()]).ok(), "OK\n");
    }
    assert_eq!(cluster.etcdctl(&["del", "k3"]).ok(), "1\n");
    // A linearizable read through each member: each has applied every write.
    for m in &cluster.members {
        assert_eq!(m.etcdctl(&["get", "k0"]).ok(), "k0\n14\n");
    }
    let out = cluster.etcdctl(&["endpoint", "hashkv", "--cluster"]);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let hash = lines[0].split(", ").nth(1).expect("a hash").to_string();
    let mut expected: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("{}, {hash}", m.client_url()))
        .collect();
    let mut got: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);

    let out = cluster.etcdctl(&["endpoint", "status", "--cluster"]);
    let rows: Vec<Vec<String>> = out.ok().lines().map(status_fields).collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows.iter().filter(|r| r[4] == "true").count(),
        1,
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r[5] == "false"), "{rows:?}");
}

#[test]
fn defragment_keeps_the_data() {
    let server = Server::start(ServerOpts::new());
    for i in 0..50 {
        let out = server.etcdctl(&["put", &format!("k{}", i % 5), &"v".repeat(1000)]);
        assert_eq!(out.ok(), "OK\n");
    }
    assert_eq!(server.etcdctl(&["put", "last", "1"]).ok(), "OK\n");
    assert_eq!(
        server.etcdctl(&["compact", "51"]).ok(),
        "compacted revision 51\n"
    );
    assert_eq!(
        server.etcdctl(&["defrag"]).ok(),
        format!(
            "Finished defragmenting etcd member[{}]\n",
            server.client_url()
        )
    );
    assert_eq!(server.etcdctl(&["get", "last"]).ok(), "last\n1\n");
    let keys = server.etcdctl(&["get", "k", "--prefix", "--keys-only"]);
    assert_eq!(keys.ok(), "k0\n\nk1\n\nk2\n\nk3\n\nk4\n\n");
    assert_eq!(
        server.etcdctl(&["get", "k0", "--rev", "50"]).fail(),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
}

#[test]
fn move_leader_hands_leadership_to_a_follower() {
    let cluster = Cluster::start(3);
    let rt = runtime();
    let (leader, _) = rt.block_on(cluster.wait_leader(None));
    let follower = (leader + 1) % 3;
    let id_of = |i: usize| {
        let out = cluster.members[i].etcdctl(&["endpoint", "status"]);
        status_fields(out.ok().trim_end())[1].clone()
    };
    let (leader_id, follower_id) = (id_of(leader), id_of(follower));
    assert_eq!(
        cluster.etcdctl(&["move-leader", &follower_id]).ok(),
        format!("Leadership transferred from {leader_id} to {follower_id}\n")
    );
    let out = cluster.members[follower].etcdctl(&["endpoint", "status"]);
    assert_eq!(status_fields(out.ok().trim_end())[4], "true");
    // Only voting members can lead.
    assert_eq!(
        cluster.etcdctl(&["move-leader", "1"]).fail(),
        "Error: etcdserver: bad leader transferee"
    );
    assert_eq!(cluster.etcdctl(&["put", "after", "move"]).ok(), "OK\n");
}

#[test]
fn nospace_alarm_caps_writes_until_space_is_freed_and_it_is_cleared() {
    let server = Server::start(
        ServerOpts::new()
            .arg("--quota-backend-bytes")
            .arg("2000000"),
    );
    let rt = runtime();
    let member_id = rt.block_on(async {
        let mut client = server.client().await;
        let status = client.status().await.expect("status");
        status.header().expect("header").member_id()
    });
    let value = "x".repeat(20_000);
    let mut refused = None;
    for i in 0..1000 {
        let out = server.etcdctl(&["put", &format!("k{}", i % 3), &value]);
        if !out.success() {
            refused = Some((i, out.fail().to_string()));
            break;
        }
    }
    let (writes, error) = refused.expect("the quota was never reached");
    eprintln!("NOSPACE after {writes} puts of 20 kB");
    assert_eq!(error, "Error: etcdserver: mvcc: database space exceeded");
    // etcdctl prints the alarm in protobuf's compact text form, trailing space included.
    let alarm = format!("memberID:{member_id} alarm:NOSPACE \n");
    assert_eq!(server.etcdctl(&["alarm", "list"]).ok(), alarm);
    // Reads and deletes pass; writes do not, even small ones.
    assert_eq!(server.etcdctl(&["get", "k0", "--keys-only"]).ok(), "k0\n\n");
    assert_eq!(server.etcdctl(&["del", "k1"]).ok(), "1\n");
    assert_eq!(
        server.etcdctl(&["put", "small", "1"]).fail(),
        "Error: etcdserver: mvcc: database space exceeded"
    );
    // Free the space, then disarm.
    let revision = rt.block_on(async {
        let mut client = server.client().await;
        let resp = client.get("k0", None).await.expect("get");
        resp.header().expect("header").revision()
    });
    assert_eq!(
        server.etcdctl(&["compact", &revision.to_string()]).ok(),
        format!("compacted revision {revision}\n")
    );
    server.etcdctl(&["defrag"]).ok();
    match server.kind() {
        // etcd waits for an operator.
        ServerKind::Etcd => assert_eq!(server.etcdctl(&["alarm", "disarm"]).ok(), alarm),
        // cairn clears the alarm by itself once the backend is back under the quota.
        ServerKind::Cairn => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while server.etcdctl(&["alarm", "list"]).ok() != "" {
                assert!(
                    std::time::Instant::now() < deadline,
                    "NOSPACE was not cleared"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let log = std::fs::read_to_string(server.log_path()).unwrap();
            assert!(log.contains("NOSPACE alarm cleared"), "no log line");
        }
    }
    assert_eq!(server.etcdctl(&["alarm", "list"]).ok(), "");
    assert_eq!(server.etcdctl(&["put", "small", "1"]).ok(), "OK\n");
    assert_eq!(server.etcdctl(&["get", "small"]).ok(), "small\n1\n");
}

fn cairn_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("CAIRN_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("cairn")
}

/// `cairn snapshot restore <file>` into `server`'s (stopped) data dir, as the member
/// `server` is, in a cluster of `initial_cluster` with `token`.
fn restore_into(server: &Server, file: &Path, initial_cluster: &str, token: &str) {
    let data_dir = server.data_dir();
    std::fs::remove_dir_all(&data_dir).expect("remove the old data dir");
    let out = Command::new(cairn_binary())
        .arg("snapshot")
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--name", server.name()])
        .args(["--initial-cluster", initial_cluster])
        .args(["--initial-cluster-token", token])
        .args(["--initial-advertise-peer-urls", &server.peer_url()])
        .output()
        .expect("run cairn snapshot restore");
    assert!(out.status.success(), "restore failed: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "restored snapshot {} into {}\n",
            file.display(),
            data_dir.display()
        )
    );
}

/// Writes keys with some history into `server` and saves a snapshot of it.
fn snapshot_of_writes(server: &Server, dir: &Path) -> PathBuf {
    for i in 0..10 {
        let out = server.etcdctl(&["put", &format!("k{}", i % 4), &i.to_string()]);
        assert_eq!(out.ok(), "OK\n");
    }
    let file = dir.join("backup.db");
    let file_arg = file.to_str().expect("utf-8 path");
    assert_eq!(
        server.etcdctl(&["snapshot", "save", file_arg]).ok(),
        format!("Snapshot saved at {file_arg}\n")
    );
    file
}

/// What the snapshot of [`snapshot_of_writes`] holds: keys with their revisions.
const RESTORED_K3: &str = r#""kvs":[{"key":"azM=","create_revision":5,"mod_revision":9,"version":2,"value":"Nw=="}],"count":1}"#;

#[test]
fn a_snapshot_restores_into_a_new_single_member() {
    let source = Server::start(ServerOpts::new());
    if source.kind() == ServerKind::Etcd {
        return; // `cairn snapshot restore` reads cairn's snapshots only.
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = snapshot_of_writes(&source, dir.path());
    drop(source);

    let mut target = Server::start(ServerOpts::new());
    target.terminate();
    let spec = format!("{}={}", target.name(), target.peer_url());
    restore_into(&target, &file, &spec, "restored");
    target.restart();
    let got = target.etcdctl(&["get", "k3", "-w", "json"]);
    assert!(got.ok().contains(RESTORED_K3), "{}", got.ok());
    assert_eq!(
        target.etcdctl(&["get", "k", "--prefix"]).ok(),
        "k0\n8\nk1\n9\nk2\n6\nk3\n7\n"
    );
    let put = target.etcdctl(&["put", "k0", "new", "-w", "json"]);
    assert!(put.ok().contains(r#""revision":12"#), "{}", put.ok());
    // A data dir in use is never overwritten.
    let out = Command::new(cairn_binary())
        .args(["snapshot", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(target.data_dir())
        .output()
        .expect("run cairn snapshot restore");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("already exists and is not empty; restore a snapshot into a new data dir"),
        "{out:?}"
    );
}

#[test]
fn a_snapshot_restores_into_a_new_three_member_cluster() {
    let source = Server::start(ServerOpts::new());
    if source.kind() == ServerKind::Etcd {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = snapshot_of_writes(&source, dir.path());
    drop(source);

    let mut cluster = Cluster::start(3);
    let spec = cluster
        .members
        .iter()
        .map(|m| format!("{}={}", m.name(), m.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    let token = cluster.token().to_string();
    for m in &mut cluster.members {
        m.terminate();
    }
    for m in &cluster.members {
        restore_into(m, &file, &spec, &token);
    }
    // Each member waits for a quorum: start them together.
    std::thread::scope(|s| {
        for m in &mut cluster.members {
            s.spawn(move || m.restart());
        }
    });
    for m in &cluster.members {
        let got = m.etcdctl(&["get", "k3", "-w", "json"]);
        assert!(got.ok().contains(RESTORED_K3), "{}", got.ok());
    }
    assert_eq!(cluster.etcdctl(&["put", "new", "1"]).ok(), "OK\n");
    let out = cluster.etcdctl(&["member", "list"]);
    assert_eq!(out.ok().lines().count(), 3, "{}", out.ok());
}

#[test]
fn periodic_auto_compaction_keeps_a_window_of_history() {
    let server = Server::start(
        ServerOpts::new()
            .arg("--auto-compaction-mode")
            .arg("periodic")
            .arg("--auto-compaction-retention")
            .arg("2s"),
    );
    runtime().block_on(async {
        let mut client = server.client().await;
        let first = client.put("ac", "0", None).await.unwrap();
        let first_rev = first.header().unwrap().revision();
        // Keep writing; within a few windows the first revision is compacted away.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut i = 0;
        loop {
            i += 1;
            client.put("ac", i.to_string(), None).await.unwrap();
            let old = client
                .get(
                    "ac",
                    Some(cairn_tests::etcd_client::GetOptions::new().with_revision(first_rev)),
                )
                .await;
            if let Err(e) = old {
                let status = cairn_tests::grpc_status(&e);
                assert_eq!(
                    (status.code(), status.message()),
                    (
                        cairn_tests::tonic::Code::OutOfRange,
                        "etcdserver: mvcc: required revision has been compacted"
                    )
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "revision {first_rev} still readable after 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // The newest value is still there.
        let now = client.get("ac", None).await.unwrap();
        assert_eq!(now.kvs()[0].value_str().unwrap(), i.to_string());
    });
}

#[test]
fn bad_auto_compaction_flags_are_refused() {
    if cairn_tests::server_kind() == ServerKind::Etcd {
        // etcd 3.4 reads "1h" as 3.6e12 revisions in revision mode; cairn refuses it.
        return;
    }
    let mut server = Server::launch(
        ServerOpts::new()
            .arg("--auto-compaction-mode")
            .arg("revision")
            .arg("--auto-compaction-retention")
            .arg("1h"),
    );
    let status = server.wait_exit(std::time::Duration::from_secs(20));
    assert!(!status.success());
    let log = server.log_tail(50);
    assert!(
        log.contains(r#"--auto-compaction-retention: invalid value "1h" for mode "revision""#),
        "{log}"
    );
}
