//! Black-box test harness for cairn.
//!
//! Every test in `tests/tests/` starts a real server process on free loopback
//! ports and talks to it with clients nobody here wrote: the `etcd-client`
//! crate and the real `etcdctl`. The same tests run against the real etcd
//! (`CAIRN_TEST_SERVER=etcd`) — that is where their expected outputs come
//! from — and against cairn, for which they are acceptance tests.
//!
//! ```no_run
//! use cairn_tests::{Server, ServerOpts};
//!
//! let server = Server::start(ServerOpts::new().arg("--max-txn-ops").arg("16"));
//! let out = server.etcdctl(&["put", "foo", "bar"]);
//! assert_eq!(out.ok(), "OK\n");
//! ```
//!
//! Which binary is started:
//! - `CAIRN_TEST_SERVER=etcd`: `/usr/bin/etcd` (or `ETCD_BIN`);
//! - otherwise `cairn`: `CAIRN_BIN` if set, else `<target dir>/debug/cairn`,
//!   found from the test executable's own path.

#![deny(missing_docs)]

mod background;
mod cluster;
mod etcdctl;
pub mod fault;
mod grpc;
pub mod history;
mod ids;
pub mod linearizability;
mod net;
mod proxy;
mod server;

pub use background::{metric_gauge, wait_for_watchers, CtlProcess, BACKGROUND_DEADLINE};
pub use cluster::{watch_all_from, Cluster, CutDirection, MemberView, LEADER_DEADLINE};
pub use etcdctl::{etcdctl, etcdctl_with_stdin, CtlOutput};
pub use grpc::{assert_status, grpc_status};
pub use ids::{cluster_id, member_id};
pub use net::{free_port, http_get, http_request, HttpResponse};
pub use proxy::{utc_clock, ConnEvent, CutMode, Proxy, ProxyEvent, Toward};
pub use server::{expected_version, server_kind, Server, ServerKind, ServerOpts};

/// A tokio runtime with two worker threads, for tests that drive clients in the
/// background while they fault the cluster.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Re-exported so tests use the exact client version the harness connects with.
pub use etcd_client;
/// Re-exported for `tonic::Code` in error assertions.
pub use tonic;
