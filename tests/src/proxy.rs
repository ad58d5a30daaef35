//! A TCP proxy in front of one member's peer port, so that a test can cut raft traffic
//! without privileges (no iptables, no network namespaces).
//!
//! Members of a [`Cluster`](crate::Cluster) started with
//! [`Cluster::start_with_proxies`](crate::Cluster::start_with_proxies) advertise their
//! proxy's URL as their peer URL, so every peer dials a member through its proxy. A
//! connection through member X's proxy is dialed by some member D and carries D→X bytes
//! one way (towards X) and X→D bytes the other way (towards D). Which way the *payload*
//! goes depends on the implementation: cairn's peer streams are dialed by the sender
//! (D's raft messages go towards X, X only answers with HTTP/2 control frames), the real
//! etcd's rafthttp streams are dialed by the receiver (X's messages come back towards D).
//!
//! # Who dialed a connection
//!
//! A proxy learns the dialing member of each connection by sniffing the first bytes the
//! dialer sends, without changing them:
//! - HTTP/2 (cairn, gRPC): the connection preface, then frames `[len:3][type:1][flags:1]
//!   [stream:4]`; the first DATA frame's payload is a 5-byte gRPC prefix and a protobuf
//!   `RaftMessages` or `SnapshotChunk`, both with the sender's id as field 2 (`from`);
//! - HTTP/1.1 (etcd's rafthttp): the `X-Server-From` request header (hex member id).
//!
//! A connection that is neither (or whose first message has no `from`, like the
//! `PeerCluster/Members` call of a joining member) is *opaque*: only
//! [`Proxy::isolate`] touches it. The proxy knows the member behind it
//! ([`Proxy::set_member_id`]); the cluster harness maps member ids (from each member's
//! Status header) to indexes. Sniffing was chosen over asking the kernel which process
//! owns a socket (`/proc/net/tcp` and `/proc/<pid>/fd`) because it needs nothing but the
//! bytes, works for members restarted under new pids, and works against etcd too.
//!
//! # Cuts
//!
//! [`Proxy::set_cuts`] takes the set of *directed* links (`from` member, `to` member)
//! that are cut, each with a [`CutMode`]. A byte travelling from A to B is affected when
//! the link A→B is cut; a one-way cut is a cut of one link, a full partition of X the
//! cut of every link into and out of X. The cluster installs a link on the proxies of
//! both its ends, since A→B bytes flow towards B on connections A dialed (B's proxy) and
//! towards the dialer on connections B dialed (A's proxy).
//!
//! - [`CutMode::Blackhole`], what a real network failure looks like: the proxy stops
//!   forwarding the bytes of a cut link and stops reading them (so the kernel buffers
//!   fill and the sender's writes eventually block), while the sockets stay open — no
//!   shutdown, no reset, no error anywhere. When the link heals, forwarding resumes and
//!   everything buffered meanwhile is delivered, in order, as TCP retransmission would
//!   deliver it. A sender that gave up on such a connection and closed it still gets
//!   its last bytes delivered, followed by the end of the stream, exactly like a FIN
//!   queued behind unacknowledged data.
//! - [`CutMode::BlackholeExisting`]: the same for the connections that were open when
//!   the cut began, while connections opened during it pass untouched.
//! - [`CutMode::Kill`]: connections dialed along a cut link are shut down at once and new
//!   ones along it are closed (the peer sees a reset-like failure and reconnects).
//!
//! **New connections during a cut.** A real blackhole drops the SYN, so the dialer's
//! connect times out and not a byte of that connection is ever delivered. The proxy
//! cannot refuse a connection the kernel already accepted, and does not know its dialer
//! before its first bytes, so while any cut is set it accepts a new connection, forwards
//! nothing either way and keeps sniffing; once the dialer is known, the connection is
//! closed (without delivering anything) if a link it would carry is blackholed, or if
//! its dialer→member link is killed; otherwise it is forwarded normally. So a dialer
//! behind a cut sees its connect fail (after a few milliseconds instead of its connect
//! timeout), and bytes of connections opened during a cut are never delivered late.
//!
//! [`Proxy::isolate`] is the older, cruder inbound cut: it kills every connection the
//! proxy carries and closes every new one as soon as it is accepted. Against cairn that
//! is asymmetric: the isolated member's own streams go through the other proxies and keep
//! flowing, so an isolated leader still reaches its followers but hears nothing back.
//!
//! Every connection's life is recorded ([`Proxy::events`]) with wall-clock times, to
//! line up with the members' logs when a fault test finds something.

