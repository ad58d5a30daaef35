//! etcd's Watch over the MVCC store.
//!
//! A [`WatchHub`] holds every watcher of a member. The apply loop calls
//! [`WatchHub::notify`] with the events of each applied revision; watchers that are
//! *synced* (caught up with the store) get them at once, without blocking, through their
//! stream's bounded buffer. A watcher whose buffer is full, or that was created at a
//! revision in the past, is *unsynced*: it catches up from the store's history (an
//! [`EventSource`], which [`cairn_mvcc_store::KvStore`] implements) in bounded chunks, then
//! rejoins the synced group. A watcher that falls behind the last compaction is cancelled with
//! `compact_revision` set.
//!
//! Clients talk to the hub through a [`WatchStream`] (one per gRPC stream): create,
//! cancel and progress requests go in, responses
//! ([`WatchResponse`](cairn_proto::etcdserverpb::WatchResponse)) come out of its
//! [`WatchReceiver`]. Nothing here opens a socket; the background catch-up thread is
//! optional ([`WatchHub::start_background`]) and tests drive [`WatchHub::sync_unsynced`]
//! themselves.
//!
//! Metrics (etcd's names, listed and described in [`metrics`]):
//! `etcd_debugging_mvcc_watcher_total`, `etcd_debugging_mvcc_slow_watcher_total`
//! (unsynced watchers), `etcd_debugging_mvcc_watch_stream_total`,
//! `etcd_debugging_mvcc_pending_events_total` (queued, not yet taken by the stream) and
//! `etcd_debugging_mvcc_events_total`.
//!
//! ```
//! use std::sync::Arc;
//! use cairn_mvcc_store::{Backend, BackendBatch, KvStore};
//! use cairn_proto::etcdserverpb::{PutRequest, ResponseHeader, WatchCreateRequest};
//! use cairn_watch_server::{WatchConfig, WatchHub};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = Arc::new(KvStore::open(Backend::open(dir.path())?)?);
//! let header = |revision| ResponseHeader { revision, ..Default::default() };
//! let hub = WatchHub::new(store.clone(), WatchConfig::default(), Arc::new(header));
//!
//! let (stream, mut responses) = hub.open_stream();
//! stream.create(WatchCreateRequest { key: "greeting".into(), ..Default::default() }).await;
//! assert!(responses.recv().await.unwrap().created);
//!
//! // What the apply loop does for every write.
//! let put = PutRequest { key: "greeting".into(), value: "hello".into(), ..Default::default() };
//! let outcome = store.put(1, &put, BackendBatch::new())?;
//! hub.notify(outcome.revision, &outcome.events);
//! let got = responses.recv().await.unwrap();
//! assert_eq!(got.events[0].kv.as_ref().unwrap().value, "hello");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod catch_up;
mod config;
mod delivery;
mod history;
mod hub;
pub mod metrics;
mod registry;
mod response;
mod stream;

pub use config::{HeaderSource, WatchConfig};
pub use delivery::WatchReceiver;
pub use history::{EventSource, HistoryError};
pub use hub::WatchHub;
pub use response::{fragment, DUPLICATE_WATCH_ID, EMPTY_WATCH_RANGE};
pub use stream::WatchStream;

#[cfg(test)]
mod memory_tests;
#[cfg(test)]
mod tests;
