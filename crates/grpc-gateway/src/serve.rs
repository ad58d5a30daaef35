//! One listener serves gRPC and HTTP, as etcd's client port does.

use std::future::Future;
use std::sync::Arc;

use cairn_proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::service::Routes;
use tonic::transport::server::Connected;

use crate::api::{AuthApi, ClusterApi, KvApi, LeaseApi, MaintenanceApi, WatchApi};
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;

use crate::authority::AuthorityFix;
use crate::credentials::{PeerCommonName, TlsConnectInfo};
use crate::grpc::{Limits, Service};
use crate::recipes::Recipes;
use crate::tls::ReloadingConfig;

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
    /// The Auth service.
    pub auth: Arc<dyn AuthApi>,
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
    let recipes = Recipes::new(apis.kv.clone(), apis.watch.clone());
    Routes::new(limited!(KvServer, apis.kv))
        .add_service(limited!(WatchServer, apis.watch))
        .add_service(
            LockServer::new(recipes.clone()).max_decoding_message_size(limits.transport_limit()),
        )
        .add_service(
            ElectionServer::new(recipes).max_decoding_message_size(limits.transport_limit()),
        )
        .add_service(limited!(LeaseServer, apis.lease))
        .add_service(limited!(ClusterServer, apis.cluster))
        .add_service(limited!(MaintenanceServer, apis.maintenance))
        .add_service(limited!(AuthServer, apis.auth))
        .add_service(health_service)
}

/// Joins the gRPC routes and the HTTP endpoints into one router for the client port;
/// every request is served with its [`credentials`](crate::credentials). A path nothing
/// serves answers a gRPC request `Unimplemented` and any other `404 page not found`,
/// as etcd does.
pub fn into_router(routes: Routes, http: axum::Router) -> axum::Router {
    routes
        .prepare()
        .into_axum_router()
        .merge(http)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(crate::credentials::layer))
}

/// The answer to a path no route serves.
async fn not_found(request: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http();
    }
    (
        http::StatusCode::NOT_FOUND,
        [
            (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "404 page not found\n",
    )
        .into_response()
}

/// Serves `router` (gRPC over h2c and HTTP/1.1) to clients on `listener` until `shutdown`
/// resolves. Every connection goes through [`AuthorityFix`], for the etcd clients that
/// send a URL as the HTTP/2 `:authority`.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let incoming = TcpListenerStream::new(listener).map(|conn| conn.map(AuthorityFix::new));
    serve_incoming(incoming, router, shutdown).await
}

/// Serves `router` to other members on `listener` until `shutdown` resolves. Members are
/// cairn processes that send a valid `:authority`, so their bytes reach the HTTP/2 server
/// untouched: no header block of theirs is decoded twice.
pub async fn serve_peers(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_incoming(TcpListenerStream::new(listener), router, shutdown).await
}

/// Serves `router` to clients over TLS on `listener` until `shutdown` resolves: each
/// connection's handshake (with the configuration [`ReloadingConfig::config`] gives at
/// that moment) runs on its own task, then the connection is served as [`serve`] serves
/// one (the `:authority` fix included).
pub async fn serve_tls(
    listener: TcpListener,
    router: axum::Router,
    tls: Arc<ReloadingConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_tls_with(listener, router, tls, true, shutdown).await
}

/// Serves `router` to other members over TLS on `listener` (as [`serve_peers`], after
/// each connection's handshake).
pub async fn serve_peers_tls(
    listener: TcpListener,
    router: axum::Router,
    tls: Arc<ReloadingConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_tls_with(listener, router, tls, false, shutdown).await
}

async fn serve_tls_with(
    listener: TcpListener,
    router: axum::Router,
    tls: Arc<ReloadingConfig>,
    fix_authority: bool,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let conn = if fix_authority {
                            AuthorityFix::new(TlsConn(stream))
                        } else {
                            AuthorityFix::passthrough(TlsConn(stream))
                        };
                        let _ = tx.send(Ok::<_, std::io::Error>(conn)).await;
                    }
                    Err(e) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                }
            });
        }
    });
    let served = serve_incoming(ReceiverStream::new(rx), router, shutdown).await;
    accept.abort();
    served
}

/// A client connection after its TLS handshake.
struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connected for AuthorityFix<TlsConn> {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let (tcp, session) = self.get_ref().0.get_ref();
        TlsConnectInfo {
            tcp: tcp.connect_info(),
            common_name: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::tls::common_name(cert))
                .map(PeerCommonName),
        }
    }
}

impl NoDelay for AuthorityFix<TlsConn> {
    fn set_nodelay(&self) -> std::io::Result<()> {
        // Set on the TCP socket before the handshake.
        Ok(())
    }
}

async fn serve_incoming<IO>(
    incoming: impl Stream<Item = std::io::Result<IO>> + Send,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError>
where
    IO: NoDelay + Connected + AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    tonic::transport::Server::builder()
        .accept_http1(true)
        .tcp_nodelay(true)
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(
            incoming.map(|conn| {
                conn.inspect(|stream| {
                    // tonic's `tcp_nodelay` does not reach connections handed over as an
                    // incoming stream: without this, small responses behind a pending one
                    // wait for the peer's delayed ACK (Nagle, ~40 ms).
                    if let Err(e) = stream.set_nodelay() {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                })
            }),
            shutdown,
        )
        .await?;
    Ok(())
}

/// A connection whose socket can be told to send small segments at once.
trait NoDelay {
    fn set_nodelay(&self) -> std::io::Result<()>;
}

impl NoDelay for TcpStream {
    fn set_nodelay(&self) -> std::io::Result<()> {
        TcpStream::set_nodelay(self, true)
    }
}

impl NoDelay for AuthorityFix<TcpStream> {
    fn set_nodelay(&self) -> std::io::Result<()> {
        self.get_ref().set_nodelay(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends one gRPC request whose `:authority` is a URL, as etcdctl 3.4 does, and returns
    /// the type of the first frame the server answers on its stream: HEADERS (1) when the
    /// request was taken, RST_STREAM (3) when h2 refused it.
    async fn answer_to_url_authority(addr: std::net::SocketAddr) -> u8 {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let block = loona_hpack::Encoder::new().encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (&b":scheme"[..], &b"http"[..]),
            (&b":path"[..], &b"/etcdserverpb.KV/Range"[..]),
            (
                &b":authority"[..],
                &format!("http://{addr}").into_bytes()[..],
            ),
            (&b"content-type"[..], &b"application/grpc"[..]),
            (&b"te"[..], &b"trailers"[..]),
        ]);
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[1, 0x4 | 0x1, 0, 0, 0, 1]);
        out.extend_from_slice(&block);
        conn.write_all(&out).await.unwrap();
        loop {
            let mut header = [0u8; 9];
            conn.read_exact(&mut header).await.unwrap();
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            conn.read_exact(&mut payload).await.unwrap();
            if u32::from_be_bytes([header[5], header[6], header[7], header[8]]) == 1 {
                return header[3];
            }
        }
    }

    #[tokio::test]
    async fn only_the_client_port_accepts_a_url_authority() {
        let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (client_addr, peer_addr) = (client.local_addr().unwrap(), peer.local_addr().unwrap());
        let router = || into_router(Routes::default(), axum::Router::new());
        tokio::spawn(serve(client, router(), std::future::pending()));
        tokio::spawn(serve_peers(peer, router(), std::future::pending()));
        assert_eq!(answer_to_url_authority(client_addr).await, 1);
        assert_eq!(answer_to_url_authority(peer_addr).await, 3);
    }
}
