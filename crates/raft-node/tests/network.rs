//! Multi-member raft over an in-memory network (no sockets): elections, replication,
//! leader change with uncommitted proposals, ReadIndex under partition, catch-up by
//! snapshot and membership changes (learner, promotion, removal, joint consensus).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_raft_node::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2,
};
use cairn_raft_node::{NodeConfig, Role};
use common::{eventually, within, Cluster};

const SEC: Duration = Duration::from_secs(1);

fn no_tweak(_: &mut NodeConfig) {}

fn others(ids: &[u64], but: u64) -> Vec<u64> {
    ids.iter().copied().filter(|id| *id != but).collect()
}

fn payloads(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .collect()
}

/// Every member in `ids` holds exactly the same applied proposals (index and payload).
fn assert_same_entries(c: &Cluster, ids: &[u64]) -> Vec<(u64, Vec<u8>)> {
    let reference = c.sm(ids[0]).entries;
    for id in &ids[1..] {
        assert_eq!(
            c.sm(*id).entries,
            reference,
            "member {id} applied a different sequence than member {}",
            ids[0]
        );
    }
    reference
}

fn conf_change(changes: &[(ConfChangeType, u64)]) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    for (ty, id) in changes {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(*ty);
        single.node_id = *id;
        cc.mut_changes().push(single);
    }
    cc
}

