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

pub mod apply;
pub mod config;
pub mod hooks;
pub mod ids;
pub mod lease;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_grpc_gateway::{grpc::Limits, http, serve};
use cairn_mvcc_store::{Backend, BackendBatch, KvStore};
use cairn_raft_node::{NoPeers, NodeConfig};
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
    /// Something this version does not do yet.
    #[error("{0}")]
    Unsupported(String),
}

const MEMBERS_CF: &str = "members";
const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
const MEMBER_ID_KEY: &[u8] = b"member_id";

/// Reads this member's ids from the backend, or computes and stores them for a new member.
fn member_ids(cfg: &Config, backend: &Backend) -> Result<(u64, u64, Vec<u64>), ServerError> {
    let read = |key: &[u8]| -> Result<Option<Vec<u8>>, ServerError> {
        let cf = backend.cf_handle(MEMBERS_CF).ok_or_else(|| {
            ServerError::Unsupported(format!("backend has no {MEMBERS_CF:?} column family"))
        })?;
        backend
            .db()
            .get_cf(cf, key)
            .map_err(|e| ServerError::Backend(cairn_mvcc_store::MvccError::Backend(e)))
    };
    let stored = (read(CLUSTER_ID_KEY)?, read(MEMBER_ID_KEY)?);
    if let (Some(c), Some(m)) = stored {
        if let (Ok(c), Ok(m)) = (
            <[u8; 8]>::try_from(c.as_slice()),
            <[u8; 8]>::try_from(m.as_slice()),
        ) {
            let member = u64::from_be_bytes(m);
            tracing::info!(member_id = %format!("{member:x}"), "restarting member from its data dir; --initial-cluster flags are ignored");
            return Ok((u64::from_be_bytes(c), member, vec![member]));
        }
    }
    let members = cfg.initial_members()?;
    if cfg.initial_cluster_state != "new" {
        return Err(ServerError::Unsupported(format!(
            "--initial-cluster-state={}: joining an existing cluster is not supported yet",
            cfg.initial_cluster_state
        )));
    }
    if members.len() > 1 {
        return Err(ServerError::Unsupported(
            "multi-member clusters are not supported yet: --initial-cluster must name only this member"
                .into(),
        ));
    }
    let token = &cfg.initial_cluster_token;
    let ids: Vec<u64> = members
        .iter()
        .map(|m| ids::member_id(&m.peer_urls, token))
        .collect();
    let member = ids::member_id(&cfg.advertise_peer_urls(), token);
    let cluster = ids::cluster_id(&ids);
    let mut batch = BackendBatch::default();
    batch.put_cf(MEMBERS_CF, CLUSTER_ID_KEY, cluster.to_be_bytes());
    batch.put_cf(MEMBERS_CF, MEMBER_ID_KEY, member.to_be_bytes());
    backend.write(batch)?;
    backend.sync()?;
    Ok((cluster, member, ids))
}

/// Runs a member until `shutdown` resolves (a clean stop) or a fatal error.
pub async fn run(
    cfg: Config,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServerError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let (tick, election_ticks) = cfg.raft_timing()?;
    let addrs = cfg.client_listen_addrs()?;

    let backend = Backend::open(cfg.db_dir())?;
    let store = Arc::new(KvStore::open(backend.clone())?);
    let (cluster_id, member_id, voters) = member_ids(&cfg, &backend)?;
    let lessor = Arc::new(cairn_lease_manager::Lessor::new(
        cairn_lease_manager::min_ttl(election_ticks as u64, tick),
        Arc::new(cairn_lease_manager::SystemClock),
    ));
    lessor.recover(&backend, &store)?;

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
    node_cfg.initial_voters = voters;
    node_cfg.wal_metadata = [cluster_id.to_be_bytes(), member_id.to_be_bytes()].concat();
    node_cfg.tick_interval = tick;
    node_cfg.election_ticks = election_ticks;
    node_cfg.snapshot_count = cfg.snapshot_count;
    let raft = tokio::task::block_in_place(|| {
        cairn_raft_node::start(
            node_cfg,
            Applier::new(store.clone(), hooks.clone()).with_lessor(lessor.clone()),
            NoPeers,
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
        cluster_id,
        member_id,
        limits,
        MemberInfo {
            name: cfg.name.clone(),
            peer_urls: cfg.advertise_peer_urls(),
            client_urls: cfg.advertise_client_urls(),
        },
    ));

    let versions = http::Versions {
        server: ETCD_VERSION.into(),
        cluster: "3.5.0".into(),
    };
    let http_router = http::router(server.clone(), metrics, versions);
    let routes = serve::client_routes(
        server.clone(),
        Limits::for_max_request_bytes(cfg.max_request_bytes as usize),
    );
    let routes = routes.add_service(cairn_grpc_gateway::lease::lease_server(
        Arc::new(lease::LeaseFrontend::new(server.clone(), lessor.clone())),
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
                metrics::gauge!("etcd_mvcc_db_total_size_in_bytes")
                    .set(backend.size_bytes() as f64);
                metrics::gauge!("etcd_mvcc_db_total_size_in_use_in_bytes")
                    .set(backend.size_in_use_bytes() as f64);
            }
        }
    });

    let mut status = raft.subscribe_status();
    let outcome = tokio::select! {
        _ = shutdown => {
            tracing::info!("received a stop signal; shutting down");
            Ok(())
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
    let _ = stop_tx.send(true);
    gauges.abort();
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
