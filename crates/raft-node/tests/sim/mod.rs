//! A deterministic simulation of several raft nodes in one thread: no sockets, no threads,
//! no clocks. Each step, every node handles its queued commands and its Ready; the
//! messages it sends go through the network's filters (drop, delay, duplicate, partition)
//! and are delivered a whole number of steps later; every few steps each node ticks.
//! Every random choice comes from one seeded generator and each node has its own fixed
//! election timeout, so a run is a function of its seed: [`Sim::trace`] is the same for
//! the same seed, run after run.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use cairn_raft_node::eraftpb::{ConfChangeV2, ConfState, Message, MessageType};
use cairn_raft_node::proposal::ProposalLedger;
use cairn_raft_node::{
    ApplyError, CommittedEntry, EntryKind, InitialMember, Node, NodeConfig, NodeStatus, PeerEvent,
    ProposalId, RaftError, RaftHandle, Role, SnapshotData, SnapshotMeta, StateMachine, Transport,
};
use parking_lot::Mutex;

// ---------------------------------------------------------------------------------------
// State machine
// ---------------------------------------------------------------------------------------

/// What the recording state machine holds; shared with the test.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SmState {
    /// Last applied index.
    pub applied: u64,
    /// Every applied proposal: (raft index, payload), in apply order. Part of snapshots.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Proposals the node rejected as duplicates or overtaken: (index, id).
    pub rejected: Vec<(u64, ProposalId)>,
    /// Membership after every conf change this member applied itself (not from snapshots).
    pub conf_states: Vec<(u64, ConfState)>,
    /// How many snapshots this member made for a follower.
    pub snapshots_taken: u64,
    /// The ledger the last snapshot carried.
    pub ledger: ProposalLedger,
    /// Indexes of the snapshots installed.
    pub restores: Vec<u64>,
    /// The last snapshot installed.
    pub restored: Option<SnapshotMeta>,
}

impl SmState {
    /// The payloads in apply order.
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.entries.iter().map(|(_, p)| p.clone()).collect()
    }
}

/// A state machine recording what it applies; its state survives a restart of the node
/// (as a RocksDB directory would).
#[derive(Clone, Default)]
pub struct MemSm {
    pub state: Arc<Mutex<SmState>>,
}

fn encode_snapshot(applied: u64, entries: &[(u64, Vec<u8>)], ledger: &ProposalLedger) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&applied.to_be_bytes());
    let ledger = ledger.encode();
    out.extend_from_slice(&(ledger.len() as u64).to_be_bytes());
    out.extend_from_slice(&ledger);
    for (index, payload) in entries {
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        out.extend_from_slice(payload);
    }
    out
}

type Decoded = (u64, Vec<(u64, Vec<u8>)>, ProposalLedger);

fn decode_snapshot(mut bytes: &[u8]) -> Result<Decoded, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err("snapshot data truncated".into());
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    fn word(bytes: &mut &[u8]) -> Result<u64, String> {
        Ok(u64::from_be_bytes(take(bytes, 8)?.try_into().unwrap()))
    }
    let applied = word(&mut bytes)?;
    let len = word(&mut bytes)? as usize;
    let ledger = ProposalLedger::decode(take(&mut bytes, len)?).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let index = word(&mut bytes)?;
        let len = word(&mut bytes)? as usize;
        entries.push((index, take(&mut bytes, len)?.to_vec()));
    }
    Ok((applied, entries, ledger))
}

impl StateMachine for MemSm {
    type Output = u64;

    fn applied_index(&self) -> u64 {
        self.state.lock().applied
    }

    fn apply(&mut self, e: CommittedEntry<'_>) -> Result<u64, ApplyError> {
        let mut st = self.state.lock();
        if e.index <= st.applied {
            return Err(ApplyError(format!(
                "entry {} applied twice (applied {})",
                e.index, st.applied
            )));
        }
        st.applied = e.index;
        match e.kind {
            EntryKind::Normal(data) => st.entries.push((e.index, data.to_vec())),
            EntryKind::Rejected(id) => st.rejected.push((e.index, id)),
            EntryKind::ConfChange { state, .. } => st.conf_states.push((e.index, state)),
            EntryKind::Empty => {}
        }
        Ok(e.index)
    }

    fn persist(&mut self) -> Result<(), ApplyError> {
        Ok(())
    }

