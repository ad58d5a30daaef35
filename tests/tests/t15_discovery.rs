//! Bootstrapping through `cairn-discovery`: three members started with `--discovery`
//! form one cluster, a fourth is refused with etcd's `discovery: cluster is full`, a
//! restarted member comes back without discovery; the service refuses bad input. With
//! `CAIRN_TEST_SERVER=etcd` the members are real etcd 3.4 processes: the service speaks
//! the protocol etcd's discovery client expects.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::{free_port, http_get, http_request, server_kind, Server, ServerKind, ServerOpts};

/// `cairn-discovery` on a free port over the key space of `store`, stopped by pid.
struct Discovery {
    child: Child,
    addr: String,
}

impl Discovery {
    fn start(store: &Server) -> Discovery {
        Discovery::start_with(&["--endpoints", &store.client_addr()])
    }

    fn start_with(args: &[&str]) -> Discovery {
        let addr = format!("127.0.0.1:{}", free_port());
        let exe = std::env::current_exe().unwrap();
        let binary: PathBuf = exe
            .parent()
            .and_then(|p| p.parent())
            .unwrap()
            .join("cairn-discovery");
        let child = Command::new(binary)
            .args(["--listen", &addr])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cairn-discovery");
        let discovery = Discovery { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http_get(&discovery.addr, "/health").is_ok_and(|r| r.status == 200) {
            assert!(Instant::now() < deadline, "cairn-discovery did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        discovery
    }

    fn new_token(&self, size: usize) -> String {
        let resp = http_get(&self.addr, &format!("/new?size={size}")).unwrap();
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert!(
            resp.body.starts_with(&format!("http://{}/", self.addr)),
            "{}",
            resp.body
        );
        resp.body.trim().to_string()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        // SIGTERM: the service stops its embedded cairn (if any) on the way out.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_members_bootstrap_through_discovery_and_a_fourth_is_refused() {
    let store = Server::start(ServerOpts::new().name("store"));
    let discovery = Discovery::start(&store);
    let url = discovery.new_token(3);
    let mut members: Vec<Server> = (0..3)
        .map(|i| Server::launch(ServerOpts::new().name(&format!("m{i}")).discovery(&url)))
        .collect();
    for m in &mut members {
        m.wait_ready();
    }
    let list = members[0].etcdctl(&["member", "list"]);
    let mut names: Vec<&str> = list
        .ok()
        .lines()
        .map(|l| l.split(", ").nth(2).unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["m0", "m1", "m2"]);
    assert_eq!(members[1].etcdctl(&["put", "k", "v"]).ok(), "OK\n");
    assert_eq!(
        members[2].etcdctl(&["get", "k", "--print-value-only"]).ok(),
        "v\n"
    );

    // A fourth member: the cluster is full (etcd would become a proxy by default).
    let mut fourth = Server::launch(
        ServerOpts::new()
            .name("m3")
            .discovery(&url)
            .arg("--discovery-fallback=exit"),
    );
    let status = fourth.wait_exit(Duration::from_secs(60));
    assert!(!status.success());
    let log = fourth.log_tail(200);
    assert!(log.contains("discovery: cluster is full"), "{log}");

    // A restarted member has its data dir: discovery is not asked again.
    members[1].restart();
    assert_eq!(
        members[1]
            .etcdctl(&["get", "k", "--print-value-only", "--consistency=s"])
            .ok(),
        "v\n"
    );
    assert_eq!(
        members[0].etcdctl(&["member", "list"]).ok().lines().count(),
        3
    );
}

#[test]
fn the_service_refuses_bad_input_and_changes_nothing() {
    let store = Server::start(ServerOpts::new().name("store"));
    let discovery = Discovery::start(&store);
    for size in ["0", "abc", "-1", "100000"] {
        let resp = http_get(&discovery.addr, &format!("/new?size={size}")).unwrap();
        assert_eq!(resp.status, 400, "size {size}: {}", resp.body);
    }
    let resp = http_get(&discovery.addr, "/0123456789abcdef/_config/size").unwrap();
    assert_eq!(resp.status, 404);
    assert!(resp.body.contains(r#""errorCode":100"#), "{}", resp.body);
    let url = discovery.new_token(1);
    let token = url.rsplit('/').next().unwrap().to_string();
    let size = http_get(&discovery.addr, &format!("/{token}/_config/size")).unwrap();
    assert_eq!(size.status, 200);
    assert!(size.body.contains(r#""value":"1""#), "{}", size.body);
    // A registration without a value, with a malformed body, or under an unknown token.
    let put = |path: &str, body: &str| http_request(&discovery.addr, "PUT", path, body).unwrap();
    assert_eq!(
        put(&format!("/{token}/abc?prevExist=false"), "").status,
        400
    );
    assert_eq!(
        put(&format!("/{token}/abc?prevExist=false"), "garbage").status,
        400
    );
    assert_eq!(
        put("/ffffffffffffffff/abc?prevExist=false", "value=a").status,
        404
    );
    assert_eq!(
        put(&format!("/{token}/_config?prevExist=false"), "value=a").status,
        403
    );
    // Nothing was registered.
    let dir = http_get(&discovery.addr, &format!("/{token}")).unwrap();
    assert_eq!(dir.status, 200);
    assert!(!dir.body.contains(r#""value""#), "{}", dir.body);
    // One registration; the same id again is refused as etcd's client expects.
    let first = put(
        &format!("/{token}/abc?prevExist=false"),
        "value=m0%3Dhttp%3A%2F%2F127.0.0.1%3A1",
    );
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(
        first.body.contains(r#""value":"m0=http://127.0.0.1:1""#),
        "{}",
        first.body
    );
    let again = put(&format!("/{token}/abc?prevExist=false"), "value=x");
    assert_eq!(again.status, 412);
    assert!(again.body.contains(r#""errorCode":105"#), "{}", again.body);
}

/// etcd 3.6's v3 discovery: the registrations are keys of a running cluster.
#[test]
fn v3_discovery_through_a_running_cluster() {
    if server_kind() == ServerKind::Etcd {
        return; // etcd 3.4 has no v3 discovery
    }
    let store = Server::start(ServerOpts::new().name("store"));
    let token = "fleet-a";
    assert_eq!(
        store
            .etcdctl(&["put", &format!("/_etcd/registry/{token}/_config/size"), "3"])
            .ok(),
        "OK\n"
    );
    let endpoints = store.client_addr();
    let mut members: Vec<Server> = (0..3)
        .map(|i| {
            Server::launch(
                ServerOpts::new()
                    .name(&format!("v{i}"))
                    .discovery_v3(&endpoints, token),
            )
        })
        .collect();
    for m in &mut members {
        m.wait_ready();
    }
    assert_eq!(
        members[2].etcdctl(&["member", "list"]).ok().lines().count(),
        3
    );
    let registered = store.etcdctl(&[
        "get",
        &format!("/_etcd/registry/{token}/members/"),
        "--prefix",
        "--keys-only",
    ]);
    assert_eq!(registered.ok().lines().filter(|l| !l.is_empty()).count(), 3);
    let mut fourth = Server::launch(ServerOpts::new().name("v3").discovery_v3(&endpoints, token));
    assert!(!fourth.wait_exit(Duration::from_secs(60)).success());
    assert!(fourth.log_tail(200).contains("discovery: cluster is full"));
    // A restarted member comes back from its data dir, without discovery.
    members[0].restart();
    assert_eq!(members[0].etcdctl(&["put", "after", "1"]).ok(), "OK\n");
    assert_eq!(
        members[0].etcdctl(&["member", "list"]).ok().lines().count(),
        3
    );
}

/// Without `--endpoints`, the service keeps its tokens in a cairn of its own.
#[test]
fn the_service_runs_its_own_cairn_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let discovery = Discovery::start_with(&["--data-dir", data.to_str().unwrap()]);
    let url = discovery.new_token(2);
    let token = url.rsplit('/').next().unwrap().to_string();
    let size = http_get(&discovery.addr, &format!("/{token}/_config/size")).unwrap();
    assert!(size.body.contains(r#""value":"2""#), "{}", size.body);
    assert!(
        data.join("member").exists(),
        "the embedded cairn's data dir"
    );
}
