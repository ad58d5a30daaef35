//! The cairn server: an etcd-compatible member, assembled from the workspace's parts. It
//! reads etcd's configuration ([`config`]), opens the backend and the raft log
//! (bootstrapping a new member, joining a running cluster or restarting from its data
//! dir), applies the committed log to the key space, leases, membership and alarms
//! ([`apply`]), serves etcd's client API through [`cairn_grpc_gateway`] from a
//! [`member::Member`] (which answers reads locally and proposes writes through
//! [`cairn_raft_node`]), and talks to its peers. Errors reach clients with etcd's codes
//! and messages; metrics carry etcd's names ([`metrics`]). The `cairn` binary is a thin
//! shell around [`run`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), cairn_server::ServerError> {
//! let cfg = cairn_server::config::Config::default(); // etcd's defaults: localhost:2379
//! cairn_server::run(cfg, None, std::future::pending()).await
//! # }
//! ```
#![deny(missing_docs)]

pub mod alarms;
pub mod apply;
mod auth;
mod auth_state;
mod authz;
mod auto_compact;
mod bootstrap;
mod client_error;
mod cluster;
pub mod config;
mod discovery;
mod error;
pub mod etcd_snapshot;
#[cfg(feature = "failpoints")]
pub mod failpoints;
mod health;
pub mod hooks;
pub mod ids;
mod join;
mod lease;
mod maintenance;
pub mod member;
pub mod members;
pub mod metrics;
mod peer_tls;
mod quota;
mod reconfig;
mod restore;
mod snapshot_file;

pub use error::ServerError;
pub use restore::restore_snapshot;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_grpc_gateway::api::{AuthApi, ClusterApi, KvApi, LeaseApi, MaintenanceApi, WatchApi};
use cairn_grpc_gateway::serve::{self, ClientApis};
use cairn_grpc_gateway::tls::ReloadingConfig;
use cairn_grpc_gateway::{grpc::Limits, http};
use cairn_raft_node::{NodeConfig, PeerService, PeerTransport, RaftHandle};
use cairn_watch_server::{WatchConfig, WatchHub};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::apply::{Applied, Applier};
use crate::bootstrap::LocalState;
use crate::config::Config;
use crate::health::MemberHealth;
use crate::hooks::{MemberHooks, MemberWatch, WatchHeaders};
use crate::member::{Member, MemberInfo, RequestLimits, ETCD_CLUSTER_VERSION, ETCD_VERSION};

