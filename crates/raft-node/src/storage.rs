//! The raft log's storage: raft-rs reads from an in-memory [`MemStorage`] while every
//! change is first made durable in the [`Wal`].

use std::path::Path;

use cairn_wal::{EntryRecord, HardState as WalHardState, SnapshotMark, Wal, WalBatch, WalOptions};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata,
};
use raft::storage::MemStorage;

use crate::error::StorageError;
use crate::proposal::ProposalLedger;
use crate::wire;

/// What was recovered from disk when the log store was opened.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The metadata written when the log was created (e.g. member and cluster ids).
    pub metadata: Vec<u8>,
    /// The index of the latest snapshot mark (0 if none).
    pub snapshot_index: u64,
    /// The membership at the snapshot mark.
    pub conf_state: ConfState,
    /// The proposals applied up to the snapshot mark.
    pub ledger: ProposalLedger,
    /// The last hard state written.
    pub hard_state: HardState,
    /// The last index in the log.
    pub last_index: u64,
}

/// A voter of a new cluster and the context of the membership change that adds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's raft id.
    pub id: u64,
    /// Stored in the membership change entry (e.g. the member's name and URLs).
    pub context: Vec<u8>,
}

fn entry_record(e: &Entry) -> Result<EntryRecord, StorageError> {
    Ok(EntryRecord {
        index: e.index,
        term: e.term,
        data: e
            .write_to_bytes()
            .map_err(|err| StorageError::Decode(err.to_string()))?,
    })
}

/// The durable raft log: the WAL for durability, [`MemStorage`] for raft-rs's reads.
pub struct LogStore {
    wal: Wal,
    mem: MemStorage,
    hard_state: HardState,
    hard_state_dirty: bool,
    snapshot_index: u64,
}

fn to_wal_hs(hs: &HardState) -> WalHardState {
    WalHardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}

/// The first bytes of a snapshot mark's data written by this version: the membership
/// and the proposal ledger at the mark. Older marks hold only the encoded membership
/// (whose protobuf encoding can never start with these bytes).
const MARK_MAGIC: &[u8; 4] = b"CMK1";

/// A snapshot mark's data: the membership and the proposal ledger at its index.
fn mark_data(cs: &ConfState, ledger: &ProposalLedger) -> Result<Vec<u8>, StorageError> {
    let cs = cs
        .write_to_bytes()
        .map_err(|e| StorageError::Decode(e.to_string()))?;
    let ledger = ledger.encode();
    let mut out = Vec::with_capacity(8 + cs.len() + ledger.len());
    out.extend_from_slice(MARK_MAGIC);
    out.extend_from_slice(&(cs.len() as u32).to_be_bytes());
    out.extend_from_slice(&cs);
    out.extend_from_slice(&ledger);
    Ok(out)
}

/// Reads what [`mark_data`] wrote, or an older mark holding only the membership.
fn read_mark_data(data: &[u8]) -> Result<(ConfState, ProposalLedger), StorageError> {
    let bad = |what: String| StorageError::Decode(format!("snapshot mark: {what}"));
    let Some(rest) = data.strip_prefix(MARK_MAGIC.as_slice()) else {
        let cs = ConfState::parse_from_bytes(data).map_err(|e| bad(e.to_string()))?;
        return Ok((cs, ProposalLedger::default()));
    };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        return Err(bad("truncated".into()));
    };
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(bad("truncated membership".into()));
    }
    let (cs, ledger) = rest.split_at(len);
    let cs = ConfState::parse_from_bytes(cs).map_err(|e| bad(e.to_string()))?;
    let ledger = ProposalLedger::decode(ledger).map_err(|e| bad(e.to_string()))?;
    Ok((cs, ledger))
}

impl LogStore {
    /// Whether a log already exists in `dir` (the member restarts from it).
    pub fn exists(dir: &Path) -> bool {
        Wal::exists(dir)
    }

