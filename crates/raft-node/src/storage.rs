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

/// What was recovered from disk when the log store was opened.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The metadata written when the log was created (e.g. member and cluster ids).
    pub metadata: Vec<u8>,
    /// The index of the latest snapshot mark (0 if none).
    pub snapshot_index: u64,
    /// The membership at the snapshot mark.
    pub conf_state: ConfState,
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

fn conf_state_bytes(cs: &ConfState) -> Result<Vec<u8>, StorageError> {
    cs.write_to_bytes()
        .map_err(|e| StorageError::Decode(e.to_string()))
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
                data: conf_state_bytes(&conf_state)?,
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
    /// `restored` is the raft snapshot the state machine last installed: if the member
    /// stopped after installing it but before its mark reached the log, the mark is
    /// written now.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        applied: u64,
        restored: Option<&SnapshotMetadata>,
    ) -> Result<(LogStore, Recovered), StorageError> {
        let (mut wal, mut replayed) = Wal::open(dir, opts)?;
        if let Some(meta) = restored {
            let marked = replayed.snapshot.as_ref().map_or(0, |m| m.index);
            if meta.index > marked {
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
                        data: conf_state_bytes(meta.get_conf_state())?,
                    }),
                })?;
                drop(wal);
                (wal, replayed) = Wal::open(dir, opts)?;
            }
        }
        let mem = MemStorage::new();
        let (snapshot_index, snapshot_term, conf_state) = match &replayed.snapshot {
            Some(mark) => (
                mark.index,
                mark.term,
                ConfState::parse_from_bytes(&mark.data)
                    .map_err(|e| StorageError::Decode(e.to_string()))?,
            ),
            None => (0, 0, ConfState::default()),
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
                let e = Entry::parse_from_bytes(&rec.data)
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
        metrics::histogram!("etcd_disk_wal_fsync_duration_seconds")
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

    /// Writes a snapshot mark at `index` (whose applied state the caller has made durable),
    /// forgets in-memory entries before `keep_from`, and releases WAL segments no longer needed.
    pub fn mark_snapshot(
        &mut self,
        index: u64,
        term: u64,
        conf_state: &ConfState,
        keep_from: u64,
    ) -> Result<(), StorageError> {
        let batch = WalBatch {
            entries: Vec::new(),
            hard_state: self.hard_state_dirty.then(|| to_wal_hs(&self.hard_state)),
            snapshot: Some(SnapshotMark {
                index,
                term,
                data: conf_state_bytes(conf_state)?,
            }),
        };
        self.wal.append(&batch)?;
        self.hard_state_dirty = false;
        self.snapshot_index = index;
        self.mem.wl().compact(keep_from.min(index))?;
        self.wal.release_to(index)?;
        Ok(())
    }

    /// Installs a raft snapshot the state machine has already restored: a durable mark at
    /// its index (with its membership), then raft's view of the log starts after it.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
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
                data: conf_state_bytes(meta.get_conf_state())?,
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
