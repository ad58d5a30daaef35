//! The KV commands of the real `etcdctl`, with their exact outputs.
//!
//! A fresh store is at revision 1, so the n-th write of a test is revision n+1.

use cairn_tests::{Server, ServerOpts};
use serde_json::Value;

fn start() -> Server {
    Server::start(ServerOpts::new())
}

fn put(server: &Server, key: &str, value: &str) {
    assert_eq!(server.etcdctl(&["put", key, value]).ok(), "OK\n");
}

fn json(server: &Server, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-w", "json"]);
    let out = server.etcdctl(&args);
    serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:#?}"))
}

fn header_revision(doc: &Value) -> i64 {
    doc["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no header.revision in {doc}"))
}

#[test]
fn put_and_get_print_exact_outputs() {
    let server = start();
    put(&server, "foo", "bar"); // rev 2
    assert_eq!(server.etcdctl(&["get", "foo"]).ok(), "foo\nbar\n");
    put(&server, "foo", "baz"); // rev 3
    assert_eq!(server.etcdctl(&["get", "foo"]).ok(), "foo\nbaz\n");
    assert_eq!(
        server.etcdctl(&["get", "foo", "--rev=2"]).ok(),
        "foo\nbar\n"
    );
    assert_eq!(server.etcdctl(&["get", "foo", "--rev=1"]).ok(), "");
    assert_eq!(server.etcdctl(&["get", "missing"]).ok(), "");
    assert_eq!(
        server.etcdctl(&["put", "foo", "qux", "--prev-kv"]).ok(),
        "OK\nfoo\nbaz\n"
    );
    assert_eq!(
        server.etcdctl(&["put", "fresh", "1", "--prev-kv"]).ok(),
        "OK\n"
    );
    assert_eq!(
        server.etcdctl(&["get", "foo", "--print-value-only"]).ok(),
        "qux\n"
    );
    put(&server, "spaced key", "a value\nwith two lines");
    assert_eq!(
        server.etcdctl(&["get", "spaced key"]).ok(),
        "spaced key\na value\nwith two lines\n"
    );
}

/// Final state (key = value, create/mod revision, version):
/// a1 = 3 (3/9, v2), a2 = 1 (4/4, v1), a3 = 2 (2/8, v3), b = x (5/5), c = y (6/6).
fn range_fixture() -> Server {
    let server = start();
    for (key, value) in [
        ("a3", "2"),
        ("a1", "3"),
        ("a2", "1"),
        ("b", "x"),
        ("c", "y"),
        ("a3", "2"),
        ("a3", "2"),
        ("a1", "3"),
    ] {
        put(&server, key, value);
    }
    server
}

#[test]
fn get_range_options() {
    let server = range_fixture();
    let get = |args: &[&str]| server.etcdctl(args).ok().to_string();
    assert_eq!(get(&["get", "a", "--prefix"]), "a1\n3\na2\n1\na3\n2\n");
    assert_eq!(
        get(&["get", "a", "--prefix", "--keys-only"]),
        "a1\n\na2\n\na3\n\n"
    );
    assert_eq!(
        get(&["get", "a", "--prefix", "--limit=2"]),
        "a1\n3\na2\n1\n"
    );
    assert_eq!(
        get(&["get", "a", "--prefix", "--print-value-only"]),
        "3\n1\n2\n"
    );
    assert_eq!(get(&["get", "a2", "b"]), "a2\n1\na3\n2\n");
    assert_eq!(get(&["get", "b", "--from-key"]), "b\nx\nc\ny\n");
    assert_eq!(
        get(&["get", "b", "--from-key", "--keys-only"]),
        "b\n\nc\n\n"
    );
    // A sort target other than KEY without --order sorts ascending.
    assert_eq!(
        get(&["get", "a", "--prefix", "--sort-by=VALUE"]),
        "a2\n1\na3\n2\na1\n3\n"
    );
    assert_eq!(
        get(&["get", "a", "--prefix", "--sort-by=VALUE", "--order=DESCEND"]),
        "a1\n3\na3\n2\na2\n1\n"
    );
    assert_eq!(
        get(&[
            "get",
            "a",
            "--prefix",
            "--sort-by=CREATE",
            "--order=DESCEND"
        ]),
        "a2\n1\na1\n3\na3\n2\n"
    );
    assert_eq!(
        get(&["get", "a", "--prefix", "--sort-by=MODIFY", "--order=ASCEND"]),
        "a2\n1\na3\n2\na1\n3\n"
    );
    assert_eq!(
        get(&[
            "get",
            "a",
            "--prefix",
            "--sort-by=VERSION",
            "--order=DESCEND"
        ]),
        "a3\n2\na1\n3\na2\n1\n"
    );
    assert_eq!(
        get(&["get", "a", "--prefix", "--sort-by=KEY", "--order=DESCEND"]),
        "a3\n2\na2\n1\na1\n3\n"
    );
    // The limit applies after sorting.
    assert_eq!(
        get(&[
            "get",
            "a",
            "--prefix",
            "--sort-by=VALUE",
            "--order=DESCEND",
            "--limit=1"
        ]),
        "a1\n3\n"
    );
    // History: at revision 4, a1 existed once and b not yet.
    assert_eq!(
        get(&["get", "a", "--prefix", "--rev=4", "--keys-only"]),
        "a1\n\na2\n\na3\n\n"
    );
    assert_eq!(get(&["get", "b", "--rev=4"]), "");
}