    fn snapshot(&mut self, ledger: &ProposalLedger) -> Result<SnapshotData, ApplyError> {
        let mut st = self.state.lock();
        st.snapshots_taken += 1;
        let bytes = encode_snapshot(st.applied, &st.entries, ledger);
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &Path) -> Result<ProposalLedger, ApplyError> {
        let bytes = std::fs::read(data).map_err(|e| ApplyError(e.to_string()))?;
        let (applied, entries, ledger) = decode_snapshot(&bytes).map_err(ApplyError)?;
        if applied != meta.index() {
            return Err(ApplyError(format!(
                "snapshot data at {applied} does not match its metadata at {}",
                meta.index()
            )));
        }
        let mut st = self.state.lock();
        st.applied = applied;
        st.entries = entries;
        st.ledger = ledger.clone();
        st.restores.push(meta.index());
        st.restored = Some(meta.clone());
        Ok(ledger)
    }

    fn restored_snapshot(&self) -> Result<Option<(SnapshotMeta, ProposalLedger)>, ApplyError> {
        let st = self.state.lock();
        Ok(st.restored.clone().map(|m| (m, st.ledger.clone())))
    }
}

// ---------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------

/// xorshift64*: every random choice of a run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A number in `[lo, hi]`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Which messages a filter applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every message.
    All,
    /// Only proposals forwarded to the leader (`MsgPropose`).
    Proposals,
    /// Only proposals forwarded by this member.
    ProposalsFrom(u64),
}

impl Kind {
    fn matches(self, from: u64, msg: &Message) -> bool {
        let proposal = msg.get_msg_type() == MessageType::MsgPropose;
        match self {
            Kind::All => true,
            Kind::Proposals => proposal,
            Kind::ProposalsFrom(id) => proposal && from == id,
        }
    }
}

/// The network's behaviour; change it between steps.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Probability of dropping a message.
    pub drop: f64,
    /// Messages are delivered after a number of steps in this range (reordering them).
    pub delay: (u64, u64),
    /// Probability of delivering a message (of `duplicate_kind`) a second time, after a
    /// delay in `duplicate_delay`.
    pub duplicate: f64,
    pub duplicate_kind: Kind,
    pub duplicate_delay: (u64, u64),
    /// Members that only reach members of their own group (None: everybody talks).
    pub groups: Option<Vec<BTreeSet<u64>>>,
    /// Directed links cut on top of the groups.
    pub cut: HashSet<(u64, u64)>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop: 0.0,
            delay: (1, 1),
            duplicate: 0.0,
            duplicate_kind: Kind::All,
            duplicate_delay: (1, 1),
            groups: None,
            cut: HashSet::new(),
        }
    }
}

impl Faults {
    fn blocked(&self, from: u64, to: u64) -> bool {
        if self.cut.contains(&(from, to)) {
            return true;
        }
        match &self.groups {
            None => false,
            Some(groups) => !groups.iter().any(|g| g.contains(&from) && g.contains(&to)),
        }
    }
}

/// A message on its way.
struct InFlight {
    due: u64,
    seq: u64,
    from: u64,
    msg: Message,
    /// Snapshot data travelling with a `MsgSnapshot`.
    data: Option<Vec<u8>>,
}

/// What a node's transport collected during one step.
#[derive(Default)]
struct Outbox {
    messages: Vec<Message>,
    snapshots: Vec<(Message, Vec<u8>)>,
    events: Vec<PeerEvent>,
}

/// The transport of one simulated node: it only collects; the [`Sim`] routes.
#[derive(Clone, Default)]
pub struct SimTransport {
    outbox: Arc<Mutex<Outbox>>,
}

impl Transport for SimTransport {
    fn send(&mut self, msgs: Vec<Message>) {
        self.outbox.lock().messages.extend(msgs);
    }

    fn send_snapshot(&mut self, msg: Message, mut data: SnapshotData) -> bool {
        let mut bytes = Vec::new();
        if data.read_to_end(&mut bytes).is_err() {
            return false;
        }
        self.outbox.lock().snapshots.push((msg, bytes));
        true
    }

    fn poll_events(&mut self) -> Vec<PeerEvent> {
        std::mem::take(&mut self.outbox.lock().events)
    }
}

/// A proposal in flight, polled by the simulation until it resolves.
pub struct Pending {
    fut: Pin<Box<dyn Future<Output = Result<u64, RaftError>> + Send>>,
    result: Option<Result<u64, RaftError>>,
}

impl Pending {
    fn new(fut: impl Future<Output = Result<u64, RaftError>> + Send + 'static) -> Pending {
        let mut p = Pending {
            fut: Box::pin(fut),
            result: None,
        };
        p.poll(); // sends the command
        p
    }

