//! etcd's v2 API (`--enable-v2`) driven with `curl` and etcdctl v2 (`ETCDCTL_API=2`): the
//! same requests against cairn and etcd 3.4 (`CAIRN_TEST_SERVER=etcd`) give the same
//! answers. Indexes differ between the two (etcd counts v2 store events, cairn v3
//! revisions), so each expectation is computed from the `X-Etcd-Index` of the write
//! that made it, and etcdctl's `[index]` suffixes are normalised.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use cairn_tests::{http_request, Server, ServerKind, ServerOpts, BACKGROUND_DEADLINE};
use serde_json::{json, Value};

fn start() -> Server {
    Server::start(ServerOpts::new().arg("--enable-v2"))
}

/// One HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    index: i64,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// `curl -X <method> <url><path>` with `form` as a urlencoded body.
fn curl(server: &Server, method: &str, path: &str, form: &[(&str, &str)]) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "-X", method, "--max-time", "30"]);
    for (k, v) in form {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd
        .arg(format!("{}{path}", server.client_url()))
        .output()
        .expect("run curl");
    parse_reply(&out)
}

fn parse_reply(out: &Output) -> Reply {
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    Reply {
        status,
        index: header("x-etcd-index").parse().unwrap_or(-1),
        content_type: header("content-type"),
        body: body.to_string(),
    }
}

/// etcdctl v2: `ETCDCTL_API=2 etcdctl --endpoints <url> <args>`.
fn ctl(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("/usr/bin/etcdctl")
        .env_clear()
        .env("ETCDCTL_API", "2")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--endpoints")
        .arg(server.client_url())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        normalise_index(&String::from_utf8_lossy(&out.stderr)),
    )
}

fn ok(server: &Server, args: &[&str]) -> String {
    let (code, stdout, stderr) = ctl(server, args);
    assert_eq!(code, 0, "etcdctl {args:?}: {stderr}");
    stdout
}

/// `Error:  105: Key already exists (/a) [12]` → `... [N]`.
fn normalise_index(text: &str) -> String {
    let re = regex::Regex::new(r"\[\d+\]\n").expect("regex");
    re.replace_all(text, "[N]\n").into_owned()
}

/// A running etcdctl v2 whose output lines are read with a deadline.
struct Background {
    child: Child,
    lines: Receiver<String>,
}

impl Background {
    fn start(server: &Server, args: &[&str]) -> Background {
        let mut child = Command::new("/usr/bin/etcdctl")
            .env_clear()
            .env("ETCDCTL_API", "2")
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--endpoints")
            .arg(server.client_url())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run etcdctl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background { child, lines }
    }

