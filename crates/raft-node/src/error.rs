use thiserror::Error;

/// Why a proposal, a read-index request or the node itself failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RaftError {
    /// raft refused the proposal (no leader known, leadership transfer in progress...).
    #[error("proposal dropped: {0}")]
    ProposalDropped(String),
    /// The raft thread is too far behind (its queue is full, it holds too many uncommitted
    /// proposals, or applying lags committing): etcd's `too many requests`.
    #[error("too many requests")]
    TooManyRequests,
    /// The proposal's deadline passed before raft could take it.
    #[error("the proposal's deadline passed")]
    DeadlineExceeded,
    /// The node has stopped (shut down or failed); nothing more is accepted.
    #[error("raft node stopped")]
    Stopped,
    /// A fatal storage error stopped the node.
    #[error("raft node failed: {0}")]
    Fatal(String),
}

/// Errors while opening or bootstrapping the node's storage.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] cairn_wal::WalError),
    /// raft-rs refused the recovered state.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A record in the WAL does not decode as the raft message it should hold.
    #[error("undecodable raft record in the WAL: {0}")]
    Decode(String),
    /// The recovered state contradicts itself.
    #[error("inconsistent raft state: {0}")]
    Inconsistent(String),
}