    fn poll(&mut self) {
        if self.result.is_none() {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(r) = self.fut.as_mut().poll(&mut cx) {
                self.result = Some(r);
            }
        }
    }

    /// The outcome, once there is one.
    pub fn result(&self) -> Option<&Result<u64, RaftError>> {
        self.result.as_ref()
    }
}

pub type SimNode = Node<MemSm, SimTransport>;

struct Member {
    node: Option<SimNode>,
    handle: RaftHandle<u64>,
    sm: MemSm,
    transport: SimTransport,
    cfg: NodeConfig,
}

/// A snapshot that went through the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentSnapshot {
    pub from: u64,
    pub to: u64,
    pub index: u64,
    pub delivered: bool,
}

/// Counters of what the network did.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    pub delivered: u64,
    pub dropped: u64,
    pub snapshots: Vec<SentSnapshot>,
}

/// The simulated cluster.
pub struct Sim {
    dir: tempfile::TempDir,
    members: BTreeMap<u64, Member>,
    pending: Vec<(u64, Pending)>,
    in_flight: Vec<InFlight>,
    pub faults: Faults,
    rng: Rng,
    step: u64,
    seq: u64,
    /// One tick every this many steps.
    pub steps_per_tick: u64,
    trace: Vec<String>,
    stats: NetStats,
}

/// Settings of a simulated member: ticks are steps, each member its own fixed election
/// timeout so that no two members time out together.
fn config(dir: &Path, id: u64, initial: Vec<InitialMember>) -> NodeConfig {
    let mut cfg = NodeConfig::new(id, dir.join(format!("member-{id}")));
    cfg.initial_members = initial;
    cfg.heartbeat_ticks = 2;
    cfg.election_ticks = 10 + 3 * id as usize;
    cfg.fixed_election_timeout = true;
    cfg.read_index_retry_ticks = 5;
    // Deadlines are wall-clock time, which the simulation does not follow: none expires.
    cfg.max_forward_delay = std::time::Duration::from_secs(86_400);
    cfg
}

