//! The Ready loop: one dedicated thread owns the [`RawNode`], the log store and the state
//! machine; async callers talk to it through a [`RaftHandle`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
    SnapshotMetadata,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage};
use raft_proto::ConfChangeI as _;
use tokio::sync::{oneshot, watch};

use crate::error::{RaftError, StorageError};
use crate::id::IdGenerator;
use crate::storage::{InitialMember, LogStore};
use crate::transport::{PeerEvent, SnapshotData, Transport};

/// How long a read-index request may stay unanswered before it is asked again (raft may
/// drop it silently, e.g. while a new leader has not yet committed in its term).
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);

/// The node's settings. Durations follow etcd's flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member's raft id (etcd's member id). Never 0.
    pub id: u64,
    /// Voters of a new cluster; used only when no log exists yet. Empty for a member that
    /// joins an existing cluster (it learns the membership from the leader).
    pub initial_members: Vec<InitialMember>,
    /// Where the write-ahead log lives.
    pub wal_dir: PathBuf,
    /// Bytes stored with a new log (e.g. member and cluster ids).
    pub wal_metadata: Vec<u8>,
    /// WAL options.
    pub wal_options: cairn_wal::WalOptions,
    /// One raft tick (etcd's `--heartbeat-interval`).
    pub tick_interval: Duration,
    /// Ticks without a leader before an election (`--election-timeout` / heartbeat).
    pub election_ticks: usize,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between two snapshot marks (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept in memory behind a snapshot mark for slow followers.
    pub snapshot_catchup_entries: u64,
    /// Largest append message to a follower.
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Fast-forward election ticks at start (etcd's `--initial-election-tick-advance`).
    pub initial_election_tick_advance: bool,
}

impl NodeConfig {
    /// etcd's defaults for member `id` with its log in `wal_dir`.
    pub fn new(id: u64, wal_dir: PathBuf) -> Self {
        NodeConfig {
            id,
            initial_members: vec![InitialMember {
                id,
                context: Vec::new(),
            }],
            wal_dir,
            wal_metadata: Vec::new(),
            wal_options: cairn_wal::WalOptions::default(),
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5_000,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 4096 / 8,
            initial_election_tick_advance: true,
        }
    }
}

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
}

/// A committed entry handed to the state machine, in log order.
#[derive(Debug)]
pub struct CommittedEntry<'a> {
    /// Raft log index.
    pub index: u64,
    /// Raft term of the entry.
    pub term: u64,
    /// The entry's content.
    pub kind: EntryKind<'a>,
}

/// A failure of the state machine that must stop the node (e.g. a disk error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

/// The application's state machine. Entries arrive in log order, each exactly once over
/// the node's life as long as [`StateMachine::applied_index`] is persisted atomically
/// with the state it describes.
pub trait StateMachine: Send + 'static {
    /// What a proposer gets back when its entry has been applied.
    type Output: Send + 'static;
    /// The last index whose effects are in the state machine (durably, after restart).
    fn applied_index(&self) -> u64;
    /// Applies one committed entry.
    fn apply(&mut self, entry: CommittedEntry<'_>) -> Result<Self::Output, ApplyError>;
    /// Makes everything applied so far durable (before the log before it is released).
    fn persist(&mut self) -> Result<(), ApplyError>;
    /// A point-in-time copy of the applied state, for a follower too far behind. Called
    /// on the raft thread: it must be quick (e.g. a RocksDB checkpoint); the copy is read
    /// elsewhere.
    fn snapshot(&mut self) -> Result<SnapshotData, ApplyError> {
        Err(ApplyError(
            "this state machine cannot be snapshotted".into(),
        ))
    }
    /// Replaces the whole state with the snapshot in `data` (what [`StateMachine::snapshot`]
    /// produced on the leader), crash-atomically, recording `meta` so that
    /// [`StateMachine::restored_snapshot`] returns it after a restart.
    fn restore(&mut self, meta: &SnapshotMetadata, data: &Path) -> Result<(), ApplyError> {
        let _ = data;
        Err(ApplyError(format!(
            "this state machine cannot install the snapshot at index {}",
            meta.index
        )))
    }
    /// The raft snapshot last installed by [`StateMachine::restore`], if any.
    fn restored_snapshot(&self) -> Option<SnapshotMetadata> {
        None
    }
}

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
}

type Reply<O> = oneshot::Sender<Result<O, RaftError>>;

