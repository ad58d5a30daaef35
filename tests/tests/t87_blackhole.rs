//! The proxy's blackholes, on a real cluster: a cut member's peer connections stay open
//! and silent, and what they buffered is delivered when the cut heals; one-way cuts stop
//! exactly one direction.

use std::time::{Duration, Instant};

use cairn_tests::etcd_client::{self, GetOptions};
use cairn_tests::{runtime, Cluster, ConnEvent, CutDirection, CutMode, Toward};

const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until the leader's proxy knows a connection from each follower and each
/// follower's proxy one from the leader (followers do not talk to each other while the
/// leader stands).
fn wait_identified(cluster: &Cluster, leader: usize) {
    let deadline = Instant::now() + DEADLINE;
    for (i, proxy) in cluster.proxies().iter().enumerate() {
        let mut expected: Vec<u64> = (0..cluster.members.len())
            .filter(|&j| j != i && (i == leader || j == leader))
            .map(|j| cluster.member_id(j))
            .collect();
        expected.sort_unstable();
        loop {
            let mut dialers: Vec<u64> = proxy.dialers().into_iter().flatten().collect();
            dialers.sort_unstable();
            dialers.dedup();
            if expected.iter().all(|d| dialers.contains(d)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "proxy of m{i} knows dialers {dialers:x?}, expected {expected:x?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn put(endpoint: &str, key: &str, value: &str) -> i64 {
    let mut client = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("connect");
    client
        .put(key, value, None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision()
}

/// The value of `key` on member `index` alone (serializable: no raft round trip).
async fn local_get(cluster: &Cluster, index: usize, key: &str) -> Option<String> {
    let mut client = cluster.members[index].client().await;
    let resp = client
        .get(key, Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable get");
    resp.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

async fn wait_local_value(cluster: &Cluster, index: usize, key: &str, value: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if local_get(cluster, index, key).await.as_deref() == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "m{index} has no {key}={value} after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_blackholed_follower_misses_writes_keeps_its_connections_and_gets_the_backlog_on_heal() {
    let cluster = Cluster::start_with_proxies(3, |o| o);
    let rt = runtime();
    let (leader, _) = rt.block_on(cluster.wait_leader(None));
    let cut = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    wait_identified(&cluster, leader);
    let before: Vec<Vec<u64>> = cluster
        .proxies()
        .iter()
        .map(|p| p.dialers().into_iter().flatten().collect())
        .collect();

    cluster.blackhole(cut);
    assert!(cluster.is_isolated(cut));
    let leader_url = cluster.members[leader].client_url();
    rt.block_on(put(&leader_url, "during", "cut"));
    rt.block_on(wait_local_value(&cluster, other, "during", "cut"));
    rt.block_on(wait_local_value(&cluster, leader, "during", "cut"));
    // The majority has applied it; the blackholed follower has not heard of it.
    assert_eq!(rt.block_on(local_get(&cluster, cut, "during")), None);
    // No connection was reset: every proxy still carries the same dialers.
    for (i, proxy) in cluster.proxies().iter().enumerate() {
        let now: Vec<u64> = proxy.dialers().into_iter().flatten().collect();
        assert_eq!(now, before[i], "dialers of m{i}'s proxy during the cut");
        let killed = proxy
            .events()
            .iter()
            .filter(|e| matches!(e.event, ConnEvent::Killed | ConnEvent::Refused))
            .count();
        assert_eq!(killed, 0, "connections killed or refused at m{i}'s proxy");
    }

    cluster.heal_cuts();
    assert!(!cluster.is_isolated(cut));
    rt.block_on(wait_local_value(&cluster, cut, "during", "cut"));
    let view = rt
        .block_on(cluster.view(cut))
        .expect("view of the healed member");
    assert!(view.applied > 0, "{view:?}");
    // What the blackhole held back on the follower's own proxy (the leader's appends)
    // was delivered on a connection that existed before the cut (the flush is logged
    // once the backlog is through and the direction goes quiet).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let events = cluster.proxy(cut).events();
        let flushed_held = events.iter().any(|e| {
            matches!(e.event, ConnEvent::Flushed(Toward::Member, bytes) if bytes > 0)
                && events
                    .iter()
                    .any(|h| h.conn == e.conn && h.event == ConnEvent::Held(Toward::Member))
        });
        if flushed_held {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no backlog delivered on a held connection: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_leader_whose_inbound_traffic_is_blackholed_steps_down() {
    let cluster = Cluster::start_with_proxies(3, |o| o);
    let rt = runtime();
    let (leader, _) = rt.block_on(cluster.wait_leader(None));
    wait_identified(&cluster, leader);

    cluster.cut(leader, CutDirection::Inbound, CutMode::Blackhole);
    // Its appends still reach the followers, their answers never come back: check-quorum
    // makes it step down, and the followers elect one of themselves.
    let deadline = Instant::now() + DEADLINE;
    let new_leader = loop {
        let views: Vec<_> = (0..3)
            .filter(|&i| i != leader)
            .filter_map(|i| rt.block_on(cluster.view(i)))
            .collect();
        let agreed = views.len() == 2
            && views[0].leader == views[1].leader
            && views[0].leader != 0
            && views[0].leader != cluster.member_id(leader);
        if agreed {
            break cluster.index_of(views[0].leader).expect("a member");
        }
        assert!(
            Instant::now() < deadline,
            "followers never elected another leader: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(new_leader, leader);
    let old = rt
        .block_on(cluster.view(leader))
        .expect("view of the old leader");
    assert_ne!(
        old.leader, old.id,
        "the cut leader still thinks it leads: {old:?}"
    );

    cluster.heal_cuts();
    let (after, _) = rt.block_on(cluster.wait_leader(None));
    let url = cluster.members[after].client_url();
    rt.block_on(put(&url, "after", "heal"));
    rt.block_on(wait_local_value(&cluster, leader, "after", "heal"));
}

#[test]
fn a_follower_whose_outbound_traffic_is_blackholed_still_receives_writes() {
    let cluster = Cluster::start_with_proxies(3, |o| o);
    let rt = runtime();
    let (leader, _) = rt.block_on(cluster.wait_leader(None));
    let cut = (leader + 1) % 3;
    wait_identified(&cluster, leader);

    cluster.cut(cut, CutDirection::Outbound, CutMode::Blackhole);
    assert_eq!(
        cluster.cut_links(),
        vec![
            (cut, leader, CutMode::Blackhole),
            (cut, (leader + 2) % 3, CutMode::Blackhole)
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    let leader_url = cluster.members[leader].client_url();
    rt.block_on(put(&leader_url, "one-way", "in"));
    // Appends and commit indexes still flow to it; only its answers are held.
    rt.block_on(wait_local_value(&cluster, cut, "one-way", "in"));
    cluster.heal_cuts();
    rt.block_on(cluster.wait_leader(None));
}