/// Waits until every member in `ids` reports exactly these voters and learners.
async fn wait_membership(c: &Cluster, ids: &[u64], voters: &[u64], learners: &[u64]) {
    eventually("membership on every member", 10 * SEC, || {
        for id in ids {
            let s = c.status(*id);
            let mut v = s.voters.clone();
            let mut l = s.learners.clone();
            v.sort_unstable();
            l.sort_unstable();
            if v != voters || l != learners {
                return Err(format!(
                    "member {id}: voters {v:?} learners {l:?}, want {voters:?} {learners:?}"
                ));
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_exactly_one_leader() {
    let c = Cluster::new(3, no_tweak);
    let all = c.ids();
    let seen = c.wait_leader(&all, 10 * SEC).await;
    let leader = seen[&1].leader_id;
    let term = seen[&leader].term;
    assert!(all.contains(&leader));
    assert!(
        term >= 2,
        "bootstrap entries are term 1; an election raises it"
    );
    for (id, s) in &seen {
        let want = if *id == leader {
            Role::Leader
        } else {
            Role::Follower
        };
        assert_eq!(s.role, want, "member {id}");
        assert_eq!((s.leader_id, s.term), (leader, term), "member {id}");
        assert_eq!(s.voters, vec![1, 2, 3], "member {id}");
        assert!(s.learners.is_empty(), "member {id}");
    }

    // Leadership moves on request, and everybody follows in a later term.
    let target = others(&all, leader)[0];
    c.node(leader).transfer_leader(target).unwrap();
    eventually("the transfer to take effect", 10 * SEC, || {
        let s = c.status(target);
        (s.role == Role::Leader)
            .then_some(())
            .ok_or(format!("{s:?}"))
    })
    .await;
    let seen = c.wait_leader(&all, 10 * SEC).await;
    assert_eq!(seen[&1].leader_id, target);
    assert!(seen[&target].term > term);
    assert_eq!(seen.values().filter(|s| s.role == Role::Leader).count(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_apply_everywhere_in_the_same_order() {
    let c = Cluster::new(3, no_tweak);
    let all = c.ids();
    let leader = c.leader(&all).await;
    let follower = others(&all, leader)[0];

    // Sequential proposals on the leader: increasing indexes, in proposal order.
    let sequential = payloads("seq", 20);
    let mut last = 0;
    let mut expected = Vec::new();
    for p in &sequential {
        let index = c.propose(leader, p.clone()).await;
        assert!(index > last, "indexes increase with proposal order");
        last = index;
        expected.push((index, p.clone()));
    }

    // Concurrent proposals on a follower are forwarded to the leader; each resolves on
    // the follower with the index it was applied at.
    let forwarded = payloads("fwd", 10);
    let mut tasks = Vec::new();
    for p in &forwarded {
        let h = c.node(follower).clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move { (h.propose(p.clone()).await, p) }));
    }
    for t in tasks {
        let (res, p) = within("forwarded proposal", 10 * SEC, t).await.unwrap();
        expected.push((res.expect("forwarded proposal"), p));
    }

    // A lossy, reordering network: raft retransmits and the outcome is the same.
    c.net.set_drop_probability(0.1);
    c.net
        .set_delay(Duration::from_millis(0), Duration::from_millis(4));
    let lossy = payloads("lossy", 20);
    let mut tasks = Vec::new();
    for p in &lossy {
        let h = c.node(leader).clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move { (h.propose(p.clone()).await, p) }));
    }
    for t in tasks {
        let (res, p) = within("proposal on a lossy network", 15 * SEC, t)
            .await
            .unwrap();
        expected.push((res.expect("proposal on a lossy network"), p));
    }
    c.net.heal();
    let stats = c.net.stats();
    assert!(stats.dropped > 0, "the drop filter dropped something");

    expected.sort();
    let max = expected.last().unwrap().0;
    c.wait_applied(&all, max, 10 * SEC).await;
    let applied = assert_same_entries(&c, &all);
    // Exactly the proposals, each once, each at the index its proposer was told.
    assert_eq!(applied, expected);
    let mut distinct: Vec<_> = applied.iter().map(|(_, p)| p.clone()).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 50);
    assert_eq!(c.leader(&all).await, leader, "no leader change on the way");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_loses_its_uncommitted_proposals() {
    let c = Cluster::new(3, no_tweak);
    let all = c.ids();
    let seen = c.wait_leader(&all, 10 * SEC).await;
    let old = seen[&1].leader_id;
    let old_term = seen[&old].term;
    let mut committed = Vec::new();
    for p in payloads("before", 5) {
        c.propose(old, p.clone()).await;
        committed.push(p);
    }

    // Cut the leader off and propose on it: it appends, but can never commit.
    c.net.isolate(old);
    let stale = payloads("stale", 5);
    let mut stale_tasks = Vec::new();
    for p in &stale {
        let h = c.node(old).clone();
        let p = p.clone();
        stale_tasks.push(tokio::spawn(async move { h.propose(p).await }));
    }

    // The majority elects a new leader in a later term and commits without it.
    let majority = others(&all, old);
    let seen = c.wait_leader(&majority, 10 * SEC).await;
    let new = seen[&majority[0]].leader_id;
    assert_ne!(new, old);
    assert!(seen[&new].term > old_term);
    let mut last = 0;
    for p in payloads("after", 5) {
        last = c.propose(new, p.clone()).await;
        committed.push(p);
    }
    c.wait_applied(&majority, last, 10 * SEC).await;
    // The old leader notices it lost its quorum (check-quorum) and steps down alone.
    eventually("the isolated leader to step down", 10 * SEC, || {
        let s = c.status(old);
        (s.role != Role::Leader)
            .then_some(())
            .ok_or(format!("{s:?}"))
    })
    .await;
    let old_sm = c.sm(old);
    assert!(
        old_sm.applied < last,
        "the isolated member cannot have applied the majority's writes"
    );
    for p in stale.iter().chain(&committed[5..]) {
        assert!(
            !old_sm.payloads().contains(p),
            "isolated member applied {p:?}"
        );
    }
    // None of the proposals made on the isolated leader can have completed Ok (those
    // still pending were accepted into its log, and that log is about to be overwritten).
    let mut stale_pending = Vec::new();
    for t in stale_tasks {
        if t.is_finished() {
            let res = t.await.unwrap();
            assert!(res.is_err(), "an uncommitted proposal resolved Ok: {res:?}");
        } else {
            stale_pending.push(t);
        }
    }

    // Heal: the old leader follows the new one and its log is overwritten.
    c.net.heal();
    let seen = c.wait_leader(&all, 10 * SEC).await;
    assert_eq!(seen[&old].role, Role::Follower);
    let leader = seen[&old].leader_id;
    let index = c.propose(leader, b"healed".to_vec()).await;
    committed.push(b"healed".to_vec());
    c.wait_applied(&all, index, 10 * SEC).await;
    let applied = assert_same_entries(&c, &all);
    let applied: Vec<Vec<u8>> = applied.into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        applied, committed,
        "exactly the committed proposals, in order"
    );

    // The stale proposals never resolve Ok: their entries were replaced.
    for t in stale_pending {
        match tokio::time::timeout(Duration::from_millis(300), t).await {
            Err(_) => {} // still pending: the caller's own timeout decides
            Ok(res) => {
                let res = res.unwrap();
                assert!(res.is_err(), "an uncommitted proposal resolved Ok: {res:?}");
            }
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_leader_serves_no_linearizable_reads() {
    let c = Cluster::new(3, no_tweak);
    let all = c.ids();
    let old = c.leader(&all).await;
    let first = c.propose(old, b"w0".to_vec()).await;
    for id in &all {
        let read = within("read index", 10 * SEC, c.node(*id).linearizable_barrier())
            .await
            .unwrap();
        assert!(read >= first);
    }

    c.net.isolate(old);
    // Both kinds of read on the isolated leader, concurrently with the majority's work.
    let read = tokio::spawn({
        let h = c.node(old).clone();
        async move { tokio::time::timeout(Duration::from_millis(1500), h.read_index()).await }
    });
    let barrier = tokio::spawn({
        let h = c.node(old).clone();
        async move { tokio::time::timeout(Duration::from_millis(1500), h.linearizable_barrier()).await }
    });

    let majority = others(&all, old);
    let new = c.leader(&majority).await;
    let written = c.propose(new, b"w1".to_vec()).await;
    for id in &majority {
        let read = within(
            "majority read",
            10 * SEC,
            c.node(*id).linearizable_barrier(),
        )
        .await
        .unwrap();
        assert!(read >= written, "member {id} read at {read} < {written}");
        // The barrier returned: the write is visible there.
        assert!(
            c.sm(*id).payloads().contains(&b"w1".to_vec()),
            "member {id}"
        );
    }

    for (what, res) in [
        ("read_index", read.await.unwrap()),
        ("linearizable_barrier", barrier.await.unwrap()),
    ] {
        match res {
            Err(_) => {}     // timed out
            Ok(Err(_)) => {} // failed (e.g. leader changed)
            Ok(Ok(index)) => panic!("isolated member answered {what} with {index}"),
        }
    }
    // Once it stepped down it still cannot answer.
    let late = tokio::time::timeout(Duration::from_millis(700), c.node(old).read_index()).await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "isolated member answered: {late:?}"
    );
    assert!(!c.sm(old).payloads().contains(&b"w1".to_vec()));

    // Healed, it reads the majority's write.
    c.net.heal();
    c.wait_leader(&all, 10 * SEC).await;
    let read = within("healed read", 10 * SEC, c.node(old).linearizable_barrier())
        .await
        .unwrap();
    assert!(read >= written);
    assert!(c.sm(old).payloads().contains(&b"w1".to_vec()));
    c.shutdown().await;
}

fn small_snapshots(cfg: &mut NodeConfig) {
    cfg.snapshot_count = 20;
    cfg.snapshot_catchup_entries = 5;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_by_snapshot() {
    let c = Cluster::new(3, small_snapshots);
    let all = c.ids();
    let leader = c.leader(&all).await;
    let lagging = others(&all, leader)[0];
    let before = c.propose(leader, b"start".to_vec()).await;
    c.wait_applied(&all, before, 10 * SEC).await;

    c.net.isolate(lagging);
    let mut tasks = Vec::new();
    for p in payloads("burst", 100) {
        let h = c.node(leader).clone();
        tasks.push(tokio::spawn(async move { h.propose(p).await }));
    }
    let mut last = 0;
    for t in tasks {
        last = last.max(
            within("burst proposal", 15 * SEC, t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let lag = c.sm(lagging);
    assert!(lag.applied < last && lag.restores.is_empty());
    // (the leader may have tried to send it a snapshot already: the partition lost it)
    assert!(c.net.stats().snapshots.iter().all(|s| !s.delivered));

    c.net.heal();
    c.wait_applied(&[lagging], last, 15 * SEC).await;
    let lag = c.sm(lagging);
    assert!(
        !lag.restores.is_empty(),
        "the follower caught up by restoring a snapshot"
    );
    let restored_at = *lag.restores.last().unwrap();
    assert!(
        restored_at > before + 5,
        "the snapshot skipped the released log"
    );
    assert_eq!(lag.restored.as_ref().map(|m| m.index), Some(restored_at));
    let mut voters = lag
        .restored
        .as_ref()
        .unwrap()
        .get_conf_state()
        .voters
        .clone();
    voters.sort_unstable();
    assert_eq!(voters, vec![1, 2, 3], "the snapshot carries the membership");
    let sent = c.net.stats().snapshots;
    assert!(
        sent.iter()
            .any(|s| s.from == leader && s.to == lagging && s.delivered),
        "snapshots sent: {sent:?}"
    );
    assert!(c.sm(leader).snapshots_taken >= 1);

    // The log after the snapshot keeps flowing to it.
    let mut last = 0;
    for p in payloads("tail", 10) {
        last = c.propose(leader, p).await;
    }
    c.wait_applied(&all, last, 10 * SEC).await;
    let applied = assert_same_entries(&c, &all);
    let mut want = vec![b"start".to_vec()];
    let mut burst = payloads("burst", 100);
    let got_burst: BTreeSet<Vec<u8>> = applied[1..101].iter().map(|(_, p)| p.clone()).collect();
    burst.sort();
    assert_eq!(got_burst.into_iter().collect::<Vec<_>>(), burst);
    want.extend(applied[1..101].iter().map(|(_, p)| p.clone()));
    want.extend(payloads("tail", 10));
    assert_eq!(
        applied.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        want
    );
    assert_eq!(c.status(lagging).role, Role::Follower);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_learner_promotion_removal_and_joint_change() {
    use ConfChangeType::{AddLearnerNode, AddNode, RemoveNode};
    let mut c = Cluster::new(3, no_tweak);
    let all = c.ids();
    let leader = c.leader(&all).await;
    for p in payloads("data", 10) {
        c.propose(leader, p).await;
    }
    // raft refuses a conf change until the leader applied its own first entry.
    within(
        "leader barrier",
        10 * SEC,
        c.node(leader).linearizable_barrier(),
    )
    .await
    .unwrap();

    let leader_handle = c.node(leader).clone();
    let change = move |cc: ConfChangeV2| {
        let h = leader_handle.clone();
        async move {
            within("conf change", 10 * SEC, h.propose_conf_change(cc))
                .await
                .expect("conf change")
        }
    };

    // 1. A learner with an empty log joins and catches up from the log.
    c.start_joining(4);
    assert_eq!(c.status(4).voters, Vec::<u64>::new());
    let index = change(conf_change(&[(AddLearnerNode, 4)])).await;
    let members = [1, 2, 3, 4];
    wait_membership(&c, &members, &[1, 2, 3], &[4]).await;
    c.wait_applied(&members, index, 10 * SEC).await;
    assert_same_entries(&c, &members);
    assert_eq!(c.status(4).role, Role::Follower);

    // 2. Promote it.
    change(conf_change(&[(AddNode, 4)])).await;
    wait_membership(&c, &members, &[1, 2, 3, 4], &[]).await;

    // 3. Remove a voter (not the leader).
    let removed = others(&[1, 2, 3], leader)[0];
    change(conf_change(&[(RemoveNode, removed)])).await;
    let alive = others(&members, removed);
    let voters = alive.clone();
    wait_membership(&c, &alive, &voters, &[]).await;
    c.stop(removed).await;
    let index = c.propose(leader, b"after-remove".to_vec()).await;
    c.wait_applied(&alive, index, 10 * SEC).await;

    // 4. Two changes at once: joint consensus, left automatically.
    c.start_joining(5);
    let out = others(&alive, leader)[0];
    change(conf_change(&[(AddNode, 5), (RemoveNode, out)])).await;
    let mut voters: Vec<u64> = others(&alive, out);
    voters.push(5);
    voters.sort_unstable();
    // (the member removed may never learn it was removed: it is no longer written to)
    wait_membership(&c, &voters, &voters, &[]).await;
    // The leader applied the joint configuration, then the automatic transition out.
    eventually(
        "the leader to leave the joint configuration",
        10 * SEC,
        || {
            let confs = c.sm(leader).conf_states;
            let (_, last) = confs.last().unwrap();
            if last.voters_outgoing.is_empty() && !last.auto_leave {
                Ok(())
            } else {
                Err(format!("{last:?}"))
            }
        },
    )
    .await;
    let confs = c.sm(leader).conf_states;
    let joint = confs
        .iter()
        .find(|(_, cs)| !cs.voters_outgoing.is_empty())
        .expect("a joint configuration was applied");
    let mut outgoing = joint.1.voters_outgoing.clone();
    outgoing.sort_unstable();
    assert_eq!(outgoing, alive, "the old voters stay in the outgoing half");
    assert!(joint.1.auto_leave);
    c.stop(out).await;

    // The final cluster commits, and every member holds the same state.
    let ids = c.ids();
    assert_eq!(ids, voters);
    c.wait_leader(&ids, 10 * SEC).await;
    let index = c.propose(leader, b"final".to_vec()).await;
    c.wait_applied(&ids, index, 10 * SEC).await;
    wait_membership(&c, &ids, &voters, &[]).await;
    let applied = assert_same_entries(&c, &ids);
    assert_eq!(applied.len(), 12);
    assert_eq!(applied.last().unwrap().1, b"final".to_vec());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_after_the_log_was_released_joins_by_snapshot() {
    use ConfChangeType::{AddLearnerNode, AddNode};
    let mut c = Cluster::new(3, small_snapshots);
    let all = c.ids();
    let leader = c.leader(&all).await;
    let mut last = 0;
    for p in payloads("early", 60) {
        last = c.propose(leader, p).await;
    }
    c.wait_applied(&all, last, 10 * SEC).await;
    within(
        "leader barrier",
        10 * SEC,
        c.node(leader).linearizable_barrier(),
    )
    .await
    .unwrap();

    // The bootstrap entries are gone from the leader's log: only a snapshot can help.
    c.start_joining(4);
    let h = c.node(leader).clone();
    within(
        "add learner",
        10 * SEC,
        h.propose_conf_change(conf_change(&[(AddLearnerNode, 4)])),
    )
    .await
    .unwrap();
    let members = [1, 2, 3, 4];
    wait_membership(&c, &members, &[1, 2, 3], &[4]).await;
    within(
        "promote",
        10 * SEC,
        h.propose_conf_change(conf_change(&[(AddNode, 4)])),
    )
    .await
    .unwrap();
    wait_membership(&c, &members, &[1, 2, 3, 4], &[]).await;
    let index = c.propose(leader, b"joined".to_vec()).await;
    c.wait_applied(&members, index, 10 * SEC).await;
    let joined = c.sm(4);
    assert!(
        !joined.restores.is_empty(),
        "the new member restored a snapshot"
    );
    assert!(joined
        .conf_states
        .iter()
        .all(|(i, _)| *i > joined.restores[0]));
    let applied = assert_same_entries(&c, &members);
    assert_eq!(applied.len(), 61);
    c.shutdown().await;
}