/// Runs a member until `shutdown` resolves (a clean stop) or a fatal error.
pub async fn run(
    cfg: Config,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    crate::metrics::describe();
    crate::metrics::record_versions(ETCD_VERSION, env!("CARGO_PKG_VERSION"));
    let mut cfg = cfg;
    if !cfg.discovery_proxy.is_empty() || !cfg.discovery_srv.is_empty() {
        return Err(ServerError::Unsupported(
            "--discovery-proxy and --discovery-srv are not supported; use --discovery or --initial-cluster".into(),
        ));
    }
    discovery::resolve(&mut cfg).await?;
    let (tick, election_ticks) = cfg.raft_timing()?;
    let auto_compaction = cfg.auto_compaction()?;
    for (gate, value) in cfg.feature_gates()? {
        let effect = config::FEATURE_GATES
            .iter()
            .find(|(name, _)| *name == gate)
            .map_or("no effect in cairn", |(_, effect)| *effect);
        tracing::warn!(gate, value, effect, "feature gate accepted");
    }
    ::metrics::gauge!(crate::metrics::QUOTA_BACKEND_BYTES).set(cfg.quota_backend_bytes() as f64);
    let client_addrs = cfg.client_listen_addrs()?;
    let client_tls = match cfg.client_tls()? {
        Some(files) => Some(Arc::new(ReloadingConfig::new(files)?)),
        None => None,
    };
    let min_lease_ttl = cairn_lease_manager::min_ttl(election_ticks as u64, tick);
    let local = LocalState::open(&cfg, min_lease_ttl).await?;
    crate::metrics::record_member_id(local.identity.member_id);
    let peer_listeners = bind(cfg.peer_listen_addrs()?).await?;
    let watchers = Watchers::new(&cfg, &local)?;
    let (removed_tx, mut removed_rx) = watch::channel(false);
    let raft = start_raft(&cfg, &local, &watchers, removed_tx, tick, election_ticks)?;
    watchers.start(&raft)?;
    let member = Arc::new(
        Member::new(
            local.store.clone(),
            local.backend.clone(),
            raft.clone(),
            request_limits(&cfg),
            member_info(&cfg, &local),
            local.membership.clone(),
        )
        .with_leader_tls(peer_tls::leader_client_config(&cfg)?),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = JoinSet::new();
    // The peer surface stops after the raft node (whose traffic it carries while the
    // client surfaces drain), on its own signal: its streams from the other members
    // never end by themselves.
    let (peer_stop_tx, peer_stop_rx) = watch::channel(false);
    let mut peer_servers = JoinSet::new();
    let peers = peer_router(&cfg, &local, &raft);
    let peer_surface = match cfg.peer_tls()? {
        Some(files) => Surface::PeersTls(Arc::new(
            ReloadingConfig::new(files).map_err(ServerError::PeerTls)?,
        )),
        None => Surface::Peers,
    };
    serve_on(
        &mut peer_servers,
        peer_listeners,
        peers,
        &peer_stop_rx,
        peer_surface,
    );
    let metrics_listeners = bind(cfg.metrics_listen_addrs()?).await?;
    serve_on(
        &mut servers,
        metrics_listeners,
        http::router(
            Arc::new(MemberHealth::new(member.clone(), local.alarms.clone())),
            metrics.clone(),
            versions(),
        ),
        &stop_rx,
        Surface::Metrics,
    );
    let clients = client_router(&cfg, &member, &local, watchers.hub, metrics);
    let (tls_addrs, plain_addrs): (Vec<_>, Vec<_>) =
        client_addrs.into_iter().partition(|(_, tls)| *tls);
    let plain_listeners = bind(plain_addrs.into_iter().map(|(a, _)| a).collect()).await?;
    serve_on(
        &mut servers,
        plain_listeners,
        clients.clone(),
        &stop_rx,
        Surface::Clients,
    );
    if let Some(tls) = &client_tls {
        let tls_listeners = bind(tls_addrs.into_iter().map(|(a, _)| a).collect()).await?;
        serve_on(
            &mut servers,
            tls_listeners,
            clients,
            &stop_rx,
            Surface::ClientsTls(tls.clone()),
        );
    }
    let mut background = vec![
        tokio::spawn(member::publish_attributes(member.clone())),
        lease::spawn_expiry_loop(
            member.clone(),
            local.lessor.clone(),
            tick * election_ticks as u32,
        ),
        spawn_size_gauges(&local),
        auth::spawn_token_sweeper(local.auth.clone()),
        quota::spawn_nospace_clearer(
            member.clone(),
            local.alarms.clone(),
            cfg.quota_backend_bytes(),
        ),
    ];
    if let Some(mode) = auto_compaction {
        background.push(auto_compact::spawn(member.clone(), mode));
    }

    let mut status = raft.subscribe_status();
    let outcome = tokio::select! {
        _ = shutdown => {
            tracing::info!("received a stop signal; shutting down");
            Ok(())
        }
        _ = removed_rx.wait_for(|r| *r) => {
            Err(ServerError::Fatal("the member has been permanently removed from the cluster".into()))
        }
        r = status.wait_for(|s| s.stopped) => {
            let why = r.ok().and_then(|s| s.fatal.clone()).unwrap_or_else(|| "stopped".into());
            Err(ServerError::Fatal(why))
        }
        Some(r) = servers.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(ServerError::Fatal(format!("client listener task: {e}"))),
        },
        Some(r) = peer_servers.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(ServerError::Fatal(format!("peer listener task: {e}"))),
        },
    };
    let removed = *removed_rx.borrow();
    let stops = Stops {
        clients: stop_tx,
        servers,
        peers: peer_stop_tx,
        peer_servers,
    };
    shut_down(&local, &raft, removed, stops, background).await;
    outcome
}

/// The watchers of a member: the hub exists before the raft node, so that it sees the
/// first applied entry; its headers learn the raft term once the node runs.
struct Watchers {
    hub: Arc<WatchHub>,
    headers: Arc<WatchHeaders>,
}