impl Sim {
    /// A cluster of voters `1..=n`; `tweak` adjusts each member's settings.
    pub fn new(n: u64, seed: u64, tweak: impl Fn(&mut NodeConfig)) -> Sim {
        let dir = if Path::new("/dev/shm").is_dir() {
            tempfile::Builder::new()
                .prefix("cairn-raft-sim")
                .tempdir_in("/dev/shm")
                .unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let mut sim = Sim {
            dir,
            members: BTreeMap::new(),
            pending: Vec::new(),
            in_flight: Vec::new(),
            faults: Faults::default(),
            rng: Rng::new(seed),
            step: 0,
            seq: 0,
            steps_per_tick: 1,
            trace: Vec::new(),
            stats: NetStats::default(),
        };
        let initial: Vec<InitialMember> = (1..=n)
            .map(|id| InitialMember {
                id,
                context: format!("member-{id}").into_bytes(),
            })
            .collect();
        for id in 1..=n {
            let mut cfg = config(sim.dir.path(), id, initial.clone());
            tweak(&mut cfg);
            sim.start(cfg, MemSm::default());
        }
        sim
    }

    fn start(&mut self, cfg: NodeConfig, sm: MemSm) {
        let transport = SimTransport::default();
        let (node, handle) = Node::new(cfg.clone(), sm.clone(), transport.clone()).unwrap();
        self.members.insert(
            cfg.id,
            Member {
                node: Some(node),
                handle,
                sm,
                transport,
                cfg,
            },
        );
    }

    /// Starts member `id` with an empty log: it joins once the cluster adds it.
    pub fn start_joining(&mut self, id: u64) {
        assert!(!self.members.contains_key(&id), "member {id} exists");
        let cfg = config(self.dir.path(), id, Vec::new());
        self.start(cfg, MemSm::default());
    }

    /// Whether member `id` runs.
    pub fn is_running(&self, id: u64) -> bool {
        self.members.get(&id).is_some_and(|m| m.node.is_some())
    }

    /// The ids of the running members.
    pub fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.node.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Stops member `id` (its WAL and state machine stay) and takes it off the network.
    pub fn crash(&mut self, id: u64) {
        let m = self.members.get_mut(&id).expect("no such member");
        if let Some(node) = m.node.take() {
            node.stop(Ok(()));
        }
    }

    /// Starts a crashed member again from its WAL and state machine.
    pub fn restart(&mut self, id: u64) {
        let m = self.members.remove(&id).expect("no such member");
        assert!(m.node.is_none(), "member {id} is running");
        self.start(m.cfg, m.sm);
    }

    /// Proposes `payload` on member `id`; the simulation polls it from then on.
    pub fn propose(&mut self, id: u64, payload: impl Into<Vec<u8>>) -> usize {
        let handle = self.members[&id].handle.clone();
        let payload = payload.into();
        self.pending.push((
            id,
            Pending::new(async move { handle.propose(payload).await }),
        ));
        self.pending.len() - 1
    }

    /// Asks member `id` for a read index.
    pub fn read_index(&mut self, id: u64) -> usize {
        let handle = self.members[&id].handle.clone();
        self.pending
            .push((id, Pending::new(async move { handle.read_index().await })));
        self.pending.len() - 1
    }

    /// A linearizable barrier on member `id` (read index, then applied up to it).
    pub fn barrier(&mut self, id: u64) -> usize {
        let handle = self.members[&id].handle.clone();
        self.pending.push((
            id,
            Pending::new(async move { handle.linearizable_barrier().await }),
        ));
        self.pending.len() - 1
    }

    /// Runs until request `n` is answered (at most `max` steps) and returns the answer.
    pub fn wait(&mut self, n: usize, max: u64) -> Result<u64, RaftError> {
        self.run_until("an answer", max, |s| s.outcome(n).is_some());
        self.outcome(n).cloned().unwrap()
    }

    /// Proposes `payload` on member `id` and runs until it is applied there; its index.
    pub fn propose_and_wait(&mut self, id: u64, payload: impl Into<Vec<u8>>) -> u64 {
        let n = self.propose(id, payload);
        self.wait(n, 5_000)
            .unwrap_or_else(|e| panic!("proposal on {id}: {e}"))
    }

    /// Runs until every member of `ids` applied `index`.
    pub fn wait_applied(&mut self, ids: &[u64], index: u64, max: u64) {
        let ids = ids.to_vec();
        self.run_until(&format!("{ids:?} to apply {index}"), max, |s| {
            ids.iter().all(|id| s.status(*id).applied_index >= index)
        });
    }

    /// Every member in `ids` holds exactly the same applied proposals (index and
    /// payload); returns them.
    pub fn assert_same_entries(&self, ids: &[u64]) -> Vec<(u64, Vec<u8>)> {
        let reference = self.sm(ids[0]).entries;
        for id in &ids[1..] {
            assert_eq!(
                self.sm(*id).entries,
                reference,
                "member {id} applied another sequence than member {}",
                ids[0]
            );
        }
        reference
    }

    /// What the network did so far.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Proposes a membership change on member `id`.
    pub fn propose_conf_change(&mut self, id: u64, change: ConfChangeV2) -> usize {
        let handle = self.members[&id].handle.clone();
        self.pending.push((
            id,
            Pending::new(async move { handle.propose_conf_change(change).await }),
        ));
        self.pending.len() - 1
    }

    /// The outcome of proposal `n` (its number from [`Sim::propose`]).
    pub fn outcome(&self, n: usize) -> Option<&Result<u64, RaftError>> {
        self.pending[n].1.result()
    }

    /// One step: commands, Readies, routing, delivery, and a tick every `steps_per_tick`.
    pub fn step(&mut self) {
        let tick = self.step.is_multiple_of(self.steps_per_tick.max(1));
        for (id, m) in self.members.iter_mut() {
            let Some(node) = m.node.as_mut() else {
                continue;
            };
            if node.process_commands() {
                panic!("member {id} was told to stop");
            }
            if tick {
                node.tick();
            }
            if let Err(e) = node.advance() {
                panic!("member {id} failed: {e}");
            }
        }
        for (_, p) in self.pending.iter_mut() {
            p.poll();
        }
        self.route();
        self.deliver();
        self.step += 1;
    }

    /// Steps until `done` holds, at most `max` steps; panics with `what` otherwise.
    pub fn run_until(&mut self, what: &str, max: u64, mut done: impl FnMut(&Sim) -> bool) {
        for _ in 0..max {
            if done(self) {
                return;
            }
            self.step();
        }
        assert!(done(self), "not reached after {max} steps: {what}");
    }

    /// Steps `n` times.
    pub fn run(&mut self, n: u64) {
        for _ in 0..n {
            self.step();
        }
    }

    fn route(&mut self) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for from in ids {
            let outbox = std::mem::take(&mut *self.members[&from].transport.outbox.lock());
            let mut events = Vec::new();
            for msg in outbox.messages {
                self.enqueue(from, msg, None, &mut events);
            }
            for (msg, data) in outbox.snapshots {
                let to = msg.to;
                let index = msg.get_snapshot().get_metadata().index;
                let lost = self.enqueue(from, msg, Some(data), &mut events);
                self.stats.snapshots.push(SentSnapshot {
                    from,
                    to,
                    index,
                    delivered: !lost,
                });
                events.push(PeerEvent::SnapshotSent { to, ok: !lost });
            }
            self.members[&from]
                .transport
                .outbox
                .lock()
                .events
                .extend(events);
        }
    }

