//! The node: the [`RawNode`], the log store and the state machine, stepped by commands,
//! ticks and Ready rounds. [`start`] runs it on a dedicated thread against the wall clock;
//! tests drive it themselves, one step at a time ([`Node::process_commands`],
//! [`Node::tick`], [`Node::advance`]), so that a run is a function of its inputs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;
use raft::eraftpb::{ConfState, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{oneshot, watch};

mod apply;
mod snapshot;

use crate::config::NodeConfig;
use crate::error::{RaftError, StorageError};
use crate::handle::{release_bytes, Backlog, Command, NodeStatus, RaftHandle, Reply, Role};
use crate::id::IdGenerator;
use crate::proposal::{ProposalId, ProposalLedger};
use crate::state_machine::StateMachine;
use crate::storage::LogStore;
use crate::transport::{PeerEvent, Transport};

struct ReadBatch {
    issued_at_tick: u64,
    waiters: Vec<oneshot::Sender<Result<u64, RaftError>>>,
}

/// One member's raft state and the work around it, without threads or clocks of its own.
pub struct Node<S: StateMachine, T: Transport> {
    cfg: NodeConfig,
    raw: RawNode<raft::storage::MemStorage>,
    log: LogStore,
    sm: S,
    transport: T,
    rx: Receiver<Command<S::Output>>,
    backlog: Arc<Backlog>,
    ids: IdGenerator,
    /// Waiters of this member's proposals, by sequence.
    proposals: HashMap<u64, Reply<S::Output>>,
    /// The highest proposal applied per member, at `applied` (see [`crate::proposal`]).
    ledger: ProposalLedger,
    new_reads: Vec<oneshot::Sender<Result<u64, RaftError>>>,
    reads: HashMap<Vec<u8>, ReadBatch>,
    ticks: u64,
    conf_state: ConfState,
    applied: u64,
    leader_id: u64,
    /// Snapshot data received from the leader, by (index, term), until raft installs it.
    staged: HashMap<(u64, u64), PathBuf>,
    /// Campaign once this member is the only voter (no election timeout to wait for).
    campaign_alone: bool,
    /// Fast-forward the election ticks on the first tick (etcd's
    /// `--initial-election-tick-advance`).
    advance_ticks: bool,
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
            has_leader: metrics::gauge!(crate::metrics::HAS_LEADER),
            is_leader: metrics::gauge!(crate::metrics::IS_LEADER),
            committed: metrics::gauge!(crate::metrics::PROPOSALS_COMMITTED_TOTAL),
            applied: metrics::gauge!(crate::metrics::PROPOSALS_APPLIED_TOTAL),
            pending: metrics::gauge!(crate::metrics::PROPOSALS_PENDING),
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
    let (node, handle) = Node::new(cfg, sm, transport)?;
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || node.run())
        .map_err(|e| StorageError::Inconsistent(format!("cannot start the raft thread: {e}")))?;
    *handle.thread.lock() = Some(thread);
    Ok(handle)
}

