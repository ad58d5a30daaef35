//! One listener serves gRPC and HTTP, as etcd's client port does.

use std::future::Future;
use std::sync::Arc;

use cairn_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tonic::service::Routes;

use crate::api::{ClusterApi, KvApi, LeaseApi, MaintenanceApi, WatchApi};
use crate::authority::AuthorityFix;
use crate::grpc::{Limits, Service};

/// Errors of the client listener.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport failed.
    #[error("serving clients: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What serves each of etcd's services on the client port.
#[derive(Clone)]
pub struct ClientApis {
    /// The KV service.
    pub kv: Arc<dyn KvApi>,
    /// The Watch service.
    pub watch: Arc<dyn WatchApi>,
    /// The Lease service.
    pub lease: Arc<dyn LeaseApi>,
    /// The Cluster service.
    pub cluster: Arc<dyn ClusterApi>,
    /// The Maintenance service.
    pub maintenance: Arc<dyn MaintenanceApi>,
}

/// Builds the client-facing gRPC routes: etcd's KV, Watch, Lease, Cluster and Maintenance
/// services within `limits`, and the gRPC health service. Callers may add further
/// services (`.add_service(...)`); a service never added answers `Unimplemented`.
pub fn client_routes(apis: ClientApis, limits: Limits) -> Routes {
    macro_rules! limited {
        ($server:ident, $api:expr) => {
            $server::new(Service::new($api, limits))
                .max_decoding_message_size(limits.transport_limit())
                .max_encoding_message_size(usize::MAX)
        };
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // etcd reports the overall ("") service as serving.
    tokio::spawn(async move {
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
    });
    Routes::new(limited!(KvServer, apis.kv))
        .add_service(limited!(WatchServer, apis.watch))
        .add_service(limited!(LeaseServer, apis.lease))
        .add_service(limited!(ClusterServer, apis.cluster))
        .add_service(limited!(MaintenanceServer, apis.maintenance))
        .add_service(health_service)
}

/// Joins the gRPC routes and the HTTP endpoints into one router for the client port.
pub fn into_router(routes: Routes, http: axum::Router) -> axum::Router {
    routes.prepare().into_axum_router().merge(http)
}

/// Serves `router` (gRPC over h2c and HTTP/1.1) on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    tonic::transport::Server::builder()
        .accept_http1(true)
        .tcp_nodelay(true)
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener).map(|conn| {
                conn.map(|stream| {
                    // tonic's `tcp_nodelay` does not reach connections handed over as an
                    // incoming stream: without this, small responses behind a pending one
                    // wait for the peer's delayed ACK (Nagle, ~40 ms).
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    AuthorityFix::new(stream)
                })
            }),
            shutdown,
        )
        .await?;
    Ok(())
}
