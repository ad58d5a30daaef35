//! The async face of a node: commands to its Ready loop and the status it publishes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;
use raft::eraftpb::{ConfChangeV2, Message};
use tokio::sync::{oneshot, watch};

use crate::error::RaftError;

/// The role of this member in its raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Follows a leader (or waits for one).
    #[default]
    Follower,
    /// Asking for votes.
    Candidate,
    /// Pre-vote phase.
    PreCandidate,
    /// The leader.
    Leader,
}

/// A snapshot of the node's state, published after every Ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// This member's id.
    pub id: u64,
    /// The known leader (0 = none).
    pub leader_id: u64,
    /// Current term.
    pub term: u64,
    /// Highest committed index.
    pub commit_index: u64,
    /// Highest applied index.
    pub applied_index: u64,
    /// This member's role.
    pub role: Role,
    /// Set when the node stopped because of an error.
    pub fatal: Option<String>,
    /// Whether the node has stopped.
    pub stopped: bool,
    /// Voting members.
    pub voters: Vec<u64>,
    /// Learners (non-voting members).
    pub learners: Vec<u64>,
    /// On the leader, the other voters it heard from since its last quorum check (within
    /// about an election timeout); empty on other members.
    pub active_voters: Vec<u64>,
}

pub(crate) type Reply<O> = oneshot::Sender<Result<O, RaftError>>;

pub(crate) enum Command<O> {
    Propose {
        data: Vec<u8>,
        /// Milliseconds since the Unix epoch after which the proposal must not be taken.
        deadline_ms: Option<u64>,
        reply: Reply<O>,
    },
    ProposeConfChange {
        change: ConfChangeV2,
        reply: Reply<O>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<u64, RaftError>>,
    },
    Step(Box<Message>),
    StepSnapshot {
        msg: Box<Message>,
        data: PathBuf,
    },
    Progress {
        reply: oneshot::Sender<HashMap<u64, u64>>,
    },
    Campaign,
    TransferLeader(u64),
    Stop,
}

/// Limits on what may wait for the raft thread, shared by every handle.
#[derive(Debug)]
pub(crate) struct Backlog {
    /// Bytes of proposals sent to the loop and not yet taken by it.
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) max_queued_bytes: usize,
    /// Committed entries not yet applied beyond which proposals are refused.
    pub(crate) max_apply_lag: u64,
}

