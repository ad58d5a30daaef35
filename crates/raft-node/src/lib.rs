//! Drives a raft-rs [`raft::RawNode`] for cairn: a durable log over [`cairn_wal`], the Ready
//! loop on a dedicated thread, proposals that complete when applied, batched ReadIndex,
//! and committed entries handed to a [`StateMachine`] the application provides. This crate
//! knows nothing about keys: entries are opaque bytes.
//!
//! Each proposal changes the state machine at most once, even if its entry reaches the
//! log twice (see [`proposal`]). The node is driven by commands, ticks and Ready rounds
//! ([`Node`]); [`start`] runs it on its own thread against the wall clock, and tests can
//! step it by hand for runs that repeat exactly.
//!
//! ```no_run
//! use cairn_raft_node::{start, ApplyError, CommittedEntry, EntryKind, NodeConfig, NoPeers, StateMachine};
//!
//! struct Counter { applied: u64, sum: u64 }
//! impl StateMachine for Counter {
//!     type Output = u64;
//!     fn applied_index(&self) -> u64 { self.applied }
//!     // `EntryKind::Rejected` (a proposal applied before) changes nothing but the index.
//!     fn apply(&mut self, e: CommittedEntry<'_>) -> Result<u64, ApplyError> {
//!         if let EntryKind::Normal(data) = e.kind { self.sum += data.len() as u64; }
//!         self.applied = e.index;
//!         Ok(self.sum)
//!     }
//!     fn persist(&mut self) -> Result<(), ApplyError> { Ok(()) }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = NodeConfig::new(1, "/tmp/example-wal".into());
//! let node = start(cfg, Counter { applied: 0, sum: 0 }, NoPeers)?;
//! let sum = node.propose(b"abc".to_vec()).await?;   // resolves once applied
//! assert_eq!(sum, 3);
//! node.linearizable_barrier().await?;                // ReadIndex + wait for apply
//! node.shutdown();
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

#[macro_use]
mod failpoint;

mod config;
mod error;
mod handle;
mod id;
pub mod metrics;
mod node;
mod peer;
pub mod proposal;
mod state_machine;
mod storage;
mod transport;
pub mod wire;

pub use config::NodeConfig;
pub use error::{RaftError, StorageError};
pub use handle::{NodeStatus, RaftHandle, Role};
pub use id::IdGenerator;
pub use node::{start, Node};
pub use peer::{
    connect as dial_peer, connect_lazy as dial_lazy, PeerService, PeerTransport, PeerUrls,
    MAX_PEER_MESSAGE,
};
pub use proposal::{ProposalId, ProposalLedger};
pub use raft::eraftpb;
pub use state_machine::{
    ApplyError, CommittedEntry, EntryKind, MetaDecodeError, SnapshotMeta, StateMachine,
};
pub use storage::{InitialMember, LogStore, Recovered};
pub use transport::{NoPeers, PeerEvent, SnapshotData, Transport};