impl<S: StateMachine, T: Transport> Node<S, T> {
    /// Opens (or bootstraps) the log and builds the raft state; the handle's commands reach
    /// this node through [`Node::process_commands`].
    pub fn new(
        cfg: NodeConfig,
        sm: S,
        transport: T,
    ) -> Result<(Self, RaftHandle<S::Output>), StorageError> {
        let sm_applied = sm.applied_index();
        let (log, recovered) = if LogStore::exists(&cfg.wal_dir) {
            let restored = sm.restored_snapshot().map_err(|e| {
                StorageError::Inconsistent(format!("reading the state machine: {e}"))
            })?;
            let restored = restored
                .as_ref()
                .map(|(meta, ledger)| (meta.raft(), ledger));
            LogStore::open(&cfg.wal_dir, cfg.wal_options, sm_applied, restored)?
        } else {
            LogStore::bootstrap(
                &cfg.wal_dir,
                &cfg.wal_metadata,
                &cfg.initial_members,
                cfg.wal_options,
            )?
        };
        // Raft replays every committed entry after the snapshot mark, so membership changes
        // and proposal ids reach the node again; the state machine skips those it holds.
        let raft_cfg = cfg.raft_config(recovered.snapshot_index);
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
        let (tx, rx) = crossbeam_channel::bounded(cfg.max_queued_commands.max(1));
        let committed = Arc::new(AtomicU64::new(recovered.hard_state.commit));
        let backlog = Arc::new(Backlog {
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes: cfg.max_queued_proposal_bytes,
            max_apply_lag: cfg.max_apply_lag,
        });
        let mut ids = IdGenerator::new(cfg.id);
        ids.advance_past(recovered.ledger.last(cfg.id));
        let mut node = Node {
            ids,
            advance_ticks: cfg.initial_election_tick_advance,
            cfg,
            raw,
            log,
            sm,
            transport,
            rx,
            backlog: backlog.clone(),
            proposals: HashMap::new(),
            ledger: recovered.ledger,
            new_reads: Vec::new(),
            reads: HashMap::new(),
            ticks: 0,
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
        node.maybe_campaign_alone();
        let handle = RaftHandle {
            tx,
            status: status_rx,
            applied: applied_rx,
            committed,
            backlog,
            thread: Arc::new(Mutex::new(None)),
        };
        Ok((node, handle))
    }

    /// Runs the node against the wall clock until it is stopped or fails.
    pub fn run(mut self) {
        let tick = self.cfg.tick_interval;
        // The first Ready is handled at once (a restarted single member elects itself
        // without waiting a tick).
        let mut next_tick = Instant::now();
        let result = loop {
            match self.rx.recv_deadline(next_tick) {
                Ok(cmd) => {
                    if self.handle(cmd) || self.process_commands() {
                        break Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Ok(()),
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick();
                next_tick = now + tick;
            }
            if let Err(e) = self.advance() {
                break Err(e);
            }
        };
        self.stop(result);
    }

    /// Handles the commands already queued by handles and peers (a bounded number, so a
    /// flood cannot starve the Ready loop). Returns true when the node was told to stop.
    pub fn process_commands(&mut self) -> bool {
        // Group commit: everything already queued goes into the next Ready.
        let queued: Vec<_> = self.rx.try_iter().take(4096).collect();
        for cmd in queued {
            if self.handle(cmd) {
                return true;
            }
        }
        false
    }

    /// One logical clock tick: raft's timers, read-index retries, abandoned waiters.
    pub fn tick(&mut self) {
        if self.advance_ticks && !self.conf_state.voters.is_empty() {
            // etcd's --initial-election-tick-advance: a member of a multi-member cluster
            // that (re)starts fast-forwards to the edge of its election timeout instead of
            // waiting a whole one (pre-vote keeps a live leader in place).
            self.advance_ticks = false;
            if self.conf_state.voters.len() > 1 {
                for _ in 1..self.cfg.election_ticks {
                    self.raw.tick();
                }
            }
        }
        self.ticks += 1;
        self.raw.tick();
        self.retry_reads();
        self.proposals.retain(|_, reply| !reply.is_closed());
    }

    /// Handles what the transport reported, issues batched reads and processes every
    /// Ready raft has, then publishes the status.
    pub fn advance(&mut self) -> Result<(), String> {
        // Fault tests hold the raft thread here (`raft::advance=pause`) or slow it down.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("raft::advance");
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
        self.on_ready()?;
        if self.campaign_alone {
            // A membership change just applied may leave this member alone.
            self.maybe_campaign_alone();
            self.on_ready()?;
        }
        self.publish_status(None);
        Ok(())
    }

    /// The state machine (for tests that look inside).
    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    /// The transport (for tests that route its messages).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Fails every waiter and publishes the final status.
    pub fn stop(mut self, result: Result<(), String>) {
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
            Command::Propose {
                data,
                deadline_ms,
                reply,
            } => {
                release_bytes(&self.backlog, data.len());
                let now = unix_ms();
                if deadline_ms.is_some_and(|d| d < now) {
                    let _ = reply.send(Err(RaftError::DeadlineExceeded));
                    return false;
                }
                // Forwarded, the proposal must reach the leader soon or not at all.
                let forward_by = now.saturating_add(self.cfg.max_forward_delay.as_millis() as u64);
                let deadline = deadline_ms.map_or(forward_by, |d| d.min(forward_by));
                let id = self.next_proposal();
                match self.raw.propose(id.to_context(Some(deadline)), data) {
                    Ok(()) => {
                        self.proposals.insert(id.seq, reply);
                    }
                    Err(e) => {
                        metrics::counter!(crate::metrics::PROPOSALS_FAILED_TOTAL).increment(1);
                        let _ = reply.send(Err(self.refused(e)));
                    }
                }
            }
            Command::ProposeConfChange { change, reply } => {
                let id = self.next_proposal();
                match self.raw.propose_conf_change(id.to_context(None), change) {
                    Ok(()) => {
                        self.proposals.insert(id.seq, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(self.refused(e)));
                    }
                }
            }
            Command::ReadIndex { reply } => self.new_reads.push(reply),
            Command::Step(mut msg) => {
                if msg.get_msg_type() == MessageType::MsgPropose && !self.drop_expired(&mut msg) {
                    return false;
                }
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

    /// What a proposer is told when raft refuses its proposal at once: a leader refuses
    /// only when it holds more uncommitted proposals than `max_uncommitted_bytes`
    /// (or hands leadership over); anybody else because there is no leader to forward to.
    fn refused(&self, e: raft::Error) -> RaftError {
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader && raft.lead_transferee.is_none() {
            RaftError::TooManyRequests
        } else {
            RaftError::ProposalDropped(e.to_string())
        }
    }

    /// Drops the proposals of a forwarded `MsgPropose` whose deadline passed (beyond
    /// the clock tolerance): their clients stopped waiting, possibly retried, and must not
    /// see them applied now. Returns whether any proposal is left to step.
    fn drop_expired(&mut self, msg: &mut Message) -> bool {
        let tolerance = self.cfg.proposal_clock_tolerance.as_millis() as u64;
        let dropped = retain_unexpired(msg, unix_ms(), tolerance);
        if dropped > 0 {
            metrics::counter!(crate::metrics::PROPOSALS_EXPIRED_TOTAL).increment(dropped as u64);
            tracing::info!(
                from = %format!("{:x}", msg.from),
                dropped,
                "forwarded proposals arrived after their deadline; not appended"
            );
        }
        !msg.entries.is_empty()
    }

    fn next_proposal(&mut self) -> ProposalId {
        ProposalId {
            proposer: self.cfg.id,
            seq: self.ids.next_id(),
        }
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
                issued_at_tick: self.ticks,
                waiters: std::mem::take(&mut self.new_reads),
            },
        );
    }

    fn retry_reads(&mut self) {
        self.reads
            .retain(|_, b| b.waiters.iter().any(|w| !w.is_closed()));
        let now = self.ticks;
        let every = self.cfg.read_index_retry_ticks.max(1) as u64;
        for (ctx, batch) in self.reads.iter_mut() {
            if now - batch.issued_at_tick >= every {
                batch.issued_at_tick = now;
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
        crash_point!("raft::after_wal_write");
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

    fn on_soft_state(&mut self, leader_id: u64) {
        if leader_id != self.leader_id {
            if leader_id != 0 {
                metrics::counter!(crate::metrics::LEADER_CHANGES_SEEN_TOTAL).increment(1);
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
            active_voters: if role == Role::Leader {
                self.conf_state
                    .voters
                    .iter()
                    .copied()
                    .filter(|&id| {
                        id != self.cfg.id && raft.prs().get(id).is_some_and(|p| p.recent_active)
                    })
                    .collect()
            } else {
                Vec::new()
            },
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

/// Milliseconds since the Unix epoch, by this member's clock.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Removes the entries of `msg` whose deadline is more than `tolerance_ms` before
/// `now_ms`; returns how many.
fn retain_unexpired(msg: &mut Message, now_ms: u64, tolerance_ms: u64) -> usize {
    let before = msg.entries.len();
    msg.mut_entries().retain(|e| {
        ProposalId::deadline_in_context(&e.context)
            .is_none_or(|deadline| deadline.saturating_add(tolerance_ms) >= now_ms)
    });
    before - msg.entries.len()
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::Entry;

    use super::*;

    #[test]
    fn forwarded_proposals_past_their_deadline_are_dropped() {
        let id = |seq| ProposalId { proposer: 2, seq };
        let entry = |context: Vec<u8>| Entry {
            context: context.into(),
            ..Default::default()
        };
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgPropose);
        msg.set_entries(
            vec![
                entry(id(1).to_context(Some(10_000))),
                entry(id(2).to_context(Some(10_900))),
                entry(id(3).to_context(None)),
                entry(Vec::new()),
                entry(id(5).to_context(Some(12_000))),
            ]
            .into(),
        );
        // Now 12,000, tolerance 1,000: a deadline before 11,000 has passed.
        assert_eq!(retain_unexpired(&mut msg, 12_000, 1_000), 2);
        let kept: Vec<Option<ProposalId>> = msg
            .entries
            .iter()
            .map(|e| ProposalId::from_context(&e.context))
            .collect();
        assert_eq!(kept, vec![Some(id(3)), None, Some(id(5))]);
        assert_eq!(retain_unexpired(&mut msg, 12_000, 1_000), 0);
    }
}
