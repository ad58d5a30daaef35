//! `etcdctl endpoint status` and `endpoint health` against one member.

use cairn_tests::{expected_version, member_id, Server, ServerOpts};
use regex::Regex;
use serde_json::Value;

/// The default `--initial-cluster-token`.
const DEFAULT_TOKEN: &str = "etcd-cluster";
/// A Go `time.Duration` as `String()` prints it, e.g. `1.600319ms`, `950µs`, `2s`.
const GO_DURATION: &str = r"(?:\d+h)?(?:\d+m)?\d+(?:\.\d+)?(?:ns|µs|ms|s)";
/// go-humanize's byte sizes, e.g. `20 kB`, `1.2 MB`, `512 B`.
const HUMAN_BYTES: &str = r"\d+(?:\.\d+)? (?:B|kB|MB|GB|TB)";

fn expected_member_hex(server: &Server) -> String {
    format!("{:x}", member_id(&[&server.peer_url()], DEFAULT_TOKEN))
}

fn table_cells(line: &str) -> Vec<String> {
    line.trim_matches('|')
        .split('|')
        .map(|cell| cell.trim().to_string())
        .collect()
}

#[test]
fn endpoint_status_simple_and_table() {
    let server = Server::start(ServerOpts::new());
    server.etcdctl(&["put", "k", "v"]).ok();
    let id = expected_member_hex(&server);

    let out = server.etcdctl(&["endpoint", "status"]);
    let pattern = format!(
        r"^{url}, {id}, {version}, {HUMAN_BYTES}, true, false, (\d+), (\d+), (\d+), \n$",
        url = regex::escape(&server.client_url()),
        version = regex::escape(expected_version()),
    );
    let caps = Regex::new(&pattern)
        .unwrap()
        .captures(out.ok())
        .unwrap_or_else(|| panic!("{:?} does not match {pattern}", out.stdout));
    let number = |i: usize| caps[i].parse::<u64>().unwrap();
    let (term, index, applied) = (number(1), number(2), number(3));
    assert!(term >= 1, "raft term {term}");
    assert!(index >= 1, "raft index {index}");
    assert!(
        applied >= 1 && applied <= index,
        "applied {applied}, index {index}"
    );

    let out = server.etcdctl(&["endpoint", "status", "-w", "table"]);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 5, "{:?}", out.stdout);
    let border = Regex::new(r"^\+(-+\+)+$").unwrap();
    for line in [lines[0], lines[2], lines[4]] {
        assert!(border.is_match(line), "{line:?}");
    }
    assert_eq!(
        table_cells(lines[1]),
        [
            "ENDPOINT",
            "ID",
            "VERSION",
            "DB SIZE",
            "IS LEADER",
            "IS LEARNER",
            "RAFT TERM",
            "RAFT INDEX",
            "RAFT APPLIED INDEX",
            "ERRORS"
        ]
    );
    let row = table_cells(lines[3]);
    assert_eq!(row[0], server.client_url());
    assert_eq!(row[1], id);
    assert_eq!(row[2], expected_version());
    assert!(
        Regex::new(&format!("^{HUMAN_BYTES}$"))
            .unwrap()
            .is_match(&row[3]),
        "db size {:?}",
        row[3]
    );
    assert_eq!(&row[4..6], ["true", "false"]);
    assert_eq!(row[6], term.to_string());
    assert!(row[7].parse::<u64>().unwrap() >= index);
    assert!(row[8].parse::<u64>().unwrap() >= applied);
    assert_eq!(row[9], "");
}

#[test]
fn endpoint_status_json() {
    let server = Server::start(ServerOpts::new());
    let out = server.etcdctl(&["endpoint", "status", "-w", "json"]);
    let doc: Value = serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    let entries = doc.as_array().expect("a JSON array");
    assert_eq!(entries.len(), 1, "{doc}");
    assert_eq!(entries[0]["Endpoint"], server.client_url());
    let status = &entries[0]["Status"];
    let member = member_id(&[&server.peer_url()], DEFAULT_TOKEN);
    assert_eq!(
        status["header"]["member_id"].as_u64(),
        Some(member),
        "{doc}"
    );
    assert_eq!(status["leader"].as_u64(), Some(member), "{doc}");
    assert_ne!(
        status["header"]["cluster_id"].as_u64().unwrap_or(0),
        0,
        "{doc}"
    );
    assert_eq!(status["header"]["revision"], 1, "{doc}");
    assert_eq!(status["version"], expected_version(), "{doc}");
    let term = status["raftTerm"].as_u64().unwrap_or(0);
    assert!(term >= 1, "{doc}");
    assert_eq!(status["header"]["raft_term"].as_u64(), Some(term), "{doc}");
    assert!(status["raftIndex"].as_u64().unwrap_or(0) >= 1, "{doc}");
    assert!(
        status["raftAppliedIndex"].as_u64().unwrap_or(0) >= 1,
        "{doc}"
    );
    assert!(status["dbSize"].as_i64().unwrap_or(0) > 0, "{doc}");
    assert_eq!(status.get("isLearner"), None, "omitted when false: {doc}");
    assert_eq!(status.get("errors"), None, "omitted when empty: {doc}");
}