#[test]
fn json_output_carries_revisions_and_base64() {
    let server = start();
    put(&server, "foo", "bar"); // rev 2
    put(&server, "foo", "bar2"); // rev 3
    put(&server, "foo2", "x"); // rev 4

    let doc = json(&server, &["get", "foo"]);
    let header = &doc["header"];
    assert_ne!(header["cluster_id"].as_u64().unwrap_or(0), 0, "{doc}");
    assert_ne!(header["member_id"].as_u64().unwrap_or(0), 0, "{doc}");
    assert!(header["raft_term"].as_u64().unwrap_or(0) >= 1, "{doc}");
    assert_eq!(header_revision(&doc), 4);
    assert_eq!(
        doc["kvs"],
        serde_json::json!([{
            "key": "Zm9v",
            "create_revision": 2,
            "mod_revision": 3,
            "version": 2,
            "value": "YmFyMg==",
        }])
    );
    assert_eq!(doc["count"], 1);
    assert_eq!(doc.get("more"), None, "`more` is omitted when false: {doc}");

    let doc = json(&server, &["get", "foo", "--prefix", "--limit=1"]);
    assert_eq!(doc["more"], true);
    assert_eq!(doc["count"], 2);
    assert_eq!(doc["kvs"].as_array().map(Vec::len), Some(1));

    let doc = json(&server, &["get", "foo", "--rev=2"]);
    assert_eq!(header_revision(&doc), 4);
    assert_eq!(doc["kvs"][0]["value"], "YmFy");
    assert_eq!(doc["kvs"][0]["version"], 1);

    // An empty result omits `kvs` and `count`.
    let doc = json(&server, &["get", "nothing"]);
    assert_eq!(doc.get("kvs"), None, "{doc}");
    assert_eq!(doc.get("count"), None, "{doc}");

    let doc = json(&server, &["put", "foo", "bar3"]);
    assert_eq!(header_revision(&doc), 5);
    let doc = json(&server, &["del", "foo2"]);
    assert_eq!(header_revision(&doc), 6);
    assert_eq!(doc["deleted"], 1);
}

#[test]
fn delete_prints_count_then_deleted_pairs() {
    let server = start();
    for (key, value) in [
        ("a1", "1"),
        ("a2", "2"),
        ("a3", "3"),
        ("b", "4"),
        ("c", "5"),
        ("d", "6"),
    ] {
        put(&server, key, value); // revs 2..=7
    }
    assert_eq!(server.etcdctl(&["del", "zzz"]).ok(), "0\n");
    assert_eq!(header_revision(&json(&server, &["get", "a1"])), 7);
    assert_eq!(server.etcdctl(&["del", "a1", "a3"]).ok(), "2\n"); // rev 8
    assert_eq!(
        server.etcdctl(&["del", "a", "--prefix", "--prev-kv"]).ok(),
        "1\na3\n3\n"
    ); // rev 9
    assert_eq!(
        server
            .etcdctl(&["del", "c", "--from-key", "--prev-kv"])
            .ok(),
        "2\nc\n5\nd\n6\n"
    ); // rev 10
    assert_eq!(server.etcdctl(&["del", "b"]).ok(), "1\n"); // rev 11
    assert_eq!(server.etcdctl(&["get", "a", "--from-key"]).ok(), "");
    let doc = json(&server, &["get", "a", "--from-key"]);
    assert_eq!(header_revision(&doc), 11);
    // The deleted values are still in history.
    assert_eq!(
        server.etcdctl(&["get", "a", "--prefix", "--rev=8"]).ok(),
        "a3\n3\n"
    );
}

