//! Raft snapshots: the state machine's copy sent to a follower too far behind, the
//! leader's copy installed here, and the marks that let the log be released.

use std::time::Instant;

use raft::eraftpb::{Message, Snapshot};
use raft::Storage as _;

use super::Node;
use crate::state_machine::{SnapshotMeta, StateMachine};
use crate::transport::{SnapshotData, Transport};

/// Entries released from memory at a time (so that trimming is not done per entry).
const TRIM_SLACK: u64 = 1024;

impl<S: StateMachine, T: Transport> Node<S, T> {
    /// The last applied index and its term.
    pub(super) fn applied_term(&self) -> Result<(u64, u64), String> {
        let index = self.applied;
        let term = self
            .raw
            .store()
            .term(index)
            .map_err(|e| format!("term of applied index {index}: {e}"))?;
        Ok((index, term))
    }

    pub(super) fn prepare_snapshot(&mut self, msg: &mut Message) -> Result<SnapshotData, String> {
        let (index, term) = self.applied_term()?;
        let data = self.sm.snapshot(&self.ledger).map_err(|e| e.to_string())?;
        let meta = msg.mut_snapshot().mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        Ok(data)
    }

    /// Installs the snapshot raft accepted from the leader: the state machine first (it
    /// records the snapshot's metadata atomically with the state), then the log's mark.
    pub(super) fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let meta = snapshot.get_metadata();
        let Some(path) = self.staged.remove(&(meta.index, meta.term)) else {
            return Err(format!(
                "raft accepted a snapshot at index {} term {} whose data never arrived",
                meta.index, meta.term
            ));
        };
        let started = Instant::now();
        let ledger = self
            .sm
            .restore(&SnapshotMeta::from_raft(meta.clone()), &path)
            .map_err(|e| format!("restoring the snapshot at index {}: {e}", meta.index))?;
        crash_point!("raft::after_snapshot_restore");
        self.log
            .install_snapshot(snapshot, &ledger)
            .map_err(|e| format!("recording the snapshot at index {}: {e}", meta.index))?;
        let _ = std::fs::remove_file(&path);
        self.applied = meta.index;
        self.ledger = ledger;
        self.conf_state = meta.get_conf_state().clone();
        self.campaign_alone = true;
        let _ = self.applied_tx.send(self.applied);
        tracing::info!(
            index = meta.index,
            term = meta.term,
            took_ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    pub(super) fn maybe_snapshot(&mut self) -> Result<(), String> {
        self.trim_memory()?;
        let since = self.applied.saturating_sub(self.log.snapshot_index());
        if self.cfg.snapshot_count == 0 || since < self.cfg.snapshot_count {
            return Ok(());
        }
        let (index, term) = self.applied_term()?;
        self.sm
            .persist()
            .map_err(|e| format!("persisting the state machine: {e}"))?;
        let keep_from = index
            .saturating_sub(self.cfg.snapshot_catchup_entries)
            .max(1);
        self.log
            .mark_snapshot(index, term, &self.conf_state, &self.ledger, keep_from)
            .map_err(|e| format!("writing a snapshot mark: {e}"))?;
        tracing::info!(index, term, "snapshot mark written, log released");
        Ok(())
    }

    /// Keeps only the last `snapshot_catchup_entries` applied entries in memory (as etcd
    /// 3.6 compacts its raft log), not everything since the last snapshot mark: a
    /// follower further behind gets a snapshot either way, and between two marks
    /// (`--snapshot-count` entries) the log would otherwise hold them all. The WAL keeps
    /// them until the next mark.
    fn trim_memory(&mut self) -> Result<(), String> {
        let keep_from = self
            .applied
            .saturating_sub(self.cfg.snapshot_catchup_entries)
            .max(1);
        if keep_from < self.log.first_in_memory() + TRIM_SLACK {
            return Ok(());
        }
        self.log
            .forget_before(keep_from)
            .map_err(|e| format!("releasing applied entries from memory: {e}"))
    }
}
