//! Snapshots in etcd's own format, both ways: a snapshot saved from cairn is read by
//! etcd's tools (`etcdctl snapshot status`, `etcdctl snapshot restore`) and a real etcd
//! started on the restored dir serves the same keys, revisions, leases and users; a
//! snapshot saved from a real etcd restores into cairn (`cairn snapshot restore`) with
//! the same content. Both directions need the real etcd (Debian's 3.4.23).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::{etcdctl, free_port, server_kind, Server, ServerKind, ServerOpts};

/// A real etcd process on a data dir of the test's, stopped by pid when dropped.
struct Etcd {
    child: Child,
    endpoint: String,
}

impl Etcd {
    /// Starts `/usr/bin/etcd` on `data_dir` as member `name` and waits until it answers.
    fn start(data_dir: &Path, name: &str, peer_port: u16) -> Etcd {
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(data_dir.with_extension("log")).unwrap();
        let child = Command::new(std::env::var("ETCD_BIN").unwrap_or("/usr/bin/etcd".into()))
            .args(["--name", name, "--data-dir"])
            .arg(data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let etcd = Etcd {
            child,
            endpoint: client,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !etcd.ctl(&["endpoint", "health"]).success() {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    fn ctl(&self, args: &[&str]) -> cairn_tests::CtlOutput {
        etcdctl(std::slice::from_ref(&self.endpoint), args)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// History, a deletion, a lease with a key, a compaction and a user.
fn write_content(ctl: &dyn Fn(&[&str]) -> cairn_tests::CtlOutput) {
    for i in 0..30 {
        assert_eq!(
            ctl(&["put", &format!("k{}", i % 7), &format!("v{i}")]).ok(),
            "OK\n"
        );
    }
    assert_eq!(ctl(&["del", "k6"]).ok(), "1\n");
    let granted = ctl(&["lease", "grant", "600"]).ok().to_string();
    let lease = granted.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(ctl(&["put", "leased", "x", "--lease", &lease]).ok(), "OK\n");
    assert_eq!(ctl(&["compact", "10"]).ok(), "compacted revision 10\n");
    assert_eq!(
        ctl(&["user", "add", "alice", "--new-user-password=pw"]).ok(),
        "User alice created\n"
    );
}

/// What a client sees of the content: every key-value (revisions included), the
/// leases' count, the users, and the compaction.
fn content(
    ctl: &dyn Fn(&[&str]) -> cairn_tests::CtlOutput,
) -> (serde_json::Value, String, String, String) {
    let all: serde_json::Value =
        serde_json::from_str(ctl(&["get", "", "--from-key", "-w", "json"]).ok()).unwrap();
    let compacted = ctl(&["get", "k1", "--rev", "9"]).fail().to_string();
    (
        all["kvs"].clone(),
        ctl(&["lease", "list"])
            .ok()
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        ctl(&["user", "list"]).ok().to_string(),
        compacted,
    )
}

fn snapshot_save(ctl: &dyn Fn(&[&str]) -> cairn_tests::CtlOutput, file: &Path) {
    let arg = file.to_str().unwrap();
    assert_eq!(
        ctl(&["snapshot", "save", arg]).ok(),
        format!("Snapshot saved at {arg}\n")
    );
}

#[test]
fn a_snapshot_of_cairn_is_read_by_etcds_tools_and_a_real_etcd_starts_from_it() {
    let source = Server::start(ServerOpts::new());
    let ctl = |args: &[&str]| source.etcdctl(args);
    write_content(&ctl);
    let expected = content(&ctl);
    let revision = source
        .etcdctl(&["get", "k0", "-w", "json"])
        .ok()
        .to_string();
    let revision: serde_json::Value = serde_json::from_str(&revision).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cairn.db");
    snapshot_save(&ctl, &file);

    // etcd's own reader: integrity check, revision, keys.
    let status = etcdctl(
        &[],
        &["snapshot", "status", file.to_str().unwrap(), "-w", "json"],
    );
    let status: serde_json::Value = serde_json::from_str(status.ok()).unwrap();
    assert_eq!(status["revision"], revision["header"]["revision"]);
    assert!(status["totalKey"].as_u64().unwrap() > 10, "{status}");

    // etcd's restore, then a real etcd on the restored dir.
    let restored = dir.path().join("etcd-data");
    let peer_port = free_port();
    let out = etcdctl(
        &[],
        &[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
            "--name",
            "restored",
            "--initial-cluster",
            &format!("restored=http://127.0.0.1:{peer_port}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer_port}"),
        ],
    );
    assert!(out.success(), "{out:?}");
    let etcd = Etcd::start(&restored, "restored", peer_port);
    assert_eq!(content(&|args| etcd.ctl(args)), expected);
    assert_eq!(etcd.ctl(&["put", "after", "1"]).ok(), "OK\n");
}

#[test]
fn a_snapshot_of_a_real_etcd_restores_into_cairn() {
    if server_kind() == ServerKind::Etcd {
        return; // the restored data dir is cairn's
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = dir.path().join("etcd-source");
    let etcd = Etcd::start(&etcd_dir, "source", free_port());
    write_content(&|args| etcd.ctl(args));
    let expected = content(&|args| etcd.ctl(args));
    let file = dir.path().join("etcd.db");
    snapshot_save(&|args| etcd.ctl(args), &file);
    drop(etcd);

    // A damaged copy is refused by its sha256, and leaves no data dir behind.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[5 * 4096 + 100] ^= 0xff;
    let damaged = dir.path().join("damaged.db");
    std::fs::write(&damaged, &bytes).unwrap();
    let refused_dir = dir.path().join("refused");
    let out = Command::new(cairn_binary())
        .args(["snapshot", "restore"])
        .arg(&damaged)
        .arg("--data-dir")
        .arg(&refused_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("snapshot file integrity check failed"),
        "{out:?}"
    );
    assert!(!refused_dir.exists());

    let data: PathBuf = dir.path().join("cairn-data");
    let mut target = Server::launch(ServerOpts::new().data_dir(&data));
    target.terminate();
    let _ = std::fs::remove_dir_all(&data);
    let out = Command::new(cairn_binary())
        .args(["snapshot", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .args(["--name", target.name()])
        .args([
            "--initial-cluster",
            &format!("{}={}", target.name(), target.peer_url()),
        ])
        .args(["--initial-advertise-peer-urls", &target.peer_url()])
        .output()
        .expect("run cairn snapshot restore");
    assert!(out.status.success(), "{out:?}");
    target.restart();
    assert_eq!(content(&|args| target.etcdctl(args)), expected);
    assert_eq!(target.etcdctl(&["put", "after", "1"]).ok(), "OK\n");
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
