//! What the log holds and what a replay returns: the types of the crate's interface.

/// Tuning of a [`Wal`](crate::Wal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment is started when the next batch would make the current segment
    /// larger than this many bytes. Default: 64 MiB.
    pub segment_bytes: u64,
    /// How far ahead of the last record the active segment's file is allocated
    /// (`fallocate`), so that an `fdatasync` after an append need not also commit a new
    /// file size: on ext4 here 120-130 µs per sync instead of 150-200 µs. Replay reads the
    /// zeros as the end of the log. 0 turns it off. Default: 4 MiB.
    pub preallocate_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 * 1024 * 1024,
            preallocate_bytes: 4 * 1024 * 1024,
        }
    }
}

/// One raft log entry as the WAL stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryRecord {
    /// The entry's raft index (1 is the first).
    pub index: u64,
    /// The term the entry was proposed in.
    pub term: u64,
    /// The encoded raft entry; opaque to the WAL.
    pub data: Vec<u8>,
}

/// Raft's durable vote state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The current term.
    pub term: u64,
    /// Whom this member voted for in `term` (0: nobody).
    pub vote: u64,
    /// The highest index known committed.
    pub commit: u64,
}

/// A mark that the state up to `index` is durably kept elsewhere (a snapshot), so log
/// entries up to and including `index` are no longer needed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMark {
    /// The last log index the snapshot covers.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// Opaque data kept with the mark, e.g. the encoded membership at `index`.
    pub data: Vec<u8>,
}

/// What one [`Wal::append`](crate::Wal::append) makes durable, written in this order: the snapshot mark,
/// the entries, the hard state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalBatch {
    /// Entries in log order. An entry whose index is at or below the last index replaces
    /// the log from that index on (raft's conflict truncation).
    pub entries: Vec<EntryRecord>,
    /// The new hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// A new snapshot mark; its index may not be below the previous mark's.
    pub snapshot: Option<SnapshotMark>,
}

impl WalBatch {
    /// Whether the batch carries nothing to write.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.hard_state.is_none() && self.snapshot.is_none()
    }
}

/// Everything [`Wal::open`](crate::Wal::open) recovered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The metadata given to [`Wal::create`](crate::Wal::create) (e.g. member and cluster ids).
    pub metadata: Vec<u8>,
    /// The latest snapshot mark, if one was ever written.
    pub snapshot: Option<SnapshotMark>,
    /// The latest hard state, if one was ever written.
    pub hard_state: Option<HardState>,
    /// The log after the snapshot mark: contiguous indexes starting at the mark's index +
    /// 1 (at 1 without a mark), with every conflicting rewrite already applied.
    pub entries: Vec<EntryRecord>,
}
