//! `etcdctl watch`: a background etcdctl process whose output lines are read with a
//! deadline. Expected outputs come from etcd 3.4's etcdctl against etcd.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use cairn_tests::{http_get, Server, ServerOpts};

const DEADLINE: Duration = Duration::from_secs(10);

/// A running `etcdctl watch ...`.
struct CtlWatch {
    child: Child,
    lines: Receiver<String>,
}

impl CtlWatch {
    fn start(server: &Server, args: &[&str]) -> CtlWatch {
        let bin = std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "/usr/bin/etcdctl".into());
        let mut child = Command::new(bin)
            .env_clear()
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", server.endpoints().join(",")))
            .arg("--dial-timeout=5s")
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run etcdctl watch");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        CtlWatch { child, lines }
    }

    /// The next `n` lines of output, waiting at most [`DEADLINE`] in all.
    fn lines(&self, n: usize) -> Vec<String> {
        let end = Instant::now() + DEADLINE;
        (0..n)
            .map(|i| {
                let left = end.saturating_duration_since(Instant::now());
                self.lines
                    .recv_timeout(left)
                    .unwrap_or_else(|e| panic!("line {} of etcdctl watch: {e}", i + 1))
            })
            .collect()
    }
}

impl Drop for CtlWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of gauge `name` on the server's `/metrics`, if present.
fn gauge(server: &Server, name: &str) -> Option<f64> {
    let body = http_get(&server.client_addr(), "/metrics").ok()?.body;
    body.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits until the server has `n` watchers, so that a live watch sees the next write.
fn wait_for_watchers(server: &Server, n: f64) {
    let end = Instant::now() + DEADLINE;
    while gauge(server, "etcd_debugging_mvcc_watcher_total") != Some(n) {
        assert!(Instant::now() < end, "the server never had {n} watchers");
        std::thread::yield_now();
    }
}

fn lines(text: &[&str]) -> Vec<String> {
    text.iter().map(|s| s.to_string()).collect()
}

#[test]
fn live_watch_prints_puts_and_deletes() {
    let server = Server::start(ServerOpts::new());
    let watch = CtlWatch::start(&server, &["foo"]);
    wait_for_watchers(&server, 1.0);
    server.etcdctl(&["put", "foo", "bar"]).ok();
    server.etcdctl(&["put", "food", "no"]).ok();
    server.etcdctl(&["del", "foo"]).ok();
    assert_eq!(
        watch.lines(5),
        lines(&["PUT", "foo", "bar", "DELETE", "foo"])
    );
}

#[test]
fn prev_kv_prints_the_previous_pair_first() {
    let server = Server::start(ServerOpts::new());
    server.etcdctl(&["put", "foo", "old"]).ok();
    let watch = CtlWatch::start(&server, &["foo", "--prev-kv"]);
    wait_for_watchers(&server, 1.0);
    server.etcdctl(&["put", "foo", "new"]).ok();
    server.etcdctl(&["del", "foo"]).ok();
    assert_eq!(
        watch.lines(10),
        lines(&["PUT", "foo", "old", "foo", "new", "DELETE", "foo", "new", "foo", ""])
    );
}

#[test]
fn rev_replays_history() {
    let server = Server::start(ServerOpts::new());
    server.etcdctl(&["put", "foo", "v1"]).ok();
    server.etcdctl(&["put", "foo", "v2"]).ok();
    server.etcdctl(&["del", "foo"]).ok();
    let watch = CtlWatch::start(&server, &["foo", "--rev", "1"]);
    assert_eq!(
        watch.lines(9),
        lines(&["PUT", "foo", "v1", "PUT", "foo", "v2", "DELETE", "foo", ""])
    );
}

#[test]
fn prefix_watch_sees_every_key_under_it() {
    let server = Server::start(ServerOpts::new());
    for (key, value) in [("a/1", "x"), ("b", "y"), ("a/2", "z"), ("a", "w")] {
        server.etcdctl(&["put", key, value]).ok();
    }
    let watch = CtlWatch::start(&server, &["--prefix", "a/", "--rev", "2"]);
    assert_eq!(
        watch.lines(6),
        lines(&["PUT", "a/1", "x", "PUT", "a/2", "z"])
    );
}

#[test]
fn json_output_is_one_response_per_line() {
    let server = Server::start(ServerOpts::new());
    server.etcdctl(&["put", "foo", "old"]).ok(); // revision 2
    server.etcdctl(&["put", "foo", "new"]).ok(); // revision 3
    server.etcdctl(&["del", "foo"]).ok(); // revision 4
    let watch = CtlWatch::start(&server, &["foo", "--rev", "3", "-w", "json"]);
    let mut got = Vec::new();
    let mut events = 0;
    while events < 2 {
        let line = watch.lines(1).remove(0);
        let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        events += value["Events"].as_array().map_or(0, Vec::len);
        got.push(value);
    }
    let all: Vec<&serde_json::Value> = got
        .iter()
        .flat_map(|r| r["Events"].as_array().unwrap())
        .collect();
    assert_eq!(
        all[0],
        &serde_json::json!({"kv": {"key": "Zm9v", "create_revision": 2, "mod_revision": 3, "version": 2, "value": "bmV3"}})
    );
    assert_eq!(
        all[1],
        &serde_json::json!({"type": 1, "kv": {"key": "Zm9v", "mod_revision": 4}})
    );
    let last = got.last().unwrap();
    assert_eq!(last["Header"]["revision"], 4);
    assert_ne!(last["Header"]["cluster_id"], 0);
    assert_ne!(last["Header"]["member_id"], 0);
    assert_ne!(last["Header"]["raft_term"], 0);
    assert_eq!(last["CompactRevision"], 0);
    assert_eq!(last["Canceled"], false);
    assert_eq!(last["Created"], false);
}