    /// Creates a new log. For a member of a new cluster, `initial` names every initial
    /// voter with the context of its membership change: they become the log's first
    /// entries (term 1, committed), identical on every initial member, so a member that
    /// joins later learns the initial membership from the log as etcd's members do. A
    /// member joining an existing cluster starts with an empty `initial`.
    pub fn bootstrap(
        dir: &Path,
        metadata: &[u8],
        initial: &[InitialMember],
        opts: WalOptions,
    ) -> Result<(LogStore, Recovered), StorageError> {
        let mut wal = Wal::create(dir, metadata, opts)?;
        let conf_state = ConfState::default();
        let mut entries = Vec::with_capacity(initial.len());
        for (i, member) in initial.iter().enumerate() {
            let cc = ConfChange {
                change_type: ConfChangeType::AddNode,
                node_id: member.id,
                context: member.context.clone().into(),
                ..Default::default()
            };
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChange);
            e.term = 1;
            e.index = i as u64 + 1;
            e.data = cc
                .write_to_bytes()
                .map_err(|err| StorageError::Decode(err.to_string()))?
                .into();
            entries.push(e);
        }
        let hs = if entries.is_empty() {
            HardState::default()
        } else {
            HardState {
                term: 1,
                vote: 0,
                commit: entries.len() as u64,
                ..Default::default()
            }
        };
        let mut batch = WalBatch {
            entries: Vec::new(),
            hard_state: Some(to_wal_hs(&hs)),
            snapshot: Some(SnapshotMark {
                index: 0,
                term: 0,
                data: mark_data(&conf_state, &ProposalLedger::default())?,
            }),
        };
        for e in &entries {
            batch.entries.push(entry_record(e)?);
        }
        wal.append(&batch)?;
        let mem = MemStorage::new();
        {
            let mut core = mem.wl();
            core.set_conf_state(conf_state.clone());
            core.append(&entries)?;
            core.set_hardstate(hs.clone());
        }
        let recovered = Recovered {
            metadata: metadata.to_vec(),
            snapshot_index: 0,
            conf_state,
            ledger: ProposalLedger::default(),
            hard_state: hs.clone(),
            last_index: entries.len() as u64,
        };
        Ok((
            LogStore {
                wal,
                mem,
                hard_state: hs,
                hard_state_dirty: false,
                snapshot_index: 0,
            },
            recovered,
        ))
    }

    /// Opens an existing log and rebuilds raft's view of it. `applied` is the index the
    /// state machine has durably applied: the commit index is raised to it if the WAL's
    /// recorded commit lags (commit-only hard states are written lazily).
    ///
    /// `restored` is the raft snapshot the state machine last installed, with the proposal
    /// ledger it carried: if the member stopped after installing it but before its mark
    /// reached the log, the mark is written now.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        applied: u64,
        restored: Option<(&SnapshotMetadata, &ProposalLedger)>,
    ) -> Result<(LogStore, Recovered), StorageError> {
        let (mut wal, mut replayed) = Wal::open(dir, opts)?;
        if let Some((meta, ledger)) = restored {
            let marked = replayed.snapshot.as_ref().map_or(0, |m| m.index);
            if meta.index > marked {
                if applied != meta.index {
                    return Err(StorageError::Inconsistent(format!(
                        "the state machine installed a snapshot at {} without a mark in the \
                         log, but has applied up to {applied}",
                        meta.index
                    )));
                }
                tracing::info!(
                    index = meta.index,
                    "writing the mark of a snapshot installed before the last stop"
                );
                wal.append(&WalBatch {
                    entries: Vec::new(),
                    hard_state: None,
                    snapshot: Some(SnapshotMark {
                        index: meta.index,
                        term: meta.term,
                        data: mark_data(meta.get_conf_state(), ledger)?,
                    }),
                })?;
                drop(wal);
                (wal, replayed) = Wal::open(dir, opts)?;
            }
        }
        let mem = MemStorage::new();
        let (snapshot_index, snapshot_term, conf_state, ledger) = match &replayed.snapshot {
            Some(mark) => {
                let (cs, ledger) = read_mark_data(&mark.data)?;
                (mark.index, mark.term, cs, ledger)
            }
            None => (0, 0, ConfState::default(), ProposalLedger::default()),
        };
        {
            let mut core = mem.wl();
            if snapshot_index > 0 {
                let mut snap = Snapshot::default();
                let meta = SnapshotMetadata {
                    index: snapshot_index,
                    term: snapshot_term,
                    conf_state: protobuf::SingularPtrField::some(conf_state.clone()),
                    ..Default::default()
                };
                snap.set_metadata(meta);
                core.apply_snapshot(snap)?;
            } else {
                core.set_conf_state(conf_state.clone());
            }
            let mut entries = Vec::with_capacity(replayed.entries.len());
            for rec in &replayed.entries {
                let e = wire::parse_entry(&rec.data)
                    .map_err(|e| StorageError::Decode(e.to_string()))?;
                if e.index != rec.index || e.term != rec.term {
                    return Err(StorageError::Inconsistent(format!(
                        "WAL record ({}, {}) holds entry ({}, {})",
                        rec.index, rec.term, e.index, e.term
                    )));
                }
                entries.push(e);
            }
            core.append(&entries)?;
        }
        let last_index = replayed
            .entries
            .last()
            .map(|e| e.index)
            .unwrap_or(snapshot_index);
        let mut hs = HardState::default();
        if let Some(w) = replayed.hard_state {
            hs.term = w.term;
            hs.vote = w.vote;
            hs.commit = w.commit;
        }
        hs.term = hs.term.max(snapshot_term);
        if applied > last_index {
            return Err(StorageError::Inconsistent(format!(
                "the store applied index {applied} is beyond the log's last index {last_index}"
            )));
        }
        hs.commit = hs.commit.max(applied).max(snapshot_index).min(last_index);
        mem.wl().set_hardstate(hs.clone());
        let recovered = Recovered {
            metadata: replayed.metadata,
            snapshot_index,
            conf_state,
            ledger,
            hard_state: hs.clone(),
            last_index,
        };
        Ok((
            LogStore {
                wal,
                mem,
                hard_state: hs,
                hard_state_dirty: false,
                snapshot_index,
            },
            recovered,
        ))
    }

    /// The storage raft-rs reads from (shares state with this store).
    pub fn raft_storage(&self) -> MemStorage {
        self.mem.clone()
    }

    /// The index of the latest snapshot mark.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// Records a commit index learnt after a Ready; written with the next durable batch.
    pub fn note_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.hard_state.commit = commit;
            self.mem.wl().mut_hard_state().commit = commit;
            self.hard_state_dirty = true;
        }
    }

    /// Makes `entries` and the hard state durable (one fsync), then visible to raft-rs.
    /// A hard state change that only moves the commit index is not worth an fsync of its
    /// own: it is kept and written with the next batch.
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StorageError> {
        if let Some(hs) = hard_state {
            if *hs != self.hard_state {
                let only_commit =
                    hs.term == self.hard_state.term && hs.vote == self.hard_state.vote;
                self.hard_state = hs.clone();
                self.hard_state_dirty = true;
                if !only_commit {
                    self.write_batch(entries, true)?;
                    return self.publish(entries);
                }
            }
        }
        if !entries.is_empty() {
            self.write_batch(entries, true)?;
        }
        self.publish(entries)
    }

    fn write_batch(&mut self, entries: &[Entry], with_hs: bool) -> Result<(), StorageError> {
        let mut batch = WalBatch::default();
        batch.entries.reserve(entries.len());
        for e in entries {
            batch.entries.push(entry_record(e)?);
        }
        if with_hs && self.hard_state_dirty {
            batch.hard_state = Some(to_wal_hs(&self.hard_state));
        }
        let started = std::time::Instant::now();
        self.wal.append(&batch)?;
        metrics::histogram!(crate::metrics::WAL_FSYNC_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        if batch.hard_state.is_some() {
            self.hard_state_dirty = false;
        }
        Ok(())
    }

    fn publish(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut core = self.mem.wl();
        core.append(entries)?;
        core.set_hardstate(self.hard_state.clone());
        Ok(())
    }

    /// Writes a snapshot mark at `index` (whose applied state the caller has made durable)
    /// with the membership and the proposal ledger at that index, forgets in-memory
    /// entries before `keep_from`, and releases WAL segments no longer needed.
    pub fn mark_snapshot(
        &mut self,
        index: u64,
        term: u64,
        conf_state: &ConfState,
        ledger: &ProposalLedger,
        keep_from: u64,
    ) -> Result<(), StorageError> {
        let batch = WalBatch {
            entries: Vec::new(),
            hard_state: self.hard_state_dirty.then(|| to_wal_hs(&self.hard_state)),
            snapshot: Some(SnapshotMark {
                index,
                term,
                data: mark_data(conf_state, ledger)?,
            }),
        };
        self.wal.append(&batch)?;
        self.hard_state_dirty = false;
        self.snapshot_index = index;
        crash_point!("raft::after_snapshot_mark");
        self.mem.wl().compact(keep_from.min(index))?;
        self.wal.release_to(index)?;
        Ok(())
    }

    /// The first index raft can still read from memory.
    pub fn first_in_memory(&self) -> u64 {
        raft::Storage::first_index(&self.mem).unwrap_or(1)
    }

    /// Forgets in-memory entries before `index` (which must be applied); the WAL keeps
    /// them until the next snapshot mark.
    pub fn forget_before(&mut self, index: u64) -> Result<(), StorageError> {
        let first = raft::Storage::first_index(&self.mem)?;
        let last = raft::Storage::last_index(&self.mem)?;
        if index > first && index <= last {
            self.mem.wl().compact(index)?;
        }
        Ok(())
    }

    /// Installs a raft snapshot the state machine has already restored: a durable mark at
    /// its index (with its membership and the proposal ledger it carried), then raft's
    /// view of the log starts after it.
    pub fn install_snapshot(
        &mut self,
        snapshot: &Snapshot,
        ledger: &ProposalLedger,
    ) -> Result<(), StorageError> {
        let meta = snapshot.get_metadata();
        if self.hard_state.commit < meta.index {
            self.hard_state.commit = meta.index;
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
        let batch = WalBatch {
            entries: Vec::new(),
            hard_state: Some(to_wal_hs(&self.hard_state)),
            snapshot: Some(SnapshotMark {
                index: meta.index,
                term: meta.term,
                data: mark_data(meta.get_conf_state(), ledger)?,
            }),
        };
        self.wal.append(&batch)?;
        self.hard_state_dirty = false;
        self.snapshot_index = meta.index;
        {
            let mut core = self.mem.wl();
            core.apply_snapshot(snapshot.clone())?;
            core.set_hardstate(self.hard_state.clone());
        }
        self.wal.release_to(meta.index)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proposal::ProposalId;

    #[test]
    fn mark_data_round_trips_and_old_marks_read_as_membership_only() {
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        };
        let mut ledger = ProposalLedger::default();
        ledger.record(ProposalId {
            proposer: 2,
            seq: 77,
        });
        let data = mark_data(&cs, &ledger).unwrap();
        assert_eq!(read_mark_data(&data).unwrap(), (cs.clone(), ledger));
        let old = cs.write_to_bytes().unwrap();
        assert_eq!(
            read_mark_data(&old).unwrap(),
            (cs, ProposalLedger::default())
        );
        for cut in 4..data.len() {
            assert!(read_mark_data(&data[..cut]).is_err(), "cut at {cut}");
        }
    }
}
