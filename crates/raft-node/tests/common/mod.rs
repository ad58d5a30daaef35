//! An in-memory network for several raft nodes in one process, with a recording state
//! machine and a cluster harness. No sockets: a node's [`Transport`] hands each message
//! straight to the destination's [`RaftHandle::step`] (or, when a delay is set, to a
//! delivery thread), through filters the test changes at runtime: drop (by probability),
//! delay (a random duration in a range) and partition (groups of members that only talk
//! among themselves, or single directed links cut).

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use cairn_raft_node::eraftpb::{ConfState, Message, SnapshotMetadata};
use cairn_raft_node::{
    start, ApplyError, CommittedEntry, EntryKind, InitialMember, NodeConfig, NodeStatus, PeerEvent,
    ProposalLedger, RaftHandle, Role, SnapshotData, StateMachine, Transport,
};
use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

/// The output of a proposal: the raft index it was applied at.
pub type Handle = RaftHandle<u64>;

// ---------------------------------------------------------------------------------------
// State machine
// ---------------------------------------------------------------------------------------

/// Applied proposals: (raft index, payload).
pub type Entries = Vec<(u64, Vec<u8>)>;

/// What the recording state machine holds; shared with the test.
#[derive(Debug, Default, Clone)]
pub struct SmState {
    /// Last applied index.
    pub applied: u64,
    /// Every applied proposal: (raft index, payload), in apply order. Part of snapshots.
    pub entries: Entries,
    /// Membership after every conf change this member applied itself (not from snapshots).
    pub conf_states: Vec<(u64, ConfState)>,
    /// Indexes of the snapshots installed by `restore`.
    pub restores: Vec<u64>,
    /// The last snapshot installed.
    pub restored: Option<SnapshotMetadata>,
    /// The proposal ledger the last installed snapshot carried.
    pub ledger: ProposalLedger,
    /// How many times `snapshot()` was called (this member sent a snapshot).
    pub snapshots_taken: u64,
}

impl SmState {
    /// The payloads in apply order.
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.entries.iter().map(|(_, p)| p.clone()).collect()
    }

    fn encode(&self, ledger: &ProposalLedger) -> Vec<u8> {
        let mut out = Vec::new();
        let ledger = ledger.encode();
        out.extend_from_slice(&(ledger.len() as u64).to_le_bytes());
        out.extend_from_slice(&ledger);
        out.extend_from_slice(&self.applied.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (index, payload) in &self.entries {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Result<(u64, Entries, ProposalLedger), String> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
            if bytes.len() < n {
                return Err("snapshot data truncated".into());
            }
            let (head, tail) = bytes.split_at(n);
            *bytes = tail;
            Ok(head)
        }
        fn u64_of(bytes: &mut &[u8]) -> Result<u64, String> {
            Ok(u64::from_le_bytes(take(bytes, 8)?.try_into().unwrap()))
        }
        let ledger_len = u64_of(&mut bytes)? as usize;
        let ledger =
            ProposalLedger::decode(take(&mut bytes, ledger_len)?).map_err(|e| e.to_string())?;
        let applied = u64_of(&mut bytes)?;
        let count = u64_of(&mut bytes)?;
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let index = u64_of(&mut bytes)?;
            let len = u64_of(&mut bytes)? as usize;
            entries.push((index, take(&mut bytes, len)?.to_vec()));
        }
        if !bytes.is_empty() {
            return Err(format!("{} trailing bytes in snapshot data", bytes.len()));
        }
        Ok((applied, entries, ledger))
    }
}

/// A state machine that records what it applies; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct MemSm {
    pub state: Arc<Mutex<SmState>>,
}

impl MemSm {
    pub fn snapshot_of_state(&self) -> SmState {
        self.state.lock().clone()
    }
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
            EntryKind::ConfChange { state, .. } => st.conf_states.push((e.index, state)),
            EntryKind::Empty | EntryKind::Rejected(_) => {}
        }
        Ok(e.index)
    }

    fn persist(&mut self) -> Result<(), ApplyError> {
        Ok(())
    }

    fn snapshot(&mut self, ledger: &ProposalLedger) -> Result<SnapshotData, ApplyError> {
        let mut st = self.state.lock();
        st.snapshots_taken += 1;
        Ok(Box::new(std::io::Cursor::new(st.encode(ledger))))
    }

    fn restore(
        &mut self,
        meta: &SnapshotMetadata,
        data: &Path,
    ) -> Result<ProposalLedger, ApplyError> {
        let bytes = std::fs::read(data).map_err(|e| ApplyError(e.to_string()))?;
        let (applied, entries, ledger) = SmState::decode(&bytes).map_err(ApplyError)?;
        if applied != meta.index {
            return Err(ApplyError(format!(
                "snapshot data at {applied} does not match its metadata at {}",
                meta.index
            )));
        }
        let mut st = self.state.lock();
        st.applied = applied;
        st.entries = entries;
        st.restores.push(meta.index);
        st.restored = Some(meta.clone());
        st.ledger = ledger.clone();
        Ok(ledger)
    }

    fn restored_snapshot(&self) -> Result<Option<(SnapshotMetadata, ProposalLedger)>, ApplyError> {
        let st = self.state.lock();
        Ok(st.restored.clone().map(|meta| (meta, st.ledger.clone())))
    }
}