use std::collections::HashMap;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::net::free_port;

/// How long the proxy waits to connect to the member behind it.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a pipe blocked on a socket looks at the cuts again.
const POLL: Duration = Duration::from_millis(10);
/// Bytes of a connection's start kept for sniffing its dialer; beyond, it is opaque.
const SNIFF_LIMIT: usize = 256 * 1024;
/// Connection events kept per proxy (the oldest are dropped beyond).
const EVENT_LIMIT: usize = 100_000;

/// How a cut link treats the connections that carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CutMode {
    /// Bytes stop, sockets stay open; buffered bytes flow when the link heals. New
    /// connections along the link fail.
    Blackhole,
    /// A blackhole of the connections open when the cut began only; connections opened
    /// later pass (a middlebox that lost the state of the existing flows, a firewall
    /// rule written for the flows it saw).
    BlackholeExisting,
    /// Connections dialed along the link are shut down; new ones are closed.
    Kill,
}

/// One direction of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Toward {
    /// Bytes from the dialer to the member behind the proxy.
    Member,
    /// Bytes from the member back to the dialer.
    Dialer,
}

/// Something that happened to one proxied connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// Accepted from this local address (the dialer's end).
    Accepted(SocketAddr),
    /// The dialer's member id was sniffed (`None`: the connection is opaque).
    Identified(Option<u64>),
    /// A direction stopped forwarding because of a blackhole.
    Held(Toward),
    /// A held direction forwards again after this long.
    Resumed(Toward, Duration),
    /// After resuming, this many buffered bytes were delivered before the direction
    /// went quiet (what a blackhole had kept back).
    Flushed(Toward, u64),
    /// Closed without forwarding anything: it was opened during a cut of its links.
    Refused,
    /// Shut down by a kill cut or [`Proxy::isolate`].
    Killed,
    /// Both directions ended; bytes forwarded towards the member and towards the dialer.
    Closed {
        /// Bytes forwarded from the dialer to the member.
        to_member: u64,
        /// Bytes forwarded from the member to the dialer.
        to_dialer: u64,
    },
}

/// A [`ConnEvent`] with when it happened and on which connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEvent {
    /// Wall-clock time.
    pub at: SystemTime,
    /// The connection's number within its proxy.
    pub conn: u64,
    /// What happened.
    pub event: ConnEvent,
}

impl fmt::Display for ProxyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} conn#{} {:?}",
            utc_clock(self.at),
            self.conn,
            self.event
        )
    }
}

/// `HH:MM:SS.ffffff` in UTC, the way the members' `tracing` logs print time of day.
pub fn utc_clock(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let day = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        since.subsec_micros()
    )
}

/// A loopback TCP proxy forwarding to one address, which can be told to cut.
pub struct Proxy {
    port: u16,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled whenever the cuts change.
    changed: Condvar,
    stopped: AtomicBool,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    /// [`Proxy::isolate`]: kill everything, accept nothing.
    isolated: bool,
    /// Held bytes resume at the sender's next TCP retransmission, not at once.
    tcp_backoff: bool,
    /// Connections opened during a cut are held until it heals instead of closed.
    hold_new: bool,
    /// The member behind the proxy, once known.
    member: Option<u64>,
    /// Cut directed links (from, to), with the generation that cut them.
    cuts: HashMap<(u64, u64), (CutMode, u64)>,
    /// Bumped by every [`Proxy::set_cuts`].
    generation: u64,
    conns: HashMap<u64, Conn>,
    events: Vec<ProxyEvent>,
}