impl Watchers {
    fn new(cfg: &Config, local: &LocalState) -> Result<Self, ServerError> {
        let id = &local.identity;
        let headers = Arc::new(WatchHeaders::new(id.cluster_id, id.member_id));
        let config = WatchConfig {
            max_response_bytes: cfg.max_request_bytes as usize,
            progress_notify_interval: cfg.watch_progress_notify_interval()?,
            ..Default::default()
        };
        let hub = WatchHub::new(local.store.clone(), config, headers.clone());
        Ok(Watchers { hub, headers })
    }

    fn start(&self, raft: &RaftHandle<Applied>) -> Result<(), ServerError> {
        self.headers.set_status(raft.subscribe_status());
        self.hub
            .start_background()
            .map(drop)
            .map_err(|e| ServerError::Fatal(format!("starting the watch catch-up thread: {e}")))
    }
}

fn snapshot_dir(cfg: &Config) -> PathBuf {
    cfg.data_dir().join("member").join("snap")
}

/// Starts the raft node over the member's log, applying to its local state; `removed` is
/// set when the log removes this member.
fn start_raft(
    cfg: &Config,
    local: &LocalState,
    watchers: &Watchers,
    removed: watch::Sender<bool>,
    tick: Duration,
    election_ticks: usize,
) -> Result<RaftHandle<Applied>, ServerError> {
    let id = &local.identity;
    let mut node_cfg = NodeConfig::new(id.member_id, cfg.wal_dir());
    node_cfg.initial_members = id.initial.clone();
    node_cfg.wal_metadata = [id.cluster_id.to_be_bytes(), id.member_id.to_be_bytes()].concat();
    node_cfg.tick_interval = tick;
    node_cfg.election_ticks = election_ticks;
    node_cfg.snapshot_count = cfg.snapshot_count;
    node_cfg.snapshot_catchup_entries = cfg.experimental_snapshot_catchup_entries;
    node_cfg.initial_election_tick_advance = cfg.initial_election_tick_advance;
    // A forwarded proposal older than an election timeout was stuck in the network.
    node_cfg.max_forward_delay = (tick * election_ticks as u32).max(Duration::from_secs(1));
    let hooks = Arc::new(MemberHooks::new(Some(watchers.hub.clone())));
    let applier = Applier::new(local.store.clone(), hooks)
        .with_lessor(local.lessor.clone())
        .with_members(local.membership.clone(), removed)
        .with_alarms(local.alarms.clone())
        .with_auth(local.auth.clone())
        .with_snapshots(snapshot_dir(cfg));
    let mut transport = PeerTransport::new(
        id.cluster_id,
        id.member_id,
        tokio::runtime::Handle::current(),
        local.peer_urls.clone(),
    );
    if let Some(tls) = peer_tls::client_config(cfg)? {
        transport = transport.with_tls(tls);
    }
    let raft =
        tokio::task::block_in_place(|| cairn_raft_node::start(node_cfg, applier, transport))?;
    Ok(raft)
}

fn request_limits(cfg: &Config) -> RequestLimits {
    RequestLimits {
        max_request_bytes: cfg.max_request_bytes as usize,
        max_txn_ops: cfg.max_txn_ops as usize,
        request_timeout: cfg.request_timeout(),
        max_learners: cfg.max_learners,
    }
}

fn member_info(cfg: &Config, local: &LocalState) -> MemberInfo {
    MemberInfo {
        cluster_id: local.identity.cluster_id,
        member_id: local.identity.member_id,
        name: cfg.name.clone(),
        peer_urls: cfg.advertise_peer_urls(),
        client_urls: cfg.advertise_client_urls(),
    }
}

/// The versions `/version` reports.
fn versions() -> http::Versions {
    http::Versions {
        server: ETCD_VERSION.into(),
        cluster: ETCD_CLUSTER_VERSION.into(),
    }
}