/// The async face of a running node. Cheap to clone.
pub struct RaftHandle<O> {
    pub(crate) tx: Sender<Command<O>>,
    pub(crate) status: watch::Receiver<NodeStatus>,
    pub(crate) applied: watch::Receiver<u64>,
    pub(crate) committed: Arc<AtomicU64>,
    pub(crate) backlog: Arc<Backlog>,
    pub(crate) thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl<O> Clone for RaftHandle<O> {
    fn clone(&self) -> Self {
        RaftHandle {
            tx: self.tx.clone(),
            status: self.status.clone(),
            applied: self.applied.clone(),
            committed: self.committed.clone(),
            backlog: self.backlog.clone(),
            thread: self.thread.clone(),
        }
    }
}

/// Releases a proposal's bytes from the backlog when the loop takes it (or when it is
/// never sent).
pub(crate) fn release_bytes(backlog: &Backlog, n: usize) {
    backlog.queued_bytes.fetch_sub(n, Ordering::AcqRel);
}

impl<O: Send + 'static> RaftHandle<O> {
    /// Sends a command the caller waits for: refused with `TooManyRequests` when the loop
    /// is this far behind.
    fn offer(&self, cmd: Command<O>) -> Result<(), RaftError> {
        match self.tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(RaftError::TooManyRequests),
            Err(TrySendError::Disconnected(_)) => Err(RaftError::Stopped),
        }
    }

    /// Whether applying lags committing by more than the configured gap (etcd refuses
    /// proposals then: they would only queue behind the backlog).
    fn apply_lags(&self) -> bool {
        let applied = *self.applied.borrow();
        self.committed_index().saturating_sub(applied) > self.backlog.max_apply_lag
    }

    /// Proposes `data`; resolves with the state machine's output once the entry is applied
    /// on this member. A proposal lost to a leader change never resolves: callers bound
    /// the wait with their own timeout. Refused at once with
    /// [`RaftError::TooManyRequests`] when the raft thread is too far behind.
    pub async fn propose(&self, data: Vec<u8>) -> Result<O, RaftError> {
        self.propose_with(data, None).await
    }

    /// Like [`RaftHandle::propose`], for a proposal nobody waits for after `deadline`:
    /// raft does not take it after that (on this member or, forwarded, on the leader).
    pub async fn propose_until(&self, data: Vec<u8>, deadline: SystemTime) -> Result<O, RaftError> {
        let ms = deadline
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.propose_with(data, Some(ms)).await
    }

    async fn propose_with(&self, data: Vec<u8>, deadline_ms: Option<u64>) -> Result<O, RaftError> {
        if self.apply_lags() {
            return Err(RaftError::TooManyRequests);
        }
        let n = data.len();
        let queued = self.backlog.queued_bytes.fetch_add(n, Ordering::AcqRel) + n;
        if queued > self.backlog.max_queued_bytes && queued != n {
            release_bytes(&self.backlog, n);
            return Err(RaftError::TooManyRequests);
        }
        let (reply, rx) = oneshot::channel();
        if let Err(e) = self.offer(Command::Propose {
            data,
            deadline_ms,
            reply,
        }) {
            release_bytes(&self.backlog, n);
            return Err(e);
        }
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// Proposes a membership change; resolves once applied on this member. raft refuses
    /// a change while another is still being applied.
    pub async fn propose_conf_change(&self, change: ConfChangeV2) -> Result<O, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.offer(Command::ProposeConfChange { change, reply })?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// On the leader: how far each member's log is known to match (member id to index).
    /// Empty on other members.
    pub async fn progress(&self) -> Result<HashMap<u64, u64>, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.offer(Command::Progress { reply })?;
        rx.await.map_err(|_| RaftError::Stopped)
    }

    /// Hands raft a snapshot message whose state machine data is in the file `data`.
    pub fn step_snapshot(&self, msg: Message, data: PathBuf) -> Result<(), RaftError> {
        self.offer(Command::StepSnapshot {
            msg: Box::new(msg),
            data,
        })
    }

    /// Asks raft for a read index (batched with concurrent callers); a linearizable read
    /// may be served once the applied index reaches it.
    pub async fn read_index(&self) -> Result<u64, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.offer(Command::ReadIndex { reply })?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// The highest index this member knows to be committed, published before any message
    /// that could tell another member about it leaves (so it is never behind what a
    /// client learnt elsewhere).
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The highest index applied on this member.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until this member has applied `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), RaftError> {
        let mut rx = self.applied.clone();
        rx.wait_for(|applied| *applied >= index)
            .await
            .map(|_| ())
            .map_err(|_| RaftError::Stopped)
    }

    /// A linearizable barrier: returns once every write committed before the call is applied here.
    pub async fn linearizable_barrier(&self) -> Result<u64, RaftError> {
        let index = self.read_index().await?;
        self.wait_applied(index).await?;
        Ok(index)
    }

    /// Hands a message from a peer to raft. A message that finds the queue full is dropped
    /// (raft retransmits) and reported as [`RaftError::TooManyRequests`].
    pub fn step(&self, msg: Message) -> Result<(), RaftError> {
        self.offer(Command::Step(Box::new(msg)))
    }

    /// Starts an election now.
    pub fn campaign(&self) -> Result<(), RaftError> {
        self.offer(Command::Campaign)
    }

    /// Asks the leader to hand leadership to `target`.
    pub fn transfer_leader(&self, target: u64) -> Result<(), RaftError> {
        self.offer(Command::TransferLeader(target))
    }

    /// The latest published status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// Stops the loop and waits for its thread (blocking: call from a blocking context).
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}
