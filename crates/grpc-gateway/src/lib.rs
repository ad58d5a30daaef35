//! Every client-facing surface of cairn, written against small traits ([`api`]) rather
//! than against the server's insides: etcd's gRPC services (KV, Watch, Lease, Cluster,
//! Maintenance, and Lock and Election as recipes over KV and Watch), the gRPC health
//! service, and the HTTP endpoints (`/health`, `/livez`,
//! `/readyz`, `/version`, `/metrics`), all on one port as etcd serves them. Errors carry
//! etcd's exact codes and messages ([`EtcdError`]); the gRPC metrics keep
//! go-grpc-prometheus's names ([`metrics`]). Anything that implements the traits can be
//! served: the cairn server does, and so do the in-memory fakes of this crate's tests.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use cairn_grpc_gateway::{api::*, grpc::Limits, http, serve};
//! # async fn demo<S>(server: Arc<S>) -> Result<(), Box<dyn std::error::Error>>
//! # where S: KvApi + WatchApi + LeaseApi + MaintenanceApi + ClusterApi + AuthApi + HealthApi {
//! let versions = http::Versions { server: "3.5.0".into(), cluster: "3.5.0".into() };
//! let http = http::router(server.clone(), None, versions);
//! let apis = serve::ClientApis {
//!     kv: server.clone(),
//!     watch: server.clone(),
//!     lease: server.clone(),
//!     cluster: server.clone(),
//!     maintenance: server.clone(),
//!     auth: server,
//! };
//! let routes = serve::client_routes(apis, Limits::for_max_request_bytes(1_572_864));
//! let router = serve::into_router(routes, http);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2379").await?;
//! serve::serve(listener, router, std::future::pending()).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod authority;
pub mod credentials;
pub mod deadline;
pub mod error;
pub mod grpc;
pub mod http;
pub mod json;
pub mod metrics;
pub mod recipes;
pub mod serve;
pub mod service_name;
pub mod tls;
pub mod v2;
pub mod watch;

pub use error::EtcdError;
