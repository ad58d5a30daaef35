//! The lease commands of the real `etcdctl`, with the exact outputs etcd 3.4 gives.

use cairn_tests::{Server, ServerOpts};
use regex::Regex;

/// `lease grant` and the lease id it printed (hex, as etcdctl prints and parses ids).
fn grant(server: &Server, ttl: &str) -> String {
    let out = server.etcdctl(&["lease", "grant", ttl]);
    let re = Regex::new(r"^lease ([0-9a-f]{16}) granted with TTL\((\d+)s\)\n$").unwrap();
    let caps = re
        .captures(out.ok())
        .unwrap_or_else(|| panic!("unexpected grant output {:?}", out.stdout));
    caps[1].to_string()
}

#[test]
fn grant_put_timetolive_keep_alive_list_and_revoke() {
    let server = Server::start(ServerOpts::new());
    let id = grant(&server, "100");
    assert_eq!(
        server.etcdctl(&["put", "foo", "bar", "--lease", &id]).ok(),
        "OK\n"
    );
    assert_eq!(
        server.etcdctl(&["lease", "keep-alive", "--once", &id]).ok(),
        format!("lease {id} keepalived with TTL(100)\n")
    );
    let ttl = server.etcdctl(&["lease", "timetolive", &id]);
    let re = Regex::new(r"^lease ([0-9a-f]{16}) granted with TTL\(100s\), remaining\((\d+)s\)\n$")
        .unwrap();
    let caps = re
        .captures(ttl.ok())
        .unwrap_or_else(|| panic!("unexpected timetolive output {:?}", ttl.stdout));
    assert_eq!(caps[1], id);
    let remaining: i64 = caps[2].parse().unwrap();
    assert!((98..=100).contains(&remaining), "remaining {remaining}");
    let with_keys = server.etcdctl(&["lease", "timetolive", "--keys", &id]);
    let re = Regex::new(
        r"^lease ([0-9a-f]{16}) granted with TTL\(100s\), remaining\((\d+)s\), attached keys\(\[foo\]\)\n$",
    )
    .unwrap();
    let caps = re
        .captures(with_keys.ok())
        .unwrap_or_else(|| panic!("unexpected timetolive --keys output {:?}", with_keys.stdout));
    assert_eq!(caps[1], id);

    let second = grant(&server, "200");
    assert_eq!(
        server.etcdctl(&["lease", "list"]).ok(),
        format!("found 2 leases\n{id}\n{second}\n"),
        "listed soonest expiry first"
    );

    assert_eq!(
        server.etcdctl(&["lease", "revoke", &id]).ok(),
        format!("lease {id} revoked\n")
    );
    assert_eq!(server.etcdctl(&["get", "foo"]).ok(), "");
    assert_eq!(
        server.etcdctl(&["lease", "timetolive", &id]).ok(),
        format!("lease {id} already expired\n")
    );
    assert_eq!(
        server.etcdctl(&["lease", "list"]).ok(),
        format!("found 1 leases\n{second}\n")
    );
}

#[test]
fn lease_errors_as_etcdctl_prints_them() {
    let server = Server::start(ServerOpts::new());
    assert_eq!(
        server.etcdctl(&["lease", "grant", "9000000001"]).fail(),
        "Error: failed to grant lease (etcdserver: too large lease TTL)"
    );
    assert_eq!(
        server.etcdctl(&["lease", "revoke", "1234"]).fail(),
        "Error: failed to revoke lease (etcdserver: requested lease not found)"
    );
    let keep_alive = server.etcdctl(&["lease", "keep-alive", "--once", "1234"]);
    assert_eq!(
        keep_alive.fail(),
        "Error: etcdserver: requested lease not found"
    );
    assert_eq!(keep_alive.status.code(), Some(2), "{keep_alive:#?}");
    assert_eq!(
        server.etcdctl(&["put", "x", "y", "--lease=1234"]).fail(),
        "Error: etcdserver: requested lease not found"
    );
    assert_eq!(
        server.etcdctl(&["lease", "timetolive", "1234"]).ok(),
        "lease 0000000000001234 already expired\n"
    );
    assert_eq!(server.etcdctl(&["lease", "list"]).ok(), "found 0 leases\n");
    assert_eq!(
        grant(&server, "1").len(),
        16,
        "a one-second lease is granted (with the minimum TTL)"
    );
    let out = server.etcdctl(&["lease", "grant", "1"]);
    assert!(
        out.ok().ends_with(" granted with TTL(2s)\n"),
        "minimum TTL: {:?}",
        out.stdout
    );
}
