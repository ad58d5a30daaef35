//! Exactly-once apply under a network that duplicates, delays and reorders messages, in
//! the deterministic simulation: whatever reaches the log twice, or late, changes the
//! state machines at most once, and every member applies the same sequence.

mod sim;

use std::collections::HashSet;

use cairn_raft_node::RaftError;
use sim::{Kind, Sim};

/// Every member applied exactly the same proposals, each payload at most once.
fn assert_each_payload_once_and_members_agree(sim: &Sim, seed: u64) -> Vec<Vec<u8>> {
    let reference = sim.assert_same_entries(&sim.ids());
    let mut seen = HashSet::new();
    for (index, payload) in &reference {
        assert!(
            seen.insert(payload.clone()),
            "seed {seed}: {:?} applied a second time at index {index}",
            String::from_utf8_lossy(payload)
        );
    }
    reference.into_iter().map(|(_, p)| p).collect()
}

#[test]
fn proposals_delivered_twice_to_the_leader_apply_once() {
    for seed in 1..=10 {
        let mut sim = Sim::new(3, seed, |_| {});
        let leader = sim.elect(1_000);
        let followers: Vec<u64> = sim.ids().into_iter().filter(|id| *id != leader).collect();
        // Every proposal a follower forwards reaches the leader twice: once at once, once
        // much later, after many other proposals (as bytes of an abandoned connection do).
        sim.faults.delay = (1, 3);
        sim.faults.duplicate = 1.0;
        sim.faults.duplicate_kind = Kind::Proposals;
        sim.faults.duplicate_delay = (20, 300);
        let mut proposals = Vec::new();
        for i in 0..60 {
            let on = followers[i % followers.len()];
            proposals.push(sim.propose(on, format!("p{i}")));
            sim.run(2);
        }
        sim.run_until("every proposal answered", 5_000, |s| {
            proposals.iter().all(|p| s.outcome(*p).is_some())
        });
        sim.run(400); // let every duplicate arrive and be applied (or not)
        for p in &proposals {
            assert!(
                matches!(sim.outcome(*p), Some(Ok(_))),
                "seed {seed}: {:?}",
                sim.outcome(*p)
            );
        }
        let applied = assert_each_payload_once_and_members_agree(&sim, seed);
        assert_eq!(applied.len(), 60, "seed {seed}");
        let rejected = sim.sm(leader).rejected.len();
        assert!(
            rejected > 0,
            "seed {seed}: the duplicates must have reached the log"
        );
    }
}

#[test]
fn late_proposals_after_a_leader_change_apply_at_most_once() {
    for seed in 1..=10 {
        let mut sim = Sim::new(3, seed, |_| {});
        let leader = sim.elect(1_000);
        let followers: Vec<u64> = sim.ids().into_iter().filter(|id| *id != leader).collect();
        sim.faults.delay = (1, 5);
        sim.faults.duplicate = 0.5;
        sim.faults.duplicate_kind = Kind::All;
        sim.faults.duplicate_delay = (5, 200);
        let mut proposals = Vec::new();
        for i in 0..40 {
            proposals.push(sim.propose(followers[i % 2], format!("a{i}")));
            sim.run(1);
        }
        // The leader is cut off while proposals are in flight: a new leader takes over,
        // and the old one re-forwards what reaches it late.
        let rest: Vec<u64> = followers.clone();
        sim.partition(&[&[leader], &rest]);
        for i in 0..40 {
            proposals.push(sim.propose(followers[i % 2], format!("b{i}")));
            sim.run(3);
        }
        sim.heal();
        // Proposals lost with the old leader are never answered (clients time out): run
        // until every duplicate and late copy has had its chance.
        sim.run(3_000);
        let applied: HashSet<Vec<u8>> = assert_each_payload_once_and_members_agree(&sim, seed)
            .into_iter()
            .collect();
        // An answered proposal is applied; a refused one is not; an unanswered one may or
        // may not be (once at most, checked above).
        for (i, p) in proposals.iter().enumerate() {
            let payload = if i < 40 {
                format!("a{i}")
            } else {
                format!("b{}", i - 40)
            }
            .into_bytes();
            match sim.outcome(*p) {
                Some(Ok(_)) => assert!(
                    applied.contains(&payload),
                    "seed {seed}: acknowledged {:?} not applied",
                    String::from_utf8_lossy(&payload)
                ),
                Some(Err(RaftError::ProposalDropped(_))) => assert!(
                    !applied.contains(&payload),
                    "seed {seed}: refused {:?} applied",
                    String::from_utf8_lossy(&payload)
                ),
                None => {}
                other => panic!("seed {seed}: unexpected outcome {other:?}"),
            }
        }
    }
}

