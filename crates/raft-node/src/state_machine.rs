//! The application's side of the node: the state machine committed entries go to.

use std::path::Path;

use protobuf::Message as _;
use raft::eraftpb::{ConfChangeV2, ConfState, SnapshotMetadata};

use crate::proposal::{ProposalId, ProposalLedger};
use crate::transport::SnapshotData;

/// What a committed entry carries, as the state machine sees it.
#[derive(Debug)]
pub enum EntryKind<'a> {
    /// An empty entry (a new leader's first entry): nothing to apply but its index.
    Empty,
    /// A proposal's bytes.
    Normal(&'a [u8]),
    /// A membership change.
    ConfChange {
        /// The change (single changes in their V2 form).
        change: ConfChangeV2,
        /// The membership after it.
        state: ConfState,
    },
    /// A proposal that must not take effect: already applied (its entry reached the log
    /// twice) or overtaken by a later proposal of the same member. Nothing to apply but
    /// its index. See [`crate::proposal`].
    Rejected(ProposalId),
}

/// A committed entry handed to the state machine, in log order.
#[derive(Debug)]
pub struct CommittedEntry<'a> {
    /// Raft log index.
    pub index: u64,
    /// Raft term of the entry.
    pub term: u64,
    /// Who proposed it, for entries proposed through [`crate::RaftHandle`].
    pub proposal: Option<ProposalId>,
    /// The entry's content.
    pub kind: EntryKind<'a>,
}

/// What a raft snapshot stands for: the last log entry it includes and the membership
/// at that entry. The state machine records it with the state a snapshot installs
/// ([`StateMachine::restore`]) and gives it back after a restart
/// ([`StateMachine::restored_snapshot`]); [`SnapshotMeta::encode`] is its stored form.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotMeta(SnapshotMetadata);

/// Stored snapshot metadata that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed snapshot metadata: {0}")]
pub struct MetaDecodeError(String);

impl SnapshotMeta {
    pub(crate) fn from_raft(meta: SnapshotMetadata) -> Self {
        SnapshotMeta(meta)
    }

    pub(crate) fn raft(&self) -> &SnapshotMetadata {
        &self.0
    }

    /// The index of the last entry the snapshot includes.
    pub fn index(&self) -> u64 {
        self.0.index
    }

    /// That entry's term.
    pub fn term(&self) -> u64 {
        self.0.term
    }

    /// The voters at that entry.
    pub fn voters(&self) -> &[u64] {
        &self.0.get_conf_state().voters
    }

    /// The learners at that entry.
    pub fn learners(&self) -> &[u64] {
        &self.0.get_conf_state().learners
    }

    /// The bytes to store (raft's protobuf encoding of the metadata).
    pub fn encode(&self) -> Vec<u8> {
        // Encoding a message held in memory cannot fail.
        self.0.write_to_bytes().unwrap_or_default()
    }

    /// Reads what [`SnapshotMeta::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetaDecodeError> {
        SnapshotMetadata::parse_from_bytes(bytes)
            .map(SnapshotMeta)
            .map_err(|e| MetaDecodeError(e.to_string()))
    }
}

/// A failure of the state machine that must stop the node (e.g. a disk error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

/// The application's state machine.
///
/// # Invariants
///
/// - **Each entry once.** Entries arrive in log order, each exactly once over the node's
///   life, as long as [`StateMachine::applied_index`] is persisted atomically with the
///   state it describes (a restart replays what the state machine does not hold).
/// - **Each proposal once.** An entry whose proposal was already applied, or was
///   overtaken by a later proposal of the same member, arrives as
///   [`EntryKind::Rejected`]: the state machine records its index and changes nothing
///   else. The node decides from a [`ProposalLedger`] that the state machine carries in
///   its snapshots.
pub trait StateMachine: Send + 'static {
    /// What a proposer gets back when its entry has been applied.
    type Output: Send + 'static;
    /// The last index whose effects are in the state machine (durably, after restart).
    fn applied_index(&self) -> u64;
    /// Applies one committed entry.
    fn apply(&mut self, entry: CommittedEntry<'_>) -> Result<Self::Output, ApplyError>;
    /// Makes everything applied so far durable (before the log before it is released).
    fn persist(&mut self) -> Result<(), ApplyError>;
    /// A point-in-time copy of the applied state together with `ledger` (the proposals
    /// applied up to the same index), for a follower too far behind. Called on the raft
    /// thread: it must be quick (e.g. a RocksDB checkpoint); the copy is read elsewhere.
    fn snapshot(&mut self, ledger: &ProposalLedger) -> Result<SnapshotData, ApplyError> {
        let _ = ledger;
        Err(ApplyError(
            "this state machine cannot be snapshotted".into(),
        ))
    }
    /// Replaces the whole state with the snapshot in `data` (what [`StateMachine::snapshot`]
    /// produced on the leader), crash-atomically, recording `meta` so that
    /// [`StateMachine::restored_snapshot`] returns it after a restart. Returns the ledger
    /// the snapshot carries.
    fn restore(&mut self, meta: &SnapshotMeta, data: &Path) -> Result<ProposalLedger, ApplyError> {
        let _ = data;
        Err(ApplyError(format!(
            "this state machine cannot install the snapshot at index {}",
            meta.index()
        )))
    }
    /// The raft snapshot last installed by [`StateMachine::restore`] and the ledger it
    /// carried, if any.
    fn restored_snapshot(&self) -> Result<Option<(SnapshotMeta, ProposalLedger)>, ApplyError> {
        Ok(None)
    }
}
