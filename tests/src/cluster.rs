//! A cluster of server processes on loopback: static bootstrap with `--initial-cluster`,
//! members found by their own status, leader waits with a deadline; optionally a TCP
//! proxy in front of every member's peer port to partition it: [`Cluster::cut`]
//! (blackholes or kills, one way or both) and the older [`Cluster::isolate`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::proxy::{CutMode, Proxy};
use crate::server::{Server, ServerOpts};

/// How long a cluster may take to elect a leader.
pub const LEADER_DEADLINE: Duration = Duration::from_secs(20);

/// Members started together with the same `--initial-cluster`.
pub struct Cluster {
    /// The members, in start order (names `m0`, `m1`, ...).
    pub members: Vec<Server>,
    /// One proxy per member in front of its peer port (empty unless started with
    /// [`Cluster::start_with_proxies`]); dropped after the members.
    proxies: Vec<Proxy>,
    /// Member ids by index, from each member's Status (empty without proxies).
    ids: Vec<u64>,
    /// The directed links (from id, to id) cut now.
    cuts: Mutex<HashMap<(u64, u64), CutMode>>,
    token: String,
}

/// Which of a member's links to the others a [`Cluster::cut`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CutDirection {
    /// Only what the others send to it.
    Inbound,
    /// Only what it sends to the others.
    Outbound,
    /// Both ways: the member is cut off.
    Both,
}

/// What one member says about the cluster (from its Maintenance.Status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberView {
    /// The member's own id.
    pub id: u64,
    /// The leader it follows (0 = none).
    pub leader: u64,
    /// Its raft term.
    pub term: u64,
    /// Its applied index.
    pub applied: u64,
}

