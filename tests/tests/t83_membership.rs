//! Runtime membership with the real etcdctl: add a learner, start it with
//! `--initial-cluster-state existing`, promote it, remove members.

use std::time::{Duration, Instant};

use cairn_tests::{free_port, Cluster, Server, ServerKind, ServerOpts};

const DEADLINE: Duration = Duration::from_secs(30);

fn env_value<'a>(out: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=\"");
    out.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {name} in {out:?}"))
}

/// Runs a reconfiguration, retried while etcd says "unhealthy cluster" (it refuses until
/// every member has been connected for a while).
fn reconfigure(server: &Server, args: &[&str]) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = server.etcdctl(args);
        if out.status.success() {
            return out.stdout;
        }
        assert!(
            out.stderr.contains("etcdserver: unhealthy cluster"),
            "{out:?}"
        );
        assert!(
            Instant::now() < deadline,
            "{args:?} refused until the deadline: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn member_line<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    list.lines().find(|l| l.split(", ").nth(2) == Some(name))
}

#[test]
fn a_learner_joins_catches_up_is_promoted_and_members_are_removed() {
    let cluster = Cluster::start(3);
    for i in 0..50 {
        let out = cluster.etcdctl(&["put", &format!("k{i}"), &format!("v{i}")]);
        assert_eq!(out.ok(), "OK\n");
    }
    let (client_port, peer_port) = (free_port(), free_port());
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let peer_flag = format!("--peer-urls={peer_url}");
    let text = reconfigure(
        &cluster.members[0],
        &["member", "add", "m3", "--learner", &peer_flag],
    );
    // "Member <16 hex> added to cluster <16 hex>" then the new member's settings.
    let first = text.lines().next().expect("output");
    // etcdctl prints ids with %16x: space-padded, not zero-padded.
    let words: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(
        (words[0], words[2], words[3], words[4]),
        ("Member", "added", "to", "cluster"),
        "{text}"
    );
    let new_id = words[1].to_string();
    assert_eq!(env_value(&text, "ETCD_NAME"), "m3");
    assert_eq!(
        env_value(&text, "ETCD_INITIAL_ADVERTISE_PEER_URLS"),
        peer_url
    );
    assert_eq!(env_value(&text, "ETCD_INITIAL_CLUSTER_STATE"), "existing");
    let initial_cluster = env_value(&text, "ETCD_INITIAL_CLUSTER").to_string();
    assert_eq!(initial_cluster.split(',').count(), 4, "{initial_cluster}");
    assert!(initial_cluster.contains(&format!("m3={peer_url}")));

    // Listed as an unstarted learner until it runs.
    let list = cluster.etcdctl(&["member", "list"]).ok().to_string();
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("{new_id}, ")))
        .unwrap_or_else(|| panic!("{new_id} not in {list}"));
    assert!(line.contains(", unstarted, "), "{line}");
    assert!(line.ends_with(", true"), "{line}");

    let mut learner = Server::launch(
        ServerOpts::new()
            .name("m3")
            .initial_cluster(&initial_cluster)
            .initial_cluster_state("existing")
            .initial_cluster_token(cluster.token())
            .ports(client_port, peer_port),
    );
    // A learner cannot serve linearizable requests; it is ready once it has the data.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = learner.etcdctl(&["get", "--consistency=s", "k49"]);
        if out.status.success() && out.stdout == "k49\nv49\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "learner never caught up: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Promotion succeeds once the learner is in sync.
    let deadline = Instant::now() + DEADLINE;
    let promoted = loop {
        let out = cluster.etcdctl(&["member", "promote", &new_id]);
        if out.status.success() {
            break out.stdout;
        }
        assert!(
            out.stderr
                .contains("can only promote a learner member which is in sync with leader"),
            "{out:?}"
        );
        assert!(Instant::now() < deadline, "learner never in sync");
        std::thread::sleep(Duration::from_millis(100));
    };
    let words: Vec<&str> = promoted.split_whitespace().collect();
    assert_eq!(
        &words[..5],
        ["Member", new_id.as_str(), "promoted", "in", "cluster"],
        "{promoted}"
    );
    // Promoting it again is refused with etcd's message.
    let again = cluster.etcdctl(&["member", "promote", &new_id]);
    assert!(!again.status.success());
    assert!(
        again
            .stderr
            .contains("etcdserver: can only promote a learner member"),
        "{again:?}"
    );
    learner.wait_ready();
    let list = learner.etcdctl(&["member", "list"]).ok().to_string();
    assert_eq!(list.lines().count(), 4, "{list}");
    let line = member_line(&list, "m3").expect("m3 listed");
    assert_eq!(
        line,
        format!("{new_id}, started, m3, {peer_url}, http://127.0.0.1:{client_port}, false")
    );

    // Remove an original member: the cluster goes on with m1, m2, m3.
    let m0_id = member_line(&list, "m0")
        .expect("m0")
        .split(", ")
        .next()
        .unwrap()
        .to_string();
    let removed = reconfigure(&learner, &["member", "remove", &m0_id]);
    let words: Vec<&str> = removed.split_whitespace().collect();
    assert_eq!(
        &words[..5],
        ["Member", m0_id.as_str(), "removed", "from", "cluster"],
        "{removed}"
    );
    let list = learner.etcdctl(&["member", "list"]).ok().to_string();
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(member_line(&list, "m0").is_none());
    // Removing it again: etcd's error for a removed id (etcd 3.4 itself lets the
    // request time out after 5 s; cairn answers at once).
    if learner.kind() == ServerKind::Cairn {
        let out = learner.etcdctl(&["member", "remove", &m0_id]);
        assert!(!out.status.success());
        assert!(
            out.stderr.contains("Error: etcdserver: member not found"),
            "{out:?}"
        );
    }
    // Writes still commit through the new voter.
    // (A removed leader takes its uncommitted proposals with it: the put may time out
    // once while the others elect a new leader.)
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = learner.etcdctl(&["put", "after", "remove"]);
        if out.status.success() {
            assert_eq!(out.stdout, "OK\n");
            break;
        }
        assert!(
            out.stderr.contains("request timed out") || out.stderr.contains("leader"),
            "{out:?}"
        );
        assert!(
            Instant::now() < deadline,
            "no write after the removal: {out:?}"
        );
    }
    assert_eq!(
        cluster.members[1].etcdctl(&["get", "after"]).ok(),
        "after\nremove\n"
    );
}