#[test]
fn a_restart_rebuilds_the_ledger_from_its_snapshot_mark() {
    let seed = 7;
    let mut sim = Sim::new(3, seed, |cfg| cfg.snapshot_count = 20);
    let leader = sim.elect(1_000);
    let followers: Vec<u64> = sim.ids().into_iter().filter(|id| *id != leader).collect();
    let (a, b) = (followers[0], followers[1]);
    // Member a's proposals reach the leader twice, the second copies long after the
    // leader has written a snapshot mark past the originals and restarted.
    sim.faults.duplicate = 1.0;
    sim.faults.duplicate_kind = Kind::ProposalsFrom(a);
    sim.faults.duplicate_delay = (400, 600);
    let mut proposals = Vec::new();
    for i in 0..10 {
        proposals.push(sim.propose(a, format!("a{i}")));
        sim.run(2);
    }
    for i in 0..40 {
        proposals.push(sim.propose(b, format!("b{i}")));
        sim.run(2);
    }
    sim.run_until("every proposal answered", 5_000, |s| {
        proposals.iter().all(|p| s.outcome(*p).is_some())
    });
    // Every member restarts before the copies arrive: each rebuilds the ledger from its
    // last mark (where a's proposals are) and the log after it (where none of a's are).
    for id in sim.ids() {
        sim.crash(id);
        sim.restart(id);
    }
    sim.elect(1_000);
    sim.run(1_000);
    let applied = assert_each_payload_once_and_members_agree(&sim, seed);
    assert_eq!(applied.len(), 50);
    assert!(
        !sim.sm(leader).rejected.is_empty(),
        "the copies must have reached the log"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    fn scenario(seed: u64) -> (Vec<String>, Vec<Vec<u8>>) {
        let mut sim = Sim::new(3, seed, |cfg| cfg.snapshot_count = 30);
        let leader = sim.elect(1_000);
        sim.faults.drop = 0.05;
        sim.faults.delay = (1, 6);
        sim.faults.duplicate = 0.2;
        sim.faults.duplicate_delay = (1, 50);
        let mut proposals = Vec::new();
        for i in 0..50 {
            let on = 1 + (i as u64 % 3);
            proposals.push(sim.propose(on, format!("t{i}")));
            sim.run(2);
            if i == 20 {
                sim.partition(&[
                    &[leader],
                    &sim.ids()
                        .into_iter()
                        .filter(|id| *id != leader)
                        .collect::<Vec<_>>(),
                ]);
            }
            if i == 35 {
                sim.heal();
            }
        }
        sim.faults.drop = 0.0;
        sim.run(1_500);
        let applied = assert_each_payload_once_and_members_agree(&sim, seed);
        (sim.trace().to_vec(), applied)
    }
    for seed in [3, 11, 42] {
        let (first, applied) = scenario(seed);
        let (second, again) = scenario(seed);
        assert!(
            first.len() > 100,
            "seed {seed}: a trace of {} lines",
            first.len()
        );
        assert_eq!(first, second, "seed {seed}: two runs differ");
        assert_eq!(applied, again, "seed {seed}");
    }
}