impl Cluster {
    /// Starts `n` members and waits until every one is healthy.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, |opts| opts)
    }

    /// Starts `n` members, each with the options `tweak` makes of its own, and waits
    /// until every one is healthy.
    pub fn start_with(n: usize, tweak: impl Fn(ServerOpts) -> ServerOpts) -> Cluster {
        Cluster::launch(n, false, false, tweak)
    }

    /// Like [`Cluster::start_with`], the members talking to each other over `https://`
    /// peer URLs (`tweak` adds the peer TLS flags).
    pub fn start_with_peer_tls(n: usize, tweak: impl Fn(ServerOpts) -> ServerOpts) -> Cluster {
        Cluster::launch(n, false, true, tweak)
    }

    /// Like [`Cluster::start_with`], with a TCP [`Proxy`] in front of every member's peer
    /// port: each member advertises (and `--initial-cluster` names) its proxy's URL, so
    /// all raft traffic *to* a member passes its proxy, and [`Cluster::isolate`] can cut
    /// it. Member ids derive from the proxy URLs.
    pub fn start_with_proxies(n: usize, tweak: impl Fn(ServerOpts) -> ServerOpts) -> Cluster {
        Cluster::launch(n, true, false, tweak)
    }

    fn launch(
        n: usize,
        proxied: bool,
        peer_tls: bool,
        tweak: impl Fn(ServerOpts) -> ServerOpts,
    ) -> Cluster {
        let scheme = if peer_tls { "https" } else { "http" };
        let token = format!("cairn-test-{}", free_port());
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let proxies: Vec<Proxy> = if proxied {
            ports
                .iter()
                .map(|(_, peer)| Proxy::start(SocketAddr::from(([127, 0, 0, 1], *peer))))
                .collect()
        } else {
            Vec::new()
        };
        let peer_urls: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| match proxies.get(i) {
                Some(proxy) => proxy.url(),
                None => format!("{scheme}://127.0.0.1:{peer}"),
            })
            .collect();
        let spec = peer_urls
            .iter()
            .enumerate()
            .map(|(i, url)| format!("m{i}={url}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Server> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let mut opts = ServerOpts::new()
                    .name(&format!("m{i}"))
                    .initial_cluster_token(&token)
                    .initial_cluster(&spec)
                    .ports(*client, *peer);
                if peer_tls {
                    opts = opts.peer_https();
                }
                if proxied {
                    opts = opts.advertise_peer_url(&peer_urls[i]);
                }
                Server::launch(tweak(opts))
            })
            .collect();
        for m in &mut members {
            m.wait_ready();
        }
        let ids = if proxied {
            member_ids(&members)
        } else {
            Vec::new()
        };
        for (proxy, id) in proxies.iter().zip(&ids) {
            proxy.set_member_id(*id);
        }
        Cluster {
            members,
            proxies,
            ids,
            cuts: Mutex::default(),
            token,
        }
    }

    /// The id of member `index` (clusters started with proxies).
    pub fn member_id(&self, index: usize) -> u64 {
        self.ids[index]
    }

    /// The index of the member with id `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.ids.iter().position(|&m| m == id)
    }

    /// Cuts member `index` off from every other member in `direction`, the way `mode`
    /// says (see [`Proxy`]: a blackhole stalls the bytes of the existing connections,
    /// keeps them open and delivers what they buffered on [`Cluster::heal_cuts`]; new
    /// connections along a cut link fail). Adds to the cuts already in place.
    ///
    /// # Panics
    ///
    /// If the cluster was not started with [`Cluster::start_with_proxies`].
    pub fn cut(&self, index: usize, direction: CutDirection, mode: CutMode) {
        let me = self.proxied_id(index);
        let mut cuts = self.lock_cuts();
        for (_, &other) in self.ids.iter().enumerate().filter(|(i, _)| *i != index) {
            if matches!(direction, CutDirection::Inbound | CutDirection::Both) {
                cuts.insert((other, me), mode);
            }
            if matches!(direction, CutDirection::Outbound | CutDirection::Both) {
                cuts.insert((me, other), mode);
            }
        }
        self.install(&cuts);
    }

    /// Blackholes member `index` in both directions: a follower or leader behind a dead
    /// network, all of its peer connections open and silent.
    pub fn blackhole(&self, index: usize) {
        self.cut(index, CutDirection::Both, CutMode::Blackhole);
    }

    /// How every proxy models a blackhole's edges: held bytes delivered at the sender's
    /// next TCP retransmission after the heal instead of at once
    /// ([`Proxy::set_tcp_backoff`]); connections opened during a cut held until it heals
    /// instead of closed ([`Proxy::set_hold_new_connections`]).
    pub fn set_blackhole_model(&self, tcp_backoff: bool, hold_new_connections: bool) {
        for proxy in &self.proxies {
            proxy.set_tcp_backoff(tcp_backoff);
            proxy.set_hold_new_connections(hold_new_connections);
        }
    }

    /// Heals every [`Cluster::cut`]; blackholed connections deliver what they buffered.
    pub fn heal_cuts(&self) {
        let mut cuts = self.lock_cuts();
        cuts.clear();
        self.install(&cuts);
    }

    /// The links cut now, as (from index, to index, mode), sorted.
    pub fn cut_links(&self) -> Vec<(usize, usize, CutMode)> {
        let mut out: Vec<(usize, usize, CutMode)> = self
            .lock_cuts()
            .iter()
            .filter_map(|(&(a, b), &mode)| Some((self.index_of(a)?, self.index_of(b)?, mode)))
            .collect();
        out.sort_unstable();
        out
    }

    fn proxied_id(&self, index: usize) -> u64 {
        *self
            .ids
            .get(index)
            .expect("cuts need a cluster started with Cluster::start_with_proxies")
    }

    fn lock_cuts(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), CutMode>> {
        self.cuts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives each proxy the cut links with an end at its member.
    fn install(&self, cuts: &HashMap<(u64, u64), CutMode>) {
        for (proxy, &id) in self.proxies.iter().zip(&self.ids) {
            let mine: HashMap<(u64, u64), CutMode> = cuts
                .iter()
                .filter(|((a, b), _)| *a == id || *b == id)
                .map(|(k, v)| (*k, *v))
                .collect();
            proxy.set_cuts(&mine);
        }
    }

    /// Cuts all raft traffic *to* member `index`: its proxy kills the connections it
    /// carries and refuses new ones. This is an **inbound** cut only (asymmetric): the
    /// member still sends to the others, but hears nothing back — an isolated leader
    /// steps down by check-quorum, an isolated follower cannot win (pre-)votes. (That is
    /// cairn's direction; against etcd, whose peer streams are dialed by the receiver,
    /// see [`Proxy`].)
    ///
    /// # Panics
    ///
    /// If the cluster was not started with [`Cluster::start_with_proxies`].
    pub fn isolate(&self, index: usize) {
        self.proxy(index).isolate();
    }

    /// Lets raft traffic reach member `index` again.
    pub fn heal(&self, index: usize) {
        self.proxy(index).heal();
    }

    /// Whether member `index` is isolated ([`Cluster::isolate`]) or has a link cut.
    pub fn is_isolated(&self, index: usize) -> bool {
        let cut = self
            .ids
            .get(index)
            .is_some_and(|id| self.lock_cuts().keys().any(|(a, b)| a == id || b == id));
        cut || self.proxies.get(index).is_some_and(Proxy::is_isolated)
    }

    /// The proxy in front of member `index`'s peer port.
    pub fn proxy(&self, index: usize) -> &Proxy {
        self.proxies
            .get(index)
            .expect("isolate/heal need a cluster started with Cluster::start_with_proxies")
    }

    /// Every proxy, by member index (empty without proxies).
    pub fn proxies(&self) -> &[Proxy] {
        &self.proxies
    }

    /// The `--initial-cluster-token` shared by the members.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Client URLs of every running member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(Server::client_url)
            .collect()
    }

    /// Client URLs of every running member, comma-separated for `--endpoints`.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// `etcdctl --endpoints=<every running member> <args>`.
    pub fn etcdctl(&self, args: &[&str]) -> crate::CtlOutput {
        crate::etcdctl(&self.endpoints(), args)
    }

    /// One member's view, or `None` if it does not answer within a second.
    pub async fn view(&self, index: usize) -> Option<MemberView> {
        let m = &self.members[index];
        if !m.is_running() {
            return None;
        }
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(1));
        let mut client = etcd_client::Client::connect(m.endpoints(), Some(options))
            .await
            .ok()?;
        let st = client.status().await.ok()?;
        let header = st.header()?;
        Some(MemberView {
            id: header.member_id(),
            leader: st.leader(),
            term: st.raft_term(),
            applied: st.raft_applied_index(),
        })
    }

    /// Waits until the running members agree on one running leader, other than `not`
    /// if given; returns its index and how long it took.
    pub async fn wait_leader(&self, not: Option<usize>) -> (usize, Duration) {
        let started = Instant::now();
        let deadline = started + LEADER_DEADLINE;
        loop {
            let mut views = Vec::new();
            for i in 0..self.members.len() {
                if let Some(v) = self.view(i).await {
                    views.push((i, v));
                }
            }
            if let Some((_, first)) = views.first() {
                let agreed = first.leader != 0
                    && views
                        .iter()
                        .all(|(_, v)| v.leader == first.leader && v.term == first.term);
                let leader = views.iter().find(|(_, v)| v.id == first.leader);
                if let (true, Some((i, _))) = (agreed, leader) {
                    if Some(*i) != not {
                        return (*i, started.elapsed());
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {LEADER_DEADLINE:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until member `index` has applied at least `applied`.
    pub async fn wait_applied(&self, index: usize, applied: u64) {
        let deadline = Instant::now() + LEADER_DEADLINE;
        loop {
            if let Some(v) = self.view(index).await {
                if v.applied >= applied {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "member {index} did not apply index {applied} within {LEADER_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Each member's id from its own Status header, asked on a thread of its own (so that
/// a cluster can be started from inside an async runtime too).
fn member_ids(members: &[Server]) -> Vec<u64> {
    let endpoints: Vec<Vec<String>> = members.iter().map(Server::endpoints).collect();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut ids = Vec::new();
            for endpoint in endpoints {
                let deadline = Instant::now() + LEADER_DEADLINE;
                let id = loop {
                    let options = etcd_client::ConnectOptions::new()
                        .with_connect_timeout(Duration::from_millis(500))
                        .with_timeout(Duration::from_secs(1));
                    let status = async {
                        let mut client =
                            etcd_client::Client::connect(&endpoint, Some(options)).await?;
                        client.status().await
                    };
                    match status.await {
                        Ok(st) => break st.header().map(|h| h.member_id()),
                        Err(e) => assert!(
                            Instant::now() < deadline,
                            "no Status from {endpoint:?} within {LEADER_DEADLINE:?}: {e}"
                        ),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                ids.push(id.expect("Status has a header"));
            }
            ids
        })
    })
    .join()
    .expect("member id thread")
}

/// Connects to `endpoint` alone and watches every key from `start_revision` (the
/// watchers of the fault tests, which resume on another member after a failure).
pub async fn watch_all_from(
    endpoint: &str,
    start_revision: i64,
) -> Result<etcd_client::WatchStream, String> {
    let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
    let mut client = etcd_client::Client::connect([endpoint], Some(options))
        .await
        .map_err(|e| e.to_string())?;
    let options = etcd_client::WatchOptions::new()
        .with_all_keys()
        .with_start_revision(start_revision);
    client
        .watch("", Some(options))
        .await
        .map_err(|e| e.to_string())
}
