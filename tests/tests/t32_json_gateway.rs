//! etcd's v3 JSON gateway (`POST /v3/...`) driven with `curl`: the same requests against
//! cairn and etcd (`CAIRN_TEST_SERVER=etcd`) give the same JSON, member ids aside.

use std::process::Command;

use cairn_tests::{expected_version, Server, ServerOpts};
use serde_json::{json, Value};

/// `curl -X POST` of `body` to `path`: the HTTP status and the body as JSON (Null when it
/// is not JSON).
fn post(server: &Server, path: &str, body: &str) -> (u16, Value) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
            "--data-binary",
            body,
        ])
        .arg(format!("{}{path}", server.client_url()))
        .output()
        .expect("run curl");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (
        status.parse().expect("status"),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// `value` without the member-specific header fields.
fn without_ids(mut value: Value) -> Value {
    if let Some(header) = value.get_mut("header").and_then(Value::as_object_mut) {
        header.remove("cluster_id");
        header.remove("member_id");
    }
    value
}

#[test]
fn kv_lease_and_maintenance_answer_etcds_json() {
    let server = Server::start(ServerOpts::new());
    // foo = bar, base64 as the gateway wants bytes.
    let (status, put) = post(&server, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    assert_eq!(status, 200);
    assert_eq!(
        without_ids(put),
        json!({"header": {"revision": "2", "raft_term": "2"}})
    );
    let (status, range) = post(&server, "/v3/kv/range", r#"{"key":"Zm9v"}"#);
    assert_eq!(status, 200);
    assert_eq!(
        without_ids(range),
        json!({
            "header": {"revision": "2", "raft_term": "2"},
            "kvs": [{"key": "Zm9v", "create_revision": "2", "mod_revision": "2",
                     "version": "1", "value": "YmFy"}],
            "count": "1"
        })
    );
    // camelCase names are read too.
    let (_, counted) = post(
        &server,
        "/v3/kv/range",
        r#"{"key":"Zm9v","countOnly":true}"#,
    );
    assert_eq!(counted["count"], "1");
    assert!(counted.get("kvs").is_none());

    // A compare-and-swap txn.
    let txn = r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"}],
                  "success":[{"request_put":{"key":"Zm9v","value":"YmF6"}}]}"#;
    let (status, swapped) = post(&server, "/v3/kv/txn", txn);
    assert_eq!(status, 200);
    assert_eq!(swapped["succeeded"], true, "{swapped}");
    assert_eq!(swapped["header"]["revision"], "3");

    let (status, lease) = post(&server, "/v3/lease/grant", r#"{"TTL":30}"#);
    assert_eq!(status, 200);
    assert_eq!(lease["TTL"], "30", "{lease}");
    assert!(lease["ID"]
        .as_str()
        .is_some_and(|id| id.parse::<i64>().is_ok()));

    let (status, st) = post(&server, "/v3/maintenance/status", "{}");
    assert_eq!(status, 200);
    assert_eq!(st["version"], expected_version());

    let (status, members) = post(&server, "/v3/cluster/member/list", "");
    assert_eq!(status, 200);
    assert_eq!(members["members"].as_array().map(Vec::len), Some(1));
}

#[test]
fn bad_requests_get_etcds_json_errors() {
    let server = Server::start(ServerOpts::new());
    let (status, err) = post(&server, "/v3/kv/put", "{}");
    assert_eq!(
        (status, err),
        (
            400,
            json!({"error": "etcdserver: key is not provided",
                   "message": "etcdserver: key is not provided", "code": 3})
        )
    );
    // Not JSON: InvalidArgument (the message is the JSON parser's own).
    let (status, err) = post(&server, "/v3/kv/range", "garbage");
    assert_eq!((status, &err["code"]), (400, &json!(3)), "{err}");
    let (status, err) = post(&server, "/v3/kv/range", r#"{"key":"Zm9v","revision":"99"}"#);
    assert_eq!(
        (status, err),
        (
            400,
            json!({"error": "etcdserver: mvcc: required revision is a future revision",
                   "message": "etcdserver: mvcc: required revision is a future revision",
                   "code": 11})
        )
    );
    let (status, _) = post(&server, "/v3/kv/nosuch", "{}");
    assert_eq!(status, 404);
}

#[test]
fn watch_and_keep_alive_stream_result_lines() {
    use std::io::BufRead as _;
    let server = Server::start(ServerOpts::new());
    let mut curl = Command::new("curl")
        .args(["-s", "-N", "-X", "POST", "--data-binary"])
        .arg(r#"{"create_request":{"key":"Zm9v"}}"#)
        .arg(format!("{}/v3/watch", server.client_url()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run curl");
    let stdout = curl.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> Value {
        let line = rx
            .recv_timeout(cairn_tests::BACKGROUND_DEADLINE)
            .expect("a watch line in time");
        serde_json::from_str(&line).expect("a JSON line")
    };
    let created = next();
    assert_eq!(created["result"]["created"], true, "{created}");
    let (status, _) = post(&server, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    assert_eq!(status, 200);
    let event = next();
    assert_eq!(
        without_ids(event["result"].clone()),
        json!({
            "header": {"revision": "2", "raft_term": "2"},
            "events": [{"kv": {"key": "Zm9v", "create_revision": "2", "mod_revision": "2",
                               "version": "1", "value": "YmFy"}}]
        })
    );
    let _ = curl.kill();
    let _ = curl.wait();

    // Keep-alive: one result line per request, in order; an unknown lease has TTL 0.
    let (status, lease) = post(&server, "/v3/lease/grant", r#"{"TTL":60}"#);
    assert_eq!(status, 200);
    let id = lease["ID"].as_str().unwrap().to_string();
    let out = Command::new("curl")
        .args(["-s", "-X", "POST", "--data-binary"])
        .arg(format!(r#"{{"ID":"{id}"}} {{"ID":"123"}}"#))
        .arg(format!("{}/v3/lease/keepalive", server.client_url()))
        .output()
        .expect("run curl");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (&lines[0]["result"]["ID"], &lines[0]["result"]["TTL"]),
        (&json!(id), &json!("60"))
    );
    assert_eq!(lines[1]["result"]["ID"], "123");
    assert!(lines[1]["result"].get("TTL").is_none());
}

#[test]
fn election_and_snapshot_through_the_gateway() {
    use std::io::BufRead as _;
    let server = Server::start(ServerOpts::new());
    let (_, lease) = post(&server, "/v3/lease/grant", r#"{"TTL":60}"#);
    let id = lease["ID"].as_str().unwrap().to_string();
    // name "e", value "v1"
    let (status, won) = post(
        &server,
        "/v3/election/campaign",
        &format!(r#"{{"name":"ZQ==","value":"djE=","lease":"{id}"}}"#),
    );
    assert_eq!(status, 200, "{won}");
    assert_eq!(won["leader"]["name"], "ZQ==");
    assert_eq!(won["leader"]["lease"], json!(id));
    let mut curl = Command::new("curl")
        .args([
            "-s",
            "-N",
            "-X",
            "POST",
            "--data-binary",
            r#"{"name":"ZQ=="}"#,
        ])
        .arg(format!("{}/v3/election/observe", server.client_url()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut lines = std::io::BufReader::new(curl.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["result"]["kv"]["value"], "djE=", "{first}");
    assert_eq!(first["result"]["kv"]["key"], won["leader"]["key"]);
    let _ = curl.kill();
    let _ = curl.wait();

    // The snapshot stream: result lines whose blobs add up to the whole snapshot.
    let out = Command::new("curl")
        .args(["-s", "-X", "POST"])
        .arg(format!("{}/v3/maintenance/snapshot", server.client_url()))
        .output()
        .expect("run curl");
    let chunks: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!chunks.is_empty());
    assert!(chunks.iter().all(|c| c["result"]["blob"].is_string()));
    // The last chunk has nothing left to send.
    assert!(chunks.last().unwrap()["result"]
        .get("remaining_bytes")
        .is_none());
}
