//! The cairn server: joins the parts. It reads etcd's configuration, opens the backend and
//! the raft log (bootstrapping a new member or restarting from its data dir), runs the
//! apply loop, and serves clients through [`cairn_grpc_gateway`].
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
mod cluster;
pub mod config;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod hooks;
pub mod ids;
mod join;
pub mod lease;
mod maintenance;
pub mod members;
pub mod server;

pub use maintenance::restore_snapshot;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_grpc_gateway::{grpc::Limits, http, serve};
use cairn_mvcc_store::{Backend, BackendBatch, KvStore};
use cairn_raft_node::{NodeConfig, PeerService, PeerTransport, PeerUrls};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::apply::{Applier, ApplyHooks};
use crate::config::{Config, ConfigError};
use crate::server::{EtcdServer, MemberInfo, RequestLimits, ETCD_VERSION};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory cannot be used.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The backend failed.
    #[error("backend: {0}")]
    Backend(#[from] cairn_mvcc_store::MvccError),
    /// The raft log failed.
    #[error("raft log: {0}")]
    Raft(#[from] cairn_raft_node::StorageError),
    /// A client URL cannot be listened on.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Serving clients failed.
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    /// The raft node stopped on a fatal error.
    #[error("raft node failed: {0}")]
    Fatal(String),
    /// The lease table cannot be rebuilt.
    #[error("leases: {0}")]
    Lease(#[from] cairn_lease_manager::LeaseError),
    /// A snapshot file cannot be read.
    #[error("snapshot {path}: {source}")]
    Snapshot {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Something this version does not do yet.
    #[error("{0}")]
    Unsupported(String),
}

use cairn_mvcc_store::backend::{CF_MEMBERS as MEMBERS_CF, MEMBER_ID_KEY};
use members::CLUSTER_ID_KEY;

/// Who this member is and, for a member without a log yet, the log's initial members.
struct Identity {
    cluster_id: u64,
    member_id: u64,
    initial: Vec<cairn_raft_node::InitialMember>,
    /// The members a joining member learnt of (its log will tell it again).
    known: Vec<cairn_proto::etcdserverpb::Member>,
}

fn read_local(backend: &Backend, key: &[u8]) -> Result<Option<u64>, ServerError> {
    let value = backend.get(MEMBERS_CF, key)?;
    Ok(value
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes))
}

/// Reads this member's ids from its data dir, or works them out for a new member: from
/// `--initial-cluster` for a new cluster, from the running members for an existing one.
async fn identity(cfg: &Config, backend: &Backend) -> Result<Identity, ServerError> {
    let stored = (
        read_local(backend, CLUSTER_ID_KEY)?,
        read_local(backend, MEMBER_ID_KEY)?,
    );
    if let (Some(cluster_id), Some(member_id)) = stored {
        if cairn_raft_node::LogStore::exists(&cfg.wal_dir()) {
            tracing::info!(member_id = %format!("{member_id:x}"), "restarting member from its data dir; --initial-cluster flags are ignored");
            return Ok(Identity {
                cluster_id,
                member_id,
                initial: Vec::new(),
                known: Vec::new(),
            });
        }
    }
    let members = cfg.initial_members()?;
    let token = &cfg.initial_cluster_token;
    let identity = match cfg.initial_cluster_state.as_str() {
        "new" => {
            let ids: Vec<u64> = members
                .iter()
                .map(|m| ids::member_id(&m.peer_urls, token))
                .collect();
            let initial = members
                .iter()
                .zip(&ids)
                .map(|(m, id)| cairn_raft_node::InitialMember {
                    id: *id,
                    context: members::change_context(&cairn_proto::etcdserverpb::Member {
                        id: *id,
                        name: m.name.clone(),
                        peer_ur_ls: m.peer_urls.clone(),
                        client_ur_ls: Vec::new(),
                        is_learner: false,
                    }),
                })
                .collect();
            Identity {
                cluster_id: ids::cluster_id(&ids),
                member_id: ids::member_id(&cfg.advertise_peer_urls(), token),
                initial,
                known: Vec::new(),
            }
        }
        "existing" => join::existing_cluster(cfg, &members).await?,
        other => {
            return Err(ServerError::Config(ConfigError::Invalid(format!(
                "unexpected --initial-cluster-state {other:?} (want \"new\" or \"existing\")"
            ))))
        }
    };
    let mut batch = BackendBatch::default();
    batch.put_cf(
        MEMBERS_CF,
        CLUSTER_ID_KEY,
        identity.cluster_id.to_be_bytes(),
    );
    batch.put_cf(MEMBERS_CF, MEMBER_ID_KEY, identity.member_id.to_be_bytes());
    backend.write(batch)?;
    backend.sync()?;
    Ok(identity)
}

/// Runs a member until `shutdown` resolves (a clean stop) or a fatal error.
pub async fn run(
    cfg: Config,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    cairn_mvcc_store::metrics::describe();
    cairn_lease_manager::metrics::describe();
    cairn_watch_server::metrics::describe();
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServerError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let (tick, election_ticks) = cfg.raft_timing()?;
    let addrs = cfg.client_listen_addrs()?;

    let backend = Backend::open(cfg.db_dir())?;
    let store = Arc::new(KvStore::open(backend.clone())?);
    let Identity {
        cluster_id,
        member_id,
        initial,
        known,
    } = identity(&cfg, &backend).await?;
    let peer_urls = PeerUrls::default();
    for m in known.iter().filter(|m| m.id != member_id) {
        peer_urls.set(m.id, m.peer_ur_ls.clone());
    }
    let membership = members::Membership::load(&backend, member_id, peer_urls.clone())?;
    let (removed_tx, mut removed_rx) = tokio::sync::watch::channel(false);
    let mut peer_listeners = Vec::new();
    for addr in cfg.peer_listen_addrs()? {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen { addr, source })?;
        peer_listeners.push(listener);
    }
    let lessor = Arc::new(cairn_lease_manager::Lessor::new(
        cairn_lease_manager::min_ttl(election_ticks as u64, tick),
        Arc::new(cairn_lease_manager::SystemClock),
    ));
    lessor.recover(store.as_ref())?;
    let alarms = Arc::new(alarms::Alarms::load(&backend)?);

    let watch_headers = Arc::new(hooks::WatchHeaders::new(cluster_id, member_id));
    let watch_config = cairn_watch_server::WatchConfig {
        max_response_bytes: cfg.max_request_bytes as usize,
        progress_notify_interval: cfg.watch_progress_notify_interval()?,
        ..Default::default()
    };
    let watch_hub =
        cairn_watch_server::WatchHub::new(store.clone(), watch_config, watch_headers.clone());
    let hooks: Arc<dyn ApplyHooks> = Arc::new(hooks::MemberHooks::new(Some(watch_hub.clone())));
    let mut node_cfg = NodeConfig::new(member_id, cfg.wal_dir());
    node_cfg.initial_members = initial;
    node_cfg.wal_metadata = [cluster_id.to_be_bytes(), member_id.to_be_bytes()].concat();
    node_cfg.tick_interval = tick;
    node_cfg.election_ticks = election_ticks;
    node_cfg.snapshot_count = cfg.snapshot_count;
    node_cfg.snapshot_catchup_entries = cfg.experimental_snapshot_catchup_entries;
    node_cfg.initial_election_tick_advance = cfg.initial_election_tick_advance;
    let raft = tokio::task::block_in_place(|| {
        cairn_raft_node::start(
            node_cfg,
            Applier::new(store.clone(), hooks.clone())
                .with_lessor(lessor.clone())
                .with_members(membership.clone(), removed_tx)
                .with_alarms(alarms.clone())
                .with_snapshots(data_dir.join("member").join("snap")),
            PeerTransport::new(
                cluster_id,
                member_id,
                tokio::runtime::Handle::current(),
                peer_urls,
            ),
        )
    })?;

    watch_headers.set_status(raft.subscribe_status());
    watch_hub
        .start_background()
        .map_err(|e| ServerError::Fatal(format!("starting the watch catch-up thread: {e}")))?;

    let limits = RequestLimits {
        max_request_bytes: cfg.max_request_bytes as usize,
        max_txn_ops: cfg.max_txn_ops as usize,
        request_timeout: cfg.request_timeout(),
    };
    let server = Arc::new(EtcdServer::new(
        store.clone(),
        backend.clone(),
        raft.clone(),
        limits,
        MemberInfo {
            cluster_id,
            member_id,
            name: cfg.name.clone(),
            peer_urls: cfg.advertise_peer_urls(),
            client_urls: cfg.advertise_client_urls(),
        },
        membership.clone(),
    ));

    let versions = http::Versions {
        server: ETCD_VERSION.into(),
        cluster: "3.5.0".into(),
    };
    let http_router = http::router(server.clone(), metrics, versions);
    #[cfg(feature = "failpoints")]
    let http_router = if failpoints::enabled() {
        tracing::warn!(
            "fail points can be configured on /debug/failpoints (CAIRN_FAILPOINTS_HTTP=1)"
        );
        http_router.merge(failpoints::router())
    } else {
        http_router
    };
    let frontend = Arc::new(maintenance::Frontend::new(
        server.clone(),
        alarms,
        cfg.quota_backend_bytes(),
        data_dir.join("member").join("snap"),
    ));
    let quota = frontend.quota();
    let routes = serve::client_routes(
        frontend,
        Limits::for_max_request_bytes(cfg.max_request_bytes as usize),
    );
    let routes = routes.add_service(cairn_grpc_gateway::lease::lease_server(
        Arc::new(lease::LeaseFrontend::new(server.clone(), lessor.clone()).with_quota(quota)),
        Limits::for_max_request_bytes(cfg.max_request_bytes as usize),
    ));
    let routes = routes.add_service(cairn_grpc_gateway::watch::watch_server(
        Arc::new(hooks::MemberWatch(watch_hub)),
        Limits::for_max_request_bytes(cfg.max_request_bytes as usize),
    ));
    let router = serve::into_router(routes, http_router);
    let lease_expiry =
        lease::spawn_expiry_loop(server.clone(), lessor, tick * election_ticks as u32);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let peer_router = serve::into_router(
        tonic::service::Routes::new(
            PeerService::new(
                raft.clone(),
                cluster_id,
                member_id,
                data_dir.join("member").join("snap"),
            )
            .into_server(),
        )
        .add_service(join::ClusterInfo::server(cluster_id, membership.clone())),
        axum::Router::new(),
    );
    for listener in peer_listeners {
        let mut stop = stop_rx.clone();
        let router = peer_router.clone();
        let addr = listener.local_addr().ok();
        servers.spawn(async move {
            serve::serve(listener, router, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        });
        tracing::info!(?addr, "ready to serve peer traffic");
    }
    let publisher = tokio::spawn(server::publish_attributes(server.clone()));
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen { addr, source })?;
        let mut stop = stop_rx.clone();
        let router = router.clone();
        servers.spawn(async move {
            serve::serve(listener, router, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        });
        tracing::info!(%addr, "ready to serve client requests");
    }

    let gauges = tokio::spawn({
        let backend = backend.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Err(e) = cairn_mvcc_store::metrics::record_backend_size(&backend) {
                    tracing::warn!(error = %e, "reading the backend size");
                }
            }
        }
    });

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
    };
    if *removed_rx.borrow() {
        // A removed member must not keep leading or voting while requests drain: its
        // raft node stops at once so that the others elect a leader without it.
        let raft_for_stop = raft.clone();
        let _ = tokio::task::spawn_blocking(move || raft_for_stop.shutdown()).await;
    }
    let _ = stop_tx.send(true);
    gauges.abort();
    publisher.abort();
    lease_expiry.abort();
    // Bounded: in-flight requests get a moment to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    let raft_for_stop = raft.clone();
    let _ = tokio::task::spawn_blocking(move || raft_for_stop.shutdown()).await;
    if let Err(e) = backend.sync() {
        tracing::warn!(error = %e, "syncing the backend at shutdown");
    }
    outcome
}