struct Conn {
    /// The socket to the dialer and the one to the member (clones, for shutting down).
    dialer_side: TcpStream,
    member_side: TcpStream,
    identity: Identity,
    /// Whether it ever forwarded (accepted with no cut set, or identified as clear of
    /// them): then a cut stalls or kills it; before, a cut refuses it.
    established: bool,
    /// The cut generation when it was accepted.
    accepted: u64,
    /// Which directions (by [`Toward`]) a blackhole holds now.
    held: [bool; 2],
    /// Pipes still running (two at first).
    pipes: u8,
    forwarded: [u64; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    Sniffing,
    Dialer(u64),
    Opaque,
}

/// What a pipe does with its direction now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Forward,
    Hold,
    Kill,
    Refuse,
    /// The connection is gone.
    Gone,
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        // Bound here and kept: no window in which another socket could take the port.
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind proxy port {port}: {e}"));
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            changed: Condvar::new(),
            stopped: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || accept_loop(listener, target, shared))
                .expect("spawn proxy thread")
        };
        Proxy {
            port,
            target,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<proxy port>`: the URL to advertise for the member behind it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Tells the proxy the id of the member behind it (needed by [`Proxy::set_cuts`]).
    pub fn set_member_id(&self, id: u64) {
        self.shared.lock().member = Some(id);
    }

    /// Models TCP retransmission on heal: bytes a blackhole held back are delivered at
    /// the sender's next retransmission after the heal (200 ms after the first lost
    /// segment, then doubling: 0.2, 0.6, 1.4, 3.0, 6.2 s...), so they arrive up to
    /// seconds after fresh connections already carry traffic again. Off by default:
    /// held bytes flow as soon as the cut heals.
    pub fn set_tcp_backoff(&self, on: bool) {
        self.shared.lock().tcp_backoff = on;
    }

    /// Holds connections opened during a cut (forwarding nothing) until it heals, then
    /// forwards what they buffered, instead of closing them (the default). A dialer's
    /// connect then looks successful but its bytes wait: a SYN that got through while
    /// the data did not.
    pub fn set_hold_new_connections(&self, on: bool) {
        self.shared.lock().hold_new = on;
    }

    /// Whether [`Proxy::isolate`] is in force.
    pub fn is_isolated(&self) -> bool {
        self.shared.lock().isolated
    }

    /// Kills every connection it carries and closes new ones at once (an inbound cut).
    pub fn isolate(&self) {
        let mut state = self.shared.lock();
        state.isolated = true;
        let ids: Vec<u64> = state.conns.keys().copied().collect();
        for id in ids {
            state.kill(id, ConnEvent::Killed);
        }
        self.shared.changed.notify_all();
    }

    /// Ends [`Proxy::isolate`]: new connections are forwarded again.
    pub fn heal(&self) {
        self.shared.lock().isolated = false;
        self.shared.changed.notify_all();
    }

    /// Replaces the set of cut links (member id pairs `(from, to)`); an empty set heals
    /// them all. Connections a new kill cut applies to are shut down before it returns;
    /// a blackhole takes hold within a few milliseconds.
    pub fn set_cuts(&self, cuts: &HashMap<(u64, u64), CutMode>) {
        let mut state = self.shared.lock();
        state.generation += 1;
        let generation = state.generation;
        // A link cut before keeps its generation (what "existing" means to it).
        state.cuts = cuts
            .iter()
            .map(|(&link, &mode)| {
                let since = match state.cuts.get(&link) {
                    Some(&(old, since)) if old == mode => since,
                    _ => generation,
                };
                (link, (mode, since))
            })
            .collect();
        let ids: Vec<u64> = state.conns.keys().copied().collect();
        for id in ids {
            if state.verdict(id, Toward::Member) == Verdict::Kill {
                state.kill(id, ConnEvent::Killed);
            }
        }
        self.shared.changed.notify_all();
    }

    /// The links currently cut.
    pub fn cuts(&self) -> HashMap<(u64, u64), CutMode> {
        self.shared
            .lock()
            .cuts
            .iter()
            .map(|(&link, &(mode, _))| (link, mode))
            .collect()
    }

    /// The dialer of every live connection (`None`: not known yet, or opaque).
    pub fn dialers(&self) -> Vec<Option<u64>> {
        let state = self.shared.lock();
        let mut out: Vec<(u64, Option<u64>)> = state
            .conns
            .iter()
            .map(|(id, c)| {
                let dialer = match c.identity {
                    Identity::Dialer(d) => Some(d),
                    Identity::Sniffing | Identity::Opaque => None,
                };
                (*id, dialer)
            })
            .collect();
        out.sort_unstable();
        out.into_iter().map(|(_, d)| d).collect()
    }

    /// How many directions of live connections a blackhole holds back now (bytes of a
    /// healed cut waiting for their retransmission included): 0 once everything a cut
    /// held has been delivered.
    pub fn holding(&self) -> usize {
        self.shared
            .lock()
            .conns
            .values()
            .map(|c| c.held.iter().filter(|h| **h).count())
            .sum()
    }

    /// Everything that happened to its connections so far, oldest first.
    pub fn events(&self) -> Vec<ProxyEvent> {
        self.shared.lock().events.clone()
    }

    /// Stops accepting, kills every connection and joins the accept thread.
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.isolate();
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        let _ = acceptor.join();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits at most [`POLL`] for the cuts to change.
    fn wait_change(&self) {
        let state = self.lock();
        let _ = self
            .changed
            .wait_timeout(state, POLL)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

impl State {
    fn log(&mut self, conn: u64, event: ConnEvent) {
        if self.events.len() >= EVENT_LIMIT {
            self.events.remove(0);
        }
        self.events.push(ProxyEvent {
            at: SystemTime::now(),
            conn,
            event,
        });
    }

    /// What the pipe of connection `id` towards `toward` does now.
    fn verdict(&mut self, id: u64, toward: Toward) -> Verdict {
        if self.isolated {
            return Verdict::Kill;
        }
        let Some(conn) = self.conns.get(&id) else {
            return Verdict::Gone;
        };
        // The cut of a link as it applies to this connection: a cut of the existing
        // connections is a blackhole of those accepted before it, nothing to the others.
        let accepted = conn.accepted;
        let applies = |cut: Option<&(CutMode, u64)>| match cut {
            Some(&(CutMode::BlackholeExisting, since)) if accepted < since => {
                Some(CutMode::Blackhole)
            }
            Some(&(CutMode::BlackholeExisting, _)) | None => None,
            Some(&(mode, _)) => Some(mode),
        };
        let (dialer, member) = match (conn.identity, self.member) {
            (Identity::Opaque, _) => return Verdict::Forward,
            (Identity::Sniffing, _) if self.cuts.values().all(|c| applies(Some(c)).is_none()) => {
                self.establish(id);
                return Verdict::Forward;
            }
            (Identity::Sniffing, _) => return Verdict::Hold,
            (Identity::Dialer(_), None) => return Verdict::Forward,
            (Identity::Dialer(d), Some(m)) => (d, m),
        };
        let inward = applies(self.cuts.get(&(dialer, member)));
        let outward = applies(self.cuts.get(&(member, dialer)));
        if !conn.established {
            let refused = inward.is_some() || outward == Some(CutMode::Blackhole);
            if refused {
                return if self.hold_new {
                    Verdict::Hold
                } else {
                    Verdict::Refuse
                };
            }
            self.establish(id);
        }
        let cut = match toward {
            Toward::Member => inward,
            Toward::Dialer => outward,
        };
        match (cut, toward) {
            (Some(CutMode::Blackhole | CutMode::BlackholeExisting), _) => Verdict::Hold,
            (Some(CutMode::Kill), Toward::Member) => Verdict::Kill,
            (Some(CutMode::Kill), Toward::Dialer) | (None, _) => Verdict::Forward,
        }
    }

    fn set_held(&mut self, id: u64, toward: Toward, held: bool) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.held[toward as usize] = held;
        }
    }

    fn establish(&mut self, id: u64) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.established = true;
        }
    }

    fn identify(&mut self, id: u64, dialer: Option<u64>) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.identity = match dialer {
                Some(d) => Identity::Dialer(d),
                None => Identity::Opaque,
            };
            self.log(id, ConnEvent::Identified(dialer));
        }
    }

    fn identity(&self, id: u64) -> Option<Identity> {
        self.conns.get(&id).map(|c| c.identity)
    }

    /// Shuts both sockets of connection `id` down and forgets it.
    fn kill(&mut self, id: u64, why: ConnEvent) {
        if let Some(conn) = self.conns.remove(&id) {
            let _ = conn.dialer_side.shutdown(Shutdown::Both);
            let _ = conn.member_side.shutdown(Shutdown::Both);
            self.log(id, why);
        }
    }

    fn count(&mut self, id: u64, toward: Toward, n: usize) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.forwarded[toward as usize] += n as u64;
        }
    }

    fn pipe_done(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.pipes -= 1;
        if conn.pipes == 0 {
            let [to_member, to_dialer] = conn.forwarded;
            self.conns.remove(&id);
            self.log(
                id,
                ConnEvent::Closed {
                    to_member,
                    to_dialer,
                },
            );
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(dialer) = incoming else {
            continue;
        };
        if shared.lock().isolated {
            let _ = dialer.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(member) = TcpStream::connect_timeout(&target, UPSTREAM_CONNECT_TIMEOUT) else {
            let _ = dialer.shutdown(Shutdown::Both);
            continue;
        };
        let _ = dialer.set_nodelay(true);
        let _ = member.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let clones = (|| {
            Ok::<_, std::io::Error>((
                dialer.try_clone()?,
                member.try_clone()?,
                dialer.try_clone()?,
                member.try_clone()?,
            ))
        })();
        let Ok((dialer_reg, member_reg, dialer_out, member_out)) = clones else {
            continue;
        };
        {
            let mut state = shared.lock();
            if state.isolated {
                let _ = dialer.shutdown(Shutdown::Both);
                let _ = member.shutdown(Shutdown::Both);
                continue;
            }
            let peer = dialer
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            state.log(id, ConnEvent::Accepted(peer));
            let accepted = state.generation;
            state.conns.insert(
                id,
                Conn {
                    dialer_side: dialer_reg,
                    member_side: member_reg,
                    identity: Identity::Sniffing,
                    established: false,
                    accepted,
                    held: [false; 2],
                    pipes: 2,
                    forwarded: [0, 0],
                },
            );
        }
        spawn_pipe(&shared, id, Toward::Member, dialer, member_out);
        spawn_pipe(&shared, id, Toward::Dialer, member, dialer_out);
    }
}

fn spawn_pipe(shared: &Arc<Shared>, id: u64, toward: Toward, from: TcpStream, to: TcpStream) {
    let pipe = Pipe {
        shared: Arc::clone(shared),
        id,
        toward,
        from,
        to,
    };
    let spawned = std::thread::Builder::new()
        .name(format!("proxy-pipe-{id}"))
        .spawn(move || pipe.run());
    if spawned.is_err() {
        shared.lock().kill(id, ConnEvent::Killed);
    }
}

/// One direction of one connection.
struct Pipe {
    shared: Arc<Shared>,
    id: u64,
    toward: Toward,
    from: TcpStream,
    to: TcpStream,
}

impl Pipe {
    fn run(mut self) {
        let _ = self.from.set_read_timeout(Some(POLL));
        let _ = self.to.set_write_timeout(Some(POLL));
        let mut sniffer = (self.toward == Toward::Member).then(Sniffer::default);
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut eof = false;
        let mut held_since: Option<Instant> = None;
        // When the first byte was held back (the first "lost segment"), for the
        // retransmission schedule.
        let mut first_loss: Option<Instant> = None;
        // Once the cut heals: when the held bytes go (the next retransmission).
        let mut resume_at: Option<Instant> = None;
        // Bytes delivered since the last hold ended, until the direction goes quiet.
        let mut flushing: Option<u64> = None;
        loop {
            if self.shared.stopped.load(Ordering::SeqCst) {
                break;
            }
            let (verdict, sniffing, backoff) = {
                let mut state = self.shared.lock();
                let mut verdict = state.verdict(self.id, self.toward);
                let backoff = state.tcp_backoff;
                if verdict == Verdict::Forward && held_since.is_some() && backoff {
                    if resume_at.is_none() {
                        resume_at = first_loss.map(next_retransmission);
                    }
                    if resume_at.is_some_and(|at| Instant::now() < at) {
                        verdict = Verdict::Hold;
                    }
                } else if verdict != Verdict::Forward {
                    // Cut again before the retransmission: the schedule goes on.
                    resume_at = None;
                }
                match verdict {
                    Verdict::Kill => state.kill(self.id, ConnEvent::Killed),
                    Verdict::Refuse => state.kill(self.id, ConnEvent::Refused),
                    Verdict::Hold if held_since.is_none() => {
                        // A connection held while its dialer is unknown is not cut yet.
                        if state.identity(self.id) != Some(Identity::Sniffing) {
                            held_since = Some(Instant::now());
                            state.set_held(self.id, self.toward, true);
                            state.log(self.id, ConnEvent::Held(self.toward));
                        }
                    }
                    Verdict::Forward => {
                        if let Some(since) = held_since.take() {
                            state.set_held(self.id, self.toward, false);
                            state.log(self.id, ConnEvent::Resumed(self.toward, since.elapsed()));
                            flushing = Some(0);
                            first_loss = None;
                            resume_at = None;
                        }
                    }
                    Verdict::Hold | Verdict::Gone => {}
                }
                let sniffing = state.identity(self.id) == Some(Identity::Sniffing);
                (verdict, sniffing && sniffer.is_some(), backoff)
            };
            match verdict {
                Verdict::Kill | Verdict::Refuse | Verdict::Gone => return,
                Verdict::Forward if !pending.is_empty() => {
                    match self.to.write(&pending) {
                        Ok(n) => {
                            pending.drain(..n);
                            if let Some(f) = flushing.as_mut() {
                                *f += n as u64;
                            }
                            self.shared.lock().count(self.id, self.toward, n);
                        }
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => {
                            self.shared.lock().kill(self.id, ConnEvent::Killed);
                            return;
                        }
                    }
                    continue;
                }
                Verdict::Forward if eof => {
                    let _ = self.to.shutdown(Shutdown::Write);
                    break;
                }
                Verdict::Forward => {}
                Verdict::Hold if sniffing && !eof => {}
                Verdict::Hold if backoff && held_since.is_some() && first_loss.is_none() => {
                    // Note when the sender first has bytes for the dead path.
                    let waiting = !pending.is_empty()
                        || eof
                        || self.from.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
                    if waiting {
                        first_loss = Some(Instant::now());
                    }
                    continue;
                }
                Verdict::Hold => {
                    self.shared.wait_change();
                    continue;
                }
            }
            match self.from.read(&mut buf) {
                Ok(0) => eof = true,
                Ok(n) => {
                    if let Some(s) = sniffer.as_mut() {
                        if let Some(dialer) = s.feed(&buf[..n]) {
                            self.shared.lock().identify(self.id, dialer);
                            sniffer = None;
                        }
                    }
                    pending.extend_from_slice(&buf[..n]);
                }
                Err(e) if is_timeout(&e) => {
                    if let Some(bytes) = flushing.take() {
                        if bytes > 0 {
                            self.shared
                                .lock()
                                .log(self.id, ConnEvent::Flushed(self.toward, bytes));
                        }
                    }
                }
                Err(_) => {
                    self.shared.lock().kill(self.id, ConnEvent::Killed);
                    return;
                }
            }
            if sniffer.as_ref().is_some_and(|s| !s.identifying()) {
                sniffer = None;
            }
        }
        if let Some(bytes) = flushing.filter(|b| *b > 0) {
            self.shared
                .lock()
                .log(self.id, ConnEvent::Flushed(self.toward, bytes));
        }
        self.shared.lock().pipe_done(self.id);
    }
}

/// The sender's first retransmission at or after now, for segments first lost at
/// `lost`: Linux's 200 ms minimum RTO, doubling after each try (capped at 120 s).
fn next_retransmission(lost: Instant) -> Instant {
    let now = Instant::now();
    let mut rto = Duration::from_millis(200);
    let mut at = lost + rto;
    while at < now {
        rto = (rto * 2).min(Duration::from_secs(120));
        at += rto;
    }
    at
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Learns a connection's dialing member from the first bytes the dialer sends.
#[derive(Default)]
struct Sniffer {
    seen: Vec<u8>,
    done: bool,
}

/// What the bytes seen so far say about the dialer.
#[derive(Debug, PartialEq, Eq)]
enum Sniff {
    NeedMore,
    Dialer(u64),
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_DATA: u8 = 0;
const H2_FLAG_PADDED: u8 = 0x8;

impl Sniffer {
    /// Feeds the next bytes; `Some` once the answer is known (`Some(None)`: opaque).
    fn feed(&mut self, bytes: &[u8]) -> Option<Option<u64>> {
        if self.done {
            return None;
        }
        self.seen.extend_from_slice(bytes);
        let answer = match sniff(&self.seen) {
            Sniff::NeedMore if self.seen.len() < SNIFF_LIMIT => return None,
            Sniff::NeedMore | Sniff::Opaque => None,
            Sniff::Dialer(d) => Some(d),
        };
        self.done = true;
        self.seen = Vec::new();
        Some(answer)
    }

    fn identifying(&self) -> bool {
        !self.done
    }
}

fn sniff(bytes: &[u8]) -> Sniff {
    if bytes.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(bytes) {
        return Sniff::NeedMore;
    }
    if let Some(frames) = bytes.strip_prefix(H2_PREFACE) {
        return sniff_h2(frames);
    }
    sniff_http1(bytes)
}

/// The first gRPC message of the first stream that sends DATA, field 2 (`from`).
fn sniff_h2(mut frames: &[u8]) -> Sniff {
    let mut stream: Option<u32> = None;
    let mut grpc: Vec<u8> = Vec::new();
    while frames.len() >= 9 {
        let len =
            usize::from(frames[0]) << 16 | usize::from(frames[1]) << 8 | usize::from(frames[2]);
        let (kind, flags) = (frames[3], frames[4]);
        let id = u32::from_be_bytes([frames[5], frames[6], frames[7], frames[8]]) & 0x7fff_ffff;
        let Some(payload) = frames.get(9..9 + len) else {
            break;
        };
        frames = &frames[9 + len..];
        if kind != H2_DATA || id == 0 || stream.is_some_and(|s| s != id) {
            continue;
        }
        stream = Some(id);
        let data = if flags & H2_FLAG_PADDED != 0 {
            let Some((&pad, rest)) = payload.split_first() else {
                return Sniff::Opaque;
            };
            let Some(data) = rest.get(..rest.len().saturating_sub(usize::from(pad))) else {
                return Sniff::Opaque;
            };
            data
        } else {
            payload
        };
        grpc.extend_from_slice(data);
        match sniff_grpc(&grpc) {
            Sniff::NeedMore => {}
            answer => return answer,
        }
    }
    Sniff::NeedMore
}

/// A gRPC length-prefixed message whose protobuf has the sender as field 2.
fn sniff_grpc(grpc: &[u8]) -> Sniff {
    let Some((prefix, body)) = grpc.split_first_chunk::<5>() else {
        return Sniff::NeedMore;
    };
    if prefix[0] != 0 {
        return Sniff::Opaque; // compressed
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    let complete = body.len() >= len;
    let mut msg = &body[..len.min(body.len())];
    loop {
        if msg.is_empty() {
            return if complete {
                Sniff::Opaque
            } else {
                Sniff::NeedMore
            };
        }
        let Some((tag, rest)) = varint(msg) else {
            return if complete {
                Sniff::Opaque
            } else {
                Sniff::NeedMore
            };
        };
        let (field, wire) = (tag >> 3, tag & 7);
        let skipped = match wire {
            0 => varint(rest).map(|(v, after)| (Some(v), after)),
            1 => rest.get(8..).map(|after| (None, after)),
            2 => varint(rest).and_then(|(n, after)| {
                usize::try_from(n)
                    .ok()
                    .and_then(|n| after.get(n..))
                    .map(|after| (None, after))
            }),
            5 => rest.get(4..).map(|after| (None, after)),
            _ => return Sniff::Opaque,
        };
        match skipped {
            Some((Some(v), _)) if field == 2 => return Sniff::Dialer(v),
            Some((_, after)) => msg = after,
            None if complete => return Sniff::Opaque,
            None => return Sniff::NeedMore,
        }
    }
}

/// A protobuf varint at the start of `bytes` and what follows it; `None` if cut short.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// etcd's rafthttp: every request names its sender in `X-Server-From` (hex).
fn sniff_http1(bytes: &[u8]) -> Sniff {
    let is_request = [b"GET ".as_slice(), b"POST ", b"PUT "]
        .iter()
        .any(|m| bytes.starts_with(m) || m.starts_with(bytes));
    if !is_request {
        return Sniff::Opaque;
    }
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Sniff::NeedMore;
    };
    let head = String::from_utf8_lossy(&bytes[..end]);
    head.lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("x-server-from"))
        .and_then(|(_, value)| u64::from_str_radix(value.trim(), 16).ok())
        .map_or(Sniff::Opaque, Sniff::Dialer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// `RaftMessages { cluster_id, from, to, messages: [b"xyz"] }` behind a gRPC prefix.
    fn raft_messages(cluster_id: u64, from: u64, to: u64) -> Vec<u8> {
        let mut msg = Vec::new();
        for (field, v) in [(1u64, cluster_id), (2, from), (3, to)] {
            put_varint(&mut msg, field << 3);
            put_varint(&mut msg, v);
        }
        msg.extend_from_slice(&[(4 << 3) | 2, 3, b'x', b'y', b'z']);
        let mut grpc = vec![0];
        grpc.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        grpc.extend_from_slice(&msg);
        grpc
    }

    fn h2_connection(grpc: &[u8], split_data_at: usize) -> Vec<u8> {
        let mut bytes = H2_PREFACE.to_vec();
        bytes.extend(frame(4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
        bytes.extend(frame(1, 4, 1, b"some hpack bytes")); // HEADERS
        bytes.extend(frame(8, 0, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE
        bytes.extend(frame(H2_DATA, 0, 1, &grpc[..split_data_at]));
        let mut padded = vec![4];
        padded.extend_from_slice(&grpc[split_data_at..]);
        padded.extend_from_slice(&[0; 4]);
        bytes.extend(frame(H2_DATA, H2_FLAG_PADDED, 1, &padded));
        bytes
    }

    #[test]
    fn finds_the_sender_of_a_grpc_raft_stream_fed_byte_by_byte() {
        let from = 0x8e9e_05c5_2164_694d;
        let grpc = raft_messages(0xcdf8_1819_4e3a_8c32, from, 42);
        for split in [0, 3, 7, 12, grpc.len()] {
            let bytes = h2_connection(&grpc, split);
            let mut sniffer = Sniffer::default();
            let answers: Vec<(usize, Option<u64>)> = bytes
                .iter()
                .enumerate()
                .filter_map(|(i, b)| sniffer.feed(&[*b]).map(|a| (i, a)))
                .collect();
            assert_eq!(answers.len(), 1, "split at {split}: {answers:?}");
            assert_eq!(answers[0].1, Some(from), "split at {split}");
        }
    }

    #[test]
    fn a_message_without_a_sender_or_another_protocol_is_opaque() {
        let empty = [0u8, 0, 0, 0, 0];
        let bytes = h2_connection(&empty, 5);
        assert_eq!(sniff(&bytes), Sniff::Opaque);
        assert_eq!(sniff(b"SSH-2.0-OpenSSH\r\n"), Sniff::Opaque);
        assert_eq!(sniff(b"PRI * HTTP/2"), Sniff::NeedMore);
    }

    #[test]
    fn finds_the_sender_of_an_etcd_rafthttp_request() {
        let head = b"GET /raft/stream/msgappv2/1 HTTP/1.1\r\nHost: x\r\nX-Server-From: 8e9e05c52164694d\r\nX-Raft-To: 1\r\n\r\n";
        assert_eq!(sniff(&head[..20]), Sniff::NeedMore);
        assert_eq!(sniff(head), Sniff::Dialer(0x8e9e_05c5_2164_694d));
        assert_eq!(sniff(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Sniff::Opaque);
    }

    #[test]
    fn held_bytes_wait_for_the_next_retransmission() {
        let lost = Instant::now() - Duration::from_millis(1000);
        // Tries at 0.2, 0.6, 1.4, 3.0 s after the loss: 1 s after it, the next is 1.4 s.
        assert_eq!(
            next_retransmission(lost),
            lost + Duration::from_millis(1400)
        );
        let lost = Instant::now() - Duration::from_millis(3100);
        assert_eq!(
            next_retransmission(lost),
            lost + Duration::from_millis(6200)
        );
    }

    #[test]
    fn one_way_cuts_hold_one_direction_and_refuse_new_connections() {
        let (a, x) = (1, 2);
        let mut state = State {
            member: Some(x),
            ..State::default()
        };
        let pair = || {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
            let (s, _) = l.accept().expect("accept");
            (c, s)
        };
        for id in 0..2 {
            let (c, s) = pair();
            state.conns.insert(
                id,
                Conn {
                    dialer_side: c,
                    member_side: s,
                    identity: Identity::Sniffing,
                    established: false,
                    accepted: 0,
                    held: [false; 2],
                    pipes: 2,
                    forwarded: [0, 0],
                },
            );
        }
        // Connection 0 is established before the cut, connection 1 during it.
        assert_eq!(state.verdict(0, Toward::Member), Verdict::Forward);
        state.identify(0, Some(a));
        state.cuts.insert((a, x), (CutMode::Blackhole, 1));
        assert_eq!(state.verdict(0, Toward::Member), Verdict::Hold);
        assert_eq!(state.verdict(0, Toward::Dialer), Verdict::Forward);
        assert_eq!(state.verdict(1, Toward::Dialer), Verdict::Hold);
        state.identify(1, Some(a));
        assert_eq!(state.verdict(1, Toward::Member), Verdict::Refuse);
        state.cuts.clear();
        state.cuts.insert((x, a), (CutMode::Kill, 2));
        assert_eq!(state.verdict(0, Toward::Member), Verdict::Forward);
        state.cuts.insert((a, x), (CutMode::Kill, 2));
        assert_eq!(state.verdict(0, Toward::Member), Verdict::Kill);
        // A cut of the existing connections holds those accepted before it only.
        state.cuts.clear();
        state.cuts.insert((a, x), (CutMode::BlackholeExisting, 1));
        assert_eq!(state.verdict(0, Toward::Member), Verdict::Hold);
        if let Some(conn) = state.conns.get_mut(&0) {
            conn.accepted = 1;
        }
        assert_eq!(state.verdict(0, Toward::Member), Verdict::Forward);
    }
}
