//! `etcdctl lock`, `etcdctl elect` and streaming `etcdctl lease keep-alive`: client-side
//! recipes over leases, txns and watches. Two contenders: the second waits while the
//! first holds, and takes its turn when the first goes away.

use std::time::{Duration, Instant};

use cairn_tests::{CtlProcess as Ctl, Server, ServerOpts, BACKGROUND_DEADLINE as DEADLINE};

/// Keys under `prefix`, polled until there are `n` of them.
fn wait_for_keys(server: &Server, prefix: &str, n: usize) -> Vec<String> {
    let end = Instant::now() + DEADLINE;
    loop {
        let out = server.etcdctl(&["get", prefix, "--prefix", "--keys-only"]);
        let keys: Vec<String> = out
            .ok()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if keys.len() == n {
            return keys;
        }
        assert!(
            Instant::now() < end,
            "expected {n} keys under {prefix}, have {keys:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lock_gives_mutual_exclusion_and_turns() {
    let server = Server::start(ServerOpts::new());
    let mut first = Ctl::start(&server, &["lock", "mylock"]);
    let first_key = first.line("first lock holder");
    assert!(first_key.starts_with("mylock/"), "{first_key}");

    let second = Ctl::start(&server, &["lock", "mylock"]);
    // The second contender has queued its key and waits for the first to go.
    let keys = wait_for_keys(&server, "mylock/", 2);
    assert!(keys.contains(&first_key), "{keys:?}");
    second.assert_silent("the second lock contender");

    first.terminate();
    let second_key = second.line("second lock holder");
    assert!(second_key.starts_with("mylock/"), "{second_key}");
    assert_ne!(second_key, first_key);
    assert_eq!(wait_for_keys(&server, "mylock/", 1), vec![second_key]);
}

#[test]
fn elect_takes_turns_and_observers_see_the_leader() {
    let server = Server::start(ServerOpts::new());
    let mut first = Ctl::start(&server, &["elect", "myelection", "p1"]);
    let first_key = first.line("first leader key");
    assert!(first_key.starts_with("myelection/"), "{first_key}");
    assert_eq!(first.line("first leader value"), "p1");

    let second = Ctl::start(&server, &["elect", "myelection", "p2"]);
    wait_for_keys(&server, "myelection/", 2);
    second.assert_silent("the second candidate");

    let observer = Ctl::start(&server, &["elect", "-l", "myelection"]);
    assert_eq!(observer.line("observed leader key"), first_key);
    assert_eq!(observer.line("observed leader value"), "p1");

    first.terminate();
    let second_key = second.line("second leader key");
    assert!(second_key.starts_with("myelection/"), "{second_key}");
    assert_ne!(second_key, first_key);
    assert_eq!(second.line("second leader value"), "p2");
    assert_eq!(observer.line("observed new leader key"), second_key);
    assert_eq!(observer.line("observed new leader value"), "p2");
}

#[test]
fn streaming_keep_alive_prints_each_renewal() {
    let server = Server::start(ServerOpts::new());
    let granted = server.etcdctl(&["lease", "grant", "3"]).ok().to_string();
    // "lease 694d7a2b0c1e5a0d granted with TTL(3s)"
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let keep = Ctl::start(&server, &["lease", "keep-alive", &id]);
    for i in 0..2 {
        assert_eq!(
            keep.line(&format!("keep-alive {i}")),
            format!("lease {id} keepalived with TTL(3)")
        );
    }
}
