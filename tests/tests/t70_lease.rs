//! Leases through the `etcd-client` crate: grant, keep-alive, time-to-live, revoke,
//! listing, attached keys, expiry, and leases across a restart.

use std::time::{Duration, Instant};

use cairn_tests::etcd_client::{
    Client, Error, EventType, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use cairn_tests::tonic::Code;
use cairn_tests::{assert_status, http_get, Server, ServerOpts};

const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

async fn revision(client: &mut Client) -> i64 {
    client
        .get("any", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

async fn exists(client: &mut Client, key: &str) -> bool {
    client.get(key, None).await.expect("get").count() == 1
}

async fn put_with_lease(client: &mut Client, key: &str, lease: i64) {
    client
        .put(key, "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with lease");
}

/// Waits (bounded) until `key` is gone and returns when that was seen.
async fn wait_deleted(client: &mut Client, key: &str, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if !exists(client, key).await {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{key} still exists after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn grant_time_to_live_with_keys_leases_and_revoke() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;

    let granted = client.lease_grant(60, None).await.expect("grant");
    let id = granted.id();
    assert!(id > 0, "server-chosen id {id}");
    assert_eq!(granted.ttl(), 60);

    put_with_lease(&mut client, "a", id).await;
    put_with_lease(&mut client, "b", id).await;
    client.put("c", "plain", None).await.expect("put");
    // Overwriting without the lease detaches the key.
    put_with_lease(&mut client, "d", id).await;
    client.put("d", "detached", None).await.expect("put");

    let ttl = client
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("time to live");
    assert_eq!(ttl.id(), id);
    assert_eq!(ttl.granted_ttl(), 60);
    assert!((58..=60).contains(&ttl.ttl()), "remaining {}", ttl.ttl());
    let mut keys: Vec<&[u8]> = ttl.keys().iter().map(Vec::as_slice).collect();
    keys.sort();
    assert_eq!(keys, vec![b"a".as_slice(), b"b".as_slice()]);
    let without_keys = client
        .lease_time_to_live(id, None)
        .await
        .expect("time to live");
    assert!(without_keys.keys().is_empty());

    let other = client.lease_grant(30, None).await.expect("grant").id();
    assert_ne!(other, id);
    let leases = client.leases().await.expect("leases");
    let mut listed: Vec<i64> = leases.leases().iter().map(|l| l.id()).collect();
    listed.sort();
    let mut expected = vec![id, other];
    expected.sort();
    assert_eq!(listed, expected);

    let before = revision(&mut client).await;
    let revoked = client.lease_revoke(id).await.expect("revoke");
    assert_eq!(
        revoked.header().expect("header").revision(),
        before + 1,
        "all attached keys go in one revision"
    );
    assert!(!exists(&mut client, "a").await);
    assert!(!exists(&mut client, "b").await);
    assert!(exists(&mut client, "c").await);
    assert!(exists(&mut client, "d").await);

    let gone = client
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("time to live of a revoked lease");
    assert_eq!((gone.ttl(), gone.granted_ttl()), (-1, 0));
    assert!(gone.keys().is_empty());
    assert_status(
        client.lease_revoke(id).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );

    // A lease without keys revokes without a new revision.
    let now = revision(&mut client).await;
    let revoked = client.lease_revoke(other).await.expect("revoke");
    assert_eq!(revoked.header().expect("header").revision(), now);

    let metrics = http_get(&server.client_addr(), "/metrics").expect("GET /metrics");
    for name in [
        "etcd_debugging_lease_granted_total 2",
        "etcd_debugging_lease_revoked_total 2",
        "etcd_debugging_lease_ttl_total_bucket",
    ] {
        assert!(
            metrics.body.lines().any(|l| l.starts_with(name)),
            "no {name} in /metrics"
        );
    }
}

#[tokio::test]
async fn grant_rules_and_lease_errors() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;

    let chosen = client
        .lease_grant(1, Some(LeaseGrantOptions::new().with_id(4242)))
        .await
        .expect("grant with id");
    assert_eq!(chosen.id(), 4242);
    assert_eq!(chosen.ttl(), 2, "TTLs below the minimum are raised to it");

    assert_status(
        client
            .lease_grant(10, Some(LeaseGrantOptions::new().with_id(4242)))
            .await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    assert_status(
        client.lease_grant(9_000_000_001, None).await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );
    assert_status(
        client
            .put("k", "v", Some(PutOptions::new().with_lease(777)))
            .await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    assert_status(
        client
            .txn(Txn::new().and_then([TxnOp::put(
                "k",
                "v",
                Some(PutOptions::new().with_lease(777)),
            )]))
            .await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    assert!(
        !exists(&mut client, "k").await,
        "a failed put changes nothing"
    );

    let unknown = client
        .lease_time_to_live(777, None)
        .await
        .expect("time to live of an unknown lease");
    assert_eq!((unknown.id(), unknown.ttl()), (777, -1));

    // The server answers a keep-alive of an unknown lease with TTL 0, which the client
    // reports as "lease not found".
    match client.lease_keep_alive(777).await {
        Err(Error::LeaseKeepAliveError(message)) => assert_eq!(message, "lease not found"),
        other => panic!("expected lease not found, got {other:?}"),
    }
}

#[tokio::test]
async fn keep_alive_stream_keeps_a_short_lease_alive() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let id = client.lease_grant(2, None).await.expect("grant").id();
    put_with_lease(&mut client, "alive", id).await;

    let (mut keeper, mut responses) = client.lease_keep_alive(id).await.expect("keep-alive");
    let until = Instant::now() + Duration::from_secs(10);
    let mut answers = 0;
    while Instant::now() < until {
        keeper.keep_alive().await.expect("send keep-alive");
        let answer = responses
            .message()
            .await
            .expect("keep-alive answer")
            .expect("a message");
        assert_eq!((answer.id(), answer.ttl()), (id, 2));
        answers += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(answers >= 10, "{answers} keep-alives answered");
    let metrics = http_get(&server.client_addr(), "/metrics").expect("GET /metrics");
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("etcd_debugging_lease_renewed_total ")),
        "no etcd_debugging_lease_renewed_total in /metrics"
    );
    assert!(exists(&mut client, "alive").await, "kept alive for 10 s");
    let ttl = client.lease_time_to_live(id, None).await.expect("ttl");
    assert!((1..=2).contains(&ttl.ttl()), "remaining {}", ttl.ttl());
}

#[tokio::test]
async fn expiry_revokes_within_a_second_of_the_ttl() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let id = client.lease_grant(5, None).await.expect("grant").id();
    put_with_lease(&mut client, "short/1", id).await;
    put_with_lease(&mut client, "short/2", id).await;

    let (mut keeper, mut responses) = client.lease_keep_alive(id).await.expect("keep-alive");
    let sent = Instant::now();
    keeper.keep_alive().await.expect("send keep-alive");
    let answer = responses.message().await.expect("answer").expect("message");
    let answered = Instant::now();
    assert_eq!(answer.ttl(), 5);
    drop(keeper);

    let deleted = wait_deleted(&mut client, "short/1", Duration::from_secs(15)).await;
    assert!(!exists(&mut client, "short/2").await);
    let earliest = deleted - sent;
    let latest = deleted - answered;
    println!(
        "TTL=5 lease revoked {:.3} s after its last keep-alive (between {:.3} and {:.3} s)",
        latest.as_secs_f64(),
        latest.as_secs_f64(),
        earliest.as_secs_f64()
    );
    assert!(
        earliest >= Duration::from_secs(5),
        "revoked too early: {earliest:?}"
    );
    assert!(
        latest <= Duration::from_millis(6500),
        "revoked too late: {latest:?}"
    );
    let ttl = client.lease_time_to_live(id, None).await.expect("ttl");
    assert_eq!(ttl.ttl(), -1);
}

#[tokio::test]
async fn leases_survive_a_restart_and_still_expire() {
    let mut server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let short = client.lease_grant(3, None).await.expect("grant").id();
    let long = client.lease_grant(600, None).await.expect("grant").id();
    put_with_lease(&mut client, "short", short).await;
    put_with_lease(&mut client, "long", long).await;
    drop(client);

    server.restart();
    let mut client = server.client().await;
    let ttl = client
        .lease_time_to_live(long, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("ttl");
    assert_eq!(ttl.granted_ttl(), 600);
    assert!(ttl.ttl() > 590, "remaining {}", ttl.ttl());
    assert_eq!(ttl.keys(), [b"long".to_vec()]);

    wait_deleted(&mut client, "short", Duration::from_secs(20)).await;
    let leases = client.leases().await.expect("leases");
    let listed: Vec<i64> = leases.leases().iter().map(|l| l.id()).collect();
    assert_eq!(listed, vec![long]);
    assert!(exists(&mut client, "long").await);
}

#[tokio::test]
async fn a_watcher_sees_a_revocation_as_one_revision() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    let id = client.lease_grant(60, None).await.expect("grant").id();
    for key in ["w/1", "w/2", "w/3"] {
        put_with_lease(&mut client, key, id).await;
    }
    let mut stream = client
        .watch("w/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let deadline = Duration::from_secs(10);
    let first = tokio::time::timeout(deadline, stream.message())
        .await
        .expect("created before the deadline")
        .expect("watch")
        .expect("created");
    assert!(first.created(), "{first:?}");

    let revoked = client.lease_revoke(id).await.expect("revoke");
    let revision = revoked.header().expect("header").revision();
    let resp = tokio::time::timeout(deadline, stream.message())
        .await
        .expect("events before the deadline")
        .expect("watch")
        .expect("events");
    let deletes: Vec<(String, i64, bool)> = resp
        .events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("kv");
            (
                kv.key_str().expect("utf-8").to_string(),
                kv.mod_revision(),
                e.event_type() == EventType::Delete,
            )
        })
        .collect();
    assert_eq!(
        deletes,
        vec![
            ("w/1".to_string(), revision, true),
            ("w/2".to_string(), revision, true),
            ("w/3".to_string(), revision, true),
        ],
        "all three deletes in one response, at the revoke's revision"
    );
}
