//! A replicated counter on one member: proposals go through raft and the WAL, complete
//! when applied, and survive a restart (the log is replayed into a fresh state machine).
//!
//! `cargo run -p cairn-raft-node --example counter`

use cairn_raft_node::{
    start, ApplyError, CommittedEntry, EntryKind, NoPeers, NodeConfig, Role, StateMachine,
};

/// Adds every proposal (a big-endian u64) to a sum. Kept in memory only, so a restart
/// rebuilds it from the log: `applied_index` starts at 0.
#[derive(Default)]
struct Counter {
    applied: u64,
    sum: u64,
}

impl StateMachine for Counter {
    type Output = u64;

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn apply(&mut self, entry: CommittedEntry<'_>) -> Result<u64, ApplyError> {
        if let EntryKind::Normal(data) = entry.kind {
            let bytes: [u8; 8] = data
                .try_into()
                .map_err(|_| ApplyError(format!("entry {} is not a u64", entry.index)))?;
            self.sum += u64::from_be_bytes(bytes);
        }
        // Empty entries, membership changes and rejected duplicates change nothing else.
        self.applied = entry.index;
        Ok(self.sum)
    }

    fn persist(&mut self) -> Result<(), ApplyError> {
        Ok(())
    }
}

async fn leader(node: &cairn_raft_node::RaftHandle<u64>) {
    let mut status = node.subscribe_status();
    let _ = status.wait_for(|s| s.role == Role::Leader).await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cfg = NodeConfig::new(1, dir.path().join("wal"));

    let node = start(cfg.clone(), Counter::default(), NoPeers)?;
    leader(&node).await;
    for n in 1..=10u64 {
        let sum = node.propose(n.to_be_bytes().to_vec()).await?;
        println!("proposed {n:>2}, sum is now {sum}");
    }
    let read_at = node.linearizable_barrier().await?;
    println!("a linearizable read may be served at index {read_at}");
    tokio::task::spawn_blocking(move || node.shutdown()).await?;

    // A new process: the WAL is replayed into an empty counter.
    let node = start(cfg, Counter::default(), NoPeers)?;
    leader(&node).await;
    let sum = node.propose(0u64.to_be_bytes().to_vec()).await?;
    println!("after a restart the sum is still {sum}");
    assert_eq!(sum, 55);
    tokio::task::spawn_blocking(move || node.shutdown()).await?;
    Ok(())
}