/// The client port: etcd's gRPC services (writes behind the backend quota) and the HTTP
/// endpoints.
fn client_router(
    cfg: &Config,
    member: &Arc<Member>,
    local: &LocalState,
    watch_hub: Arc<WatchHub>,
    metrics: Option<PrometheusHandle>,
) -> axum::Router {
    let health = Arc::new(MemberHealth::new(member.clone(), local.alarms.clone()));
    let http_router = http::router(health, metrics, versions());
    #[cfg(feature = "failpoints")]
    let http_router = if failpoints::enabled() {
        tracing::warn!(
            "fail points can be configured on /debug/failpoints (CAIRN_FAILPOINTS_HTTP=1)"
        );
        http_router.merge(failpoints::router())
    } else {
        http_router
    };
    let quota = quota::Quota::new(member.clone(), cfg.quota_backend_bytes());
    let kv: Arc<dyn KvApi> = Arc::new(quota::QuotaKv(quota.clone()));
    let watch: Arc<dyn WatchApi> = Arc::new(MemberWatch(watch_hub));
    let lease: Arc<dyn LeaseApi> =
        Arc::new(lease::LeaseService::new(member.clone(), local.lessor.clone()).with_quota(quota));
    let cluster: Arc<dyn ClusterApi> = member.clone();
    let maintenance: Arc<dyn MaintenanceApi> = Arc::new(maintenance::Maintenance::new(
        member.clone(),
        local.alarms.clone(),
        snapshot_dir(cfg),
        cfg.quota_backend_bytes(),
    ));
    let auth: Arc<dyn AuthApi> =
        Arc::new(auth::AuthService::new(member.clone(), local.auth.clone()));
    // Every service behind the permission checks (authz.rs).
    let guard = authz::Guard::new(local.auth.clone(), member.clone(), local.lessor.clone());
    let apis = ClientApis {
        kv: guard.wrap(kv),
        watch: guard.wrap(watch),
        lease: guard.wrap(lease),
        cluster: guard.wrap(cluster),
        maintenance: guard.wrap(maintenance),
        auth: guard.wrap(auth),
    };
    let limits = Limits::for_max_request_bytes(cfg.max_request_bytes as usize);
    let http_router = http_router.merge(cairn_grpc_gateway::json::router(&apis, limits));
    // etcd 3.4 serves the v2 API only when asked, and answers 404 on /v2/ otherwise.
    let http_router = if cfg.enable_v2 {
        http_router.merge(cairn_grpc_gateway::v2::router(&apis, &cfg.name))
    } else {
        http_router
    };
    serve::into_router(serve::client_routes(apis, limits), http_router)
}

/// The peer port: raft traffic and what joining members ask.
fn peer_router(cfg: &Config, local: &LocalState, raft: &RaftHandle<Applied>) -> axum::Router {
    let id = &local.identity;
    let raft_service =
        PeerService::new(raft.clone(), id.cluster_id, id.member_id, snapshot_dir(cfg));
    let routes = tonic::service::Routes::new(raft_service.into_server()).add_service(
        join::ClusterInfo::server(id.cluster_id, local.membership.clone()),
    );
    serve::into_router(routes, axum::Router::new())
}

async fn bind(addrs: Vec<SocketAddr>) -> Result<Vec<TcpListener>, ServerError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen { addr, source })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Serves `router` on every listener until `stop` turns true.
/// What a listener serves.
#[derive(Clone)]
enum Surface {
    /// Clients: etcd's gRPC and HTTP, behind the `:authority` fix etcdctl 3.4 needs.
    Clients,
    /// Clients over TLS.
    ClientsTls(Arc<ReloadingConfig>),
    /// Other members: raft traffic only, nothing rewritten.
    Peers,
    /// Other members over TLS.
    PeersTls(Arc<ReloadingConfig>),
    /// --listen-metrics-urls: /metrics and the health endpoints only.
    Metrics,
}

fn serve_on(
    servers: &mut JoinSet<Result<(), serve::ServeError>>,
    listeners: Vec<TcpListener>,
    router: axum::Router,
    stop: &watch::Receiver<bool>,
    surface: Surface,
) {
    for listener in listeners {
        let mut stop = stop.clone();
        let router = router.clone();
        let addr = listener.local_addr().ok();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match surface.clone() {
            Surface::ClientsTls(tls) => {
                servers.spawn(serve::serve_tls(listener, router, tls, stopped));
                tracing::info!(?addr, "ready to serve client requests over TLS");
            }
            Surface::Clients => {
                servers.spawn(serve::serve(listener, router, stopped));
                tracing::info!(?addr, "ready to serve client requests");
            }
            Surface::Peers => {
                servers.spawn(serve::serve_peers(listener, router, stopped));
                tracing::info!(?addr, "ready to serve peer traffic");
            }
            Surface::PeersTls(tls) => {
                servers.spawn(serve::serve_peers_tls(listener, router, tls, stopped));
                tracing::info!(?addr, "ready to serve peer traffic over TLS");
            }
            Surface::Metrics => {
                servers.spawn(serve::serve_peers(listener, router, stopped));
                tracing::info!(?addr, "ready to serve /metrics and health checks");
            }
        }
    }
}