    fn lines(&self, n: usize) -> Vec<String> {
        let end = Instant::now() + BACKGROUND_DEADLINE;
        (0..n)
            .map(|i| {
                self.lines
                    .recv_timeout(end.saturating_duration_since(Instant::now()))
                    .unwrap_or_else(|e| panic!("line {} of etcdctl: {e}", i + 1))
            })
            .collect()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `n` requests wait on the store (`/v2/stats/store`'s `watchers`).
fn wait_for_waiters(server: &Server, n: u64) {
    let end = Instant::now() + BACKGROUND_DEADLINE;
    loop {
        let stats = http_request(&server.client_addr(), "GET", "/v2/stats/store", "")
            .expect("stats")
            .body;
        let stats: Value = serde_json::from_str(&stats).expect("stats JSON");
        if stats["watchers"].as_u64() >= Some(n) {
            return;
        }
        assert!(Instant::now() < end, "never {n} waiters: {stats}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `value` without `expiration` fields (a time), anywhere.
fn without_expiration(mut value: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("expiration");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

#[test]
fn the_seed_examples_run_as_written() {
    let server = start();
    assert_eq!(ok(&server, &["set", "/nosql/foo", "bar"]), "bar\n");
    assert_eq!(ok(&server, &["ls", "/nosql"]), "/nosql/foo\n");
    let foo = curl(&server, "GET", "/v2/keys/nosql/foo", &[]).json();
    let foo_index = foo["node"]["modifiedIndex"].as_i64().expect("index");

    let put = curl(&server, "PUT", "/v2/keys/nosql/bar", &[("value", "bar")]);
    assert_eq!(put.status, 201);
    assert_eq!(put.content_type, "application/json");
    let n = put.index;
    assert_eq!(
        put.body,
        format!(
            "{{\"action\":\"set\",\"node\":{{\"key\":\"/nosql/bar\",\"value\":\"bar\",\"modifiedIndex\":{n},\"createdIndex\":{n}}}}}\n"
        )
    );
    let list = curl(&server, "GET", "/v2/keys/nosql?sorted=true", &[]);
    assert_eq!(list.status, 200);
    assert_eq!(list.index, n);
    assert_eq!(
        list.body,
        format!(
            "{{\"action\":\"get\",\"node\":{{\"key\":\"/nosql\",\"dir\":true,\"nodes\":[\
             {{\"key\":\"/nosql/bar\",\"value\":\"bar\",\"modifiedIndex\":{n},\"createdIndex\":{n}}},\
             {{\"key\":\"/nosql/foo\",\"value\":\"bar\",\"modifiedIndex\":{foo_index},\"createdIndex\":{foo_index}}}],\
             \"modifiedIndex\":{foo_index},\"createdIndex\":{foo_index}}}}}\n"
        )
    );
    let root = curl(&server, "GET", "/v2/keys/", &[]);
    assert_eq!(
        root.body,
        format!("{{\"action\":\"get\",\"node\":{{\"dir\":true,\"nodes\":[{{\"key\":\"/nosql\",\"dir\":true,\"modifiedIndex\":{foo_index},\"createdIndex\":{foo_index}}}]}}}}\n")
    );
}

#[test]
fn etcdctl_v2_manages_keys_and_directories() {
    let server = start();
    assert_eq!(ok(&server, &["set", "/a/b", "1"]), "1\n");
    assert_eq!(ok(&server, &["get", "/a/b"]), "1\n");
    assert_eq!(
        ctl(&server, &["mk", "/a/b", "2"]),
        (
            4,
            String::new(),
            "Error:  105: Key already exists (/a/b) [N]\n".into()
        )
    );
    assert_eq!(ok(&server, &["mk", "/a/c", "3"]), "3\n");
    assert_eq!(ok(&server, &["mkdir", "/d"]), "");
    assert_eq!(
        ctl(&server, &["mkdir", "/d"]).2,
        "Error:  105: Key already exists (/d) [N]\n"
    );
    assert_eq!(ok(&server, &["ls", "--sort", "/"]), "/a\n/d\n");
    assert_eq!(ok(&server, &["ls", "--sort", "-p", "/"]), "/a/\n/d/\n");
    assert_eq!(
        ok(&server, &["ls", "--sort", "--recursive", "/"]),
        "/a\n/a/b\n/a/c\n/d\n"
    );
    assert_eq!(ok(&server, &["update", "/a/b", "5"]), "5\n");
    assert_eq!(
        ctl(&server, &["update", "/zz", "1"]),
        (
            4,
            String::new(),
            "Error:  100: Key not found (/zz) [N]\n".into()
        )
    );
    assert_eq!(ctl(&server, &["get", "/a"]).2, "/a: is a directory\n");
    assert_eq!(
        ctl(&server, &["get", "/missing"]).2,
        "Error:  100: Key not found (/missing) [N]\n"
    );
    assert_eq!(
        ctl(&server, &["rm", "/a"]).2,
        "Error:  102: Not a file (/a) [N]\n"
    );
    assert_eq!(
        ctl(&server, &["rmdir", "/a"]).2,
        "Error:  108: Directory not empty (/a) [N]\n"
    );
    assert_eq!(ok(&server, &["rmdir", "/d"]), "");
    assert_eq!(ok(&server, &["rm", "--recursive", "/a"]), "");
    assert_eq!(ok(&server, &["ls", "/"]), "");
    assert_eq!(ok(&server, &["set", "/s", "new"]), "new\n");
    assert_eq!(ok(&server, &["rm", "/s"]), "PrevNode.Value: new\n");
    assert_eq!(
        ctl(&server, &["rm", "/s"]).2,
        "Error:  100: Key not found (/s) [N]\n"
    );
    assert_eq!(ok(&server, &["mkdir", "/e"]), "");
    assert_eq!(
        ctl(&server, &["rm", "/e"]).2,
        "Error:  102: Not a file (/e) [N]\n"
    );
    assert_eq!(ok(&server, &["rm", "--dir", "/e"]), "");
}

#[test]
fn etcdctl_v2_swaps_outputs_and_ttls() {
    let server = start();
    assert_eq!(ok(&server, &["set", "/s", "old"]), "old\n");
    assert_eq!(
        ctl(&server, &["set", "--swap-with-value", "wrong", "/s", "new"]).2,
        "Error:  101: Compare failed ([wrong != old]) [N]\n"
    );
    assert_eq!(
        ok(&server, &["set", "--swap-with-value", "old", "/s", "new"]),
        "new\n"
    );
    let index = curl(&server, "GET", "/v2/keys/s", &[]).index;
    assert_eq!(
        ctl(&server, &["set", "--swap-with-index", "1", "/s", "x"]).2,
        format!("Error:  101: Compare failed ([1 != {index}]) [N]\n")
    );
    let idx = index.to_string();
    assert_eq!(
        ok(&server, &["set", "--swap-with-index", &idx, "/s", "y"]),
        "y\n"
    );

    let json_out = ok(&server, &["-o", "json", "set", "/j", "v"]);
    let j = curl(&server, "GET", "/v2/keys/j", &[]).index;
    assert_eq!(
        json_out,
        format!("{{\"action\":\"set\",\"node\":{{\"key\":\"/j\",\"value\":\"v\",\"nodes\":null,\"createdIndex\":{j},\"modifiedIndex\":{j}}},\"prevNode\":null}}\n")
    );
    assert_eq!(
        ok(&server, &["-o", "extended", "get", "/j"]),
        format!("Key: /j\nCreated-Index: {j}\nModified-Index: {j}\nTTL: 0\nIndex: {j}\n\nv\n")
    );

    assert_eq!(ok(&server, &["set", "/t", "v", "--ttl", "100"]), "v\n");
    let t = ok(&server, &["-o", "extended", "get", "/t"]);
    let ti = curl(&server, "GET", "/v2/keys/t", &[]).index;
    let ttl_line = t.lines().nth(3).expect("TTL line");
    let ttl: u64 = ttl_line
        .strip_prefix("TTL: ")
        .and_then(|s| s.parse().ok())
        .expect("TTL");
    assert!((95..=100).contains(&ttl), "{t}");
    assert_eq!(
        t.replace(ttl_line, "TTL: T"),
        format!("Key: /t\nCreated-Index: {ti}\nModified-Index: {ti}\nTTL: T\nIndex: {ti}\n\nv\n")
    );

    // A short TTL expires: a waiter sees the expiry, then the key is gone.
    let set = curl(
        &server,
        "PUT",
        "/v2/keys/ex",
        &[("value", "1"), ("ttl", "1")],
    );
    assert_eq!(set.status, 201);
    let e = set.index;
    let created = without_expiration(set.json());
    assert_eq!(
        created,
        json!({"action":"set","node":{"key":"/ex","value":"1","ttl":1,"modifiedIndex":e,"createdIndex":e}})
    );
    let expired = curl(
        &server,
        "GET",
        &format!("/v2/keys/ex?wait=true&waitIndex={}", e + 1),
        &[],
    );
    let expired = without_expiration(expired.json());
    let m = expired["node"]["modifiedIndex"].as_i64().expect("index");
    assert!(m > e);
    assert_eq!(
        expired,
        json!({"action":"expire","node":{"key":"/ex","modifiedIndex":m,"createdIndex":e},
               "prevNode":{"key":"/ex","value":"1","modifiedIndex":e,"createdIndex":e}})
    );
    let gone = curl(&server, "GET", "/v2/keys/ex", &[]);
    assert_eq!(gone.status, 404);
}

#[test]
fn curl_gets_etcds_statuses_and_error_bodies() {
    let server = start();
    let set = curl(&server, "PUT", "/v2/keys/d/f", &[("value", "baz")]);
    let i = set.index;
    let err = |method: &str, path: &str, form: &[(&str, &str)], status: u16, body: &str| {
        let r = curl(&server, method, path, form);
        assert_eq!(
            (r.status, r.body.as_str()),
            (status, body),
            "{method} {path} {form:?}"
        );
        assert_eq!(r.content_type, "application/json");
    };
    let at = |code: u32, message: &str, cause: &str, index: i64| {
        format!("{{\"errorCode\":{code},\"message\":\"{message}\",\"cause\":\"{cause}\",\"index\":{index}}}\n")
    };
    err(
        "GET",
        "/v2/keys/missing",
        &[],
        404,
        &at(100, "Key not found", "/missing", i),
    );
    err(
        "GET",
        "/v2/keys/gone/deeper",
        &[],
        404,
        &at(100, "Key not found", "/gone", i),
    );
    err(
        "PUT",
        "/v2/keys/d/f",
        &[("value", "x"), ("prevExist", "false")],
        412,
        &at(105, "Key already exists", "/d/f", i),
    );
    err(
        "PUT",
        "/v2/keys/d/f",
        &[("value", "x"), ("prevValue", "nope")],
        412,
        &at(101, "Compare failed", "[nope != baz]", i),
    );
    err(
        "PUT",
        "/v2/keys/d/f",
        &[("value", "x"), ("prevIndex", "1")],
        412,
        &at(101, "Compare failed", &format!("[1 != {i}]"), i),
    );
    err(
        "PUT",
        "/v2/keys/d/f",
        &[("value", "x"), ("prevIndex", "1"), ("prevValue", "q")],
        412,
        &at(101, "Compare failed", &format!("[q != baz] [1 != {i}]"), i),
    );
    err(
        "PUT",
        "/v2/keys/zzz",
        &[("value", "x"), ("prevExist", "true")],
        404,
        &at(100, "Key not found", "/zzz", i),
    );
    err(
        "DELETE",
        "/v2/keys/d",
        &[],
        403,
        &at(102, "Not a file", "/d", i),
    );
    err(
        "DELETE",
        "/v2/keys/d?dir=true",
        &[],
        403,
        &at(108, "Directory not empty", "/d", i),
    );
    err(
        "PUT",
        "/v2/keys/d",
        &[("value", "v")],
        403,
        &at(102, "Not a file", "/d", i),
    );
    err(
        "PUT",
        "/v2/keys/d/f/g",
        &[("value", "x")],
        400,
        &at(104, "Not a directory", "/d/f", i),
    );
    err(
        "PUT",
        "/v2/keys/",
        &[("value", "x")],
        400,
        &at(107, "Root is read only", "/", i),
    );
    err(
        "DELETE",
        "/v2/keys/?recursive=true",
        &[],
        400,
        &at(107, "Root is read only", "/", i),
    );
    err(
        "DELETE",
        "/v2/keys/d/f?prevValue=x",
        &[],
        412,
        &at(101, "Compare failed", "[x != baz]", i),
    );
    // Bad parameters are refused before the store is read: index 0.
    err(
        "PUT",
        "/v2/keys/t",
        &[("value", "1"), ("ttl", "abc")],
        400,
        &at(
            202,
            "The given TTL in POST form is not a number",
            "invalid value for \\\"ttl\\\"",
            0,
        ),
    );
    err(
        "PUT",
        "/v2/keys/t",
        &[("value", "1"), ("ttl", "-1")],
        400,
        &at(
            202,
            "The given TTL in POST form is not a number",
            "invalid value for \\\"ttl\\\"",
            0,
        ),
    );
    err(
        "GET",
        "/v2/keys/t?wait=true&waitIndex=abc",
        &[],
        400,
        &at(
            203,
            "The given index in POST form is not a number",
            "invalid value for \\\"waitIndex\\\"",
            0,
        ),
    );
    err(
        "DELETE",
        "/v2/keys/t?prevIndex=99999999999999999999999",
        &[],
        400,
        &at(
            203,
            "The given index in POST form is not a number",
            "invalid value for \\\"prevIndex\\\"",
            0,
        ),
    );
    err(
        "PUT",
        "/v2/keys/t?prevExist=maybe",
        &[("value", "1")],
        400,
        &at(209, "Invalid field", "invalid value for prevExist", 0),
    );
    err(
        "PUT",
        "/v2/keys/t",
        &[("ttl", "5"), ("refresh", "true"), ("value", "2")],
        400,
        &at(
            211,
            "Value provided on refresh",
            "A value was provided on a refresh",
            0,
        ),
    );
    // Nothing changed.
    assert_eq!(curl(&server, "GET", "/v2/keys/d/f", &[]).index, i);

    let patch = curl(&server, "PATCH", "/v2/keys/d/f", &[("value", "1")]);
    assert_eq!(
        (patch.status, patch.body.as_str()),
        (405, "Method Not Allowed\n")
    );

    // Compare-and-delete and recursive delete.
    let cad = curl(&server, "DELETE", "/v2/keys/d/f?prevValue=baz", &[]);
    assert_eq!(cad.status, 200);
    let c = cad.index;
    assert_eq!(
        cad.body,
        format!("{{\"action\":\"compareAndDelete\",\"node\":{{\"key\":\"/d/f\",\"modifiedIndex\":{c},\"createdIndex\":{i}}},\"prevNode\":{{\"key\":\"/d/f\",\"value\":\"baz\",\"modifiedIndex\":{i},\"createdIndex\":{i}}}}}\n")
    );
    let mk = curl(&server, "PUT", "/v2/keys/q", &[("dir", "true")]);
    assert_eq!(mk.status, 201);
    let q = mk.index;
    assert_eq!(
        mk.body,
        format!("{{\"action\":\"set\",\"node\":{{\"key\":\"/q\",\"dir\":true,\"modifiedIndex\":{q},\"createdIndex\":{q}}}}}\n")
    );
    curl(&server, "PUT", "/v2/keys/q/x/y", &[("value", "1")]);
    let rm = curl(&server, "DELETE", "/v2/keys/q?recursive=true", &[]);
    let r = rm.index;
    assert_eq!(
        rm.body,
        format!("{{\"action\":\"delete\",\"node\":{{\"key\":\"/q\",\"dir\":true,\"modifiedIndex\":{r},\"createdIndex\":{q}}},\"prevNode\":{{\"key\":\"/q\",\"dir\":true,\"modifiedIndex\":{q},\"createdIndex\":{q}}}}}\n")
    );
    assert_eq!(curl(&server, "GET", "/v2/keys/q/x/y", &[]).status, 404);

    // Update and compare-and-swap answer 200 with the previous node.
    let up = curl(&server, "PUT", "/v2/keys/u", &[("value", "1")]);
    let u = up.index;
    let cas = curl(
        &server,
        "PUT",
        "/v2/keys/u",
        &[("value", "2"), ("prevValue", "1")],
    );
    let s = cas.index;
    assert_eq!(cas.status, 200);
    assert_eq!(
        cas.body,
        format!("{{\"action\":\"compareAndSwap\",\"node\":{{\"key\":\"/u\",\"value\":\"2\",\"modifiedIndex\":{s},\"createdIndex\":{u}}},\"prevNode\":{{\"key\":\"/u\",\"value\":\"1\",\"modifiedIndex\":{u},\"createdIndex\":{u}}}}}\n")
    );
}

#[test]
fn long_polls_wake_up_and_wait_index_replays() {
    let server = start();
    let url = server.client_url();
    let waiter = std::thread::spawn(move || {
        let out = Command::new("curl")
            .args(["-s", "-i", "--max-time", "30"])
            .arg(format!("{url}/v2/keys/w?wait=true"))
            .output()
            .expect("curl");
        parse_reply(&out)
    });
    wait_for_waiters(&server, 1);
    let set = curl(&server, "PUT", "/v2/keys/w", &[("value", "1")]);
    let w = set.index;
    let woke = waiter.join().expect("waiter");
    assert_eq!(woke.status, 200);
    assert_eq!(
        woke.body,
        format!("{{\"action\":\"set\",\"node\":{{\"key\":\"/w\",\"value\":\"1\",\"modifiedIndex\":{w},\"createdIndex\":{w}}}}}\n")
    );

    // History: the first change at or after waitIndex, below the directory.
    let a = curl(&server, "PUT", "/v2/keys/r/a", &[("value", "1")]).index;
    let b = curl(&server, "PUT", "/v2/keys/r/b", &[("value", "2")]).index;
    curl(&server, "PUT", "/v2/keys/r/c", &[("value", "3")]);
    let replay = curl(
        &server,
        "GET",
        &format!("/v2/keys/r?wait=true&recursive=true&waitIndex={}", a + 1),
        &[],
    );
    assert_eq!(
        replay.body,
        format!("{{\"action\":\"set\",\"node\":{{\"key\":\"/r/b\",\"value\":\"2\",\"modifiedIndex\":{b},\"createdIndex\":{b}}}}}\n")
    );
    let exact = curl(
        &server,
        "GET",
        &format!("/v2/keys/r/a?wait=true&waitIndex={a}"),
        &[],
    );
    assert_eq!(exact.json()["node"]["value"], "1");

    // In-order keys: 20 digits, the creation index, increasing.
    let p1 = curl(&server, "POST", "/v2/keys/queue", &[("value", "j1")]);
    let p2 = curl(&server, "POST", "/v2/keys/queue", &[("value", "j2")]);
    assert_eq!((p1.status, p2.status), (201, 201));
    let (i1, i2) = (p1.index, p2.index);
    assert!(i2 > i1);
    assert_eq!(
        p1.body,
        format!("{{\"action\":\"create\",\"node\":{{\"key\":\"/queue/{i1:020}\",\"value\":\"j1\",\"modifiedIndex\":{i1},\"createdIndex\":{i1}}}}}\n")
    );
    assert_eq!(ok(&server, &["mk", "--in-order", "/queue", "j3"]), "j3\n");
    let listed = ok(&server, &["ls", "--sort", "/queue"]);
    let names: Vec<&str> = listed.lines().collect();
    assert_eq!(names.len(), 3);
    assert_eq!(names[0], format!("/queue/{i1:020}"));
    assert_eq!(names[1], format!("/queue/{i2:020}"));
    assert!(names[2] > names[1], "{listed}");
}

#[test]
fn a_wait_index_older_than_the_history_is_refused() {
    let server = start();
    // etcd's v2 store keeps the last 1000 events; cairn keeps what was not compacted.
    let addr = server.client_addr();
    for n in 0..1005 {
        let r = http_request(&addr, "PUT", &format!("/v2/keys/h?value={n}"), "").expect("put");
        assert!(r.status == 200 || r.status == 201, "{r:?}");
    }
    let last = curl(&server, "GET", "/v2/keys/h", &[]).index;
    if server.kind() == ServerKind::Cairn {
        let out = server.etcdctl(&["compact", &last.to_string()]);
        out.ok();
    }
    let r = curl(&server, "GET", "/v2/keys/h?wait=true&waitIndex=1", &[]);
    assert_eq!(r.status, 400);
    let body = r.json();
    assert_eq!(body["errorCode"], 401);
    assert_eq!(
        body["message"],
        "The event in requested index is outdated and cleared"
    );
    let cause = body["cause"].as_str().expect("cause");
    let re = regex::Regex::new(r"^the requested history has been cleared \[\d+/1\]$").expect("re");
    assert!(re.is_match(cause), "{cause}");
    assert_eq!(body["index"], last);
}

#[test]
fn etcdctl_v2_watches() {
    let server = start();
    let once = Background::start(&server, &["watch", "/wd/x"]);
    let forever = Background::start(&server, &["watch", "--forever", "--recursive", "/wd"]);
    let exec = Background::start(
        &server,
        &[
            "exec-watch",
            "--recursive",
            "/wd",
            "--",
            "sh",
            "-c",
            "echo \"$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\"",
        ],
    );
    wait_for_waiters(&server, 3);
    ok(&server, &["set", "/wd/x", "1"]);
    assert_eq!(once.lines(1), ["1"]);
    assert_eq!(forever.lines(2), ["[set] /wd/x", "1"]);
    assert_eq!(exec.lines(1), ["set /wd/x 1"]);
    // The long-running ones are waiting again before the next change.
    wait_for_waiters(&server, 2);
    ok(&server, &["set", "/wd/y", "2"]);
    assert_eq!(forever.lines(2), ["[set] /wd/y", "2"]);
    assert_eq!(exec.lines(1), ["set /wd/y 2"]);
    wait_for_waiters(&server, 2);
    ok(&server, &["rm", "/wd/y"]);
    assert_eq!(forever.lines(2), ["[delete] /wd/y", "PrevNode.Value: 2"]);
    assert_eq!(exec.lines(1), ["delete /wd/y "]);
}

#[test]
fn members_machines_and_cluster_health() {
    let server = start();
    let members = curl(&server, "GET", "/v2/members", &[]);
    assert_eq!(members.status, 200);
    let id = members.json()["members"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let url = server.client_url();
    let peer = server.peer_url();
    assert_eq!(
        members.body,
        format!("{{\"members\":[{{\"id\":\"{id}\",\"name\":\"default\",\"peerURLs\":[\"{peer}\"],\"clientURLs\":[\"{url}\"]}}]}}\n")
    );
    let machines = curl(&server, "GET", "/v2/machines", &[]);
    assert_eq!(
        (machines.status, machines.body.as_str()),
        (200, url.as_str())
    );
    assert_eq!(machines.content_type, "text/plain; charset=utf-8");
    assert_eq!(
        ok(&server, &["member", "list"]),
        format!("{id}: name=default peerURLs={peer} clientURLs={url} isLeader=true\n")
    );
    assert_eq!(
        ok(&server, &["cluster-health"]),
        format!("member {id} is healthy: got healthy result from {url}\ncluster is healthy\n")
    );
    let stats = curl(&server, "GET", "/v2/stats/self", &[]).json();
    assert_eq!(stats["name"], "default");
    assert_eq!(stats["id"], id.as_str());
    assert_eq!(stats["state"], "StateLeader");
    assert_eq!(stats["leaderInfo"]["leader"], id.as_str());
    let leader = curl(&server, "GET", "/v2/stats/leader", &[]).json();
    assert_eq!(leader, json!({"leader": id, "followers": {}}));
    let store = curl(&server, "GET", "/v2/stats/store", &[]).json();
    assert_eq!(store["watchers"], 0);
}

#[test]
fn without_enable_v2_and_on_unknown_paths_the_answer_is_404() {
    let server = Server::start(ServerOpts::new());
    for path in [
        "/v2/keys/foo",
        "/v2/members",
        "/etc/passwd",
        "/nonexistent/path",
    ] {
        let r = curl(&server, "GET", path, &[]);
        assert_eq!(
            (r.status, r.body.as_str()),
            (404, "404 page not found\n"),
            "{path}"
        );
        assert_eq!(r.content_type, "text/plain; charset=utf-8");
    }
    // gRPC still reaches its services.
    assert_eq!(server.etcdctl(&["put", "k", "v"]).ok(), "OK\n");
    let enabled = start();
    let r = curl(&enabled, "GET", "/nonexistent/path", &[]);
    assert_eq!((r.status, r.body.as_str()), (404, "404 page not found\n"));
}

#[test]
fn a_long_poll_whose_client_goes_away_stops_waiting() {
    let server = start();
    // Ten clients give up on their long polls (curl's own timeout closes the connection).
    for _ in 0..10 {
        let out = Command::new("curl")
            .args(["-s", "-m", "0.3"])
            .arg(format!("{}/v2/keys/gone?wait=true", server.client_url()))
            .output()
            .expect("run curl");
        assert_eq!(out.status.code(), Some(28), "curl's timeout");
    }
    // None of them is still counted (nor watching): the count drops back to zero.
    let end = Instant::now() + BACKGROUND_DEADLINE;
    loop {
        let stats: Value = curl(&server, "GET", "/v2/stats/store", &[]).json();
        if stats["watchers"] == json!(0) {
            break;
        }
        assert!(
            Instant::now() < end,
            "abandoned waits still counted: {stats}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
