//! A single-member node over a real WAL in a temp dir: proposals complete when applied,
//! reads see them, and a restart replays each entry into the state machine exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_raft_node::{
    start, ApplyError, CommittedEntry, EntryKind, NoPeers, NodeConfig, RaftError, Role,
    StateMachine,
};

/// A state machine whose "durable" state is shared with the test (it survives a restart
/// of the node the way a RocksDB directory would).
#[derive(Clone, Default)]
struct Recorder {
    state: Arc<Mutex<(u64, Vec<Vec<u8>>)>>,
}

impl StateMachine for Recorder {
    type Output = (u64, usize);
    fn applied_index(&self) -> u64 {
        self.state.lock().unwrap().0
    }
    fn apply(&mut self, e: CommittedEntry<'_>) -> Result<(u64, usize), ApplyError> {
        let mut st = self.state.lock().unwrap();
        assert!(e.index > st.0, "entry {} applied twice", e.index);
        st.0 = e.index;
        if let EntryKind::Normal(data) = e.kind {
            st.1.push(data.to_vec());
        }
        Ok((e.index, st.1.len()))
    }
    fn persist(&mut self) -> Result<(), ApplyError> {
        Ok(())
    }
}

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut cfg = NodeConfig::new(1, dir.join("wal"));
    cfg.tick_interval = Duration::from_millis(10);
    cfg
}

async fn wait_leader(node: &cairn_raft_node::RaftHandle<(u64, usize)>) {
    let mut rx = node.subscribe_status();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| s.role == Role::Leader),
    )
    .await
    .expect("no leader within 10 s")
    .expect("node stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_complete_when_applied_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sm = Recorder::default();
    let node = start(config(dir.path()), sm.clone(), NoPeers).unwrap();
    wait_leader(&node).await;

    let mut handles = Vec::new();
    for i in 0..50u32 {
        let n = node.clone();
        handles.push(tokio::spawn(async move {
            n.propose(i.to_be_bytes().to_vec()).await
        }));
    }
    let mut indexes = Vec::new();
    for h in handles {
        let (index, _) = h.await.unwrap().unwrap();
        indexes.push(index);
    }
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 50, "every proposal got its own entry");

    let read = node.linearizable_barrier().await.unwrap();
    assert!(read >= *indexes.last().unwrap());
    let before = sm.state.lock().unwrap().clone();
    assert_eq!(before.1.len(), 50);
    tokio::task::spawn_blocking({
        let n = node.clone();
        move || n.shutdown()
    })
    .await
    .unwrap();
    assert!(matches!(
        node.propose(vec![1]).await,
        Err(RaftError::Stopped)
    ));

    // Restart over the same WAL and the same (already applied) state machine.
    let node = start(config(dir.path()), sm.clone(), NoPeers).unwrap();
    wait_leader(&node).await;
    let (index, count) = node.propose(b"after".to_vec()).await.unwrap();
    assert!(index > before.0);
    assert_eq!(count, 51, "nothing was applied twice on restart");
    tokio::task::spawn_blocking(move || node.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_state_machine_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let sm = Recorder::default();
    let node = start(config(dir.path()), sm.clone(), NoPeers).unwrap();
    wait_leader(&node).await;
    for i in 0..10u8 {
        node.propose(vec![i]).await.unwrap();
    }
    tokio::task::spawn_blocking(move || node.shutdown())
        .await
        .unwrap();

    // A state machine that lost everything (e.g. unsynced writes) replays the whole log.
    let fresh = Recorder::default();
    let node = start(config(dir.path()), fresh.clone(), NoPeers).unwrap();
    wait_leader(&node).await;
    node.linearizable_barrier().await.unwrap();
    let st = fresh.state.lock().unwrap().clone();
    assert_eq!(st.1, (0..10u8).map(|i| vec![i]).collect::<Vec<_>>());
    tokio::task::spawn_blocking(move || node.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_marks_release_the_log_without_losing_state() {
    let dir = tempfile::tempdir().unwrap();
    let sm = Recorder::default();
    let mut cfg = config(dir.path());
    cfg.snapshot_count = 20;
    cfg.snapshot_catchup_entries = 5;
    let node = start(cfg.clone(), sm.clone(), NoPeers).unwrap();
    wait_leader(&node).await;
    for i in 0..100u8 {
        node.propose(vec![i]).await.unwrap();
    }
    tokio::task::spawn_blocking(move || node.shutdown())
        .await
        .unwrap();
    let applied = sm.state.lock().unwrap().0;

    let node = start(cfg, sm.clone(), NoPeers).unwrap();
    wait_leader(&node).await;
    let (index, count) = node.propose(vec![200]).await.unwrap();
    assert!(index > applied);
    assert_eq!(count, 101);
    tokio::task::spawn_blocking(move || node.shutdown())
        .await
        .unwrap();
}