/// Keeps the backend size gauges and the process gauges (`process_resident_memory_bytes`,
/// CPU seconds, open file descriptors, as Prometheus's Go client exports them for etcd)
/// current, every second.
fn spawn_size_gauges(local: &LocalState) -> JoinHandle<()> {
    let backend = local.backend.clone();
    let process = metrics_process::Collector::default();
    process.describe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = cairn_mvcc_store::metrics::record_backend_size(&backend) {
                tracing::warn!(error = %e, "reading the backend size");
            }
            process.collect();
            crate::metrics::record_fds();
        }
    })
}

/// How long a stopping leader waits for one follower to take over before it tries the
/// next (one it cannot reach, e.g. just after start, never does).
const HAND_OVER_TIMEOUT: Duration = Duration::from_millis(1000);

/// A leader that stops hands its leadership to a follower first, as etcd does: until
/// it exits, it would otherwise still be the leader the others follow (and forward
/// proposals to) while it no longer serves, and they would elect another only an
/// election timeout after it is gone.
async fn hand_over_leadership(raft: &RaftHandle<Applied>) {
    let now = raft.status();
    if now.role != cairn_raft_node::Role::Leader {
        return;
    }
    let me = now.id;
    let mut status = raft.subscribe_status();
    // The followers it hears from first (a stopped one never takes over), then the rest.
    let mut targets = now.active_voters.clone();
    targets.extend(
        now.voters
            .iter()
            .filter(|&&v| v != me && !now.active_voters.contains(&v)),
    );
    for target in targets {
        if raft.transfer_leader(target).is_err() {
            return;
        }
        let handed = tokio::time::timeout(
            HAND_OVER_TIMEOUT,
            status.wait_for(|s| (s.leader_id != me && s.leader_id != 0) || s.stopped),
        )
        .await;
        match handed {
            Ok(Ok(s)) if !s.stopped => {
                tracing::info!(
                    to = %format!("{:x}", s.leader_id),
                    "leadership handed over before stopping"
                );
                return;
            }
            Ok(_) => return,
            Err(_) => tracing::warn!(
                to = %format!("{target:x}"),
                "a follower did not take over the leadership in time"
            ),
        }
    }
    tracing::warn!("leadership not handed over before stopping; the others will elect a leader");
}

/// Stops serving (in-flight requests get a moment), then the raft node, and syncs the
/// backend. A removed member's raft node stops first, at once, so that the others elect a
/// leader without it while requests drain.
/// What stops the surfaces: the client and metrics surfaces, then the peer surface.
struct Stops {
    clients: watch::Sender<bool>,
    servers: JoinSet<Result<(), serve::ServeError>>,
    peers: watch::Sender<bool>,
    peer_servers: JoinSet<Result<(), serve::ServeError>>,
}

async fn shut_down(
    local: &LocalState,
    raft: &RaftHandle<Applied>,
    removed: bool,
    stops: Stops,
    background: Vec<JoinHandle<()>>,
) {
    let Stops {
        clients: stop,
        mut servers,
        peers: stop_peers,
        mut peer_servers,
    } = stops;
    let stop_raft = || {
        let raft = raft.clone();
        tokio::task::spawn_blocking(move || raft.shutdown())
    };
    if removed {
        let _ = stop_raft().await;
    } else {
        hand_over_leadership(raft).await;
    }
    let _ = stop.send(true);
    for task in background {
        task.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    let _ = stop_raft().await;
    let _ = stop_peers.send(true);
    peer_servers.abort_all();
    while peer_servers.join_next().await.is_some() {}
    if let Err(e) = local.backend.sync() {
        tracing::warn!(error = %e, "syncing the backend at shutdown");
    }
}
