//! The Lock and Election gRPC services (`v3lockpb`, `v3electionpb`) through the
//! `etcd-client` crate's lock and election clients: mutual exclusion, release by lease
//! expiry, campaigners taking turns, Observe seeing every leader in order, and the
//! errors of a non-leader.

use std::time::{Duration, Instant};

use cairn_tests::etcd_client::{
    Client, GetOptions, LeaderKey, LockOptions, ProclaimOptions, ResignOptions,
};
use cairn_tests::tonic::Code;
use cairn_tests::{grpc_status, server_kind, Server, ServerKind, ServerOpts, BACKGROUND_DEADLINE};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The keys under `prefix`, once there are `n` of them.
async fn wait_for_keys(client: &mut Client, prefix: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + BACKGROUND_DEADLINE;
    loop {
        let resp = client
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        let keys: Vec<String> = resp
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap().to_string())
            .collect();
        if keys.len() == n {
            return keys;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {n} keys under {prefix}: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BACKGROUND_DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {BACKGROUND_DEADLINE:?}"))
}

#[test]
fn two_lockers_exclude_each_other_and_a_lease_expiry_releases_the_lock() {
    let server = Server::start(ServerOpts::new());
    let url = server.client_url();
    runtime().block_on(async {
        let mut client = Client::connect([url.as_str()], None).await.unwrap();
        let l1 = client.lease_grant(60, None).await.unwrap().id();
        let l2 = client.lease_grant(60, None).await.unwrap().id();
        let first = client
            .lock("mylock", Some(LockOptions::new().with_lease(l1)))
            .await
            .unwrap();
        let k1 = String::from_utf8(first.key().to_vec()).unwrap();
        assert_eq!(k1, format!("mylock/{l1:x}"));

        let mut other = client.clone();
        let second = tokio::spawn(async move {
            other
                .lock("mylock", Some(LockOptions::new().with_lease(l2)))
                .await
                .map(|r| String::from_utf8(r.key().to_vec()).unwrap())
        });
        // The second locker is queued behind the first and does not hold the lock.
        let keys = wait_for_keys(&mut client, "mylock/", 2).await;
        assert_eq!(keys.len(), 2);
        assert!(!second.is_finished(), "the second locker got a held lock");
        client.unlock(k1.as_str()).await.unwrap();
        let k2 = within("the second lock", second).await.unwrap().unwrap();
        assert_eq!(k2, format!("mylock/{l2:x}"));

        // A holder whose lease expires loses the lock to the next in line.
        let short = client.lease_grant(2, None).await.unwrap().id();
        let l3 = client.lease_grant(60, None).await.unwrap().id();
        client.unlock(k2.as_str()).await.unwrap();
        client
            .lock("exp", Some(LockOptions::new().with_lease(short)))
            .await
            .unwrap();
        let mut other = client.clone();
        let next = tokio::spawn(async move {
            other
                .lock("exp", Some(LockOptions::new().with_lease(l3)))
                .await
                .map(|r| String::from_utf8(r.key().to_vec()).unwrap())
        });
        let k3 = within("the lock after an expiry", next)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(k3, format!("exp/{l3:x}"));
        let left = wait_for_keys(&mut client, "exp/", 1).await;
        assert_eq!(left, vec![k3]);
    });
}

#[test]
fn campaigners_take_turns_and_observe_sees_every_leader_in_order() {
    let server = Server::start(ServerOpts::new());
    let url = server.client_url();
    runtime().block_on(async {
        let mut client = Client::connect([url.as_str()], None).await.unwrap();
        let l1 = client.lease_grant(60, None).await.unwrap().id();
        let l2 = client.lease_grant(60, None).await.unwrap().id();

        // Nobody leads yet.
        let err = client.leader("elect").await.unwrap_err();
        let status = grpc_status(&err);
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unknown, "election: no leader")
        );

        let won = client.campaign("elect", "one", l1).await.unwrap();
        // (etcd sends an Observe stream's headers with its first leader only.)
        let mut observer = client.clone();
        let mut observed = within("observe", observer.observe("elect")).await.unwrap();
        let leader1 = won.leader().unwrap().clone();
        assert_eq!(leader1.key_str().unwrap(), format!("elect/{l1:x}"));
        let mut other = client.clone();
        let second = tokio::spawn(async move { other.campaign("elect", "two", l2).await });
        wait_for_keys(&mut client, "elect/", 2).await;
        assert!(!second.is_finished(), "two leaders at once");

        let now = client.leader("elect").await.unwrap();
        assert_eq!(now.kv().unwrap().value_str().unwrap(), "one");
        client
            .proclaim(
                "one-bis",
                Some(ProclaimOptions::new().with_leader(leader1.clone())),
            )
            .await
            .unwrap();
        // A candidate that does not lead cannot proclaim.
        let not_leader = LeaderKey::new()
            .with_name("elect")
            .with_key(format!("elect/{l2:x}"))
            .with_rev(leader1.rev())
            .with_lease(l2);
        let err = client
            .proclaim(
                "usurper",
                Some(ProclaimOptions::new().with_leader(not_leader)),
            )
            .await
            .unwrap_err();
        let status = grpc_status(&err);
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unknown, "election: not leader")
        );

        client
            .resign(Some(ResignOptions::new().with_leader(leader1)))
            .await
            .unwrap();
        let won2 = within("the second campaign", second)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            won2.leader().unwrap().key_str().unwrap(),
            format!("elect/{l2:x}")
        );

        let mut seen = Vec::new();
        while seen.len() < 3 {
            let next = within("an observed leader", observed.message())
                .await
                .unwrap()
                .expect("the observe stream goes on");
            seen.push(next.kv().unwrap().value_str().unwrap().to_string());
        }
        assert_eq!(seen, ["one", "one-bis", "two"]);
    });
}

#[test]
fn bad_lock_requests_get_clear_errors_and_change_nothing() {
    let server = Server::start(ServerOpts::new());
    let url = server.client_url();
    runtime().block_on(async {
        let mut client = Client::connect([url.as_str()], None).await.unwrap();
        // A lease that does not exist.
        let err = client
            .lock("l", Some(LockOptions::new().with_lease(0x1234)))
            .await
            .unwrap_err();
        let status = grpc_status(&err);
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unknown, "etcdserver: requested lease not found")
        );
        if server_kind() == ServerKind::Etcd {
            return; // etcd's Unlock deletes any key; cairn refuses one that is no lock
        }
        client.put("plain", "value", None).await.unwrap();
        let err = client.unlock("plain").await.unwrap_err();
        let status = grpc_status(&err);
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, "lock: key is not a lock")
        );
        let still = client.get("plain", None).await.unwrap();
        assert_eq!(still.kvs()[0].value_str().unwrap(), "value");
    });
}
