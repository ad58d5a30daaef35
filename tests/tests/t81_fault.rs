//! Three members under faults while concurrent clients read, write and compare-and-swap
//! a handful of keys: every kind of fault in turn (blackholes both ways and one way,
//! kill -9 and restart, SIGSTOP/SIGCONT, kill-style inbound isolation), followers hit as
//! often as the leader except by kills, with a small `--snapshot-count` so snapshots
//! are taken and sent while it happens; blackholed bytes arrive at the sender's next TCP
//! retransmission after the heal. The history must be linearizable, no
//! acknowledged write lost, no write applied twice, the watcher must see every revision
//! once and in order, all members must end with the same history and no proposal may
//! reach a raft log twice (see `cairn_tests::fault`). `cargo xtask fault` runs the same scenario at length.

use std::time::{Duration, SystemTime};

use cairn_tests::fault::{Fault, Keep, Mix, Report, Scenario};

/// The seed: `CAIRN_FAULT_SEED` to repeat a run's nemesis, else from the clock.
fn seed() -> u64 {
    match std::env::var("CAIRN_FAULT_SEED") {
        Ok(s) => s.parse().expect("CAIRN_FAULT_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    }
}

#[test]
fn linearizable_exactly_once_and_identical_histories_under_blackholes_kills_and_pauses() {
    let scenario = Scenario {
        clients: 8,
        keys: 4,
        op_timeout: Duration::from_secs(2),
        duration: Duration::from_secs(22),
        snapshot_count: 200,
        mix: Mix::every_kind(),
        fault_length: (Duration::from_millis(1000), Duration::from_millis(2500)),
        gap: (Duration::from_millis(200), Duration::from_millis(600)),
        // Held bytes arrive at the sender's next TCP retransmission, after fresh
        // connections already carry traffic again, as on a real network.
        tcp_backoff: true,
        check_budget: Duration::from_secs(120),
        verbose: true,
        keep: Keep::OnProblem(std::env::temp_dir().join("cairn-fault")),
        ..Scenario::issue_10(seed())
    };
    eprintln!(
        "seed {} (CAIRN_FAULT_SEED={} repeats the nemesis), mix {}",
        scenario.seed, scenario.seed, scenario.mix
    );
    let report = scenario.run();
    eprintln!("{}\n{}", Report::header(), report.row(0));
    if let Some(dir) = &report.kept {
        eprintln!("evidence kept in {}", dir.display());
    }
    let problems = report.problems();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The schedule takes the mix in turn: the first faults are a blackhole, a kill and
    // an inbound blackhole, whatever the seed.
    for kind in [Fault::Blackhole, Fault::Kill, Fault::BlackholeIn] {
        assert!(
            report.faults.get(&kind).copied().unwrap_or(0) > 0,
            "no {kind:?} injected: {:?}",
            report.faults
        );
    }
    assert!(report.final_revision > 1, "nothing was written");
}