    /// Queues `msg` through the filters; returns true when it was lost.
    fn enqueue(
        &mut self,
        from: u64,
        msg: Message,
        data: Option<Vec<u8>>,
        events: &mut Vec<PeerEvent>,
    ) -> bool {
        let to = msg.to;
        if self.faults.blocked(from, to) || self.rng.chance(self.faults.drop) {
            self.stats.dropped += 1;
            let ev = PeerEvent::Unreachable(to);
            if !events.contains(&ev) {
                events.push(ev);
            }
            return true;
        }
        let (lo, hi) = self.faults.delay;
        let due = self.step + self.rng.between(lo, hi);
        if self.faults.duplicate_kind.matches(from, &msg) && self.rng.chance(self.faults.duplicate)
        {
            let (lo, hi) = self.faults.duplicate_delay;
            let again = self.step + self.rng.between(lo, hi);
            self.push(again, from, msg.clone(), data.clone());
        }
        self.push(due, from, msg, data);
        false
    }

    fn push(&mut self, due: u64, from: u64, msg: Message, data: Option<Vec<u8>>) {
        self.seq += 1;
        self.in_flight.push(InFlight {
            due,
            seq: self.seq,
            from,
            msg,
            data,
        });
    }

    fn deliver(&mut self) {
        let now = self.step;
        let (mut due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|m| m.due <= now);
        self.in_flight = later;
        due.sort_by_key(|m| (m.due, m.seq));
        for m in due {
            let to = m.msg.to;
            let running = self.members.get(&to).is_some_and(|t| t.node.is_some());
            // A partition that started while the message travelled still cuts it.
            if !running || self.faults.blocked(m.from, to) {
                self.stats.dropped += 1;
                continue;
            }
            self.stats.delivered += 1;
            let msg = &m.msg;
            self.trace.push(format!(
                "{now} {}->{} {:?} term={} index={} log_term={} commit={} entries={} reject={}",
                m.from,
                to,
                msg.get_msg_type(),
                msg.term,
                msg.index,
                msg.log_term,
                msg.commit,
                msg.entries.len(),
                msg.reject
            ));
            let handle = &self.members[&to].handle;
            match m.data {
                None => {
                    let _ = handle.step(m.msg);
                }
                Some(data) => {
                    let index = m.msg.get_snapshot().get_metadata().index;
                    let path: PathBuf = self
                        .dir
                        .path()
                        .join(format!("snap-{}-{to}-{index}-{}", m.from, m.seq));
                    std::fs::write(&path, data).unwrap();
                    let _ = handle.step_snapshot(m.msg, path);
                }
            }
        }
    }

    /// Every message delivered so far, one line each.
    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    pub fn ids(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    pub fn status(&self, id: u64) -> NodeStatus {
        self.members[&id].handle.status()
    }

    pub fn sm(&self, id: u64) -> SmState {
        self.members[&id].sm.state.lock().clone()
    }

    pub fn handle(&self, id: u64) -> &RaftHandle<u64> {
        &self.members[&id].handle
    }

    /// The member every running member agrees leads, if they all agree.
    pub fn agreed_leader(&self) -> Option<u64> {
        let running: Vec<NodeStatus> = self
            .members
            .iter()
            .filter(|(_, m)| m.node.is_some())
            .map(|(id, _)| self.status(*id))
            .collect();
        let leaders: Vec<&NodeStatus> = running.iter().filter(|s| s.role == Role::Leader).collect();
        let [leader] = leaders.as_slice() else {
            return None;
        };
        running
            .iter()
            .all(|s| s.leader_id == leader.id && s.term == leader.term)
            .then_some(leader.id)
    }

    /// Steps until one leader is agreed on; returns it.
    pub fn elect(&mut self, max: u64) -> u64 {
        self.run_until("an agreed leader", max, |s| s.agreed_leader().is_some());
        self.agreed_leader().unwrap()
    }

    /// Partitions the members into groups that only talk among themselves.
    pub fn partition(&mut self, groups: &[&[u64]]) {
        self.faults.groups = Some(groups.iter().map(|g| g.iter().copied().collect()).collect());
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.faults.groups = None;
        self.faults.cut.clear();
    }
}