#[test]
fn endpoint_health() {
    let server = Server::start(ServerOpts::new());
    // etcdctl 3.4 prints the simple health line on stderr, not stdout.
    let out = server.etcdctl(&["endpoint", "health"]);
    assert_eq!(out.ok(), "", "{out:#?}");
    let pattern = format!(
        r"^{} is healthy: successfully committed proposal: took = {GO_DURATION}\n$",
        regex::escape(&server.client_url())
    );
    assert!(
        Regex::new(&pattern).unwrap().is_match(&out.stderr),
        "{:?} does not match {pattern}",
        out.stderr
    );

    let out = server.etcdctl(&["endpoint", "health", "-w", "table"]);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 5, "{:?}", out.stdout);
    assert_eq!(
        table_cells(lines[1]),
        ["ENDPOINT", "HEALTH", "TOOK", "ERROR"]
    );
    let row = table_cells(lines[3]);
    assert_eq!(row[..2], [server.client_url(), "true".to_string()]);
    assert!(
        Regex::new(&format!("^{GO_DURATION}$"))
            .unwrap()
            .is_match(&row[2]),
        "{row:?}"
    );
    assert_eq!(row[3], "");

    let out = server.etcdctl(&["endpoint", "health", "-w", "json"]);
    let doc: Value = serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    assert_eq!(doc[0]["endpoint"], server.client_url(), "{doc}");
    assert_eq!(doc[0]["health"], true, "{doc}");
    let took = doc[0]["took"].as_str().unwrap_or_default();
    assert!(
        Regex::new(&format!("^{GO_DURATION}$"))
            .unwrap()
            .is_match(took),
        "{doc}"
    );
    assert_eq!(doc[0].get("error"), None, "{doc}");

    let http = cairn_tests::http_get(&server.client_addr(), "/health").expect("GET /health");
    assert_eq!(http.status, 200);
    let doc: Value = serde_json::from_str(&http.body).expect("JSON body");
    assert_eq!(doc["health"], "true", "{}", http.body);
}

#[test]
fn metrics_urls_serve_metrics_and_health_and_etcd_log_flags_are_accepted() {
    let port = cairn_tests::free_port();
    let server = Server::start(
        ServerOpts::new()
            .arg("--listen-metrics-urls")
            .arg(&format!("http://127.0.0.1:{port}"))
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr"),
    );
    let addr = format!("127.0.0.1:{port}");
    let metrics = cairn_tests::http_get(&addr, "/metrics").expect("GET /metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == "etcd_server_has_leader 1"),
        "{}",
        metrics.body
    );
    let health = cairn_tests::http_get(&addr, "/health").expect("GET /health");
    assert_eq!(health.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(doc["health"], "true", "{}", health.body);
    // The client port still serves everything.
    assert_eq!(server.etcdctl(&["put", "k", "v"]).ok(), "OK\n");
}

#[test]
fn livez_and_readyz_run_etcds_named_checks() {
    let server = Server::start(ServerOpts::new());
    let addr = server.client_addr();
    let get = |path: &str| cairn_tests::http_get(&addr, path).expect(path);
    let health = get("/health?serializable=true&exclude=NOSPACE");
    assert_eq!(health.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    // etcd 3.4 leaves out the empty reason that current etcd writes.
    assert_eq!(
        (&doc["health"], doc["reason"].as_str().unwrap_or("")),
        (&serde_json::json!("true"), ""),
        "{}",
        health.body
    );
    if cairn_tests::server_kind() == cairn_tests::ServerKind::Etcd {
        return; // etcd 3.4 predates the named checks (etcd 3.6)
    }
    assert_eq!(get("/livez").body, "ok\n");
    let ready = get("/readyz?verbose");
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n\
             [+]non_learner ok\nok\n"
        )
    );
    assert_eq!(
        get("/readyz/linearizable_read?verbose").body,
        "[+]linearizable_read ok\nok\n"
    );
    assert_eq!(get("/livez?exclude=serializable_read&verbose").body, "ok\n");
    assert_eq!(get("/readyz/unknown").status, 404);
}

#[test]
fn etcd_36_flags_are_accepted_and_unknown_feature_gates_refused() {
    if cairn_tests::server_kind() == cairn_tests::ServerKind::Etcd {
        return; // etcd 3.4 predates these names
    }
    let server = Server::start(
        ServerOpts::new()
            .arg("--feature-gates")
            .arg("StopGRPCServiceOnDefrag=true,CompactHashCheck=false")
            .arg("--watch-progress-notify-interval")
            .arg("5s")
            .arg("--snapshot-catchup-entries")
            .arg("100")
            .arg("--max-learners")
            .arg("2")
            .arg("--compact-hash-check-time")
            .arg("1m"),
    );
    assert_eq!(server.etcdctl(&["put", "k", "v"]).ok(), "OK\n");
    drop(server);
    let mut refused = Server::launch(
        ServerOpts::new()
            .arg("--feature-gates")
            .arg("NoSuchGate=true"),
    );
    let status = refused.wait_exit(std::time::Duration::from_secs(20));
    assert!(!status.success());
    let log = refused.log_tail(50);
    assert!(
        log.contains("--feature-gates: unrecognized feature gate: NoSuchGate"),
        "{log}"
    );
}
