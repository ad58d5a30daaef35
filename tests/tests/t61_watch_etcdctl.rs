//! `etcdctl watch`: a background etcdctl process whose output lines are read with a
//! deadline. Expected outputs come from etcd 3.4's etcdctl against etcd.

use cairn_tests::{wait_for_watchers, CtlProcess, Server, ServerOpts};

fn lines(text: &[&str]) -> Vec<String> {
    text.iter().map(|s| s.to_string()).collect()
}

#[test]
fn live_watch_prints_puts_and_deletes() {
    let server = Server::start(ServerOpts::new());
    let watch = CtlProcess::start(&server, &["watch", "foo"]);
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
    let watch = CtlProcess::start(&server, &["watch", "foo", "--prev-kv"]);
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
    let watch = CtlProcess::start(&server, &["watch", "foo", "--rev", "1"]);
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
    let watch = CtlProcess::start(&server, &["watch", "--prefix", "a/", "--rev", "2"]);
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
    let watch = CtlProcess::start(&server, &["watch", "foo", "--rev", "3", "-w", "json"]);
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