// ---------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------

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

struct NetState {
    nodes: HashMap<u64, Handle>,
    events: HashMap<u64, Vec<PeerEvent>>,
    drop_prob: f64,
    delay: (Duration, Duration),
    /// Members that only reach members of their own group (None: everybody talks).
    groups: Option<Vec<HashSet<u64>>>,
    /// Directed links cut on top of the groups.
    cut: HashSet<(u64, u64)>,
    rng: u64,
    seq: u64,
    stats: NetStats,
}

impl NetState {
    fn blocked(&self, from: u64, to: u64) -> bool {
        if self.cut.contains(&(from, to)) {
            return true;
        }
        match &self.groups {
            None => false,
            Some(groups) => !groups.iter().any(|g| g.contains(&from) && g.contains(&to)),
        }
    }

    /// xorshift64*: a uniform f64 in [0, 1).
    fn random(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn unreachable(&mut self, from: u64, to: u64) {
        let ev = PeerEvent::Unreachable(to);
        let q = self.events.entry(from).or_default();
        if !q.contains(&ev) {
            q.push(ev);
        }
    }

    fn deliver(&mut self, from: u64, msg: Message) {
        let to = msg.to;
        if self.blocked(from, to) {
            self.stats.dropped += 1;
            self.unreachable(from, to);
            return;
        }
        match self.nodes.get(&to) {
            Some(h) if h.step(msg).is_ok() => self.stats.delivered += 1,
            _ => {
                self.stats.dropped += 1;
                self.unreachable(from, to);
            }
        }
    }
}

struct Delayed {
    due: Instant,
    seq: u64,
    from: u64,
    msg: Message,
}

struct Inner {
    state: Mutex<NetState>,
    snap_dir: PathBuf,
    delayed: Sender<Delayed>,
}

/// The in-memory network; cheap to clone.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

impl Network {
    /// A network whose snapshot files go to `snap_dir`.
    pub fn new(snap_dir: PathBuf) -> Network {
        std::fs::create_dir_all(&snap_dir).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded::<Delayed>();
        let inner = Arc::new(Inner {
            state: Mutex::new(NetState {
                nodes: HashMap::new(),
                events: HashMap::new(),
                drop_prob: 0.0,
                delay: (Duration::ZERO, Duration::ZERO),
                groups: None,
                cut: HashSet::new(),
                rng: 0x9e37_79b9_7f4a_7c15,
                seq: 0,
                stats: NetStats::default(),
            }),
            snap_dir,
            delayed: tx,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("net-delay".into())
            .spawn(move || delay_loop(rx, weak))
            .unwrap();
        Network { inner }
    }

    /// The transport of member `id`.
    pub fn transport(&self, id: u64) -> MemTransport {
        MemTransport {
            id,
            net: self.clone(),
        }
    }

    /// Makes member `id` reachable through `handle`.
    pub fn register(&self, id: u64, handle: Handle) {
        self.inner.state.lock().nodes.insert(id, handle);
    }

    /// Forgets member `id` (messages to it are lost).
    pub fn unregister(&self, id: u64) {
        self.inner.state.lock().nodes.remove(&id);
    }

    /// Drops each message (and snapshot) with probability `p` (1.0: drop everything).
    pub fn set_drop_probability(&self, p: f64) {
        self.inner.state.lock().drop_prob = p;
    }

    /// Delays each message by a random duration in `[min, max]` (reordering them).
    pub fn set_delay(&self, min: Duration, max: Duration) {
        assert!(min <= max);
        self.inner.state.lock().delay = (min, max);
    }

    /// Members talk only within their group; a member in no group talks to nobody.
    pub fn partition(&self, groups: &[&[u64]]) {
        let groups = groups
            .iter()
            .map(|g| g.iter().copied().collect::<HashSet<_>>())
            .collect();
        self.inner.state.lock().groups = Some(groups);
    }

    /// Cuts `id` off from every other member (now and later).
    pub fn isolate(&self, id: u64) {
        let mut st = self.inner.state.lock();
        let rest: HashSet<u64> = st.nodes.keys().copied().filter(|n| *n != id).collect();
        st.groups = Some(vec![HashSet::from([id]), rest]);
    }

    /// Cuts the directed link `from -> to`.
    pub fn cut(&self, from: u64, to: u64) {
        self.inner.state.lock().cut.insert((from, to));
    }

    /// Removes every partition and cut link, drop and delay.
    pub fn heal(&self) {
        let mut st = self.inner.state.lock();
        st.groups = None;
        st.cut.clear();
        st.drop_prob = 0.0;
        st.delay = (Duration::ZERO, Duration::ZERO);
    }

    pub fn stats(&self) -> NetStats {
        self.inner.state.lock().stats.clone()
    }

    fn route(&self, from: u64, msgs: Vec<Message>) {
        let mut st = self.inner.state.lock();
        for msg in msgs {
            if st.drop_prob > 0.0 && st.random() < st.drop_prob {
                st.stats.dropped += 1;
                continue;
            }
            let (min, max) = st.delay;
            if max.is_zero() {
                st.deliver(from, msg);
                continue;
            }
            let span = (max - min).as_secs_f64();
            let delay = min + Duration::from_secs_f64(span * st.random());
            st.seq += 1;
            let seq = st.seq;
            let _ = self.inner.delayed.send(Delayed {
                due: Instant::now() + delay,
                seq,
                from,
                msg,
            });
        }
    }

    fn route_snapshot(&self, from: u64, msg: Message, mut data: SnapshotData) -> bool {
        let to = msg.to;
        let index = msg.get_snapshot().get_metadata().index;
        let mut bytes = Vec::new();
        if data.read_to_end(&mut bytes).is_err() {
            return false;
        }
        let mut st = self.inner.state.lock();
        let lost = st.blocked(from, to) || (st.drop_prob > 0.0 && st.random() < st.drop_prob);
        let target = st.nodes.get(&to).cloned();
        let delivered = match (lost, target) {
            (false, Some(handle)) => {
                st.seq += 1;
                let path = self
                    .inner
                    .snap_dir
                    .join(format!("{from}-{to}-{index}-{}.snap", st.seq));
                std::fs::write(&path, &bytes).unwrap();
                handle.step_snapshot(msg, path).is_ok()
            }
            _ => false,
        };
        st.stats.snapshots.push(SentSnapshot {
            from,
            to,
            index,
            delivered,
        });
        st.events
            .entry(from)
            .or_default()
            .push(PeerEvent::SnapshotSent { to, ok: delivered });
        true
    }

    fn take_events(&self, id: u64) -> Vec<PeerEvent> {
        self.inner
            .state
            .lock()
            .events
            .get_mut(&id)
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

fn delay_loop(rx: crossbeam_channel::Receiver<Delayed>, inner: Weak<Inner>) {
    let mut queue: BTreeMap<(Instant, u64), (u64, Message)> = BTreeMap::new();
    loop {
        let got = match queue.keys().next() {
            Some((due, _)) => rx.recv_deadline(*due),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(d) => {
                queue.insert((d.due, d.seq), (d.from, d.msg));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut st = inner.state.lock();
        while let Some(entry) = queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (from, msg) = entry.remove();
            st.deliver(from, msg);
        }
    }
}

/// The [`Transport`] of one member of a [`Network`].
pub struct MemTransport {
    id: u64,
    net: Network,
}

impl Transport for MemTransport {
    fn send(&mut self, msgs: Vec<Message>) {
        self.net.route(self.id, msgs);
    }

    fn send_snapshot(&mut self, msg: Message, data: SnapshotData) -> bool {
        self.net.route_snapshot(self.id, msg, data)
    }

    fn poll_events(&mut self) -> Vec<PeerEvent> {
        self.net.take_events(self.id)
    }
}

// ---------------------------------------------------------------------------------------
// Cluster harness
// ---------------------------------------------------------------------------------------

/// Polls `check` every few milliseconds until it returns Ok; panics with its last reason
/// once `within` has passed.
pub async fn eventually<F>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Result<(), String>,
{
    let deadline = Instant::now() + within;
    loop {
        let reason = match check() {
            Ok(()) => return,
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}: {reason}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Awaits `fut` for at most `within`, panicking with `what` on timeout.
pub async fn within<T>(
    what: &str,
    within: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(within, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {within:?}: {what}"),
    }
}

pub struct Member {
    pub handle: Handle,
    pub sm: MemSm,
}

/// A set of running members over one [`Network`], each with its WAL in a temp dir.
pub struct Cluster {
    pub net: Network,
    dir: tempfile::TempDir,
    members: BTreeMap<u64, Member>,
    tweak: fn(&mut NodeConfig),
}

/// Fast settings: 10 ms ticks, elections after 200-400 ms.
pub fn fast(cfg: &mut NodeConfig) {
    cfg.tick_interval = Duration::from_millis(10);
    cfg.election_ticks = 20;
    cfg.heartbeat_ticks = 2;
}

impl Cluster {
    /// A new cluster of voters `1..=n`; `tweak` adjusts every member's config after
    /// [`fast`].
    pub fn new(n: u64, tweak: fn(&mut NodeConfig)) -> Cluster {
        // WALs fsync every batch: keep them in memory when the machine has a tmpfs.
        let dir = if Path::new("/dev/shm").is_dir() {
            tempfile::Builder::new()
                .prefix("cairn-raft-net")
                .tempdir_in("/dev/shm")
                .unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let net = Network::new(dir.path().join("snapshots"));
        let mut cluster = Cluster {
            net,
            dir,
            members: BTreeMap::new(),
            tweak,
        };
        let initial: Vec<InitialMember> = (1..=n)
            .map(|id| InitialMember {
                id,
                context: format!("member-{id}").into_bytes(),
            })
            .collect();
        for id in 1..=n {
            cluster.start_member(id, initial.clone());
        }
        cluster
    }

    /// Starts member `id` with `initial` voters (empty: it joins an existing cluster).
    pub fn start_member(&mut self, id: u64, initial: Vec<InitialMember>) -> Handle {
        assert!(!self.members.contains_key(&id), "member {id} already runs");
        let mut cfg = NodeConfig::new(id, self.dir.path().join(format!("member-{id}")));
        cfg.initial_members = initial;
        fast(&mut cfg);
        (self.tweak)(&mut cfg);
        let sm = MemSm::default();
        let handle = start(cfg, sm.clone(), self.net.transport(id)).unwrap();
        self.net.register(id, handle.clone());
        self.members.insert(
            id,
            Member {
                handle: handle.clone(),
                sm,
            },
        );
        handle
    }

    /// Starts a member with an empty log that joins once the cluster adds it.
    pub fn start_joining(&mut self, id: u64) -> Handle {
        self.start_member(id, Vec::new())
    }

    /// Stops member `id` and takes it off the network.
    pub async fn stop(&mut self, id: u64) {
        let m = self.members.remove(&id).expect("no such member");
        self.net.unregister(id);
        tokio::task::spawn_blocking(move || m.handle.shutdown())
            .await
            .unwrap();
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    pub fn ids(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    pub fn node(&self, id: u64) -> &Handle {
        &self.members[&id].handle
    }

    pub fn sm(&self, id: u64) -> SmState {
        self.members[&id].sm.snapshot_of_state()
    }

    pub fn status(&self, id: u64) -> NodeStatus {
        self.node(id).status()
    }

    /// Waits until exactly one of `among` leads and all of them agree on it and on its
    /// term (a fatal or stopped member fails the test at once). Returns the statuses seen.
    pub async fn wait_leader(&self, among: &[u64], within: Duration) -> BTreeMap<u64, NodeStatus> {
        let mut seen = BTreeMap::new();
        eventually("one agreed leader", within, || {
            seen = among.iter().map(|id| (*id, self.status(*id))).collect();
            for s in seen.values() {
                assert!(!s.stopped, "member {} stopped: {:?}", s.id, s.fatal);
            }
            let leaders: Vec<&NodeStatus> =
                seen.values().filter(|s| s.role == Role::Leader).collect();
            let [leader] = leaders.as_slice() else {
                return Err(format!("{} leaders: {seen:?}", leaders.len()));
            };
            if seen
                .values()
                .all(|s| s.leader_id == leader.id && s.term == leader.term)
            {
                Ok(())
            } else {
                Err(format!("no agreement: {seen:?}"))
            }
        })
        .await;
        seen
    }

    /// The leader `among` agrees on (see [`Cluster::wait_leader`]).
    pub async fn leader(&self, among: &[u64]) -> u64 {
        let seen = self.wait_leader(among, Duration::from_secs(10)).await;
        seen.values().next().unwrap().leader_id
    }

    /// Waits until every one of `ids` has applied `index`.
    pub async fn wait_applied(&self, ids: &[u64], index: u64, within: Duration) {
        eventually(&format!("{ids:?} to apply {index}"), within, || {
            let lagging: Vec<(u64, u64)> = ids
                .iter()
                .map(|id| (*id, self.status(*id).applied_index))
                .filter(|(_, applied)| *applied < index)
                .collect();
            if lagging.is_empty() {
                Ok(())
            } else {
                Err(format!("lagging (member, applied): {lagging:?}"))
            }
        })
        .await;
    }

    /// Proposes `payload` on `id` and waits (bounded) for it to be applied there.
    pub async fn propose(&self, id: u64, payload: impl Into<Vec<u8>>) -> u64 {
        let payload = payload.into();
        let what = format!("proposal {:?} on {id}", String::from_utf8_lossy(&payload));
        within(
            &what,
            Duration::from_secs(10),
            self.node(id).propose(payload),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test must not leave raft threads ticking under the other tests.
        for (id, m) in std::mem::take(&mut self.members) {
            self.net.unregister(id);
            m.handle.shutdown();
        }
    }
}