#[test]
fn txn_prints_branch_and_each_response() {
    let server = start();
    put(&server, "k1", "v1"); // rev 2

    let success = "value(\"k1\") = \"v1\"\n\nput k2 v2\nget k1\n\nput k3 v3\n\n";
    assert_eq!(
        server.etcdctl_with_stdin(&["txn"], success).ok(),
        "SUCCESS\n\nOK\n\nk1\nv1\n"
    ); // rev 3
    assert_eq!(server.etcdctl(&["get", "k3"]).ok(), "");

    let failure = "mod(\"k1\") = \"2\"\nversion(\"k2\") > \"1\"\n\nput k1 bad\n\n\
                   del k2 --prev-kv\nput k4 v4\nget k4\n\n";
    assert_eq!(
        server.etcdctl_with_stdin(&["txn"], failure).ok(),
        "FAILURE\n\n1\nk2\nv2\n\nOK\n\nk4\nv4\n"
    ); // rev 4
    assert_eq!(server.etcdctl(&["get", "k1"]).ok(), "k1\nv1\n");

    // No compares: the success branch runs.
    assert_eq!(
        server
            .etcdctl_with_stdin(&["txn"], "\nput k5 v5\n\n\n")
            .ok(),
        "SUCCESS\n\nOK\n"
    ); // rev 5
    let compares = "create(\"k4\") = \"4\"\nmod(\"k5\") < \"6\"\nversion(\"k1\") = \"1\"\n\
                    value(\"k4\") != \"x\"\n\nget k5\n\nput never x\n\n";
    assert_eq!(
        server.etcdctl_with_stdin(&["txn"], compares).ok(),
        "SUCCESS\n\nk5\nv5\n"
    );
    // A missing key has version and create revision 0, but a value compare
    // on it is always false.
    let missing = "version(\"gone\") = \"0\"\ncreate(\"gone\") = \"0\"\n\nget gone\n\n\n";
    assert_eq!(
        server.etcdctl_with_stdin(&["txn"], missing).ok(),
        "SUCCESS\n\n"
    );
    let missing = "value(\"gone\") != \"x\"\n\n\nget k5 --keys-only\n\n";
    assert_eq!(
        server.etcdctl_with_stdin(&["txn"], missing).ok(),
        "FAILURE\n\nk5\n\n"
    );

    let out = server.etcdctl_with_stdin(&["txn", "-w", "json"], "\nput k6 v6\nget k1\n\n\n");
    let doc: Value = serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    assert_eq!(header_revision(&doc), 6);
    assert_eq!(doc["succeeded"], true);
    assert_eq!(
        doc["responses"],
        serde_json::json!([
            {"Response": {"ResponsePut": {"header": {"revision": 6}}}},
            {"Response": {"ResponseRange": {
                "header": {"revision": 6},
                "kvs": [{"key": "azE=", "create_revision": 2, "mod_revision": 2,
                         "version": 1, "value": "djE="}],
                "count": 1,
            }}},
        ])
    );
}

#[test]
fn compaction_then_older_revisions_are_gone() {
    let server = start();
    for value in ["v1", "v2", "v3", "v4"] {
        put(&server, "foo", value); // revs 2..=5
    }
    assert_eq!(
        server.etcdctl(&["compaction", "3"]).ok(),
        "compacted revision 3\n"
    );
    assert_eq!(
        server.etcdctl(&["get", "foo", "--rev=2"]).fail(),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(server.etcdctl(&["get", "foo", "--rev=3"]).ok(), "foo\nv2\n");
    assert_eq!(
        server.etcdctl(&["get", "foo", "--rev=6"]).fail(),
        "Error: etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(
        server.etcdctl(&["compaction", "3"]).fail(),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        server.etcdctl(&["compaction", "9"]).fail(),
        "Error: etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(
        server.etcdctl(&["compaction", "4", "--physical"]).ok(),
        "compacted revision 4\n"
    );
    assert_eq!(
        server.etcdctl(&["get", "foo", "--rev=3"]).fail(),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(server.etcdctl(&["get", "foo"]).ok(), "foo\nv4\n");
    // Compaction does not create a revision.
    assert_eq!(header_revision(&json(&server, &["get", "foo"])), 5);
}
