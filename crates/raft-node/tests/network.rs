//! Multi-member raft in the deterministic simulation (no sockets, threads or clocks):
//! elections, replication, leader change with uncommitted proposals, ReadIndex under
//! partition, catch-up by snapshot and membership changes (learner, promotion, removal,
//! joint consensus). Each test runs on several seeds; a seed always gives the same run.

mod sim;

use std::collections::BTreeSet;

use cairn_raft_node::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2,
};
use cairn_raft_node::{NodeConfig, Role};
use sim::Sim;

const SEEDS: [u64; 3] = [1, 17, 4242];

fn no_tweak(_: &mut NodeConfig) {}

fn others(ids: &[u64], but: u64) -> Vec<u64> {
    ids.iter().copied().filter(|id| *id != but).collect()
}

fn payloads(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .collect()
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

/// Runs until every member in `ids` reports exactly these voters and learners.
fn wait_membership(sim: &mut Sim, ids: &[u64], voters: &[u64], learners: &[u64]) {
    let (ids, voters, learners) = (ids.to_vec(), voters.to_vec(), learners.to_vec());
    sim.run_until("the membership on every member", 3_000, |s| {
        ids.iter().all(|id| {
            let st = s.status(*id);
            let mut v = st.voters.clone();
            let mut l = st.learners.clone();
            v.sort_unstable();
            l.sort_unstable();
            v == voters && l == learners
        })
    });
}

#[test]
fn three_members_elect_exactly_one_leader() {
    for seed in SEEDS {
        let mut sim = Sim::new(3, seed, no_tweak);
        let all = sim.ids();
        let leader = sim.elect(1_000);
        let term = sim.status(leader).term;
        assert!(
            term >= 2,
            "bootstrap entries are term 1; an election raises it"
        );
        for id in &all {
            let s = sim.status(*id);
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
        sim.handle(leader).transfer_leader(target).unwrap();
        sim.run_until("the transfer to take effect", 1_000, |s| {
            s.agreed_leader() == Some(target)
        });
        assert!(sim.status(target).term > term);
    }
}

#[test]
fn proposals_apply_everywhere_in_the_same_order() {
    for seed in SEEDS {
        let mut sim = Sim::new(3, seed, no_tweak);
        let all = sim.ids();
        let leader = sim.elect(1_000);
        let follower = others(&all, leader)[0];

        // Sequential proposals on the leader: increasing indexes, in proposal order.
        let mut last = 0;
        let mut expected = Vec::new();
        for p in payloads("seq", 20) {
            let index = sim.propose_and_wait(leader, p.clone());
            assert!(index > last, "indexes increase with proposal order");
            last = index;
            expected.push((index, p));
        }

        // Concurrent proposals on a follower are forwarded to the leader; each resolves on
        // the follower with the index it was applied at.
        let forwarded: Vec<_> = payloads("fwd", 10)
            .into_iter()
            .map(|p| (sim.propose(follower, p.clone()), p))
            .collect();
        for (n, p) in forwarded {
            expected.push((sim.wait(n, 2_000).expect("forwarded proposal"), p));
        }

        // A lossy, reordering network: raft retransmits and the outcome is the same.
        sim.faults.drop = 0.1;
        sim.faults.delay = (1, 4);
        let lossy: Vec<_> = payloads("lossy", 20)
            .into_iter()
            .map(|p| (sim.propose(leader, p.clone()), p))
            .collect();
        for (n, p) in lossy {
            expected.push((sim.wait(n, 5_000).expect("proposal on a lossy network"), p));
        }
        sim.faults.drop = 0.0;
        sim.faults.delay = (1, 1);
        assert!(sim.stats().dropped > 0, "the drop filter dropped something");

        expected.sort();
        let max = expected.last().unwrap().0;
        sim.wait_applied(&all, max, 2_000);
        let applied = sim.assert_same_entries(&all);
        // Exactly the proposals, each once, each at the index its proposer was told.
        assert_eq!(applied, expected, "seed {seed}");
        assert_eq!(
            sim.agreed_leader(),
            Some(leader),
            "no leader change on the way"
        );
    }
}

#[test]
fn an_isolated_leader_loses_its_uncommitted_proposals() {
    for seed in SEEDS {
        let mut sim = Sim::new(3, seed, no_tweak);
        let all = sim.ids();
        let old = sim.elect(1_000);
        let old_term = sim.status(old).term;
        let mut committed = Vec::new();
        for p in payloads("before", 5) {
            sim.propose_and_wait(old, p.clone());
            committed.push(p);
        }

        // Cut the leader off and propose on it: it appends, but can never commit.
        let majority = others(&all, old);
        sim.partition(&[&[old], &majority]);
        let stale: Vec<_> = payloads("stale", 5)
            .into_iter()
            .map(|p| (sim.propose(old, p.clone()), p))
            .collect();

        // The majority elects a new leader in a later term and commits without it.
        sim.run_until("a new leader among the majority", 2_000, |s| {
            majority
                .iter()
                .any(|id| s.status(*id).role == Role::Leader && s.status(*id).term > old_term)
        });
        let new = majority
            .iter()
            .copied()
            .find(|id| sim.status(*id).role == Role::Leader)
            .unwrap();
        let mut last = 0;
        for p in payloads("after", 5) {
            last = sim.propose_and_wait(new, p.clone());
            committed.push(p);
        }
        sim.wait_applied(&majority, last, 1_000);
        // The old leader notices it lost its quorum (check-quorum) and steps down alone.
        sim.run_until("the isolated leader to step down", 1_000, |s| {
            s.status(old).role != Role::Leader
        });
        let old_sm = sim.sm(old);
        assert!(old_sm.applied < last);
        for (_, p) in &stale {
            assert!(
                !old_sm.payloads().contains(p),
                "isolated member applied {p:?}"
            );
        }
        // None of the proposals made on the isolated leader completed Ok.
        for (n, _) in &stale {
            assert!(
                !matches!(sim.outcome(*n), Some(Ok(_))),
                "an uncommitted proposal resolved Ok"
            );
        }

        // Heal: the old leader follows the new one and its log is overwritten.
        sim.heal();
        let leader = sim.elect(2_000);
        assert_eq!(sim.status(old).role, Role::Follower);
        let index = sim.propose_and_wait(leader, b"healed".to_vec());
        committed.push(b"healed".to_vec());
        sim.wait_applied(&all, index, 1_000);
        let applied: Vec<Vec<u8>> = sim
            .assert_same_entries(&all)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(
            applied, committed,
            "exactly the committed proposals, in order"
        );
        for (n, _) in &stale {
            assert!(
                !matches!(sim.outcome(*n), Some(Ok(_))),
                "an uncommitted proposal resolved Ok"
            );
        }
    }
}

#[test]
fn a_minority_leader_serves_no_linearizable_reads() {
    for seed in SEEDS {
        let mut sim = Sim::new(3, seed, no_tweak);
        let all = sim.ids();
        let old = sim.elect(1_000);
        let first = sim.propose_and_wait(old, b"w0".to_vec());
        for id in &all {
            let n = sim.barrier(*id);
            assert!(sim.wait(n, 1_000).unwrap() >= first);
        }

        let majority = others(&all, old);
        sim.partition(&[&[old], &majority]);
        // Both kinds of read on the isolated leader, concurrently with the majority's work.
        let read = sim.read_index(old);
        let barrier = sim.barrier(old);

        sim.run_until("a new leader among the majority", 2_000, |s| {
            majority.iter().any(|id| s.status(*id).role == Role::Leader)
        });
        let new = majority
            .iter()
            .copied()
            .find(|id| sim.status(*id).role == Role::Leader)
            .unwrap();
        let written = sim.propose_and_wait(new, b"w1".to_vec());
        for id in &majority {
            let n = sim.barrier(*id);
            let read = sim.wait(n, 1_000).unwrap();
            assert!(read >= written, "member {id} read at {read} < {written}");
            assert!(
                sim.sm(*id).payloads().contains(&b"w1".to_vec()),
                "member {id}"
            );
        }
        sim.run(200);
        for (what, n) in [("read_index", read), ("linearizable_barrier", barrier)] {
            if let Some(Ok(index)) = sim.outcome(n) {
                panic!("isolated member answered {what} with {index}");
            }
        }
        // Once it stepped down it still cannot answer.
        let late = sim.read_index(old);
        sim.run(100);
        assert!(!matches!(sim.outcome(late), Some(Ok(_))));
        assert!(!sim.sm(old).payloads().contains(&b"w1".to_vec()));

        // Healed, it reads the majority's write.
        sim.heal();
        sim.elect(2_000);
        let n = sim.barrier(old);
        assert!(sim.wait(n, 2_000).unwrap() >= written);
        assert!(sim.sm(old).payloads().contains(&b"w1".to_vec()));
    }
}

fn small_snapshots(cfg: &mut NodeConfig) {
    cfg.snapshot_count = 20;
    cfg.snapshot_catchup_entries = 5;
}

#[test]
fn a_lagging_follower_catches_up_by_snapshot() {
    for seed in SEEDS {
        let mut sim = Sim::new(3, seed, small_snapshots);
        let all = sim.ids();
        let leader = sim.elect(1_000);
        let lagging = others(&all, leader)[0];
        let before = sim.propose_and_wait(leader, b"start".to_vec());
        sim.wait_applied(&all, before, 1_000);

        let rest = others(&all, lagging);
        sim.partition(&[&[lagging], &rest]);
        let burst: Vec<usize> = payloads("burst", 100)
            .into_iter()
            .map(|p| sim.propose(leader, p))
            .collect();
        let mut last = 0;
        for n in burst {
            last = last.max(sim.wait(n, 5_000).expect("burst proposal"));
        }
        let lag = sim.sm(lagging);
        assert!(lag.applied < last && lag.restores.is_empty());
        assert!(sim.stats().snapshots.iter().all(|s| !s.delivered));

        sim.heal();
        sim.wait_applied(&[lagging], last, 3_000);
        let lag = sim.sm(lagging);
        assert!(
            !lag.restores.is_empty(),
            "the follower caught up by restoring a snapshot"
        );
        let restored_at = *lag.restores.last().unwrap();
        assert!(
            restored_at > before + 5,
            "the snapshot skipped the released log"
        );
        let meta = lag.restored.as_ref().unwrap();
        assert_eq!(meta.index(), restored_at);
        let mut voters = meta.voters().to_vec();
        voters.sort_unstable();
        assert_eq!(voters, vec![1, 2, 3], "the snapshot carries the membership");
        assert!(sim
            .stats()
            .snapshots
            .iter()
            .any(|s| s.from == leader && s.to == lagging && s.delivered));
        assert!(sim.sm(leader).snapshots_taken >= 1);

        // The log after the snapshot keeps flowing to it.
        let mut last = 0;
        for p in payloads("tail", 10) {
            last = sim.propose_and_wait(leader, p);
        }
        sim.wait_applied(&all, last, 1_000);
        let applied = sim.assert_same_entries(&all);
        let got_burst: BTreeSet<Vec<u8>> = applied[1..101].iter().map(|(_, p)| p.clone()).collect();
        let mut want_burst = payloads("burst", 100);
        want_burst.sort();
        assert_eq!(got_burst.into_iter().collect::<Vec<_>>(), want_burst);
        let tail: Vec<Vec<u8>> = applied[101..].iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(tail, payloads("tail", 10));
        assert_eq!(sim.status(lagging).role, Role::Follower);
    }
}

#[test]
fn membership_learner_promotion_removal_and_joint_change() {
    use ConfChangeType::{AddLearnerNode, AddNode, RemoveNode};
    for seed in SEEDS {
        let mut sim = Sim::new(3, seed, no_tweak);
        let leader = sim.elect(1_000);
        for p in payloads("data", 10) {
            sim.propose_and_wait(leader, p);
        }
        // raft refuses a conf change until the leader applied its own first entry.
        let n = sim.barrier(leader);
        sim.wait(n, 1_000).unwrap();
        let change = |sim: &mut Sim, cc: ConfChangeV2| {
            let n = sim.propose_conf_change(leader, cc);
            sim.wait(n, 2_000).expect("conf change")
        };

        // 1. A learner with an empty log joins and catches up from the log.
        sim.start_joining(4);
        assert_eq!(sim.status(4).voters, Vec::<u64>::new());
        let index = change(&mut sim, conf_change(&[(AddLearnerNode, 4)]));
        let members = [1, 2, 3, 4];
        wait_membership(&mut sim, &members, &[1, 2, 3], &[4]);
        sim.wait_applied(&members, index, 1_000);
        sim.assert_same_entries(&members);
        assert_eq!(sim.status(4).role, Role::Follower);

        // 2. Promote it.
        change(&mut sim, conf_change(&[(AddNode, 4)]));
        wait_membership(&mut sim, &members, &[1, 2, 3, 4], &[]);

        // 3. Remove a voter (not the leader).
        let removed = others(&[1, 2, 3], leader)[0];
        change(&mut sim, conf_change(&[(RemoveNode, removed)]));
        let alive = others(&members, removed);
        wait_membership(&mut sim, &alive, &alive, &[]);
        sim.crash(removed);
        let index = sim.propose_and_wait(leader, b"after-remove".to_vec());
        sim.wait_applied(&alive, index, 1_000);

        // 4. Two changes at once: joint consensus, left automatically.
        sim.start_joining(5);
        let out = others(&alive, leader)[0];
        change(&mut sim, conf_change(&[(AddNode, 5), (RemoveNode, out)]));
        let mut voters: Vec<u64> = others(&alive, out);
        voters.push(5);
        voters.sort_unstable();
        wait_membership(&mut sim, &voters, &voters, &[]);
        sim.run_until("the leader to leave the joint configuration", 2_000, |s| {
            let confs = s.sm(leader).conf_states;
            let (_, last) = confs.last().unwrap();
            last.voters_outgoing.is_empty() && !last.auto_leave
        });
        let confs = sim.sm(leader).conf_states;
        let joint = confs
            .iter()
            .find(|(_, cs)| !cs.voters_outgoing.is_empty())
            .expect("a joint configuration was applied");
        let mut outgoing = joint.1.voters_outgoing.clone();
        outgoing.sort_unstable();
        assert_eq!(outgoing, alive, "the old voters stay in the outgoing half");
        assert!(joint.1.auto_leave);
        sim.crash(out);

        // The final cluster commits, and every member holds the same state.
        assert_eq!(sim.running(), voters);
        sim.elect(2_000);
        let index = sim.propose_and_wait(leader, b"final".to_vec());
        sim.wait_applied(&voters, index, 1_000);
        let applied = sim.assert_same_entries(&voters);
        assert_eq!(applied.len(), 12);
        assert_eq!(applied.last().unwrap().1, b"final".to_vec());
    }
}

#[test]
fn a_member_added_after_the_log_was_released_joins_by_snapshot() {
    use ConfChangeType::{AddLearnerNode, AddNode};
    for seed in SEEDS {
        let mut sim = Sim::new(3, seed, small_snapshots);
        let all = sim.ids();
        let leader = sim.elect(1_000);
        let mut last = 0;
        for p in payloads("early", 60) {
            last = sim.propose_and_wait(leader, p);
        }
        sim.wait_applied(&all, last, 1_000);
        let n = sim.barrier(leader);
        sim.wait(n, 1_000).unwrap();

        // The bootstrap entries are gone from the leader's log: only a snapshot can help.
        sim.start_joining(4);
        let n = sim.propose_conf_change(leader, conf_change(&[(AddLearnerNode, 4)]));
        sim.wait(n, 2_000).unwrap();
        let members = [1, 2, 3, 4];
        wait_membership(&mut sim, &members, &[1, 2, 3], &[4]);
        let n = sim.propose_conf_change(leader, conf_change(&[(AddNode, 4)]));
        sim.wait(n, 2_000).unwrap();
        wait_membership(&mut sim, &members, &[1, 2, 3, 4], &[]);
        let index = sim.propose_and_wait(leader, b"joined".to_vec());
        sim.wait_applied(&members, index, 1_000);
        let joined = sim.sm(4);
        assert!(
            !joined.restores.is_empty(),
            "the new member restored a snapshot"
        );
        assert!(joined
            .conf_states
            .iter()
            .all(|(i, _)| *i > joined.restores[0]));
        let applied = sim.assert_same_entries(&members);
        assert_eq!(applied.len(), 61);
    }
}
