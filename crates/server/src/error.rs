//! Why a member could not start, or stopped.

use crate::config::ConfigError;
use cairn_grpc_gateway::serve;

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
    /// The client port's certificate, key or CA bundle does not load.
    #[error("client TLS: {0}")]
    ClientTls(#[from] cairn_grpc_gateway::tls::TlsError),
    /// The peer port's certificate, key or CA bundle does not load.
    #[error("peer TLS: {0}")]
    PeerTls(cairn_grpc_gateway::tls::TlsError),
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
    /// The auth configuration or the stored auth state is unusable.
    #[error("{0}")]
    Auth(String),
    /// Bootstrapping through the discovery service failed.
    #[error("{0}")]
    Discovery(String),
    /// Something this version does not do yet.
    #[error("{0}")]
    Unsupported(String),
}