enum Command<O> {
    Propose {
        data: Vec<u8>,
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

/// The async face of a running node. Cheap to clone.
pub struct RaftHandle<O> {
    tx: Sender<Command<O>>,
    status: watch::Receiver<NodeStatus>,
    applied: watch::Receiver<u64>,
    committed: Arc<AtomicU64>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl<O> Clone for RaftHandle<O> {
    fn clone(&self) -> Self {
        RaftHandle {
            tx: self.tx.clone(),
            status: self.status.clone(),
            applied: self.applied.clone(),
            committed: self.committed.clone(),
            thread: self.thread.clone(),
        }
    }
}

impl<O: Send + 'static> RaftHandle<O> {
    /// Proposes `data`; resolves with the state machine's output once the entry is applied
    /// on this member. A proposal lost to a leader change never resolves: callers bound
    /// the wait with their own timeout.
    pub async fn propose(&self, data: Vec<u8>) -> Result<O, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Propose { data, reply })
            .map_err(|_| RaftError::Stopped)?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// Proposes a membership change; resolves once applied on this member. raft refuses
    /// a change while another is still being applied.
    pub async fn propose_conf_change(&self, change: ConfChangeV2) -> Result<O, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::ProposeConfChange { change, reply })
            .map_err(|_| RaftError::Stopped)?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// On the leader: how far each member's log is known to match (member id to index).
    /// Empty on other members.
    pub async fn progress(&self) -> Result<HashMap<u64, u64>, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Progress { reply })
            .map_err(|_| RaftError::Stopped)?;
        rx.await.map_err(|_| RaftError::Stopped)
    }

    /// Hands raft a snapshot message whose state machine data is in the file `data`.
    pub fn step_snapshot(&self, msg: Message, data: PathBuf) -> Result<(), RaftError> {
        self.tx
            .send(Command::StepSnapshot {
                msg: Box::new(msg),
                data,
            })
            .map_err(|_| RaftError::Stopped)
    }

    /// Asks raft for a read index (batched with concurrent callers); a linearizable read
    /// may be served once the applied index reaches it.
    pub async fn read_index(&self) -> Result<u64, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::ReadIndex { reply })
            .map_err(|_| RaftError::Stopped)?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// The highest index this member knows to be committed, published before any message
    /// that could tell another member about it leaves (so it is never behind what a
    /// client learnt elsewhere).
    pub fn committed_index(&self) -> u64 {
        self.committed.load(AtomicOrdering::Acquire)
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

    /// Hands a message from a peer to raft.
    pub fn step(&self, msg: Message) -> Result<(), RaftError> {
        self.tx
            .send(Command::Step(Box::new(msg)))
            .map_err(|_| RaftError::Stopped)
    }

    /// Starts an election now.
    pub fn campaign(&self) -> Result<(), RaftError> {
        self.tx
            .send(Command::Campaign)
            .map_err(|_| RaftError::Stopped)
    }

    /// Asks the leader to hand leadership to `target`.
    pub fn transfer_leader(&self, target: u64) -> Result<(), RaftError> {
        self.tx
            .send(Command::TransferLeader(target))
            .map_err(|_| RaftError::Stopped)
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

struct ReadBatch {
    issued_at: Instant,
    waiters: Vec<oneshot::Sender<Result<u64, RaftError>>>,
}

struct Loop<S: StateMachine, T: Transport> {
    cfg: NodeConfig,
    raw: RawNode<raft::storage::MemStorage>,
    log: LogStore,
    sm: S,
    transport: T,
    ids: IdGenerator,
    proposals: HashMap<u64, Reply<S::Output>>,
    new_reads: Vec<oneshot::Sender<Result<u64, RaftError>>>,
    reads: HashMap<Vec<u8>, ReadBatch>,
    conf_state: ConfState,
    applied: u64,
    leader_id: u64,
    /// Snapshot data received from the leader, by (index, term), until raft installs it.
    staged: HashMap<(u64, u64), PathBuf>,
    /// Campaign once this member is the only voter (no election timeout to wait for).
    campaign_alone: bool,
    status_tx: watch::Sender<NodeStatus>,
    applied_tx: watch::Sender<u64>,
    committed: Arc<AtomicU64>,
    gauges: Gauges,
}

/// The node's gauges, looked up once (the Ready loop sets them on every turn).
struct Gauges {
    has_leader: metrics::Gauge,
    is_leader: metrics::Gauge,
    committed: metrics::Gauge,
    applied: metrics::Gauge,
    pending: metrics::Gauge,
}

impl Gauges {
    fn new() -> Self {
        Gauges {
            has_leader: metrics::gauge!("etcd_server_has_leader"),
            is_leader: metrics::gauge!("etcd_server_is_leader"),
            committed: metrics::gauge!("etcd_server_proposals_committed_total"),
            applied: metrics::gauge!("etcd_server_proposals_applied_total"),
            pending: metrics::gauge!("etcd_server_proposals_pending"),
        }
    }
}

/// Starts a node: opens (or bootstraps) its log, builds the raft state and runs the Ready
/// loop on a dedicated thread.
pub fn start<S, T>(
    cfg: NodeConfig,
    sm: S,
    transport: T,
) -> Result<RaftHandle<S::Output>, StorageError>
where
    S: StateMachine,
    T: Transport,
{
    let sm_applied = sm.applied_index();
    let (log, recovered) = if LogStore::exists(&cfg.wal_dir) {
        let restored = sm.restored_snapshot();
        LogStore::open(&cfg.wal_dir, cfg.wal_options, sm_applied, restored.as_ref())?
    } else {
        LogStore::bootstrap(
            &cfg.wal_dir,
            &cfg.wal_metadata,
            &cfg.initial_members,
            cfg.wal_options,
        )?
    };
    let raft_cfg = raft::Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        // Raft replays every committed entry after the snapshot mark so membership changes
        // reach raft again; the state machine skips those it already holds.
        applied: recovered.snapshot_index,
        max_size_per_msg: cfg.max_size_per_msg,
        max_inflight_msgs: cfg.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        read_only_option: raft::ReadOnlyOption::Safe,
        ..Default::default()
    };
    raft_cfg.validate()?;
    // raft-rs is chatty at info level; its warnings and errors still reach the log, and
    // leader changes are logged by this crate.
    let drain = slog::Drain::fuse(slog::LevelFilter::new(
        tracing_slog::TracingSlogDrain,
        slog::Level::Warning,
    ));
    let logger = slog::Logger::root(drain, slog::o!());
    let raw = RawNode::new(&raft_cfg, log.raft_storage(), &logger)?;
    let initial = NodeStatus {
        id: cfg.id,
        term: recovered.hard_state.term,
        commit_index: recovered.hard_state.commit,
        applied_index: sm_applied,
        ..Default::default()
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let (applied_tx, applied_rx) = watch::channel(sm_applied);
    let (tx, rx) = crossbeam_channel::unbounded();
    let committed = Arc::new(AtomicU64::new(recovered.hard_state.commit));
    let mut lp = Loop {
        ids: IdGenerator::new(cfg.id),
        cfg,
        raw,
        log,
        sm,
        transport,
        proposals: HashMap::new(),
        new_reads: Vec::new(),
        reads: HashMap::new(),
        conf_state: recovered.conf_state,
        applied: sm_applied,
        leader_id: 0,
        staged: HashMap::new(),
        campaign_alone: true,
        status_tx,
        applied_tx,
        committed: committed.clone(),
        gauges: Gauges::new(),
    };
    lp.maybe_campaign_alone();
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || lp.run(rx))
        .map_err(|e| StorageError::Inconsistent(format!("cannot start the raft thread: {e}")))?;
    Ok(RaftHandle {
        tx,
        status: status_rx,
        applied: applied_rx,
        committed,
        thread: Arc::new(Mutex::new(Some(thread))),
    })
}

impl<S: StateMachine, T: Transport> Loop<S, T> {
    fn run(mut self, rx: Receiver<Command<S::Output>>) {
        let tick = self.cfg.tick_interval;
        // The first Ready is handled at once (a restarted single member elects itself
        // without waiting a tick).
        let mut next_tick = Instant::now();
        let mut advance_ticks = self.cfg.initial_election_tick_advance;
        let result = loop {
            match rx.recv_deadline(next_tick) {
                Ok(cmd) => {
                    if self.handle(cmd) {
                        break Ok(());
                    }
                    // Group commit: take everything already queued before the next Ready.
                    let mut stop = false;
                    for cmd in rx.try_iter().take(4096) {
                        if self.handle(cmd) {
                            stop = true;
                            break;
                        }
                    }
                    if stop {
                        break Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Ok(()),
            }
            let now = Instant::now();
            if advance_ticks && !self.conf_state.voters.is_empty() {
                // etcd's --initial-election-tick-advance: a member of a multi-member
                // cluster that (re)starts fast-forwards to the edge of its election timeout
                // instead of waiting a whole one (pre-vote keeps a live leader in place).
                advance_ticks = false;
                if self.conf_state.voters.len() > 1 {
                    for _ in 1..self.cfg.election_ticks {
                        self.raw.tick();
                    }
                }
            }
            if now >= next_tick {
                self.raw.tick();
                self.retry_reads(now);
                self.proposals.retain(|_, reply| !reply.is_closed());
                next_tick = now + tick;
            }
            for event in self.transport.poll_events() {
                match event {
                    PeerEvent::Unreachable(id) => self.raw.report_unreachable(id),
                    PeerEvent::SnapshotSent { to, ok } => {
                        let status = if ok {
                            SnapshotStatus::Finish
                        } else {
                            SnapshotStatus::Failure
                        };
                        self.raw.report_snapshot(to, status);
                    }
                }
            }
            self.maybe_campaign_alone();
            self.issue_reads();
            self.committed
                .fetch_max(self.raw.raft.raft_log.committed, AtomicOrdering::AcqRel);
            if let Err(e) = self.on_ready() {
                break Err(e);
            }
            if self.campaign_alone {
                // A membership change just applied may leave this member alone.
                self.maybe_campaign_alone();
                if let Err(e) = self.on_ready() {
                    break Err(e);
                }
            }
            self.publish_status(None);
        };
        let fatal = match result {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "raft node stopped on a fatal error");
                Some(e)
            }
        };
        let err = match &fatal {
            Some(msg) => RaftError::Fatal(msg.clone()),
            None => RaftError::Stopped,
        };
        for (_, reply) in self.proposals.drain() {
            let _ = reply.send(Err(err.clone()));
        }
        for (_, batch) in self.reads.drain() {
            for w in batch.waiters {
                let _ = w.send(Err(err.clone()));
            }
        }
        for w in self.new_reads.drain(..) {
            let _ = w.send(Err(err.clone()));
        }
        self.publish_status(Some(fatal));
    }

    /// Returns true when the loop must stop.
    fn handle(&mut self, cmd: Command<S::Output>) -> bool {
        match cmd {
            Command::Propose { data, reply } => {
                let id = self.ids.next_id();
                match self.raw.propose(id.to_be_bytes().to_vec(), data) {
                    Ok(()) => {
                        self.proposals.insert(id, reply);
                    }
                    Err(e) => {
                        metrics::counter!("etcd_server_proposals_failed_total").increment(1);
                        let _ = reply.send(Err(RaftError::ProposalDropped(e.to_string())));
                    }
                }
            }
            Command::ProposeConfChange { change, reply } => {
                let id = self.ids.next_id();
                match self
                    .raw
                    .propose_conf_change(id.to_be_bytes().to_vec(), change)
                {
                    Ok(()) => {
                        self.proposals.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RaftError::ProposalDropped(e.to_string())));
                    }
                }
            }
            Command::ReadIndex { reply } => self.new_reads.push(reply),
            Command::Step(msg) => {
                if let Err(e) = self.raw.step(*msg) {
                    tracing::debug!(error = %e, "raft refused a peer message");
                }
            }
            Command::StepSnapshot { msg, data } => {
                let meta = msg.get_snapshot().get_metadata();
                let key = (meta.index, meta.term);
                if let Some(old) = self.staged.insert(key, data) {
                    let _ = std::fs::remove_file(old);
                }
                if let Err(e) = self.raw.step(*msg) {
                    tracing::debug!(error = %e, "raft refused a snapshot message");
                }
                // Anything staged below what is applied can no longer be installed.
                let applied = self.applied;
                self.staged.retain(|(index, _), path| {
                    let keep = *index > applied;
                    if !keep {
                        let _ = std::fs::remove_file(path);
                    }
                    keep
                });
            }
            Command::Progress { reply } => {
                let mut out = HashMap::new();
                if self.raw.raft.state == StateRole::Leader {
                    for (id, pr) in self.raw.raft.prs().iter() {
                        out.insert(*id, pr.matched);
                    }
                }
                let _ = reply.send(out);
            }
            Command::Campaign => {
                if let Err(e) = self.raw.campaign() {
                    tracing::warn!(error = %e, "campaign failed");
                }
            }
            Command::TransferLeader(target) => self.raw.transfer_leader(target),
            Command::Stop => return true,
        }
        false
    }

    fn issue_reads(&mut self) {
        if self.new_reads.is_empty() {
            return;
        }
        let ctx = self.ids.next_id().to_be_bytes().to_vec();
        self.raw.read_index(ctx.clone());
        self.reads.insert(
            ctx,
            ReadBatch {
                issued_at: Instant::now(),
                waiters: std::mem::take(&mut self.new_reads),
            },
        );
    }

    fn retry_reads(&mut self, now: Instant) {
        self.reads
            .retain(|_, b| b.waiters.iter().any(|w| !w.is_closed()));
        for (ctx, batch) in self.reads.iter_mut() {
            if now.duration_since(batch.issued_at) >= READ_INDEX_RETRY {
                batch.issued_at = now;
                self.raw.read_index(ctx.clone());
            }
        }
    }

    fn fail_reads(&mut self, why: &str) {
        for (_, batch) in self.reads.drain() {
            for w in batch.waiters {
                let _ = w.send(Err(RaftError::ProposalDropped(why.to_string())));
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), String> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.on_soft_state(ss.leader_id);
        }
        for rs in ready.take_read_states() {
            if let Some(batch) = self.reads.remove(&rs.request_ctx) {
                for w in batch.waiters {
                    let _ = w.send(Ok(rs.index));
                }
            }
        }
        if !ready.messages().is_empty() {
            let msgs = ready.take_messages();
            self.send(msgs);
        }
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.install_snapshot(&snapshot)?;
        }
        let committed = ready.take_committed_entries();
        self.apply(committed)?;
        let entries = ready.take_entries();
        let hs = ready.hs().cloned();
        self.log
            .persist(&entries, hs.as_ref())
            .map_err(|e| format!("writing the raft log: {e}"))?;
        if !ready.persisted_messages().is_empty() {
            let msgs = ready.take_persisted_messages();
            self.send(msgs);
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.log.note_commit(commit);
            self.committed.fetch_max(commit, AtomicOrdering::AcqRel);
        }
        if !light.messages().is_empty() {
            let msgs = light.take_messages();
            self.send(msgs);
        }
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_snapshot()
    }

    /// A member that is the only voter elects itself at once: nobody else can win.
    fn maybe_campaign_alone(&mut self) {
        if !self.campaign_alone {
            return;
        }
        self.campaign_alone = false;
        let alone = self.conf_state.voters == [self.cfg.id]
            && self.conf_state.learners.is_empty()
            && self.conf_state.voters_outgoing.is_empty();
        if alone && self.raw.raft.state != StateRole::Leader {
            let _ = self.raw.campaign();
        }
    }

    /// Sends messages to peers; a snapshot message gets the state machine's current state
    /// attached (its metadata is rewritten to describe exactly that state).
    fn send(&mut self, msgs: Vec<Message>) {
        let mut plain = Vec::with_capacity(msgs.len());
        for mut msg in msgs {
            if msg.get_msg_type() != MessageType::MsgSnapshot {
                plain.push(msg);
                continue;
            }
            let to = msg.to;
            match self.prepare_snapshot(&mut msg) {
                Ok(data) => {
                    tracing::info!(
                        to = %format!("{to:x}"),
                        index = msg.get_snapshot().get_metadata().index,
                        "sending a snapshot to a member too far behind"
                    );
                    if !self.transport.send_snapshot(msg, data) {
                        self.raw.report_snapshot(to, SnapshotStatus::Failure);
                    }
                }
                Err(e) => {
                    tracing::warn!(to = %format!("{to:x}"), error = %e, "cannot make a snapshot");
                    self.raw.report_snapshot(to, SnapshotStatus::Failure);
                }
            }
        }
        if !plain.is_empty() {
            self.transport.send(plain);
        }
    }

    /// The last applied index and its term.
    fn applied_term(&self) -> Result<(u64, u64), String> {
        let index = self.applied;
        let term = self
            .raw
            .store()
            .term(index)
            .map_err(|e| format!("term of applied index {index}: {e}"))?;
        Ok((index, term))
    }

    fn prepare_snapshot(&mut self, msg: &mut Message) -> Result<SnapshotData, String> {
        let (index, term) = self.applied_term()?;
        let data = self.sm.snapshot().map_err(|e| e.to_string())?;
        let meta = msg.mut_snapshot().mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        Ok(data)
    }

    /// Installs the snapshot raft accepted from the leader: the state machine first (it
    /// records the snapshot's metadata atomically with the state), then the log's mark.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let meta = snapshot.get_metadata();
        let Some(path) = self.staged.remove(&(meta.index, meta.term)) else {
            return Err(format!(
                "raft accepted a snapshot at index {} term {} whose data never arrived",
                meta.index, meta.term
            ));
        };
        let started = Instant::now();
        self.sm
            .restore(meta, &path)
            .map_err(|e| format!("restoring the snapshot at index {}: {e}", meta.index))?;
        self.log
            .install_snapshot(snapshot)
            .map_err(|e| format!("recording the snapshot at index {}: {e}", meta.index))?;
        let _ = std::fs::remove_file(&path);
        self.applied = meta.index;
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

    fn on_soft_state(&mut self, leader_id: u64) {
        if leader_id != self.leader_id {
            if leader_id != 0 {
                metrics::counter!("etcd_server_leader_changes_seen_total").increment(1);
            }
            tracing::info!(
                member = %format!("{:x}", self.cfg.id),
                leader = %format!("{leader_id:x}"),
                term = self.raw.raft.term,
                "raft leader changed"
            );
            let had_leader = self.leader_id != 0;
            self.leader_id = leader_id;
            // Read requests in flight at the old leader may never be answered (those
            // issued while no leader was known are retried instead).
            if had_leader {
                self.fail_reads("leader changed");
            }
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in &entries {
            let kind = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => EntryKind::Empty,
                EntryType::EntryNormal => EntryKind::Normal(&entry.data),
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| format!("undecodable conf change at {}: {e}", entry.index))?;
                    self.apply_conf_change(entry.index, cc.into_v2())?
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| format!("undecodable conf change at {}: {e}", entry.index))?;
                    self.apply_conf_change(entry.index, cc)?
                }
            };
            if entry.index <= self.applied {
                continue; // already in the state machine (replay after restart)
            }
            let out = self
                .sm
                .apply(CommittedEntry {
                    index: entry.index,
                    term: entry.term,
                    kind,
                })
                .map_err(|e| format!("applying entry {}: {e}", entry.index))?;
            self.applied = entry.index;
            if entry.context.len() == 8 {
                let mut id = [0u8; 8];
                id.copy_from_slice(&entry.context);
                if let Some(reply) = self.proposals.remove(&u64::from_be_bytes(id)) {
                    let _ = reply.send(Ok(out));
                }
            }
        }
        let _ = self.applied_tx.send(self.applied);
        self.gauges.applied.set(self.applied as f64);
        Ok(())
    }

    /// Applies a membership change to raft (also when replaying entries the state machine
    /// already holds: raft forgets membership on restart).
    fn apply_conf_change(
        &mut self,
        index: u64,
        change: ConfChangeV2,
    ) -> Result<EntryKind<'static>, String> {
        let state = self
            .raw
            .apply_conf_change(&change)
            .map_err(|e| format!("conf change at {index}: {e}"))?;
        self.conf_state = state.clone();
        self.campaign_alone = true;
        Ok(EntryKind::ConfChange { change, state })
    }

    fn maybe_snapshot(&mut self) -> Result<(), String> {
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
            .mark_snapshot(index, term, &self.conf_state, keep_from)
            .map_err(|e| format!("writing a snapshot mark: {e}"))?;
        tracing::info!(index, term, "snapshot mark written, log released");
        Ok(())
    }

    fn publish_status(&mut self, stopped: Option<Option<String>>) {
        let raft = &self.raw.raft;
        let role = match raft.state {
            StateRole::Leader => Role::Leader,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Follower => Role::Follower,
        };
        let status = NodeStatus {
            id: self.cfg.id,
            leader_id: raft.leader_id,
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied,
            role,
            fatal: stopped.clone().flatten(),
            stopped: stopped.is_some(),
            voters: self.conf_state.voters.clone(),
            learners: self.conf_state.learners.clone(),
        };
        let g = &self.gauges;
        g.has_leader
            .set(if raft.leader_id != 0 { 1.0 } else { 0.0 });
        g.is_leader
            .set(if role == Role::Leader { 1.0 } else { 0.0 });
        g.committed.set(status.commit_index as f64);
        g.pending.set(self.proposals.len() as f64);
        self.status_tx.send_if_modified(|old| {
            if *old != status {
                *old = status;
                true
            } else {
                false
            }
        });
    }
}
