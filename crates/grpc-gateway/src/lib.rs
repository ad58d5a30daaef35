//! Every client-facing surface of cairn, written against small traits ([`api`]) rather
//! than against the server's insides: etcd's gRPC services, the gRPC health service, and
//! the HTTP endpoints (`/health`, `/version`, `/metrics`) on the same port. Errors carry
//! etcd's exact codes and messages ([`EtcdError`]).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use cairn_grpc_gateway::{api::{ClusterApi, KvApi, MaintenanceApi, HealthApi}, grpc::Limits, http, serve};
//! # async fn demo<S: KvApi + MaintenanceApi + ClusterApi + HealthApi>(server: Arc<S>) -> Result<(), Box<dyn std::error::Error>> {
//! let versions = http::Versions { server: "3.5.0".into(), cluster: "3.5.0".into() };
//! let http = http::router(server.clone(), None, versions);
//! let routes = serve::client_routes(server, Limits::for_max_request_bytes(1_572_864));
//! let router = serve::into_router(routes, http);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2379").await?;
//! serve::serve(listener, router, std::future::pending()).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod authority;
pub mod error;
pub mod grpc;
pub mod http;
pub mod lease;
pub mod serve;
pub mod watch;

pub use error::EtcdError;
